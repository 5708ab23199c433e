"""Models the benchmarks build from the recipe configs, and diffusers' equivalents sized to match them."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderOobleck, DPMSolverMultistepScheduler
from omegaconf import OmegaConf

from latentmusic import AudioAutoencoder, LatentMusicPipeline, UNet1DConditionModel
from latentmusic.training.objectives import make_training_scheduler
from latentmusic.training.text_conditioning import TextEncoderConfig, build_text_encoder

CONFIGS = Path(__file__).resolve().parents[1] / "recipes" / "configs"
CAPTIONS = [
    "a slow Bach chorale played by a string ensemble at 60 BPM",
    "a fast fiddle tune on flute at 132 BPM in D major",
    "an Irish reel on church organ, G minor",
    "a folk song in A minor played by a clarinet at 96 BPM",
]


def count_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def recipe_config(kind: str, name: str) -> Any:
    return OmegaConf.load(CONFIGS / kind / f"{name}.yaml")


def build_autoencoder(name: str) -> AudioAutoencoder:
    """The autoencoder of `recipes/configs/autoencoder/<name>.yaml`, randomly initialised."""
    return AudioAutoencoder(**OmegaConf.to_container(recipe_config("autoencoder", name).model))


def build_oobleck(name: str) -> AutoencoderOobleck:
    """diffusers' `AutoencoderOobleck` (Stable Audio Open's VAE family) of `recipes/configs/autoencoder/
    <name>-oobleck.yaml`: the autoencoder config's sample rate, hop and latent width at about its parameter count."""
    return AutoencoderOobleck(**OmegaConf.to_container(recipe_config("autoencoder", f"{name}-oobleck").model))


