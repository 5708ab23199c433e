"""`TokenLM`: a MusicGen-style transformer decoder over the K codebook streams of an RVQ codec.

Each sequence step holds one token per codebook stream (laid out by a codebook pattern, see
`latentmusic.models.codebook_patterns`); the step's input is the sum of K token embeddings and a
sinusoidal position embedding, and K linear heads predict the next step's K tokens. Every layer has
causal self-attention, cross-attention to the text encoder's hidden states, and a feed-forward block
(pre-norm). `generate` samples with classifier-free guidance on the logits, top-k / top-p / temperature,
a KV cache, and an optional prefix of codes to continue.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.loaders import PeftAdapterMixin
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import BaseOutput
from einops import rearrange
from torch import nn
from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

from .codebook_patterns import PATTERNS, CodebookPattern, get_pattern
from .config_checks import strict_config


@dataclass
class KVCache:
    """Keys and values of earlier steps, per layer, for incremental decoding.

    Args:
        self_attention: Per layer, `(keys, values)` of the steps so far, each `(batch, heads, steps, head_dim)`.
        cross_attention: Per layer, `(keys, values)` of the text, computed once.
        encoder_attention_mask: The text's attention mask, `(batch, text_tokens)` bool, or `None`.
    """

    self_attention: list[tuple[torch.Tensor, torch.Tensor]]
    cross_attention: list[tuple[torch.Tensor, torch.Tensor]]
    encoder_attention_mask: torch.Tensor | None = None

    @property
    def length(self) -> int:
        """Steps already in the cache."""
        return self.self_attention[0][0].shape[2] if self.self_attention else 0


@dataclass
class TokenLMOutput(BaseOutput):
    """Output of `TokenLM.forward`.

    Args:
        logits: `(batch, num_codebooks, steps, codebook_size)`: at step s, the logits of the tokens of
            sequence step s given the inputs up to s (inputs are the sequence shifted right by one step).
        cache: The KV cache after these steps (`None` unless `use_cache=True`).
    """

    logits: torch.Tensor
    cache: KVCache | None = None


class Attention(nn.Module):
    """Multi-head attention with `scaled_dot_product_attention`; keys and values are projected separately.

    Args:
        hidden_size: Width of the queries and the output.
        num_heads: Attention heads.
        context_dim: Width of what keys and values come from (`hidden_size` for self-attention).
        dropout: Attention dropout in training.
    """

    def __init__(self, hidden_size: int, num_heads: int, context_dim: int | None = None, dropout: float = 0.0):
        super().__init__()
        self.num_heads = num_heads
        self.dropout = dropout
        self.to_q = nn.Linear(hidden_size, hidden_size, bias=False)
        self.to_k = nn.Linear(context_dim or hidden_size, hidden_size, bias=False)
        self.to_v = nn.Linear(context_dim or hidden_size, hidden_size, bias=False)
        self.to_out = nn.Linear(hidden_size, hidden_size, bias=False)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return rearrange(x, "b n (h d) -> b h n d", h=self.num_heads)

    def key_values(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values `(batch, heads, length, head_dim)` of `context`.

        Args:
            context: `(batch, length, context_dim)`.
        """
        return self._heads(self.to_k(context)), self._heads(self.to_v(context))

    def forward(
        self,
        x: torch.Tensor,
        keys: torch.Tensor,
        values: torch.Tensor,
        mask: torch.Tensor | None = None,
        is_causal: bool = False,
    ) -> torch.Tensor:
        """Attend from `x` `(batch, steps, hidden_size)` to `keys` / `values`.

        Args:
            x: Queries' input, `(batch, steps, hidden_size)`.
            keys: `(batch, heads, length, head_dim)`.
            values: `(batch, heads, length, head_dim)`.
            mask: Bool mask broadcastable to `(batch, heads, steps, length)`, True = may attend.
            is_causal: Causal masking (only for a square self-attention without `mask`).
        """
        dropout = self.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(
            self._heads(self.to_q(x)), keys, values, attn_mask=mask, dropout_p=dropout, is_causal=is_causal
        )
        return self.to_out(rearrange(out, "b h n d -> b n (h d)"))


