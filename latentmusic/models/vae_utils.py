"""One interface over the autoencoders a pipeline accepts: `AudioAutoencoder` and diffusers' `AutoencoderOobleck`.

The pipeline asks an autoencoder for its hop length, latent channels, audio channels, sample rate and
latent scaling; the two classes name these differently in their configs, so these helpers answer for both.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderOobleck

from ..audio import crop_or_pad
from .autoencoder import AudioAutoencoder


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


def decode(vae, latents: torch.Tensor, num_samples: int) -> torch.Tensor:
    """Decode unscaled `latents` to exactly `num_samples` samples.

    `AudioAutoencoder` decodes whole hops; `AutoencoderOobleck`'s transposed convolutions lose a sample per
    odd-stride level, so its output is zero-padded back to the length asked for.
    """
    return crop_or_pad(vae.decode(latents).sample, num_samples)


def decode_in_windows(
    vae: AudioAutoencoder, latents: torch.Tensor, num_samples: int, window: int, context: int
) -> torch.Tensor:
    """Decode unscaled `latents` `window` frames at a time, each with `context` frames of its neighbours on both
    sides whose audio is dropped (overlap-save), to exactly `num_samples` samples.

    Memory is bounded by the window, and the autoencoder is not touched (`AudioAutoencoder.enable_chunking` does
    the same inside the model, but changes its state). With a context that covers the decoder's receptive field
    the result equals decoding at once.

    Args:
        vae: An autoencoder whose decoder maps a frame to `hop_length` samples (`AudioAutoencoder`).
        latents: Unscaled latents, `(batch, latent_channels, frames)`.
        num_samples: Samples of the output.
        window: Frames decoded per window.
        context: Frames of context on each side.

    Returns:
        The audio, `(batch, audio_channels, num_samples)`.
    """
    hop, frames = vae_hop_length(vae), latents.shape[-1]
    pieces = []
    for start in range(0, frames, window):
        low, high = max(0, start - context), min(frames, start + window + context)
        audio = vae.decode(latents[..., low:high]).sample
        pieces.append(audio[..., (start - low) * hop : (min(start + window, frames) - low) * hop])
    return crop_or_pad(torch.cat(pieces, dim=-1), num_samples)


def reconstruct(
    vae: AudioAutoencoder | AutoencoderOobleck, audio: torch.Tensor, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, Any]:
    """Encode and decode `audio` with either autoencoder, keeping its length.

    Args:
        vae: `AudioAutoencoder` or `AutoencoderOobleck`.
        audio: `(batch, channels, samples)`.
        generator: With a generator the latents are sampled from the posterior (training); without, its mode.

    Returns:
        `(reconstruction, posterior)`, the reconstruction as long as `audio`.
    """
    posterior = vae.encode(audio).latent_dist
    latents = posterior.mode() if generator is None else posterior.sample(generator)
    return decode(vae, latents, audio.shape[-1]), posterior


def load_vae(folder: str | Path):
    """Load a trained autoencoder, whichever of the supported classes wrote it.

    Args:
        folder: A `save_pretrained` autoencoder folder, or the `vae` (or `codec`) of a pipeline folder or shipped
            checkpoint name such as `"latentmusic/demo"`.
    """
    from ..checkpoints import resolve_pretrained

    name, folder = folder, Path(resolve_pretrained(str(folder)))
    if (folder / "model_index.json").is_file():
        folder = next((folder / part for part in ("vae", "codec") if (folder / part).is_dir()), folder)
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(
            f"{name}: no autoencoder there (no config.json); pass the folder save_pretrained wrote, or a pipeline "
            "folder or name such as 'latentmusic/demo'"
        )
    class_name = json.loads(config_file.read_text()).get("_class_name")
    cls = AutoencoderOobleck if class_name == "AutoencoderOobleck" else AudioAutoencoder
    return cls.from_pretrained(folder)
