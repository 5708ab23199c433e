"""Models: ModelMixin + ConfigMixin networks, loadable with `from_pretrained`."""

from . import vae_utils
from .autoencoder import AudioAutoencoder, compute_latent_statistics
from .codebook_patterns import PATTERNS, CodebookPattern, get_pattern
from .rvq import CodebookUsage
from .token_lm import TokenLM, TokenLMOutput
from .unet_1d_condition import UNet1DConditionModel, UNet1DConditionOutput

__all__ = [
    "PATTERNS",
    "AudioAutoencoder",
    "CodebookPattern",
    "CodebookUsage",
    "TokenLM",
    "TokenLMOutput",
    "UNet1DConditionModel",
    "UNet1DConditionOutput",
    "compute_latent_statistics",
    "get_pattern",
    "vae_utils",
]
