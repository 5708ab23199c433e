"""The rendered corpus: scores from music21's core corpus played by FluidSynth, captioned, with ground truth.

Every test, recipe and benchmark of the project trains and measures on music the package renders itself,
byte-identically from run to run, with nothing downloaded. The pieces come from the corpus shipped in the
music21 wheel (see :data:`COLLECTIONS`). Each *rendition* of a piece picks, from the seed and the piece's
id only, a General-MIDI instrument, a tempo and a transposition (:func:`choose_rendition`); music21
expands the repeats, drops grace notes, crops the score to ``max_seconds``, transposes it and writes the
instrument and a metronome mark into every part; FluidSynth renders the MIDI with a General-MIDI
soundfont, and the audio is trimmed after its last sound, peak-normalised and written as FLAC (that part lives in
:mod:`latentmusic.data.rendering`; the command line in :mod:`latentmusic.data.cli`).

Layout of the output folder::

    metadata.jsonl                      one JSON object per rendition, sorted by path
    corpus.json                         the settings the audio depends on (a re-run must match them)
    test/bach/bwv308-r0.flac            <split>/<piece_id>-r<rendition>.flac
    train/oneills/1276-1375/1286-r0.flac
    train/bach/bwv1.6-r0-t1.flac        a tempo variant: <split>/<piece_id>-r<rendition>-t<variant>.flac

A ``metadata.jsonl`` line holds ``path``, ``split`` and ``captions`` (what
:class:`~latentmusic.data.AudioCaptionDataset` reads) and the ground-truth attributes: ``piece_id``,
``rendition``, ``collection``, ``composer``, ``genre``, ``title``, ``key`` (e.g. ``"G minor"``),
``tonic`` (``"G"``, flats written ``"Bb"``), ``mode`` (``"major"``/``"minor"``), ``bpm`` (quarter notes
per minute: the one tempo the MIDI carries, since every tempo mark of the score is replaced by it), ``meter``
(e.g. ``"3/4"``, ``None`` if the score has none), ``beat_unit`` (quarter notes per felt beat of the metre: 1.5 in
6/8, 2 in 2/2 and 4/2, see :func:`~latentmusic.data.rendering.beat_quarters`), ``beat_bpm``
(``bpm / beat_unit``, felt beats per minute), ``instrument``, ``program`` (0-based General-MIDI program),
``family``, ``transposition`` (semitones), ``tempo_variant`` (0, or the variant's number), ``duration`` (seconds of
the FLAC), ``sample_rate`` and ``channels``.
The key is music21's analysis (``analyze('key')``) of the cropped score, transposed with the rendition, i.e. the
key of what is heard.

How much audio the defaults give (all 13,304 pieces, one rendition each, 60 s cap), from mean durations
measured on 30 to 40 pieces of each collection and all quartet movements: 8,462 Essen songs x 28 s +
2,009 O'Neill's tunes x 51 s + 1,318 Palestrina sections x 58 s + 1,059 Ryan's tunes x 40 s + 410 Bach
chorales x 46 s + 46 quartet movements x 60 s = about 480,000 s = 133 hours, about 120 of them in the train
split: far over the 10 hours training needs. That takes about 2.4 hours on one core (0.5 s per Essen song,
0.7 to 1 s per other song or chorale, 3 to 16 s per quartet movement, which music21 parses whole) and
14 GB of FLAC at 24 kHz mono; ``workers`` renders that many pieces at once. ``max_pieces`` takes a prefix of an
order that interleaves the collections: ``max_pieces=1000`` gives about 12.5 hours (11 of them train) in
about 20 minutes.

Splits are by piece (a hash of its id, 90/5/5), so the renditions of one piece share a split.

*Tempo variants* (``tempo_variants``) are minimal pairs for training: each train rendition is rendered again with
its instrument and transposition and only the tempo changed, at least :data:`TEMPO_VARIANT_RATIO` times faster or
slower within the collection's range (:func:`vary_tempo`). Renditions otherwise change instrument, key and tempo
together, and a collection's tempo range is narrow, so nothing but the tempo words and numbers tells a model what
they mean; a pair that differs in tempo alone does. The held-out splits get none, so their metrics stay comparable
with and without variants.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import math
import multiprocessing
import os
import random
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from music21 import common, converter, stream
from music21 import corpus as m21_corpus
from tqdm.auto import tqdm

from .captions import make_captions
from .rendering import find_soundfont, render_piece, require_fluidsynth

logger = logging.getLogger(__name__)

METADATA_FILE = "metadata.jsonl"
SETTINGS_FILE = "corpus.json"
SPLITS = {"train": 90, "valid": 5, "test": 5}  # percent of the pieces
TRANSPOSITIONS = range(-5, 7)  # semitones
TEMPO_VARIANT_RATIO = 1.25  # a tempo variant is at least this much faster or slower than its rendition


@dataclass(frozen=True)
class GMInstrument:
    """A General-MIDI instrument that renditions are played on.

    Attributes:
        name: Readable name, as captions say it.
        program: 0-based General-MIDI program number.
        family: One of keyboard, strings, woodwind, brass, plucked, voice, mallet.
    """

    name: str
    program: int
    family: str


INSTRUMENTS = (
    GMInstrument("piano", 0, "keyboard"),
    GMInstrument("harpsichord", 6, "keyboard"),
    GMInstrument("church organ", 19, "keyboard"),
    GMInstrument("accordion", 21, "keyboard"),
    GMInstrument("vibraphone", 11, "mallet"),
    GMInstrument("marimba", 12, "mallet"),
    GMInstrument("nylon-string guitar", 24, "plucked"),
    GMInstrument("harp", 46, "plucked"),
    GMInstrument("violin", 40, "strings"),
    GMInstrument("cello", 42, "strings"),
    GMInstrument("string ensemble", 48, "strings"),
    GMInstrument("choir", 52, "voice"),
    GMInstrument("trumpet", 56, "brass"),
    GMInstrument("french horn", 60, "brass"),
    GMInstrument("oboe", 68, "woodwind"),
    GMInstrument("bassoon", 70, "woodwind"),
    GMInstrument("clarinet", 71, "woodwind"),
    GMInstrument("flute", 73, "woodwind"),
)


def _score_title(path: str, score: stream.Score) -> str:
    metadata = score.metadata
    # Ryan's titles name the dance after " -- " ("Acacia -- Reel"); abc titles may be quoted.
    title = (metadata.title or Path(path).stem).strip().strip('"').split(" -- ")[0]
    # Palestrina's sections name their mass as the parent title.
    return f"{title} ({metadata.parentTitle})" if metadata.parentTitle else title


@functools.cache
def _chorale_names() -> dict[str, str]:
    return {bwv: entry["title"] for bwv, entry in m21_corpus.chorales.ChoraleListRKBWV().byBWV.items()}


def _chorale_title(path: str, score: stream.Score) -> str:
    bwv = Path(path).stem.removeprefix("bwv")
    name = _chorale_names().get(bwv)
    return f"{name} (BWV {bwv})" if name else f"Chorale BWV {bwv}"


def _quartet_title(path: str, score: stream.Score) -> str:
    # "beethoven/opus18no1/movement2.mxl" -> "String Quartet Op. 18 No. 1, movement 2"
    work, *movement = Path(path).with_suffix("").parts[1:]
    work = re.sub(r"^k(\d+)", r"K. \1", re.sub(r"no(\d+)", r" No. \1", re.sub(r"opus(\d+)", r"Op. \1", work)))
    return f"String Quartet {work}" + "".join(f", movement {m.removeprefix('movement')}" for m in movement)


@dataclass(frozen=True)
class Collection:
    """A group of pieces of music21's core corpus.

    Attributes:
        name: Short name, the first component of its pieces' ids (e.g. ``"bach"``).
        composer: As captions name them; ``"traditional"`` for folk music.
        genre: What a piece is, for captions (a dance named in a tune's title replaces it).
        patterns: Globs relative to music21's corpus folder; a multi-tune ``.abc`` file gives one piece
            per tune (``X:`` number).
        bpm: Inclusive range of the renditions' tempi, in quarter notes per minute.
        title: Makes a piece's title from its path (relative to the corpus folder) and parsed score.
    """

    name: str
    composer: str
    genre: str
    patterns: tuple[str, ...]
    bpm: tuple[int, int]
    title: Callable[[str, stream.Score], str] = _score_title


_QUARTET = "string quartet movement"
COLLECTIONS = (
    Collection("bach", "J. S. Bach", "chorale", ("bach/bwv*.mxl", "bach/bwv*.xml"), (60, 100), _chorale_title),
    Collection("palestrina", "Palestrina", "mass movement", ("palestrina/*.krn",), (70, 120)),
    Collection("ryans", "traditional", "fiddle tune", ("ryansMammoth/*.abc",), (90, 150)),
    Collection("oneills", "traditional", "Irish tune", ("oneills1850/*.abc",), (70, 140)),
    # test*.abc are music21's parser fixtures, not songs.
    Collection("essen", "traditional", "folk song", ("essenFolksong/[!t]*.abc",), (70, 130)),
    Collection("beethoven", "Beethoven", _QUARTET, ("beethoven/**/*.mxl",), (60, 140), _quartet_title),
    # movement[0-9] leaves out k545's exposition, a piano sonata.
    Collection("mozart", "Mozart", _QUARTET, ("mozart/k*/movement[0-9].mxl",), (60, 140), _quartet_title),
    Collection("haydn", "Haydn", _QUARTET, ("haydn/**/*.mxl",), (60, 140), _quartet_title),
)
COLLECTION_NAMES = tuple(collection.name for collection in COLLECTIONS)
_BY_NAME = {collection.name: collection for collection in COLLECTIONS}
_DANCE = re.compile(r"\b(slip ?jig|reel|hornpipe|jig|strathspey|clog|fling|waltz|polka|march)\b", re.IGNORECASE)


@dataclass(frozen=True)
class Piece:
    """One piece of a collection.

    Attributes:
        piece_id: Stable id, ``<collection>/<file path without suffix>`` plus ``/<X number>`` for a tune
            of a multi-tune ``.abc`` file, e.g. ``"bach/bwv66.6"``, ``"oneills/0001-0050/12"``.
        collection: Name of its collection.
        path: Its file, relative to music21's corpus folder.
        number: The tune's ``X:`` number in a multi-tune ``.abc`` file, else ``None``.
    """

    piece_id: str
    collection: str
    path: str
    number: int | None = None


@dataclass(frozen=True)
class Rendition:
    """How a piece is played.

    Attributes:
        index: Which rendition of the piece (0, 1, ...).
        instrument: Plays every part.
        bpm: Tempo in quarter notes per minute.
        transposition: Semitones, in :data:`TRANSPOSITIONS`.
        tempo_variant: 0 for the rendition as chosen, ``k`` for its ``k``-th tempo variant (:func:`vary_tempo`).
    """

    index: int
    instrument: GMInstrument
    bpm: int
    transposition: int
    tempo_variant: int = 0


def _digest(text: str) -> int:
    # sha256, unlike hash(), is the same in every process, run and Python version.
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def split_of(piece_id: str) -> str:
    """The split of a piece: a hash of its id, so all renditions of a piece share it.

    Args:
        piece_id: The piece's id.

    Returns:
        ``"train"``, ``"valid"`` or ``"test"``, for 90, 5 and 5 % of the pieces.
    """
    bucket = _digest(piece_id) % 100
    for split, percent in SPLITS.items():
        if bucket < percent:
            return split
        bucket -= percent
    raise AssertionError("SPLITS must add up to 100")


def rendition_path(piece_id: str, index: int, tempo_variant: int = 0) -> str:
    """The FLAC file of a rendition, relative to the corpus folder: ``<split>/<piece_id>-r<index>.flac``.

    A tempo variant ``k > 0`` of the rendition is ``<split>/<piece_id>-r<index>-t<k>.flac``.
    """
    variant = f"-t{tempo_variant}" if tempo_variant else ""
    return f"{split_of(piece_id)}/{piece_id}-r{index}{variant}.flac"


def _corpus_folder() -> Path:
    return Path(common.getCorpusFilePath())


def _collection_pieces(collection: Collection) -> list[Piece]:
    folder = _corpus_folder()
    files = sorted({file for pattern in collection.patterns for file in folder.glob(pattern)})
    pieces = []
    for file in files:
        path = file.relative_to(folder).as_posix()
        piece_id = f"{collection.name}/{Path(path).with_suffix('').as_posix().split('/', 1)[1]}"
        numbers = re.findall(r"^X:\s*(\d+)", file.read_text(encoding="latin-1"), re.MULTILINE)
        if len(numbers) > 1:
            pieces += [Piece(f"{piece_id}/{n}", collection.name, path, int(n)) for n in numbers]
        else:
            pieces.append(Piece(piece_id, collection.name, path))
    # A hash order, so that a prefix samples the whole collection rather than its first file.
    return sorted(pieces, key=lambda piece: _digest(piece.piece_id))


def list_pieces(collections: Sequence[str] | None = None, max_pieces: int | None = None) -> list[Piece]:
    """The pieces of the corpus, in a deterministic order that interleaves the collections.

    Reads file names and the ``X:`` lines of ``.abc`` files only (about a second); nothing is parsed.

    Args:
        collections: Names from :data:`COLLECTION_NAMES`; ``None`` takes all.
        max_pieces: Keep the first this many of the order; ``None`` keeps all.

    Returns:
        The pieces: one of each collection in turn, while a collection has pieces left.

    Raises:
        ValueError: For an unknown collection name.
    """
    names = list(collections or COLLECTION_NAMES)
    unknown = sorted(set(names) - set(COLLECTION_NAMES))
    if unknown:
        raise ValueError(f"unknown collections {unknown}; choose from {', '.join(COLLECTION_NAMES)}")
    groups = [_collection_pieces(collection) for collection in COLLECTIONS if collection.name in names]
    interleaved = [group[i] for i in range(max(map(len, groups))) for group in groups if i < len(group)]
    return interleaved[:max_pieces]


def load_score(piece: Piece) -> stream.Score:
    """Parse a piece with music21 (slow for large scores: up to seconds; nothing is cached on disk).

    Args:
        piece: From :func:`list_pieces`.

    Returns:
        The score as written (one tune of a multi-tune ``.abc`` file).
    """
    score = converter.parse(_corpus_folder() / piece.path, number=piece.number, forceSource=True)
    if not isinstance(score, stream.Score):
        raise ValueError(f"{piece.path} (tune {piece.number}) parses to a {type(score).__name__}, not a Score")
    return score


def choose_rendition(piece_id: str, index: int, seed: int = 0, bpm_range: tuple[int, int] = (60, 140)) -> Rendition:
    """Choose instrument, tempo and transposition from the seed, piece id and rendition index only.

    Args:
        piece_id: The piece's id.
        index: Which rendition of the piece.
        seed: Varies every choice of the corpus.
        bpm_range: Inclusive tempo range, e.g. the collection's :attr:`Collection.bpm`.

    Returns:
        The rendition.
    """
    rng = random.Random(_digest(f"{seed}/{piece_id}/{index}"))
    return Rendition(index, rng.choice(INSTRUMENTS), rng.randint(*bpm_range), rng.choice(TRANSPOSITIONS))


def vary_tempo(rendition: Rendition, piece_id: str, variant: int, seed: int, bpm_range: tuple[int, int]) -> Rendition:
    """A tempo variant of a rendition: the same instrument and transposition at another tempo.

    The tempo is drawn (from the seed, piece id, rendition index and variant only) among the tempi of
    ``bpm_range`` at least :data:`TEMPO_VARIANT_RATIO` times faster or slower than the rendition's; a range too
    narrow for that gives its end farthest from the rendition's tempo.

    Args:
        rendition: From :func:`choose_rendition`.
        piece_id: The piece's id.
        variant: The variant's number, from 1.
        seed: The corpus seed.
        bpm_range: Inclusive tempo range, e.g. the collection's :attr:`Collection.bpm`.

    Returns:
        The variant, with :attr:`Rendition.tempo_variant` set to ``variant``.
    """
    if variant < 1:
        raise ValueError(f"tempo variants are numbered from 1, got variant={variant}")
    rng = random.Random(_digest(f"{seed}/{piece_id}/{rendition.index}/tempo/{variant}"))
    low, high = bpm_range
    far = [
        bpm for bpm in range(low, high + 1) if max(bpm, rendition.bpm) >= TEMPO_VARIANT_RATIO * min(bpm, rendition.bpm)
    ]
    bpm = rng.choice(far) if far else max((low, high), key=lambda end: abs(math.log(end / rendition.bpm)))
    return dataclasses.replace(rendition, bpm=bpm, tempo_variant=variant)


@dataclass(frozen=True)
class _Job:
    piece: Piece
    renditions: tuple[tuple[int, int], ...]  # (index, tempo variant)
    root: Path
    settings: dict[str, Any]
    keep_midi: bool


def _render_job(job: _Job) -> tuple[list[dict[str, Any]], str | None]:
    """Render the missing renditions of one piece: (records, error message or None)."""
    piece, collection = job.piece, _BY_NAME[job.piece.collection]
    records = []
    try:
        score = load_score(piece)
        dance = _DANCE.search(score.metadata.title or "")
        head = {
            "piece_id": piece.piece_id,
            "collection": collection.name,
            "composer": collection.composer,
            "genre": dance.group(1).lower().replace("slipjig", "slip jig") if dance else collection.genre,
            "title": collection.title(piece.path, score),
        }
        for index, variant in job.renditions:
            rendition = choose_rendition(piece.piece_id, index, job.settings["seed"], collection.bpm)
            if variant:
                rendition = vary_tempo(rendition, piece.piece_id, variant, job.settings["seed"], collection.bpm)
            path = rendition_path(piece.piece_id, index, variant)
            out = job.root / path
            attributes = render_piece(
                score,
                rendition,
                out,
                job.settings["sample_rate"],
                job.settings["channels"],
                job.settings["max_seconds"],
                midi_path=out.with_suffix(".mid") if job.keep_midi else None,
            )
            record = {"path": path, "split": split_of(piece.piece_id), "captions": []}
            record |= {**head, "rendition": index, "tempo_variant": variant, **attributes}
            record["captions"] = make_captions(record)
            records.append(record)
    # One score that music21 cannot read or expand must not end a run of thousands; it is reported.
    except Exception as error:  # noqa: BLE001
        return records, f"{piece.piece_id}: {type(error).__name__}: {error}"
    return records, None


def _map_unordered(fn: Callable[[_Job], Any], jobs: list[_Job], workers: int) -> Iterator[Any]:
    if workers == 1:
        yield from map(fn, jobs)
        return
    with multiprocessing.Pool(workers) as pool:
        yield from pool.imap_unordered(fn, jobs)


def _write_atomic(path: Path, text: str) -> None:
    partial = path.with_name(f"{path.name}.partial")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)


def _write_metadata(path: Path, records: Iterable[dict[str, Any]]) -> None:
    lines = [json.dumps(record, ensure_ascii=False) + "\n" for record in sorted(records, key=lambda r: r["path"])]
    _write_atomic(path, "".join(lines))


def _read_finished(root: Path) -> dict[str, dict[str, Any]]:
    """Records of the metadata file whose FLAC exists; a line cut short by a killed run is dropped."""
    file = root / METADATA_FILE
    finished = {}
    lines = file.read_text(encoding="utf-8").splitlines() if file.is_file() else []
    for line in lines:
        try:
            record = json.loads(line)
            path = record["path"]
        except (ValueError, TypeError, KeyError):
            logger.warning("dropping an unreadable line of %s (a rendition interrupted by a killed run)", file)
            continue
        if (root / path).is_file():
            finished[path] = record
    return finished


def _check_settings(root: Path, settings: dict[str, Any]) -> None:
    file = root / SETTINGS_FILE
    if not file.is_file():
        _write_atomic(file, json.dumps(settings, indent=2) + "\n")
        return
    previous = json.loads(file.read_text(encoding="utf-8"))
    if previous != settings:
        raise ValueError(
            f"{root} holds a corpus rendered with {previous}, not {settings}; "
            "re-run with the same settings to extend it, or choose another output folder"
        )


def render_corpus(
    out_dir: str | os.PathLike,
    max_pieces: int | None = None,
    renditions_per_piece: int = 1,
    tempo_variants: int = 0,
    collections: Sequence[str] | None = None,
    sample_rate: int = 24000,
    channels: int = 1,
    max_seconds: float = 60.0,
    seed: int = 0,
    workers: int = 1,
    keep_midi: bool = False,
    progress: bool = True,
) -> Path:
    """Render pieces of the corpus to FLAC files and a ``metadata.jsonl`` (see the module docstring).

    Each rendition's line is appended to ``metadata.jsonl`` as soon as its FLAC is written; a re-run
    skips the renditions listed there whose FLAC exists (so an interrupted run resumes, and a larger
    ``max_pieces`` or ``renditions_per_piece`` extends the corpus), and the file is rewritten sorted at the
    start and the end. The same arguments give byte-identical files. A piece that fails (e.g. a score
    music21 cannot expand) is skipped with a logged warning.

    Args:
        out_dir: The corpus folder (created if needed).
        max_pieces: Render the first this many pieces of :func:`list_pieces`; ``None`` renders all.
        renditions_per_piece: Renditions of each piece (different instrument, tempo and key).
        tempo_variants: Tempo variants of each train-split rendition (the same instrument and key at another
            tempo, see :func:`vary_tempo`); the valid and test splits get none.
        collections: Names from :data:`COLLECTION_NAMES`; ``None`` takes all.
        sample_rate: Sample rate of the FLAC files (8000 to 96000 Hz).
        channels: 1 (mono) or 2 (FluidSynth's stereo, with its reverb and chorus).
        max_seconds: Crop longer pieces to this.
        seed: Varies the renditions (not the splits).
        workers: Processes rendering pieces in parallel.
        keep_midi: Keep each rendition's MIDI file next to its FLAC (``.mid``), e.g. to check attributes.
        progress: Show a progress bar.

    Returns:
        The path of ``metadata.jsonl``.

    Raises:
        FileNotFoundError: If FluidSynth or a soundfont is missing.
        ValueError: For invalid arguments, or a folder rendered with other settings (``corpus.json``).
        RuntimeError: If every piece failed.
    """
    if renditions_per_piece < 1 or tempo_variants < 0 or workers < 1 or max_seconds <= 0 or channels not in (1, 2):
        raise ValueError(
            "need renditions_per_piece >= 1, tempo_variants >= 0, workers >= 1, max_seconds > 0 and channels 1 or 2, "
            f"got {renditions_per_piece}, {tempo_variants}, {workers}, {max_seconds} and {channels}"
        )
    if not 8000 <= sample_rate <= 96000:
        raise ValueError(f"FluidSynth renders at 8000 to 96000 Hz, got sample_rate={sample_rate}")
    require_fluidsynth()
    settings = {
        "seed": seed,
        "sample_rate": sample_rate,
        "channels": channels,
        "max_seconds": max_seconds,
        "soundfont": find_soundfont().name,
    }
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    _check_settings(root, settings)
    metadata = root / METADATA_FILE
    finished = _read_finished(root)
    _write_metadata(metadata, finished.values())
    jobs = []
    for piece in list_pieces(collections, max_pieces):
        variants = range(tempo_variants + 1) if split_of(piece.piece_id) == "train" else range(1)
        wanted = [(index, variant) for index in range(renditions_per_piece) for variant in variants]
        missing = tuple(pair for pair in wanted if rendition_path(piece.piece_id, *pair) not in finished)
        if missing:
            jobs.append(_Job(piece, missing, root, settings, keep_midi))
    errors = []
    with metadata.open("a", encoding="utf-8") as index:
        results = _map_unordered(_render_job, jobs, min(workers, max(len(jobs), 1)))
        for records, error in tqdm(results, total=len(jobs), desc="rendering", unit="piece", disable=not progress):
            for record in records:
                index.write(json.dumps(record, ensure_ascii=False) + "\n")
                finished[record["path"]] = record
            index.flush()
            if error:
                errors.append(error)
                logger.warning("skipped %s", error)
    if errors and len(errors) == len(jobs):
        raise RuntimeError(f"all {len(jobs)} pieces failed to render; the first: {errors[0]}")
    _write_metadata(metadata, finished.values())
    return metadata
