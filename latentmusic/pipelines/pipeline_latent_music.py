"""`LatentMusicPipeline`: text → latent diffusion with any fitting diffusers scheduler → waveform."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from diffusers import DiffusionPipeline
from diffusers.pipelines.pipeline_utils import AudioPipelineOutput
from diffusers.schedulers import KarrasDiffusionSchedulers
from diffusers.utils import logging
from diffusers.utils.torch_utils import randn_tensor

from ..audio import crop_or_pad
from ..loaders.lora import MusicLoraLoaderMixin
from ..melody import PITCH_CLASSES, melody_chroma
from ..models import AudioAutoencoder, vae_utils
from .checks import (
    check_attention_mask,
    check_audio_argument,
    check_device_dtype,
    check_float_tensor,
    check_generator,
    check_positive_int,
    check_real,
)
from .common import (
    PromptEmbeddings,
    TextToMusicMixin,
    as_prompt_list,
    check_callback_tensor_inputs,
    check_output_type,
    check_text_and_length,
    frames_for_samples,
    postprocess_audio,
    samples_for_seconds,
)
from .schedulers import check_scheduler_fits, objective_of_scheduler
from .tasks import (
    Segment,
    add_noise_at,
    fade_out,
    keep_frames,
    parse_story,
    plan_windows,
    prepare_audio,
    regenerate_mask,
)

logger = logging.get_logger(__name__)


class LatentMusicPipeline(TextToMusicMixin, MusicLoraLoaderMixin, DiffusionPipeline):
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
    _lora_loadable_modules = ["unet"]  # LoRA adapters (load_lora_weights etc.) go into the unet

    def __init__(self, vae, text_encoder, tokenizer, unet, scheduler: KarrasDiffusionSchedulers) -> None:
        super().__init__()
        self.register_modules(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler)
        # what the U-Net was trained for: the scheduler it is built or loaded with; a swapped scheduler must fit it
        self.trained_objective = None if scheduler is None else objective_of_scheduler(scheduler)

    # -- properties -------------------------------------------------------------------------------------

    @property
    def sample_rate(self) -> int:
        return vae_utils.vae_sample_rate(self.vae)

    @property
    def max_audio_length_in_s(self) -> float | None:
        """Longest clip the U-Net was built for (its timing conditioning range); `None` if unbounded."""
        return self.unet.config.max_seconds if self.unet.config.use_timing_conditioning else None

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
        eta: float = 0.0,
        generator: torch.Generator | list[torch.Generator] | None = None,
        attention_mask: torch.Tensor | None = None,
        negative_attention_mask: torch.Tensor | None = None,
        callback_on_step_end: Callable | None = None,
        audio_seconds: float | None = None,
        strength: float | None = None,
        mask: Any = None,
        story: Any = None,
        window_overlap_in_s: float | None = None,
        melody: torch.Tensor | np.ndarray | None = None,
        melody_sample_rate: int | None = None,
    ) -> int:
        """Validate every argument of a call, before any model work, and return the number of prompts.

        Args:
            prompt: The prompts, as a list.
            negative_prompt: The negative prompts, as a list.
            audio_length_in_s: Length of each clip in seconds.
            num_inference_steps: Denoising steps.
            guidance_scale: Classifier-free guidance weight.
            num_waveforms_per_prompt: Clips per prompt.
            prompt_embeds: Precomputed text-encoder hidden states.
            negative_prompt_embeds: Precomputed negative hidden states.
            latents: Starting noise.
            output_type: `"np"`, `"pt"` or `"latent"`.
            callback_on_step_end_tensor_inputs: Tensors for the step callback.
            eta: DDIM's eta.
            generator: One generator or one per waveform.
            attention_mask: Mask of `prompt_embeds`.
            negative_attention_mask: Mask of `negative_prompt_embeds`.
            callback_on_step_end: The step callback.
            audio_seconds: Length of the input audio (already checked by `check_audio_argument`), if any.
            strength: Audio-to-audio strength.
            mask: Inpainting ranges or sample mask.
            story: The story segments, if any (already parsed).
            window_overlap_in_s: Context between long-form windows.
            melody: The melody reference.
            melody_sample_rate: Its sample rate.
        """
        check_scheduler_fits(self.scheduler, self.trained_objective)
        batch_size = check_text_and_length(
            prompt,
            negative_prompt,
            prompt_embeds,
            negative_prompt_embeds,
            guidance_scale,
            self.unet.config.cross_attention_dim,
            "U-Net",
            audio_length_in_s,
        )
        check_attention_mask(attention_mask, "attention_mask", prompt_embeds, "prompt_embeds")
        check_attention_mask(
            negative_attention_mask, "negative_attention_mask", negative_prompt_embeds, "negative_prompt_embeds"
        )
        check_positive_int(num_inference_steps, "num_inference_steps")
        train_steps = self.scheduler.config.get("num_train_timesteps")
        if train_steps is not None and num_inference_steps > train_steps:
            raise ValueError(
                f"num_inference_steps={num_inference_steps} is more than the {train_steps} timesteps the model was "
                f"trained on; use at most {train_steps} (20-50 is typical)"
            )
        check_positive_int(num_waveforms_per_prompt, "num_waveforms_per_prompt")
        check_device_dtype(self._execution_device, self.unet.dtype)
        check_real(eta, "eta", minimum=0.0, maximum=1.0, hint="DDIM's eta: 0 is deterministic, 1 is DDPM-like")
        check_output_type(output_type)
        check_generator(generator, batch_size * num_waveforms_per_prompt)
        if callback_on_step_end is not None and not callable(callback_on_step_end):
            raise TypeError(f"callback_on_step_end must be callable, got {type(callback_on_step_end).__name__}")
        if latents is not None:
            check_float_tensor(latents, "latents")
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
        check_callback_tensor_inputs(callback_on_step_end_tensor_inputs, self._callback_tensor_inputs)
        if window_overlap_in_s is not None:
            window = self.max_audio_length_in_s or audio_length_in_s
            if story is None and audio_length_in_s <= window + 1e-6:
                logger.warning(
                    f"window_overlap_in_s={window_overlap_in_s} has no effect: {audio_length_in_s} s fits in one "
                    f"{window} s window (it acts on long-form and story generation)"
                )
            check_real(window_overlap_in_s, "window_overlap_in_s", minimum=0.0)
            if window_overlap_in_s >= window:
                raise ValueError(
                    f"window_overlap_in_s={window_overlap_in_s} must be shorter than the U-Net's {window} s window"
                )
        if melody is not None:
            if not self.trained_with_melody:
                raise ValueError(
                    "this U-Net was not trained with melodies (it has no chroma input channels); "
                    "train one with melody.enabled=true"
                )
            check_audio_argument(melody, melody_sample_rate, "melody", "melody_sample_rate")
        elif melody_sample_rate is not None:
            raise ValueError("melody_sample_rate is the rate of `melody`; pass the melody too, or leave it out")
        self.check_task_inputs(audio_seconds, audio_length_in_s, strength, mask, story, latents)
        return batch_size

    def latent_length(self, audio_length_in_s: float) -> int:
        """Latent frames the U-Net denoises for a clip of `audio_length_in_s` seconds."""
        samples = samples_for_seconds(audio_length_in_s, self.sample_rate)
        return frames_for_samples(samples, vae_utils.vae_hop_length(self.vae))

    @property
    def init_noise_sigma(self) -> float:
        """The scale of the starting noise: the scheduler's, or 1 for flow matching (which starts at unit noise)."""
        return getattr(self.scheduler, "init_noise_sigma", 1.0)

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
        return latents * self.init_noise_sigma

    def prepare_extra_step_kwargs(self, generator, eta: float) -> dict[str, Any]:
        """Pass `eta` and `generator` only to schedulers whose `step` takes them."""
        accepted = set(inspect.signature(self.scheduler.step).parameters)
        kwargs: dict[str, Any] = {}
        if "eta" in accepted:
            kwargs["eta"] = eta
        if "generator" in accepted:
            kwargs["generator"] = generator
        return kwargs

    # -- the JEN-1 tasks: audio to condition on -------------------------------------------------------------

    @property
    def trained_with_masks(self) -> bool:
        """Whether the U-Net takes JEN-1's mask and masked-latent channels (trained with `masking` on)."""
        return self._extra_channel_layout()[0]

    @property
    def trained_with_melody(self) -> bool:
        """Whether the U-Net takes a melody chromagram (12 channels; trained with `melody.enabled`)."""
        return self._extra_channel_layout()[1]

    def _extra_channel_layout(self) -> tuple[bool, bool]:
        """The U-Net's extra input channels are `[mask, masked latents]` (1 + latent channels) when trained with
        masks, then 12 chroma channels when trained with melodies."""
        extra, latent = self.unet.config.extra_in_channels, vae_utils.vae_latent_channels(self.vae)
        layouts = {0: (False, False), latent + 1: (True, False), PITCH_CLASSES: (False, True)}
        layouts[latent + 1 + PITCH_CLASSES] = (True, True)
        if extra not in layouts or latent + 1 == PITCH_CLASSES:
            raise ValueError(
                f"the U-Net takes {extra} extra input channels; this pipeline feeds 0, {latent + 1} (mask + masked "
                f"latents), {PITCH_CLASSES} (melody) or both ({latent + 1 + PITCH_CLASSES})"
            )
        return layouts[extra]

    def encode_audio(self, audio: torch.Tensor, num_frames: int) -> torch.Tensor:
        """Scaled latents (posterior mode) of `(batch, channels, samples)` audio, `num_frames` long (zero-padded)."""
        hop = vae_utils.vae_hop_length(self.vae)
        audio = crop_or_pad(audio, max(num_frames * hop, audio.shape[-1]))
        latents = self.vae.encode(audio.to(self._execution_device, self.vae.dtype)).latent_dist.mode()
        return vae_utils.scale_latents(self.vae, crop_or_pad(latents, num_frames))

    def check_task_inputs(
        self,
        audio_seconds: float | None,
        audio_length_in_s: float,
        strength: float | None,
        mask: Any,
        story: Any,
        latents: torch.Tensor | None,
    ) -> None:
        """Validate the arguments of continuation, inpainting, audio-to-audio, long-form and story mode."""
        if audio_seconds is None and (strength is not None or mask is not None):
            raise ValueError("`strength` and `mask` act on input audio; pass it as `audio=`")
        if strength is not None:
            check_real(strength, "strength", minimum=0.0, maximum=1.0, hint="0 keeps the input, 1 ignores it")
        if mask is not None and audio_seconds is not None:
            regenerate_mask(mask, samples_for_seconds(audio_seconds, self.sample_rate), self.sample_rate)
        if audio_seconds is not None and strength is None and mask is None:
            if audio_length_in_s <= audio_seconds:
                raise ValueError(
                    f"continuation: the prefix ({audio_seconds:.2f} s) must be shorter than audio_length_in_s "
                    f"({audio_length_in_s} s); ask for a longer clip, or pass `mask=` or `strength=` to edit it"
                )
        elif audio_seconds is not None and abs(audio_length_in_s - audio_seconds) > 1e-3:
            raise ValueError(
                f"inpainting and audio-to-audio keep the input's length ({audio_seconds:.2f} s); "
                f"leave audio_length_in_s unset (got {audio_length_in_s})"
            )
        long = self.max_audio_length_in_s is not None and audio_length_in_s > self.max_audio_length_in_s + 1e-6
        if (long or story is not None) and (mask is not None or strength is not None or latents is not None):
            raise ValueError(
                f"`mask`, `strength` and `latents` work within one window of at most {self.max_audio_length_in_s} s "
                "(no story); long-form generation and story mode take a prompt or segments and, optionally, a prefix"
            )
        if story is not None:
            # a segment that ends in the same latent frame as the one before would have no frames: its prompt unused
            prompts, seconds = parse_story(story)
            ends = [self.latent_length(end) for end in np.cumsum(seconds).tolist()]
            for index, (start, end) in enumerate(zip([0, *ends], ends)):
                if end <= start:
                    frame = vae_utils.vae_hop_length(self.vae) / self.sample_rate
                    raise ValueError(
                        f"story segment {index} ({prompts[index]!r}, {seconds[index]} s) is shorter than one latent "
                        f"frame ({frame:.3f} s), so its prompt would never be heard; make it longer"
                    )

    # -- the call -------------------------------------------------------------------------------------------

    def denoise(
        self,
        latents: torch.Tensor,
        text: PromptEmbeddings,
        timesteps: torch.Tensor,
        seconds: float,
        extra_step_kwargs: dict[str, Any],
        progress_bar,
        known: torch.Tensor | None = None,
        keep: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
        callback_on_step_end: Callable | None = None,
        callback_on_step_end_tensor_inputs: list[str] | None = None,
        step_offset: int = 0,
        melody: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Run the scheduler over `timesteps` from `latents`.

        Where `keep` (`(1 or batch, 1, frames)`, in [0, 1]) is positive, the latents are pulled towards
        `known` noised to the next step's level with `noise` (RePaint-style replacement; exactly `known`
        after the last step), so kept regions come out as the known latents. A U-Net trained with masks also
        sees the mask and the masked known latents as extra input channels, and one trained with melodies the
        `(1, 12, frames)` chromagram `melody` (zeros without one).
        """
        copies = 2 if self.do_classifier_free_guidance else 1
        prompt_embeds = text.hidden_states.to(self.unet.dtype)
        total = latents.shape[0]
        seconds_total = torch.full((total * copies,), float(seconds), device=latents.device)
        parts = []
        if self.trained_with_masks:
            mask = (
                torch.zeros_like(latents[:, :1]) if keep is None else (keep > 0).to(latents.dtype).expand(total, 1, -1)
            )
            parts += [mask, torch.zeros_like(latents) if known is None else known * mask]
        if self.trained_with_melody:
            frames = latents.shape[-1]
            chroma = latents.new_zeros(1, PITCH_CLASSES, frames) if melody is None else melody.to(latents)
            parts.append(chroma.expand(total, -1, -1))
        conditioning = torch.cat([torch.cat(parts, dim=1)] * copies) if parts else None
        for i, t in enumerate(timesteps):
            if self.interrupt:
                continue
            model_input = torch.cat([latents] * copies)
            if hasattr(self.scheduler, "scale_model_input"):
                model_input = self.scheduler.scale_model_input(model_input, t)
            if conditioning is not None:
                model_input = torch.cat([model_input, conditioning.to(model_input.dtype)], dim=1)
            noise_pred = self.unet(
                model_input,
                t,
                encoder_hidden_states=prompt_embeds,
                encoder_attention_mask=text.attention_mask,
                seconds_start=torch.zeros_like(seconds_total),
                seconds_total=seconds_total,
            ).sample
            if self.do_classifier_free_guidance:
                uncond, cond = noise_pred.chunk(2)
                noise_pred = uncond + self.guidance_scale * (cond - uncond)
            latents = self.scheduler.step(noise_pred, t, latents, **extra_step_kwargs).prev_sample
            if keep is not None:
                last = i == len(timesteps) - 1
                target = known if last else add_noise_at(self.scheduler, known, noise, timesteps[i + 1])
                latents = keep * target + (1 - keep) * latents

            if callback_on_step_end is not None:
                available = {"latents": latents, "prompt_embeds": prompt_embeds}
                callback_kwargs = {name: available[name] for name in callback_on_step_end_tensor_inputs}
                outputs = callback_on_step_end(self, step_offset + i, t, callback_kwargs) or {}
                latents = outputs.get("latents", latents)
                prompt_embeds = outputs.get("prompt_embeds", prompt_embeds)
            progress_bar.update()
        return latents

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
        audio: torch.Tensor | np.ndarray | None = None,
        audio_sample_rate: int | None = None,
        strength: float | None = None,
        mask: Any = None,
        story: list | None = None,
        window_overlap_in_s: float | None = None,
        melody: torch.Tensor | np.ndarray | None = None,
        melody_sample_rate: int | None = None,
    ) -> AudioPipelineOutput | tuple:
        r"""Generate music from text; continue, inpaint or remix audio; make long pieces and stories.

        Args:
            prompt (`str` or `list[str]`): What to generate; or pass `prompt_embeds` (or `story`).
            negative_prompt (`str` or `list[str]`, *optional*): What to steer away from (needs
                `guidance_scale > 1`).
            audio_length_in_s (`float`, *optional*): Length of each clip in seconds; defaults to the
                U-Net's `max_seconds` (or 10 s without timing conditioning), or to the input audio's length
                when inpainting or remixing. Longer than `max_seconds` means long-form generation: window by
                window, each continuing the end of the last, crossfaded in latent space.
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
                `callback_on_step_end(pipe, step, timestep, callback_kwargs)` after every step (steps count on
                across the windows of a long generation); the dict it returns may replace `latents` or
                `prompt_embeds`. Set `pipe._interrupt = True` in it to stop.
            callback_on_step_end_tensor_inputs (`list[str]`, *optional*): Which tensors go in
                `callback_kwargs` (from `_callback_tensor_inputs`).
            audio (`torch.Tensor` or `np.ndarray`, *optional*): Audio to start from, `(samples,)`,
                `(channels, samples)` or `(batch, channels, samples)`. Alone it is a prefix to continue (ask
                for a longer `audio_length_in_s`); with `mask` it is inpainted; with `strength` it is remixed.
            audio_sample_rate (`int`, *optional*): Its sample rate; required with `audio` (it is resampled to the
                model's).
            strength (`float`, *optional*): Audio-to-audio (SDEdit): how far to noise the input before
                denoising it with the prompt; 0 returns the input's reconstruction, 1 ignores the input.
            mask (*optional*): What to regenerate in `audio`: `(start_s, end_s)` ranges in seconds, or a
                per-sample mask (nonzero = regenerate). The rest is kept.
            story (`list`, *optional*): `[(prompt, seconds), ...]` (or `"prompt:seconds"` strings): one
                continuous piece whose sections follow their prompts (MusicLM's story mode); replaces `prompt`.
            window_overlap_in_s (`float`, *optional*): Context carried from one window to the next in long-form
                and story generation (default: a quarter of the window).
            melody (`torch.Tensor` or `np.ndarray`, *optional*): A reference recording whose tune to follow
                (MusicGen-style: its dominant pitch class per frame, stretched over the output's length). Needs
                a U-Net trained with melodies (`trained_with_melody`).
            melody_sample_rate (`int`, *optional*): The reference's sample rate; required with `melody`.

        Returns:
            `AudioPipelineOutput` whose `audios` has shape `(batch, channels, samples)`, or a tuple
            `(audios,)` when `return_dict=False`.
        """
        # 0. Defaults: story segments, input audio (pure checks and arithmetic, no model work)
        if story is not None:
            if prompt is not None or prompt_embeds is not None:
                raise ValueError("pass either `story` segments or `prompt`/`prompt_embeds`, not both")
            story_prompts, story_seconds = parse_story(story)
            if audio_length_in_s is not None and abs(audio_length_in_s - sum(story_seconds)) > 1e-6:
                raise ValueError(
                    f"audio_length_in_s={audio_length_in_s} differs from the story's {sum(story_seconds)} s; "
                    "leave it unset"
                )
            audio_length_in_s, prompt = sum(story_seconds), story_prompts[0]
        prompts = as_prompt_list(prompt)
        negative_prompts = as_prompt_list(negative_prompt, "negative_prompt")
        batch_guess = len(prompts) if prompts else (1 if prompt_embeds is None else len(prompt_embeds))
        audio_seconds = None
        if audio is not None:
            audio_seconds = check_audio_argument(audio, audio_sample_rate, "audio", "audio_sample_rate", batch_guess)
            if audio_length_in_s is None:
                if mask is None and strength is None:
                    raise ValueError(
                        f"continuation: pass audio_length_in_s longer than the prefix ({audio_seconds:.2f} s); "
                        "or pass `mask=` (inpainting) or `strength=` (audio-to-audio)"
                    )
                audio_length_in_s = audio_seconds
        elif audio_sample_rate is not None:
            raise ValueError("audio_sample_rate is the rate of `audio`; pass the audio too, or leave it out")
        if audio_length_in_s is None:
            audio_length_in_s = self.max_audio_length_in_s or 10.0
        callback_on_step_end_tensor_inputs = callback_on_step_end_tensor_inputs or ["latents"]

        # 1. Check inputs, all of them, before any model work
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
            eta=eta,
            generator=generator,
            attention_mask=attention_mask,
            negative_attention_mask=negative_attention_mask,
            callback_on_step_end=callback_on_step_end,
            audio_seconds=audio_seconds,
            strength=strength,
            mask=mask,
            story=story,
            window_overlap_in_s=window_overlap_in_s,
            melody=melody,
            melody_sample_rate=melody_sample_rate,
        )
        clips = None
        if audio is not None:
            channels = vae_utils.vae_audio_channels(self.vae)
            clips = prepare_audio(audio, audio_sample_rate, self.sample_rate, channels, batch_size)
        self._guidance_scale = guidance_scale
        self._interrupt = False
        device = self._execution_device
        total = batch_size * num_waveforms_per_prompt
        num_samples = samples_for_seconds(audio_length_in_s, self.sample_rate)
        num_frames = self.latent_length(audio_length_in_s)
        hop = vae_utils.vae_hop_length(self.vae)

        # 2. Encode the prompt(s) (negative first when guiding)
        def encode(texts: list[str] | None) -> PromptEmbeddings:
            return self.encode_prompt(
                texts,
                device,
                num_waveforms_per_prompt,
                self.do_classifier_free_guidance,
                negative_prompts,
                prompt_embeds if story is None else None,
                negative_prompt_embeds,
                attention_mask,
                negative_attention_mask,
            )

        texts = [encode([p]) for p in story_prompts] if story is not None else [encode(prompts)]

        # 3. What the input audio fixes: known latents and where to keep them
        known = keep = None
        if clips is not None:
            if strength is None and mask is None:  # continuation: keep the prefix
                regenerate = torch.arange(num_samples) >= clips.shape[-1]
            else:
                regenerate = (
                    regenerate_mask(mask, num_samples, self.sample_rate)
                    if mask is not None
                    else torch.zeros(num_samples, dtype=torch.bool)
                )
            known = self.encode_audio(clips, num_frames).repeat_interleave(num_waveforms_per_prompt, dim=0)
            keep = keep_frames(regenerate, hop, num_frames).to(device, known.dtype)[None, None]
            if strength is None and mask is None and not keep.any():
                raise ValueError(
                    f"the prefix ({audio_seconds:.3f} s) is shorter than one latent frame ({hop} samples); "
                    "pass a longer prefix"
                )
        dtype = texts[0].hidden_states.dtype
        extra_step_kwargs = self.prepare_extra_step_kwargs(generator, eta)
        chroma = None
        if melody is not None:
            chroma = melody_chroma(melody, melody_sample_rate, num_frames)[None].to(device, dtype)

        # 4. Long-form and story mode: window by window
        window = self.latent_length(self.max_audio_length_in_s) if self.max_audio_length_in_s else num_frames
        if story is not None or num_frames > window:
            latents = self.generate_windows(
                texts,
                story_seconds if story is not None else [audio_length_in_s],
                num_frames,
                window,
                window_overlap_in_s,
                total,
                dtype,
                generator,
                num_inference_steps,
                extra_step_kwargs,
                known,
                keep,
                callback_on_step_end,
                callback_on_step_end_tensor_inputs,
                chroma,
            )
        else:
            # 5. One window: text-to-music, continuation, inpainting or audio-to-audio
            self.scheduler.set_timesteps(num_inference_steps, device=device)
            timesteps = self.scheduler.timesteps
            if strength is not None:
                timesteps = self.strength_timesteps(timesteps, num_inference_steps, strength)
            self._num_timesteps = len(timesteps)
            start = self.prepare_latents(total, num_frames, dtype, device, generator, latents)
            noise = start / self.init_noise_sigma
            if strength is not None and strength < 1.0:
                start = known if len(timesteps) == 0 else add_noise_at(self.scheduler, known, noise, timesteps[0])
            with self.progress_bar(total=len(timesteps)) as progress_bar:
                latents = self.denoise(
                    start,
                    texts[0],
                    timesteps,
                    audio_length_in_s,
                    extra_step_kwargs,
                    progress_bar,
                    known,
                    None if strength is not None and mask is None else keep,
                    noise,
                    callback_on_step_end,
                    callback_on_step_end_tensor_inputs,
                    melody=chroma,
                )

        # 6. Decode and post-process
        if output_type == "latent":
            audio = latents
        else:
            audio = postprocess_audio(self.decode_latents(latents, num_samples), output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (audio,)
        return AudioPipelineOutput(audios=audio)

    def strength_timesteps(self, timesteps: torch.Tensor, num_inference_steps: int, strength: float) -> torch.Tensor:
        """The last `strength` of the schedule, as diffusers' img2img pipelines take it."""
        skip = num_inference_steps - min(int(num_inference_steps * strength), num_inference_steps)
        begin = skip * self.scheduler.order
        if hasattr(self.scheduler, "set_begin_index"):
            self.scheduler.set_begin_index(begin)
        return timesteps[begin:]

    def generate_windows(
        self,
        texts: list[PromptEmbeddings],
        seconds: list[float],
        num_frames: int,
        window: int,
        overlap_in_s: float | None,
        total: int,
        dtype: torch.dtype,
        generator,
        num_inference_steps: int,
        extra_step_kwargs: dict[str, Any],
        known: torch.Tensor | None,
        keep: torch.Tensor | None,
        callback_on_step_end: Callable | None,
        callback_on_step_end_tensor_inputs: list[str],
        melody: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Long-form and story generation: windows of at most `window` frames, each continuing the last
        `overlap` frames before it, which fade out (a latent crossfade). Memory is bounded by the window."""
        device = self._execution_device
        overlap = window // 4 if overlap_in_s is None else self.latent_length(overlap_in_s)
        boundaries = torch.cumsum(torch.tensor(seconds), 0).tolist()
        ends = [min(num_frames, self.latent_length(b)) for b in boundaries]
        segments = [Segment(i, 0 if i == 0 else ends[i - 1], end) for i, end in enumerate(ends)]
        prefix = 0 if keep is None else int(keep[0, 0].sum())
        result = torch.zeros(total, vae_utils.vae_latent_channels(self.vae), num_frames, device=device, dtype=dtype)
        if prefix:
            result[..., :prefix] = known[..., :prefix]
        plan = plan_windows(segments, window, overlap, start=prefix)
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        self._num_timesteps = len(self.scheduler.timesteps)
        hop, rate = vae_utils.vae_hop_length(self.vae), self.sample_rate
        with self.progress_bar(total=len(plan) * self._num_timesteps) as progress_bar:
            for index, w in enumerate(plan):
                self.scheduler.set_timesteps(num_inference_steps, device=device)
                start = self.prepare_latents(total, w.frames, dtype, device, generator)
                window_known = window_keep = None
                if w.context:
                    window_known = torch.zeros_like(start)
                    window_known[..., : w.context] = result[..., w.start : w.start + w.context]
                    generated = w.start + w.context > prefix  # the user's prefix is kept as is, not faded
                    weights = fade_out(w.context, w.context // 2 if generated else 0)
                    window_keep = torch.zeros(1, 1, w.frames, device=device, dtype=dtype)
                    window_keep[..., : w.context] = weights.to(device, dtype)
                latents = self.denoise(
                    start,
                    texts[w.prompt],
                    self.scheduler.timesteps,
                    w.frames * hop / rate,
                    extra_step_kwargs,
                    progress_bar,
                    window_known,
                    window_keep,
                    start / self.init_noise_sigma,
                    callback_on_step_end,
                    callback_on_step_end_tensor_inputs,
                    step_offset=index * self._num_timesteps,
                    melody=None if melody is None else melody[..., w.start : w.start + w.frames],
                )
                result[..., w.start : w.start + w.frames] = latents
        return result

    def decode_latents(self, latents: torch.Tensor, num_samples: int) -> torch.Tensor:
        """Unscale latents, decode them to `(batch, channels, samples)` and crop to the asked length.

        An `AudioAutoencoder` decodes a clip longer than the U-Net's window chunk by chunk, so memory stays
        bounded however long the piece."""
        latents = vae_utils.unscale_latents(self.vae, latents.to(self.vae.dtype))
        long = self.max_audio_length_in_s is not None and num_samples > self.max_audio_length_in_s * self.sample_rate
        chunk = long and isinstance(self.vae, AudioAutoencoder) and not self.vae.use_chunking
        if chunk:
            self.vae.enable_chunking()
        try:
            return vae_utils.decode(self.vae, latents, num_samples)
        finally:
            if chunk:
                self.vae.disable_chunking()
