"""Reading the index of an audio folder: which files, their captions and splits.

Three layouts are read, in this order of preference, so a folder of your own music works as it is:

- ``metadata.jsonl``: one JSON object per line, ``{"path": "clips/song.flac", "caption": "a calm piano piece"}``;
- ``metadata.csv``: a header row and one row per file, with the same column names;
- neither: every audio file in the folder and its subfolders, each captioned by the ``.txt`` file beside it with
  the same name (``song.wav`` and ``song.txt``; one caption per line, several lines are several captions).

``path`` may also be called ``file_name`` (Hugging Face's audiofolder layout); captions are ``captions`` (a
list), ``caption`` or ``text``; ``split`` is optional. When no record names a split, one file in
``VALID_EVERY`` (at least one) is held out as ``"valid"`` and the rest are ``"train"``, chosen by a hash of the
path so the choice never changes between runs. Every problem is reported with the file (and line) it is in.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from pathlib import Path
from typing import Any

Record = dict[str, Any]

METADATA_FILE = "metadata.jsonl"
METADATA_CSV = "metadata.csv"
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif", ".opus")
VALID_EVERY = 20  # without splits, one file in this many (at least one) is held out for validation
EXAMPLE_LINE = '{"path": "clips/song.flac", "caption": "a calm piano piece"}'
_MAX_LISTED = 10


def index_file(root_or_file: str | os.PathLike, name: str) -> Path:
    """The index `name` in a folder, or the file itself.

    Raises:
        FileNotFoundError: If there is no such file.
    """
    path = Path(root_or_file)
    file = path / name if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(
            f"no {name} at {file.absolute()}; pass a folder holding {name} (one JSON object per line) "
            "or the index file itself"
        )
    return file


def read_audio_index(root_or_file: str | os.PathLike, split: str | None) -> tuple[Path, list[tuple[str, Record]]]:
    """The records of an audio folder in any of the layouts of the module docstring.

    Args:
        root_or_file: The folder, or its ``metadata.jsonl``/``metadata.csv``.
        split: Keep only this split's records; ``None`` keeps all.

    Returns:
        The folder paths are relative to, and ``(where, record)`` pairs (``where`` names the file and line, for
        error messages).

    Raises:
        FileNotFoundError: If the folder or a file a record names does not exist.
        ValueError: If the folder has no audio, a file has no caption, or a line is malformed.
    """
    path = Path(root_or_file)
    if path.is_file():
        root, entries = path.parent, _read_index(path)
    elif not path.is_dir():
        raise FileNotFoundError(f"data folder {path.absolute()} does not exist; pass the folder with your audio files")
    elif (path / METADATA_FILE).is_file():
        root, entries = path, _read_index(path / METADATA_FILE)
    elif (path / METADATA_CSV).is_file():
        root, entries = path, _read_index(path / METADATA_CSV)
    else:
        root, entries = path, _scan_folder(path)
    return root, select_split(root, entries, split, str(path))


def read_jsonl_index(file: Path, split: str | None) -> list[tuple[str, Record]]:
    """Validated ``(where, record)`` pairs of a JSON-lines index, filtered by split (no splits assigned)."""
    return select_split(file.parent, _read_index(file), split, str(file), assign=False)


def select_split(
    root: Path, entries: list[tuple[str, Record]], split: str | None, source: str, assign: bool = True
) -> list[tuple[str, Record]]:
    """Assign splits where none is given (see the module docstring), filter by `split`, check the files exist."""
    if assign and entries and not any("split" in record for _, record in entries):
        _assign_splits([record for _, record in entries], source)
    splits = {str(record.get("split")) for _, record in entries}
    selected = [(where, record) for where, record in entries if split is None or record.get("split") == split]
    if split is not None and not selected and splits:
        raise ValueError(
            f"no record in {source} has split {split!r}; the splits there are {sorted(splits)} "
            "(None: no split key); pass one of those, or split=None for all"
        )
    for where, record in selected:
        target = root / record["path"]
        if not target.is_file():
            raise FileNotFoundError(
                f"{where}: file {record['path']!r} not found (looked for {target}); "
                f"fix the path (relative to {root}) or remove the line"
            )
    return selected


def _assign_splits(records: list[Record], source: str) -> None:
    if len(records) < 2:
        raise ValueError(
            f"{source} has only {len(records)} file; training holds one file out for validation, so it needs at "
            'least 2 (or give each record a "split": "train" and add a "valid" one)'
        )
    held_out = max(1, round(len(records) / VALID_EVERY))
    ranked = sorted(records, key=lambda record: hashlib.sha1(record["path"].encode()).hexdigest())
    valid = {id(record) for record in ranked[:held_out]}
    for record in records:
        record["split"] = "valid" if id(record) in valid else "train"


def _read_index(file: Path) -> list[tuple[str, Record]]:
    if file.suffix == ".csv":
        return _read_csv(file)
    entries = []
    with open(file, encoding="utf-8") as lines:
        for line_number, line in enumerate(lines, start=1):
            if line.strip():
                where = f"{file}, line {line_number}"
                entries.append((where, parse_line(line, where)))
    return entries


def _read_csv(file: Path) -> list[tuple[str, Record]]:
    with open(file, encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or not {"path", "file_name"} & set(reader.fieldnames):
            raise ValueError(
                f"{file}: the header row must name a 'path' (or 'file_name') column and a 'caption' column, got "
                f"{reader.fieldnames}; e.g. the first line 'path,caption'"
            )
        entries = []
        for row_number, row in enumerate(reader, start=2):
            # empty cells are absent values (a csv has no null); a row's extra columns are kept as metadata
            record = {key: value for key, value in row.items() if key is not None and value not in (None, "")}
            where = f"{file}, line {row_number}"
            entries.append((where, check_record(record, where, line=",".join(row.values() or []))))
    return entries


def _scan_folder(root: Path) -> list[tuple[str, Record]]:
    audio = sorted(
        path
        for path in root.rglob("*")
        if path.suffix.lower() in AUDIO_EXTENSIONS
        and path.is_file()
        and not any(part.startswith(".") for part in path.relative_to(root).parts)
    )
    if not audio:
        raise ValueError(
            f"{root} holds no audio files ({', '.join(AUDIO_EXTENSIONS)}, in it or its subfolders) and no "
            f"{METADATA_FILE} or {METADATA_CSV}; add your audio files with a caption for each (song.wav beside "
            "song.txt), or point data.root at the folder that has them"
        )
    missing, entries = [], []
    for path in audio:
        caption_file = path.with_suffix(".txt")
        if not caption_file.is_file():
            missing.append(path.relative_to(root).as_posix())
            continue
        captions = [line.strip() for line in caption_file.read_text(encoding="utf-8").splitlines() if line.strip()]
        if not captions:
            raise ValueError(f"{caption_file} is empty; write a caption describing {path.name} (one per line)")
        entries.append((str(caption_file), {"path": path.relative_to(root).as_posix(), "captions": captions}))
    if missing:
        listed = ", ".join(missing[:_MAX_LISTED]) + (
            f" and {len(missing) - _MAX_LISTED} more" if len(missing) > 10 else ""
        )
        raise ValueError(
            f"{len(missing)} of {len(audio)} audio files in {root} have no caption: {listed}. Write one in a .txt "
            f"file beside each (song.wav -> song.txt), or list all files with captions in {root / METADATA_FILE} "
            f"or {METADATA_CSV}"
        )
    return entries


def parse_line(line: str, where: str) -> Record:
    """One JSON-lines record, validated (see `check_record`)."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        raise ValueError(
            f"{where}: invalid JSON ({error.msg} at column {error.colno}); each line must be one JSON object "
            f"such as {EXAMPLE_LINE}"
        ) from None
    return check_record(record, where, line)


