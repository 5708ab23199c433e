"""Guidance distillation (`diffusion.distill_guidance_scale`): a student that predicts in one unguided pass what its
frozen teacher predicts with classifier-free guidance, and the settings that cannot work refused."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from latentmusic import LatentMusicPipeline
from latentmusic.data.datasets import collate
from latentmusic.training.config import load_config
from latentmusic.training.diffusion import DiffusionTrainer, DiffusionTrainingConfig, check_distillation

from .conftest import make_tiny_pipe


def config_with(**diff):
    return OmegaConf.merge(OmegaConf.structured(DiffusionTrainingConfig), diff)


@pytest.mark.parametrize(
    "diff, message",
    [
        ({"diffusion": {"distill_guidance_scale": 1.0}, "init_from": "x"}, "must be above 1"),
        ({"diffusion": {"distill_guidance_scale": 3.0}}, "needs init_from="),
        (
            {"diffusion": {"distill_guidance_scale": 3.0}, "init_from": "x", "text_encoder": {"train": True}},
            "set text_encoder.train=false",
        ),
    ],
)
def test_settings_that_cannot_distil_are_refused(diff, message):
    with pytest.raises(ValueError, match=message):
        check_distillation(config_with(**diff))
    check_distillation(config_with(init_from="x"))  # off by default: nothing to check


@pytest.mark.slow
def test_a_distilled_lora_predicts_the_teachers_guided_output_without_guidance(corpus_dir, tmp_path):
    init_from = tmp_path / "teacher"
    make_tiny_pipe().save_pretrained(init_from)
    config = load_config(
        DiffusionTrainingConfig,
        "recipes/configs/lora/tiny.yaml",
        [
            f"init_from={init_from}",
            f"vae={init_from}",
            f"data.root={corpus_dir}",
            f"data.latent_cache={tmp_path / 'latents'}",
            f"run.output_dir={tmp_path / 'run'}",
            "run.report_to=none",
            "run.progress_bar=false",
            "run.checkpoint_every=0",
            "run.max_steps=120",
            "diffusion.distill_guidance_scale=3.0",
        ],
    )
    trainer = DiffusionTrainer(config)
    trainer.fit()
    batch = collate([trainer.valid_set[i] for i in range(min(8, len(trainer.valid_set)))])

    def distance_to_guided_teacher() -> float:  # the distillation loss on held-out crops, fixed noise
        with torch.no_grad():
            return trainer.denoise_loss(batch, torch.Generator().manual_seed(0), batch["caption"], distill=True).item()

    unet = trainer.unwrap(trainer.unet)
    distilled = distance_to_guided_teacher()
    unet.disable_adapters()  # the student without its adapter is the teacher: its unguided output is the start
    start = distance_to_guided_teacher()
    unet.enable_adapters()
    assert distilled < 0.7 * start, (start, distilled)
    teacher = LatentMusicPipeline.from_pretrained(init_from).unet.state_dict()
    assert all(torch.equal(teacher[k], v) for k, v in trainer.teacher.state_dict().items())  # the teacher is frozen
