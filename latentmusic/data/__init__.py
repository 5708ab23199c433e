from .dataset import (
    AudioCaptionDataset,
    LatentDataset,
    collate,
    read_metadata,
    write_latent_cache,
)

__all__ = [
    "AudioCaptionDataset",
    "LatentDataset",
    "collate",
    "read_metadata",
    "write_latent_cache",
]
