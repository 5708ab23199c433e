"""The building blocks of `UNet1DConditionModel`, as diffusers keeps its U-Nets' blocks beside the models.

Residual blocks whose normalisation the conditioning embedding modulates (scale and shift), self- plus
cross-attention blocks over frames (diffusers' `BasicTransformerBlock`), and the down, middle and up blocks that
stack them with strided-convolution downsampling and nearest-neighbour upsampling.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.models.attention import BasicTransformerBlock
from torch import nn


def zero_module(module: nn.Module) -> nn.Module:
    """Zero all parameters of `module` in place and return it."""
    for parameter in module.parameters():
        nn.init.zeros_(parameter)
    return module


class ResnetBlock1D(nn.Module):
    """A residual block: GroupNorm, SiLU, conv (k=3), twice, with the time embedding as scale and shift.

    The second convolution starts at zero, so a fresh block is the identity (or its 1x1 shortcut).

    Args:
        in_channels: Channels of the input.
        out_channels: Channels of the output.
        temb_channels: Width of the time embedding.
        norm_num_groups: Groups of both GroupNorms.
        dropout: Dropout probability before the second convolution.
    """

    def __init__(
        self, in_channels: int, out_channels: int, temb_channels: int, norm_num_groups: int, dropout: float
    ) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(norm_num_groups, in_channels)
        self.conv1 = nn.Conv1d(in_channels, out_channels, kernel_size=3, padding=1)
        self.time_emb_proj = nn.Linear(temb_channels, 2 * out_channels)
        self.norm2 = nn.GroupNorm(norm_num_groups, out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = zero_module(nn.Conv1d(out_channels, out_channels, kernel_size=3, padding=1))
        self.shortcut = (
            nn.Identity() if in_channels == out_channels else nn.Conv1d(in_channels, out_channels, kernel_size=1)
        )

    def forward(self, hidden_states: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        """Apply the block to `(batch, in_channels, frames)` given a `(batch, temb_channels)` embedding."""
        h = self.conv1(F.silu(self.norm1(hidden_states)))
        scale, shift = self.time_emb_proj(F.silu(temb))[:, :, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.dropout(F.silu(h)))
        return self.shortcut(hidden_states) + h


class AttentionBlock1D(nn.Module):
    """Self-attention, cross-attention to the text and a feed-forward layer over the frames of a sequence.

    A thin wrapper of diffusers' `BasicTransformerBlock` (pre-LayerNorm, residual around each part,
    SDPA through `AttnProcessor2_0`) that takes channels-first sequences. The output projection of each
    part starts at zero, so a fresh block is the identity.

    Args:
        channels: Channels of the sequence (the attention width).
        attention_head_dim: Channels per attention head.
        cross_attention_dim: Width of `encoder_hidden_states`.
        dropout: Dropout probability inside the attention and feed-forward layers.
    """

    def __init__(self, channels: int, attention_head_dim: int, cross_attention_dim: int, dropout: float) -> None:
        super().__init__()
        self.transformer = BasicTransformerBlock(
            channels,
            num_attention_heads=channels // attention_head_dim,
            attention_head_dim=attention_head_dim,
            dropout=dropout,
            cross_attention_dim=cross_attention_dim,
        )
        for out_projection in (
            self.transformer.attn1.to_out[0],
            self.transformer.attn2.to_out[0],
            self.transformer.ff.net[-1],
        ):
            zero_module(out_projection)

    def forward(
        self,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        encoder_attention_bias: torch.Tensor | None,
    ) -> torch.Tensor:
        """Attend over `(batch, channels, frames)`; the bias is `(batch, 1, text_len)` and additive."""
        tokens = self.transformer(
            hidden_states.transpose(1, 2),
            encoder_hidden_states=encoder_hidden_states,
            encoder_attention_mask=encoder_attention_bias,
        )
        return tokens.transpose(1, 2)


class _CheckpointedBlock(nn.Module):
    """A block whose sub-layers are recomputed in the backward pass when gradient checkpointing is on.

    `ModelMixin.enable_gradient_checkpointing` finds every module with a `gradient_checkpointing`
    attribute and gives it `_gradient_checkpointing_func`.
    """

    def __init__(self) -> None:
        super().__init__()
        self.gradient_checkpointing = False

    def _run(self, layer: nn.Module, *args: torch.Tensor | None) -> torch.Tensor:
        if torch.is_grad_enabled() and self.gradient_checkpointing:
            return self._gradient_checkpointing_func(layer, *args)
        return layer(*args)


class DownBlock1D(_CheckpointedBlock):
    """Residual blocks (each optionally followed by attention), then an optional strided-conv downsample.

    Args:
        in_channels: Channels of the input.
        out_channels: Channels of every layer's output.
        num_layers: Number of residual blocks.
        add_attention: Whether each residual block is followed by an [`AttentionBlock1D`].
        add_downsample: Whether to halve the length at the end.
        temb_channels: Width of the time embedding.
        norm_num_groups: GroupNorm groups.
        attention_head_dim: Channels per attention head.
        cross_attention_dim: Width of `encoder_hidden_states`.
        dropout: Dropout probability.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        num_layers: int,
        add_attention: bool,
        add_downsample: bool,
        temb_channels: int,
        norm_num_groups: int,
        attention_head_dim: int,
        cross_attention_dim: int,
        dropout: float,
    ) -> None:
        super().__init__()
        self.resnets = nn.ModuleList(
            ResnetBlock1D(
                in_channels if i == 0 else out_channels, out_channels, temb_channels, norm_num_groups, dropout
            )
            for i in range(num_layers)
        )
        self.attentions = nn.ModuleList(
            AttentionBlock1D(out_channels, attention_head_dim, cross_attention_dim, dropout)
            for _ in range(num_layers if add_attention else 0)
        )
        self.downsample = (
            nn.Conv1d(out_channels, out_channels, kernel_size=3, stride=2, padding=1) if add_downsample else None
        )

    def forward(
        self,
        hidden_states: torch.Tensor,
        temb: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        encoder_attention_bias: torch.Tensor | None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """Return the block's output and the states it hands to the up path as skip connections."""
        skips: tuple[torch.Tensor, ...] = ()
        for i, resnet in enumerate(self.resnets):
            hidden_states = self._run(resnet, hidden_states, temb)
            if self.attentions:
                hidden_states = self._run(
                    self.attentions[i], hidden_states, encoder_hidden_states, encoder_attention_bias
                )
            skips += (hidden_states,)
        if self.downsample is not None:
            hidden_states = self.downsample(hidden_states)
            skips += (hidden_states,)
        return hidden_states, skips


class MidBlock1D(_CheckpointedBlock):
    """Residual block, attention, residual block at the coarsest level.

    Args:
        channels: Channels of the input and output.
        temb_channels: Width of the time embedding.
        norm_num_groups: GroupNorm groups.
        attention_head_dim: Channels per attention head.
        cross_attention_dim: Width of `encoder_hidden_states`.
        dropout: Dropout probability.
    """

    def __init__(
        self,
        channels: int,
        temb_channels: int,
        norm_num_groups: int,
        attention_head_dim: int,
        cross_attention_dim: int,
        dropout: float,
    ) -> None:
        super().__init__()
        self.resnets = nn.ModuleList(
            ResnetBlock1D(channels, channels, temb_channels, norm_num_groups, dropout) for _ in range(2)
        )
        self.attention = AttentionBlock1D(channels, attention_head_dim, cross_attention_dim, dropout)

    def forward(
        self,
        hidden_states: torch.Tensor,
        temb: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        encoder_attention_bias: torch.Tensor | None,
    ) -> torch.Tensor:
        """Apply residual block, attention, residual block."""
        hidden_states = self._run(self.resnets[0], hidden_states, temb)
        hidden_states = self._run(self.attention, hidden_states, encoder_hidden_states, encoder_attention_bias)
        return self._run(self.resnets[1], hidden_states, temb)


class UpBlock1D(_CheckpointedBlock):
    """Residual blocks over the input concatenated with skip states, then an optional 2x upsample.

    Args:
        in_channels: Channels of the skip state the last layer consumes (the down path's input to this level).
        prev_output_channels: Channels of the input coming from the coarser level.
        out_channels: Channels of every layer's output.
        num_layers: Number of residual blocks, one per consumed skip state.
        add_attention: Whether each residual block is followed by an [`AttentionBlock1D`].
        add_upsample: Whether to double the length at the end (nearest neighbour, then a conv).
        temb_channels: Width of the time embedding.
        norm_num_groups: GroupNorm groups.
        attention_head_dim: Channels per attention head.
        cross_attention_dim: Width of `encoder_hidden_states`.
        dropout: Dropout probability.
    """

    def __init__(
        self,
        in_channels: int,
        prev_output_channels: int,
        out_channels: int,
        num_layers: int,
        add_attention: bool,
        add_upsample: bool,
        temb_channels: int,
        norm_num_groups: int,
        attention_head_dim: int,
        cross_attention_dim: int,
        dropout: float,
    ) -> None:
        super().__init__()
        resnets = []
        for i in range(num_layers):
            skip_channels = in_channels if i == num_layers - 1 else out_channels
            input_channels = prev_output_channels if i == 0 else out_channels
            resnets.append(
                ResnetBlock1D(input_channels + skip_channels, out_channels, temb_channels, norm_num_groups, dropout)
            )
        self.resnets = nn.ModuleList(resnets)
        self.attentions = nn.ModuleList(
            AttentionBlock1D(out_channels, attention_head_dim, cross_attention_dim, dropout)
            for _ in range(num_layers if add_attention else 0)
        )
        self.upsample_conv = nn.Conv1d(out_channels, out_channels, kernel_size=3, padding=1) if add_upsample else None

    def forward(
        self,
        hidden_states: torch.Tensor,
        skips: tuple[torch.Tensor, ...],
        temb: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        encoder_attention_bias: torch.Tensor | None,
    ) -> torch.Tensor:
        """Consume `skips` from last to first, one per residual block."""
        for i, resnet in enumerate(self.resnets):
            hidden_states = torch.cat([hidden_states, skips[-1 - i]], dim=1)
            hidden_states = self._run(resnet, hidden_states, temb)
            if self.attentions:
                hidden_states = self._run(
                    self.attentions[i], hidden_states, encoder_hidden_states, encoder_attention_bias
                )
        if self.upsample_conv is not None:
            hidden_states = self.upsample_conv(F.interpolate(hidden_states, scale_factor=2.0, mode="nearest"))
        return hidden_states
