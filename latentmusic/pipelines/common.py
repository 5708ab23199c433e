"""What the diffusion and token pipelines share: prompt checks, prompt encoding, output shaping.

One place for each concept, so both pipelines answer a bad prompt with the same message, encode text the
same way (and so can share a text encoder), and return audio in the same shapes.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from diffusers.utils import logging

from ..checkpoints import resolve_pretrained
from .checks import MAX_SECONDS, check_float_tensor, check_real
from .loading import check_pipeline_folder

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

logger = logging.get_logger(__name__)

OUTPUT_TYPES = ("np", "pt", "latent")


@dataclass
class PromptEmbeddings:
    """Text-encoder hidden states and their attention mask (1 = real token, 0 = padding)."""

    hidden_states: torch.Tensor
    attention_mask: torch.Tensor | None = None

    def repeat(self, times: int) -> PromptEmbeddings:
        """Repeat each prompt `times` times in a row (for `num_waveforms_per_prompt`)."""
        mask = None if self.attention_mask is None else self.attention_mask.repeat_interleave(times, dim=0)
        return PromptEmbeddings(self.hidden_states.repeat_interleave(times, dim=0), mask)


def as_prompt_list(prompt: str | list[str] | None, name: str = "prompt") -> list[str] | None:
    """Normalise a prompt argument to a list and reject what cannot be a prompt."""
    if prompt is None:
        return None
    prompts = [prompt] if isinstance(prompt, str) else prompt
    if not isinstance(prompts, (list, tuple)) or not all(isinstance(p, str) for p in prompts):
        raise TypeError(f"`{name}` must be a string or a list of strings, got {type(prompt).__name__}")
    if len(prompts) == 0:
        raise ValueError(f"`{name}` is an empty list; pass at least one text, e.g. ['a slow piano chorale']")
    if name == "prompt":
        empty = [i for i, p in enumerate(prompts) if not p.strip()]
        if empty:
            raise ValueError(
                f"`prompt` {empty[0]} is empty; describe the music (e.g. 'a fast fiddle tune on flute'). "
                "To steer away from something, use `negative_prompt`"
            )
    return list(prompts)


def check_prompt_inputs(
    prompt: list[str] | None,
    negative_prompt: list[str] | None,
    prompt_embeds: torch.Tensor | None,
    negative_prompt_embeds: torch.Tensor | None,
    guidance_scale: float,
) -> int:
    """Validate the text side of a pipeline call and return the number of prompts."""
    check_real(guidance_scale, "guidance_scale", minimum=0.0, hint="1 disables guidance")
    if (prompt is None) == (prompt_embeds is None):
        raise ValueError("pass exactly one of `prompt` or `prompt_embeds`")
    if prompt_embeds is not None:
        check_float_tensor(prompt_embeds, "prompt_embeds", ndim=3)
    if negative_prompt_embeds is not None:
        check_float_tensor(negative_prompt_embeds, "negative_prompt_embeds", ndim=3)
    batch_size = len(prompt) if prompt is not None else prompt_embeds.shape[0]
    if negative_prompt is not None and len(negative_prompt) not in (1, batch_size):
        raise ValueError(
            f"`negative_prompt` has {len(negative_prompt)} entries but there are {batch_size} prompts; "
            "pass one negative prompt, or one per prompt"
        )
    if negative_prompt is not None and negative_prompt_embeds is not None:
        raise ValueError("pass at most one of `negative_prompt` or `negative_prompt_embeds`")
    if negative_prompt_embeds is not None:
        if prompt_embeds is None or negative_prompt_embeds.shape != prompt_embeds.shape:
            got = tuple(negative_prompt_embeds.shape)
            want = None if prompt_embeds is None else tuple(prompt_embeds.shape)
            raise ValueError(
                f"`negative_prompt_embeds` {got} must come with `prompt_embeds` of the same shape, got {want}"
            )
    wants_negative = negative_prompt is not None or negative_prompt_embeds is not None
    if wants_negative and guidance_scale <= 1.0:
        raise ValueError(
            f"a negative prompt only acts through classifier-free guidance, but guidance_scale={guidance_scale}; "
            "use guidance_scale > 1 (e.g. 4.0) or drop the negative prompt"
        )
    return batch_size


def encode_text(
    tokenizer, text_encoder, prompts: list[str], device: torch.device, max_length: int | None = None
) -> PromptEmbeddings:
    """Tokenize and encode texts with any `transformers` encoder (T5, CLAP text, BERT-like).

    Prompts longer than the tokenizer's `model_max_length` are truncated with a warning that shows
    what was cut.
    """
    max_length = max_length or tokenizer.model_max_length
    inputs = tokenizer(prompts, padding="max_length", max_length=max_length, truncation=True, return_tensors="pt")
    full = tokenizer(prompts, padding="longest", return_tensors="pt").input_ids
    if full.shape[-1] > inputs.input_ids.shape[-1]:
        cut = tokenizer.batch_decode(full[:, max_length - 1 : -1], skip_special_tokens=True)
        logger.warning(
            f"prompts were truncated to {max_length} tokens, the longest the text encoder takes; "
            f"this part was cut: {[text for text in cut if text]}"
        )
    input_ids = inputs.input_ids.to(device)
    attention_mask = inputs.attention_mask.to(device)
    hidden_states = text_encoder(input_ids=input_ids, attention_mask=attention_mask)[0]
    return PromptEmbeddings(hidden_states, attention_mask)


def samples_for_seconds(seconds: float, sample_rate: int) -> int:
    """Number of samples in `seconds` of audio (rounded to the nearest sample)."""
    return int(round(seconds * sample_rate))


def frames_for_samples(samples: int, hop_length: int) -> int:
    """Number of latent frames (or codec steps) needed to cover `samples` of audio."""
    return math.ceil(samples / hop_length)


def check_output_type(output_type: str) -> None:
    if output_type not in OUTPUT_TYPES:
        raise ValueError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}")


def postprocess_audio(audio: torch.Tensor, output_type: str) -> torch.Tensor | np.ndarray:
    """Return `(batch, channels, samples)` float32 audio as a NumPy array (`"np"`) or tensor (`"pt"`)."""
    audio = audio.float().cpu()
    return audio.numpy() if output_type == "np" else audio


def check_text_and_length(
    prompt: list[str] | None,
    negative_prompt: list[str] | None,
    prompt_embeds: torch.Tensor | None,
    negative_prompt_embeds: torch.Tensor | None,
    guidance_scale: float,
    cross_attention_dim: int,
    model_name: str,
    audio_length_in_s: float,
) -> int:
    """The checks every pipeline call starts with: prompts (see `check_prompt_inputs`), precomputed embeddings
    as wide as the model cross-attends to, and a positive length. Returns the number of prompts.

    Args:
        prompt: The prompts, as a list.
        negative_prompt: The negative prompts, as a list.
        prompt_embeds: Precomputed hidden states.
        negative_prompt_embeds: Precomputed negative hidden states.
        guidance_scale: Classifier-free guidance weight.
        cross_attention_dim: Width the denoiser or LM cross-attends to.
        model_name: What to call that model in messages ("U-Net", "LM").
        audio_length_in_s: The clip length asked for.
    """
    batch_size = check_prompt_inputs(prompt, negative_prompt, prompt_embeds, negative_prompt_embeds, guidance_scale)
    if prompt_embeds is not None and prompt_embeds.shape[-1] != cross_attention_dim:
        raise ValueError(
            f"`prompt_embeds` have hidden size {prompt_embeds.shape[-1]}, but the {model_name} cross-attends to "
            f"{cross_attention_dim}; encode them with this pipeline's `encode_prompt`"
        )
    check_real(audio_length_in_s, "audio_length_in_s", minimum=0.0, maximum=MAX_SECONDS, exclusive_minimum=True)
    return batch_size


def check_callback_tensor_inputs(requested: list[str] | None, available: list[str]) -> None:
    """Reject callback tensor names a pipeline does not offer.

    Args:
        requested: The names asked for in `callback_on_step_end_tensor_inputs`.
        available: The pipeline's `_callback_tensor_inputs`.
    """
    unknown = set(requested or []) - set(available)
    if unknown:
        raise ValueError(
            f"callback_on_step_end_tensor_inputs {sorted(unknown)} are not available; choose from {available}"
        )


def concat_embeddings(negative: PromptEmbeddings, positive: PromptEmbeddings) -> PromptEmbeddings:
    """One batch `[negative, positive]`; a missing mask means every token is real.

    Args:
        negative: Embeddings of the negative (unconditional) prompts.
        positive: Embeddings of the prompts.
    """
    if negative.hidden_states.shape[1:] != positive.hidden_states.shape[1:]:
        raise ValueError(
            f"negative prompt embeddings {tuple(negative.hidden_states.shape)} and prompt embeddings "
            f"{tuple(positive.hidden_states.shape)} differ in length or width; encode both the same way"
        )
    hidden = torch.cat([negative.hidden_states, positive.hidden_states])
    if negative.attention_mask is None and positive.attention_mask is None:
        return PromptEmbeddings(hidden, None)
    masks = [
        e.attention_mask if e.attention_mask is not None else torch.ones(e.hidden_states.shape[:2])
        for e in (negative, positive)
    ]
    return PromptEmbeddings(hidden, torch.cat([m.to(hidden.device, torch.long) for m in masks]))


def encode_prompt_batch(
    tokenizer: PreTrainedTokenizerBase,
    text_encoder: torch.nn.Module,
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

    Each prompt is repeated `num_waveforms_per_prompt` times in a row. Without a negative prompt the
    unconditional half encodes the empty text, the condition a model sees when captions are dropped in
    training.

    Args:
        tokenizer: The text encoder's tokenizer.
        text_encoder: Any `transformers` text encoder; its first output is used.
        prompt: The prompts (or `None` with `prompt_embeds`).
        device: Where the embeddings go.
        num_waveforms_per_prompt: Clips per prompt.
        do_classifier_free_guidance: Also encode the unconditional half.
        negative_prompt: One negative prompt, or one per prompt.
        prompt_embeds: Precomputed hidden states instead of `prompt`.
        negative_prompt_embeds: Precomputed negative hidden states.
        attention_mask: Mask of `prompt_embeds` (1 = token, 0 = padding).
        negative_attention_mask: Mask of `negative_prompt_embeds`.
    """
    if prompt_embeds is None:
        positive = encode_text(tokenizer, text_encoder, prompt, device)
    else:
        mask = None if attention_mask is None else attention_mask.to(device)
        positive = PromptEmbeddings(prompt_embeds.to(device), mask)
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
        negative = encode_text(tokenizer, text_encoder, texts, device, positive.hidden_states.shape[1])
    return concat_embeddings(negative.repeat(num_waveforms_per_prompt), positive)


