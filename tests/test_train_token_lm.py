"""The token-LM recipe end to end on rendered corpus audio: it tokenises once, learns, and ships a pipeline."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from latentmusic import AudioAutoencoder, TokenMusicPipeline
from latentmusic.training.config import load_config
from latentmusic.training.token_lm import TokenLMTrainingConfig, train_token_lm


@pytest.fixture(scope="module")
def codec_dir(tmp_path_factory):
    """A frozen random RVQ codec of the tiny-rvq config: the LM recipe only needs codes that carry the audio's
    content, which a random encoder's nearest codebook entries do."""
    torch.manual_seed(0)
    model = OmegaConf.to_container(OmegaConf.load("recipes/configs/autoencoder/tiny-rvq.yaml").model)
    folder = tmp_path_factory.mktemp("codec")
    AudioAutoencoder(**model).eval().save_pretrained(folder)
    return folder


def overrides(codec_dir, corpus_dir, output, max_steps: int) -> list[str]:
    return [
        f"codec={codec_dir}",
        f"data.root={corpus_dir}",
        "data.segment_seconds=1.0",
        f"run.output_dir={output}",
        f"run.max_steps={max_steps}",
        "run.eval_every=10",
        "run.sample_every=0",
        "run.checkpoint_every=100",
        "run.report_to=none",
        "run.progress_bar=false",
        "valid_batches=1",
    ]


@pytest.mark.slow
def test_tiny_token_lm_learns_and_ships_a_pipeline(corpus_dir, codec_dir, tmp_path):
    output = tmp_path / "run"
    config = load_config(
        TokenLMTrainingConfig, "recipes/configs/token_lm/tiny.yaml", overrides(codec_dir, corpus_dir, output, 200)
    )
    folder = train_token_lm(config)

    rows = [json.loads(line) for line in (output / "losses.jsonl").read_text().splitlines()]
    evaluations = [row for row in rows if "valid_loss" in row]
    assert [row["step"] for row in evaluations] == list(range(10, 201, 10))
    assert evaluations[-1]["valid_loss"] < 0.94 * evaluations[0]["valid_loss"], evaluations
    assert evaluations[-1]["valid_loss"] < np.log(64), evaluations  # better than uniform over the codebook

    cache = output / "codes" / "latents.jsonl"
    assert cache.is_file()
    stamp = cache.stat().st_mtime_ns
    files = sorted(p.stat().st_mtime_ns for p in (output / "codes").rglob("*.safetensors"))
    # a longer run resumes from the step-200 checkpoint and reuses the code cache (nothing re-encoded)
    start = time.perf_counter()
    train_token_lm(
        load_config(
            TokenLMTrainingConfig, "recipes/configs/token_lm/tiny.yaml", overrides(codec_dir, corpus_dir, output, 210)
        )
    )
    assert time.perf_counter() - start < 30
    assert sorted(p.stat().st_mtime_ns for p in (output / "codes").rglob("*.safetensors")) == files
    assert cache.stat().st_mtime_ns >= stamp
    rows = [json.loads(line) for line in (output / "losses.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 210

    pipe = TokenMusicPipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    audio = pipe(
        "a Bach chorale played by a string ensemble",
        audio_length_in_s=0.5,
        top_k=32,
        generator=torch.Generator().manual_seed(0),
    ).audios
    assert audio.shape == (1, 1, 8000) and np.isfinite(audio).all() and np.abs(audio).max() > 0
