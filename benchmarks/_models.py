"""Models the benchmarks build from the recipe configs, and diffusers' equivalents sized to match them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderOobleck, DPMSolverMultistepScheduler
from omegaconf import OmegaConf

from latentmusic import AudioAutoencoder, LatentMusicPipeline, UNet1DConditionModel
from latentmusic.training.objectives import make_training_scheduler
from latentmusic.training.text_conditioning import TextEncoderConfig, build_text_encoder

CONFIGS = Path(__file__).resolve().parents[1] / "recipes" / "configs"
CAPTIONS = [
    "a slow Bach chorale played by a string ensemble at 60 BPM",
    "a fast fiddle tune on flute at 132 BPM in D major",
    "an Irish reel on church organ, G minor",
    "a folk song in A minor played by a clarinet at 96 BPM",
]


def count_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def recipe_config(kind: str, name: str) -> Any:
    return OmegaConf.load(CONFIGS / kind / f"{name}.yaml")


def build_autoencoder(name: str) -> AudioAutoencoder:
    """The autoencoder of `recipes/configs/autoencoder/<name>.yaml`, randomly initialised."""
    return AudioAutoencoder(**OmegaConf.to_container(recipe_config("autoencoder", name).model))


def build_oobleck(name: str) -> AutoencoderOobleck:
    """diffusers' `AutoencoderOobleck` (Stable Audio Open's VAE family) of `recipes/configs/autoencoder/
    <name>-oobleck.yaml`: the autoencoder config's sample rate, hop and latent width at about its parameter count."""
    return AutoencoderOobleck(**OmegaConf.to_container(recipe_config("autoencoder", f"{name}-oobleck").model))


def build_latent_pipeline(name: str, max_seconds: float) -> LatentMusicPipeline:
    """A `LatentMusicPipeline` with the components of the `<name>` recipe configs (random weights)."""
    torch.manual_seed(0)
    vae = build_autoencoder(name)
    diffusion = recipe_config("diffusion", name)
    text_config = OmegaConf.merge(OmegaConf.structured(TextEncoderConfig), diffusion.text_encoder)
    tokenizer, text_encoder = build_text_encoder(text_config, CAPTIONS)
    unet = UNet1DConditionModel(
        **OmegaConf.to_container(diffusion.unet),
        in_channels=vae.config.latent_channels,
        cross_attention_dim=text_encoder.config.d_model,
        use_timing_conditioning=True,
        max_seconds=max_seconds,
    )
    scheduler = DPMSolverMultistepScheduler.from_config(make_training_scheduler("v_prediction").config)
    pipe = LatentMusicPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def build_stable_audio_pipeline(name: str, reference: LatentMusicPipeline, seconds: float):
    """diffusers' `StableAudioPipeline` at the reference pipeline's size: the same text encoder and tokenizer, the
    Oobleck VAE of the `<name>-oobleck` config, and a DiT whose depth makes its parameter count closest to the
    U-Net's. Stable Audio's DiT always denoises `sample_size` frames, so it is built for `seconds`."""
    from diffusers import StableAudioDiTModel, StableAudioPipeline
    from diffusers.pipelines.stable_audio import StableAudioProjectionModel

    torch.manual_seed(0)
    vae = build_oobleck(name)
    text_dim = reference.text_encoder.config.d_model
    frames = int(round(seconds * vae.config.sampling_rate / vae.hop_length))
    latent = vae.config.decoder_input_channels
    width = reference.unet.config.block_out_channels[-1]
    heads = max(1, width // 64)

    def build(layers: int) -> StableAudioDiTModel:
        return StableAudioDiTModel(
            sample_size=frames,
            in_channels=latent,
            out_channels=latent,
            num_layers=layers,
            attention_head_dim=width // heads,
            num_attention_heads=heads,
            num_key_value_attention_heads=heads,
            cross_attention_dim=width,
            time_proj_dim=256,
            global_states_input_dim=2 * text_dim,
            cross_attention_input_dim=text_dim,
        )

    target = count_parameters(reference.unet)

    def size(layers: int) -> int:
        with torch.device("meta"):
            return count_parameters(build(layers))

    transformer = build(min(range(1, 49), key=lambda n: abs(size(n) - target)))
    projection = StableAudioProjectionModel(
        text_encoder_dim=text_dim, conditioning_dim=text_dim, min_value=0, max_value=int(seconds) + 1
    )
    # the same sampler as the reference (Stable Audio's own CosineDPMSolverMultistepScheduler needs torchsde): the
    # comparison is of the networks, not of the samplers
    scheduler = DPMSolverMultistepScheduler.from_config(reference.scheduler.config)
    pipe = StableAudioPipeline(
        vae=vae,
        text_encoder=reference.text_encoder,
        projection_model=projection,
        tokenizer=reference.tokenizer,
        transformer=transformer,
        scheduler=scheduler,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe
