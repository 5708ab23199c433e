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
from ..melody import melody_chroma
from ..models import AudioAutoencoder, conditioning, vae_utils
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
    GenerationTask,
    Segment,
    add_noise_at,
    fade_out,
    keep_frames,
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
        *,
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
        melody: torch.Tensor | np.ndarray | None = None,
        melody_sample_rate: int | None = None,
        bpm: float | list[float] | None = None,
    ) -> int:
        """Validate every argument of a call that the task (`GenerationTask.build`) has not, before any model work,
        and return the number of prompts.

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
            melody: The melody reference.
            melody_sample_rate: Its sample rate.
            bpm: The beat grid's tempo, one or one per prompt.

        Returns:
            The number of prompts.
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
        if melody is not None:
            if not self.trained_with_melody:
                raise ValueError(
                    "this U-Net was not trained with melodies (it has no chroma input channels); "
                    "train one with melody.enabled=true"
                )
            check_audio_argument(melody, melody_sample_rate, "melody", "melody_sample_rate")
        elif melody_sample_rate is not None:
            raise ValueError("melody_sample_rate is the rate of `melody`; pass the melody too, or leave it out")
        if bpm is not None:
            if not self.trained_with_beat_grid:
                raise ValueError(
                    "this U-Net was not trained with beat grids (it has no beat_grid input channels), so bpm= cannot "
                    "place the beats; write the tempo in the prompt, or train one with beat.enabled=true"
                )
            tempos = bpm if isinstance(bpm, (list, tuple)) else [bpm]
            if isinstance(bpm, (list, tuple)) and len(tempos) != batch_size:
                raise ValueError(f"got {len(tempos)} tempos in bpm for {batch_size} prompts; pass one, or one each")
            for tempo in tempos:
                check_real(tempo, "bpm", minimum=1.0, hint="quarter notes per minute, e.g. 120")
        return batch_size

    def build_task(
        self,
        *,
        prompt: list[str] | None,
        prompt_embeds: torch.Tensor | None,
        latents: torch.Tensor | None,
        **arguments: Any,
    ) -> GenerationTask:
        """Read the call's task (text-to-music, continuation, inpainting, audio-to-audio, long-form or story) from
        its arguments and validate it against this pipeline's autoencoder and U-Net window.

        Args:
            prompt: The prompts, as a list.
            prompt_embeds: Precomputed hidden states, if any.
            latents: Starting noise, if any.
            **arguments: `story`, `audio_length_in_s`, `audio`, `audio_sample_rate`, `strength`, `mask` and
                `window_overlap_in_s`, as the call got them.

        Returns:
            The validated task.
        """
        num_prompts = len(prompt) if prompt else (1 if prompt_embeds is None else len(prompt_embeds))
        return GenerationTask.build(
            prompt=prompt,
            has_prompt_embeds=prompt_embeds is not None,
            has_latents=latents is not None,
            num_prompts=num_prompts,
            sample_rate=self.sample_rate,
            hop_length=vae_utils.vae_hop_length(self.vae),
            max_audio_length_in_s=self.max_audio_length_in_s,
            **arguments,
        )

    def latent_length(self, audio_length_in_s: float) -> int:
        """Latent frames the U-Net denoises for a clip of `audio_length_in_s` seconds."""
        samples = samples_for_seconds(audio_length_in_s, self.sample_rate)
        return frames_for_samples(samples, vae_utils.vae_hop_length(self.vae))

    @property
    def init_noise_sigma(self) -> float:
        """The scale of the starting noise: the scheduler's, or 1 for flow matching (which starts at unit noise)."""
        return getattr(self.scheduler, "init_noise_sigma", 1.0)

    def prepare_timesteps(self, num_inference_steps: int, strength: float | None = None) -> torch.Tensor:
        """Set the scheduler's timesteps and return those to run: all of them, or the last `strength` of them."""
        self.scheduler.set_timesteps(num_inference_steps, device=self._execution_device)
        timesteps = self.scheduler.timesteps
        if strength is not None:
            timesteps = self.strength_timesteps(timesteps, num_inference_steps, strength)
        return timesteps

    def strength_timesteps(self, timesteps: torch.Tensor, num_inference_steps: int, strength: float) -> torch.Tensor:
        """The last `strength` of the schedule, as diffusers' img2img pipelines take it."""
        skip = num_inference_steps - min(int(num_inference_steps * strength), num_inference_steps)
        begin = skip * self.scheduler.order
        if hasattr(self.scheduler, "set_begin_index"):
            self.scheduler.set_begin_index(begin)
        return timesteps[begin:]

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
    def conditioning_inputs(self) -> dict[str, int]:
        """The U-Net's conditioning inputs by name and width, in concatenation order (see
        `latentmusic.models.conditioning`)."""
        return conditioning.ordered(self.unet.config.conditioning_inputs or {})

    @property
    def trained_with_masks(self) -> bool:
        """Whether the U-Net takes JEN-1's mask and known-latent inputs (trained with `masking` on)."""
        return conditioning.MASK in self.conditioning_inputs

    @property
    def trained_with_beat_grid(self) -> bool:
        """Whether the U-Net takes a beat grid (2 channels; trained with `beat.enabled`), which `bpm=` fills."""
        return conditioning.BEAT_GRID in self.conditioning_inputs

    @property
    def trained_with_melody(self) -> bool:
        """Whether the U-Net takes a melody chromagram (12 channels; trained with `melody.enabled`)."""
        return conditioning.MELODY_CHROMA in self.conditioning_inputs

    def encode_audio(self, audio: torch.Tensor, num_frames: int) -> torch.Tensor:
        """Scaled latents (posterior mode) of `(batch, channels, samples)` audio, `num_frames` long (zero-padded)."""
        hop = vae_utils.vae_hop_length(self.vae)
        audio = crop_or_pad(audio, max(num_frames * hop, audio.shape[-1]))
        latents = self.vae.encode(audio.to(self._execution_device, self.vae.dtype)).latent_dist.mode()
        return vae_utils.scale_latents(self.vae, crop_or_pad(latents, num_frames))

    def prepare_known_latents(
        self, task: GenerationTask, num_frames: int, num_waveforms_per_prompt: int, batch_size: int
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """What the task's input audio fixes: its scaled latents and, per frame, whether to keep them.

        Args:
            task: The call's task.
            num_frames: Latent frames of the output.
            num_waveforms_per_prompt: Clips per prompt (the known latents are repeated to match).
            batch_size: Number of prompts.

        Returns:
            `(known, keep)`: `(batch * num_waveforms_per_prompt, latent_channels, num_frames)` latents and
            `(1, 1, num_frames)` keep weights (1 = keep, 0 = generate); `(None, None)` without input audio.
        """
        if task.audio is None:
            return None, None
        channels = vae_utils.vae_audio_channels(self.vae)
        clips = prepare_audio(task.audio, task.audio_sample_rate, self.sample_rate, channels, batch_size)
        num_samples = samples_for_seconds(task.audio_length_in_s, self.sample_rate)
        hop = vae_utils.vae_hop_length(self.vae)
        if task.keeps_prefix:
            regenerate = torch.arange(num_samples) >= clips.shape[-1]
        elif task.mask is not None:
            regenerate = regenerate_mask(task.mask, num_samples, self.sample_rate)
        else:  # audio-to-audio: everything is regenerated from the noised input, nothing replaced
            regenerate = torch.zeros(num_samples, dtype=torch.bool)
        known = self.encode_audio(clips, num_frames).repeat_interleave(num_waveforms_per_prompt, dim=0)
        keep = keep_frames(regenerate, hop, num_frames).to(self._execution_device, known.dtype)[None, None]
        if task.keeps_prefix and not keep.any():
            raise ValueError(
                f"the prefix ({task.audio_seconds:.3f} s) is shorter than one latent frame ({hop} samples); "
                "pass a longer prefix"
            )
        return known, keep

    def denoise(
        self,
        latents: torch.Tensor,
        *,
        text: PromptEmbeddings,
        timesteps: torch.Tensor,
        seconds: float,
        extra_step_kwargs: dict[str, Any],
        progress_bar: Any,
        known: torch.Tensor | None = None,
        keep: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
        callback_on_step_end: Callable | None = None,
        callback_on_step_end_tensor_inputs: list[str] | None = None,
        step_offset: int = 0,
        melody: torch.Tensor | None = None,
        beat: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Run the scheduler over `timesteps` from `latents` (the denoising loop of one window).

        Where `keep` (`(1 or batch, 1, frames)`, in [0, 1]) is positive, the latents are pulled towards
        `known` noised to the next step's level with `noise` (RePaint-style replacement; exactly `known`
        after the last step), so kept regions come out as the known latents. A U-Net trained with masks also
        sees the mask and the masked known latents as extra input channels, and one trained with melodies the
        `(1, 12, frames)` chromagram `melody` (zeros without one), and one trained with beat grids the `(1 or batch,
        2, frames)` grid `beat`.

        Args:
            latents: The starting latents, `(batch, latent_channels, frames)`.
            text: The prompt embeddings (`[negative, positive]` when guiding).
            timesteps: The timesteps to run.
            seconds: The window's length in seconds (its timing conditioning).
            extra_step_kwargs: Extra arguments of `scheduler.step`.
            progress_bar: Updated once per step.
            known: Known latents, if any.
            keep: Per-frame keep weights of `known`.
            noise: The noise `known` is noised with to each step's level.
            callback_on_step_end: The step callback.
            callback_on_step_end_tensor_inputs: Tensors for it.
            step_offset: Steps already run in earlier windows (the callback's step counts on).
            melody: The window's chromagram, if any.
            beat: The window's beat grid, if any.

        Returns:
            The denoised latents.
        """
        copies = 2 if self.do_classifier_free_guidance else 1
        prompt_embeds = text.hidden_states.to(self.unet.dtype)
        total = latents.shape[0]
        seconds_total = torch.full((total * copies,), float(seconds), device=latents.device)
        extra = conditioning.build_conditioning(
            self.conditioning_inputs, latents, keep=keep, known=known, melody=melody, beat=beat
        )
        extra = None if extra is None else torch.cat([extra] * copies)
        for i, t in enumerate(timesteps):
            if self.interrupt:
                continue
            model_input = torch.cat([latents] * copies)
            if hasattr(self.scheduler, "scale_model_input"):
                model_input = self.scheduler.scale_model_input(model_input, t)
            if extra is not None:
                model_input = torch.cat([model_input, extra.to(model_input.dtype)], dim=1)
            noise_pred = self.unet(
                model_input,
                t,
                encoder_hidden_states=prompt_embeds,
                encoder_attention_mask=text.attention_mask,
                **conditioning.timing_conditioning(seconds_total),
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
        bpm: float | list[float] | None = None,
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
            latents (`torch.Tensor`, *optional*): Unit-variance starting noise of shape
                `(batch * num_waveforms_per_prompt, latent_channels, latent_length)`, scaled by the scheduler's
                `init_noise_sigma` as drawn noise is.
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
            bpm (`float` or `list[float]`, *optional*): Put the beats at this tempo (quarter notes per minute; one,
                or one per prompt), the first on the first frame. Needs a U-Net trained with beat grids
                (`trained_with_beat_grid`); the tempo written in the prompt is only text.

        Returns:
            `AudioPipelineOutput` whose `audios` has shape `(batch, channels, samples)`, or a tuple
            `(audios,)` when `return_dict=False`.
        """
        # 1. Check inputs: read the task, then validate every argument, before any model work
        prompts = as_prompt_list(prompt)
        task = self.build_task(
            prompt=prompts,
            prompt_embeds=prompt_embeds,
            latents=latents,
            story=story,
            audio_length_in_s=audio_length_in_s,
            audio=audio,
            audio_sample_rate=audio_sample_rate,
            strength=strength,
            mask=mask,
            window_overlap_in_s=window_overlap_in_s,
        )
        prompts = as_prompt_list(task.prompt)
        negative_prompts = as_prompt_list(negative_prompt, "negative_prompt")
        callback_on_step_end_tensor_inputs = callback_on_step_end_tensor_inputs or ["latents"]
        batch_size = self.check_inputs(
            prompt=prompts,
            negative_prompt=negative_prompts,
            audio_length_in_s=task.audio_length_in_s,
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            num_waveforms_per_prompt=num_waveforms_per_prompt,
            prompt_embeds=prompt_embeds,
            negative_prompt_embeds=negative_prompt_embeds,
            latents=latents,
            output_type=output_type,
            callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs,
            eta=eta,
            generator=generator,
            attention_mask=attention_mask,
            negative_attention_mask=negative_attention_mask,
            callback_on_step_end=callback_on_step_end,
            melody=melody,
            melody_sample_rate=melody_sample_rate,
            bpm=bpm,
        )
        self._guidance_scale = guidance_scale
        self._interrupt = False
        device = self._execution_device
        total = batch_size * num_waveforms_per_prompt
        num_samples = samples_for_seconds(task.audio_length_in_s, self.sample_rate)
        num_frames = self.latent_length(task.audio_length_in_s)

        # 2. Encode the prompt(s) (negative first when guiding); a story encodes one per segment
        def encode(texts: list[str] | None, embeds: torch.Tensor | None) -> PromptEmbeddings:
            return self.encode_prompt(
                texts,
                device,
                num_waveforms_per_prompt=num_waveforms_per_prompt,
                do_classifier_free_guidance=self.do_classifier_free_guidance,
                negative_prompt=negative_prompts,
                prompt_embeds=embeds,
                negative_prompt_embeds=negative_prompt_embeds,
                attention_mask=attention_mask,
                negative_attention_mask=negative_attention_mask,
            )

        if task.kind == "story":
            texts = [encode([text], None) for text in task.segment_prompts]
        else:
            texts = [encode(prompts, prompt_embeds)]
        dtype = texts[0].hidden_states.dtype

        # 3. Prepare timesteps (audio-to-audio runs only the last `strength` of them)
        timesteps = self.prepare_timesteps(num_inference_steps, task.strength)
        self._num_timesteps = len(timesteps)

        # 4. Prepare latents: what the input audio fixes, the melody, and (for one window) the starting noise
        known, keep = self.prepare_known_latents(task, num_frames, num_waveforms_per_prompt, batch_size)
        chroma = None
        if melody is not None:
            chroma = melody_chroma(melody, melody_sample_rate, num_frames)[None].to(device, dtype)
        grid = None
        if bpm is not None:  # one tempo for all, or one per prompt (repeated for its waveforms)
            tempos = torch.tensor(bpm if isinstance(bpm, (list, tuple)) else [bpm], dtype=torch.float64)
            latent_rate = self.sample_rate / vae_utils.vae_hop_length(self.vae)
            grid = conditioning.beat_grid(tempos, num_frames, latent_rate)
            grid = grid.repeat_interleave(num_waveforms_per_prompt if len(tempos) > 1 else 1, 0).to(device, dtype)
        extra_step_kwargs = self.prepare_extra_step_kwargs(generator, eta)
        if not task.is_windowed:
            start = self.prepare_latents(total, num_frames, dtype, device, generator, latents)
            noise = start / self.init_noise_sigma
            if task.strength is not None and task.strength < 1.0:  # SDEdit: start from the noised input
                start = known if len(timesteps) == 0 else add_noise_at(self.scheduler, known, noise, timesteps[0])

        # 5. Denoising loop: one window, or window by window for long-form and story generation
        if task.is_windowed:
            latents = self.generate_windows(
                texts=texts,
                task=task,
                num_frames=num_frames,
                total=total,
                dtype=dtype,
                generator=generator,
                num_inference_steps=num_inference_steps,
                extra_step_kwargs=extra_step_kwargs,
                known=known,
                keep=keep,
                callback_on_step_end=callback_on_step_end,
                callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs,
                melody=chroma,
                beat=grid,
            )
        else:
            with self.progress_bar(total=len(timesteps)) as progress_bar:
                latents = self.denoise(
                    start,
                    text=texts[0],
                    timesteps=timesteps,
                    seconds=task.audio_length_in_s,
                    extra_step_kwargs=extra_step_kwargs,
                    progress_bar=progress_bar,
                    known=known,
                    # audio-to-audio denoises the whole noised input; only a mask keeps frames as they are
                    keep=None if task.kind == "audio-to-audio" else keep,
                    noise=noise,
                    callback_on_step_end=callback_on_step_end,
                    callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs,
                    melody=chroma,
                    beat=grid,
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

    def generate_windows(
        self,
        *,
        texts: list[PromptEmbeddings],
        task: GenerationTask,
        num_frames: int,
        total: int,
        dtype: torch.dtype,
        generator: torch.Generator | list[torch.Generator] | None,
        num_inference_steps: int,
        extra_step_kwargs: dict[str, Any],
        known: torch.Tensor | None,
        keep: torch.Tensor | None,
        callback_on_step_end: Callable | None,
        callback_on_step_end_tensor_inputs: list[str],
        melody: torch.Tensor | None = None,
        beat: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Long-form and story generation: windows of at most the U-Net's `max_seconds`, each continuing the last
        `task.window_overlap_in_s` before it (default a quarter window), which fade out: a latent crossfade.
        Memory is bounded by the window.

        Args:
            texts: Prompt embeddings, one per story segment (or one for all).
            task: The call's task (its segments and overlap).
            num_frames: Latent frames of the whole piece.
            total: Clips generated (prompts times waveforms per prompt).
            dtype: Latent dtype.
            generator: For the windows' starting noise.
            num_inference_steps: Denoising steps per window.
            extra_step_kwargs: Extra arguments of `scheduler.step`.
            known: The prefix's latents, if any.
            keep: Its per-frame keep weights.
            callback_on_step_end: The step callback.
            callback_on_step_end_tensor_inputs: Tensors for it.
            melody: The piece's chromagram, if any.
            beat: The piece's beat grid, if any.

        Returns:
            The piece's latents, `(total, latent_channels, num_frames)`.
        """
        device = self._execution_device
        window = self.latent_length(self.max_audio_length_in_s) if self.max_audio_length_in_s else num_frames
        overlap_in_s = task.window_overlap_in_s
        overlap = window // 4 if overlap_in_s is None else self.latent_length(overlap_in_s)
        boundaries = torch.cumsum(torch.tensor(task.segment_seconds), 0).tolist()
        ends = [min(num_frames, self.latent_length(b)) for b in boundaries]
        segments = [Segment(i, 0 if i == 0 else ends[i - 1], end) for i, end in enumerate(ends)]
        prefix = 0 if keep is None else int(keep[0, 0].sum())
        result = torch.zeros(total, vae_utils.vae_latent_channels(self.vae), num_frames, device=device, dtype=dtype)
        if prefix:
            result[..., :prefix] = known[..., :prefix]
        plan = plan_windows(segments, window, overlap, start=prefix)
        hop, rate = vae_utils.vae_hop_length(self.vae), self.sample_rate
        with self.progress_bar(total=len(plan) * self._num_timesteps) as progress_bar:
            for index, w in enumerate(plan):
                self.scheduler.set_timesteps(num_inference_steps, device=device)  # multistep solvers start afresh
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
                    text=texts[w.prompt],
                    timesteps=self.scheduler.timesteps,
                    seconds=w.frames * hop / rate,
                    extra_step_kwargs=extra_step_kwargs,
                    progress_bar=progress_bar,
                    known=window_known,
                    keep=window_keep,
                    noise=start / self.init_noise_sigma,
                    callback_on_step_end=callback_on_step_end,
                    callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs,
                    step_offset=index * self._num_timesteps,
                    melody=None if melody is None else melody[..., w.start : w.start + w.frames],
                    beat=None if beat is None else beat[..., w.start : w.start + w.frames],
                )
                result[..., w.start : w.start + w.frames] = latents
        return result

    def decode_latents(self, latents: torch.Tensor, num_samples: int) -> torch.Tensor:
        """Unscale latents, decode them to `(batch, channels, samples)` and crop to the asked length.

        An `AudioAutoencoder` decodes a clip longer than the U-Net's window in windows of its `chunk_size` frames
        (with `chunk_context` on each side, see `vae_utils.decode_in_windows`), so memory stays bounded however
        long the piece; the autoencoder itself is left as it is.

        Args:
            latents: Scaled latents, `(batch, latent_channels, frames)`.
            num_samples: Samples of the output.

        Returns:
            The audio.
        """
        latents = vae_utils.unscale_latents(self.vae, latents.to(self.vae.dtype))
        long = self.max_audio_length_in_s is not None and num_samples > self.max_audio_length_in_s * self.sample_rate
        if long and isinstance(self.vae, AudioAutoencoder):
            config = self.vae.config
            return vae_utils.decode_in_windows(self.vae, latents, num_samples, config.chunk_size, config.chunk_context)
        return vae_utils.decode(self.vae, latents, num_samples)
