"""The rendered corpus: scores from music21's core corpus played by FluidSynth, captioned, with ground truth.

Every test, recipe and benchmark of the project trains and measures on music the package renders itself,
byte-identically from run to run, with nothing downloaded. The pieces come from the corpus shipped in the
music21 wheel (see :data:`COLLECTIONS`). Each *rendition* of a piece picks, from the seed and the piece's
id only, a General-MIDI instrument, a tempo and a transposition (:func:`choose_rendition`); music21
expands the repeats, drops grace notes, crops the score to ``max_seconds``, transposes it and writes the
instrument and a metronome mark into every part; FluidSynth renders the MIDI with a General-MIDI
soundfont, and the audio is trimmed after its last sound, peak-normalised and written as FLAC.

Layout of the output folder::

    metadata.jsonl                      one JSON object per rendition, sorted by path
    corpus.json                         the settings the audio depends on (a re-run must match them)
    test/bach/bwv308-r0.flac            <split>/<piece_id>-r<rendition>.flac
    train/oneills/1276-1375/1286-r0.flac

A ``metadata.jsonl`` line holds ``path``, ``split`` and ``captions`` (what
:class:`~latentmusic.data.AudioCaptionDataset` reads) and the ground-truth attributes: ``piece_id``,
``rendition``, ``collection``, ``composer``, ``genre``, ``title``, ``key`` (e.g. ``"G minor"``),
``tonic`` (``"G"``, flats written ``"Bb"``), ``mode`` (``"major"``/``"minor"``), ``bpm`` (quarter notes
per minute: the one tempo the MIDI carries, since every tempo mark of the score is replaced by it), ``meter``
(e.g. ``"3/4"``, ``None`` if the score has none), ``beat_unit`` (quarter notes per felt beat of the metre: 1.5 in
6/8, 2 in 2/2 and 4/2, see :func:`beat_quarters`), ``beat_bpm`` (``bpm / beat_unit``, felt beats per minute),
``instrument``, ``program``
(0-based General-MIDI program), ``family``, ``transposition`` (semitones), ``duration`` (seconds of the
FLAC), ``sample_rate`` and ``channels``. The key is music21's analysis (``analyze('key')``) of the
cropped score, transposed with the rendition, i.e. the key of what is heard.

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
"""

from __future__ import annotations

import argparse
import copy
import functools
import hashlib
import json
import logging
import multiprocessing
import os
import random
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from music21 import bar, common, converter, instrument, interval, meter, pitch, repeat, spanner, stream, tempo
from music21 import corpus as m21_corpus
from music21 import key as m21_key
from tqdm.auto import tqdm

from ..audio import load_audio, normalize_peak, save_audio
from .captions import make_captions

logger = logging.getLogger(__name__)

METADATA_FILE = "metadata.jsonl"
SETTINGS_FILE = "corpus.json"
SPLITS = {"train": 90, "valid": 5, "test": 5}  # percent of the pieces
TRANSPOSITIONS = range(-5, 7)  # semitones
SOUNDFONT_ENV = "LATENTMUSIC_SOUNDFONT"
SOUNDFONT_PATHS = (
    Path("/usr/share/sounds/sf2/FluidR3_GM.sf2"),  # Debian/Ubuntu fluid-soundfont-gm
    Path("/usr/share/sounds/sf2/default-GM.sf2"),
    Path("/usr/share/soundfonts/FluidR3_GM.sf2"),  # Arch, Fedora
    Path("/usr/share/soundfonts/default.sf2"),
)
INSTALL_HINT = "apt-get install -y --no-install-recommends fluidsynth fluid-soundfont-gm"

