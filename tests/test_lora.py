"""LoRA adapters on the pipelines: saved and reloaded exactly, weighted, fused, unloaded, refused when they belong to
another model, and trained by the LoRA recipe to fit a folder better than the model it starts from."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import safetensors
import torch

from latentmusic import LatentMusicPipeline, TokenMusicPipeline, UNet1DConditionModel
from latentmusic.loaders import get_lora_layers, make_lora_config
from latentmusic.training.config import load_config
from latentmusic.training.diffusion import DiffusionTrainingConfig, MaskingConfig
from latentmusic.training.lora import LoraTrainingConfig, add_lora_adapter, finetune_lora
from latentmusic.training.optimizer import make_optimizer
from latentmusic.training.runner import OptimConfig
from latentmusic.training.text_conditioning import TextEncoderConfig, load_text_encoder, pipeline_folder

from .conftest import make_tiny_pipe, perturb_
from .test_pipeline_token_music import make_tiny_token_pipe

CONFIGS = Path(__file__).resolve().parents[1] / "recipes" / "configs" / "lora"
PROMPT = "a slow Bach chorale played by a string ensemble"


def generate(pipe: LatentMusicPipeline) -> torch.Tensor:
    return pipe(
        PROMPT,
        audio_length_in_s=0.5,
        num_inference_steps=3,
        generator=torch.Generator().manual_seed(0),
        output_type="pt",
    ).audios


def with_random_adapter(pipe, name: str = "default", seed: int = 1, **config):
    """Add an adapter whose lora_B is not zero (peft starts it at zero, which would hide every behaviour)."""
    torch.manual_seed(seed)
    model = pipe.unet if isinstance(pipe, LatentMusicPipeline) else pipe.lm
    model.add_adapter(make_lora_config(model, rank=2, init_lora_weights=False, **config), adapter_name=name)
    return pipe


def saved_lora(pipe, folder, name: str = "default"):
    layers, metadata = get_lora_layers(pipe.unet, name)
    pipe.save_lora_weights(folder, unet_lora_layers=layers, unet_lora_adapter_metadata=metadata)
    return folder


@pytest.fixture(scope="module")
def base_audio() -> torch.Tensor:
    return generate(make_tiny_pipe())


@pytest.fixture(scope="module")
def lora_folder(tmp_path_factory):
    """A LoRA with random weights on the tiny pipeline, saved, and the audio the pipeline makes with it."""
    pipe = with_random_adapter(make_tiny_pipe())
    folder = saved_lora(pipe, tmp_path_factory.mktemp("lora"))
    return folder, generate(pipe)


def test_a_saved_lora_loads_into_a_fresh_pipeline_bit_identically(lora_folder, base_audio):
    folder, adapted_audio = lora_folder
    assert not torch.equal(adapted_audio, base_audio)  # the adapter does something
    pipe = make_tiny_pipe()
    pipe.load_lora_weights(folder, adapter_name="folk")
    assert pipe.get_list_adapters() == {"unet": ["folk"]}
    assert torch.equal(generate(pipe), adapted_audio)


def test_the_file_is_diffusers_layout_with_the_adapter_config(lora_folder):
    folder, _ = lora_folder
    file = folder / "pytorch_lora_weights.safetensors"
    with safetensors.safe_open(str(file), framework="pt") as handle:
        keys, header = list(handle.keys()), handle.metadata()
    assert keys and all(k.startswith("unet.") and (".lora_A." in k or ".lora_B." in k) for k in keys)
    metadata = json.loads(header["lora_adapter_metadata"])
    assert metadata["unet.r"] == 2
    assert sorted(metadata["unet.target_modules"]) == sorted(["to_q", "to_k", "to_v", "to_out.0"])


def test_adapter_weight_zero_and_unloading_give_the_base_output(lora_folder, base_audio):
    folder, adapted_audio = lora_folder
    pipe = make_tiny_pipe()
    pipe.load_lora_weights(folder, adapter_name="folk")
    pipe.set_adapters("folk", adapter_weights=0.0)
    assert torch.equal(generate(pipe), base_audio)
    pipe.set_adapters("folk", adapter_weights=1.0)
    assert torch.equal(generate(pipe), adapted_audio)
    pipe.unload_lora_weights()
    assert torch.equal(generate(pipe), base_audio)
    assert pipe.unet.state_dict().keys() == make_tiny_pipe().unet.state_dict().keys()  # no peft layer left


def test_fusing_keeps_the_output_and_unfusing_restores_the_base_weights(lora_folder, base_audio):
    folder, adapted_audio = lora_folder
    pipe = make_tiny_pipe()
    base_weight = pipe.unet.mid_block.attention.transformer.attn1.to_q.weight.detach().clone()
    pipe.load_lora_weights(folder, adapter_name="folk")
    pipe.fuse_lora()
    assert pipe.fused_loras == {"folk"}
    fused_weight = pipe.unet.mid_block.attention.transformer.attn1.to_q.base_layer.weight
    assert not torch.allclose(fused_weight, base_weight)
    torch.testing.assert_close(generate(pipe), adapted_audio, atol=1e-5, rtol=0)
    pipe.unfuse_lora()
    assert pipe.fused_loras == set()
    torch.testing.assert_close(fused_weight, base_weight, atol=1e-6, rtol=0)
    pipe.disable_lora()
    torch.testing.assert_close(generate(pipe), base_audio, atol=1e-5, rtol=0)


def test_two_adapters_combine_by_weight(tmp_path):
    pipe = with_random_adapter(with_random_adapter(make_tiny_pipe(), "a", seed=1), "b", seed=2)
    pipe.set_adapters(["a", "b"], adapter_weights=[1.0, 0.0])
    only_a = generate(pipe)
    pipe.set_adapters("a")
    assert torch.equal(generate(pipe), only_a)
    pipe.set_adapters(["a", "b"], adapter_weights=[1.0, 1.0])
    assert not torch.equal(generate(pipe), only_a)


def test_the_token_pipeline_takes_a_lora_on_its_lm(tmp_path):
    pipe = with_random_adapter(make_tiny_token_pipe())
    layers, metadata = get_lora_layers(pipe.lm)
    TokenMusicPipeline.save_lora_weights(tmp_path, lm_lora_layers=layers, lm_lora_adapter_metadata=metadata)
    codes = torch.randint(0, 16, (1, 3, 6))
    text = torch.randn(1, 4, 16)
    with torch.no_grad():
        adapted = pipe.lm(codes, text).logits
        fresh = make_tiny_token_pipe()
        base = fresh.lm(codes, text).logits
        fresh.load_lora_weights(tmp_path)
        assert not torch.equal(adapted, base)
        assert torch.equal(fresh.lm(codes, text).logits, adapted)


def unet_state(pipe) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in pipe.unet.state_dict().items()}


def assert_unchanged(pipe, before: dict[str, torch.Tensor], base_audio: torch.Tensor) -> None:
    after = pipe.unet.state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(after[k], before[k]) for k in before)
    assert pipe.get_list_adapters() == {}
    assert torch.equal(generate(pipe), base_audio)


def other_lora(tmp_path, **unet_changes):
    """A LoRA saved from a U-Net built differently from the tiny pipeline's."""
    config = {**make_tiny_pipe().unet.config, **unet_changes}
    config = {k: v for k, v in config.items() if not k.startswith("_")}
    other = make_tiny_pipe()
    other.unet = perturb_(UNet1DConditionModel(**config))
    return saved_lora(with_random_adapter(other), tmp_path)


