"""`benchmarks/demo_ablation.py`: the caption gap it reads from a training run's `losses.jsonl`."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "demo_ablation.py"


def load_script():
    spec = importlib.util.spec_from_file_location("bench_demo_ablation", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_caption_gap_is_the_relative_shuffled_minus_right_loss_over_the_last_evaluations(tmp_path):
    bench = load_script()
    rows = [
        {"step": 250, "loss": 1.0, "valid_loss": 1.0, "valid_loss_shuffled_captions": 1.5},
        {"step": 275, "loss": 0.9},
        {"step": 500, "loss": 0.8, "valid_loss": 0.8, "valid_loss_shuffled_captions": 0.84},
        {"step": 750, "loss": 0.7, "valid_loss": 0.5, "valid_loss_shuffled_captions": 0.6},
    ]
    (tmp_path / "losses.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    (tmp_path / "wall_seconds.txt").write_text("330")
    gap = bench.caption_gap(tmp_path, last=2)
    assert gap["steps"] == 750 and gap["valid_loss"] == 0.5 and gap["valid_loss_shuffled"] == 0.6
    assert gap["caption_gap"] == pytest.approx((0.05 + 0.2) / 2)  # steps 500 and 750 only
    assert gap["train_minutes"] == 5.5
    assert bench.caption_gap(tmp_path, last=3)["caption_gap"] == pytest.approx((0.5 + 0.05 + 0.2) / 3)

    (tmp_path / "losses.jsonl").write_text(json.dumps(rows[1]) + "\n")
    with pytest.raises(SystemExit, match="no evaluation yet"):
        bench.caption_gap(tmp_path, last=2)
