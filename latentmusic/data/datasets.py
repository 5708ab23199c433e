"""Training datasets: captioned audio clips from an audio folder, and crops of a latent cache.

An audio folder (the rendered corpus, or your own) holds audio files and a ``metadata.jsonl`` at its
root, one JSON object per line::

    {"path": "train/song.flac", "split": "train", "captions": ["a calm piano piece", "solo piano"]}

``path`` is relative to the folder; ``captions`` may instead be a single ``"caption"`` (or ``"text"``)
string; ``split`` is optional; any other keys are kept and returned as the item's ``metadata``. A
``metadata.csv`` with the same columns, or no index at all (a ``.txt`` caption beside each audio file), work
too; see :mod:`latentmusic.data.index`. A latent cache (:mod:`latentmusic.data.latent_cache`) mirrors that layout.

Random crops and caption choices draw from a ``torch.Generator`` seeded from ``(seed, epoch, index)``,
so an item depends on neither the number of workers nor which worker loads it: runs are reproducible
and a resumed run sees exactly the data it would have seen.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from torch.utils.data import Dataset

from ..audio import check_audio, crop_or_pad, resample, to_channels
from .index import EXAMPLE_LINE, Record, index_file, read_audio_index, read_jsonl_index
from .latent_cache import LATENT_CONFIG_FILE, LATENTS_FILE, read_latent_config

CAPTION_CHOICES = ("random", "first")

# Minimum margin (in output-rate periods) read beyond each edge of a crop before resampling: torchaudio's
# default sinc filter reaches about 6 of them, so the crop's edges see real neighbours, not zero padding.
_RESAMPLE_MARGIN = 16


def collate(batch: Sequence[Record]) -> dict[str, Any]:
    """Collate dataset items into a batch (pass as ``DataLoader(..., collate_fn=collate)``).

    Tensors are stacked along a new first axis, zero-padded at the end of their last axis to the
    longest in the batch (so ``padding_mask`` is ``False`` over the padding); numbers become a tensor;
    anything else (captions, metadata) is kept as a list.

    Args:
        batch: Items of one dataset, all with the same keys.

    Returns:
        A dict with the items' keys.
    """
    if not batch:
        raise ValueError("cannot collate an empty batch")
    collated = {}
    for key, first in batch[0].items():
        values = [item[key] for item in batch]
        if isinstance(first, torch.Tensor):
            length = max(value.shape[-1] for value in values)
            collated[key] = torch.stack([F.pad(value, (0, length - value.shape[-1])) for value in values])
        elif isinstance(first, (int, float)) and not isinstance(first, bool):
            collated[key] = torch.tensor(values)
        else:
            collated[key] = values
    return collated


class CaptionedDataset(Dataset):
    """Base of the datasets below: captioned records, epochs, per-item random generators, caption dropout.

    Subclass a dataset and override :meth:`drop_caption` to change how captions are dropped.

    Args:
        root: The folder record paths are relative to.
        records: ``(where, record)`` pairs, ``where`` naming the record's file and line in error messages.
        random_crop: Crop at a random position; ``False`` crops from the start.
        caption_dropout: Probability of replacing the caption by ``""``.
        caption_choice: ``"random"`` picks one of a record's captions per item and epoch, ``"first"``
            always the first.
        seed: Seeds the crops, caption choices and dropout (with the epoch and index).
    """

    def __init__(
        self,
        root: Path,
        records: list[tuple[str, Record]],
        random_crop: bool,
        caption_dropout: float,
        caption_choice: str,
        seed: int,
    ) -> None:
        if not 0.0 <= caption_dropout <= 1.0:
            raise ValueError(f"caption_dropout must be a probability in [0, 1], got {caption_dropout}")
        if caption_choice not in CAPTION_CHOICES:
            raise ValueError(f"caption_choice must be one of {CAPTION_CHOICES}, got {caption_choice!r}")
        if seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed}")
        self.root = root
        self._records = records
        if not self._records:
            raise ValueError(f"{root} lists no items; add one JSON object per line, e.g. {EXAMPLE_LINE}")
        self.random_crop = random_crop
        self.caption_dropout = caption_dropout
        self.caption_choice = caption_choice
        self.seed = seed
        # In shared memory so that set_epoch reaches DataLoader workers, persistent ones included.
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()

    def __len__(self) -> int:
        return len(self._records)

    @property
    def records(self) -> list[Record]:
        """The metadata records of the items, in index order."""
        return [record for _, record in self._records]

    @property
    def epoch(self) -> int:
        """The epoch set by :meth:`set_epoch` (0 initially)."""
        return int(self._epoch)

    def set_epoch(self, epoch: int) -> None:
        """Select the random crops and captions of an epoch; call before iterating the epoch's DataLoader.

        Args:
            epoch: Non-negative epoch number.
        """
        if epoch < 0:
            raise ValueError(f"epoch must be non-negative, got {epoch}")
        self._epoch.fill_(epoch)

    def drop_caption(self, caption: str, rng: torch.Generator) -> str:
        """Replace the caption by ``""`` with probability ``caption_dropout``.

        This trains the unconditional branch that classifier-free guidance needs; override it to drop
        captions differently (e.g. to a generic prompt).

        Args:
            caption: The chosen caption.
            rng: The item's random generator.

        Returns:
            ``""`` or ``caption``.
        """
        if self.caption_dropout > 0 and torch.rand((), generator=rng).item() < self.caption_dropout:
            return ""
        return caption

    def _generator(self, index: int) -> torch.Generator:
        # SeedSequence mixes the three numbers, so neighbouring seeds/epochs/indices give unrelated streams.
        state = np.random.SeedSequence([self.seed, self.epoch, index]).generate_state(1, np.uint64)[0]
        return torch.Generator().manual_seed(int(state))

    def _crop_start(self, max_start: int, rng: torch.Generator) -> int:
        if not self.random_crop or max_start <= 0:
            return 0
        return int(torch.randint(0, max_start + 1, (), generator=rng))

    def _caption(self, record: Record, rng: torch.Generator) -> str:
        captions = record["captions"]
        if self.caption_choice == "random":
            caption = captions[int(torch.randint(0, len(captions), (), generator=rng))]
        else:
            caption = captions[0]
        return self.drop_caption(caption, rng)

    def _where(self, index: int) -> str:
        return self._records[index][0]


class AudioCaptionDataset(CaptionedDataset):
    """Captioned audio clips from a folder with a ``metadata.jsonl`` (see the module docstring).

    Only the frames of a crop are decoded (plus a short margin when resampling). Items are dicts:

    - ``audio``: float32 ``(channels, segment_samples)``, zero-padded when the file is shorter;
    - ``padding_mask``: bool ``(segment_samples,)``, ``True`` where ``audio`` is real audio;
    - ``caption``: one of the record's captions, ``""`` when dropped (see :meth:`drop_caption`);
    - ``crop_start_seconds``, ``source_seconds``: where the crop starts in its file and the file's duration, in
      seconds (not the U-Net's timing conditioning, which describes the window denoised: see
      :func:`latentmusic.models.conditioning.timing_conditioning`);
    - ``metadata``: the record (JSON-serialisable).

    Batch items with :func:`collate`.

    Example:
        ```python
        from torch.utils.data import DataLoader
        from latentmusic.data import AudioCaptionDataset, collate

        dataset = AudioCaptionDataset("corpus", sample_rate=24000, segment_seconds=10.0, split="train",
                                      caption_dropout=0.1)
        loader = DataLoader(dataset, batch_size=8, shuffle=True, collate_fn=collate, num_workers=2)
        for epoch in range(10):
            dataset.set_epoch(epoch)
            for batch in loader:
                ...  # batch["audio"]: (8, 1, 240000); batch["caption"]: list of 8 strings
        ```

    Args:
        root: The folder holding ``metadata.jsonl``, or that file.
        sample_rate: Sample rate of the returned audio; files at other rates are resampled.
        segment_seconds: Length of the crops; ``None`` returns whole files (of varying lengths, which
            :func:`collate` pads).
        channels: Channels of the returned audio (mono files are repeated, multichannel ones averaged
            to mono).
        split: Use only the records of this split; ``None`` uses all.
        random_crop: Crop at a random position; ``False`` crops from the start of the file.
        caption_dropout: Probability of replacing the caption by ``""``.
        caption_choice: ``"random"`` picks one of the record's captions per item and epoch, ``"first"``
            always the first.
        seed: Seeds the crops, caption choices and dropout (with the epoch and index).
        transform: Applied to each crop's audio ``(channels, segment_samples)`` (e.g. a random gain); it
            should keep the shape, which ``padding_mask`` describes.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        sample_rate: int,
        segment_seconds: float | None = None,
        channels: int = 1,
        split: str | None = None,
        random_crop: bool = True,
        caption_dropout: float = 0.0,
        caption_choice: str = "random",
        seed: int = 0,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        if sample_rate <= 0:
            raise ValueError(f"sample_rate must be a positive number of Hz (e.g. 24000), got {sample_rate}")
        if channels <= 0:
            raise ValueError(f"channels must be positive, got {channels}")
        self.segment_samples = None
        if segment_seconds is not None:
            self.segment_samples = round(segment_seconds * sample_rate)
            if self.segment_samples <= 0:
                raise ValueError(
                    f"segment_seconds={segment_seconds} is less than one sample at {sample_rate} Hz; "
                    "pass a positive length, or None for whole files"
                )
        folder, records = read_audio_index(root, split)
        super().__init__(folder, records, random_crop, caption_dropout, caption_choice, seed)
        self.sample_rate = sample_rate
        self.segment_seconds = segment_seconds
        self.channels = channels
        self.transform = transform
        self._info_cache: dict[int, tuple[int, int]] = {}

    def __getitem__(self, index: int) -> Record:
        index = range(len(self))[index]
        record = self._records[index][1]
        rng = self._generator(index)
        audio, padding_mask, crop_start_seconds, source_seconds = self._read_crop(index, rng)
        if self.transform is not None:
            audio = self.transform(audio)
        return {
            "audio": audio,
            "caption": self._caption(record, rng),
            "crop_start_seconds": crop_start_seconds,
            "source_seconds": source_seconds,
            "padding_mask": padding_mask,
            "metadata": dict(record),
        }

    def _audio_path(self, index: int) -> Path:
        return self.root / self._records[index][1]["path"]

    def _file_info(self, index: int) -> tuple[int, int]:
        """The file's number of frames and sample rate, read once per worker."""
        if index not in self._info_cache:
            path = self._audio_path(index)
            try:
                info = sf.info(str(path))
            except sf.LibsndfileError as error:
                raise ValueError(
                    f"{self._where(index)}: could not read {path} ({error}); re-export it as WAV or FLAC "
                    "or remove the line"
                ) from error
            self._info_cache[index] = (info.frames, info.samplerate)
        return self._info_cache[index]

    def _read_crop(self, index: int, rng: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, float, float]:
        file_frames, file_rate = self._file_info(index)
        # Crops start on multiples of file_step file frames, which are exactly out_step output samples.
        gcd = math.gcd(file_rate, self.sample_rate)
        file_step, out_step = file_rate // gcd, self.sample_rate // gcd
        length = self.segment_samples or math.ceil(file_frames * out_step / file_step)
        max_start = (file_frames * out_step - length * file_step) // (file_step * out_step)
        start = self._crop_start(max_start, rng) * file_step
        margin = 0
        if file_rate != self.sample_rate:
            margin = file_step * math.ceil(_RESAMPLE_MARGIN * max(1.0, file_rate / self.sample_rate) / file_step)
        before = min(margin, start)
        frames = before + math.ceil(length * file_step / out_step) + margin
        path = self._audio_path(index)
        try:
            data, _ = sf.read(str(path), start=start - before, frames=frames, dtype="float32", always_2d=True)
        except sf.LibsndfileError as error:
            raise ValueError(f"{self._where(index)}: could not decode {path} ({error})") from error
        audio = check_audio(torch.from_numpy(data).T.contiguous(), name=f"audio in {path}")
        audio = resample(to_channels(audio, self.channels), file_rate, self.sample_rate)
        offset = before // file_step * out_step
        real = min(length, audio.shape[-1] - offset)
        audio = crop_or_pad(audio, length, offset)
        return audio, torch.arange(length) < real, start / file_rate, file_frames / file_rate