@pytest.mark.parametrize(
    "unet_changes, message",
    [
        ({"block_out_channels": (16, 32)}, "another width"),  # same module names, other shapes
        ({"attention_levels": (True, True)}, "does not exist"),  # attention where this U-Net has none
        ({"attention_levels": (False, False)}, "has no weights for"),  # no attention where this U-Net has some
    ],
    ids=["wider", "more-blocks", "fewer-blocks"],
)
def test_a_lora_for_another_model_is_refused_and_changes_nothing(tmp_path, base_audio, unet_changes, message):
    folder = other_lora(tmp_path, **unet_changes)
    pipe = make_tiny_pipe()
    before = unet_state(pipe)
    with pytest.raises(ValueError, match=message):
        pipe.load_lora_weights(folder)
    assert_unchanged(pipe, before, base_audio)


def test_a_token_lm_lora_is_refused_by_the_diffusion_pipeline(tmp_path, base_audio):
    token_pipe = with_random_adapter(make_tiny_token_pipe())
    layers, metadata = get_lora_layers(token_pipe.lm)
    TokenMusicPipeline.save_lora_weights(tmp_path, lm_lora_layers=layers, lm_lora_adapter_metadata=metadata)
    pipe = make_tiny_pipe()
    before = unet_state(pipe)
    with pytest.raises(ValueError, match=r"has weights for \['lm'\].*only for \['unet'\]"):
        pipe.load_lora_weights(tmp_path)
    assert_unchanged(pipe, before, base_audio)


def test_a_taken_adapter_name_and_a_missing_file_are_refused(lora_folder, tmp_path):
    folder, adapted_audio = lora_folder
    pipe = make_tiny_pipe()
    pipe.load_lora_weights(folder, adapter_name="folk")
    with pytest.raises(ValueError, match="already loaded"):
        pipe.load_lora_weights(folder, adapter_name="folk")
    with pytest.raises(FileNotFoundError, match="no LoRA weights at"):
        pipe.load_lora_weights(tmp_path / "nowhere")
    assert pipe.get_list_adapters() == {"unet": ["folk"]}
    assert torch.equal(generate(pipe), adapted_audio)


