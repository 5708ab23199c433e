"""The latent cache: an audio folder encoded once by a frozen autoencoder, for training on its encodings.

A cache, written by :func:`write_latent_cache` (or :func:`encode_folder` from an audio folder), mirrors the
folder's layout: one ``.safetensors`` file per clip holding named ``(channels, frames)`` tensors, all as long
(``latents``, and e.g. ``melody_chroma`` for melody training; a codec's integer ``codes`` for the token LM), and
its metadata line, so the cache can always be re-indexed from its files; a ``latents.jsonl`` index in the same
format as ``metadata.jsonl``; and ``latent_cache.json`` with ``latent_rate`` (frames per second),
``scaling_factor`` and ``channels`` (each tensor's name and channels).
:class:`latentmusic.data.datasets.LatentDataset` reads crops of it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from tqdm.auto import tqdm

from ..audio import load_audio
from .index import Record, parse_line, read_metadata

LATENTS_FILE = "latents.jsonl"
LATENT_CONFIG_FILE = "latent_cache.json"

Tensors = torch.Tensor | Mapping[str, torch.Tensor]  # a bare tensor is stored as "latents"
Latents = Tensors | Callable[[], Tensors]


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
            names the file) and its tensors: named ``(channels, frames)`` tensors of one length (finite floats, or
            integers such as codes, kept as integers), a bare tensor (stored as ``latents``), or a function
            returning either.
        latent_rate: Latent frames per second of audio.
        scaling_factor: The autoencoder's latent scaling factor, stored for the training recipe.

    Returns:
        The number of latent files written (entries skipped as already present are not counted).

    Raises:
        ValueError: If a record has no ``path`` or captions or is not JSON-serialisable, a tensor is not a
            ``(channels, frames)`` tensor (finite, if float), the tensors differ in length, their names or
            channels differ from the cache's, or
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
            tensors = _check_tensors(latents() if callable(latents) else latents, entry["source_path"])
            channels = {name: tensor.shape[0] for name, tensor in tensors.items()}
            if config["channels"] is None:
                config["channels"] = channels
                _write_text_atomic(out_dir / LATENT_CONFIG_FILE, json.dumps(config, indent=2))
            elif channels != config["channels"]:
                raise ValueError(
                    f"tensors for {entry['source_path']} have channels {channels} but the cache {out_dir} holds "
                    f"{config['channels']}; use one autoencoder (and one set of tensors) per cache"
                )
            file.parent.mkdir(parents=True, exist_ok=True)
            partial = file.with_name(file.name + ".tmp")
            save_file(tensors, str(partial), metadata={"entry": json.dumps(entry)})
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


def _check_tensors(tensors: Tensors, source: str) -> dict[str, torch.Tensor]:
    named = dict(tensors) if isinstance(tensors, Mapping) else {"latents": tensors}
    if not named:
        raise ValueError(f"no tensors for {source}; pass latents, or a dict of named tensors")
    checked = {}
    for name, tensor in named.items():
        tensor = torch.as_tensor(tensor).detach()
        if tensor.ndim != 2 or tensor.numel() == 0 or tensor.dtype == torch.bool or tensor.is_complex():
            raise ValueError(
                f"{name} for {source} must be a non-empty float or integer tensor of shape (channels, frames), got "
                f"{tensor.dtype} of shape {tuple(tensor.shape)}; drop the batch axis (latents[0])"
            )
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise ValueError(f"{name} for {source} contain NaN or Inf; check the autoencoder (e.g. fp16 overflow)")
        checked[name] = tensor.cpu().contiguous()
    lengths = {name: tensor.shape[1] for name, tensor in checked.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"the tensors for {source} differ in length {lengths}; give them one frame per latent frame")
    return checked


def _start_latent_config(out_dir: Path, latent_rate: float, scaling_factor: float) -> Record:
    if latent_rate <= 0 or not math.isfinite(latent_rate):
        raise ValueError(f"latent_rate must be a positive number of frames per second, got {latent_rate}")
    if not math.isfinite(scaling_factor):
        raise ValueError(f"scaling_factor must be finite, got {scaling_factor}")
    config_file = out_dir / LATENT_CONFIG_FILE
    if not config_file.exists():
        config = {"latent_rate": latent_rate, "scaling_factor": scaling_factor, "channels": None}
        _write_text_atomic(config_file, json.dumps(config, indent=2))
        return config
    config = read_latent_config(out_dir)
    if (config["latent_rate"], config["scaling_factor"]) != (latent_rate, scaling_factor):
        raise ValueError(
            f"the latent cache {out_dir} was written with latent_rate={config['latent_rate']} and "
            f"scaling_factor={config['scaling_factor']}, not {latent_rate} and {scaling_factor}; "
            "write to a new folder or delete this one"
        )
    return config


def read_latent_config(root: Path) -> Record:
    """The cache's ``latent_cache.json``: ``latent_rate``, ``scaling_factor`` and ``channels`` (by tensor name).

    Args:
        root: The cache folder.

    Returns:
        The three values, by name.
    """
    config_file = root / LATENT_CONFIG_FILE
    if not config_file.is_file():
        raise FileNotFoundError(
            f"{root} is not a latent cache ({LATENT_CONFIG_FILE} missing); write one with write_latent_cache"
        )
    try:
        config = json.loads(config_file.read_text())
        if "latent_channels" in config:
            raise ValueError("written by an older latentmusic, with one unnamed tensor per clip")
        return {key: config[key] for key in ("latent_rate", "scaling_factor", "channels")}
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
                shapes = {name: stored.get_slice(name).get_shape() for name in stored.keys()}
        except (SafetensorError, KeyError, ValueError) as error:
            raise ValueError(
                f"{file} in the latent cache was not written by write_latent_cache or is corrupt "
                f"({type(error).__name__}: {error}); delete it and run write_latent_cache again"
            ) from error
        path = file.relative_to(out_dir).as_posix()
        channels = {name: shape[0] for name, shape in shapes.items()}
        frames = next(iter(shapes.values()))[1]
        lines.append(json.dumps({**entry, "path": path, "channels": channels, "frames": frames}))
    _write_text_atomic(out_dir / LATENTS_FILE, "".join(line + "\n" for line in lines))


def _write_text_atomic(path: Path, text: str) -> None:
    partial = path.with_name(path.name + ".tmp")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)


def encode_folder(
    root: str | os.PathLike,
    cache: str | os.PathLike,
    encode: Callable[[torch.Tensor], Tensors],
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
        encode: Maps a clip ``(channels, samples)`` at ``sample_rate`` to its named ``(channels, frames)`` tensors
            (or one tensor, stored as ``latents``).
        sample_rate: Rate the clips are loaded at.
        channels: Channels the clips are loaded with.
        latent_rate: Frames per second of the encodings.
        scaling_factor: Stored with the cache for the training recipe.
        progress: Show a progress bar.
        desc: The progress bar's label.

    Returns:
        The cache folder.
    """
    records = read_metadata(root)

    def lazily(path: Path) -> Callable[[], torch.Tensor]:
        return lambda: encode(load_audio(path, sample_rate=sample_rate, channels=channels)[0])

    items = ((record, lazily(Path(root) / record["path"])) for record in records)
    items = tqdm(items, total=len(records), desc=desc, disable=not progress)
    write_latent_cache(cache, items, latent_rate=latent_rate, scaling_factor=scaling_factor)
    return Path(cache)
