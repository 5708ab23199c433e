"""One interface over both autoencoders: lengths are kept and saved folders load whichever class wrote them."""

from __future__ import annotations

import pytest
import torch
from diffusers import AutoencoderOobleck

from latentmusic.models import vae_utils

from .conftest import tiny_vae


def tiny_oobleck() -> AutoencoderOobleck:
    # an odd stride (5): Oobleck's transposed convolution then returns one sample fewer per decoded hop
    return AutoencoderOobleck(
        encoder_hidden_size=8,
        decoder_channels=8,
        downsampling_ratios=[2, 5],
        channel_multiples=[1, 2],
        decoder_input_channels=4,
        audio_channels=1,
        sampling_rate=8000,
    )


@pytest.mark.parametrize("make", [tiny_vae, tiny_oobleck], ids=["AudioAutoencoder", "AutoencoderOobleck"])
@pytest.mark.parametrize("length", [800, 997, 1234])
def test_reconstruct_keeps_the_input_length(make, length):
    torch.manual_seed(0)
    vae = make().eval()
    audio = torch.randn(2, 1, length) * 0.1
    with torch.no_grad():
        reconstruction, posterior = vae_utils.reconstruct(vae, audio)
        sampled, _ = vae_utils.reconstruct(vae, audio, torch.Generator().manual_seed(0))
    assert reconstruction.shape == audio.shape == sampled.shape
    assert torch.isfinite(reconstruction).all()
    assert not torch.equal(reconstruction, sampled)  # a generator samples the posterior instead of its mode
    assert posterior.mode().shape[1] == vae_utils.vae_latent_channels(vae)


def test_oobleck_decoder_is_short_by_itself_and_decode_pads_it():
    vae = tiny_oobleck().eval()
    latents = torch.randn(1, 4, 10)
    with torch.no_grad():
        raw = vae.decode(latents).sample
        fitted = vae_utils.decode(vae, latents, 100)
    assert raw.shape[-1] < 100  # the reason vae_utils.decode exists
    assert fitted.shape[-1] == 100
    torch.testing.assert_close(fitted[..., : raw.shape[-1]], raw)
    assert fitted[..., raw.shape[-1] :].abs().sum() == 0


@pytest.mark.parametrize("make", [tiny_vae, tiny_oobleck], ids=["AudioAutoencoder", "AutoencoderOobleck"])
def test_load_vae_loads_whichever_class_saved_the_folder(make, tmp_path):
    torch.manual_seed(0)
    vae = make().eval()
    vae.save_pretrained(tmp_path)
    loaded = vae_utils.load_vae(tmp_path).eval()
    assert type(loaded) is type(vae)
    audio = torch.randn(1, 1, 800) * 0.1
    with torch.no_grad():
        torch.testing.assert_close(vae_utils.reconstruct(loaded, audio)[0], vae_utils.reconstruct(vae, audio)[0])


def test_load_vae_takes_the_autoencoder_of_a_pipeline_folder(tmp_path):
    torch.manual_seed(0)
    vae = tiny_vae().eval()
    vae.save_pretrained(tmp_path / "vae")
    (tmp_path / "model_index.json").write_text("{}")
    loaded = vae_utils.load_vae(tmp_path)
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), vae.state_dict().values()))


def test_load_vae_names_a_folder_without_a_model(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        vae_utils.load_vae(tmp_path)
