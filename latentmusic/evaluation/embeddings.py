"""Audio embeddings for the Fréchet audio distance: what a set of clips is summarised in.

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
"""

from __future__ import annotations

import abc
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch


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
