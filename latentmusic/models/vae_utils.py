"""One interface over the autoencoders a pipeline accepts: `AudioAutoencoder` and diffusers' `AutoencoderOobleck`.

The pipeline asks an autoencoder for its hop length, latent channels, audio channels, sample rate and
latent scaling; the two classes name these differently in their configs, so these helpers answer for both.
"""

from __future__ import annotations

import math

import torch
from diffusers import AutoencoderOobleck


def _is_oobleck(vae) -> bool:
    return isinstance(vae, AutoencoderOobleck)


def vae_hop_length(vae) -> int:
    """Audio samples per latent frame."""
    if _is_oobleck(vae):
        return math.prod(vae.config.downsampling_ratios)
    return vae.hop_length


def vae_latent_channels(vae) -> int:
    return vae.config.decoder_input_channels if _is_oobleck(vae) else vae.config.latent_channels


def vae_audio_channels(vae) -> int:
    return vae.config.audio_channels


def vae_sample_rate(vae) -> int:
    return vae.config.sampling_rate if _is_oobleck(vae) else vae.config.sample_rate


def vae_scaling_factor(vae) -> float:
    return float(getattr(vae.config, "scaling_factor", 1.0) or 1.0)


def vae_shift_factor(vae) -> float:
    return float(getattr(vae.config, "shift_factor", 0.0) or 0.0)


def scale_latents(vae, latents: torch.Tensor) -> torch.Tensor:
    """Autoencoder latents → the unit-variance latents the diffusion model works on."""
    return (latents - vae_shift_factor(vae)) * vae_scaling_factor(vae)


def unscale_latents(vae, latents: torch.Tensor) -> torch.Tensor:
    """Inverse of `scale_latents`."""
    return latents / vae_scaling_factor(vae) + vae_shift_factor(vae)