_GAIN = 0.5  # FluidSynth's master gain; it writes float samples, which are peak-normalised afterwards
_SILENCE_DB = -50.0  # relative to the peak: quieter samples at the end count as the reverb tail
_TAIL_SECONDS = 0.3  # kept after the last sound
_FADE_SECONDS = 0.05  # fade-out at the end, so that a crop does not click
_PEAK_DB = -1.0
# Seconds; guards against a MIDI file that never ends (a sustained note without note-off renders forever).
_FLUIDSYNTH_TIMEOUT = 120


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
    """

    index: int
    instrument: GMInstrument
    bpm: int
    transposition: int


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


def rendition_path(piece_id: str, index: int) -> str:
    """The FLAC file of a rendition, relative to the corpus folder: ``<split>/<piece_id>-r<index>.flac``."""
    return f"{split_of(piece_id)}/{piece_id}-r{index}.flac"


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


def find_soundfont() -> Path:
    """Find a General-MIDI soundfont: ``$LATENTMUSIC_SOUNDFONT``, else the usual system paths.

    Returns:
        The ``.sf2`` file.

    Raises:
        FileNotFoundError: If ``$LATENTMUSIC_SOUNDFONT`` names no file, or it is unset and no system
            soundfont is installed.
    """
    override = os.environ.get(SOUNDFONT_ENV)
    if override:
        if not Path(override).is_file():
            raise FileNotFoundError(f"${SOUNDFONT_ENV} is {override!r}, which is not a file")
        return Path(override)
    for path in SOUNDFONT_PATHS:
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"no General-MIDI soundfont in {', '.join(map(str, SOUNDFONT_PATHS))}; install one with "
        f"`{INSTALL_HINT}` or set {SOUNDFONT_ENV}=/path/to/font.sf2"
    )


def require_fluidsynth() -> str:
    """Find the ``fluidsynth`` program.

    Returns:
        Its path.

    Raises:
        FileNotFoundError: If it is not on ``PATH``; the message says how to install it.
    """
    path = shutil.which("fluidsynth")
    if path is None:
        raise FileNotFoundError(
            f"the corpus renderer needs FluidSynth, which is not on PATH; install it with `{INSTALL_HINT}`"
        )
    return path


def _crop(score: stream.Score, quarters: float) -> None:
    # Keep the measures that end within `quarters` (at least the first); the audio is cut at max_seconds too.
    ends = [m.offset + m.quarterLength for m in score.parts.first().getElementsByClass(stream.Measure)]
    if not ends:
        return
    cutoff = max((end for end in ends if end <= quarters), default=ends[0])
    for part in score.parts:
        part.remove([m for m in part.getElementsByClass(stream.Measure) if m.offset >= cutoff])


def _transposition_interval(key: m21_key.Key, semitones: int) -> interval.Interval:
    # Spell the interval so that the new key has the fewest accidentals (Db major, not C# major).
    start = pitch.Pitch(key.tonic.name, octave=4)
    target = pitch.Pitch(ps=start.ps + semitones)
    best = min((target, target.getEnharmonic()), key=lambda p: abs(m21_key.Key(p.name, key.mode).sharps))
    return interval.Interval(start, best)


def _expand_repeats(score: stream.Score) -> stream.Score:
    """A copy of the score with its repeats written out (music21's MIDI writer would expand them anyway)."""
    if not score[stream.Measure]:
        return copy.deepcopy(score)
    try:
        return score.expandRepeats()
    except repeat.ExpanderException:
        # Badly formed repeats (a few tunes, and several quartet files): play the measures as written.
        score = copy.deepcopy(score)
        for measure in score[stream.Measure]:
            if isinstance(measure.leftBarline, bar.Repeat):
                measure.leftBarline = None
            if isinstance(measure.rightBarline, bar.Repeat):
                measure.rightBarline = None
        score.remove(list(score[spanner.RepeatBracket, repeat.RepeatExpression]), recurse=True)
        return score


def _unshare_signatures(score: stream.Score) -> None:
    # The abc parser can put one TimeSignature object into two measures (to restore a meter), which the
    # MIDI writer rejects when it gathers them into the conductor track: give each measure its own.
    seen = set()
    for measure in score[stream.Measure]:
        for signature in list(measure.getElementsByClass((meter.TimeSignature, m21_key.KeySignature))):
            if id(signature) in seen:
                measure.replace(signature, copy.deepcopy(signature))
            seen.add(id(signature))


def arrange(score: stream.Score, rendition: Rendition, max_seconds: float) -> tuple[stream.Score, m21_key.Key]:
    """Make the score a rendition plays (a new score; ``score`` is left as it is).

    Expands repeats, drops grace notes (music21 writes them as zero-length MIDI notes whose note-off can
    precede the note-on, which leaves a sustained instrument sounding forever), removes instruments and
    tempo marks, keeps the measures that fit in ``max_seconds`` at the rendition's tempo, analyses the key,
    transposes, and puts the rendition's instrument and a metronome mark at the start of every part.

    Args:
        score: A parsed score.
        rendition: How to play it.
        max_seconds: Longest duration to keep.

    Returns:
        The arranged score and its analysed key (after transposition).
    """
    score = _expand_repeats(score)
    _unshare_signatures(score)
    graces = [note for note in score.recurse().notes if note.quarterLength == 0]
    marks = list(score[instrument.Instrument, tempo.TempoIndication])
    score.remove(graces + marks, recurse=True)
    _crop(score, max_seconds * rendition.bpm / 60)
    key = score.analyze("key")
    shift = _transposition_interval(key, rendition.transposition)
    score.transpose(shift, inPlace=True)
    for part in score.parts:
        player = instrument.Instrument(instrumentName=rendition.instrument.name)
        player.midiProgram = rendition.instrument.program
        part.insert(0, player)
        part.insert(0, tempo.MetronomeMark(number=rendition.bpm))
    return score, key.transpose(shift)


def _synthesize(midi: Path, wav: Path, sample_rate: int) -> None:
    command = [require_fluidsynth(), "-ni", "-q", "-g", str(_GAIN), "-O", "float", "-F", str(wav)]
    command += ["-r", str(sample_rate), str(find_soundfont()), str(midi)]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=_FLUIDSYNTH_TIMEOUT)
    except subprocess.TimeoutExpired as error:
        raise RuntimeError(f"fluidsynth ran over {_FLUIDSYNTH_TIMEOUT} s on {midi}: does a note never end?") from error
    if result.returncode != 0 or not wav.is_file():
        raise RuntimeError(f"fluidsynth failed (exit code {result.returncode}): {result.stderr.strip()[-1000:]}")


