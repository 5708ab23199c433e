"""Shared fixtures: tiny random components built from configs (no download, milliseconds to build)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from transformers import T5Config, T5EncoderModel

from latentmusic import AudioAutoencoder, LatentMusicPipeline, UNet1DConditionModel
from latentmusic.models.conditioning import conditioning_inputs
from latentmusic.training.objectives import make_training_scheduler
from latentmusic.training.tokenizer import build_caption_tokenizer

# Tiny tensors run fastest on one thread, and OpenMP threads spinning on a busy 2-core machine can make
# each op 30x slower; the suite's speed should not depend on what else the machine is doing.
torch.set_num_threads(1)

CAPTIONS = [
    "a slow Bach chorale played by a string ensemble at 60 BPM",
    "a fast fiddle tune on flute at 132 BPM",
    "an Irish tune on church organ, G minor",
    "a folk song in D major played by a clarinet",
]


def tiny_vae(**overrides) -> AudioAutoencoder:
    waveform = dict(base_channels=4, max_channels=16)
    config = dict(sample_rate=8000, strides=(4, 8), latent_channels=4, encoder_kwargs=waveform)
    return AudioAutoencoder(**{**config, **overrides})


def perturb_(module: torch.nn.Module, std: float = 0.2, seed: int = 0) -> torch.nn.Module:
    """Add noise to every weight: zero-initialised output layers would otherwise hide all behaviour."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator) * std)
    return module


def make_tiny_pipe(
    masking: bool = False, melody: bool = False, latent_channels: int = 4, beat: bool = False
) -> LatentMusicPipeline:
    """A tiny random pipeline; `masking`, `melody` and `beat` give its U-Net those conditioning inputs."""
    torch.manual_seed(0)
    tokenizer = build_caption_tokenizer(CAPTIONS, model_max_length=16)
    text_encoder = T5EncoderModel(
        T5Config(vocab_size=len(tokenizer), d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2)
    ).eval()
    vae = tiny_vae(latent_channels=latent_channels).eval()
    unet = UNet1DConditionModel(
        in_channels=latent_channels,
        block_out_channels=(8, 16),
        layers_per_block=1,
        attention_levels=(False, True),
        attention_head_dim=8,
        cross_attention_dim=16,
        norm_num_groups=4,
        max_seconds=2.0,
        conditioning_inputs=conditioning_inputs(latent_channels, masking=masking, melody=melody, beat=beat),
    )
    perturb_(unet).eval()
    scheduler = make_training_scheduler("v_prediction")
    pipe = LatentMusicPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def tiny_pipe() -> LatentMusicPipeline:
    return make_tiny_pipe()


@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory):
    """A small real corpus (about 30 pieces, 7 minutes of 16 kHz audio), rendered once per test session."""
    from latentmusic.data.corpus import render_corpus
    from latentmusic.data.rendering import find_soundfont, require_fluidsynth

    try:
        require_fluidsynth()
        find_soundfont()
    except FileNotFoundError as error:
        pytest.skip(f"rendering needs FluidSynth and a General-MIDI soundfont: {error}")
    root = tmp_path_factory.mktemp("corpus")
    render_corpus(
        root,
        max_pieces=30,
        collections=["bach", "ryans", "essen"],
        sample_rate=16000,
        max_seconds=15,
        progress=False,
    )
    return root


def load_benchmark(name: str):
    """The script `benchmarks/<name>.py` as a module (benchmarks are scripts, not a package)."""
    path = Path(__file__).resolve().parent.parent / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
