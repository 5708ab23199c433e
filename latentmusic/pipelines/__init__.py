"""Pipelines: diffusers-style `from_pretrained` / `save_pretrained` / `__call__`."""

from .pipeline_latent_music import LatentMusicPipeline

__all__ = ["LatentMusicPipeline"]
