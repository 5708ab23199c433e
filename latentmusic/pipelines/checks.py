"""Argument checks both pipelines' `check_inputs` run before any model work.

Each check names the argument, what was given and what is allowed, so that a misuse is an error at the door and
never a silent change of meaning: a NaN guidance scale would turn guidance off (`nan > 1` is false), integer
latents would be cast, audio laid out `(samples, channels)` (as `soundfile.read` returns it) would become a clip
two samples long, and audio without its sample rate would be taken to be at the model's.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np
import torch

# Longest clip a pipeline call makes: windows are generated one after another, and an hour is more likely a unit slip.
MAX_SECONDS = 3600.0


def check_real(
    value: Any,
    name: str,
    minimum: float | None = None,
    maximum: float | None = None,
    exclusive_minimum: bool = False,
    hint: str = "",
) -> None:
    """Reject what is not a finite real number in `[minimum, maximum]` (`(minimum, maximum]` when exclusive).

    Args:
        value: The argument's value.
        name: The argument's name, for the message.
        minimum: Smallest allowed value (`None`: no bound).
        maximum: Largest allowed value (`None`: no bound).
        exclusive_minimum: `minimum` itself is not allowed.
        hint: What the value means, appended to the message (e.g. "1 disables guidance").
    """
    hint = f" ({hint})" if hint else ""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number{hint}, got {type(value).__name__} {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number{hint}, got {value}")
    low = minimum is not None and (value <= minimum if exclusive_minimum else value < minimum)
    high = maximum is not None and value > maximum
    if low or high:
        left = "(" if exclusive_minimum else "["
        bounds = (
            f"{left}{'-inf' if minimum is None else f'{minimum:g}'}, {'inf' if maximum is None else f'{maximum:g}'}]"
        )
        raise ValueError(f"{name} must be in {bounds}{hint}, got {value}")


def check_positive_int(value: Any, name: str) -> None:
    """Reject anything but a positive integer (not a bool, not a float such as 25.0).

    Args:
        value: The argument's value.
        name: The argument's name, for the message.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {type(value).__name__} {value!r}")


def check_sample_rate(value: Any, name: str) -> None:
    """Reject a sample rate that is not a positive whole number of Hz.

    Args:
        value: The argument's value.
        name: The argument's name, for the message.
    """
    whole = isinstance(value, numbers.Real) and not isinstance(value, bool) and float(value).is_integer()
    if not whole or value < 1:
        raise ValueError(f"{name} must be a positive whole number of Hz (e.g. 44100), got {value!r}")


def check_float_tensor(value: Any, name: str, ndim: int | None = None) -> torch.Tensor:
    """Reject what is not a finite floating-point tensor (of `ndim` dimensions).

    Args:
        value: The argument's value.
        name: The argument's name, for the message.
        ndim: Required number of dimensions (`None`: any).

    Returns:
        The tensor.
    """
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"`{name}` must be a torch.Tensor, got {type(value).__name__}")
    if not value.is_floating_point():
        raise ValueError(
            f"`{name}` must be floating point, got dtype {value.dtype}; it is used as given, never cast from integers"
        )
    if ndim is not None and value.ndim != ndim:
        raise ValueError(f"`{name}` must have {ndim} dimensions, got shape {tuple(value.shape)}")
    if not torch.isfinite(value).all():
        raise ValueError(
            f"`{name}` contains {int(value.isnan().sum())} NaN and {int(value.isinf().sum())} Inf values out of "
            f"{value.numel()}; they would make the whole output NaN"
        )
    return value


def check_attention_mask(mask: Any, name: str, embeds: torch.Tensor | None, embeds_name: str) -> None:
    """An attention mask goes with its embeddings: `(batch, tokens)` of 0/1, not all 0 in a row.

    Args:
        mask: The mask (`None`: nothing to check).
        name: Its argument name.
        embeds: The embeddings it masks (`None` if not passed).
        embeds_name: Their argument name.
    """
    if mask is None:
        return
    if embeds is None:
        raise ValueError(f"`{name}` masks `{embeds_name}`; pass them too (a prompt's mask comes from its tokenizer)")
    if not isinstance(mask, torch.Tensor) or tuple(mask.shape) != tuple(embeds.shape[:2]):
        shape = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise ValueError(f"`{name}` must be a tensor of shape {tuple(embeds.shape[:2])} (batch, tokens), got {shape}")
    if not ((mask == 0) | (mask == 1)).all():
        raise ValueError(f"`{name}` must hold 1 (token) and 0 (padding), got values {mask.unique().tolist()[:5]}")
    if (mask.sum(-1) == 0).any():
        raise ValueError(f"`{name}` has a row with no tokens at all; every text needs at least one unmasked token")


