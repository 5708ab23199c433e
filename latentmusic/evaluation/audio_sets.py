"""Audio sets: the collections of clips that the evaluation metrics embed, estimate or score.

An *audio set* (:data:`AudioSetLike`) is a folder (searched recursively for ``.wav``, ``.flac`` and
``.ogg`` files), a list of audio file paths, or waveforms with their sample rate:
``(list_of_arrays, sample_rate)`` or ``(array_of_shape_(clips, samples), sample_rate)``. Audio at any
sample rate and channel count is mixed to mono and resampled to the rate the metric needs
(the embedding's for the Fréchet distance, the estimator's for the attributes, CLAP's for the CLAP score).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..audio import SUPPORTED_FORMATS, check_audio, load_audio, resample, to_channels

AudioItem = Path | tuple[np.ndarray, int]
"""One clip of a resolved audio set: an audio file, or a ``(waveform, sample_rate)`` pair."""

AudioSetLike = str | os.PathLike | Sequence[Any] | tuple[Any, int]
"""A folder, a list of audio files, or ``(waveforms, sample_rate)``; see the module docstring."""


def list_audio_files(folder: str | os.PathLike) -> list[Path]:
    """The audio files under a folder, recursively, sorted.

    Args:
        folder: Folder to search for ``.wav``, ``.flac`` and ``.ogg`` files.

    Returns:
        Their paths.

    Raises:
        FileNotFoundError: If the folder does not exist.
        ValueError: If it holds no audio file.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"audio folder not found: {folder.absolute()}; check the path")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in SUPPORTED_FORMATS and p.is_file())
    if not files:
        raise ValueError(
            f"no audio files ({', '.join(SUPPORTED_FORMATS)}) found in {folder.absolute()} (searched recursively); "
            "point at the folder that holds the clips, or convert them (e.g. with ffmpeg) to one of these formats"
        )
    return files


def _is_waveform_pair(audio_set: Any) -> bool:
    return (
        isinstance(audio_set, tuple)
        and len(audio_set) == 2
        and isinstance(audio_set[1], (int, np.integer))
        and not isinstance(audio_set[1], bool)
    )


def resolve_audio_set(audio_set: AudioSetLike, name: str = "audio") -> list[AudioItem]:
    """List the clips of an audio set without loading them.

    Args:
        audio_set: A folder, a list of audio files, or ``(waveforms, sample_rate)`` where waveforms is a
            list of ``(samples,)`` / ``(channels, samples)`` arrays or tensors, or one array of shape
            ``(clips, samples)`` or ``(clips, channels, samples)``.
        name: What to call the set in error messages.

    Returns:
        One item per clip: a path, or a ``(waveform, sample_rate)`` pair.

    Raises:
        FileNotFoundError: If a folder or file does not exist.
        ValueError: If the set is empty or bare waveforms come without a sample rate.
    """
    if isinstance(audio_set, (str, os.PathLike)):
        return list(list_audio_files(audio_set))
    if _is_waveform_pair(audio_set):
        waveforms, sample_rate = audio_set
        if isinstance(waveforms, (np.ndarray, torch.Tensor)) and waveforms.ndim == 1:
            waveforms = [waveforms]
        items = [(np.asarray(torch.as_tensor(w).detach().cpu()), int(sample_rate)) for w in waveforms]
    else:
        if isinstance(audio_set, (np.ndarray, torch.Tensor)) or (
            len(audio_set) and isinstance(audio_set[0], (np.ndarray, torch.Tensor))
        ):
            raise ValueError(
                f"the {name} set is waveforms without a sample rate; pass (waveforms, sample_rate), "
                "e.g. (audios, 44100)"
            )
        items = [Path(p) for p in audio_set]
        for path in items:
            if not path.is_file():
                raise FileNotFoundError(f"audio file not found: {path.absolute()} (in the {name} set)")
    if not items:
        raise ValueError(f"the {name} set is empty; it needs at least one clip (and many for a Fréchet distance)")
    return items


def load_clip(item: AudioItem, sample_rate: int) -> np.ndarray:
    """Load one clip of a resolved set as mono float32 at ``sample_rate``.

    Args:
        item: A path, or a ``(waveform, sample_rate)`` pair.
        sample_rate: Wanted rate in Hz; other rates are resampled.

    Returns:
        Waveform of shape ``(samples,)``.
    """
    if isinstance(item, Path):
        audio, _ = load_audio(item, sample_rate=sample_rate, channels=1)
    else:
        waveform, rate = item
        audio = check_audio(torch.as_tensor(np.ascontiguousarray(waveform)), name="a waveform of the set")
        audio = resample(to_channels(audio.float(), 1), rate, sample_rate)
    return audio[0].numpy().astype(np.float32, copy=False)


def iterate_batches(items: Sequence[AudioItem], sample_rate: int, batch_size: int) -> Iterator[list[np.ndarray]]:
    """Load a resolved set in batches of mono clips at ``sample_rate``.

    Args:
        items: Output of :func:`resolve_audio_set`.
        sample_rate: Wanted rate in Hz.
        batch_size: Clips per batch.

    Yields:
        Lists of up to ``batch_size`` waveforms.
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    for start in range(0, len(items), batch_size):
        yield [load_clip(item, sample_rate) for item in items[start : start + batch_size]]
