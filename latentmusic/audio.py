"""Audio file I/O and signal helpers.

Files are read and written with soundfile (libsndfile), not ``torchaudio.load``/``save``, which need
FFmpeg. DSP uses torchaudio. Audio is a float tensor of shape ``(channels, samples)`` in [-1, 1];
helpers that take audio also accept ``(samples,)`` (mono) and numpy arrays, and validate their input
with :func:`check_audio`.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torch.nn.functional as F
import torchaudio

# Allowed subtypes per format; the first is the default.
_SUBTYPES = {
    ".wav": ("PCM_16", "PCM_24", "FLOAT"),
    ".flac": ("PCM_16", "PCM_24"),
    ".ogg": ("VORBIS",),
}
SUPPORTED_FORMATS = tuple(_SUBTYPES)


def check_audio(audio: torch.Tensor | np.ndarray, name: str = "audio") -> torch.Tensor:
    """Validate audio and return it as a 2-D tensor.

    Args:
        audio: Float samples of shape ``(samples,)`` or ``(channels, samples)``.
        name: What to call the audio in error messages.

    Returns:
        The audio as a tensor of shape ``(channels, samples)`` (a view when no change is needed).

    Raises:
        ValueError: If the audio has the wrong rank, is not floating point, is empty, or holds NaN/Inf.
    """
    audio = torch.as_tensor(audio)
    if audio.ndim not in (1, 2):
        raise ValueError(
            f"{name} must have shape (samples,) or (channels, samples), got {tuple(audio.shape)}; "
            "pass one batch item at a time (e.g. audio[0]) or squeeze extra dimensions"
        )
    if not audio.is_floating_point():
        raise ValueError(
            f"{name} must hold floating-point samples in [-1, 1], got dtype {audio.dtype}; "
            "scale integer PCM first, e.g. audio.float() / 32768 for 16-bit"
        )
    if audio.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(audio.shape)}); check the file or the model that produced it")
    if not torch.isfinite(audio).all():
        n_nan, n_inf = int(audio.isnan().sum()), int(audio.isinf().sum())
        raise ValueError(
            f"{name} contains {n_nan} NaN and {n_inf} Inf samples out of {audio.numel()}; check the upstream "
            "model (e.g. fp16 overflow, too high guidance scale) or clean it with torch.nan_to_num(audio)"
        )
    return audio if audio.ndim == 2 else audio.unsqueeze(0)


def _check_sample_rate(sample_rate: int, name: str = "sample_rate") -> None:
    if sample_rate <= 0:
        raise ValueError(f"{name} must be a positive number of Hz (e.g. 44100), got {sample_rate}")


def _check_suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in _SUBTYPES:
        raise ValueError(
            f"unsupported audio format {path.suffix or '(no suffix)'!r} for {path}; "
            f"use one of {', '.join(SUPPORTED_FORMATS)} (convert other formats with e.g. ffmpeg)"
        )
    return suffix


def load_audio(
    path: str | os.PathLike, sample_rate: int | None = None, channels: int | None = None
) -> tuple[torch.Tensor, int]:
    """Read an audio file.

    Args:
        path: A ``.wav``, ``.flac`` or ``.ogg`` file.
        sample_rate: Resample to this rate; ``None`` keeps the file's rate.
        channels: Convert to this many channels (see :func:`to_channels`); ``None`` keeps the file's.

    Returns:
        A float32 tensor of shape ``(channels, samples)`` in [-1, 1], and its sample rate.

    Raises:
        FileNotFoundError: If there is no file at ``path``.
        ValueError: If the format is unsupported, the file cannot be decoded, or its samples are invalid.
    """
    path = Path(path)
    _check_suffix(path)
    if not path.is_file():
        raise FileNotFoundError(f"audio file not found: {path.absolute()}; check the path")
    try:
        data, file_sr = sf.read(path, dtype="float32", always_2d=True)
    except sf.LibsndfileError as error:
        raise ValueError(
            f"could not decode {path} ({error}); is it an audio file? "
            "It may be empty, truncated or mislabelled; re-export it as WAV or FLAC"
        ) from error
    # soundfile returns (samples, channels); make it (channels, samples) and contiguous.
    audio = check_audio(torch.from_numpy(data).T.contiguous(), name=f"audio in {path}")
    if channels is not None:
        audio = to_channels(audio, channels)
    if sample_rate is not None:
        audio = resample(audio, file_sr, sample_rate)
    return audio, sample_rate or file_sr


def save_audio(
    path: str | os.PathLike,
    audio: torch.Tensor | np.ndarray,
    sample_rate: int,
    subtype: str | None = None,
) -> Path:
    """Write audio to a file, creating parent directories.

    The format comes from the suffix. PCM subtypes clip samples outside [-1, 1].

    Args:
        path: Destination ending in ``.wav``, ``.flac`` or ``.ogg``.
        audio: Float samples of shape ``(samples,)`` or ``(channels, samples)``.
        sample_rate: Sample rate in Hz.
        subtype: ``"PCM_16"`` (default for wav/flac), ``"PCM_24"`` (wav/flac), ``"FLOAT"`` (wav) or
            ``"VORBIS"`` (ogg, the default there).

    Returns:
        The path written.

    Raises:
        ValueError: If the format, subtype, sample rate or audio is invalid; nothing is written then.
    """
    path = Path(path)
    allowed = _SUBTYPES[_check_suffix(path)]
    subtype = (subtype or allowed[0]).upper()
    if subtype not in allowed:
        raise ValueError(
            f"subtype {subtype!r} is not supported for {path.suffix} files; use one of {', '.join(allowed)}"
        )
    _check_sample_rate(sample_rate)
    audio = check_audio(audio)
    path.parent.mkdir(parents=True, exist_ok=True)
    # .float() also covers half/bfloat16, which numpy/soundfile cannot take.
    sf.write(path, audio.detach().cpu().float().numpy().T, sample_rate, subtype=subtype)
    return path


def resample(audio: torch.Tensor, orig_sr: int, target_sr: int) -> torch.Tensor:
    """Resample along the last axis (band-limited sinc interpolation).

    Args:
        audio: Float tensor of shape ``(..., samples)``.
        orig_sr: Current sample rate in Hz.
        target_sr: Wanted sample rate in Hz.

    Returns:
        The resampled audio; ``audio`` itself when the rates are equal.
    """
    _check_sample_rate(orig_sr, "orig_sr")
    _check_sample_rate(target_sr, "target_sr")
    if orig_sr == target_sr:
        return audio
    return torchaudio.functional.resample(audio, orig_sr, target_sr)


def to_channels(audio: torch.Tensor | np.ndarray, channels: int) -> torch.Tensor:
    """Convert mono to N channels (repeat) or N channels to mono (mean).

    Args:
        audio: Float samples of shape ``(samples,)`` or ``(channels, samples)``.
        channels: Wanted number of channels.

    Returns:
        A tensor of shape ``(channels, samples)``.

    Raises:
        ValueError: For conversions other than same-count, mono→N and N→mono.
    """
    audio = check_audio(audio)
    current = audio.shape[0]
    if channels <= 0:
        raise ValueError(f"channels must be positive, got {channels}")
    if current == channels:
        return audio
    if current == 1:
        return audio.repeat(channels, 1)
    if channels == 1:
        return audio.mean(dim=0, keepdim=True)
    raise ValueError(
        f"cannot convert {current}-channel audio to {channels} channels: only mono→N and N→mono are "
        f"supported; select or mix the channels yourself (e.g. audio[:{channels}]) first"
    )


def normalize_peak(audio: torch.Tensor | np.ndarray, peak_db: float = -1.0) -> torch.Tensor:
    """Scale audio so that its largest absolute sample is ``peak_db`` dBFS.

    Args:
        audio: Float samples of shape ``(samples,)`` or ``(channels, samples)``.
        peak_db: Target peak in dB relative to full scale.

    Returns:
        The scaled audio, shape ``(channels, samples)``; silence is returned unchanged.
    """
    audio = check_audio(audio)
    peak = audio.abs().max()
    if peak == 0:
        return audio
    return audio * (10 ** (peak_db / 20) / peak)


def crop_or_pad(audio: torch.Tensor, length: int, offset: int = 0) -> torch.Tensor:
    """Take ``length`` samples from ``offset`` along the last axis, zero-padding at the end if short.

    Args:
        audio: Tensor of shape ``(..., samples)``.
        length: Number of samples to return.
        offset: First sample to keep.

    Returns:
        A tensor of shape ``(..., length)``.
    """
    if length <= 0 or offset < 0:
        raise ValueError(f"need length > 0 and offset >= 0, got length={length}, offset={offset}")
    audio = audio[..., offset : offset + length]
    return F.pad(audio, (0, length - audio.shape[-1]))


@functools.lru_cache(maxsize=16)
def _mel_transform(
    sample_rate: int, n_fft: int, hop_length: int, n_mels: int, device: torch.device, dtype: torch.dtype
) -> torchaudio.transforms.MelSpectrogram:
    # Device and dtype are part of the key so a cached module is never moved in place under another caller.
    transform = torchaudio.transforms.MelSpectrogram(
        sample_rate=sample_rate, n_fft=n_fft, hop_length=hop_length, n_mels=n_mels
    )
    return transform.to(device=device, dtype=dtype)


def mel_spectrogram(
    audio: torch.Tensor | np.ndarray,
    sample_rate: int,
    n_fft: int = 1024,
    hop_length: int = 256,
    n_mels: int = 80,
    log: bool = True,
) -> torch.Tensor:
    """Mel power spectrogram (torchaudio defaults: HTK mel scale, centred frames, Hann window).

    Args:
        audio: Float samples of shape ``(samples,)`` or ``(channels, samples)``, longer than ``n_fft // 2``.
        sample_rate: Sample rate in Hz.
        n_fft: FFT size.
        hop_length: Samples between frames.
        n_mels: Number of mel bands.
        log: Return ``log(clamp(mel, min=1e-5))`` instead of the linear power.

    Returns:
        A tensor of shape ``(channels, n_mels, samples // hop_length + 1)``.
    """
    audio = check_audio(audio)
    _check_sample_rate(sample_rate)
    # Centred frames reflect-pad by n_fft // 2, which torch refuses for shorter input.
    if audio.shape[-1] <= n_fft // 2:
        raise ValueError(
            f"audio has {audio.shape[-1]} samples, too short for n_fft={n_fft}; "
            f"pad it (crop_or_pad) to more than {n_fft // 2} samples or use a smaller n_fft"
        )
    mel = _mel_transform(sample_rate, n_fft, hop_length, n_mels, audio.device, audio.dtype)(audio)
    return mel.clamp(min=1e-5).log() if log else mel
