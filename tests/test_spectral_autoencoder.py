"""AudioAutoencoder(encoder_type="spectral"): STFT in, magnitude and phase out, same interface as the waveform one."""

from __future__ import annotations

import math

import pytest
import torch

from latentmusic.models import AudioAutoencoder
from latentmusic.training.losses import AutoencoderLoss, AutoencoderLossWeights

RATE = 8000


def spectral_vae(**overrides) -> AudioAutoencoder:
    config = dict(sample_rate=RATE, encoder_type="spectral", strides=(16, 2), latent_channels=4,
                  encoder_kwargs=dict(width=32, blocks_per_level=1))  # fmt: skip
    return AudioAutoencoder(**{**config, **overrides})


def chord(samples: int, f0: float) -> torch.Tensor:
    t = torch.arange(samples) / RATE
    return (0.2 * sum(torch.sin(2 * math.pi * f0 * k * t) / k for k in range(1, 4))).reshape(1, 1, -1)


@pytest.mark.parametrize("samples", [1, 31, 32, 33, 1001, 4096])
def test_reconstruction_has_the_input_length_and_latents_cover_it(samples):
    vae = spectral_vae().eval()
    x = torch.randn(2, 1, samples) * 0.1
    assert vae.hop_length == 32
    assert vae(x).sample.shape == x.shape
    assert vae.encode(x).latent_dist.mode().shape == (2, 4, math.ceil(samples / 32))
    assert vae.decode(torch.zeros(2, 4, 3)).sample.shape == (2, 1, 96)


@pytest.mark.parametrize("strides", [(16, 3), (8, 2, 2)])
def test_stereo_odd_strides_and_the_rvq_bottleneck_keep_shapes(strides):
    vae = spectral_vae(
        audio_channels=2,
        strides=strides,
        bottleneck_type="rvq",
        bottleneck_kwargs=dict(num_quantizers=2, codebook_size=8),
    ).eval()
    x = torch.randn(1, 2, 700) * 0.1
    assert vae(x).sample.shape == x.shape
    assert vae.encode_codes(x).shape == (1, 2, math.ceil(700 / vae.hop_length))


def test_save_and_load_give_identical_outputs(tmp_path):
    vae = spectral_vae().eval()
    x = chord(1000, 220.0)
    vae.save_pretrained(tmp_path)
    loaded = AudioAutoencoder.from_pretrained(tmp_path).eval()
    assert loaded.config.encoder_type == loaded.config.decoder_type == "spectral"
    assert torch.equal(vae(x).sample, loaded(x).sample)


def test_chunked_processing_matches_whole_processing():
    vae = spectral_vae().eval()
    x = chord(32 * 120, 330.0) + 0.01 * torch.randn(1, 1, 32 * 120, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        z = vae.encode(x).latent_dist.mode()
        whole = vae.decode(z).sample
        vae.enable_chunking(chunk_size=24, context=16)  # context ≥ the receptive field in frames
        chunked, chunked_z = vae.decode(z).sample, vae.encode(x).latent_dist.mode()
    torch.testing.assert_close(chunked_z, z, atol=1e-5, rtol=0)
    torch.testing.assert_close(chunked, whole, atol=1e-4 * whole.abs().max().item(), rtol=0)


def test_training_steps_improve_the_reconstruction():
    torch.manual_seed(0)
    vae = spectral_vae()
    x = torch.cat([chord(4096, f0) for f0 in (196.0, 261.6, 349.2)])
    loss = AutoencoderLoss(RATE, AutoencoderLossWeights(adversarial=0, feature_matching=0), fft_sizes=(512, 256, 128))
    optimizer = torch.optim.AdamW(vae.parameters(), lr=2e-3)
    with torch.no_grad():
        before = loss(x, vae.eval()(x).sample)
    vae.train()
    for _ in range(80):
        optimizer.zero_grad()
        loss(x, vae(x, sample_posterior=True).sample)["total"].backward()
        optimizer.step()
    with torch.no_grad():
        after = loss(x, vae.eval()(x).sample)
    assert after["mel"] < 0.6 * before["mel"] and after["mrstft"] < 0.8 * before["mrstft"]


def test_unknown_encoder_type_is_an_error_that_lists_the_choices():
    with pytest.raises(ValueError, match="unknown encoder_type 'stft'.*waveform.*spectral"):
        spectral_vae(encoder_type="stft")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_runs_and_stays_close_to_float32(dtype):
    """There is no complex bfloat16 (torch.polar refuses it): the STFT and its inverse run in float32 and the
    audio comes back in the model's dtype, following the float32 model's (bfloat16 weights are coarse)."""
    vae = spectral_vae().eval()
    x = chord(1000, 220.0)
    with torch.no_grad():
        full = vae(x).sample
        half = vae.to(dtype)(x.to(dtype)).sample
    assert half.dtype == dtype and half.shape == x.shape
    assert torch.isfinite(half).all()
    correlation = torch.corrcoef(torch.stack([half.float().flatten(), full.flatten()]))[0, 1]
    assert correlation > 0.95