def check_record(record: Any, where: str, line: str = "") -> Record:
    """A record with a non-empty ``path`` (``file_name`` is renamed to it) and ``captions`` set to its list of
    captions; anything else is kept.

    Raises:
        ValueError: Naming `where`, if the path or captions are missing or malformed.
    """
    if not isinstance(record, dict):
        raise ValueError(
            f"{where}: expected a JSON object, got {type(record).__name__} {line.strip()[:80]}; each line must "
            f"be one object such as {EXAMPLE_LINE}"
        )
    if "path" not in record and "file_name" in record:
        record["path"] = record.pop("file_name")
    path = record.get("path")
    if not isinstance(path, str) or not path:
        raise ValueError(
            f'{where}: "path" is missing or not a non-empty string (got {path!r}); add the file\'s path '
            f'relative to the folder, e.g. "path": "clips/song.flac"'
        )
    record["captions"] = _captions(record, where)
    return record


def _captions(record: Record, where: str) -> list[str]:
    if "captions" in record:
        captions = record["captions"]
        if isinstance(captions, list) and captions and all(isinstance(c, str) and c.strip() for c in captions):
            return captions
        raise ValueError(
            f'{where}: "captions" must be a non-empty list of non-empty strings, got {captions!r}; '
            'write e.g. "captions": ["a calm piano piece"], or remove the line'
        )
    for key in ("caption", "text"):
        if key in record:
            caption = record[key]
            if isinstance(caption, str) and caption.strip():
                return [caption]
            raise ValueError(f'{where}: "{key}" must be a non-empty string, got {caption!r}; describe the clip')
    raise ValueError(f'{where}: no caption; add "captions": ["...", ...] or "caption": "..." describing the clip')


def read_metadata(root_or_file: str | os.PathLike, split: str | None = None) -> list[Record]:
    """Read and validate the index of an audio folder: ``metadata.jsonl``, ``metadata.csv``, or ``.txt`` captions
    beside the audio files (see the module docstring).

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
