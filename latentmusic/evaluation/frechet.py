"""Fréchet distance between sets of audio in an embedding space (FAD: Kilgour et al., 2019).

Each set of clips is embedded (frame by frame, or one vector per clip), the embeddings are summarised
by their mean and covariance (:class:`EmbeddingStatistics`), and the two Gaussians are compared with the
Fréchet (2-Wasserstein) distance (:func:`frechet_distance`). Lower is better; 0 means identical statistics.

The embeddings are in :mod:`latentmusic.evaluation.embeddings` (the offline default,
:class:`~latentmusic.evaluation.embeddings.MusicFeatureEmbedding`, and CLAP and EnCodec from local folders); the
sets of clips they embed, and how they are loaded, in :mod:`latentmusic.evaluation.audio_sets`. Reference
statistics can be computed once and cached (:meth:`EmbeddingStatistics.save`); a cached
:class:`EmbeddingStatistics` can stand in for a set.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.linalg
from tqdm.auto import tqdm

from .audio_sets import AudioSetLike, iterate_batches, resolve_audio_set
from .embeddings import AudioEmbedding, make_embedding

# A covariance needs at least two vectors; fewer than dimension + 1 give a singular one (still usable).
MIN_EMBEDDINGS = 2


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, eps: float = 1e-6
) -> float:
    """Fréchet distance between two Gaussians: ``|mu1 - mu2|² + Tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^½)``.

    Computed in float64 with ``scipy.linalg.sqrtm`` as the reference FID/FAD implementations do: if the
    square root is not finite (singular covariances), ``eps`` is added to both diagonals and it is
    retried; an imaginary part left by rounding is dropped when it is negligible; and a result a little
    below zero (rounding, for identical statistics) is returned as 0.

    Args:
        mu1: Mean of the first set, shape ``(dim,)``.
        sigma1: Covariance of the first set, shape ``(dim, dim)``.
        mu2: Mean of the second set, shape ``(dim,)``.
        sigma2: Covariance of the second set, shape ``(dim, dim)``.
        eps: Diagonal offset used when the plain matrix square root is not finite.

    Returns:
        The distance, a non-negative float.

    Raises:
        ValueError: If the shapes disagree, an input is not finite, or the square root keeps a large
            imaginary part (the covariances are not valid, e.g. not positive semi-definite).
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, dtype=np.float64)), np.atleast_1d(np.asarray(mu2, dtype=np.float64))
    sigma1 = np.atleast_2d(np.asarray(sigma1, dtype=np.float64))
    sigma2 = np.atleast_2d(np.asarray(sigma2, dtype=np.float64))
    dim = mu1.shape[0]
    if mu1.shape != (dim,) or mu2.shape != (dim,) or sigma1.shape != (dim, dim) or sigma2.shape != (dim, dim):
        raise ValueError(
            f"shapes disagree: mu1 {mu1.shape}, sigma1 {sigma1.shape}, mu2 {mu2.shape}, sigma2 {sigma2.shape}; "
            "both sets must be embedded with the same embedding (means (dim,), covariances (dim, dim))"
        )
    for name, value in (("mu1", mu1), ("sigma1", sigma1), ("mu2", mu2), ("sigma2", sigma2)):
        if not np.isfinite(value).all():
            raise ValueError(f"{name} contains NaN or Inf; check the embeddings (silent or broken audio?)")
    diff = mu1 - mu2
    trace_covmean = _trace_sqrt_product(sigma1, sigma2, eps)
    value = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_covmean
    return float(max(value, 0.0))


def _trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray, eps: float) -> float:
    with warnings.catch_warnings():
        # Singular (rank-deficient) covariances make sqrtm warn; the checks below decide what to do.
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
        covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
        if not np.isfinite(covmean).all():
            offset = np.eye(sigma1.shape[0]) * eps
            covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        imaginary = np.abs(np.diagonal(covmean).imag).max()
        if imaginary > 1e-3 * max(1.0, np.abs(np.diagonal(covmean).real).max()):
            raise ValueError(
                f"the matrix square root has a large imaginary part ({imaginary:.3g}): the covariances are "
                "not positive semi-definite; compute them with EmbeddingStatistics, not by hand"
            )
        covmean = covmean.real
    return float(np.trace(covmean))


