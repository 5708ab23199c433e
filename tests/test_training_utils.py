"""Pieces every recipe shares: configs, checkpoints, the training loop, objectives, the caption tokenizer."""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass, field

import pytest
import torch
from accelerate import Accelerator
from accelerate.commands.config.config_args import load_config_from_file
from accelerate.state import AcceleratorState
from omegaconf import OmegaConf
from transformers import AutoTokenizer

from latentmusic.audio import save_audio
from latentmusic.data import collate
from latentmusic.training.accelerator import resolve_mixed_precision, stream_seed
from latentmusic.training.checkpoint import list_checkpoints, load_checkpoint, resolve_resume, save_checkpoint
from latentmusic.training.config import load_config, run_recipe
from latentmusic.training.diffusion import DiffusionTrainingConfig, train_diffusion
from latentmusic.training.objectives import OBJECTIVES, make_training_scheduler, noise_batch, weighted_mse
from latentmusic.training.runner import OptimConfig, RunConfig, Trainer, make_lr_scheduler
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


# -- the shared loop ---------------------------------------------------------------------------------------


class Items(torch.utils.data.Dataset):
    """Ten numbers with ids, the target y = 3x."""

    def __len__(self):
        return 10

    def __getitem__(self, index):
        x = torch.tensor([float(index) / 10])
        return {"x": x, "y": 3 * x, "metadata": {"path": f"item{index}"}}


class LineTrainer(Trainer):
    """The smallest recipe: a linear model fitted by the shared loop."""

    def check_data(self):
        pass

    def build(self):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(1, 1))
        self.dtypes, self.initial = set(), model[0].weight.item()  # the layer's output dtypes, its first weight
        model[0].register_forward_hook(lambda module, args, out: self.dtypes.add(out.dtype))
        optimizer = torch.optim.AdamW(model.parameters(), lr=self.config.optim.lr)
        schedule = make_lr_scheduler(optimizer, self.config.optim, self.run_config.max_steps)
        self.model, self.optimizer, self.schedule = self.prepare(model, optimizer, schedule)
        self.lr_schedulers = {"lr": self.schedule}
        return Items(), collate

    def train_step(self, batch):
        # dropout-like global randomness, to show it is seeded per step
        noise = 1e-3 * torch.randn(batch["x"].shape)
        loss = ((self.model(batch["x"] + noise) - batch["y"]) ** 2).mean()
        self.optimize(loss, self.optimizer, self.model.parameters(), self.schedule)
        return {"loss": loss.detach()}

    def save(self):
        return self.output_dir


def line_run(output, steps, accumulation=1, lr_scheduler="constant_with_warmup"):
    config = OmegaConf.create(
        {
            "run": RunConfig(output_dir=str(output), max_steps=steps, gradient_accumulation_steps=accumulation,
                             log_every=1, checkpoint_every=3, report_to="none", progress_bar=False,
                             record_examples=True),
            "optim": OptimConfig(lr=0.05, warmup_steps=2, lr_scheduler=lr_scheduler),
            "data": {"batch_size": 3, "num_workers": 0},
        }
    )  # fmt: skip
    trainer = LineTrainer(config, "test")
    trainer.fit()
    rows = [json.loads(line) for line in (output / "examples" / "process-0.jsonl").read_text().splitlines()]
    losses = {row["step"]: (row["loss"], row["lr"]) for row in trainer.history.read()}
    return trainer.unwrap(trainer.model)[0].weight.item(), [row["paths"] for row in rows], losses


@pytest.mark.parametrize("accumulation", [1, 2])
def test_a_resumed_run_sees_the_same_data_and_ends_with_the_same_weights(tmp_path, accumulation):
    weight, batches, losses = line_run(tmp_path / "straight", 8, accumulation)
    # 3 full batches of 3 per epoch (the 10th item is dropped), each epoch its own permutation of all items
    assert len(batches) == 8 * accumulation
    epochs = [sorted(sum(batches[i : i + 3], [])) for i in range(0, 6, 3)]
    assert all(len(set(epoch)) == 9 for epoch in epochs) and batches[:3] != batches[3:6]
    # warm-up over 2 steps (the first at lr 0), stepped once per optimisation step; logged after the step
    assert [losses[step][1] for step in (1, 2, 3)] == pytest.approx([0.025, 0.05, 0.05])

    stopped = tmp_path / "stopped"
    line_run(stopped, 5, accumulation)  # checkpoints at 3 and 5
    shutil.rmtree(stopped / "checkpoints" / "checkpoint-00000005")  # killed between steps 3 and 5
    resumed_weight, resumed_batches, resumed_losses = line_run(stopped, 8, accumulation)
    assert resumed_batches[-5 * accumulation :] == batches[-5 * accumulation :]  # skipped, not re-read
    assert resumed_losses == losses and resumed_weight == weight
    assert weight != line_run(tmp_path / "cosine", 8, accumulation, "cosine")[0]