class LatentDataset(CaptionedDataset):
    """Crops of pre-encoded tensors from a cache written by :func:`write_latent_cache`.

    Items are dicts like those of :class:`AudioCaptionDataset`, with each of the cache's named tensors
    (``latents`` as float32, integer ``codes`` as int64, ...; ``(channels, segment_frames)``, zero-padded) in place
    of ``audio`` and ``padding_mask`` over frames. ``source_seconds`` is the clip's number of frames over
    ``latent_rate``. The latents are returned as stored; multiply them by :attr:`scaling_factor` before diffusion,
    as diffusers' training scripts do. Only the cropped frames are read from disk.

    Args:
        root: The cache folder.
        segment_frames: Length of the crops in latent frames; ``None`` returns whole clips.
        split: Use only the entries of this split; ``None`` uses all.
        random_crop: Crop at a random position; ``False`` crops from the first frame.
        caption_dropout: Probability of replacing the caption by ``""``.
        caption_choice: ``"random"`` or ``"first"``, as for :class:`AudioCaptionDataset`.
        seed: Seeds the crops, caption choices and dropout (with the epoch and index).
        channels: If given, the tensors the model expects by name and channels (e.g. ``{"latents": 32}``); a
            cache without one of them, or with another width, raises.
        beat_aligned: Random crops start a whole number of quarter notes (the record's ``bpm``) after the clip's
            start, which the rendered corpus puts on the music's first note, so every crop begins on a beat. Then
            the mean of many clips of one tempo keeps their beat grid: a denoiser gains from the caption's tempo at
            high noise, where the music itself is not yet audible. (From any position, the crops' beats fall
            anywhere and average out.) Needs ``bpm`` in every record.

    Attributes:
        latent_rate: Latent frames per second of audio.
        scaling_factor: The autoencoder's latent scaling factor.
        channels: The stored tensors' names and channels.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        segment_frames: int | None = None,
        split: str | None = None,
        random_crop: bool = True,
        caption_dropout: float = 0.0,
        caption_choice: str = "random",
        seed: int = 0,
        channels: dict[str, int] | None = None,
        beat_aligned: bool = False,
    ) -> None:
        if segment_frames is not None and segment_frames <= 0:
            raise ValueError(f"segment_frames must be positive (or None for whole clips), got {segment_frames}")
        root = Path(root)
        config = read_latent_config(root)
        records = read_jsonl_index(index_file(root, LATENTS_FILE), split)
        super().__init__(root, records, random_crop, caption_dropout, caption_choice, seed)
        self.segment_frames = segment_frames
        self.beat_aligned = beat_aligned
        self.latent_rate = float(config["latent_rate"])
        self.scaling_factor = float(config["scaling_factor"])
        self.channels = dict(config["channels"] or {})
        for name, width in (channels or {}).items():
            if self.channels.get(name) != width:
                raise ValueError(
                    f"the latent cache {root} holds {self.channels} but {name!r} with {width} channels was asked "
                    "for; encode the cache with the autoencoder (and settings) the model is trained with"
                )
        for index, (_, record) in enumerate(self._records):
            if record.get("channels") != self.channels:
                raise ValueError(
                    f"{self._where(index)}: holds {record.get('channels')}, but {LATENT_CONFIG_FILE} says "
                    f"{self.channels}; all entries of a cache must come from one autoencoder: re-encode this clip "
                    "or remove the line"
                )
        if beat_aligned:
            self.require_bpm("beat-aligned crops", "data.beat_aligned_crops=false")

    def require_bpm(self, what: str, without: str) -> None:
        """Refuse records without a positive ``bpm`` (quarter notes per minute), naming the first.

        Args:
            what: What needs the tempos, for the message (e.g. "beat-aligned crops").
            without: The setting that does without them, for the message.
        """
        for index, (_, record) in enumerate(self._records):
            if not (isinstance(record.get("bpm"), (int, float)) and record["bpm"] > 0):
                raise ValueError(
                    f"{self._where(index)}: {what} need each record's tempo as a positive 'bpm' (quarter notes per "
                    f"minute), got {record.get('bpm')!r}; add it to the metadata line, or train with {without}"
                )

    def __getitem__(self, index: int) -> Record:
        index = range(len(self))[index]
        record = self._records[index][1]
        rng = self._generator(index)
        tensors, padding_mask, start, frames = self._read_crop(index, rng)
        return {
            **tensors,
            "caption": self._caption(record, rng),
            "crop_start_seconds": start / self.latent_rate,
            "source_seconds": frames / self.latent_rate,
            "padding_mask": padding_mask,
            "metadata": dict(record),
        }

    def _read_crop(self, index: int, rng: torch.Generator) -> tuple[dict[str, torch.Tensor], torch.Tensor, int, int]:
        path = self.root / self._records[index][1]["path"]
        try:
            with safe_open(str(path), framework="pt") as file:
                shapes = {name: tuple(file.get_slice(name).get_shape()) for name in file.keys()}
                if {name: shape[0] for name, shape in shapes.items()} != self.channels:
                    raise ValueError(
                        f"{self._where(index)}: {path} holds {shapes}, not {self.channels}; the file changed after "
                        "indexing: re-run write_latent_cache"
                    )
                frames = next(iter(shapes.values()))[1]
                length = self.segment_frames or frames
                start = self._beat_start(index, frames - length, rng) if self.beat_aligned else None
                start = self._crop_start(frames - length, rng) if start is None else start
                tensors = {}
                for name in shapes:
                    crop = file.get_slice(name)[:, start : start + length]
                    tensors[name] = crop.float() if crop.is_floating_point() else crop.long()
        except SafetensorError as error:
            raise ValueError(
                f"{self._where(index)}: could not read {path} ({error}); delete it and re-run write_latent_cache"
            ) from error
        real = next(iter(tensors.values())).shape[-1]
        padded = {name: F.pad(tensor, (0, length - real)) for name, tensor in tensors.items()}
        return padded, torch.arange(length) < real, start, frames

    def _beat_start(self, index: int, max_start: int, rng: torch.Generator) -> int:
        """A random crop start on a beat: the nearest frame to a whole number of quarter notes."""
        beat = self.latent_rate * 60.0 / self._records[index][1]["bpm"]  # frames per quarter note
        beats = max(0, int(max_start // beat)) if self.random_crop else 0
        return round(int(torch.randint(0, beats + 1, (), generator=rng)) * beat)
