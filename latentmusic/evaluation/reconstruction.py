"""Reconstruction metrics for autoencoders and codecs, as DAC and EnCodec report them.

- SI-SDR (dB, higher is better): scale-invariant signal-to-distortion ratio (auraloss's `SISDRLoss`).
- Multi-resolution STFT distance (lower is better): auraloss's spectral convergence + log-magnitude loss.
- Mel distance (lower is better): L1 between log-mel spectrograms at several resolutions (DAC's mel loss).
"""

from __future__ import annotations

import functools

import auraloss
import torch

from ..audio import mel_spectrogram

# (n_fft, n_mels) pairs: DAC's mel distance uses windows from 32 to 2048 samples; 256–2048 suffice at 24 kHz.
MEL_RESOLUTIONS = ((2048, 80), (1024, 80), (512, 64), (256, 32))


def _pairs(reference: torch.Tensor, estimate: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if reference.shape != estimate.shape:
        raise ValueError(
            f"reference {tuple(reference.shape)} and estimate {tuple(estimate.shape)} must have the same shape; "
            "crop the reconstruction to the input's length"
        )
    reference, estimate = reference.float(), estimate.float()
    if reference.ndim == 1:
        return reference.view(1, 1, -1), estimate.view(1, 1, -1)
    if reference.ndim == 2:
        return reference.unsqueeze(0), estimate.unsqueeze(0)
    return reference, estimate


def si_sdr(reference: torch.Tensor, estimate: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Scale-invariant SDR in dB per example (mean over channels) of `(batch, channels, samples)` audio.

    auraloss's `SISDRLoss` (zero-mean, per channel), negated back from a loss to a ratio.

    Args:
        reference: The input audio, `(samples,)`, `(channels, samples)` or `(batch, channels, samples)`.
        estimate: Its reconstruction, the same shape.
        eps: Offset that keeps silent references and perfect reconstructions finite.

    Returns:
        One value per example, shape `(batch,)`.
    """
    reference, estimate = _pairs(reference, estimate)
    return -auraloss.time.SISDRLoss(eps=eps, reduction="none")(estimate, reference).mean(-1)


@functools.lru_cache(maxsize=4)
def _mrstft() -> auraloss.freq.MultiResolutionSTFTLoss:
    return auraloss.freq.MultiResolutionSTFTLoss()


def mrstft_distance(reference: torch.Tensor, estimate: torch.Tensor) -> float:
    """auraloss's multi-resolution STFT loss (FFT sizes 512, 1024, 2048) over the whole batch."""
    reference, estimate = _pairs(reference, estimate)
    with torch.no_grad():
        return float(_mrstft()(estimate, reference))


def mel_distance(reference: torch.Tensor, estimate: torch.Tensor, sample_rate: int) -> float:
    """Mean L1 distance between log-mel spectrograms over `MEL_RESOLUTIONS`."""
    reference, estimate = _pairs(reference, estimate)
    flat_ref = reference.reshape(-1, reference.shape[-1])
    flat_est = estimate.reshape(-1, estimate.shape[-1])
    distances = []
    with torch.no_grad():
        for n_fft, n_mels in MEL_RESOLUTIONS:
            if flat_ref.shape[-1] < n_fft:
                continue
            ref = mel_spectrogram(flat_ref, sample_rate, n_fft=n_fft, hop_length=n_fft // 4, n_mels=n_mels)
            est = mel_spectrogram(flat_est, sample_rate, n_fft=n_fft, hop_length=n_fft // 4, n_mels=n_mels)
            distances.append((ref - est).abs().mean().item())
    if not distances:
        raise ValueError(f"audio of {flat_ref.shape[-1]} samples is shorter than the smallest mel window (256)")
    return sum(distances) / len(distances)


def reconstruction_metrics(reference: torch.Tensor, estimate: torch.Tensor, sample_rate: int) -> dict[str, float]:
    """SI-SDR (mean dB), multi-resolution STFT distance and mel distance of a batch of reconstructions."""
    return {
        "si_sdr": si_sdr(reference, estimate).mean().item(),
        "mrstft": mrstft_distance(reference, estimate),
        "mel": mel_distance(reference, estimate, sample_rate),
    }
