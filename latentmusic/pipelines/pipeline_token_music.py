"""`TokenMusicPipeline`: text → codec tokens by a MusicGen-style LM → waveform."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from diffusers import DiffusionPipeline
from diffusers.pipelines.pipeline_utils import AudioPipelineOutput
from diffusers.utils import logging

from ..loaders.lora import MusicLoraLoaderMixin
from ..models.token_lm import check_sampling_args
from .checks import (
    check_attention_mask,
    check_audio_argument,
    check_device_dtype,
    check_generator,
    check_positive_int,
)
from .common import (
    TextToMusicMixin,
    as_prompt_list,
    check_callback_tensor_inputs,
    check_output_type,
    check_text_and_length,
    frames_for_samples,
    postprocess_audio,
    samples_for_seconds,
)
from .tasks import prepare_audio

logger = logging.get_logger(__name__)


class TokenMusicPipeline(TextToMusicMixin, MusicLoraLoaderMixin, DiffusionPipeline):
    """Text-to-music generation by a token LM over the codes of a residual-VQ codec (MusicGen-style).

    Components:
        codec: `AudioAutoencoder` with `bottleneck_type="rvq"`; its codes are the LM's tokens.
        text_encoder: Any `transformers` text encoder; its first output, the hidden states, is cross-attended.
        tokenizer: The text encoder's tokenizer.
        lm: `TokenLM` over the codec's first `lm.config.num_codebooks` codebooks.
    """

    model_cpu_offload_seq = "text_encoder->lm->codec"
    _callback_tensor_inputs = ["sequence"]
    _optional_components: list[str] = []
    _lora_loadable_modules = ["lm"]  # LoRA adapters (load_lora_weights etc.) go into the lm

    def __init__(self, codec, text_encoder, tokenizer, lm) -> None:
        super().__init__()
        self.register_modules(codec=codec, text_encoder=text_encoder, tokenizer=tokenizer, lm=lm)
        if codec is not None and lm is not None:
            _check_codec_fits_lm(codec, lm)

    # -- properties -------------------------------------------------------------------------------------

    @property
    def sample_rate(self) -> int:
        return self.codec.config.sample_rate

    @property
    def frame_rate(self) -> float:
        """Codec frames (LM steps of the `parallel` pattern) per second."""
        return self.codec.latent_rate

    # -- steps of __call__ ------------------------------------------------------------------------------

    def check_inputs(
        self,
        prompt: list[str] | None,
        negative_prompt: list[str] | None,
        audio_length_in_s: float,
        guidance_scale: float,
        num_waveforms_per_prompt: int,
        top_k: int | None,
        top_p: float | None,
        temperature: float,
        audio: torch.Tensor | np.ndarray | None,
        prompt_embeds: torch.Tensor | None,
        negative_prompt_embeds: torch.Tensor | None,
        output_type: str,
        callback_on_step_end_tensor_inputs: list[str] | None,
        audio_sample_rate: int | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        attention_mask: torch.Tensor | None = None,
        negative_attention_mask: torch.Tensor | None = None,
        callback_on_step_end: Callable | None = None,
    ) -> int:
        """Validate every argument of a call, before any model work, and return the number of prompts.

        Args:
            prompt: The prompts, as a list.
            negative_prompt: The negative prompts, as a list.
            audio_length_in_s: Length of each clip in seconds.
            guidance_scale: Classifier-free guidance weight.
            num_waveforms_per_prompt: Clips per prompt.
            top_k: Top-k sampling.
            top_p: Nucleus sampling.
            temperature: Sampling temperature.
            audio: The audio prompt to continue.
            prompt_embeds: Precomputed text-encoder hidden states.
            negative_prompt_embeds: Precomputed negative hidden states.
            output_type: `"np"`, `"pt"` or `"latent"`.
            callback_on_step_end_tensor_inputs: Tensors for the step callback.
            audio_sample_rate: The audio prompt's sample rate.
            generator: One generator or one per waveform.
            attention_mask: Mask of `prompt_embeds`.
            negative_attention_mask: Mask of `negative_prompt_embeds`.
            callback_on_step_end: The step callback.
        """
        batch_size = check_text_and_length(
            prompt,
            negative_prompt,
            prompt_embeds,
            negative_prompt_embeds,
            guidance_scale,
            self.lm.config.cross_attention_dim,
            "LM",
            audio_length_in_s,
        )
        if samples_for_seconds(audio_length_in_s, self.sample_rate) < 1:
            raise ValueError(
                f"audio_length_in_s={audio_length_in_s} is less than one sample at {self.sample_rate} Hz; "
                "ask for a longer clip"
            )
        check_attention_mask(attention_mask, "attention_mask", prompt_embeds, "prompt_embeds")
        check_attention_mask(
            negative_attention_mask, "negative_attention_mask", negative_prompt_embeds, "negative_prompt_embeds"
        )
        check_positive_int(num_waveforms_per_prompt, "num_waveforms_per_prompt")
        check_device_dtype(self._execution_device, self.lm.dtype)
        check_sampling_args(top_k, top_p, temperature)
        check_output_type(output_type)
        check_generator(generator, batch_size * num_waveforms_per_prompt)
        if callback_on_step_end is not None and not callable(callback_on_step_end):
            raise TypeError(f"callback_on_step_end must be callable, got {type(callback_on_step_end).__name__}")
        check_callback_tensor_inputs(callback_on_step_end_tensor_inputs, self._callback_tensor_inputs)
        if audio is not None:
            seconds = check_audio_argument(audio, audio_sample_rate, "audio", "audio_sample_rate", batch_size)
            prompt_frames = samples_for_seconds(seconds, self.sample_rate) // self.codec.hop_length
            if prompt_frames < 1:
                raise ValueError(
                    f"`audio` lasts {seconds:.4f} s, less than one codec frame "
                    f"({self.codec.hop_length} samples at {self.sample_rate} Hz); pass a longer audio prompt"
                )
            if prompt_frames >= self.num_frames(audio_length_in_s):
                raise ValueError(
                    f"the audio prompt ({seconds:.2f} s) leaves nothing to generate in "
                    f"audio_length_in_s={audio_length_in_s}; ask for a longer clip than the prompt"
                )
        elif audio_sample_rate is not None:
            raise ValueError("audio_sample_rate is the rate of `audio`; pass the audio too, or leave it out")
        return batch_size

    def num_frames(self, audio_length_in_s: float) -> int:
        """Codec frames that cover a clip of `audio_length_in_s` seconds.

        Args:
            audio_length_in_s: Length of the clip in seconds.
        """
        return frames_for_samples(samples_for_seconds(audio_length_in_s, self.sample_rate), self.codec.hop_length)

    @torch.no_grad()
    def encode_audio_prompt(self, audio: torch.Tensor, batch_size: int, num_waveforms_per_prompt: int) -> torch.Tensor:
        """Codes `(batch_size * num_waveforms_per_prompt, num_codebooks, frames)` of the whole frames of `audio`.

        Args:
            audio: `(1 or batch_size, channels, samples)` at the codec's sample rate.
            batch_size: Number of prompts.
            num_waveforms_per_prompt: Clips per prompt.
        """
        frames = audio.shape[-1] // self.codec.hop_length
        audio = audio[..., : frames * self.codec.hop_length].to(self._execution_device, self.codec.dtype)
        codes = self.codec.encode_codes(audio)[:, : self.lm.config.num_codebooks]
        codes = codes.expand(batch_size, -1, -1) if codes.shape[0] == 1 else codes
        return codes.repeat_interleave(num_waveforms_per_prompt, dim=0)

    def decode_codes(self, codes: torch.Tensor, num_samples: int) -> torch.Tensor:
        """Decode codes to `(batch, channels, samples)`, cropped to at most `num_samples`.

        Args:
            codes: `(batch, num_codebooks, frames)`.
            num_samples: Samples asked for.
        """
        if codes.shape[-1] == 0:  # interrupted before the first frame was complete
            return torch.zeros(codes.shape[0], self.codec.config.audio_channels, 0)
        return self.codec.decode_codes(codes)[..., :num_samples]

    # -- the call -------------------------------------------------------------------------------------------

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str] | None = None,
        negative_prompt: str | list[str] | None = None,
        audio_length_in_s: float | None = None,
        guidance_scale: float = 3.0,
        num_waveforms_per_prompt: int = 1,
        top_k: int | None = 250,
        top_p: float | None = None,
        temperature: float = 1.0,
        generator: torch.Generator | list[torch.Generator] | None = None,
        audio: torch.Tensor | np.ndarray | None = None,
        audio_sample_rate: int | None = None,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        negative_attention_mask: torch.Tensor | None = None,
        output_type: str = "np",
        return_dict: bool = True,
        callback_on_step_end: Callable[[DiffusionPipeline, int, int, dict], dict] | None = None,
        callback_on_step_end_tensor_inputs: list[str] | None = None,
        use_cache: bool = True,
    ) -> AudioPipelineOutput | tuple:
        r"""Generate music from text (and optionally continue an audio prompt).

        Args:
            prompt (`str` or `list[str]`): What to generate; or pass `prompt_embeds`.
            negative_prompt (`str` or `list[str]`, *optional*): What to steer away from (needs
                `guidance_scale > 1`).
            audio_length_in_s (`float`, *optional*): Length of each clip in seconds (including an audio
                prompt); defaults to 10 s.
            guidance_scale (`float`, defaults to 3.0): Classifier-free guidance on the logits; 1 disables it.
                The conditional and unconditional branches run as one batched forward.
            num_waveforms_per_prompt (`int`, defaults to 1): Clips per prompt.
            top_k (`int`, *optional*, defaults to 250): Sample among the k most likely codes; `None` or 0
                for all.
            top_p (`float`, *optional*): Nucleus sampling in (0, 1]; `None` or 1 disables it.
            temperature (`float`, defaults to 1.0): Softmax temperature; 0 is greedy.
            generator (`torch.Generator` or list, *optional*): For reproducible sampling (one per clip, or
                one for all).
            audio (`torch.Tensor` or `np.ndarray`, *optional*): An audio prompt to continue, `(samples,)`, `(channels,
                samples)` or `(1 or batch, channels, samples)`; it is resampled to the codec's rate and its whole
                codec frames are kept (re-encoded) at the start of every clip.
            audio_sample_rate (`int`, *optional*): The audio prompt's sample rate; required with `audio`.
            prompt_embeds (`torch.Tensor`, *optional*): Precomputed text-encoder hidden states.
            negative_prompt_embeds (`torch.Tensor`, *optional*): Precomputed negative hidden states.
            attention_mask (`torch.Tensor`, *optional*): Mask of `prompt_embeds` (1 = token, 0 = padding).
            negative_attention_mask (`torch.Tensor`, *optional*): Mask of `negative_prompt_embeds`.
            output_type (`str`, defaults to `"np"`): `"np"`, `"pt"` or `"latent"` (the codes
                `(batch, num_codebooks, frames)`, not decoded).
            return_dict (`bool`, defaults to `True`): Return an `AudioPipelineOutput` instead of a tuple.
            callback_on_step_end (`Callable`, *optional*): Called as
                `callback_on_step_end(pipe, step, step, callback_kwargs)` after every generated sequence step
                (tokens have no timestep, so the step is passed twice); the dict it returns may replace
                `sequence`, the LM's pattern sequence so far `(batch, num_codebooks, step + 1)`. Set
                `pipe._interrupt = True` in it to stop: the clips then end with the last complete frame.
            callback_on_step_end_tensor_inputs (`list[str]`, *optional*): Which tensors go in
                `callback_kwargs` (from `_callback_tensor_inputs`).
            use_cache (`bool`, defaults to `True`): Reuse the LM's keys and values of earlier steps.

        Returns:
            `AudioPipelineOutput` whose `audios` has shape `(batch, channels, samples)`, or a tuple
            `(audios,)` when `return_dict=False`.
        """
        # 0. Defaults
        audio_length_in_s = 10.0 if audio_length_in_s is None else audio_length_in_s
        prompts = as_prompt_list(prompt)
        negative_prompts = as_prompt_list(negative_prompt, "negative_prompt")
        callback_on_step_end_tensor_inputs = callback_on_step_end_tensor_inputs or ["sequence"]

        # 1. Check inputs, all of them, before any model work
        batch_size = self.check_inputs(
            prompts,
            negative_prompts,
            audio_length_in_s,
            guidance_scale,
            num_waveforms_per_prompt,
            top_k,
            top_p,
            temperature,
            audio,
            prompt_embeds,
            negative_prompt_embeds,
            output_type,
            callback_on_step_end_tensor_inputs,
            audio_sample_rate=audio_sample_rate,
            generator=generator,
            attention_mask=attention_mask,
            negative_attention_mask=negative_attention_mask,
            callback_on_step_end=callback_on_step_end,
        )
        if audio is not None:
            audio = prepare_audio(
                audio, audio_sample_rate, self.sample_rate, self.codec.config.audio_channels, batch_size
            )
        self._guidance_scale = guidance_scale
        self._interrupt = False
        device = self._execution_device

        # 2. Encode the prompt (negative first when guiding) and the audio prompt
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
        prefix = None if audio is None else self.encode_audio_prompt(audio, batch_size, num_waveforms_per_prompt)

        # 3. Generate the codes step by step
        num_samples = samples_for_seconds(audio_length_in_s, self.sample_rate)
        num_frames = self.num_frames(audio_length_in_s)
        self._num_timesteps = self.lm.pattern.sequence_length(num_frames)

        def on_step(step: int, sequence: torch.Tensor) -> torch.Tensor | None:
            available = {"sequence": sequence}
            callback_kwargs = {name: available[name] for name in callback_on_step_end_tensor_inputs}
            outputs = callback_on_step_end(self, step, step, callback_kwargs) or {}
            return outputs.get("sequence")

        with self.progress_bar(total=self._num_timesteps) as progress_bar:
            codes = self.lm.generate(
                text.hidden_states.to(self.lm.dtype),
                num_frames,
                encoder_attention_mask=text.attention_mask,
                guidance_scale=guidance_scale,
                top_k=top_k,
                top_p=top_p,
                temperature=temperature,
                generator=generator,
                prefix=prefix,
                use_cache=use_cache,
                callback=None if callback_on_step_end is None else on_step,
                interrupted=lambda: self.interrupt,
                progress=progress_bar.update,
            )

        # 4. Decode and post-process
        if output_type == "latent":
            output = codes
        else:
            output = postprocess_audio(self.decode_codes(codes, num_samples), output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (output,)
        return AudioPipelineOutput(audios=output)


def _check_codec_fits_lm(codec, lm) -> None:
    if not getattr(codec, "is_codec", False):
        bottleneck = getattr(codec.config, "bottleneck_type", None)
        raise ValueError(
            f"the codec must be an AudioAutoencoder with bottleneck_type='rvq' (a codec with discrete codes), got "
            f"{type(codec).__name__} with bottleneck_type={bottleneck!r}"
        )
    quantizers, size = codec.bottleneck.num_quantizers, codec.bottleneck.codebook_size
    if lm.config.codebook_size != size or lm.config.num_codebooks > quantizers:
        raise ValueError(
            f"the LM models {lm.config.num_codebooks} codebooks of {lm.config.codebook_size} codes, but the codec has "
            f"{quantizers} of {size}; build the LM with codebook_size={size} and num_codebooks <= {quantizers}"
        )