def test_bad_run_settings_are_refused_with_the_allowed_values(tmp_path):
    optimizer = torch.optim.SGD(torch.nn.Linear(1, 1).parameters(), lr=1.0)
    with pytest.raises(ValueError, match="optim.lr_scheduler must be one of .*cosine"):
        make_lr_scheduler(optimizer, OptimConfig(lr_scheduler="cosin"), 10)
    with pytest.raises(ValueError, match="run.mixed_precision must be one of"):
        resolve_mixed_precision("fp32")
    with pytest.warns(UserWarning, match="fp16 needs a CUDA GPU"):
        assert resolve_mixed_precision("fp16") == "no"
    assert resolve_mixed_precision("bf16") == "bf16"  # CPUs autocast to bfloat16
    # a bare `no` is YAML's false: `run.mixed_precision=no` reaches the str field as "False" and means "no"
    config = load_config(DiffusionTrainingConfig, None, ["run.mixed_precision=no"])
    assert resolve_mixed_precision(config.run.mixed_precision) == "no"
    with pytest.raises(ValueError, match="gradient_accumulation_steps must be at least 1"):
        line_run(tmp_path, 2, accumulation=0)


@pytest.fixture
def fresh_accelerate_state():
    """Accelerate fixes the mixed-precision mode once per process; let a test choose another."""
    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def test_bf16_autocast_trains_float32_weights_on_a_cpu(tmp_path, fresh_accelerate_state):
    config = OmegaConf.create(
        {
            "run": RunConfig(output_dir=str(tmp_path), max_steps=3, report_to="none", progress_bar=False,
                             mixed_precision="bf16", record_examples=True),
            "optim": OptimConfig(lr=0.05, warmup_steps=0),
            "data": {"batch_size": 3, "num_workers": 0},
        }
    )  # fmt: skip
    trainer = LineTrainer(config, "test")
    trainer.fit()
    assert trainer.dtypes == {torch.bfloat16}
    layer = trainer.unwrap(trainer.model)[0]
    assert layer.weight.dtype == torch.float32 and abs(layer.weight.item() - trainer.initial) > 0.01
    assert all(math.isfinite(row["loss"]) for row in trainer.history.read())


@pytest.mark.parametrize("name", ["multi_gpu", "deepspeed_zero2", "fsdp"])
def test_the_documented_launcher_configs_are_accelerate_configs(name):
    config = load_config_from_file(f"recipes/configs/accelerate/{name}.yaml")
    assert config.distributed_type.value == {"multi_gpu": "MULTI_GPU", "deepspeed_zero2": "DEEPSPEED",
                                             "fsdp": "FSDP"}[name]  # fmt: skip
    assert config.mixed_precision == "bf16" and config.num_processes == 8


def test_random_streams_are_separate_and_reproducible():
    seeds = {stream_seed(0, stream, step, rank) for stream in ("data", "noise", "global") for step in range(3)
             for rank in range(2)}  # fmt: skip
    assert len(seeds) == 18 and all(0 <= seed < 2**32 for seed in seeds)
    assert stream_seed(5, "noise", 1) == stream_seed(5, "noise", 1) != stream_seed(6, "noise", 1)


def test_a_bad_data_folder_fails_before_anything_is_written(tmp_path):
    (tmp_path / "music").mkdir()
    save_audio(tmp_path / "music" / "a.wav", torch.zeros(1, 800), 8000)
    save_audio(tmp_path / "music" / "b.wav", torch.zeros(1, 800), 8000)
    (tmp_path / "music" / "a.txt").write_text("a quiet take\n")
    output = tmp_path / "run"
    config = load_config(DiffusionTrainingConfig, overrides=[f"data.root={tmp_path / 'music'}", "vae=somewhere",
                                                             f"run.output_dir={output}"])  # fmt: skip
    with pytest.raises(ValueError, match=r"1 of 2 audio files .* have no caption: b.wav"):
        train_diffusion(config)
    assert not output.exists()


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


def test_flow_noise_levels_can_lean_towards_noise_as_sd3_trains():
    scheduler = make_training_scheduler("flow")
    latents = torch.randn(4000, 1, 2)

    def sigmas(**options):
        batch = noise_batch(scheduler, latents, torch.Generator().manual_seed(0), **options)
        return batch.timesteps / scheduler.config.num_train_timesteps

    uniform = sigmas()
    # the default draws are the uniform ones of before, after the noise (runs resume exactly)
    generator = torch.Generator().manual_seed(0)
    torch.randn(latents.shape, generator=generator)
    torch.testing.assert_close(uniform, torch.rand(4000, generator=generator), rtol=0, atol=1e-6)
    leaning = sigmas(flow_logit_normal=(1.0, 1.0))
    assert 0 < leaning.min() and leaning.max() < 1
    # sigmoid(N(1, 1)): median sigmoid(1) = 0.73, against 0.5; a third of the draws above 0.8 against a fifth
    assert leaning.median().item() == pytest.approx(0.731, abs=0.02) and uniform.median().item() == pytest.approx(
        0.5, abs=0.02
    )
    assert (leaning > 0.8).float().mean().item() == pytest.approx(0.35, abs=0.03)
    with pytest.raises(ValueError, match="flow_logit_std must be >= 0"):
        sigmas(flow_logit_normal=(0.0, -1.0))


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