def _trim(audio: torch.Tensor, sample_rate: int, max_seconds: float) -> torch.Tensor:
    envelope = audio.abs().amax(dim=0)
    if envelope.max() == 0:
        raise ValueError("FluidSynth rendered silence; does the score have notes?")
    loud = torch.nonzero(envelope > envelope.max() * 10 ** (_SILENCE_DB / 20))
    end = min(int(loud[-1]) + 1 + round(_TAIL_SECONDS * sample_rate), round(max_seconds * sample_rate))
    audio = audio[..., :end].clone()
    fade = torch.linspace(1, 0, min(round(_FADE_SECONDS * sample_rate), end))
    audio[..., end - len(fade) :] *= fade
    return audio


def beat_quarters(time_signature: meter.TimeSignature | None) -> float:
    """Quarter notes per felt beat of a metre, music21's ``beatDuration``: 1 in 2/4, 3/4 and 4/4, 1.5 (a dotted
    quarter) in 6/8, 9/8 and 3/8, 2 (a half note) in 2/2, 3/2 and 4/2; 1 without a time signature.

    Args:
        time_signature: The score's first time signature, or ``None``.

    Returns:
        The beat's length in quarter notes.
    """
    return float(time_signature.beatDuration.quarterLength) if time_signature is not None else 1.0