def check_generator(generator: Any, total: int) -> None:
    """One `torch.Generator` for the whole batch, or a list of one per waveform.

    Args:
        generator: The argument's value (`None`: torch's global generator).
        total: Waveforms the call makes (prompts × `num_waveforms_per_prompt`).
    """
    if generator is None or isinstance(generator, torch.Generator):
        return
    if not isinstance(generator, (list, tuple)) or not all(isinstance(g, torch.Generator) for g in generator):
        raise TypeError(
            f"generator must be a torch.Generator or a list of them, got {type(generator).__name__}; "
            "e.g. torch.Generator().manual_seed(0)"
        )
    if len(generator) != total:
        raise ValueError(
            f"got {len(generator)} generators for {total} waveforms; pass one generator or one per waveform"
        )


def check_audio_argument(audio: Any, sample_rate: Any, name: str, rate_name: str, batch: int | None = None) -> float:
    """Check conditioning audio, as the pipelines take it, and its sample rate.

    Args:
        audio: `(samples,)`, `(channels, samples)` or `(n, channels, samples)` floats as a tensor or NumPy array.
        sample_rate: Its sample rate, required: a bare array does not say what rate it is at.
        name: The audio's argument name.
        rate_name: The sample rate's argument name.
        batch: Prompts in the call; a 3-D `audio` holds one clip or one per prompt (`None`: no 3-D audio).

    Returns:
        The audio's length in seconds.
    """
    if not isinstance(audio, (torch.Tensor, np.ndarray)):
        raise TypeError(
            f"`{name}` must be a torch.Tensor or np.ndarray of samples, got {type(audio).__name__}; "
            "load a file with latentmusic.load_audio(path), which returns the samples and their rate"
        )
    if sample_rate is None:
        raise ValueError(
            f"`{name}` needs its sample rate: pass {rate_name}= (e.g. the rate load_audio returned); "
            "it is resampled to the model's"
        )
    check_sample_rate(sample_rate, rate_name)
    shape = tuple(audio.shape)
    dims = (1, 2, 3) if batch is not None else (1, 2)
    if audio.ndim not in dims:
        layouts = "(samples,), (channels, samples)" + (" or (clips, channels, samples)" if batch else "")
        raise ValueError(f"`{name}` must have shape {layouts}, got {shape}")
    is_float = (
        audio.is_floating_point() if isinstance(audio, torch.Tensor) else np.issubdtype(audio.dtype, np.floating)
    )
    if not is_float:
        raise ValueError(
            f"`{name}` must hold floating-point samples in [-1, 1], got dtype {audio.dtype}; "
            "scale integer PCM first, e.g. audio / 32768 for 16-bit"
        )
    if audio.ndim >= 2 and shape[-1] <= 8 < shape[-2]:
        fix = f"pass {name}.T" if audio.ndim == 2 else "swap its last two axes"
        raise ValueError(
            f"`{name}` has shape {shape}: that is (samples, channels), the layout soundfile.read returns; "
            f"the pipeline takes (channels, samples): {fix}"
        )
    if audio.ndim == 3 and shape[0] not in (1, batch):
        raise ValueError(
            f"`{name}` holds {shape[0]} clips but there are {batch} prompts; pass one clip or one per prompt"
        )
    if shape[-1] == 0:
        raise ValueError(f"`{name}` is empty (shape {shape})")
    values = torch.as_tensor(audio)
    if not torch.isfinite(values).all():
        raise ValueError(
            f"`{name}` contains {int(values.isnan().sum())} NaN and {int(values.isinf().sum())} Inf samples; "
            "clean it first, e.g. torch.nan_to_num(audio)"
        )
    return shape[-1] / float(sample_rate)


def check_device_dtype(device: torch.device, dtype: torch.dtype) -> None:
    """Refuse bfloat16 on a GPU that has none, before the first kernel fails with a raw CUDA error.

    Args:
        device: Where the pipeline runs (`pipe._execution_device`).
        dtype: The denoiser's dtype.
    """
    if dtype == torch.bfloat16 and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError(
            f"the pipeline is in bfloat16 but {torch.cuda.get_device_name(device)} has no bfloat16; "
            "use pipe.to(torch.float16) or float32"
        )
