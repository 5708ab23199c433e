"""`LatentMusicPipeline`: text → latent diffusion with any fitting diffusers scheduler → waveform."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch
from diffusers import DiffusionPipeline
from diffusers.pipelines.pipeline_utils import AudioPipelineOutput
from diffusers.schedulers import KarrasDiffusionSchedulers
from diffusers.utils import logging
from diffusers.utils.torch_utils import randn_tensor

from ..models import vae_utils
from .common import (
    PromptEmbeddings,
    as_prompt_list,
    check_output_type,
    check_prompt_inputs,
    encode_text,
    frames_for_samples,
    postprocess_audio,
    samples_for_seconds,
)

logger = logging.get_logger(__name__)

EXAMPLE = """
    Examples:
        ```py
        >>> import torch
        >>> from diffusers import DPMSolverMultistepScheduler
        >>> from latentmusic import LatentMusicPipeline

        >>> pipe = LatentMusicPipeline.from_pretrained("path/to/pipeline")
        >>> pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)
        >>> out = pipe("a slow Bach chorale on a church organ", audio_length_in_s=10.0,
        ...            num_inference_steps=25, guidance_scale=4.0,
        ...            generator=torch.Generator().manual_seed(0))
        >>> out.audios.shape  # (batch, channels, samples)
        ```