class TextToMusicMixin:
    """What both pipelines share beyond the helpers above: the diffusers call-state properties and prompt
    encoding through their `tokenizer` and `text_encoder` components."""

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs: Any):
        """diffusers' `DiffusionPipeline.from_pretrained`, which also takes the name of a checkpoint that ships
        with the package (`"latentmusic/demo"`, see `latentmusic.checkpoints`).

        Without `torch_dtype` every component loads in float32, as diffusers loads its own models: otherwise a
        `transformers` text encoder saved in float16 would load in float16 beside float32 diffusers models."""
        if kwargs.get("torch_dtype") is None:
            kwargs.pop("torch_dtype", None)  # diffusers' deprecated name for `dtype`
            kwargs.setdefault("dtype", torch.float32)
        folder = resolve_pretrained(pretrained_model_name_or_path)
        check_pipeline_folder(folder, cls, set(kwargs))
        return super().from_pretrained(folder, **kwargs)

    @property
    def guidance_scale(self) -> float:
        return self._guidance_scale

    @property
    def do_classifier_free_guidance(self) -> bool:
        return self._guidance_scale > 1.0

    @property
    def num_timesteps(self) -> int:
        """Denoising steps (diffusion) or sequence steps (token LM) of the current call."""
        return self._num_timesteps

    @property
    def interrupt(self) -> bool:
        return self._interrupt

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
        """Encode prompts, and for guidance the negative prompts, into one batch `[negative, positive]`
        (`encode_prompt_batch` with the pipeline's tokenizer and text encoder).

        Args:
            prompt: The prompts (or `None` with `prompt_embeds`).
            device: Where the embeddings go.
            num_waveforms_per_prompt: Clips per prompt.
            do_classifier_free_guidance: Also encode the unconditional half (the empty text by default).
            negative_prompt: One negative prompt, or one per prompt.
            prompt_embeds: Precomputed hidden states instead of `prompt`.
            negative_prompt_embeds: Precomputed negative hidden states.
            attention_mask: Mask of `prompt_embeds` (1 = token, 0 = padding).
            negative_attention_mask: Mask of `negative_prompt_embeds`.
        """
        return encode_prompt_batch(
            self.tokenizer,
            self.text_encoder,
            prompt,
            device,
            num_waveforms_per_prompt,
            do_classifier_free_guidance,
            negative_prompt,
            prompt_embeds,
            negative_prompt_embeds,
            attention_mask,
            negative_attention_mask,
        )
