"""Training datasets: captioned audio clips, and latents pre-encoded from them.

An audio folder (the rendered corpus, or your own) holds audio files and a ``metadata.jsonl`` at its
root, one JSON object per line::

    {"path": "train/song.flac", "split": "train", "captions": ["a calm piano piece", "solo piano"]}

``path`` is relative to the folder; ``captions`` may instead be a single ``"caption"`` (or ``"text"``)
string; ``split`` is optional; any other keys are kept and returned as the item's ``metadata``. A
``metadata.csv`` with the same columns, or no index at all (a ``.txt`` caption beside each audio file), work
too; see :mod:`latentmusic.data.index`.

A latent cache, written by :func:`write_latent_cache`, mirrors that layout: one ``.safetensors`` file
per clip holding ``latents`` of shape ``(channels, frames)`` (and its metadata line, so the cache can
always be re-indexed from its files), a ``latents.jsonl`` index in the same format as
``metadata.jsonl``, and ``latent_cache.json`` with ``latent_rate`` (frames per second),
``scaling_factor`` and ``latent_channels``.

Random crops and caption choices draw from a ``torch.Generator`` seeded from ``(seed, epoch, index)``,
so an item depends on neither the number of workers nor which worker loads it: runs are reproducible
and a resumed run sees exactly the data it would have seen.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch.utils.data import Dataset

from ..audio import check_audio, crop_or_pad, resample, to_channels
from .index import (
    EXAMPLE_LINE,
    METADATA_FILE,  # noqa: F401 - re-exported: the index's name
    index_file,
    parse_line,
    read_audio_index,
    read_jsonl_index,
)

LATENTS_FILE = "latents.jsonl"
LATENT_CONFIG_FILE = "latent_cache.json"
CAPTION_CHOICES = ("random", "first")

# Minimum margin (in output-rate periods) read beyond each edge of a crop before resampling: torchaudio's
# default sinc filter reaches about 6 of them, so the crop's edges see real neighbours, not zero padding.
_RESAMPLE_MARGIN = 16

Record = dict[str, Any]
Latents = torch.Tensor | Callable[[], torch.Tensor]


def read_metadata(root_or_file: str | os.PathLike, split: str | None = None) -> list[Record]:
    """Read and validate the index of an audio folder: ``metadata.jsonl``, ``metadata.csv``, or ``.txt`` captions
    beside the audio files (see :mod:`latentmusic.data.index`).

    Blank lines are skipped. Each record is the line's JSON object with ``captions`` set to its list of
    captions (a ``caption`` or ``text`` string becomes a one-item list). Without any ``split``, one file in 20
    (at least one) is marked ``"valid"`` and the rest ``"train"``.

    Args:
        root_or_file: The audio folder, or its index file itself; ``path`` values
            are relative to the folder the file is in.
        split: Keep only the records whose ``split`` equals this (e.g. ``"train"``); ``None`` keeps all.

    Returns:
        The records, in file order.

    Raises:
        FileNotFoundError: If the folder, or a file a selected record names, does not exist.
        ValueError: If a line is not a JSON object with a ``path`` and captions (the message names the
            file and line), an audio file has no caption, the folder has no audio, or no record has the
            requested split.
    """
    return [record for _, record in read_audio_index(root_or_file, split)[1]]


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
    - ``seconds_start``, ``seconds_total``: the crop's start and the file's duration in seconds, the
      timing conditioning of Stable Audio;
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
        audio, padding_mask, seconds_start, seconds_total = self._read_crop(index, rng)
        if self.transform is not None:
            audio = self.transform(audio)
        return {
            "audio": audio,
            "caption": self._caption(record, rng),
            "seconds_start": seconds_start,
            "seconds_total": seconds_total,
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
    """Crops of pre-encoded latents from a cache written by :func:`write_latent_cache`.

    Items are dicts like those of :class:`AudioCaptionDataset`, with ``latents`` (float32
    ``(channels, segment_frames)``, zero-padded) in place of ``audio`` and ``padding_mask`` over frames.
    ``seconds_total`` is the clip's number of latent frames over ``latent_rate``. The latents are
    returned as stored; multiply them by :attr:`scaling_factor` before diffusion, as diffusers' training
    scripts do. Only the cropped frames are read from disk.

    Args:
        root: The cache folder.
        segment_frames: Length of the crops in latent frames; ``None`` returns whole clips.
        split: Use only the entries of this split; ``None`` uses all.
        random_crop: Crop at a random position; ``False`` crops from the first frame.
        caption_dropout: Probability of replacing the caption by ``""``.
        caption_choice: ``"random"`` or ``"first"``, as for :class:`AudioCaptionDataset`.
        seed: Seeds the crops, caption choices and dropout (with the epoch and index).
        channels: If given, the number of latent channels the model expects; a cache with another
            number raises.

    Attributes:
        latent_rate: Latent frames per second of audio.
        scaling_factor: The autoencoder's latent scaling factor.
        latent_channels: Channels of the stored latents.
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
        channels: int | None = None,
    ) -> None:
        if segment_frames is not None and segment_frames <= 0:
            raise ValueError(f"segment_frames must be positive (or None for whole clips), got {segment_frames}")
        root = Path(root)
        config = _read_latent_config(root)
        records = read_jsonl_index(index_file(root, LATENTS_FILE), split)
        super().__init__(root, records, random_crop, caption_dropout, caption_choice, seed)
        self.segment_frames = segment_frames
        self.latent_rate = float(config["latent_rate"])
        self.scaling_factor = float(config["scaling_factor"])
        self.latent_channels = config["latent_channels"]
        if channels is not None and channels != self.latent_channels:
            raise ValueError(
                f"the latent cache {root} holds {self.latent_channels}-channel latents but channels={channels} "
                "was asked for; encode the cache with the autoencoder the model is trained with"
            )
        for index, (_, record) in enumerate(self._records):
            if record.get("latent_channels") != self.latent_channels:
                raise ValueError(
                    f"{self._where(index)}: latents have {record.get('latent_channels')} channels, but "
                    f"{LATENT_CONFIG_FILE} says {self.latent_channels}; all entries of a cache must come from "
                    "one autoencoder: re-encode this clip or remove the line"
                )

    def __getitem__(self, index: int) -> Record:
        index = range(len(self))[index]
        record = self._records[index][1]
        rng = self._generator(index)
        latents, padding_mask, start, frames = self._read_crop(index, rng)
        return {
            "latents": latents,
            "caption": self._caption(record, rng),
            "seconds_start": start / self.latent_rate,
            "seconds_total": frames / self.latent_rate,
            "padding_mask": padding_mask,
            "metadata": dict(record),
        }

    def _read_crop(self, index: int, rng: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, int, int]:
        path = self.root / self._records[index][1]["path"]
        try:
            with safe_open(str(path), framework="pt") as file:
                stored = file.get_slice("latents")
                channels, frames = stored.get_shape()
                if channels != self.latent_channels:
                    raise ValueError(
                        f"{self._where(index)}: {path} holds {channels}-channel latents, not "
                        f"{self.latent_channels}; the file changed after indexing: re-run write_latent_cache"
                    )
                length = self.segment_frames or frames
                start = self._crop_start(frames - length, rng)
                latents = stored[:, start : start + length].float()
        except SafetensorError as error:
            raise ValueError(
                f"{self._where(index)}: could not read {path} ({error}); delete it and re-run write_latent_cache"
            ) from error
        real = latents.shape[-1]
        return F.pad(latents, (0, length - real)), torch.arange(length) < real, start, frames


