"""Models: ModelMixin + ConfigMixin networks, loadable with `from_pretrained`."""

from . import vae_utils
from .autoencoder import AudioAutoencoder, compute_latent_statistics
from .unet_1d_condition import UNet1DConditionModel, UNet1DConditionOutput

__all__ = [
    "AudioAutoencoder",
    "UNet1DConditionModel",
    "UNet1DConditionOutput",
    "compute_latent_statistics",
    "vae_utils",
]
