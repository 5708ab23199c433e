"""A text-conditioned 1-D U-Net that denoises latent audio sequences.

The model follows diffusers' `UNet2DConditionModel` in shape and interface, over sequences of shape
`(batch, channels, frames)` instead of images: residual blocks whose normalisation is modulated by the
timestep embedding, self- and cross-attention blocks at the coarser levels, strided-convolution
downsampling and nearest-neighbour upsampling with skip connections. Optional duration ("timing")
conditioning as in Stable Audio lets one model generate clips of any length up to `max_seconds`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.loaders import PeftAdapterMixin
from diffusers.models.attention import AttentionMixin
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import BaseOutput
from torch import nn

from .conditioning import check_conditioning_inputs, legacy_conditioning_inputs
from .config_checks import strict_config
from .unet_1d_blocks import DownBlock1D, MidBlock1D, UpBlock1D, zero_module

# Added to the attention logits of padded text tokens, as diffusers' UNet2DConditionModel does: large
# enough that their softmax weight underflows to zero, small enough to stay finite in half precision.
_MASKED_LOGIT_BIAS = -10000.0


@dataclass
class UNet1DConditionOutput(BaseOutput):
    """The output of [`UNet1DConditionModel`].

    Args:
        sample (`torch.Tensor` of shape `(batch, out_channels, frames)`):
            The model's prediction (noise, sample or velocity, depending on how it was trained), as long as
            the input `sample`.
    """

    sample: torch.Tensor


class SecondsEmbedding(nn.Module):
    """Embeds a duration in seconds, as Stable Audio's number conditioner does.

    Our own: diffusers' `GaussianFourierProjection` has frozen frequencies, and these are learned (as in Stable
    Audio); the MLP is diffusers' `TimestepEmbedding`.

    Seconds are clamped to `[0, max_seconds]` and divided by `max_seconds`; the resulting number in
    `[0, 1]` is expanded into learnable random Fourier features (plus the number itself) and mapped by an
    MLP to the time embedding's width.

    Args:
        num_features: Number of Fourier features (even).
        embedding_dim: Width of the output.
        max_seconds: The duration that maps to 1.
    """

    def __init__(self, num_features: int, embedding_dim: int, max_seconds: float) -> None:
        super().__init__()
        self.max_seconds = max_seconds
        self.frequencies = nn.Parameter(torch.randn(num_features // 2))
        self.mlp = TimestepEmbedding(num_features + 1, embedding_dim)

    def forward(self, seconds: torch.Tensor) -> torch.Tensor:
        """Map `(batch,)` seconds to `(batch, embedding_dim)`."""
        position = (seconds.clamp(0, self.max_seconds) / self.max_seconds).to(self.frequencies.dtype)[:, None]
        angles = 2 * math.pi * position * self.frequencies[None, :]
        return self.mlp(torch.cat([position, angles.sin(), angles.cos()], dim=-1))


@strict_config
class UNet1DConditionModel(ModelMixin, AttentionMixin, ConfigMixin, PeftAdapterMixin):
    r"""A conditional 1-D U-Net that predicts noise (or sample, or velocity) for latent audio sequences.

    The input is `(batch, in_channels + extra_in_channels, frames)`: the noisy latents, then the conditioning
    inputs the config names (`conditioning_inputs`, see `latentmusic.models.conditioning`, whose
    `build_conditioning` makes them): `sample = torch.cat([noisy_latents, conditioning], dim=1)`. For JEN-1-style
    continuation and inpainting they are a mask channel (1 where audio is given) and the masked clean latents,
    `{"mask": 1, "known_latents": in_channels}`. The output has `out_channels` channels and always the same
    number of frames as the input: any length works, the model pads to a multiple of
    `2 ** (len(block_out_channels) - 1)` internally (with zeros at the end) and crops the result.

    Each level of the U-Net has `layers_per_block` residual blocks whose GroupNorm is scaled and shifted
    by the conditioning embedding (timestep, plus optional durations and global condition); levels marked
    in `attention_levels`, and always the middle block, add self-attention, cross-attention to the text
    and a feed-forward layer after each residual block. The output convolution and every residual
    branch's last layer start at zero, so a fresh model predicts exactly zero.

    Args:
        in_channels (`int`, defaults to 64): Channels of the latents being denoised.
        out_channels (`int`, *optional*): Channels of the prediction; defaults to `in_channels`.
        conditioning_inputs (`dict[str, int]`, *optional*): The inputs concatenated after the latents, by name
            and channel width, in order (`"mask"`, `"known_latents"`, `"melody_chroma"`; see
            `latentmusic.models.conditioning`); none by default. Configs saved with the unnamed
            `extra_in_channels` load through `_convert_legacy_config`.
        block_out_channels (`tuple[int, ...]`, defaults to `(64, 128, 256)`): Channels of each level;
            the sequence is halved in length between consecutive levels.
        layers_per_block (`int`, defaults to 2): Residual blocks per down level (the up levels have one
            more, to consume the skip connections).
        attention_levels (`tuple[bool, ...]`, defaults to `(False, True, True)`): Which levels have
            attention blocks, one flag per entry of `block_out_channels`.
        attention_head_dim (`int`, defaults to 64): Channels per attention head; the channels of every
            level with attention, and of the last level, must be a multiple of it.
        cross_attention_dim (`int`, defaults to 768): Hidden size of `encoder_hidden_states` (the text
            encoder's width).
        norm_num_groups (`int`, defaults to 32): GroupNorm groups; must divide every entry of
            `block_out_channels`.
        time_embedding_dim (`int`, *optional*): Width of the conditioning embedding; defaults to
            `4 * block_out_channels[0]`.
        use_timing_conditioning (`bool`, defaults to `True`): Whether to embed `seconds_start` and
            `seconds_total` (Stable Audio's timing conditioning), so that one model learns clips of
            varying length.
        max_seconds (`float`, defaults to 30.0): The longest duration the timing conditioning
            distinguishes; larger values are clamped to it.
        dropout (`float`, defaults to 0.0): Dropout probability in residual and attention blocks.
        flip_sin_to_cos (`bool`, defaults to `True`): Order of the sinusoidal timestep embedding
            (`cos, sin` when true), as in diffusers' `Timesteps`.
        freq_shift (`float`, defaults to 0.0): Frequency shift of the sinusoidal timestep embedding.
        global_cond_dim (`int`, defaults to 0): Width of an optional per-example vector (for example a
            melody or style embedding) projected and added to the conditioning embedding; 0 disables it.
        pooled_text_conditioning (`bool`, defaults to `False`): Also condition every residual block on the text
            as a whole: the attention-mask-weighted mean of `encoder_hidden_states`, through a small MLP, is
            added to the conditioning embedding (as Stable Audio's global conditioning does beside
            cross-attention), so that global attributes of the prompt (key, tempo, instrument) reach the
            GroupNorm scale and shift of every block and not only the attention levels.

    Example:
        ```py
        >>> import torch
        >>> from latentmusic.models import UNet1DConditionModel
        >>> unet = UNet1DConditionModel(
        ...     in_channels=8, block_out_channels=(32, 64), attention_levels=(False, True),
        ...     layers_per_block=1, attention_head_dim=16, cross_attention_dim=24, norm_num_groups=8,
        ... )
        >>> latents = torch.randn(2, 8, 37)
        >>> text = torch.randn(2, 5, 24)
        >>> unet(latents, 500, text, seconds_total=torch.tensor([10.0, 20.0])).sample.shape
        torch.Size([2, 8, 37])

        ```
    """

    _supports_gradient_checkpointing = True

    @register_to_config
    def __init__(
        self,
        in_channels: int = 64,
        out_channels: int | None = None,
        conditioning_inputs: dict[str, int] | None = None,
        block_out_channels: tuple[int, ...] = (64, 128, 256),
        layers_per_block: int = 2,
        attention_levels: tuple[bool, ...] = (False, True, True),
        attention_head_dim: int = 64,
        cross_attention_dim: int = 768,
        norm_num_groups: int = 32,
        time_embedding_dim: int | None = None,
        use_timing_conditioning: bool = True,
        max_seconds: float = 30.0,
        dropout: float = 0.0,
        flip_sin_to_cos: bool = True,
        freq_shift: float = 0.0,
        global_cond_dim: int = 0,
        pooled_text_conditioning: bool = False,
    ) -> None:
        super().__init__()
        block_out_channels = tuple(block_out_channels)
        attention_levels = tuple(attention_levels)
        _check_config(
            block_out_channels,
            attention_levels,
            layers_per_block,
            attention_head_dim,
            norm_num_groups,
            global_cond_dim,
            max_seconds,
        )
        conditioning = check_conditioning_inputs(conditioning_inputs or {}, in_channels)
        extra_in_channels = sum(conditioning.values())
        out_channels = in_channels if out_channels is None else out_channels
        temb_channels = time_embedding_dim or 4 * block_out_channels[0]
        block_kwargs = {
            "temb_channels": temb_channels,
            "norm_num_groups": norm_num_groups,
            "attention_head_dim": attention_head_dim,
            "cross_attention_dim": cross_attention_dim,
            "dropout": dropout,
        }

        # conditioning embedding: timestep (+ durations) (+ global condition)
        self.time_proj = Timesteps(block_out_channels[0], flip_sin_to_cos, freq_shift)
        self.time_embedding = TimestepEmbedding(block_out_channels[0], temb_channels)
        if use_timing_conditioning:
            self.seconds_start_embedding = SecondsEmbedding(block_out_channels[0], temb_channels, max_seconds)
            self.seconds_total_embedding = SecondsEmbedding(block_out_channels[0], temb_channels, max_seconds)
        if global_cond_dim > 0:
            # no bias, so that a zero vector (the "no condition" value) contributes exactly nothing
            self.global_cond_proj = nn.Linear(global_cond_dim, temb_channels, bias=False)
        if pooled_text_conditioning:
            self.pooled_text_embedding = TimestepEmbedding(cross_attention_dim, temb_channels)

        self.conv_in = nn.Conv1d(in_channels + extra_in_channels, block_out_channels[0], kernel_size=3, padding=1)

        num_levels = len(block_out_channels)
        self.down_blocks = nn.ModuleList(
            DownBlock1D(
                in_channels=block_out_channels[max(level - 1, 0)],
                out_channels=block_out_channels[level],
                num_layers=layers_per_block,
                add_attention=attention_levels[level],
                add_downsample=level < num_levels - 1,
                **block_kwargs,
            )
            for level in range(num_levels)
        )
        self.mid_block = MidBlock1D(block_out_channels[-1], **block_kwargs)
        self.up_blocks = nn.ModuleList(
            UpBlock1D(
                in_channels=block_out_channels[max(level - 1, 0)],
                prev_output_channels=block_out_channels[min(level + 1, num_levels - 1)],
                out_channels=block_out_channels[level],
                num_layers=layers_per_block + 1,
                add_attention=attention_levels[level],
                add_upsample=level > 0,
                **block_kwargs,
            )
            for level in reversed(range(num_levels))
        )

        self.norm_out = nn.GroupNorm(norm_num_groups, block_out_channels[0])
        self.conv_out = zero_module(nn.Conv1d(block_out_channels[0], out_channels, kernel_size=3, padding=1))

    @classmethod
    def _convert_legacy_config(cls, config: dict) -> dict:
        """A config saved before the conditioning inputs had names, with its `extra_in_channels` named (see
        `legacy_conditioning_inputs`); other configs are returned as they are. `from_config` and
        `from_pretrained` call it, so old checkpoints load.

        Args:
            config: A U-Net config.

        Returns:
            The config with `conditioning_inputs` in place of `extra_in_channels`.
        """
        if "extra_in_channels" not in config:
            return config
        config = dict(config)
        extra = config.pop("extra_in_channels")
        if "conditioning_inputs" not in config:
            config["conditioning_inputs"] = legacy_conditioning_inputs(config.get("in_channels", 64), extra)
        return config

    @property
    def extra_in_channels(self) -> int:
        """Channels of all conditioning inputs together, concatenated after the latents."""
        return sum((self.config.conditioning_inputs or {}).values())

    @property
    def length_multiple(self) -> int:
        """The model pads every input internally to a multiple of this many frames."""
        return 2 ** (len(self.config.block_out_channels) - 1)

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float | int,
        encoder_hidden_states: torch.Tensor,
        encoder_attention_mask: torch.Tensor | None = None,
        seconds_start: torch.Tensor | float | None = None,
        seconds_total: torch.Tensor | float | None = None,
        global_cond: torch.Tensor | None = None,
        return_dict: bool = True,
    ) -> UNet1DConditionOutput | tuple[torch.Tensor]:
        r"""Predict for noisy latents at `timestep`, conditioned on text (and durations, global condition).

        Args:
            sample (`torch.Tensor`): Noisy latents of shape `(batch, in_channels + extra_in_channels,
                frames)`, any number of frames; the conditioning inputs, if any, come after the latents.
            timestep (`torch.Tensor`, `float` or `int`): The diffusion timestep: a number, a 0-d tensor, or
                a 1-d tensor of length 1 or `batch`. Fractional timesteps are used as they are.
            encoder_hidden_states (`torch.Tensor`): Text encoder hidden states of shape
                `(batch, text_len, cross_attention_dim)`.
            encoder_attention_mask (`torch.Tensor`, *optional*): Shape `(batch, text_len)`, 1 (or `True`)
                for tokens to attend to and 0 for padding; padded tokens have no effect on the output.
                `None` attends to every token.
            seconds_start (`torch.Tensor` or `float`, *optional*): Timing conditioning, in seconds (a number or
                a tensor broadcastable to `(batch,)`); always 0 in this project's training and pipeline (see
                `latentmusic.models.conditioning.timing_conditioning`). Defaults to 0. Ignored unless the model
                uses timing conditioning.
            seconds_total (`torch.Tensor` or `float`, *optional*): Seconds of real audio in the window `sample`
                covers, the rest being padding (a number or a tensor broadcastable to `(batch,)`; see
                `timing_conditioning`). Defaults to `max_seconds`. Ignored unless the model uses timing
                conditioning.
            global_cond (`torch.Tensor`, *optional*): Shape `(batch, global_cond_dim)`, only for models with
                `global_cond_dim > 0`. `None` is the same as a zero vector (the "no condition" value).
            return_dict (`bool`, defaults to `True`): Whether to return a [`UNet1DConditionOutput`] rather
                than a one-element tuple.

        Returns:
            [`UNet1DConditionOutput`] or `tuple`: The prediction of shape `(batch, out_channels, frames)`,
            in the output's `sample` or as the tuple's only element.

        Raises:
            ValueError: If a tensor's shape or the batch sizes do not match the model's configuration.
        """
        self._check_inputs(sample, encoder_hidden_states, encoder_attention_mask, global_cond)
        num_frames = sample.shape[-1]

        temb = self._embed_conditions(sample, timestep, seconds_start, seconds_total, global_cond)
        if self.config.pooled_text_conditioning:
            temb = temb + self.pooled_text_embedding(_masked_mean(encoder_hidden_states, encoder_attention_mask))
        encoder_attention_bias = None
        if encoder_attention_mask is not None:
            encoder_attention_bias = (1 - encoder_attention_mask.to(sample.dtype)) * _MASKED_LOGIT_BIAS
            encoder_attention_bias = encoder_attention_bias[:, None, :]
        context = (encoder_hidden_states, encoder_attention_bias)

        padding = -num_frames % self.length_multiple
        hidden_states = self.conv_in(F.pad(sample, (0, padding)))
        skips = (hidden_states,)
        for down_block in self.down_blocks:
            hidden_states, block_skips = down_block(hidden_states, temb, *context)
            skips += block_skips
        hidden_states = self.mid_block(hidden_states, temb, *context)
        for up_block in self.up_blocks:
            num_skips = len(up_block.resnets)
            hidden_states = up_block(hidden_states, skips[-num_skips:], temb, *context)
            skips = skips[:-num_skips]
        output = self.conv_out(F.silu(self.norm_out(hidden_states)))[..., :num_frames]

        if not return_dict:
            return (output,)
        return UNet1DConditionOutput(sample=output)

    def _embed_conditions(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float | int,
        seconds_start: torch.Tensor | float | None,
        seconds_total: torch.Tensor | float | None,
        global_cond: torch.Tensor | None,
    ) -> torch.Tensor:
        """Sum the timestep, duration and global-condition embeddings into one `(batch, temb)` vector."""
        batch_size = sample.shape[0]
        timesteps = _per_example(timestep, "timestep", batch_size, sample.device)
        temb = self.time_embedding(self.time_proj(timesteps).to(sample.dtype))
        if self.config.use_timing_conditioning:
            start = 0.0 if seconds_start is None else seconds_start
            total = self.config.max_seconds if seconds_total is None else seconds_total
            temb = temb + self.seconds_start_embedding(_per_example(start, "seconds_start", batch_size, sample.device))
            temb = temb + self.seconds_total_embedding(_per_example(total, "seconds_total", batch_size, sample.device))
        if global_cond is not None:
            temb = temb + self.global_cond_proj(global_cond.to(temb.dtype))
        return temb

    def _check_inputs(
        self,
        sample: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        encoder_attention_mask: torch.Tensor | None,
        global_cond: torch.Tensor | None,
    ) -> None:
        config = self.config
        expected_channels = config.in_channels + self.extra_in_channels
        if sample.ndim != 3:
            raise ValueError(
                f"`sample` must have shape (batch, channels, frames), got shape {tuple(sample.shape)}; "
                "add a batch dimension with `sample[None]` for a single example"
            )
        if sample.shape[1] != expected_channels:
            message = f"`sample` has {sample.shape[1]} channels, but this model expects "
            if self.extra_in_channels:
                message += (
                    f"in_channels + extra_in_channels = {config.in_channels} + {self.extra_in_channels} = "
                    f"{expected_channels}; concatenate the conditioning inputs {dict(config.conditioning_inputs)} "
                    "after the latents along dim 1 (see latentmusic.models.conditioning.build_conditioning)"
                )
            else:
                message += f"in_channels = {config.in_channels}"
            raise ValueError(message)
        if sample.shape[2] == 0:
            raise ValueError("`sample` has 0 frames; pass at least one frame")
        batch_size = sample.shape[0]
        if encoder_hidden_states.ndim != 3 or encoder_hidden_states.shape[2] != config.cross_attention_dim:
            raise ValueError(
                f"`encoder_hidden_states` must have shape (batch, text_len, cross_attention_dim="
                f"{config.cross_attention_dim}), got shape {tuple(encoder_hidden_states.shape)}; "
                "use the text encoder this model was built for"
            )
        if encoder_hidden_states.shape[0] != batch_size:
            raise ValueError(
                f"`encoder_hidden_states` has batch size {encoder_hidden_states.shape[0]}, but `sample` has "
                f"{batch_size}; repeat the text embeddings to one per sample"
            )
        text_shape = tuple(encoder_hidden_states.shape[:2])
        if encoder_attention_mask is not None and tuple(encoder_attention_mask.shape) != text_shape:
            raise ValueError(
                f"`encoder_attention_mask` must have shape (batch, text_len) = {text_shape} like "
                f"`encoder_hidden_states`, got shape {tuple(encoder_attention_mask.shape)}"
            )
        if global_cond is not None:
            if config.global_cond_dim == 0:
                raise ValueError(
                    "`global_cond` was given, but this model has global_cond_dim=0; build it with "
                    "global_cond_dim > 0 or drop the argument"
                )
            if tuple(global_cond.shape) != (batch_size, config.global_cond_dim):
                raise ValueError(
                    f"`global_cond` must have shape (batch, global_cond_dim) = "
                    f"{(batch_size, config.global_cond_dim)}, got shape {tuple(global_cond.shape)}"
                )


def _per_example(value: torch.Tensor | float | int, name: str, batch_size: int, device: torch.device) -> torch.Tensor:
    """Return `value` (a number, 0-d tensor, or 1-d tensor of length 1 or `batch_size`) as `(batch_size,)`."""
    values = torch.as_tensor(value, dtype=torch.float32, device=device)
    if values.ndim == 0:
        values = values[None]
    if values.ndim != 1 or values.shape[0] not in (1, batch_size):
        raise ValueError(
            f"`{name}` must be a number, a 0-d tensor or a 1-d tensor of length 1 or batch size "
            f"{batch_size}, got shape {tuple(values.shape)}"
        )
    return values.expand(batch_size)


def _masked_mean(hidden_states: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """The mean over the tokens of `(batch, tokens, width)` hidden states, padding (mask 0) left out."""
    if attention_mask is None:
        return hidden_states.mean(dim=1)
    weights = attention_mask.to(hidden_states.dtype)[:, :, None]
    return (hidden_states * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1)


def _check_config(
    block_out_channels: tuple[int, ...],
    attention_levels: tuple[bool, ...],
    layers_per_block: int,
    attention_head_dim: int,
    norm_num_groups: int,
    global_cond_dim: int,
    max_seconds: float,
) -> None:
    """Raise a ValueError naming the first inconsistent constructor argument."""
    if len(attention_levels) != len(block_out_channels):
        raise ValueError(
            f"attention_levels has {len(attention_levels)} entries but block_out_channels has "
            f"{len(block_out_channels)}; give one flag per level"
        )
    if block_out_channels[0] % 2:
        raise ValueError(
            f"block_out_channels[0] must be even (it sizes the sinusoidal embeddings), got {block_out_channels[0]}"
        )
    for channels in block_out_channels:
        if channels % norm_num_groups:
            raise ValueError(f"norm_num_groups={norm_num_groups} must divide every block_out_channels, not {channels}")
    attention_channels = [c for c, a in zip(block_out_channels, attention_levels) if a] + [block_out_channels[-1]]
    for channels in attention_channels:
        if channels % attention_head_dim:
            raise ValueError(
                f"attention_head_dim={attention_head_dim} must divide the channels of every level with "
                f"attention (and of the last level, whose middle block always has attention), not {channels}"
            )
    if layers_per_block < 1:
        raise ValueError(f"layers_per_block must be at least 1, got {layers_per_block}")
    if global_cond_dim < 0:
        raise ValueError(f"global_cond_dim must be >= 0, got {global_cond_dim}")
    if not max_seconds > 0:
        raise ValueError(f"max_seconds must be positive, got {max_seconds}")
