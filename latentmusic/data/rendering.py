"""Playing one rendition of a score: music21 arranges it, FluidSynth renders it, the audio is trimmed.

music21 expands the repeats, drops grace notes, crops the score to ``max_seconds``, transposes it and writes the
rendition's instrument and a metronome mark into every part (:func:`arrange`); FluidSynth renders the MIDI with a
General-MIDI soundfont (:func:`find_soundfont`), and the audio is trimmed after its last sound, peak-normalised
and written as FLAC (:func:`render_piece`). Which pieces and renditions make the corpus, and the loop that renders
them all, are in :mod:`latentmusic.data.corpus`.
"""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from music21 import bar, instrument, interval, meter, pitch, repeat, spanner, stream, tempo
from music21 import key as m21_key

from ..audio import load_audio, normalize_peak, save_audio

if TYPE_CHECKING:
    from .corpus import Rendition

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