def build_latent_pipeline(name: str, max_seconds: float) -> LatentMusicPipeline:
    """A `LatentMusicPipeline` with the components of the `<name>` recipe configs (random weights)."""
    torch.manual_seed(0)
    vae = build_autoencoder(name)
    diffusion = recipe_config("diffusion", name)
    text_config = OmegaConf.merge(OmegaConf.structured(TextEncoderConfig), diffusion.text_encoder)
    tokenizer, text_encoder = build_text_encoder(text_config, CAPTIONS)
    unet = UNet1DConditionModel(
        **OmegaConf.to_container(diffusion.unet),
        in_channels=vae.config.latent_channels,
        cross_attention_dim=text_encoder.config.d_model,
        use_timing_conditioning=True,
        max_seconds=max_seconds,
    )
    scheduler = DPMSolverMultistepScheduler.from_config(make_training_scheduler("v_prediction").config)
    pipe = LatentMusicPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def build_stable_audio_pipeline(name: str, reference: LatentMusicPipeline, seconds: float):
    """diffusers' `StableAudioPipeline` at the reference pipeline's size: the same text encoder and tokenizer, the
    Oobleck VAE of the `<name>-oobleck` config, and a DiT whose depth makes its parameter count closest to the
    U-Net's. Stable Audio's DiT always denoises `sample_size` frames, so it is built for `seconds`."""
    from diffusers import StableAudioDiTModel, StableAudioPipeline
    from diffusers.pipelines.stable_audio import StableAudioProjectionModel

    torch.manual_seed(0)
    vae = build_oobleck(name)
    text_dim = reference.text_encoder.config.d_model
    frames = int(round(seconds * vae.config.sampling_rate / vae.hop_length))
    latent = vae.config.decoder_input_channels
    width = reference.unet.config.block_out_channels[-1]
    heads = max(1, width // 64)

    def build(layers: int) -> StableAudioDiTModel:
        return StableAudioDiTModel(
            sample_size=frames,
            in_channels=latent,
            out_channels=latent,
            num_layers=layers,
            attention_head_dim=width // heads,
            num_attention_heads=heads,
            num_key_value_attention_heads=heads,
            cross_attention_dim=width,
            time_proj_dim=256,
            global_states_input_dim=2 * text_dim,
            cross_attention_input_dim=text_dim,
        )

    target = count_parameters(reference.unet)

    def size(layers: int) -> int:
        with torch.device("meta"):
            return count_parameters(build(layers))

    transformer = build(min(range(1, 49), key=lambda n: abs(size(n) - target)))
    projection = StableAudioProjectionModel(
        text_encoder_dim=text_dim, conditioning_dim=text_dim, min_value=0, max_value=int(seconds) + 1
    )
    # the same sampler as the reference (Stable Audio's own CosineDPMSolverMultistepScheduler needs torchsde): the
    # comparison is of the networks, not of the samplers
    scheduler = DPMSolverMultistepScheduler.from_config(reference.scheduler.config)
    pipe = StableAudioPipeline(
        vae=vae,
        text_encoder=reference.text_encoder,
        projection_model=projection,
        tokenizer=reference.tokenizer,
        transformer=transformer,
        scheduler=scheduler,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _closest(build: Callable[[int], torch.nn.Module], target: int, choices: Iterable[int]) -> torch.nn.Module:
    """`build(n)` for the `n` of `choices` whose parameter count is closest to `target` (sized on the meta device)."""

    def size(n: int) -> int:
        with torch.device("meta"):
            return count_parameters(build(n))

    return build(min(choices, key=lambda n: abs(size(n) - target)))


def build_same(name: str, target_params: int | None = None, stride: int = 4):
    """diffusers' `AutoencoderSAME` (Stable Audio 3's autoencoder) at the `<name>` autoencoder config's rate, hop and
    latent width: a patch of `hop / stride` samples and one transformer resampling block of `stride`, its depth chosen
    for the parameter count closest to `target_params` (default: the `<name>` autoencoder's).

    SAME's production layout is a patch of 256 and a stride of 16. Its transformer attends over the patch sequence
    (`stride` x the latent rate) through a dense band mask of that length squared, so with our 75 Hz latents a
    stride of 16 costs gigabytes for seconds of audio (20 GB for 8 s in a trial); a stride of 4 keeps the layout
    (patch, resampling transformer, soft-norm bottleneck) at a sequence four times the latent rate."""
    from diffusers import AutoencoderSAME

    reference = build_autoencoder(name)
    hop = reference.hop_length
    if hop % stride:
        raise ValueError(f"SAME's stride {stride} must divide the hop; the {name!r} config's hop is {hop}")
    target = target_params or count_parameters(reference)

    def build(depth: int) -> AutoencoderSAME:
        return AutoencoderSAME(
            audio_channels=reference.config.audio_channels,
            patch_size=hop // stride,
            encoder_channels=32,  # x the channel multiple 6 = 192 wide, three heads of 64
            encoder_strides=(stride,),
            encoder_transformer_depths=(depth,),
            latent_dim=reference.config.latent_channels,
            sampling_rate=reference.config.sample_rate,
        )

    torch.manual_seed(0)
    return _closest(build, target, range(1, 25))


def _width(reference: LatentMusicPipeline) -> tuple[int, int]:
    width = reference.unet.config.block_out_channels[-1]
    return width, max(1, width // 64)


def build_stable_audio3_pipeline(name: str, reference: LatentMusicPipeline):
    """diffusers' `StableAudio3Pipeline` at the reference pipeline's size: the same text encoder and tokenizer (in
    place of T5Gemma), the `AutoencoderSAME` of :func:`build_same` (same rate, hop and latent width as the reference
    VAE) and a `StableAudio3DiTModel` as wide as the U-Net's widest level whose depth brings it closest in
    parameters. SA3 samples with a flow-matching Euler scheduler (deterministic: `stochastic_sampling=False`, its
    non-distilled base model's sampler)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, StableAudio3DiTModel, StableAudio3Pipeline
    from diffusers.pipelines.stable_audio_3 import StableAudio3DurationEmbedder

    vae = build_same(name)
    text_dim = reference.text_encoder.config.d_model
    width, heads = _width(reference)

    def build(depth: int) -> StableAudio3DiTModel:
        return StableAudio3DiTModel(
            io_channels=vae.config.latent_dim,
            embed_dim=width,
            depth=depth,
            num_heads=heads,
            cond_token_dim=text_dim,
            global_cond_dim=text_dim,
            local_add_cond_dim=vae.config.latent_dim + 1,  # inpainting input (latents and mask), unused here
        )

    torch.manual_seed(0)
    transformer = _closest(build, count_parameters(reference.unet), range(1, 49))
    pipe = StableAudio3Pipeline(
        vae=vae,
        text_encoder=reference.text_encoder,
        tokenizer=reference.tokenizer,
        duration_embedder=StableAudio3DurationEmbedder(output_dim=text_dim),
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(stochastic_sampling=False),
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def build_ace_step_pipeline(name: str, reference: LatentMusicPipeline):
    """diffusers' `AceStepPipeline` at the reference pipeline's size: the same text encoder and tokenizer (in place
    of Qwen3-Embedding), the Oobleck VAE of the `<name>-oobleck` config (ACE-Step's VAE class), a condition encoder
    as wide as the DiT with one lyric and one timbre layer (the least it takes; it runs once per call), and an
    `AceStepTransformer1DModel` as wide as the U-Net's widest level (its own patch size 2 and alternating
    sliding-window / full attention) whose depth brings it closest in parameters. ACE-Step samples with a
    flow-matching Euler scheduler over its shifted schedule."""
    from diffusers import AceStepPipeline, AceStepTransformer1DModel, FlowMatchEulerDiscreteScheduler
    from diffusers.pipelines.ace_step import AceStepConditionEncoder

    vae = build_oobleck(name)
    latent = vae.config.decoder_input_channels
    text_dim = reference.text_encoder.config.d_model
    width, heads = _width(reference)
    shape = dict(hidden_size=width, intermediate_size=3 * width, num_attention_heads=heads, head_dim=width // heads)
    shape["num_key_value_heads"] = heads

    def build(depth: int) -> AceStepTransformer1DModel:
        # in_channels: the noisy latents, the source latents and the chunk mask, concatenated (3 x latent)
        return AceStepTransformer1DModel(
            **shape, num_hidden_layers=depth, in_channels=3 * latent, audio_acoustic_hidden_dim=latent
        )

    torch.manual_seed(0)
    transformer = _closest(build, count_parameters(reference.unet), range(1, 49))
    condition_encoder = AceStepConditionEncoder(
        **shape,
        text_hidden_dim=text_dim,
        timbre_hidden_dim=latent,
        num_lyric_encoder_hidden_layers=1,
        num_timbre_encoder_hidden_layers=1,
    )
    pipe = AceStepPipeline(
        vae=vae,
        text_encoder=reference.text_encoder,
        tokenizer=reference.tokenizer,
        transformer=transformer,
        condition_encoder=condition_encoder,
        scheduler=FlowMatchEulerDiscreteScheduler(num_train_timesteps=1, shift=1.0),
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe
