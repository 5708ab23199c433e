"""`benchmarks/prompt_sweep.py`: its prompts are the corpus's phrasings, and its slope reads tempo following."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "prompt_sweep.py"


def load_script():
    spec = importlib.util.spec_from_file_location("bench_prompt_sweep", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_prompts_change_only_the_swept_attribute():
    bench = load_script()
    digits = bench.prompt("flute", 96, "D major", bench.TEMPLATES["digits"])
    assert digits == "a traditional reel in D major played by a flute at 96 BPM"
    assert bench.prompt("flute", 144, "D major", bench.TEMPLATES["digits"]) == digits.replace("96", "144")
    assert bench.prompt("flute", 72, "D major", bench.TEMPLATES["word"]) == "slow D major reel on flute"
    assert bench.prompt("flute", 144, "E major", bench.TEMPLATES["word"]) == "fast E major reel on flute"


def test_slope_is_the_exponent_within_groups_whatever_their_level():
    bench = load_script()
    bpm = np.array([72, 96, 120, 144])
    # onset rate ∝ bpm^0.7 at a different level per group: the slope is 0.7, not the pooled fit across levels
    groups = {g: list(zip(bpm, level * bpm**0.7)) for g, level in enumerate((0.01, 0.5, 3.0))}
    assert bench.within_group_slope(groups) == pytest.approx(0.7)
    ignored = {g: [(b, level) for b in bpm] for g, level in enumerate((1.0, 2.0))}
    assert bench.within_group_slope(ignored) == pytest.approx(0.0)
    assert bench.within_group_slope({0: [(90, 1.0), (90, 2.0)]}) is None  # one tempo: no slope
