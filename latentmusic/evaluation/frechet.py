"""Fréchet distance between sets of audio in an embedding space (FAD: Kilgour et al., 2019).

Each set of clips is embedded (frame by frame, or one vector per clip), the embeddings are summarised
by their mean and covariance (:class:`EmbeddingStatistics`), and the two Gaussians are compared with the
Fréchet (2-Wasserstein) distance (:func:`frechet_distance`). Lower is better; 0 means identical statistics.

**The default embedding.** :class:`MusicFeatureEmbedding` is a fixed, deterministic set of classic
music-information-retrieval features computed with librosa, summarised over 1 s windows every 0.5 s:
log-mel band energies (timbre and loudness; mean and standard deviation in each of 40 bands), chroma
(pitch-class content: harmony and key), spectral contrast (peaks against valleys in 7 octave bands:
tonal against noisy) and onset strength (rhythmic activity), 120 dimensions in all. It was chosen because
it needs no download, no network and no extra package (librosa is a core dependency), runs quickly on a
CPU, never changes with a library's weights, and each dimension can be read. MFCCs are left out on
purpose: they are an orthonormal DCT of the log-mel frame, and the Fréchet distance does not change under
orthonormal transforms, so their means would only repeat the log-mel ones.

!!! warning "Not comparable with published FAD"
    Numbers from the default embedding are only comparable with other numbers from the same embedding
    (the ``embedding`` name, ``music-features-v1``, is recorded with every result and cache). Published
    FAD scores use VGGish (or CLAP, EnCodec, PANNs, MERT) embeddings; the default features are hand-made,
    not learned, and see less of what a trained network sees (e.g. fine instrument identity). To report
    numbers in the literature's terms, download a checkpoint once and use :class:`ClapEmbedding`
    (e.g. ``laion/clap-htsat-unfused``, ``laion/larger_clap_music``) or :class:`EncodecEmbedding`
    (``facebook/encodec_24khz``) from its local folder.

An *audio set* (:data:`AudioSetLike`) is a folder (searched recursively for ``.wav``, ``.flac`` and
``.ogg`` files), a list of audio file paths, or waveforms with their sample rate:
``(list_of_arrays, sample_rate)`` or ``(array_of_shape_(clips, samples), sample_rate)``. Audio at any
sample rate and channel count is mixed to mono and resampled to the embedding's rate. Reference
statistics can be computed once and cached (:meth:`EmbeddingStatistics.save`); a cached
:class:`EmbeddingStatistics` can stand in for a set.
"""

from __future__ import annotations

import abc
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.linalg
import torch
from tqdm.auto import tqdm

from ..audio import SUPPORTED_FORMATS, check_audio, load_audio, resample, to_channels

# A covariance needs at least two vectors; fewer than dimension + 1 give a singular one (still usable).
MIN_EMBEDDINGS = 2

AudioItem = Path | tuple[np.ndarray, int]
"""One clip of a resolved audio set: an audio file, or a ``(waveform, sample_rate)`` pair."""

AudioSetLike = str | os.PathLike | Sequence[Any] | tuple[Any, int]
"""A folder, a list of audio files, or ``(waveforms, sample_rate)``; see the module docstring."""


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


class AudioEmbedding(abc.ABC):
    """Interface of an embedding: maps a batch of mono clips to embedding vectors.

    Subclass it (or write any object with ``name``, ``sample_rate`` and this ``__call__``) to plug in
    another model. Implementations must be deterministic: the same audio gives the same vectors.

    Attributes:
        name: Identifies the embedding and its settings in results and caches (e.g. ``"clap:my-model"``).
        sample_rate: Rate in Hz the clips are given at.
    """

    name: str
    sample_rate: int

    @abc.abstractmethod
    def __call__(self, audios: Sequence[np.ndarray]) -> np.ndarray:
        """Embed a batch of clips.

        Args:
            audios: Mono float32 waveforms at :attr:`sample_rate`, shape ``(samples,)``, lengths may differ.

        Returns:
            The embedding vectors of all clips stacked, shape ``(vectors, dim)``: several per clip for
            frame-level embeddings, one per clip for clip-level ones.
        """


