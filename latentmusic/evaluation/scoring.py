"""Scoring an estimated key or tempo against its target: pitch names, key relations, metrical-level tempo errors.

:func:`~latentmusic.evaluation.attributes.attribute_accuracy` compares estimates with ground truth such as the
corpus's ``metadata.jsonl`` by these rules: tempo is right within a relative tolerance (8 % by default);
*metrical-level errors* (×2, ×0.5, ×3, ×1/3, ×1.5 and ×2/3: the estimate follows another level of the metre) are
reported separately, with the Spearman correlation of estimates and targets; when a target also gives the felt beat
(``beat_bpm``, as the corpus's metadata does), the estimate is classified against it too; keys are compared by pitch
class (``"Db"`` equals ``"C#"``) and the relation of a wrong key to the right one is named (a fifth away, relative,
parallel), with the MIREX weighted score (1 same, 0.5 fifth above, 0.3 relative, 0.2 parallel) of
``mir_eval.key.weighted_score``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

PITCH_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
MODES = ("major", "minor")
# Metrical-level confusions, in the order they are tried: the estimate follows another level of the metre than the
# target's beat (twice or half as fast, the bar of a triple metre or its subdivision) or the beat of a compound
# metre against its eighth-note pulse (x1.5, x2/3: a 6/8 jig's dotted-quarter beat against the quarter note).
TEMPO_ERRORS = {"x2": 2.0, "x0.5": 0.5, "x3": 3.0, "x1/3": 1.0 / 3.0, "x1.5": 1.5, "x2/3": 2.0 / 3.0}
KEY_RELATIONS = ("same", "fifth_above", "fifth_below", "relative", "parallel", "other")
_ACCIDENTALS = {"#": 1, "♯": 1, "b": -1, "-": -1, "♭": -1}
_NATURALS = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}


def pitch_class(name: str) -> int:
    """Pitch class (0 = C) of a pitch name such as ``"C#"``, ``"Db"``, ``"B-"`` (music21's flat) or ``"E♭"``.

    Args:
        name: A letter A–G followed by any number of accidentals.

    Returns:
        An integer in 0–11.

    Raises:
        ValueError: If the name is not a pitch name.
    """
    name = name.strip()
    if not name or name[0].upper() not in _NATURALS or any(c not in _ACCIDENTALS for c in name[1:]):
        raise ValueError(f"not a pitch name: {name!r}; write e.g. 'C', 'F#', 'Bb' or 'B-'")
    return (_NATURALS[name[0].upper()] + sum(_ACCIDENTALS[c] for c in name[1:])) % 12


def parse_key(target: str | Mapping[str, Any]) -> tuple[int, str]:
    """Read a key as ``(pitch class, mode)``.

    Args:
        target: A key such as ``"F# major"`` or ``"a minor"``, or a record with ``tonic`` and ``mode``
            (or a ``key`` string), like a line of the corpus's ``metadata.jsonl``.

    Returns:
        The tonic's pitch class (0 = C) and ``"major"`` or ``"minor"``.

    Raises:
        ValueError: If there is no key or it cannot be read.
    """
    if isinstance(target, Mapping):
        if target.get("tonic") is not None and target.get("mode") is not None:
            target = f"{target['tonic']} {target['mode']}"
        elif target.get("key") is not None:
            target = str(target["key"])
        else:
            raise ValueError(f"no key in {dict(target)}; give 'key' (e.g. 'A minor') or 'tonic' and 'mode'")
    match = re.fullmatch(r"\s*(\S+)\s+(major|minor|maj|min)\s*", target, flags=re.IGNORECASE)
    if match is None:
        raise ValueError(f"cannot read the key {target!r}; write e.g. 'F# major' or 'Bb minor'")
    mode = "major" if match.group(2).lower().startswith("maj") else "minor"
    return pitch_class(match.group(1)), mode


def key_relation(target: tuple[int, str], estimate: tuple[int, str]) -> str:
    """How an estimated key relates to the target key.

    Args:
        target: ``(pitch class, mode)`` of the right key, e.g. from :func:`parse_key`.
        estimate: ``(pitch class, mode)`` of the estimated key.

    Returns:
        One of :data:`KEY_RELATIONS`: ``"same"``; ``"fifth_above"`` / ``"fifth_below"`` (same mode, tonic a
        perfect fifth up or down); ``"relative"`` (C major and A minor); ``"parallel"`` (C major and
        C minor); ``"other"``.
    """
    (target_pc, target_mode), (estimate_pc, estimate_mode) = target, estimate
    interval = (estimate_pc - target_pc) % 12
    if target_mode == estimate_mode:
        return {0: "same", 7: "fifth_above", 5: "fifth_below"}.get(interval, "other")
    if interval == 0:
        return "parallel"
    relative_interval = 9 if target_mode == "major" else 3
    return "relative" if interval == relative_interval else "other"


def tempo_match(estimate: float, target: float, tolerance: float = 0.08) -> str:
    """Classify a tempo estimate against the target tempo.

    Args:
        estimate: Estimated beats per minute.
        target: Right beats per minute.
        tolerance: Relative tolerance, e.g. 0.08 for ±8 %.

    Returns:
        ``"correct"`` if within the tolerance of the target; else the first of :data:`TEMPO_ERRORS`
        (``"x2"``, ``"x0.5"``, ``"x3"``, ``"x1/3"``, ``"x1.5"``, ``"x2/3"``) whose multiple of the target it is
        within the tolerance of; else ``"wrong"``.
    """
    if target <= 0:
        raise ValueError(f"target tempo must be positive, got {target}")
    ratio = estimate / target
    for label, factor in (("correct", 1.0), *TEMPO_ERRORS.items()):
        if abs(ratio / factor - 1.0) <= tolerance:
            return label
    return "wrong"


def level_corrected_tempo(estimate: float, target: float, tolerance: float = 0.08) -> float:
    """The estimate brought to the target's metrical level: divided by the factor of its metrical-level error.

    Args:
        estimate: Estimated beats per minute.
        target: Right beats per minute.
        tolerance: Relative tolerance, as in :func:`tempo_match`.

    Returns:
        ``estimate / 2`` for an ``"x2"`` error, ``estimate * 3`` for ``"x1/3"``, and so on; the estimate itself
        when it is right or matches no metrical level (``"wrong"``).
    """
    match = tempo_match(estimate, target, tolerance)
    return estimate / TEMPO_ERRORS.get(match, 1.0)


def mean_rate(values: Sequence[float]) -> float | None:
    """The mean of `values` (booleans give the rate of `True`), or `None` for no values.

    Args:
        values: Numbers or booleans.

    Returns:
        The mean, or `None`.
    """
    return float(np.mean(values)) if values else None


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman rank correlation of two sequences (``scipy.stats.spearmanr``).

    Args:
        x: Values, e.g. the target tempi.
        y: Values paired with ``x``, e.g. the estimated tempi.

    Returns:
        The correlation in [-1, 1]; ``None`` for fewer than three pairs or a constant sequence.
    """
    from scipy.stats import spearmanr

    if len(x) != len(y):
        raise ValueError(f"spearman needs paired values, got {len(x)} and {len(y)}")
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    return float(spearmanr(x, y).statistic)


def _level_spearman(rows: Sequence[Mapping[str, Any]]) -> float | None:
    pairs = [(row["target_bpm"], row["level_bpm"]) for row in rows if row.get("level_bpm") is not None]
    return spearman([t for t, _ in pairs], [e for _, e in pairs]) if pairs else None


def tempo_summary(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Tempo accuracy of clip rows such as :func:`attribute_accuracy`'s ``clips``.

    Args:
        rows: Records with ``tempo_match``, ``target_bpm`` and ``bpm`` (``None`` where no tempo was asked for),
            and optionally ``beat_match``.

    Returns:
        ``n_tempo``; ``tempo_accuracy`` (the exact level); ``tempo_octave_error_rate`` (any metrical-level error)
        and the rate of each in ``tempo_octave_errors``; ``tempo_metrical_accuracy`` (right at the target's
        level or another level of the metre); ``tempo_wrong_rate``; ``tempo_spearman`` (estimates against
        targets) and ``tempo_level_spearman`` (the same after :func:`level_corrected_tempo`, i.e. whether the
        tempo follows the target within its metrical level; ``level_bpm`` of the rows); ``n_beat`` and
        ``beat_accuracy`` (against the felt beat, for rows that give one). Rates are ``None`` without rows.
    """
    rows = [row for row in rows if row.get("tempo_match") is not None]
    tempos = [row["tempo_match"] for row in rows]
    beats = [row["beat_match"] for row in rows if row.get("beat_match") is not None]
    return {
        "n_tempo": len(tempos),
        "tempo_accuracy": mean_rate([m == "correct" for m in tempos]),
        "tempo_octave_error_rate": mean_rate([m in TEMPO_ERRORS for m in tempos]),
        "tempo_octave_errors": {label: mean_rate([m == label for m in tempos]) for label in TEMPO_ERRORS},
        "tempo_metrical_accuracy": mean_rate([m != "wrong" for m in tempos]),
        "tempo_wrong_rate": mean_rate([m == "wrong" for m in tempos]),
        "tempo_spearman": spearman([row["target_bpm"] for row in rows], [row["bpm"] for row in rows]),
        "tempo_level_spearman": _level_spearman(rows),
        "n_beat": len(beats),
        "beat_accuracy": mean_rate([m == "correct" for m in beats]),
    }


def shuffled_target_rates(rows: Sequence[Mapping[str, Any]], tolerance: float = 0.08) -> dict[str, float | None]:
    """Chance levels of the tempo and key accuracies for these clips: the same estimates scored against the
    targets of the other clips (every cyclic shift of the targets, averaged).

    A model that ignores the prompt scores these rates, which depend on how spread the targets are and how
    forgiving the metric is (any metrical level of a tempo is a wide net), so compare an accuracy with its own
    chance level rather than with 1 / the number of classes.

    Args:
        rows: Clip rows such as :func:`~latentmusic.evaluation.attributes.attribute_accuracy`'s ``clips``
            (``bpm``, ``target_bpm``, ``key``, ``target_key``; ``None`` where not estimated).
        tolerance: Relative tempo tolerance, as in :func:`tempo_match`.

    Returns:
        ``tempo_accuracy_chance``, ``tempo_metrical_accuracy_chance`` and ``key_accuracy_chance`` (``None`` with
        fewer than two clips that have the attribute).
    """
    tempos = [(row["bpm"], row["target_bpm"]) for row in rows if row.get("bpm") is not None]
    keys = [(row["key"], row["target_key"]) for row in rows if row.get("key") is not None]

    def shifted(pairs: list[tuple[Any, Any]], hit: Any) -> float | None:
        if len(pairs) < 2:
            return None
        n = len(pairs)
        scores = [hit(pairs[i][0], pairs[(i + shift) % n][1]) for shift in range(1, n) for i in range(n)]
        return float(np.mean(scores))

    return {
        "tempo_accuracy_chance": shifted(tempos, lambda e, t: tempo_match(e, t, tolerance) == "correct"),
        "tempo_metrical_accuracy_chance": shifted(tempos, lambda e, t: tempo_match(e, t, tolerance) != "wrong"),
        "key_accuracy_chance": shifted(keys, lambda e, t: parse_key(e) == parse_key(t)),
    }