class DecoderLayer(nn.Module):
    """Pre-norm layer: causal self-attention, cross-attention to the text, feed-forward.

    Args:
        hidden_size: Model width.
        num_heads: Attention heads.
        ffn_dim: Hidden width of the feed-forward block.
        cross_attention_dim: Width of the text encoder's hidden states.
        dropout: Dropout in training.
    """

    def __init__(self, hidden_size: int, num_heads: int, ffn_dim: int, cross_attention_dim: int, dropout: float):
        super().__init__()
        self.norm_self = nn.LayerNorm(hidden_size)
        self.self_attn = Attention(hidden_size, num_heads, dropout=dropout)
        self.norm_cross = nn.LayerNorm(hidden_size)
        self.cross_attn = Attention(hidden_size, num_heads, cross_attention_dim, dropout=dropout)
        self.norm_ffn = nn.LayerNorm(hidden_size)
        self.ffn = nn.Sequential(
            nn.Linear(hidden_size, ffn_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(ffn_dim, hidden_size)
        )
        self.dropout = nn.Dropout(dropout)

    def forward(
        self,
        x: torch.Tensor,
        cross_kv: tuple[torch.Tensor, torch.Tensor],
        cross_mask: torch.Tensor | None,
        past: tuple[torch.Tensor, torch.Tensor] | None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """Run the layer on new steps `x` `(batch, steps, hidden_size)`; returns them and the self-attention cache.

        Args:
            x: Hidden states of the new steps.
            cross_kv: The text's keys and values for this layer.
            cross_mask: `(batch, 1, 1, text_tokens)` bool, or `None`.
            past: Keys and values of earlier steps, or `None`.
        """
        h = self.norm_self(x)
        keys, values = self.self_attn.key_values(h)
        if past is not None:
            keys, values = torch.cat([past[0], keys], 2), torch.cat([past[1], values], 2)
        steps, total = x.shape[1], keys.shape[2]
        mask = None
        if steps > 1 and total > steps:  # new steps after cached ones: step i sees the cache and new steps <= i
            mask = torch.ones(steps, total, dtype=torch.bool, device=x.device).tril(total - steps)
        x = x + self.dropout(self.self_attn(h, keys, values, mask, is_causal=steps > 1 and mask is None))
        x = x + self.dropout(self.cross_attn(self.norm_cross(x), *cross_kv, mask=cross_mask))
        x = x + self.dropout(self.ffn(self.norm_ffn(x)))
        return x, (keys, values)


def sinusoidal_positions(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """Transformer sine/cosine embeddings `(len(positions), dim)` of integer positions.

    Args:
        positions: `(steps,)` positions.
        dim: Embedding width (even).
    """
    half = dim // 2
    frequencies = torch.exp(-math.log(10000.0) * torch.arange(half, device=positions.device) / half)
    angles = positions.float()[:, None] * frequencies[None]
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)


@strict_config
class TokenLM(ModelMixin, ConfigMixin, PeftAdapterMixin):
    r"""A transformer decoder over the K codebook streams of an RVQ codec, conditioned on text (MusicGen-style).

    Args:
        num_codebooks (`int`, defaults to 4): K, codebook streams (the codec's `num_quantizers`, or fewer).
        codebook_size (`int`, defaults to 1024): Codes per codebook (the codec's `codebook_size`); token
            `codebook_size` is the special (empty / start) token.
        pattern (`str`, defaults to `"delay"`): Codebook interleaving: `"delay"`, `"parallel"` or `"flatten"`.
        hidden_size (`int`, defaults to 512): Model width.
        num_layers (`int`, defaults to 8): Decoder layers.
        num_heads (`int`, defaults to 8): Attention heads (must divide `hidden_size`).
        ffn_dim (`int`, defaults to 2048): Hidden width of the feed-forward blocks.
        cross_attention_dim (`int`, defaults to 768): Width of the text encoder's hidden states.
        dropout (`float`, defaults to 0.0): Dropout in training.
    """

    @register_to_config
    def __init__(
        self,
        num_codebooks: int = 4,
        codebook_size: int = 1024,
        pattern: str = "delay",
        hidden_size: int = 512,
        num_layers: int = 8,
        num_heads: int = 8,
        ffn_dim: int = 2048,
        cross_attention_dim: int = 768,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if pattern not in PATTERNS:
            raise ValueError(f"unknown codebook pattern {pattern!r}; choose from {PATTERNS}")
        if hidden_size % num_heads or hidden_size % 2:
            raise ValueError(
                f"hidden_size must be even and divisible by num_heads, got hidden_size={hidden_size}, "
                f"num_heads={num_heads}"
            )
        if num_codebooks < 1 or codebook_size < 2:
            raise ValueError(
                f"need num_codebooks >= 1 and codebook_size >= 2, got {num_codebooks} and {codebook_size}"
            )
        self.embeddings = nn.ModuleList(nn.Embedding(codebook_size + 1, hidden_size) for _ in range(num_codebooks))
        self.layers = nn.ModuleList(
            DecoderLayer(hidden_size, num_heads, ffn_dim, cross_attention_dim, dropout) for _ in range(num_layers)
        )
        self.norm_out = nn.LayerNorm(hidden_size)
        self.heads = nn.ModuleList(nn.Linear(hidden_size, codebook_size, bias=False) for _ in range(num_codebooks))

    @property
    def special_token(self) -> int:
        """The empty / start token (one past the last code)."""
        return self.config.codebook_size

    @property
    def pattern(self) -> CodebookPattern:
        """The codebook interleaving pattern of this model."""
        return get_pattern(self.config.pattern, self.config.num_codebooks)

    def forward(
        self,
        input_tokens: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        cache: KVCache | None = None,
        use_cache: bool = False,
        return_dict: bool = True,
    ) -> TokenLMOutput | tuple:
        """Logits of the next step's tokens after each input step.

        Args:
            input_tokens: `(batch, num_codebooks, steps)` tokens in `[0, codebook_size]`: the pattern
                sequence shifted right by one step, starting with a step of special tokens.
            encoder_hidden_states: Text-encoder hidden states `(batch, text_tokens, cross_attention_dim)`;
                may be left out when `cache` holds them.
            encoder_attention_mask: `(batch, text_tokens)`, 1 = real token, 0 = padding.
            cache: Keys and values of earlier steps (from a previous call with `use_cache=True`); the new
                steps continue after them.
            use_cache: Return the updated cache.
            return_dict: Return a `TokenLMOutput` instead of a tuple.
        """
        self._check_tokens(input_tokens)
        if cache is None:
            if encoder_hidden_states is None:
                raise ValueError("pass `encoder_hidden_states` (the text encoder's hidden states) or a `cache`")
            cross = [layer.cross_attn.key_values(encoder_hidden_states.to(self.dtype)) for layer in self.layers]
            cache = KVCache([], cross, _cross_mask(encoder_attention_mask, encoder_hidden_states.shape[:2]))
        start = cache.length
        x = sum(embed(input_tokens[:, k]) for k, embed in enumerate(self.embeddings))
        positions = torch.arange(start, start + input_tokens.shape[-1], device=x.device)
        x = x + sinusoidal_positions(positions, self.config.hidden_size).to(x.dtype)
        new_self = []
        for i, layer in enumerate(self.layers):
            past = cache.self_attention[i] if cache.self_attention else None
            x, kv = layer(x, cache.cross_attention[i], cache.encoder_attention_mask, past)
            new_self.append(kv)
        x = self.norm_out(x)
        logits = torch.stack([head(x) for head in self.heads], dim=1)
        new_cache = KVCache(new_self, cache.cross_attention, cache.encoder_attention_mask) if use_cache else None
        return TokenLMOutput(logits=logits, cache=new_cache) if return_dict else (logits, new_cache)

    def shift_right(self, sequence: torch.Tensor) -> torch.Tensor:
        """The model's input for a sequence: a start step of special tokens, then all steps but the last.

        Args:
            sequence: `(batch, num_codebooks, steps)` pattern sequence.
        """
        start = sequence.new_full((*sequence.shape[:2], 1), self.special_token)
        return torch.cat([start, sequence[..., :-1]], dim=-1)

    @torch.no_grad()
    def generate(
        self,
        encoder_hidden_states: torch.Tensor,
        num_frames: int,
        encoder_attention_mask: torch.Tensor | None = None,
        guidance_scale: float = 1.0,
        top_k: int | None = 250,
        top_p: float | None = None,
        temperature: float = 1.0,
        generator: torch.Generator | list[torch.Generator] | None = None,
        prefix: torch.Tensor | None = None,
        use_cache: bool = True,
        callback: Callable[[int, torch.Tensor], torch.Tensor | None] | None = None,
        interrupted: Callable[[], bool] | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> torch.Tensor:
        """Sample codes `(batch, num_codebooks, num_frames)` step by step.

        Args:
            encoder_hidden_states: Text-encoder hidden states `(batch, text_tokens, cross_attention_dim)`;
                with guidance (`guidance_scale > 1`), `2 * batch` rows: the unconditional (negative) half
                first, then the conditional half.
            num_frames: Codec frames to generate (including the prefix).
            encoder_attention_mask: `(rows, text_tokens)`, 1 = real token, 0 = padding.
            guidance_scale: Classifier-free guidance on the logits, `uncond + scale * (cond - uncond)`; 1
                disables it. Both halves run as one batched forward.
            top_k: Sample among the k most likely codes; `None` or 0 for all.
            top_p: Sample among the most likely codes whose probabilities add up to `top_p` (nucleus);
                `None` or 1 for all.
            temperature: Softmax temperature; 0 picks the most likely code (greedy).
            generator: One generator, or one per row, for reproducible sampling.
            prefix: Codes `(batch, num_codebooks, prefix_frames)` to continue; they are kept as given and
                are part of the result.
            use_cache: Reuse keys and values of earlier steps (same tokens, much faster).
            callback: Called as `callback(step, sequence)` after every generated step with the pattern
                sequence so far `(batch, num_codebooks, step + 1)`; may return an edited sequence of the same
                shape to continue from (with the cache, edits to earlier steps do not reach the model).
            interrupted: Checked before every step; when it returns True, generation stops and the frames
                completed so far are returned.
            progress: Called with the number of steps just done (a progress bar's `update`): once for the
                steps the prefix fills, then after every generated step.

        Returns:
            Codes `(batch, num_codebooks, frames)` long; `frames == num_frames` unless interrupted.
        """
        guided = guidance_scale > 1.0
        rows = encoder_hidden_states.shape[0]
        batch = rows // 2 if guided else rows
        check_sampling_args(top_k, top_p, temperature)
        if guided and rows % 2:
            raise ValueError(
                f"with guidance, encoder_hidden_states need [unconditional, conditional] halves, got {rows} rows"
            )
        if isinstance(generator, list) and len(generator) != batch:
            raise ValueError(f"got {len(generator)} generators for {batch} sequences; pass one, or one per sequence")
        pattern, device = self.pattern, encoder_hidden_states.device
        valid = pattern.valid_mask(num_frames).to(device)
        known, known_mask = self._prefix_sequence(prefix, batch, num_frames, device)
        fixed = (~valid | known_mask).all(dim=0)  # steps with nothing to sample
        prefill = int(fixed.long().cumprod(0).sum())

        sequence = torch.where(valid, known, self.special_token)[..., :prefill]
        if progress is not None and prefill:
            progress(prefill)
        cache = None
        for step in range(prefill, valid.shape[1]):
            if interrupted is not None and interrupted():
                break
            inputs = self.shift_right(F.pad(sequence, (0, 1)))  # the start step + steps < `step`
            if use_cache and cache is not None:
                inputs = inputs[..., -1:]
            copies = torch.cat([inputs, inputs]) if guided else inputs
            out = self(copies, encoder_hidden_states, encoder_attention_mask, cache=cache, use_cache=use_cache)
            cache = out.cache
            logits = out.logits[:, :, -1].float()
            if guided:
                uncond, cond = logits.chunk(2)
                logits = uncond + guidance_scale * (cond - uncond)
            tokens = sample_tokens(logits, top_k, top_p, temperature, generator)
            tokens = torch.where(known_mask[:, step], known[..., step], tokens)
            tokens = torch.where(valid[:, step], tokens, self.special_token)
            sequence = torch.cat([sequence, tokens[..., None]], dim=-1)
            if callback is not None:
                edited = callback(step, sequence)
                sequence = sequence if edited is None else edited
            if progress is not None:
                progress(1)

        done = sequence.shape[-1]
        full = F.pad(sequence, (0, valid.shape[1] - done), value=self.special_token)
        return pattern.revert(full, num_frames)[..., : pattern.complete_frames(done, num_frames)]

    def _prefix_sequence(
        self, prefix: torch.Tensor | None, batch: int, num_frames: int, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The prefix laid out as a pattern sequence, and a `(num_codebooks, steps)` mask of where it is."""
        codes = torch.zeros(batch, self.config.num_codebooks, num_frames, dtype=torch.long, device=device)
        frames = 0
        if prefix is not None:
            frames = prefix.shape[-1]
            if prefix.ndim != 3 or prefix.shape[:2] != codes.shape[:2] or frames > num_frames:
                raise ValueError(
                    f"`prefix` must have shape ({batch}, {self.config.num_codebooks}, frames <= {num_frames}), "
                    f"got {tuple(prefix.shape)}"
                )
            if prefix.min() < 0 or prefix.max() >= self.config.codebook_size:
                raise ValueError(f"`prefix` codes must lie in [0, {self.config.codebook_size}), got values outside")
            codes[..., :frames] = prefix.to(device)
        is_prefix = (torch.arange(num_frames, device=device) < frames).expand(self.config.num_codebooks, -1)
        mask = self.pattern.build(is_prefix[None].long(), 0)[0].bool()
        return self.pattern.build(codes, self.special_token), mask

    def _check_tokens(self, tokens: torch.Tensor) -> None:
        k = self.config.num_codebooks
        if tokens.ndim != 3 or tokens.shape[1] != k:
            raise ValueError(f"tokens must have shape (batch, {k}, steps), got {tuple(tokens.shape)}")


def sample_tokens(
    logits: torch.Tensor,
    top_k: int | None = None,
    top_p: float | None = None,
    temperature: float = 1.0,
    generator: torch.Generator | list[torch.Generator] | None = None,
) -> torch.Tensor:
    """Sample one token per row from `logits` `(..., vocabulary)` (one row per sequence and codebook).

    Temperature, top-k and top-p are transformers' logits warpers, applied to every row at once.

    Args:
        logits: Unnormalised log-probabilities, `(..., vocabulary)`.
        top_k: Keep the k most likely tokens; `None` or 0 keeps all.
        top_p: Keep the most likely tokens up to cumulative probability `top_p`; `None` or 1 keeps all.
        temperature: Softmax temperature; 0 is greedy.
        generator: One generator, or one per entry of the first dimension.

    Returns:
        The tokens, `logits.shape[:-1]` long.
    """
    if temperature == 0:  # greedy; transformers' TemperatureLogitsWarper refuses 0 (it means do_sample=False there)
        return logits.argmax(-1)
    warpers = LogitsProcessorList([TemperatureLogitsWarper(float(temperature))])
    if top_k:
        warpers.append(TopKLogitsWarper(top_k))
    if top_p is not None and top_p < 1:
        warpers.append(TopPLogitsWarper(top_p))
    rows = rearrange(logits, "... vocabulary -> (...) vocabulary")
    probs = warpers(None, rows).softmax(-1)  # the warpers ignore input_ids (no repetition penalty here)
    # one generator per sequence draws that sequence's rows: transformers samples with one generator only
    if isinstance(generator, list):
        per_row = probs.shape[0] // len(generator)
        tokens = torch.cat([torch.multinomial(p, 1, generator=g) for p, g in zip(probs.split(per_row), generator)])
    else:
        tokens = torch.multinomial(probs, 1, generator=generator)
    return tokens.reshape(logits.shape[:-1])


def check_sampling_args(top_k: int | None, top_p: float | None, temperature: float) -> None:
    """Reject sampling settings `sample_tokens` cannot use.

    Args:
        top_k: See `sample_tokens`.
        top_p: See `sample_tokens`.
        temperature: See `sample_tokens`.
    """
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0):
        raise ValueError(f"top_k must be a non-negative integer (0 or None: no limit), got {top_k}")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1] (None or 1: no nucleus filtering), got {top_p}")
    if isinstance(temperature, bool) or not (isinstance(temperature, (int, float)) and 0 <= temperature < math.inf):
        raise ValueError(f"temperature must be a finite number >= 0 (0: greedy), got {temperature!r}")


def _cross_mask(mask: torch.Tensor | None, shape: torch.Size) -> torch.Tensor | None:
    """`(batch, text_tokens)` 1/0 mask → `(batch, 1, 1, text_tokens)` bool; an all-padding row attends everywhere."""
    if mask is None:
        return None
    if tuple(mask.shape) != tuple(shape):
        raise ValueError(f"encoder_attention_mask must have shape {tuple(shape)}, got {tuple(mask.shape)}")
    mask = mask.bool()
    mask = mask | ~mask.any(dim=-1, keepdim=True)
    return mask[:, None, None, :]
