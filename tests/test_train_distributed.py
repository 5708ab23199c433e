"""The shared training loop on several processes and with gradient accumulation, on a folder of "your own" audio.

`accelerate launch --cpu --num_processes 2` runs the diffusion recipe for real (two processes, gloo): each rank
trains on its own half of every global batch, and the run ends with the weights of one process trained on the
doubled batch, as does one process accumulating two micro-batches; logs, checkpoints and the pipeline are written
once. A run stopped and resumed with accumulation continues exactly.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file

from latentmusic import LatentMusicPipeline
from latentmusic.training.config import load_config
from latentmusic.training.diffusion import DiffusionTrainingConfig, train_diffusion

from .conftest import tiny_vae

REPO = Path(__file__).resolve().parents[1]
TINY = "recipes/configs/diffusion/tiny.yaml"
STEPS = 4


def write_own_folder(root: Path, count: int = 18) -> Path:
    """Sine tones as a user's folder would hold them: mixed sample rates and channel counts, no metadata file,
    a `.txt` caption beside each file."""
    rng = np.random.default_rng(0)
    for i in range(count):
        rate, channels = (8000, 1) if i % 3 == 0 else (16000, 2) if i % 3 == 1 else (11025, 1)
        seconds = 0.6 + 0.1 * (i % 4)
        t = np.arange(int(rate * seconds)) / rate
        tone = 0.3 * np.sin(2 * np.pi * (110 + 40 * i) * t) + 0.01 * rng.standard_normal(t.shape)
        audio = np.stack([tone] * channels, axis=1).astype(np.float32)
        folder = root / ("low" if i % 2 else "high")
        folder.mkdir(parents=True, exist_ok=True)
        sf.write(folder / f"tone {i}.wav", audio, rate)
        pitch = "low" if i < count // 2 else "high"
        (folder / f"tone {i}.txt").write_text(f"a {pitch} sine tone number {i}\nsine {i}\n")
    return root


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("distributed")
    torch.manual_seed(0)
    tiny_vae().eval().save_pretrained(root / "vae")
    return root, write_own_folder(root / "music")


def overrides(root: Path, data: Path, output: Path, batch_size: int, *extra: str) -> list[str]:
    return [
        f"vae={root / 'vae'}",
        f"data.root={data}",
        f"data.latent_cache={root / 'latents'}",
        "data.segment_seconds=0.5",
        f"data.batch_size={batch_size}",
        f"run.output_dir={output}",
        f"run.max_steps={STEPS}",
        "run.log_every=1",
        "run.checkpoint_every=2",
        "run.eval_every=1000",
        "run.sample_every=0",
        "run.report_to=none",
        "run.progress_bar=false",
        "run.record_examples=true",
        # a frozen text encoder (in eval mode) and a dropout-free U-Net: every random draw is then per example,
        # so how the global batch is split cannot change the numbers
        "text_encoder.train=false",
        "masking.continuation=0.3",
        "optim.warmup_steps=2",
        "optim.ema_decay=0.9",
        *extra,
    ]


def train_here(root, data, output, batch_size, *extra):
    return train_diffusion(
        load_config(DiffusionTrainingConfig, TINY, overrides(root, data, output, batch_size, *extra))
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_two_processes(root, data, output, batch_size):
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(free_port()), "recipes/train_diffusion.py", "--config", TINY,
               *overrides(root, data, output, batch_size)]  # fmt: skip
    # torchrun with gloo on CPUs (`accelerate launch --cpu` starts one process unless MPI is set up)
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "ACCELERATE_USE_CPU": "true",
    }
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    (output.parent / f"{output.name}-launch.log").write_text(done.stdout + done.stderr)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]


def examples(output: Path, process: int) -> list[dict]:
    return [json.loads(line) for line in (output / "examples" / f"process-{process}.jsonl").read_text().splitlines()]


def losses(output: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (output / "losses.jsonl").read_text().splitlines()]
    return {row["step"]: row["loss"] for row in rows if "loss" in row}


def live_weights(output: Path, step: int) -> dict[str, torch.Tensor]:
    return load_file(output / "checkpoints" / f"checkpoint-{step:08d}" / "model.safetensors")


def assert_close_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.slow
def test_two_processes_split_each_batch_and_match_one_process_with_the_doubled_batch(setup, tmp_path):
    root, data = setup
    single = tmp_path / "single"  # 1 process, batch 4
    train_here(root, data, single, 4)
    launched = tmp_path / "two"  # 2 processes, batch 2 each
    launch_two_processes(root, data, launched, 2)

    # each rank trained on its own half of the global batch, which is the single run's batch
    rank0, rank1, reference = examples(launched, 0), examples(launched, 1), examples(single, 0)
    assert [row["step"] for row in rank0] == [row["step"] for row in rank1] == list(range(STEPS))
    for a, b, whole in zip(rank0, rank1, reference):
        assert not set(a["paths"]) & set(b["paths"]), (a, b)
        assert a["paths"] + b["paths"] == whole["paths"]
    seen = {path for row in rank0 + rank1 for path in row["paths"]}
    assert len(seen) > 8  # different clips over the steps, not one batch repeated

    # the same losses (averaged over both ranks) and weights, within float tolerance
    one, two = losses(single), losses(launched)
    assert sorted(two) == list(range(1, STEPS + 1))  # one line per step: only the main process logs
    assert two == pytest.approx(one, rel=1e-4)
    assert_close_weights(live_weights(single, STEPS), live_weights(launched, STEPS))
    # training moved the weights far more than that tolerance, so the comparison can fail
    moved = max((x - y).abs().max().item() for x, y in zip(live_weights(single, 2).values(),
                                                           live_weights(single, STEPS).values()))  # fmt: skip
    assert moved > 1e-3, moved

    # written once and complete: both ranks' RNG states in the checkpoint, a loadable pipeline
    checkpoint = launched / "checkpoints" / f"checkpoint-{STEPS:08d}"
    assert {p.name for p in checkpoint.glob("random_states_*.pkl")} == {"random_states_0.pkl", "random_states_1.pkl"}
    assert (checkpoint / "trainer_state.json").is_file() and not list(launched.glob("checkpoints/*.tmp"))
    a, b = (
        LatentMusicPipeline.from_pretrained(single / "pipeline"),
        LatentMusicPipeline.from_pretrained(launched / "pipeline"),
    )
    assert_close_weights(a.unet.state_dict(), b.unet.state_dict())


@pytest.mark.slow
def test_accumulated_micro_batches_equal_the_doubled_batch_and_resume_exactly(setup, tmp_path):
    root, data = setup
    doubled = tmp_path / "doubled"
    train_here(root, data, doubled, 4)
    accumulated = tmp_path / "accumulated"  # batch 2, two micro-batches per step
    train_here(root, data, accumulated, 2, "run.gradient_accumulation_steps=2")
    assert [row["paths"] for row in examples(doubled, 0)] == [
        a["paths"] + b["paths"] for a, b in zip(examples(accumulated, 0)[::2], examples(accumulated, 0)[1::2])
    ]
    assert losses(accumulated) == pytest.approx(losses(doubled), rel=1e-4)
    assert_close_weights(live_weights(doubled, STEPS), live_weights(accumulated, STEPS))

    # stopped after step 2 and started again: the same losses and weights, bit for bit
    stopped = tmp_path / "stopped"
    train_here(root, data, stopped, 2, "run.gradient_accumulation_steps=2", "run.max_steps=2")
    train_here(root, data, stopped, 2, "run.gradient_accumulation_steps=2")
    assert losses(stopped) == losses(accumulated)
    for (name, x), y in zip(live_weights(accumulated, STEPS).items(), live_weights(stopped, STEPS).values()):
        assert torch.equal(x, y), name
