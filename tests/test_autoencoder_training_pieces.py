"""The autoencoder objective's pieces: discriminators, loss terms and their weights, reconstruction metrics."""

from __future__ import annotations

import math

import pytest
import torch

from latentmusic.evaluation.reconstruction import mel_distance, mrstft_distance, reconstruction_metrics, si_sdr
from latentmusic.models.discriminators import MultiDiscriminator
from latentmusic.training.losses import (
    AutoencoderLoss,
    AutoencoderLossWeights,
    feature_matching_loss,
    hinge_discriminator_loss,
    kl_divergence,
)

from .conftest import tiny_vae

RATE = 8000


def music(seconds: float = 0.5, seed: int = 0) -> torch.Tensor:
    """A few harmonic notes in a row: enough spectral structure for the metrics to mean something."""
    generator = torch.Generator().manual_seed(seed)
    t = torch.arange(int(seconds * RATE)) / RATE
    notes = 110 * 2 ** (torch.randint(0, 24, (4,), generator=generator) / 12)
    f0 = notes[(t * 8).long() % 4]
    wave = sum(torch.sin(2 * math.pi * f0 * k * t) / k for k in range(1, 6))
    return (0.2 * wave).reshape(1, 1, -1)


def degraded(audio: torch.Tensor, noise: float) -> torch.Tensor:
    return audio + noise * torch.randn(audio.shape, generator=torch.Generator().manual_seed(1))


def test_discriminators_judge_at_every_resolution_and_period():
    discriminator = MultiDiscriminator(stft_windows=(256, 128), periods=(2, 3, 5), channels=4)
    judgements = discriminator(music())
    assert len(judgements) == 5
    for logits, features in judgements:
        assert logits.ndim == 4 and logits.shape[1] == 1 and len(features) == 5
    assert discriminator(torch.randn(2, 1, 777))[0][0].shape[0] == 2  # any length, batched
    with pytest.raises(ValueError, match="at least one"):
        MultiDiscriminator(stft_windows=(), periods=())


def test_each_weight_controls_its_term_and_zero_removes_it():
    audio, reconstruction = music(), degraded(music(), 0.05)
    posterior = tiny_vae().encode(audio).latent_dist
    discriminator = MultiDiscriminator(stft_windows=(256,), periods=(2,), channels=4)
    real, fake = discriminator(audio), discriminator(reconstruction)
    full = AutoencoderLoss(RATE, AutoencoderLossWeights(kl=1.0))(audio, reconstruction, posterior, real, fake)
    assert set(full) == {"mrstft", "mel", "l1", "kl", "adversarial", "feature_matching", "total"}
    assert all(torch.isfinite(v) and v > 0 for v in full.values())
    torch.testing.assert_close(full["total"], sum(v for k, v in full.items() if k != "total"))
    base = {"kl": 1.0}
    for name in ("mrstft", "mel", "l1", "kl", "adversarial", "feature_matching"):
        weight = getattr(AutoencoderLossWeights(**base), name)
        doubled = AutoencoderLoss(RATE, AutoencoderLossWeights(**{**base, name: 2 * weight}))
        torch.testing.assert_close(doubled(audio, reconstruction, posterior, real, fake)[name], 2 * full[name])
        removed = AutoencoderLoss(RATE, AutoencoderLossWeights(**{**base, name: 0.0}))
        assert name not in removed(audio, reconstruction, posterior, real, fake)


def test_without_discriminators_only_reconstruction_terms_remain():
    terms = AutoencoderLoss(RATE)(music(), degraded(music(), 0.05))
    assert set(terms) == {"mrstft", "mel", "l1", "total"}


def test_a_perfect_reconstruction_has_no_reconstruction_loss():
    audio = music()
    terms = AutoencoderLoss(RATE)(audio, audio.clone())
    assert terms["l1"] == 0 and terms["mrstft"] < 1e-4 and terms["mel"] < 1e-4


def test_kl_is_zero_for_the_prior_and_for_a_deterministic_bottleneck():
    from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

    prior = DiagonalGaussianDistribution(torch.zeros(1, 8, 10))  # mean 0, log-variance 0
    assert kl_divergence(prior).item() == pytest.approx(0.0)
    shifted = DiagonalGaussianDistribution(torch.cat([torch.ones(1, 4, 10), torch.zeros(1, 4, 10)], 1))
    assert kl_divergence(shifted).item() == pytest.approx(0.5)
    plain = tiny_vae(bottleneck_type="plain").encode(music()).latent_dist
    assert kl_divergence(plain).item() == 0


def test_hinge_losses_reward_the_right_side():
    confident_real = [(torch.full((1, 1, 4, 4), 2.0), [])]
    confident_fake = [(torch.full((1, 1, 4, 4), -2.0), [])]
    assert hinge_discriminator_loss(confident_real, confident_fake).item() == 0
    assert hinge_discriminator_loss(confident_fake, confident_real).item() == pytest.approx(6.0)
    features = [(None, [torch.ones(1, 2, 3)])]
    assert feature_matching_loss(features, features).item() == 0


def test_si_sdr_falls_as_noise_grows():
    audio = music()
    scores = [si_sdr(audio, degraded(audio, noise)).item() for noise in (0.001, 0.01, 0.1, 0.5)]
    assert scores[0] > 40 and all(a > b for a, b in zip(scores, scores[1:]))
    assert si_sdr(audio, 3.0 * audio).item() > 60  # scale-invariant


@pytest.mark.parametrize("metric", ["mrstft", "mel"])
def test_spectral_distances_are_zero_for_identity_and_grow_with_noise(metric):
    audio = music()
    distance = (lambda a, b: mrstft_distance(a, b)) if metric == "mrstft" else (lambda a, b: mel_distance(a, b, RATE))
    assert distance(audio, audio.clone()) < 1e-4
    values = [distance(audio, degraded(audio, noise)) for noise in (0.001, 0.01, 0.1)]
    assert all(a < b for a, b in zip(values, values[1:]))


def test_reconstruction_metrics_report_and_check_shapes():
    audio = music()
    metrics = reconstruction_metrics(audio, degraded(audio, 0.01), RATE)
    assert set(metrics) == {"si_sdr", "mrstft", "mel"}
    with pytest.raises(ValueError, match="same shape"):
        reconstruction_metrics(audio, audio[..., :-1], RATE)