"""


class LatentMusicPipeline(DiffusionPipeline):
    """Text-to-music generation by latent diffusion.

    Components:
        vae: The audio autoencoder (`AudioAutoencoder` or diffusers' `AutoencoderOobleck`) whose
            latents the U-Net denoises.
        text_encoder: Any `transformers` text encoder (T5EncoderModel, ClapTextModel, BertModel, ...);
            its first output, the hidden states, is cross-attended.
        tokenizer: The text encoder's tokenizer.
        unet: `UNet1DConditionModel` over the autoencoder's latent sequences.
        scheduler: Any diffusers scheduler that fits the U-Net's prediction type; swap it with
            `pipe.scheduler = X.from_config(pipe.scheduler.config)`.
    """

    model_cpu_offload_seq = "text_encoder->unet->vae"
    _callback_tensor_inputs = ["latents", "prompt_embeds"]
    _optional_components: list[str] = []

    def __init__(self, vae, text_encoder, tokenizer, unet, scheduler: KarrasDiffusionSchedulers) -> None:
        super().__init__()
        self.register_modules(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler)

    # -- properties -------------------------------------------------------------------------------------

    @property
    def sample_rate(self) -> int:
        return vae_utils.vae_sample_rate(self.vae)

    @property
    def max_audio_length_in_s(self) -> float | None:
        """Longest clip the U-Net was built for (its timing conditioning range); `None` if unbounded."""
        return self.unet.config.max_seconds if self.unet.config.use_timing_conditioning else None

    @property
    def guidance_scale(self) -> float:
        return self._guidance_scale

    @property
    def do_classifier_free_guidance(self) -> bool:
        return self._guidance_scale > 1.0

    @property
    def num_timesteps(self) -> int:
        return self._num_timesteps

    @property
    def interrupt(self) -> bool:
        return self._interrupt

    # -- steps of __call__ ------------------------------------------------------------------------------

    def check_inputs(
        self,
        prompt: list[str] | None,
        negative_prompt: list[str] | None,
        audio_length_in_s: float,
        num_inference_steps: int,
        guidance_scale: float,
        num_waveforms_per_prompt: int,
        prompt_embeds: torch.Tensor | None,
        negative_prompt_embeds: torch.Tensor | None,
        latents: torch.Tensor | None,
        output_type: str,
        callback_on_step_end_tensor_inputs: list[str] | None,
    ) -> int:
        """Validate a call's arguments and return the number of prompts."""
        batch_size = check_prompt_inputs(
            prompt, negative_prompt, prompt_embeds, negative_prompt_embeds, guidance_scale
        )
        if prompt_embeds is not None and prompt_embeds.shape[-1] != self.unet.config.cross_attention_dim:
            raise ValueError(
                f"`prompt_embeds` have hidden size {prompt_embeds.shape[-1]}, but the U-Net cross-attends to "
                f"{self.unet.config.cross_attention_dim}; encode them with this pipeline's `encode_prompt`"
            )
        if not audio_length_in_s > 0:
            raise ValueError(f"audio_length_in_s must be positive, got {audio_length_in_s}")
        limit = self.max_audio_length_in_s
        if limit is not None and audio_length_in_s > limit:
            raise ValueError(
                f"audio_length_in_s={audio_length_in_s} is longer than this model's timing range of {limit} s; "
                f"ask for at most {limit} s"
            )
        if not isinstance(num_inference_steps, int) or num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be a positive integer, got {num_inference_steps}")
        if not isinstance(num_waveforms_per_prompt, int) or num_waveforms_per_prompt < 1:
            raise ValueError(f"num_waveforms_per_prompt must be a positive integer, got {num_waveforms_per_prompt}")
        check_output_type(output_type)
        if latents is not None:
            expected = (
                batch_size * num_waveforms_per_prompt,
                vae_utils.vae_latent_channels(self.vae),
                self.latent_length(audio_length_in_s),
            )
            if tuple(latents.shape) != expected:
                raise ValueError(
                    f"`latents` have shape {tuple(latents.shape)}, but {audio_length_in_s} s for "
                    f"{expected[0]} waveforms needs {expected}"
                )
        unknown = set(callback_on_step_end_tensor_inputs or []) - set(self._callback_tensor_inputs)
        if unknown:
            raise ValueError(
                f"callback_on_step_end_tensor_inputs {sorted(unknown)} are not available; "
                f"choose from {self._callback_tensor_inputs}"
            )
        return batch_size

    def latent_length(self, audio_length_in_s: float) -> int:
        """Latent frames the U-Net denoises for a clip of `audio_length_in_s` seconds."""
        samples = samples_for_seconds(audio_length_in_s, self.sample_rate)
        return frames_for_samples(samples, vae_utils.vae_hop_length(self.vae))

    @torch.no_grad()
    def encode_prompt(
        self,
        prompt: list[str] | None,
        device: torch.device,
        num_waveforms_per_prompt: int = 1,
        do_classifier_free_guidance: bool = True,
        negative_prompt: list[str] | None = None,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        negative_attention_mask: torch.Tensor | None = None,
    ) -> PromptEmbeddings:
        """Encode prompts, and for guidance the negative prompts, into one batch `[negative, positive]`.

        Without a negative prompt the unconditional branch uses the empty text, the condition the
        model saw when its captions were dropped during training.
        """
        if prompt_embeds is None:
            positive = encode_text(self.tokenizer, self.text_encoder, prompt, device)
        else:
            positive = PromptEmbeddings(
                prompt_embeds.to(device), None if attention_mask is None else attention_mask.to(device)
            )
        batch_size = positive.hidden_states.shape[0]
        positive = positive.repeat(num_waveforms_per_prompt)
        if not do_classifier_free_guidance:
            return positive
        if negative_prompt_embeds is not None:
            mask = None if negative_attention_mask is None else negative_attention_mask.to(device)
            negative = PromptEmbeddings(negative_prompt_embeds.to(device), mask)
        else:
            texts = negative_prompt or [""]
            texts = texts * batch_size if len(texts) == 1 else texts
            negative = encode_text(self.tokenizer, self.text_encoder, texts, device, positive.hidden_states.shape[1])
        negative = negative.repeat(num_waveforms_per_prompt)
        return _concat_embeddings(negative, positive)

    def prepare_latents(
        self,
        batch_size: int,
        latent_length: int,
        dtype: torch.dtype,
        device: torch.device,
        generator: torch.Generator | list[torch.Generator] | None,
        latents: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Draw the starting noise (or take `latents`) scaled by the scheduler's initial sigma."""
        shape = (batch_size, vae_utils.vae_latent_channels(self.vae), latent_length)
        if isinstance(generator, list) and len(generator) != batch_size:
            raise ValueError(
                f"got {len(generator)} generators for {batch_size} waveforms; pass one generator or one per waveform"
            )
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
        else:
            latents = latents.to(device=device, dtype=dtype)
        return latents * self.scheduler.init_noise_sigma

    def prepare_extra_step_kwargs(self, generator, eta: float) -> dict[str, Any]:
        """Pass `eta` and `generator` only to schedulers whose `step` takes them."""
        accepted = set(inspect.signature(self.scheduler.step).parameters)
        kwargs: dict[str, Any] = {}
        if "eta" in accepted:
            kwargs["eta"] = eta
        if "generator" in accepted:
            kwargs["generator"] = generator
        return kwargs

    def decode_latents(self, latents: torch.Tensor, num_samples: int) -> torch.Tensor:
        """Unscale latents, decode them to `(batch, channels, samples)` and crop to the asked length."""
        return vae_utils.decode(self.vae, vae_utils.unscale_latents(self.vae, latents.to(self.vae.dtype)), num_samples)

    # -- the call -------------------------------------------------------------------------------------------

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str] | None = None,
        negative_prompt: str | list[str] | None = None,
        audio_length_in_s: float | None = None,
        num_inference_steps: int = 50,
        guidance_scale: float = 4.0,
        num_waveforms_per_prompt: int = 1,
        eta: float = 0.0,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        negative_attention_mask: torch.Tensor | None = None,
        output_type: str = "np",
        return_dict: bool = True,
        callback_on_step_end: Callable[[DiffusionPipeline, int, torch.Tensor, dict], dict] | None = None,
        callback_on_step_end_tensor_inputs: list[str] | None = None,
    ) -> AudioPipelineOutput | tuple:
        r"""Generate music from text.

        Args:
            prompt (`str` or `list[str]`): What to generate; or pass `prompt_embeds`.
            negative_prompt (`str` or `list[str]`, *optional*): What to steer away from (needs
                `guidance_scale > 1`).
            audio_length_in_s (`float`, *optional*): Length of each clip in seconds; defaults to the
                U-Net's `max_seconds` (or 10 s without timing conditioning).
            num_inference_steps (`int`, defaults to 50): Denoising steps; fewer is faster.
            guidance_scale (`float`, defaults to 4.0): Classifier-free guidance weight; 1 disables it.
                The conditional and unconditional branches run as one batched forward.
            num_waveforms_per_prompt (`int`, defaults to 1): Clips per prompt.
            eta (`float`, defaults to 0.0): DDIM's η; ignored by schedulers that do not take it.
            generator (`torch.Generator` or list, *optional*): For reproducible noise (one per clip, or
                one for all).
            latents (`torch.Tensor`, *optional*): Starting noise of shape
                `(batch * num_waveforms_per_prompt, latent_channels, latent_length)`, used as given.
            prompt_embeds (`torch.Tensor`, *optional*): Precomputed text-encoder hidden states.
            negative_prompt_embeds (`torch.Tensor`, *optional*): Precomputed negative hidden states.
            attention_mask (`torch.Tensor`, *optional*): Mask of `prompt_embeds` (1 = token, 0 = padding).
            negative_attention_mask (`torch.Tensor`, *optional*): Mask of `negative_prompt_embeds`.
            output_type (`str`, defaults to `"np"`): `"np"`, `"pt"` or `"latent"` (scaled latents,
                not decoded).
            return_dict (`bool`, defaults to `True`): Return an `AudioPipelineOutput` instead of a tuple.
            callback_on_step_end (`Callable`, *optional*): Called as
                `callback_on_step_end(pipe, step, timestep, callback_kwargs)` after every step; the dict it
                returns may replace `latents` or `prompt_embeds`. Set `pipe._interrupt = True` in it to stop.
            callback_on_step_end_tensor_inputs (`list[str]`, *optional*): Which tensors go in
                `callback_kwargs` (from `_callback_tensor_inputs`).

        Returns:
            `AudioPipelineOutput` whose `audios` has shape `(batch, channels, samples)`, or a tuple
            `(audios,)` when `return_dict=False`.
        """
        # 0. Defaults
        if audio_length_in_s is None:
            audio_length_in_s = self.max_audio_length_in_s or 10.0
        prompts = as_prompt_list(prompt)
        negative_prompts = as_prompt_list(negative_prompt, "negative_prompt")
        callback_on_step_end_tensor_inputs = callback_on_step_end_tensor_inputs or ["latents"]

        # 1. Check inputs
        batch_size = self.check_inputs(
            prompts,
            negative_prompts,
            audio_length_in_s,
            num_inference_steps,
            guidance_scale,
            num_waveforms_per_prompt,
            prompt_embeds,
            negative_prompt_embeds,
            latents,
            output_type,
            callback_on_step_end_tensor_inputs,
        )
        self._guidance_scale = guidance_scale
        self._interrupt = False
        device = self._execution_device

        # 2. Encode the prompt (negative first when guiding)
        text = self.encode_prompt(
            prompts,
            device,
            num_waveforms_per_prompt,
            self.do_classifier_free_guidance,
            negative_prompts,
            prompt_embeds,
            negative_prompt_embeds,
            attention_mask,
            negative_attention_mask,
        )
        prompt_embeds = text.hidden_states.to(self.unet.dtype)

        # 3. Timesteps
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        timesteps = self.scheduler.timesteps
        self._num_timesteps = len(timesteps)

        # 4. Starting latents
        num_samples = samples_for_seconds(audio_length_in_s, self.sample_rate)
        total = batch_size * num_waveforms_per_prompt
        latents = self.prepare_latents(
            total, self.latent_length(audio_length_in_s), prompt_embeds.dtype, device, generator, latents
        )
        extra_step_kwargs = self.prepare_extra_step_kwargs(generator, eta)
        copies = 2 if self.do_classifier_free_guidance else 1
        seconds_total = torch.full((total * copies,), float(audio_length_in_s), device=device)
        seconds_start = torch.zeros_like(seconds_total)

        # 5. Denoising loop
        with self.progress_bar(total=len(timesteps)) as progress_bar:
            for i, t in enumerate(timesteps):
                if self.interrupt:
                    continue
                model_input = torch.cat([latents] * copies)
                if hasattr(self.scheduler, "scale_model_input"):
                    model_input = self.scheduler.scale_model_input(model_input, t)
                noise_pred = self.unet(
                    model_input,
                    t,
                    encoder_hidden_states=prompt_embeds,
                    encoder_attention_mask=text.attention_mask,
                    seconds_start=seconds_start,
                    seconds_total=seconds_total,
                ).sample
                if self.do_classifier_free_guidance:
                    uncond, cond = noise_pred.chunk(2)
                    noise_pred = uncond + guidance_scale * (cond - uncond)
                latents = self.scheduler.step(noise_pred, t, latents, **extra_step_kwargs).prev_sample

                if callback_on_step_end is not None:
                    available = {"latents": latents, "prompt_embeds": prompt_embeds}
                    callback_kwargs = {name: available[name] for name in callback_on_step_end_tensor_inputs}
                    outputs = callback_on_step_end(self, i, t, callback_kwargs) or {}
                    latents = outputs.get("latents", latents)
                    prompt_embeds = outputs.get("prompt_embeds", prompt_embeds)
                progress_bar.update()

        # 6. Decode and post-process
        if output_type == "latent":
            audio = latents
        else:
            audio = postprocess_audio(self.decode_latents(latents, num_samples), output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (audio,)
        return AudioPipelineOutput(audios=audio)


def _concat_embeddings(negative: PromptEmbeddings, positive: PromptEmbeddings) -> PromptEmbeddings:
    """One batch `[negative, positive]`; a missing mask means every token is real."""
    if negative.hidden_states.shape[1:] != positive.hidden_states.shape[1:]:
        raise ValueError(
            f"negative prompt embeddings {tuple(negative.hidden_states.shape)} and prompt embeddings "
            f"{tuple(positive.hidden_states.shape)} differ in length or width; encode both the same way"
        )
    hidden = torch.cat([negative.hidden_states, positive.hidden_states])
    if negative.attention_mask is None and positive.attention_mask is None:
        return PromptEmbeddings(hidden, None)
    masks = [
        e.attention_mask
        if e.attention_mask is not None
        else torch.ones(e.hidden_states.shape[:2], device=hidden.device)
        for e in (negative, positive)
    ]
    return PromptEmbeddings(hidden, torch.cat([m.to(hidden.device, torch.long) for m in masks]))