def render_piece(
    score: stream.Score,
    rendition: Rendition,
    out_path: str | os.PathLike,
    sample_rate: int = 24000,
    channels: int = 1,
    max_seconds: float = 60.0,
    midi_path: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Render one rendition of a score to a FLAC file.

    Args:
        score: The parsed score (see :func:`load_score`); it is not modified.
        rendition: Instrument, tempo and transposition (see :func:`choose_rendition`).
        out_path: The ``.flac`` file to write (atomically; parent folders are created).
        sample_rate: Sample rate of the file; FluidSynth renders at it directly.
        channels: 1 (the mean of FluidSynth's stereo) or 2.
        max_seconds: Longer pieces are cropped (the score at a measure boundary, the audio at this time).
        midi_path: Also keep the MIDI file FluidSynth played here.

    Returns:
        The rendition's attributes: ``key``, ``tonic``, ``mode``, ``bpm``, ``meter``, ``beat_unit``, ``beat_bpm``,
        ``instrument``,
        ``program``, ``family``, ``transposition``, ``duration``, ``sample_rate``, ``channels`` (see the
        module docstring).

    Raises:
        FileNotFoundError: If FluidSynth or a soundfont is missing.
        RuntimeError: If FluidSynth fails or runs over two minutes.
    """
    out_path = Path(out_path)
    arranged, key = arrange(score, rendition, max_seconds)
    time_signature = arranged.recurse().getElementsByClass(meter.TimeSignature).first()
    with tempfile.TemporaryDirectory() as tmp:
        midi = Path(midi_path or Path(tmp) / "score.mid")
        midi.parent.mkdir(parents=True, exist_ok=True)
        arranged.write("midi", fp=midi)
        _synthesize(midi, Path(tmp) / "audio.wav", sample_rate)
        audio, _ = load_audio(Path(tmp) / "audio.wav", sample_rate=sample_rate, channels=channels)
    audio = normalize_peak(_trim(audio, sample_rate, max_seconds), peak_db=_PEAK_DB)
    partial = out_path.with_name(f"{out_path.stem}.partial.flac")
    save_audio(partial, audio, sample_rate)
    os.replace(partial, out_path)
    tonic = key.tonic.name.replace("-", "b")
    beat_unit = beat_quarters(time_signature)
    return {
        "key": f"{tonic} {key.mode}",
        "tonic": tonic,
        "mode": key.mode,
        "bpm": rendition.bpm,
        "meter": time_signature.ratioString if time_signature else None,
        "beat_unit": beat_unit,
        "beat_bpm": round(rendition.bpm / beat_unit, 2),
        "instrument": rendition.instrument.name,
        "program": rendition.instrument.program,
        "family": rendition.instrument.family,
        "transposition": rendition.transposition,
        "duration": round(audio.shape[-1] / sample_rate, 4),
        "sample_rate": sample_rate,
        "channels": channels,
    }


@dataclass(frozen=True)
class _Job:
    piece: Piece
    indices: tuple[int, ...]
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
        for index in job.indices:
            rendition = choose_rendition(piece.piece_id, index, job.settings["seed"], collection.bpm)
            path = rendition_path(piece.piece_id, index)
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
            record |= {**head, "rendition": index, **attributes}
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
    if renditions_per_piece < 1 or workers < 1 or max_seconds <= 0 or channels not in (1, 2):
        raise ValueError(
            "need renditions_per_piece >= 1, workers >= 1, max_seconds > 0 and channels 1 or 2, got "
            f"{renditions_per_piece}, {workers}, {max_seconds} and {channels}"
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
        missing = [i for i in range(renditions_per_piece) if rendition_path(piece.piece_id, i) not in finished]
        if missing:
            jobs.append(_Job(piece, tuple(missing), root, settings, keep_midi))
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


def add_render_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the renderer's options (shared by ``latentmusic render-corpus`` and ``recipes/data/render_corpus.py``).

    Args:
        parser: The parser to extend.
    """
    parser.add_argument("--out", default="data/corpus", help="corpus folder (default: data/corpus)")
    parser.add_argument("--max-pieces", type=int, default=None, help="render only the first N pieces (mixed)")
    parser.add_argument("--renditions-per-piece", type=int, default=1, help="instrument/tempo/key variants")
    parser.add_argument("--collections", nargs="+", choices=COLLECTION_NAMES, default=None, help="default: all")
    parser.add_argument("--sample-rate", type=int, default=24000, help="Hz (default: 24000)")
    parser.add_argument("--channels", type=int, choices=(1, 2), default=1, help="1 (mono) or 2 (stereo)")
    parser.add_argument("--max-seconds", type=float, default=60.0, help="crop longer pieces (default: 60)")
    parser.add_argument("--seed", type=int, default=0, help="varies the renditions")
    parser.add_argument("--workers", type=int, default=1, help="parallel rendering processes")


def render_corpus_from_args(args: argparse.Namespace) -> Path:
    """Run :func:`render_corpus` with parsed :func:`add_render_arguments` options and print a summary.

    Args:
        args: The parsed options.

    Returns:
        The path of ``metadata.jsonl``.
    """
    metadata = render_corpus(
        args.out,
        max_pieces=args.max_pieces,
        renditions_per_piece=args.renditions_per_piece,
        collections=args.collections,
        sample_rate=args.sample_rate,
        channels=args.channels,
        max_seconds=args.max_seconds,
        seed=args.seed,
        workers=args.workers,
    )
    records = [json.loads(line) for line in metadata.read_text(encoding="utf-8").splitlines()]
    hours = {split: sum(r["duration"] for r in records if r["split"] == split) / 3600 for split in SPLITS}
    print(f"{metadata}: {len(records)} renditions, " + ", ".join(f"{s} {h:.2f} h" for s, h in hours.items()))
    for record in records[:3]:
        print(f"  {record['path']}: {record['captions'][0]}")
    return metadata
