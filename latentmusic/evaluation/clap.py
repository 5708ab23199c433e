"""CLAP score: how well generated audio matches its prompt (text–audio cosine similarity).

Both the prompt and the clip are embedded with a LAION-CLAP model
(:class:`~latentmusic.evaluation.embeddings.ClapEmbedding`, loaded from a local folder: nothing is
downloaded), and the score is the cosine similarity of the two unit vectors, averaged over clips, as
MusicLDM and Stable Audio report it. Higher is better; the scale depends on the checkpoint, so compare
scores from the same one. A clip longer than the model's 10 s window is embedded window by window and
the window vectors are averaged.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from .audio_sets import AudioSetLike, iterate_batches, resolve_audio_set
from .embeddings import ClapEmbedding


def clap_similarities(
    audios: AudioSetLike,
    prompts: Sequence[str],
    clap: str | os.PathLike | ClapEmbedding,
    batch_size: int = 8,
) -> np.ndarray:
    """Cosine similarity between each clip and its prompt in CLAP's joint space.

    Args:
        audios: The clips: a folder (sorted paths), a list of audio files, or ``(waveforms, sample_rate)``.
        prompts: One text per clip, in the same order.
        clap: A CLAP checkpoint folder (``ClapModel`` + ``ClapProcessor``), or a loaded :class:`ClapEmbedding`.
        batch_size: Clips loaded and embedded at once.

    Returns:
        Array of shape ``(clips,)`` with values in [-1, 1].

    Raises:
        ValueError: If the numbers of clips and prompts differ.
    """
    items = resolve_audio_set(audios, "CLAP score")
    if len(items) != len(prompts):
        raise ValueError(f"{len(items)} clips but {len(prompts)} prompts; give one prompt per clip, in order")
    model = clap if isinstance(clap, ClapEmbedding) else ClapEmbedding(clap)
    audio_vectors = np.concatenate(
        [model.embed_clips(batch) for batch in iterate_batches(items, model.sample_rate, batch_size)]
    )
    text_vectors = np.concatenate(
        [model.embed_text(prompts[start : start + batch_size]) for start in range(0, len(prompts), batch_size)]
    )
    return (audio_vectors * text_vectors).sum(axis=-1)


def clap_score(
    audios: AudioSetLike,
    prompts: Sequence[str],
    clap: str | os.PathLike | ClapEmbedding,
    batch_size: int = 8,
) -> float:
    """Mean text–audio cosine similarity of clips and their prompts (see :func:`clap_similarities`).

    Args:
        audios: The clips: a folder (sorted paths), a list of audio files, or ``(waveforms, sample_rate)``.
        prompts: One text per clip, in the same order.
        clap: A CLAP checkpoint folder, or a loaded :class:`ClapEmbedding`.
        batch_size: Clips loaded and embedded at once.

    Returns:
        The mean similarity, in [-1, 1] (higher is better).
    """
    return float(clap_similarities(audios, prompts, clap, batch_size).mean())