class MusicFeatureEmbedding(AudioEmbedding):
    """The offline default: librosa music features over 1 s windows (see the module docstring).

    Per STFT frame (2048-sample Hann window, hop 512, at 16 kHz): log-mel energies in dB relative to full
    scale, floored at -100 dB (absolute, not relative to the clip's peak, so loudness counts), chroma,
    spectral contrast and onset strength. Per window of ``window_seconds`` every ``hop_seconds``: mean and
    standard deviation of each, giving ``2 * (n_mels + 12 + 7 + 1)`` dimensions (120 by default). A
    tail longer than half a hop gets a last window ending at the clip's end; a clip shorter than a window
    gives one vector. Chroma assumes A4 = 440 Hz (no per-clip tuning estimate, so mistuning shows).

    Args:
        window_seconds: Length of the windows the statistics are taken over.
        hop_seconds: Step between windows.
        n_mels: Number of mel bands.
    """

    sample_rate = 16000
    n_fft = 2048
    hop_length = 512

    def __init__(self, window_seconds: float = 1.0, hop_seconds: float = 0.5, n_mels: int = 40) -> None:
        if not 0 < hop_seconds <= window_seconds or n_mels <= 0:
            raise ValueError(
                f"need 0 < hop_seconds <= window_seconds and n_mels > 0, got hop_seconds={hop_seconds}, "
                f"window_seconds={window_seconds}, n_mels={n_mels}"
            )
        self.window_frames = max(1, round(window_seconds * self.sample_rate / self.hop_length))
        self.hop_frames = max(1, round(hop_seconds * self.sample_rate / self.hop_length))
        self.n_mels = n_mels
        self.name = "music-features-v1"
        if (window_seconds, hop_seconds, n_mels) != (1.0, 0.5, 40):
            self.name += f"(window={window_seconds},hop={hop_seconds},mels={n_mels})"

    @property
    def dim(self) -> int:
        """Number of dimensions of a vector."""
        return 2 * (self.n_mels + 12 + 7 + 1)

    def __call__(self, audios: Sequence[np.ndarray]) -> np.ndarray:
        """Embed a batch of clips (see :meth:`AudioEmbedding.__call__`).

        Args:
            audios: Mono float32 waveforms at 16 kHz.

        Returns:
            Window vectors of all clips, shape ``(windows, dim)``.
        """
        return np.concatenate([self.embed_clip(audio) for audio in audios], axis=0)

    def frame_features(self, audio: np.ndarray) -> np.ndarray:
        """Features of each STFT frame.

        Args:
            audio: Mono float32 waveform at 16 kHz (zero-padded to one FFT window if shorter).

        Returns:
            Array of shape ``(n_mels + 20, frames)``: log-mel dB, chroma, contrast, onset strength.
        """
        import librosa

        audio = np.asarray(audio, dtype=np.float32)
        if audio.shape[-1] < self.n_fft:
            audio = np.pad(audio, (0, self.n_fft - audio.shape[-1]))
        # Scaled so that a full-scale sine peaks at 0 dB, and floored at -100 dB, below 16-bit noise: what lies
        # under the floor (resampling residue, dither, float vs PCM rounding) cannot change any feature.
        spectrum = np.abs(librosa.stft(audio, n_fft=self.n_fft, hop_length=self.hop_length)) / (self.n_fft / 4)
        spectrum = np.maximum(spectrum, 1e-5)
        power = spectrum**2
        mel = librosa.feature.melspectrogram(S=power, sr=self.sample_rate, n_mels=self.n_mels)
        log_mel = librosa.power_to_db(mel, ref=1.0, amin=1e-10, top_db=None)
        chroma = librosa.feature.chroma_stft(S=power, sr=self.sample_rate, tuning=0.0)
        contrast = librosa.feature.spectral_contrast(S=spectrum, sr=self.sample_rate, fmin=100.0)
        onset = librosa.onset.onset_strength(S=log_mel, sr=self.sample_rate)[np.newaxis]
        frames = min(x.shape[-1] for x in (log_mel, chroma, contrast, onset))
        return np.concatenate([x[:, :frames] for x in (log_mel, chroma, contrast, onset)], axis=0)

    def embed_clip(self, audio: np.ndarray) -> np.ndarray:
        """Window vectors of one clip, shape ``(windows, dim)``.

        Args:
            audio: Mono float32 waveform at 16 kHz.

        Returns:
            Mean and standard deviation of each frame feature over each window.
        """
        features = self.frame_features(audio)
        n_frames = features.shape[-1]
        window = min(self.window_frames, n_frames)
        starts = list(range(0, n_frames - window + 1, self.hop_frames))
        if n_frames - (starts[-1] + window) > self.hop_frames // 2:  # cover a tail longer than half a hop
            starts.append(n_frames - window)
        windows = [features[:, start : start + self.window_frames] for start in starts]
        return np.stack([np.concatenate([w.mean(axis=1), w.std(axis=1)]) for w in windows]).astype(np.float32)