@dataclass(frozen=True)
class EmbeddingStatistics:
    """Mean and covariance of a set's embeddings: what the Fréchet distance compares, and what is cached.

    Args:
        mean: Mean embedding, shape ``(dim,)``.
        cov: Covariance (``ddof=1``), shape ``(dim, dim)``; zeros when ``count`` is 1.
        count: Number of embedding vectors (frames, or clips for per-clip embeddings).
        n_clips: Number of audio clips they came from.
        embedding: Name of the embedding (:attr:`AudioEmbedding.name`), so statistics from different
            embeddings are never compared.
    """

    mean: np.ndarray
    cov: np.ndarray
    count: int
    n_clips: int
    embedding: str

    @classmethod
    def from_embeddings(cls, embeddings: np.ndarray, n_clips: int, embedding: str) -> EmbeddingStatistics:
        """Statistics of a batch of embedding vectors.

        Args:
            embeddings: Array of shape ``(count, dim)``, ``count >= 1``.
            n_clips: Number of clips the vectors came from.
            embedding: Name of the embedding that made them.

        Returns:
            The statistics, in float64.
        """
        embeddings = np.asarray(embeddings, dtype=np.float64)
        if embeddings.ndim != 2 or embeddings.shape[0] == 0:
            raise ValueError(f"embeddings must have shape (count >= 1, dim), got {embeddings.shape}")
        count = embeddings.shape[0]
        cov = np.cov(embeddings, rowvar=False) if count > 1 else np.zeros((embeddings.shape[1],) * 2)
        return cls(embeddings.mean(axis=0), np.atleast_2d(cov), count, n_clips, embedding)

    def combine(self, other: EmbeddingStatistics) -> EmbeddingStatistics:
        """Pool two sets' statistics, as if computed from all their vectors at once (Chan et al.'s update).

        Args:
            other: Statistics of more embeddings from the same embedding.

        Returns:
            The pooled statistics.
        """
        self._check_compatible(other)
        count = self.count + other.count
        delta = other.mean - self.mean
        mean = self.mean + delta * (other.count / count)
        scatter = self.cov * (self.count - 1) + other.cov * (other.count - 1)
        scatter = scatter + np.outer(delta, delta) * (self.count * other.count / count)
        return EmbeddingStatistics(mean, scatter / (count - 1), count, self.n_clips + other.n_clips, self.embedding)

    def frechet_distance(self, other: EmbeddingStatistics) -> float:
        """Fréchet distance to another set's statistics.

        Args:
            other: Statistics from the same embedding.

        Returns:
            The distance (see :func:`frechet_distance`).

        Raises:
            ValueError: If the embeddings differ or either set has fewer than :data:`MIN_EMBEDDINGS` vectors.
        """
        self._check_compatible(other)
        for name, stats in (("first", self), ("second", other)):
            stats.check_enough(name, warn=False)
        return frechet_distance(self.mean, self.cov, other.mean, other.cov)

    def check_enough(self, name: str = "audio", warn: bool = True) -> None:
        """Raise if there are too few vectors for a covariance; warn if too few for a full-rank one.

        Args:
            name: What to call the set in the message.
            warn: Warn (``UserWarning``) when there are no more vectors than dimensions.

        Raises:
            ValueError: If ``count < MIN_EMBEDDINGS``.
        """
        dim = self.mean.shape[0]
        if self.count < MIN_EMBEDDINGS:
            raise ValueError(
                f"the {name} set gives {self.count} embedding vector(s) (from {self.n_clips} clip(s)); a covariance "
                f"needs at least {MIN_EMBEDDINGS}, and a reliable Fréchet distance many more than the {dim} "
                "dimensions; add clips (or longer ones)"
            )
        if warn and self.count <= dim:
            warnings.warn(
                f"the {name} set gives only {self.count} embedding vectors for {dim} dimensions: the covariance "
                "is singular and the Fréchet distance will be noisy and biased; use more or longer clips",
                stacklevel=3,
            )

    def _check_compatible(self, other: EmbeddingStatistics) -> None:
        if self.embedding != other.embedding or self.mean.shape != other.mean.shape:
            raise ValueError(
                f"statistics from different embeddings cannot be compared: {self.embedding!r} "
                f"({self.mean.shape[0]} dims) vs {other.embedding!r} ({other.mean.shape[0]} dims); "
                "recompute one of them (delete a stale --reference-stats cache)"
            )

    def save(self, path: str | os.PathLike) -> Path:
        """Write the statistics to a ``.npz`` file, creating parent folders.

        Args:
            path: Destination; ``.npz`` is appended by numpy if missing.

        Returns:
            The path written.
        """
        path = Path(path)
        if path.suffix != ".npz":
            path = path.with_name(path.name + ".npz")
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, mean=self.mean, cov=self.cov, count=self.count, n_clips=self.n_clips, embedding=self.embedding)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> EmbeddingStatistics:
        """Read statistics written by :meth:`save`.

        Args:
            path: A ``.npz`` file.

        Returns:
            The statistics.

        Raises:
            FileNotFoundError: If there is no file at ``path``.
            ValueError: If the file is not a statistics file.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no statistics file at {path.absolute()}; compute it first (save())")
        with np.load(path, allow_pickle=False) as data:
            missing = {"mean", "cov", "count", "n_clips", "embedding"} - set(data.files)
            if missing:
                raise ValueError(f"{path} is not an EmbeddingStatistics file (missing {sorted(missing)})")
            return cls(data["mean"], data["cov"], int(data["count"]), int(data["n_clips"]), str(data["embedding"]))


def compute_statistics(
    audio_set: AudioSetLike,
    embedding: AudioEmbedding | str | None = None,
    batch_size: int = 8,
    progress: bool = True,
    name: str = "audio",
) -> EmbeddingStatistics:
    """Embed a set of clips and summarise the embeddings (streaming: memory does not grow with the set).

    Args:
        audio_set: A folder, a list of files, ``(waveforms, sample_rate)``, or ready statistics (returned
            as they are).
        embedding: Embedding object or description (see :func:`make_embedding`); ``None`` for the default.
        batch_size: Clips loaded and embedded at once.
        progress: Show a progress bar.
        name: What to call the set in messages and the progress bar.

    Returns:
        The set's statistics.
    """
    if isinstance(audio_set, EmbeddingStatistics):
        return audio_set
    embedding = make_embedding(embedding)
    items = resolve_audio_set(audio_set, name)
    stats = None
    with tqdm(total=len(items), desc=f"embedding {name}", unit="clip", disable=not progress) as bar:
        for batch in iterate_batches(items, embedding.sample_rate, batch_size):
            vectors = np.asarray(embedding(batch))
            batch_stats = EmbeddingStatistics.from_embeddings(vectors, len(batch), embedding.name)
            stats = batch_stats if stats is None else stats.combine(batch_stats)
            bar.update(len(batch))
    return stats


def frechet_audio_distance(
    set_a: AudioSetLike | EmbeddingStatistics,
    set_b: AudioSetLike | EmbeddingStatistics,
    embedding: AudioEmbedding | str | None = None,
    batch_size: int = 8,
    progress: bool = True,
) -> float:
    """Fréchet audio distance between two sets of clips.

    Args:
        set_a: Usually the generated clips: a folder, a list of files, ``(waveforms, sample_rate)``, or
            cached statistics.
        set_b: Usually the reference clips, in any of the same forms.
        embedding: Embedding object or description (see :func:`make_embedding`); ``None`` for the offline
            default, :class:`MusicFeatureEmbedding`.
        batch_size: Clips loaded and embedded at once.
        progress: Show progress bars.

    Returns:
        The distance (lower is better).

    Raises:
        ValueError: If a set is empty, gives fewer than :data:`MIN_EMBEDDINGS` vectors, or cached
            statistics come from another embedding.
        FileNotFoundError: If a folder or file does not exist.
    """
    if not all(isinstance(audio_set, EmbeddingStatistics) for audio_set in (set_a, set_b)):
        embedding = make_embedding(embedding)
    stats_a = compute_statistics(set_a, embedding, batch_size, progress, name="first")
    stats_a.check_enough("first")
    stats_b = compute_statistics(set_b, embedding, batch_size, progress, name="second")
    stats_b.check_enough("second")
    return stats_a.frechet_distance(stats_b)
