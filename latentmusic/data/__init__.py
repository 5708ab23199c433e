from .datasets import AudioCaptionDataset, LatentDataset, collate
from .index import read_metadata
from .latent_cache import encode_folder, write_latent_cache

__all__ = [
    "AudioCaptionDataset",
    "LatentDataset",
    "collate",
    "encode_folder",
    "read_metadata",
    "write_latent_cache",
]
