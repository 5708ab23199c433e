"""Pipelines: diffusers-style `from_pretrained` / `save_pretrained` / `__call__`."""

from .loading import register_with_diffusers
from .pipeline_latent_music import LatentMusicPipeline
from .pipeline_token_music import TokenMusicPipeline

# `DiffusionPipeline.from_pretrained(folder)` finds them by the class name in model_index.json (see `loading`)
register_with_diffusers(LatentMusicPipeline, TokenMusicPipeline)

__all__ = ["LatentMusicPipeline", "TokenMusicPipeline"]