def write_latent_cache(
    out_dir: str | os.PathLike,
    records: Iterable[tuple[Record, Latents]],
    latent_rate: float,
    scaling_factor: float = 1.0,
) -> int:
    """Store encoded latents for :class:`LatentDataset`; resumable and safe to interrupt.

    Each latent file is written to a temporary name and renamed when complete, and entries whose file
    already exists are skipped, so re-running after an interruption finishes the job. To skip the
    encoding too, give the latents as a function that computes them: it is only called for missing
    entries. The ``latents.jsonl`` index is rebuilt from the files at the end, also when the loop fails;
    when several processes write disjoint records to one cache, call this again once they have all
    finished (with no records) to index everything.

    Args:
        out_dir: The cache folder (created if needed).
        records: Pairs of a metadata record (with ``path`` and captions, as in ``metadata.jsonl``; it
            names the file) and latents of shape ``(channels, frames)`` (float32/16) or a function
            returning them.
        latent_rate: Latent frames per second of audio.
        scaling_factor: The autoencoder's latent scaling factor, stored for the training recipe.

    Returns:
        The number of latent files written (entries skipped as already present are not counted).

    Raises:
        ValueError: If a record has no ``path`` or captions or is not JSON-serialisable, latents are not a
            finite ``(channels, frames)`` float tensor or have another channel count than the cache, or
            ``latent_rate``/``scaling_factor`` differ from those the cache was started with.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config = _start_latent_config(out_dir, float(latent_rate), float(scaling_factor))
    written = 0
    try:
        for metadata, latents in records:
            entry = _latent_entry(metadata)
            file = out_dir / _latent_file_name(entry["source_path"])
            if file.exists():
                continue
            tensor = _check_latents(latents() if callable(latents) else latents, entry["source_path"])
            if config["latent_channels"] is None:
                config["latent_channels"] = tensor.shape[0]
                _write_text_atomic(out_dir / LATENT_CONFIG_FILE, json.dumps(config, indent=2))
            elif tensor.shape[0] != config["latent_channels"]:
                raise ValueError(
                    f"latents for {entry['source_path']} have {tensor.shape[0]} channels but the cache {out_dir} "
                    f"holds {config['latent_channels']}-channel latents; use one autoencoder per cache"
                )
            file.parent.mkdir(parents=True, exist_ok=True)
            partial = file.with_name(file.name + ".tmp")
            save_file({"latents": tensor}, str(partial), metadata={"entry": json.dumps(entry)})
            os.replace(partial, file)
            written += 1
    finally:
        _write_latent_index(out_dir)
    return written


def _latent_entry(metadata: Record) -> Record:
    """The index line stored in a latent file: the metadata, with its ``path`` kept as ``source_path``."""
    if not isinstance(metadata, dict):
        raise ValueError(f"a latent record's metadata must be a dict, got {type(metadata).__name__}")
    where = f"latent cache record {metadata.get('path')!r}"
    source = parse_line(json.dumps(metadata, default=_not_serialisable(where)), where)
    entry = {key: value for key, value in source.items() if key != "path"}
    entry["source_path"] = source["path"]
    return entry


def _not_serialisable(where: str) -> Callable[[Any], Any]:
    def fail(value: Any) -> Any:
        raise ValueError(
            f"{where}: metadata must be JSON-serialisable, got a {type(value).__name__}; "
            "convert tensors and arrays with .tolist() or float()"
        )

    return fail


def _latent_file_name(source_path: str) -> str:
    path = Path(source_path)
    if path.is_absolute() or ".." in path.parts:
        # Keep the file inside the cache whatever the source layout; the hash keeps names unique.
        digest = hashlib.sha1(source_path.encode()).hexdigest()[:16]
        return f"external/{digest}-{path.name}.safetensors"
    # The full source name (suffix included) keeps song.wav and song.flac apart.
    return f"{source_path}.safetensors"


def _check_latents(latents: torch.Tensor, source: str) -> torch.Tensor:
    latents = torch.as_tensor(latents).detach()
    if latents.ndim != 2 or latents.numel() == 0 or not latents.is_floating_point():
        raise ValueError(
            f"latents for {source} must be a non-empty float tensor of shape (channels, frames), got "
            f"{latents.dtype} of shape {tuple(latents.shape)}; drop the batch axis (latents[0])"
        )
    if not torch.isfinite(latents).all():
        raise ValueError(f"latents for {source} contain NaN or Inf; check the autoencoder (e.g. fp16 overflow)")
    return latents.cpu().contiguous()


def _start_latent_config(out_dir: Path, latent_rate: float, scaling_factor: float) -> Record:
    if latent_rate <= 0 or not math.isfinite(latent_rate):
        raise ValueError(f"latent_rate must be a positive number of frames per second, got {latent_rate}")
    if not math.isfinite(scaling_factor):
        raise ValueError(f"scaling_factor must be finite, got {scaling_factor}")
    config_file = out_dir / LATENT_CONFIG_FILE
    if not config_file.exists():
        config = {"latent_rate": latent_rate, "scaling_factor": scaling_factor, "latent_channels": None}
        _write_text_atomic(config_file, json.dumps(config, indent=2))
        return config
    config = _read_latent_config(out_dir)
    if (config["latent_rate"], config["scaling_factor"]) != (latent_rate, scaling_factor):
        raise ValueError(
            f"the latent cache {out_dir} was written with latent_rate={config['latent_rate']} and "
            f"scaling_factor={config['scaling_factor']}, not {latent_rate} and {scaling_factor}; "
            "write to a new folder or delete this one"
        )
    return config


def _read_latent_config(root: Path) -> Record:
    config_file = root / LATENT_CONFIG_FILE
    if not config_file.is_file():
        raise FileNotFoundError(
            f"{root} is not a latent cache ({LATENT_CONFIG_FILE} missing); write one with write_latent_cache"
        )
    try:
        config = json.loads(config_file.read_text())
        return {key: config[key] for key in ("latent_rate", "scaling_factor", "latent_channels")}
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(
            f"{config_file} is corrupt ({type(error).__name__}: {error}); delete the cache and write it again"
        ) from None


def _write_latent_index(out_dir: Path) -> None:
    lines = []
    for file in sorted(out_dir.rglob("*.safetensors")):
        try:
            with safe_open(str(file), framework="pt") as stored:
                entry = json.loads((stored.metadata() or {})["entry"])
                channels, frames = stored.get_slice("latents").get_shape()
        except (SafetensorError, KeyError, ValueError) as error:
            raise ValueError(
                f"{file} in the latent cache was not written by write_latent_cache or is corrupt "
                f"({type(error).__name__}: {error}); delete it and run write_latent_cache again"
            ) from error
        path = file.relative_to(out_dir).as_posix()
        lines.append(json.dumps({**entry, "path": path, "latent_channels": channels, "latent_frames": frames}))
    _write_text_atomic(out_dir / LATENTS_FILE, "".join(line + "\n" for line in lines))


def _write_text_atomic(path: Path, text: str) -> None:
    partial = path.with_name(path.name + ".tmp")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)


def encode_folder(
    root: str | os.PathLike,
    cache: str | os.PathLike,
    encode: Callable[[torch.Tensor], torch.Tensor],
    sample_rate: int,
    channels: int,
    latent_rate: float,
    scaling_factor: float = 1.0,
    progress: bool = True,
    desc: str = "encoding",
) -> Path:
    """Encode every clip of an audio folder into a :func:`write_latent_cache` cache.

    Clips already in the cache are skipped without being read, so an interrupted encoding resumes and a second
    run reuses the cache.

    Args:
        root: Folder with ``metadata.jsonl`` and the audio it names.
        cache: The cache folder (created if needed).
        encode: Maps a clip ``(channels, samples)`` at ``sample_rate`` to ``(cache channels, frames)``.
        sample_rate: Rate the clips are loaded at.
        channels: Channels the clips are loaded with.
        latent_rate: Frames per second of the encodings.
        scaling_factor: Stored with the cache for the training recipe.
        progress: Show a progress bar.
        desc: The progress bar's label.

    Returns:
        The cache folder.
    """
    from tqdm.auto import tqdm

    from ..audio import load_audio

    records = read_metadata(root)

    def lazily(path: Path) -> Callable[[], torch.Tensor]:
        return lambda: encode(load_audio(path, sample_rate=sample_rate, channels=channels)[0])

    items = ((record, lazily(Path(root) / record["path"])) for record in records)
    items = tqdm(items, total=len(records), desc=desc, disable=not progress)
    write_latent_cache(cache, items, latent_rate=latent_rate, scaling_factor=scaling_factor)
    return Path(cache)
