"""latentmusic: text-to-music generation with latent diffusion, the diffusers way."""

__version__ = "0.1.0.dev0"

from .audio import load_audio, save_audio
from .models import AudioAutoencoder, TokenLM, UNet1DConditionModel
from .pipelines import LatentMusicPipeline, TokenMusicPipeline

__all__ = [
    "AudioAutoencoder",
    "LatentMusicPipeline",
    "TokenLM",
    "TokenMusicPipeline",
    "UNet1DConditionModel",
    "load_audio",
    "save_audio",
    "__version__",
]