def _from_pretrained(cls: Any, path: str | os.PathLike, what: str, repo: str) -> Any:
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(
            f"no {what} folder at {path.absolute()}; download one once (e.g. `hf download {repo} "
            f"--local-dir {path}`) and pass its folder"
        )
    return cls.from_pretrained(path)


def _pooled(output: Any) -> torch.Tensor:
    # transformers 4 returns the projected features; 5 returns an output whose pooler_output holds them.
    return output if isinstance(output, torch.Tensor) else output.pooler_output


class ClapEmbedding(AudioEmbedding):
    """LAION-CLAP audio embeddings from a local transformers checkpoint (one vector per window).

    Each clip is cut into windows of the feature extractor's maximum length (10 s for the LAION models),
    and each window gets one L2-normalised vector, so no random truncation happens and results are
    deterministic. A last partial window is kept when it is at least half a window long (or is the only
    one), and repeat-padded by the feature extractor.

    Args:
        path: Folder holding a ``ClapModel`` and its ``ClapProcessor`` (``save_pretrained`` output, e.g.
            a download of ``laion/clap-htsat-unfused`` or ``laion/larger_clap_music``).
        device: Torch device to run the model on.
        batch_size: Windows per forward pass.
    """

    def __init__(self, path: str | os.PathLike, device: str | torch.device = "cpu", batch_size: int = 8) -> None:
        from transformers import ClapModel, ClapProcessor

        self.model = _from_pretrained(ClapModel, path, "CLAP", "laion/clap-htsat-unfused").eval().to(device)
        self.processor = _from_pretrained(ClapProcessor, path, "CLAP processor", "laion/clap-htsat-unfused")
        self.device = torch.device(device)
        self.batch_size = batch_size
        extractor = self.processor.feature_extractor
        self.sample_rate = int(extractor.sampling_rate)
        self.window = int(extractor.nb_max_samples)
        self.name = f"clap:{Path(path).resolve().name}"

    def windows(self, audio: np.ndarray) -> list[np.ndarray]:
        """Cut a clip into the model's windows (see the class docstring).

        Args:
            audio: Mono waveform at :attr:`sample_rate`.

        Returns:
            The windows, each at most ``window`` samples.
        """
        pieces = [audio[start : start + self.window] for start in range(0, len(audio), self.window)]
        return [piece for i, piece in enumerate(pieces) if i == 0 or len(piece) * 2 >= self.window]

    def __call__(self, audios: Sequence[np.ndarray]) -> np.ndarray:
        """Embed a batch of clips, one vector per window (see :meth:`AudioEmbedding.__call__`).

        Args:
            audios: Mono float32 waveforms at :attr:`sample_rate`.

        Returns:
            L2-normalised window vectors, shape ``(windows, projection_dim)``.
        """
        return self.embed_windows([window for audio in audios for window in self.windows(audio)])

    def embed_windows(self, windows: Sequence[np.ndarray]) -> np.ndarray:
        """L2-normalised audio embeddings of clips no longer than a window, shape ``(len(windows), dim)``.

        Args:
            windows: Mono float32 waveforms at :attr:`sample_rate`, at most ``window`` samples each.

        Returns:
            One unit vector per window.
        """
        vectors = []
        for start in range(0, len(windows), self.batch_size):
            batch = [np.asarray(w, dtype=np.float32) for w in windows[start : start + self.batch_size]]
            inputs = self.processor.feature_extractor(batch, sampling_rate=self.sample_rate, return_tensors="pt")
            with torch.no_grad():
                output = self.model.get_audio_features(**inputs.to(self.device))
            vectors.append(torch.nn.functional.normalize(_pooled(output).float(), dim=-1).cpu().numpy())
        return np.concatenate(vectors, axis=0)

    def embed_clips(self, audios: Sequence[np.ndarray]) -> np.ndarray:
        """One L2-normalised vector per clip: the normalised mean of its window vectors.

        Args:
            audios: Mono float32 waveforms at :attr:`sample_rate`.

        Returns:
            Array of shape ``(len(audios), dim)``.
        """
        counts = [len(self.windows(audio)) for audio in audios]
        vectors = self(audios)
        means = np.stack([part.mean(axis=0) for part in np.split(vectors, np.cumsum(counts)[:-1])])
        return means / np.maximum(np.linalg.norm(means, axis=-1, keepdims=True), 1e-12)

    def embed_text(self, texts: Sequence[str]) -> np.ndarray:
        """L2-normalised text embeddings, shape ``(len(texts), dim)``.

        Args:
            texts: Captions or prompts.

        Returns:
            One unit vector per text.
        """
        tokens = self.processor.tokenizer(list(texts), padding=True, truncation=True, return_tensors="pt")
        with torch.no_grad():
            output = self.model.get_text_features(**tokens.to(self.device))
        return torch.nn.functional.normalize(_pooled(output).float(), dim=-1).cpu().numpy()


