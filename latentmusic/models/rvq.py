"""The residual vector quantizer: `AudioAutoencoder(bottleneck_type="rvq")`, the token LM's codec.

`vector-quantize-pytorch`'s `ResidualVQ` (EMA codebooks, k-means init, dead-code expiry, quantizer dropout)
turns each latent frame into `num_quantizers` codes; `ResidualVQBottleneck` wraps it for channel-first latents,
decodes codes of the first k quantizers back to latents, and measures how well the codebooks are used.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution
from einops import rearrange
from torch import nn


class QuantizedLatents(DiagonalGaussianDistribution):
    """The `latent_dist` of an `rvq` autoencoder: a point mass on the quantized latents.

    `mode()` and `sample()` both give the quantized latents (with straight-through gradients in
    training), so code written for the continuous bottlenecks works unchanged; the KL term is zero.

    Args:
        latents: Quantized latents, `(batch, latent_channels, frames)`.
        codes: Their codes, `(batch, num_quantizers, frames)` (-1 where quantizer dropout left a codebook out).
        commitment_loss: Sum over quantizers of the weighted commitment loss (zero in eval mode).
    """

    def __init__(self, latents: torch.Tensor, codes: torch.Tensor, commitment_loss: torch.Tensor) -> None:
        super().__init__(torch.cat([latents, torch.zeros_like(latents)], 1), deterministic=True)
        self.codes = codes
        self.commitment_loss = commitment_loss


@dataclass
class CodebookUsage:
    """Codebook usage per quantizer.

    Args:
        perplexity: `(num_quantizers,)`: exp of the entropy of the code distribution, from 1 (one code
            used) to `codebook_size` (all codes equally used).
        dead_fraction: `(num_quantizers,)`: fraction of codes unused (or, from EMA counts, due for replacement).
    """

    perplexity: torch.Tensor
    dead_fraction: torch.Tensor

    def as_logs(self, prefix: str = "codebook") -> dict[str, float]:
        """Flat `{"<prefix>/perplexity_q0": ..., "<prefix>/dead_fraction_q0": ...}` for a training logger.

        Args:
            prefix: Prefix of every key.

        Returns:
            One float per quantizer and statistic.
        """
        logs = {}
        for name in ("perplexity", "dead_fraction"):
            for k, value in enumerate(getattr(self, name).tolist()):
                logs[f"{prefix}/{name}_q{k}"] = value
        return logs


class ResidualVQBottleneck(nn.Module):
    """`vector_quantize_pytorch.ResidualVQ` on channel-first latents, with code lookup and usage stats.

    Args:
        latent_channels: Channels of the latents (the encoder's output and the decoder's input).
        num_quantizers: Codebooks per frame (K).
        codebook_size: Codes per codebook.
        codebook_dim: Dimension the codes are looked up in (a learned projection from and back to
            `latent_channels`); `None` looks up in `latent_channels` itself.
        quantizer_dropout: In training, quantize each batch with a random number of quantizers (SoundStream), so
            that the first k codebooks alone decode well.
        commitment_weight: Weight of the commitment loss (in `encode(x).latent_dist.commitment_loss`).
        codebook_decay: EMA decay of the codebook updates.
        threshold_ema_dead_code: Codes whose EMA usage count falls below this are replaced by random encoder
            outputs in training; 0 disables.
        kmeans_init: Initialise each codebook by k-means on the first batch it sees.
        codebook_cosine_sim: L2-normalised codes and inputs, matched by cosine similarity (ViT-VQGAN / improved
            VQGAN), which keeps more codes in use; best with a small `codebook_dim`.
    """

    is_codec = True

    def __init__(
        self,
        latent_channels: int,
        *,
        num_quantizers: int = 8,
        codebook_size: int = 1024,
        codebook_dim: int | None = None,
        quantizer_dropout: bool = False,
        commitment_weight: float = 1.0,
        codebook_decay: float = 0.99,
        threshold_ema_dead_code: float = 2.0,
        kmeans_init: bool = True,
        codebook_cosine_sim: bool = False,
    ) -> None:
        super().__init__()
        _check_quantizer_config(num_quantizers, codebook_size, codebook_dim, commitment_weight, codebook_decay)
        try:
            from vector_quantize_pytorch import ResidualVQ
        except ImportError as error:
            raise ImportError(
                "bottleneck_type='rvq' needs vector-quantize-pytorch; install it with "
                "`pip install vector-quantize-pytorch`"
            ) from error
        self.in_channels = latent_channels
        self.num_quantizers, self.codebook_size = num_quantizers, codebook_size
        self.rvq = ResidualVQ(
            dim=latent_channels,
            num_quantizers=num_quantizers,
            codebook_size=codebook_size,
            codebook_dim=codebook_dim,
            quantize_dropout=quantizer_dropout,
            commitment_weight=commitment_weight,
            decay=codebook_decay,
            threshold_ema_dead_code=threshold_ema_dead_code,
            kmeans_init=kmeans_init,
            use_cosine_sim=codebook_cosine_sim,
        )
        self.threshold_ema_dead_code = threshold_ema_dead_code

    def forward(self, latents: torch.Tensor) -> QuantizedLatents:
        """Quantize latents `(batch, latent_channels, frames)`.

        Args:
            latents: Encoder output, `(batch, latent_channels, frames)`.

        Returns:
            The quantized latents with their codes and commitment loss.
        """
        quantized, codes, losses = self.rvq(rearrange(latents, "b d t -> b t d"))
        return QuantizedLatents(
            rearrange(quantized, "b t d -> b d t").to(latents.dtype), rearrange(codes, "b t q -> b q t"), losses.sum()
        )

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Quantized latents `(batch, latent_channels, frames)` from the codes of the first k quantizers.

        Args:
            codes: `(batch, k, frames)` long, k <= num_quantizers; -1 leaves a quantizer out.

        Returns:
            The sum of the looked-up codes, projected back to `latent_channels`.
        """
        codebooks = self.rvq.codebooks  # (num_quantizers, codebook_size, lookup dim)
        if codes.ndim != 3 or not 1 <= codes.shape[1] <= len(codebooks):
            raise ValueError(
                f"codes must have shape (batch, k, frames) with 1 <= k <= {len(codebooks)} quantizers, "
                f"got {tuple(codes.shape)}"
            )
        if codes.dtype not in (torch.int32, torch.int64) or codes.max() >= codebooks.shape[1] or codes.min() < -1:
            raise ValueError(
                f"codes must be integers in [0, {codebooks.shape[1]}) (or -1 for a dropped quantizer), got "
                f"{codes.dtype} in [{codes.min().item()}, {codes.max().item()}]; were they made by another codec?"
            )
        quantized = codebooks.new_zeros(codes.shape[0], codes.shape[2], codebooks.shape[2])
        for codebook, layer_codes in zip(codebooks, codes.unbind(1)):
            kept = (layer_codes >= 0).unsqueeze(-1)
            quantized = quantized + codebook[layer_codes.clamp_min(0)] * kept
        return rearrange(self.rvq.project_out(quantized), "b t d -> b d t")

    @torch.no_grad()
    def usage(self, codes: torch.Tensor | None = None) -> CodebookUsage:
        """Perplexity and dead-code fraction per quantizer, from `codes` or the EMA counts.

        Args:
            codes: `(batch, num_quantizers, frames)` to count, or `None` for the EMA counts (dead there means
                below `threshold_ema_dead_code`, i.e. due for replacement, or below 1e-3 when replacement is off).

        Returns:
            The usage statistics.
        """
        size = self.rvq.codebook_size
        if codes is None:
            counts = torch.stack([layer._codebook.cluster_size[0] for layer in self.rvq.layers]).float()
            dead = counts < (self.threshold_ema_dead_code or 1e-3)
        else:
            rows = rearrange(codes, "b q t -> q (b t)")
            counts = torch.stack([torch.bincount(row[row >= 0], minlength=size) for row in rows]).float()
            dead = counts == 0
        probs = counts / counts.sum(-1, keepdim=True).clamp_min(1e-12)
        entropy = -(probs * probs.clamp_min(1e-12).log()).sum(-1)
        return CodebookUsage(perplexity=entropy.exp(), dead_fraction=dead.float().mean(-1))


def _check_quantizer_config(num_quantizers, codebook_size, codebook_dim, commitment_weight, codebook_decay) -> None:
    if num_quantizers < 1 or codebook_size < 2:
        raise ValueError(
            f"bottleneck_type='rvq' needs num_quantizers >= 1 and codebook_size >= 2, "
            f"got {num_quantizers} and {codebook_size}"
        )
    if codebook_dim is not None and codebook_dim < 1:
        raise ValueError(f"codebook_dim must be positive (or None for latent_channels), got {codebook_dim}")
    if commitment_weight < 0 or not 0 <= codebook_decay < 1:
        raise ValueError(
            f"need commitment_weight >= 0 and 0 <= codebook_decay < 1, got {commitment_weight} and {codebook_decay}"
        )
