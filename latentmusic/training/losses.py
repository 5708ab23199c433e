"""The autoencoder's objective: time- and frequency-domain reconstruction, KL, adversarial, feature matching.

Reconstruction losses come from auraloss (multi-resolution STFT, and the same on a mel scale); the
adversarial objective is the hinge loss over the patch logits of `MultiDiscriminator`, plus L1 feature
matching between the discriminators' feature maps on real and reconstructed audio (MelGAN/HiFi-GAN).
Every term's weight is a config key; a zero weight removes the term (and its cost).
"""

from __future__ import annotations

from dataclasses import dataclass

import auraloss
import torch
from torch import nn

from ..models.discriminators import Judgement


@dataclass
class AutoencoderLossWeights:
    mrstft: float = 1.0  # multi-resolution STFT (spectral convergence + log magnitude), auraloss
    mel: float = 1.0  # the same on a mel scale, auraloss
    l1: float = 0.1  # waveform L1
    kl: float = 1e-6  # KL of the latent posterior to N(0, I): a light VAE bottleneck
    adversarial: float = 1.0  # hinge loss of the generator against the discriminators
    feature_matching: float = 2.0  # L1 between discriminator features of real and reconstructed audio


def kl_divergence(posterior) -> torch.Tensor:
    """KL(q(z|x) || N(0, I)) per latent element, for diffusers' Gaussian posteriors of any rank."""
    if getattr(posterior, "deterministic", False):
        return posterior.mean.new_zeros(())
    return 0.5 * (posterior.mean.pow(2) + posterior.var - 1.0 - posterior.logvar).mean()


def hinge_generator_loss(fake: list[Judgement]) -> torch.Tensor:
    return sum(torch.relu(1 - logits).mean() for logits, _ in fake) / len(fake)


def hinge_discriminator_loss(real: list[Judgement], fake: list[Judgement]) -> torch.Tensor:
    terms = [torch.relu(1 - r).mean() + torch.relu(1 + f).mean() for (r, _), (f, _) in zip(real, fake)]
    return sum(terms) / len(terms)


def feature_matching_loss(real: list[Judgement], fake: list[Judgement]) -> torch.Tensor:
    terms = [
        (f - r.detach()).abs().mean() / (r.detach().abs().mean() + 1e-5)
        for (_, real_maps), (_, fake_maps) in zip(real, fake)
        for r, f in zip(real_maps, fake_maps)
    ]
    return sum(terms) / len(terms)


class AutoencoderLoss(nn.Module):
    """All generator-side terms of the autoencoder objective, weighted.

    Args:
        sample_rate: Audio sample rate (for the mel scale).
        weights: Term weights (see `AutoencoderLossWeights`).
        fft_sizes: STFT sizes of the spectral losses (hops are a quarter of each).
    """

    def __init__(
        self,
        sample_rate: int,
        weights: AutoencoderLossWeights | None = None,
        fft_sizes: tuple[int, ...] = (2048, 1024, 512, 256),
    ) -> None:
        super().__init__()
        self.weights = weights or AutoencoderLossWeights()
        sizes = dict(fft_sizes=list(fft_sizes), hop_sizes=[n // 4 for n in fft_sizes], win_lengths=list(fft_sizes))
        self.mrstft = auraloss.freq.MultiResolutionSTFTLoss(**sizes)
        self.mel = auraloss.freq.MultiResolutionSTFTLoss(**sizes, scale="mel", n_bins=64, sample_rate=sample_rate)

    def forward(
        self,
        audio: torch.Tensor,
        reconstruction: torch.Tensor,
        posterior=None,
        real: list[Judgement] | None = None,
        fake: list[Judgement] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Weighted terms and their sum under "total".

        Args:
            audio: The input `(batch, channels, samples)`.
            reconstruction: The decoded audio, same shape.
            posterior (DiagonalGaussianDistribution): The encoder's latent distribution (for the KL
                term); `None` skips it.
            real: Discriminator judgements of the input; `None` skips feature matching.
            fake: Discriminator judgements of the reconstruction; `None` skips the adversarial and
                feature-matching terms (e.g. during the discriminator's warm-up).
        """
        w = self.weights
        terms: dict[str, torch.Tensor] = {}
        if w.mrstft:
            terms["mrstft"] = w.mrstft * self.mrstft(reconstruction, audio)
        if w.mel:
            terms["mel"] = w.mel * self.mel(reconstruction, audio)
        if w.l1:
            terms["l1"] = w.l1 * (reconstruction - audio).abs().mean()
        if w.kl and posterior is not None:
            terms["kl"] = w.kl * kl_divergence(posterior)
        if fake is not None and w.adversarial:
            terms["adversarial"] = w.adversarial * hinge_generator_loss(fake)
        if fake is not None and real is not None and w.feature_matching:
            terms["feature_matching"] = w.feature_matching * feature_matching_loss(real, fake)
        terms["total"] = sum(terms.values())
        return terms
