"""Pipelines: diffusers-style `from_pretrained` / `save_pretrained` / `__call__`."""

from .pipeline_latent_music import LatentMusicPipeline
from .pipeline_token_music import TokenMusicPipeline

__all__ = ["LatentMusicPipeline", "TokenMusicPipeline"]
