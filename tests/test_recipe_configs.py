"""Every shipped recipe config matches its schema and builds its model (on the meta device: no memory, no time)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from latentmusic.models import UNet1DConditionModel, vae_utils
from latentmusic.training.autoencoder import AutoencoderTrainingConfig, build_autoencoder
from latentmusic.training.config import load_config
from latentmusic.training.diffusion import DiffusionTrainingConfig

CONFIGS = Path(__file__).resolve().parents[1] / "recipes" / "configs"


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("path", sorted((CONFIGS / "autoencoder").glob("*.yaml")), ids=lambda p: p.stem)
def test_autoencoder_configs_build(path):
    config = load_config(AutoencoderTrainingConfig, path)
    with torch.device("meta"):
        model = build_autoencoder(config.model_class, OmegaConf.to_container(config.model))
    assert count(model) > 0
    assert vae_utils.vae_hop_length(model) > 1


@pytest.mark.parametrize("name", ["tiny", "small"])
def test_oobleck_configs_match_their_autoencoder(name):
    """The side-by-side configs differ only in the model: same rate, hop, latent width, about the same size."""
    ours = load_config(AutoencoderTrainingConfig, CONFIGS / "autoencoder" / f"{name}.yaml")
    theirs = load_config(AutoencoderTrainingConfig, CONFIGS / "autoencoder" / f"{name}-oobleck.yaml")
    with torch.device("meta"):
        a = build_autoencoder(ours.model_class, OmegaConf.to_container(ours.model))
        b = build_autoencoder(theirs.model_class, OmegaConf.to_container(theirs.model))
    for fn in (vae_utils.vae_sample_rate, vae_utils.vae_hop_length, vae_utils.vae_latent_channels):
        assert fn(a) == fn(b), fn.__name__
    assert abs(count(a) - count(b)) / count(a) < 0.1
    for section in ("discriminator", "loss", "data", "optim"):
        assert ours[section] == theirs[section], section


@pytest.mark.parametrize("path", sorted((CONFIGS / "diffusion").glob("*.yaml")), ids=lambda p: p.stem)
def test_diffusion_configs_build(path):
    config = load_config(DiffusionTrainingConfig, path)
    with torch.device("meta"):
        unet = UNet1DConditionModel(
            **OmegaConf.to_container(config.unet), in_channels=8, cross_attention_dim=config.text_encoder.d_model
        )
    assert count(unet) > 0


@pytest.mark.parametrize("path", sorted((CONFIGS / "token_lm").glob("*.yaml")), ids=lambda p: p.stem)
def test_token_lm_configs_build(path):
    from latentmusic.models import TokenLM
    from latentmusic.training.token_lm import TokenLMTrainingConfig

    config = load_config(TokenLMTrainingConfig, path)
    with torch.device("meta"):
        lm = TokenLM(
            **OmegaConf.to_container(config.lm),
            num_codebooks=4,
            codebook_size=64,
            cross_attention_dim=config.text_encoder.d_model,
        )
    assert count(lm) > 0


def test_demo_configs_pair_up_for_a_fair_comparison():
    """The demo's two branches: the codec is the autoencoder with an RVQ bottleneck, trained alike; the token LM and
    the U-Net see the same data, windows and batches, with text encoders of one size and about equal parameters."""
    from latentmusic.models import TokenLM
    from latentmusic.training.token_lm import TokenLMTrainingConfig

    demo = CONFIGS / "demo"
    vae = load_config(AutoencoderTrainingConfig, demo / "autoencoder.yaml")
    codec = load_config(AutoencoderTrainingConfig, demo / "codec.yaml")
    for section in ("discriminator", "loss", "data", "optim"):
        assert vae[section] == codec[section], section
    shared = {k: v for k, v in OmegaConf.to_container(codec.model).items() if k in vae.model}
    assert shared == OmegaConf.to_container(vae.model) and codec.model.bottleneck_type == "rvq"

    diffusion = load_config(DiffusionTrainingConfig, demo / "diffusion.yaml")
    token = load_config(TokenLMTrainingConfig, demo / "token_lm.yaml")
    assert diffusion.text_encoder == token.text_encoder
    for key in ("root", "segment_seconds", "batch_size", "caption_dropout"):
        assert diffusion.data[key] == token.data[key], key
    with torch.device("meta"):
        latent = vae.model.latent_channels
        unet = UNet1DConditionModel(
            **OmegaConf.to_container(diffusion.unet),
            in_channels=latent,
            conditioning_inputs={"mask": 1, "known_latents": latent},
            cross_attention_dim=diffusion.text_encoder.d_model,
        )
        lm = TokenLM(
            **OmegaConf.to_container(token.lm),
            num_codebooks=codec.model.bottleneck_kwargs.num_quantizers,
            codebook_size=codec.model.bottleneck_kwargs.codebook_size,
            cross_attention_dim=token.text_encoder.d_model,
        )
    assert abs(count(unet) - count(lm)) / count(unet) < 0.1
