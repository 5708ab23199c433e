"""AudioAutoencoder's composed config: parts chosen by type, their options in `*_kwargs`; old flat configs load."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from safetensors.torch import load_file, save_file

from latentmusic.checkpoints import shipped_path
from latentmusic.models import AudioAutoencoder
from latentmusic.models.autoencoder_spectral import SpectralDecoder
from latentmusic.models.autoencoder_waveform import WaveformEncoder

from .conftest import tiny_vae

# The flat format of before (every option of every part at the top level, written whether used or not), as the
# demo token-LM codec shipped it.
LEGACY_CODEC_CONFIG = {
    "_class_name": "AudioAutoencoder",
    "_diffusers_version": "0.42.1",
    "activation": "snake",
    "architecture": "spectral",
    "audio_channels": 1,
    "base_channels": 32,
    "blocks_per_level": 3,
    "bottleneck": "rvq",
    "chunk_context": 32,
    "chunk_size": 256,
    "codebook_cosine_sim": False,
    "codebook_decay": 0.99,
    "codebook_dim": 8,
    "codebook_size": 256,
    "commitment_weight": 1.0,
    "kmeans_init": True,
    "latent_channels": 32,
    "max_channels": 192,
    "num_quantizers": 4,
    "quantizer_dropout": True,
    "sample_rate": 16000,
    "scaling_factor": 1.0,
    "shift_factor": 0.0,
    "strides": [256, 2],
    "threshold_ema_dead_code": 2,
}


def audio(seconds: float = 0.5, rate: int = 16000) -> torch.Tensor:
    return 0.3 * torch.randn(2, 1, int(seconds * rate), generator=torch.Generator().manual_seed(0))


def comparable(config) -> dict:
    return {k: v for k, v in config.items() if not k.startswith("_")}


def write_legacy(folder, config: dict, weights: dict) -> None:
    """A checkpoint as the flat format wrote it: its config, and the RVQ's weights under `quantizer.`."""
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    renamed = {("quantizer." + k.removeprefix("bottleneck.") if k.startswith("bottleneck.") else k): v
               for k, v in weights.items()}  # fmt: skip
    save_file(renamed, folder / "diffusion_pytorch_model.safetensors")


def test_the_shipped_codec_in_the_old_format_loads_to_the_same_model_and_audio(tmp_path, caplog):
    shipped = shipped_path("latentmusic/demo-token-lm") / "codec"
    write_legacy(tmp_path / "old", LEGACY_CODEC_CONFIG, load_file(shipped / "diffusion_pytorch_model.safetensors"))
    with caplog.at_level(logging.WARNING):
        old = AudioAutoencoder.from_pretrained(tmp_path / "old").eval()
    assert "old flat format" in caplog.text and "architecture" in caplog.text
    new = AudioAutoencoder.from_pretrained(shipped).eval()
    assert comparable(old.config) == comparable(new.config)
    assert new.config.bottleneck_kwargs["num_quantizers"] == 4 and new.config.encoder_kwargs["width"] == 192
    with torch.no_grad():
        codes = new.encode_codes(audio())
        assert torch.equal(old.encode_codes(audio()), codes)
        assert torch.equal(old.decode_codes(codes), new.decode_codes(codes))


@pytest.mark.parametrize(
    ("legacy", "new"),
    [
        (
            dict(base_channels=4, max_channels=16, activation="elu", bottleneck="plain"),
            dict(encoder_kwargs=dict(base_channels=4, max_channels=16, activation="elu"), bottleneck_type="plain"),
        ),
        (
            dict(base_channels=4, max_channels=16, bottleneck="rvq", num_quantizers=3, codebook_size=8),
            dict(
                encoder_kwargs=dict(base_channels=4, max_channels=16),
                bottleneck_type="rvq",
                bottleneck_kwargs=dict(num_quantizers=3, codebook_size=8),
            ),
        ),
    ],
    ids=["plain", "rvq"],
)
def test_old_flat_arguments_build_the_model_the_new_ones_do(legacy, new, tmp_path):
    common = dict(sample_rate=8000, strides=(4, 8), latent_channels=4)
    torch.manual_seed(0)
    model = AudioAutoencoder(**common, **new)
    x = audio(0.1, 8000)
    model.train()(x)  # k-means init and EMA updates of the codebooks (buffers the checkpoint must carry)
    model.eval().save_pretrained(tmp_path / "new")
    old_config = {**common, **legacy, "activation": legacy.get("activation", "snake"), "architecture": "waveform"}
    write_legacy(tmp_path / "old", old_config, model.state_dict())
    old = AudioAutoencoder.from_pretrained(tmp_path / "old").eval()
    assert comparable(old.config) == comparable(AudioAutoencoder.from_pretrained(tmp_path / "new").config)
    with torch.no_grad():
        assert torch.equal(old(x).sample, model(x).sample)
    assert comparable(AudioAutoencoder(**common, **legacy).config) == comparable(model.config)


def test_the_decoder_mirrors_the_encoder_unless_chosen_apart():
    vae = tiny_vae()
    assert vae.config.decoder_type == "waveform"
    assert (
        vae.config.decoder_kwargs
        == vae.config.encoder_kwargs
        == dict(base_channels=4, max_channels=16, activation="snake")
    )
    # an old flat argument beside new ones (tiny_vae's encoder_kwargs) keeps the mirror
    assert tiny_vae(bottleneck="plain").config.decoder_kwargs == vae.config.encoder_kwargs
    mixed = tiny_vae(decoder_type="spectral", decoder_kwargs=dict(width=8, blocks_per_level=1)).eval()
    assert isinstance(mixed.encoder, WaveformEncoder) and isinstance(mixed.decoder, SpectralDecoder)
    x = audio(0.1, 8000)[:1]
    with torch.no_grad():
        out = mixed(x).sample
        again = AudioAutoencoder.from_config(mixed.config).eval()
        again.load_state_dict(mixed.state_dict())
        assert torch.equal(again(x).sample, out)
    assert out.shape == x.shape and torch.isfinite(out).all() and out.abs().max() > 0
    assert mixed.config.decoder_kwargs == dict(width=8, blocks_per_level=1)
