"""Caption phrasings for a rendered piece, built from its ground-truth attributes.

Each record gets the same five templates, so every caption is true of its audio and the phrasings differ
in order and wording only (the dataset samples one per item). Every phrasing names the instrument and
the tempo (in BPM or as a word from :func:`tempo_word`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Upper BPM bounds (exclusive) of the tempo words.
_TEMPO_WORDS = ((80, "slow"), (120, "moderate"), (float("inf"), "fast"))
# How a phrase like "chorale on strings" names an instrument; others are named as they are.
_SHORT_NAMES = {
    "string ensemble": "strings",
    "church organ": "organ",
    "nylon-string guitar": "guitar",
    "choir": "voices",
}
_FAMILY_WORDS = {
    "keyboard": "keyboard",
    "strings": "string",
    "woodwind": "woodwind",
    "brass": "brass",
    "plucked": "plucked-string",
    "voice": "vocal",
    "mallet": "mallet",
}


def tempo_word(bpm: float) -> str:
    """Describe a tempo in words.

    Args:
        bpm: Quarter notes per minute.

    Returns:
        ``"slow"`` (below 80), ``"moderate"`` (80 to 119) or ``"fast"`` (120 and above).
    """
    return next(word for bound, word in _TEMPO_WORDS if bpm < bound)


def short_instrument_name(name: str) -> str:
    """The instrument name used in short phrasings (``"string ensemble"`` becomes ``"strings"``)."""
    return _SHORT_NAMES.get(name, name)


def _a(phrase: str) -> str:
    return f"{'an' if phrase[0].lower() in 'aeiou' else 'a'} {phrase}"


def make_captions(attributes: Mapping[str, Any]) -> list[str]:
    """Phrase captions for one rendition.

    Args:
        attributes: A metadata record (see :mod:`latentmusic.data.corpus`) with at least ``composer``,
            ``genre``, ``title``, ``key``, ``bpm``, ``meter`` (may be ``None``), ``instrument`` and
            ``family``.

    Returns:
        Five captions, e.g. ``"a Bach chorale in G minor played by a string ensemble at 84 BPM"`` and
        ``"slow G minor chorale on strings"``.
    """
    composer, genre, key = attributes["composer"], attributes["genre"], attributes["key"]
    bpm, meter, instrument = attributes["bpm"], attributes["meter"], attributes["instrument"]
    traditional = composer == "traditional"
    # "a Bach chorale", "a traditional reel"; "a chorale by J. S. Bach", "a traditional reel".
    work = f"{'traditional' if traditional else composer.split()[-1]} {genre}"
    work_by = f"traditional {genre}" if traditional else f"{genre} by {composer}"
    source = "traditional" if traditional else f"by {composer}"
    meter_part = f", {meter}" if meter else ""
    meter_time = f", {meter} time" if meter else ""
    speed = tempo_word(bpm)
    return [
        f"{_a(work)} in {key} played by {_a(instrument)} at {bpm} BPM",
        f"{instrument} playing {_a(work_by)}, {key}, {bpm} BPM{meter_part}",
        f"{speed} {key} {genre} on {short_instrument_name(instrument)}",
        f"{attributes['title']}, {source}, arranged for {instrument}: {speed} tempo{meter_time}, {key}",
        f"{_FAMILY_WORDS[attributes['family']]} music: {_a(work)} on {instrument}, {bpm} beats per minute, in {key}",
    ]
