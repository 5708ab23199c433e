"""`benchmarks/schedulers.py` end to end on tiny random components and a two-clip fake corpus (a few seconds)."""

from __future__ import annotations

import json
from argparse import Namespace
from pathlib import Path

import numpy as np
import torch

from latentmusic.audio import save_audio
from latentmusic.loaders import make_lora_config

from .conftest import load_benchmark, make_tiny_pipe


def load_script():
    return load_benchmark("schedulers")


def fake_corpus(root: Path) -> Path:
    """Two test clips (clicks at 90 and 120 BPM over a tone) with their captions and BPM."""
    rate, seconds = 8000, 3.0
    records = []
    for i, bpm in enumerate((90, 120)):
        t = np.arange(int(rate * seconds)) / rate
        audio = 0.1 * np.sin(2 * np.pi * 220 * (i + 1) * t)
        for beat in np.arange(0, seconds, 60 / bpm):
            start = int(beat * rate)
            audio[start : start + 200] += 0.8 * np.hanning(200)
        save_audio(root / "test" / f"clip{i}.wav", audio[None].astype(np.float32), rate)
        caption = f"a tune at {bpm} BPM"
        records.append({"path": f"test/clip{i}.wav", "split": "test", "captions": [caption], "bpm": bpm})
    (root / "metadata.jsonl").write_text("".join(json.dumps(record) + "\n" for record in records))
    return root


def test_scheduler_benchmark_scores_each_scheduler_and_plots(tmp_path):
    bench = load_script()
    corpus = fake_corpus(tmp_path / "corpus")
    pairs = bench.prompt_set(corpus, 3)
    assert [record["bpm"] for _, record in pairs] == [90, 120, 90]

    reference = bench.reference_statistics(corpus, tmp_path / "work")
    assert list((tmp_path / "work").glob("reference-test-*.npz"))
    assert bench.reference_statistics(corpus, tmp_path / "work").count == reference.count  # from the cache

    args = Namespace(data=str(corpus), schedulers=["ddim", "heun"], steps=[2, 3], seconds=1.0, guidance=3.0, seed=0)
    rows = bench.run_benchmark(make_tiny_pipe(), args, pairs, reference)
    assert [(row["scheduler"], row["steps"]) for row in rows] == [
        ("test audio", 0),
        ("ddim", 2),
        ("ddim", 3),
        ("heun", 2),
        ("heun", 3),
    ]
    assert all(np.isfinite(row["fd"]) and row["fd"] >= 0 for row in rows)
    assert [row["nfe"] for row in rows[1:3]] == [2, 3]
    assert rows[3]["nfe"] > 2  # Heun evaluates the U-Net twice per step (but once on the last)

    best = bench.best_per_budget(rows)
    assert [row["steps"] for row in best] == [2, 3]
    png = bench.plot(rows, tmp_path / "plot.png", "tiny")
    assert png.stat().st_size > 0

    # --no-cfg-steps: the same schedulers without guidance, each against its own largest step count with guidance
    args.no_cfg_steps = [2]
    extra = bench.few_step_rows(make_tiny_pipe(), args, pairs, reference, rows)
    assert [(row["scheduler"], row["steps"], row["guidance"]) for row in extra] == [("ddim", 2, 1.0), ("heun", 2, 1.0)]
    assert extra[0]["nfe"] == 2
    assert extra[0]["fd_vs_most_steps"] == extra[0]["fd"] / rows[2]["fd"]
    assert extra[0]["fd"] != rows[1]["fd"]  # guidance changes the clips
    assert bench.best_per_budget(rows + extra) == best

    # --distilled-lora: the unguided rows with an adapter in the U-Net, named for it, against the same guided rows
    adapted_pipe = make_tiny_pipe()
    torch.manual_seed(1)
    adapted_pipe.unet.add_adapter(make_lora_config(adapted_pipe.unet, rank=2, init_lora_weights=False))
    adapted = bench.few_step_rows(adapted_pipe, args, pairs, reference, rows, label=" + distilled LoRA")
    assert [row["scheduler"] for row in adapted] == ["ddim + distilled LoRA", "heun + distilled LoRA"]
    assert adapted[0]["compared_with"] == extra[0]["compared_with"]
    assert adapted[0]["fd"] != extra[0]["fd"]  # the adapter changes the clips