def test_bad_adapter_settings_are_refused_clearly():
    unet = make_tiny_pipe().unet
    with pytest.raises(ValueError, match="'to_qkv' matches no nn.Linear"):
        make_lora_config(unet, target_modules=["to_qkv"])
    with pytest.raises(ValueError, match="rank must be a positive"):
        make_lora_config(unet, rank=0)
    with pytest.raises(ValueError, match="text_encoder.train=false"):
        add_lora_adapter(unet, LoraTrainingConfig(rank=4), train_text_encoder=True)


def test_with_an_adapter_the_optimiser_takes_only_the_adapter():
    pipe = make_tiny_pipe()
    assert add_lora_adapter(pipe.unet, LoraTrainingConfig(rank=4), train_text_encoder=False)
    optimizer = make_optimizer(pipe.unet, pipe.text_encoder, TextEncoderConfig(train=False), OptimConfig())
    optimised = [p for group in optimizer.param_groups for p in group["params"]]
    adapter = [p for name, p in pipe.unet.named_parameters() if "lora_" in name]
    assert len(optimised) == len(adapter) > 0
    assert {id(p) for p in optimised} == {id(p) for p in adapter}


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.stem)
def test_the_lora_configs_train_only_an_adapter(path):
    config = load_config(DiffusionTrainingConfig, path)
    assert config.init_from and config.lora.rank > 0 and not config.text_encoder.train


def test_the_demo_lora_config_fits_the_demo_unet():
    """Its masking must give the demo U-Net's conditioning channels (a mask and the masked latents)."""
    config = load_config(DiffusionTrainingConfig, CONFIGS / "demo.yaml")
    unet_config = UNet1DConditionModel.load_config(pipeline_folder(config.init_from) / "unet")
    assert MaskingConfig.enabled(config.masking) and not config.melody.enabled
    # the demo (v4) also has a beat grid, which a fine-tune on data without tempos leaves empty
    inputs = {"mask": 1, "known_latents": unet_config["in_channels"], "beat_grid": 2}
    assert unet_config["conditioning_inputs"] == inputs
    assert config.data.segment_seconds <= unet_config["max_seconds"]


def test_the_demo_text_encoder_loads_in_float32_for_fine_tuning():
    """The demo stores it in float16; fed to the float32 U-Net (with or without an adapter) that would fail."""
    folder = pipeline_folder("latentmusic/demo")
    _, text_encoder = load_text_encoder(folder / "text_encoder", folder / "tokenizer")
    assert {p.dtype for p in text_encoder.parameters()} == {torch.float32}


def lora_run(corpus_dir, init_from, output, cache, *overrides) -> list[dict]:
    config = load_config(
        DiffusionTrainingConfig,
        "recipes/configs/lora/tiny.yaml",
        [
            f"init_from={init_from}",
            f"data.root={corpus_dir}",
            f"data.latent_cache={cache}",
            f"run.output_dir={output}",
            "run.report_to=none",
            "run.progress_bar=false",
            "run.checkpoint_every=0",
            "sample.steps=2",
            *overrides,
        ],
    )
    folder = finetune_lora(config)
    assert folder == output / "lora"
    return [json.loads(line) for line in (output / "losses.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_a_short_lora_run_lowers_the_held_out_loss_and_saves_only_the_adapter(corpus_dir, tmp_path, base_audio):
    init_from = tmp_path / "base"
    make_tiny_pipe().save_pretrained(init_from)
    cache = tmp_path / "latents"
    # the base model's held-out loss: one step at learning rate 0 leaves the (zero-initialised) adapter a no-op
    base = lora_run(corpus_dir, init_from, tmp_path / "base-run", cache, "run.max_steps=1", "optim.lr=0")
    rows = lora_run(
        corpus_dir, init_from, tmp_path / "run", cache, "run.max_steps=60", "lora.save_fused_pipeline=true"
    )
    base_loss, tuned_loss = base[-1]["valid_loss"], rows[-1]["valid_loss"]
    assert tuned_loss < 0.9 * base_loss, (base_loss, tuned_loss)

    assert not (tmp_path / "base-run" / "pipeline").exists()  # by default only the adapter is saved ...
    adapter = tmp_path / "run" / "lora" / "pytorch_lora_weights.safetensors"
    unet_file = init_from / "unet" / "diffusion_pytorch_model.safetensors"
    assert adapter.stat().st_size < unet_file.stat().st_size / 2
    pipe = LatentMusicPipeline.from_pretrained(init_from)  # ... and it loads into the pipeline it was trained on
    pipe.set_progress_bar_config(disable=True)
    pipe.load_lora_weights(tmp_path / "run" / "lora")
    adapted_audio = generate(pipe)
    assert not torch.equal(adapted_audio, base_audio)
    fused = LatentMusicPipeline.from_pretrained(tmp_path / "run" / "pipeline")  # the fused copy: a plain pipeline
    fused.set_progress_bar_config(disable=True)
    assert fused.unet.state_dict().keys() == make_tiny_pipe().unet.state_dict().keys()  # no peft layer in it
    fused.scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config)  # the recipe saves a fast sampler
    torch.testing.assert_close(generate(fused), adapted_audio, atol=1e-4, rtol=0)