class EncodecEmbedding(AudioEmbedding):
    """EnCodec encoder output frames (before quantisation) from a local transformers checkpoint.

    Every encoder frame (75 per second for ``facebook/encodec_24khz``) is one vector of ``hidden_size``
    (128) dimensions, as in fadtk's EnCodec FAD. Models with ``normalize=True`` (the 48 kHz one) see
    each clip scaled to unit RMS first, as ``EncodecModel.encode`` does; mono clips are repeated to the
    model's channel count.

    Args:
        path: Folder holding an ``EncodecModel`` (``save_pretrained`` output, e.g. a download of
            ``facebook/encodec_24khz``).
        device: Torch device to run the model on.
    """

    def __init__(self, path: str | os.PathLike, device: str | torch.device = "cpu") -> None:
        from transformers import EncodecModel

        self.model = _from_pretrained(EncodecModel, path, "EnCodec", "facebook/encodec_24khz").eval().to(device)
        self.device = torch.device(device)
        self.sample_rate = int(self.model.config.sampling_rate)
        self.name = f"encodec:{Path(path).resolve().name}"

    def __call__(self, audios: Sequence[np.ndarray]) -> np.ndarray:
        """Embed a batch of clips, one vector per encoder frame (see :meth:`AudioEmbedding.__call__`).

        Args:
            audios: Mono float32 waveforms at :attr:`sample_rate`.

        Returns:
            Encoder frames of all clips, shape ``(frames, hidden_size)``.
        """
        config = self.model.config
        vectors = []
        for audio in audios:
            x = torch.as_tensor(np.asarray(audio, dtype=np.float32), device=self.device).view(1, 1, -1)
            x = x.repeat(1, config.audio_channels, 1)
            if config.normalize:
                x = x / (x.mean(dim=1, keepdim=True).pow(2).mean(dim=-1, keepdim=True).sqrt() + 1e-8)
            with torch.no_grad():
                frames = self.model.encoder(x)
            vectors.append(frames[0].T.float().cpu().numpy())
        return np.concatenate(vectors, axis=0)


def make_embedding(spec: str | AudioEmbedding | None = None, device: str = "cpu") -> AudioEmbedding:
    """Build an embedding from a short description, as the ``--embedding`` option takes it.

    Args:
        spec: ``"default"`` (or ``None``) for :class:`MusicFeatureEmbedding`, ``"clap:PATH"`` for
            :class:`ClapEmbedding`, ``"encodec:PATH"`` for :class:`EncodecEmbedding`; an embedding object
            is returned as is.
        device: Torch device for the model-based embeddings.

    Returns:
        The embedding.

    Raises:
        ValueError: If the description is not one of these.
    """
    if spec is None or spec == "default":
        return MusicFeatureEmbedding()
    if not isinstance(spec, str):
        return spec
    kind, _, path = spec.partition(":")
    if kind == "clap" and path:
        return ClapEmbedding(path, device=device)
    if kind == "encodec" and path:
        return EncodecEmbedding(path, device=device)
    raise ValueError(f"unknown embedding {spec!r}; use 'default', 'clap:PATH' or 'encodec:PATH' (a local folder)")


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
