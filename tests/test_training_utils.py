"""Pieces every recipe shares: configs, checkpoints, objectives, the caption tokenizer, resumable data order."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pytest
import torch
from accelerate import Accelerator
from transformers import AutoTokenizer

from latentmusic.training.checkpoint import list_checkpoints, load_checkpoint, resolve_resume, save_checkpoint
from latentmusic.training.config import load_config, run_recipe
from latentmusic.training.objectives import OBJECTIVES, make_training_scheduler, noise_batch, weighted_mse
from latentmusic.training.runner import StepBatches
from latentmusic.training.tokenizer import build_caption_tokenizer


@dataclass
class Optim:
    lr: float = 1e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.99])


@dataclass
class Schema:
    name: str = "run"
    steps: int = 10
    optim: Optim = field(default_factory=Optim)


# -- config -----------------------------------------------------------------------------------------------


def test_config_layers_defaults_file_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("steps: 20\noptim:\n  lr: 0.01\n")
    config = load_config(Schema, path, ["optim.lr=0.5", "name=x"])
    assert (config.name, config.steps, config.optim.lr, list(config.optim.betas)) == ("x", 20, 0.5, [0.9, 0.99])


def test_unknown_config_key_names_the_key_and_the_valid_ones(tmp_path):
    with pytest.raises(ValueError, match=r"unknown config key 'optim.lrr'.*Valid keys here: betas, lr"):
        load_config(Schema, overrides=["optim.lrr=1"])
    path = tmp_path / "c.yaml"
    path.write_text("stepz: 3\n")
    with pytest.raises(ValueError, match=r"c.yaml: unknown config key 'stepz'"):
        load_config(Schema, path)


def test_bad_config_values_and_overrides_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="invalid value for 'steps'"):
        load_config(Schema, overrides=["steps=many"])
    with pytest.raises(ValueError, match="not of the form key=value"):
        load_config(Schema, overrides=["steps"])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_config(Schema, tmp_path / "missing.yaml")


def test_config_is_read_only():
    config = load_config(Schema)
    with pytest.raises(Exception, match="read-only"):
        config.steps = 3


def test_run_recipe_reports_bad_keys_as_usage_errors(capsys):
    assert run_recipe(Schema, lambda c: c.steps, "doc", ["steps=4"]) == 4
    with pytest.raises(SystemExit):
        run_recipe(Schema, lambda c: c, "doc", ["nope=1"])
    assert "unknown config key 'nope'" in capsys.readouterr().err


# -- checkpoints ------------------------------------------------------------------------------------------


def _model_and_accelerator(tmp_path):
    accelerator = Accelerator(cpu=True)
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.Adam(model.parameters())
    model, optimizer = accelerator.prepare(model, optimizer)
    return accelerator, model, optimizer


def test_checkpoint_round_trip_restores_weights_and_state(tmp_path):
    accelerator, model, _ = _model_and_accelerator(tmp_path)
    saved = model.weight.detach().clone()
    path = save_checkpoint(accelerator, tmp_path, step=7, note="hello")
    with torch.no_grad():
        model.weight.zero_()
    state = load_checkpoint(accelerator, path)
    assert state["step"] == 7 and state["note"] == "hello"
    assert torch.equal(model.weight, saved)


def test_only_complete_checkpoints_count_and_old_ones_are_pruned(tmp_path):
    accelerator, _, _ = _model_and_accelerator(tmp_path)
    for step in (1, 2, 3):
        save_checkpoint(accelerator, tmp_path, step=step, keep_last=2)
    (tmp_path / "checkpoints" / "checkpoint-00000009.tmp").mkdir()  # a write killed half-way
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-00000002", "checkpoint-00000003"]
    assert resolve_resume(tmp_path, "latest").name == "checkpoint-00000003"
    assert resolve_resume(tmp_path, "") is None


def test_a_corrupt_checkpoint_is_reported_clearly(tmp_path):
    accelerator, _, _ = _model_and_accelerator(tmp_path)
    path = save_checkpoint(accelerator, tmp_path, step=1)
    (path / "trainer_state.json").write_text("{not json")
    with pytest.raises(ValueError, match="incomplete or corrupt"):
        load_checkpoint(accelerator, path)
    (path / "trainer_state.json").write_text(json.dumps({"step": 1}))
    for weights in path.glob("model*.safetensors"):
        weights.write_bytes(b"garbage")
    with pytest.raises(ValueError, match="could not be loaded"):
        load_checkpoint(accelerator, path)
    with pytest.raises(FileNotFoundError, match="resume=latest"):
        resolve_resume(tmp_path, str(tmp_path / "nowhere"))


# -- data order -------------------------------------------------------------------------------------------


def test_step_batches_resume_at_any_step_with_the_same_data():
    dataset = list(range(10))
    full = StepBatches(dataset, batch_size=3, seed=1)
    stream = full.from_step(0)
    reference = [next(stream).tolist() for _ in range(8)]  # crosses two epoch boundaries
    for start in (1, 3, 5):
        resumed = StepBatches(dataset, batch_size=3, seed=1).from_step(start)
        assert [next(resumed).tolist() for _ in range(8 - start)] == reference[start:]
    other_seed = StepBatches(dataset, batch_size=3, seed=2).from_step(0)
    assert [next(other_seed).tolist() for _ in range(3)] != reference[:3]


def test_step_batches_need_a_full_batch():
    with pytest.raises(ValueError, match="fewer than batch_size"):
        StepBatches([1, 2], batch_size=3, seed=0)


# -- objectives -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_a_perfect_prediction_has_zero_loss_and_noise_is_reproducible(objective):
    scheduler = make_training_scheduler(objective)
    latents = torch.randn(4, 3, 16)
    first = noise_batch(scheduler, latents, torch.Generator().manual_seed(0), snr_gamma=5.0)
    again = noise_batch(scheduler, latents, torch.Generator().manual_seed(0), snr_gamma=5.0)
    assert torch.equal(first.noisy, again.noisy) and torch.equal(first.timesteps, again.timesteps)
    assert weighted_mse(first.target, first).item() == 0
    assert weighted_mse(torch.zeros_like(first.target), first).item() > 0


def test_flow_objective_interpolates_between_data_and_noise():
    scheduler = make_training_scheduler("flow")
    latents = torch.randn(64, 2, 8)
    batch = noise_batch(scheduler, latents, torch.Generator().manual_seed(0))
    sigma = (batch.timesteps / scheduler.config.num_train_timesteps).view(-1, 1, 1)
    noise = batch.target + latents  # target is noise - data
    torch.testing.assert_close(batch.noisy, (1 - sigma) * latents + sigma * noise)


def test_min_snr_weights_downweight_low_noise_steps():
    scheduler = make_training_scheduler("v_prediction")
    batch = noise_batch(scheduler, torch.randn(256, 2, 4), torch.Generator().manual_seed(0), snr_gamma=5.0)
    # v-prediction's min-SNR weight min(SNR, γ) / (SNR + 1) peaks where SNR = γ and falls off on both sides
    low_noise = batch.weights[batch.timesteps < 30].mean()
    assert low_noise < 0.5 * batch.weights.max() and batch.weights.max() <= 1
    plain = noise_batch(scheduler, torch.randn(8, 2, 4), torch.Generator().manual_seed(0))
    assert torch.equal(plain.weights, torch.ones(8))


def test_masked_loss_ignores_padding():
    scheduler = make_training_scheduler("epsilon")
    batch = noise_batch(scheduler, torch.randn(2, 2, 8), torch.Generator().manual_seed(0))
    prediction = batch.target.clone()
    prediction[..., 6:] += 100.0  # wrong only on padded frames
    mask = torch.ones(2, 1, 8, dtype=torch.bool)
    mask[..., 6:] = False
    assert weighted_mse(prediction, batch, mask).item() == 0
    assert weighted_mse(prediction, batch).item() > 0


def test_unknown_objective_is_rejected():
    with pytest.raises(ValueError, match="unknown diffusion objective 'score'"):
        make_training_scheduler("score")


# -- caption tokenizer ------------------------------------------------------------------------------------


def test_caption_tokenizer_round_trips_through_save_pretrained(tmp_path):
    captions = ["a Bach chorale in G minor at 84 BPM", "a fast fiddle tune played on flute at 132 BPM"]
    tokenizer = build_caption_tokenizer(captions, model_max_length=16)
    encoded = tokenizer(["A BACH chorale at 412 BPM"]).input_ids[0]
    assert tokenizer.unk_token_id not in encoded  # case-folded words and split digits are all known
    assert encoded[-1] == tokenizer.eos_token_id and tokenizer.pad_token_id == 0
    assert tokenizer.unk_token_id in tokenizer(["a theremin"]).input_ids[0]
    tokenizer.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    assert reloaded(["a Bach chorale"]).input_ids == tokenizer(["a Bach chorale"]).input_ids
    long = tokenizer(["chorale " * 40], truncation=True, max_length=16).input_ids[0]
    assert len(long) == 16
