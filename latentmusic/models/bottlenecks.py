"""The bottlenecks of `AudioAutoencoder`: what turns the encoder's output into the latents the decoder reads.

Each is a module built as `Bottleneck(latent_channels, **bottleneck_kwargs)` with an `in_channels` attribute (the
encoder's output width) whose forward returns the `latent_dist` of `encode`, a diffusers
`DiagonalGaussianDistribution` (`mode()`, `sample()`, `kl()`), so the pipelines and the training loss do not need to
know which one they have.

- `"kl"` (`GaussianBottleneck`): a diagonal Gaussian (mean and log-variance), sampled in training: a light VAE.
- `"plain"` (`PlainBottleneck`): deterministic latents.
- `"rvq"` (`latentmusic.models.rvq.ResidualVQBottleneck`): residual vector quantization, a codec for the token LM.
"""

from __future__ import annotations

import torch
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution
from torch import nn

from .rvq import ResidualVQBottleneck


class _ContinuousBottleneck(nn.Module):
    """A bottleneck without parameters that reads `channels_per_latent` encoder channels per latent channel.

    Args:
        latent_channels: Channels of the latents.
    """

    is_codec = False
    channels_per_latent = 1

    def __init__(self, latent_channels: int) -> None:
        super().__init__()
        self.in_channels = self.channels_per_latent * latent_channels  # what the encoder must emit


class GaussianBottleneck(_ContinuousBottleneck):
    """The encoder emits a mean and a log-variance per latent channel; the latents are a diagonal Gaussian."""

    channels_per_latent = 2

    def forward(self, moments: torch.Tensor) -> DiagonalGaussianDistribution:
        """The distribution of `moments` `(batch, 2 * latent_channels, frames)`: means, then log-variances.

        Args:
            moments: The encoder's output.

        Returns:
            The posterior (sampled in training, its mean otherwise).
        """
        return DiagonalGaussianDistribution(moments)


class PlainBottleneck(_ContinuousBottleneck):
    """The encoder's output is the latents, as a point mass (zero KL)."""

    def forward(self, latents: torch.Tensor) -> DiagonalGaussianDistribution:
        """A deterministic distribution on `latents` `(batch, latent_channels, frames)`.

        Args:
            latents: The encoder's output.

        Returns:
            The point mass (`sample()` equals `mode()`).
        """
        return DiagonalGaussianDistribution(torch.cat([latents, torch.zeros_like(latents)], 1), deterministic=True)


BOTTLENECKS: dict[str, type[nn.Module]] = {
    "kl": GaussianBottleneck,
    "plain": PlainBottleneck,
    "rvq": ResidualVQBottleneck,
}
