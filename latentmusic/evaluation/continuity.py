"""How audible a seam is: spectral flux across a boundary, for continuation, inpainting and long-form output.

Spectral flux (the change of the magnitude spectrum from one STFT frame to the next) is what onset detectors
look for; a seam between two unrelated pieces of audio shows up as a flux peak. `seam_flux` reports the flux
across the boundary relative to the clip's median flux, so 1 means "as smooth as the music around it".
"""

from __future__ import annotations

import torch


def spectral_flux(audio: torch.Tensor, n_fft: int = 512, hop_length: int = 128) -> torch.Tensor:
    """Per-frame spectral flux of mono or multichannel `(..., samples)` audio: L1 change of log-magnitude
    spectra between consecutive frames, averaged over bins and channels; `(frames - 1,)` per clip."""
    audio = audio.float()
    flat = audio.reshape(-1, audio.shape[-1])
    window = torch.hann_window(n_fft, device=audio.device)
    spec = torch.stft(flat, n_fft, hop_length, window=window, center=True, return_complex=True).abs()
    log = torch.log1p(100 * spec)
    flux = (log[..., 1:] - log[..., :-1]).abs().mean(dim=-2)
    return flux.reshape(*audio.shape[:-1], -1).mean(dim=tuple(range(audio.ndim - 1))) if audio.ndim > 1 else flux


def seam_flux(audio: torch.Tensor, seam: int, n_fft: int = 512, hop_length: int = 128) -> float:
    """Largest spectral flux within one window of sample `seam`, divided by the median flux of the clip.

    Args:
        audio: `(samples,)` or `(channels, samples)`.
        seam: Sample index of the boundary.
        n_fft: STFT window.
        hop_length: STFT hop.
    """
    if not 0 < seam < audio.shape[-1]:
        raise ValueError(f"seam {seam} is not inside the audio's {audio.shape[-1]} samples")
    flux = spectral_flux(audio, n_fft, hop_length)
    # flux[k] compares frames k and k+1, centred on samples k*hop and (k+1)*hop
    centre = seam // hop_length
    reach = n_fft // hop_length
    near = flux[max(0, centre - reach) : centre + reach + 1]
    return float(near.max() / flux.median().clamp(min=1e-8))
