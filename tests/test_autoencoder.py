"""AudioAutoencoder: lengths, bottlenecks, chunking, serialisation, scaling, Oobleck interop, bad input."""

from __future__ import annotations

import math

import pytest
import torch
from diffusers import AutoencoderOobleck

from latentmusic.models import AudioAutoencoder, compute_latent_statistics, vae_utils

from .conftest import tiny_vae


def tone(samples: int, sample_rate: int = 8000, seed: int = 0) -> torch.Tensor:
    t = torch.arange(samples) / sample_rate
    generator = torch.Generator().manual_seed(seed)
    f0 = 110 * 2 ** (torch.randint(0, 24, (1,), generator=generator).item() / 12)
    wave = sum(torch.sin(2 * math.pi * f0 * k * t) / k for k in range(1, 5))
    return (0.3 * wave).reshape(1, 1, -1)


@pytest.mark.parametrize("samples", [1, 31, 32, 33, 100, 1001, 4096])
def test_reconstruction_has_the_input_length_and_latents_cover_it(samples):
    vae = tiny_vae().eval()
    x = torch.randn(2, 1, samples) * 0.1
    assert vae(x).sample.shape == x.shape
    assert vae.encode(x).latent_dist.mode().shape == (2, 4, math.ceil(samples / vae.hop_length))
    assert vae.decode(torch.zeros(2, 4, 3)).sample.shape == (2, 1, 3 * vae.hop_length)


def test_kl_bottleneck_samples_and_plain_is_deterministic():
    x = tone(640)
    kl, plain = tiny_vae().eval(), tiny_vae(bottleneck="plain").eval()
    posterior = kl.encode(x).latent_dist
    assert not torch.equal(posterior.sample(torch.Generator().manual_seed(0)), posterior.mode())
    assert posterior.std.min() > 0
    deterministic = plain.encode(x).latent_dist
    assert torch.equal(deterministic.sample(), deterministic.mode())


def test_stereo_model_keeps_channels():
    vae = tiny_vae(audio_channels=2).eval()
    assert vae(torch.randn(1, 2, 300) * 0.1).sample.shape == (1, 2, 300)


def test_save_and_load_give_identical_outputs(tmp_path):
    vae = tiny_vae().eval()
    x = tone(1000)
    vae.save_pretrained(tmp_path)
    loaded = AudioAutoencoder.from_pretrained(tmp_path).eval()
    assert torch.equal(vae(x).sample, loaded(x).sample)


def test_chunked_decoding_and_encoding_match_whole_processing():
    vae = tiny_vae().eval()
    x = tone(32 * 200, seed=3)
    with torch.no_grad():
        z = vae.encode(x).latent_dist.mode()
        whole = vae.decode(z).sample
        vae.enable_chunking(chunk_size=24, context=16)  # context ≥ the decoder's receptive field
        chunked = vae.decode(z).sample
        chunked_z = vae.encode(x).latent_dist.mode()
        vae.disable_chunking()
    torch.testing.assert_close(chunked, whole, atol=1e-5, rtol=0)
    torch.testing.assert_close(chunked_z, z, atol=1e-5, rtol=0)


def test_chunking_error_shrinks_to_zero_as_context_grows():
    vae = tiny_vae().eval()
    z = torch.randn(1, 4, 200)
    errors = []
    with torch.no_grad():
        whole = vae.decode(z).sample
        for context in (0, 2, 4, 16):
            vae.enable_chunking(chunk_size=32, context=context)
            errors.append(((vae.decode(z).sample - whole).abs().max() / whole.abs().max()).item())
    assert errors[0] > errors[1] > errors[2] > errors[3] and errors[3] < 1e-5


def test_latent_statistics_give_unit_variance_and_survive_save(tmp_path):
    vae = tiny_vae().eval()
    batches = [tone(4000, seed=s) for s in range(4)]
    scale, shift = compute_latent_statistics(vae, batches, use_shift=True)
    with torch.no_grad():
        z = torch.cat([vae.encode(b).latent_dist.mode() for b in batches], dim=-1)
    scaled = vae_utils.scale_latents(vae, z)
    assert abs(scaled.std().item() - 1) < 0.02 and abs(scaled.mean().item()) < 0.02
    torch.testing.assert_close(vae_utils.unscale_latents(vae, scaled), z)
    vae.save_pretrained(tmp_path)
    loaded = AudioAutoencoder.from_pretrained(tmp_path)
    assert (loaded.config.scaling_factor, loaded.config.shift_factor) == (scale, shift)


def test_oobleck_fits_the_same_interface():
    oobleck = AutoencoderOobleck(
        encoder_hidden_size=6,
        downsampling_ratios=[2, 4],
        channel_multiples=[1, 2],
        decoder_channels=4,
        decoder_input_channels=3,
        audio_channels=1,
        sampling_rate=8000,
    ).eval()
    assert vae_utils.vae_hop_length(oobleck) == 8
    assert vae_utils.vae_latent_channels(oobleck) == 3
    assert vae_utils.vae_sample_rate(oobleck) == 8000 and vae_utils.vae_audio_channels(oobleck) == 1
    with torch.no_grad():
        z = oobleck.encode(torch.randn(1, 1, 800) * 0.1).latent_dist.mode()
        assert z.shape == (1, 3, 100)
        assert oobleck.decode(vae_utils.unscale_latents(oobleck, z)).sample.shape == (1, 1, 800)


@pytest.mark.parametrize(
    ("audio", "message"),
    [
        (torch.randn(1, 2, 100), "configured for audio_channels=1"),
        (torch.randn(1, 100), r"shape \(batch, channels, samples\)"),
        (torch.full((1, 1, 100), float("nan")), "NaN/Inf"),
    ],
)
def test_bad_audio_is_rejected_clearly(audio, message):
    with pytest.raises(ValueError, match=message):
        tiny_vae().encode(audio)


def test_audio_at_another_sample_rate_is_refused_with_the_fix():
    vae, audio = tiny_vae(), torch.randn(1, 1, 800) * 0.1
    with pytest.raises(ValueError, match=r"audio at 44100 Hz, but this autoencoder works at 8000 Hz; resample"):
        vae(audio, sample_rate=44100)
    torch.testing.assert_close(vae(audio, sample_rate=8000).sample, vae(audio).sample)


def test_latents_of_the_wrong_channel_count_are_rejected():
    with pytest.raises(ValueError, match=r"latents must have shape \(batch, 4, frames\)"):
        tiny_vae().decode(torch.randn(1, 6, 10))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"bottleneck_type": "vq"}, r"unknown bottleneck_type 'vq'; choose from \('kl', 'plain', 'rvq'\)"),
        ({"encoder_kwargs": {"activation": "relu"}}, "unknown activation"),
        (
            {"encoder_kwargs": {"base_chanels": 4}},
            r"encoder_kwargs got unknown options 'base_chanels' \(did you mean 'base_channels'\?\) for "
            r"encoder_type='waveform'; valid ones: base_channels, max_channels, activation",
        ),
        (
            {"bottleneck_kwargs": {"num_quantizers": 4}},
            "bottleneck_kwargs got unknown options 'num_quantizers' for bottleneck_type='kl'; valid ones: none",
        ),
        ({"strides": (2, 0)}, "strides must be"),
        ({"audio_channels": 3}, "audio_channels must be 1"),
    ],
)
def test_bad_configs_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        tiny_vae(**kwargs)
