"""Melody conditioning as MusicGen does it: the dominant pitch class of each frame of a reference recording.

MusicGen conditions on a chromagram reduced to its argmax per frame, an information bottleneck that keeps the
tune and drops timbre, so the model cannot just copy the reference. The chromagram comes from librosa (a core
dependency, imported only when a chromagram is made, as the evaluation metrics do, so the training recipes start
without it); frames quieter than `silence_db` below the clip's peak get no pitch class at all.
"""

from __future__ import annotations

import numpy as np
import torch

from .audio import check_audio

PITCH_CLASSES = 12


def melody_chroma(
    audio: torch.Tensor | np.ndarray, sample_rate: int, num_frames: int, silence_db: float = 40.0
) -> torch.Tensor:
    """One-hot dominant pitch class per frame, `(12, num_frames)`, of mono or multichannel audio.

    Args:
        audio: `(samples,)` or `(channels, samples)`; channels are averaged.
        sample_rate: Its sample rate.
        num_frames: Frames to return (the latent frames the melody conditions); the chromagram is resampled
            to them by nearest neighbour.
        silence_db: Frames this far below the loudest frame have no pitch class (all zeros).
    """
    import librosa

    mono = check_audio(torch.as_tensor(audio).float(), "melody").mean(0).numpy()
    hop = 512
    chroma = librosa.feature.chroma_stft(y=mono, sr=sample_rate, n_fft=2048, hop_length=hop)  # (12, frames)
    energy = librosa.feature.rms(y=mono, frame_length=2048, hop_length=hop)[0][: chroma.shape[1]]
    loud = 20 * np.log10(np.maximum(energy, 1e-10) / max(energy.max(), 1e-10)) > -silence_db
    one_hot = np.zeros_like(chroma)
    one_hot[chroma.argmax(axis=0), np.arange(chroma.shape[1])] = 1.0
    one_hot *= loud[None]
    # frame i of the output covers the same fraction of the clip as frame j of the chromagram
    index = np.minimum((np.arange(num_frames) + 0.5) / num_frames * one_hot.shape[1], one_hot.shape[1] - 1)
    return torch.from_numpy(one_hot[:, index.astype(int)]).float()
