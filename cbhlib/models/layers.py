"""Building blocks of the MAE encoders: a pre-norm transformer block, sin-cos position embeddings, random masking."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(ln(x)); x + mlp(ln(x)). x: (B, L, D).

    Attention is a fused qkv projection and ``scaled_dot_product_attention`` (on CPU
    several times faster than ``nn.MultiheadAttention`` at these sizes).
    """

    def __init__(self, dim: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def attn(self, x: torch.Tensor) -> torch.Tensor:
        B, L, D = x.shape
        q, k, v = self.qkv(x).reshape(B, L, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)  # 3 x (B, h, L, hd)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, h, L, hd)
        return self.proj(out.transpose(1, 2).reshape(B, L, D))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


def sincos_1d(dim: int, pos: torch.Tensor) -> torch.Tensor:
    """Sine-cosine embedding of positions ``pos`` [L] -> [L, dim] (dim even)."""
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2))
    out = pos.double()[:, None] * omega[None]
    return torch.cat([out.sin(), out.cos()], dim=1).float()


def sincos_pos_embed(dim: int, grid: tuple[int, int]) -> torch.Tensor:
    """Fixed 2-D sine-cosine position embedding (as the MAE reference), with a zero CLS slot.

    Returns:
        [1, 1 + Gh * Gw, dim]: half the channels encode the row, half the column.
    """
    gh, gw = grid
    if dim % 4 == 0 and gw > 1:
        rows = sincos_1d(dim // 2, torch.arange(gh).repeat_interleave(gw))
        cols = sincos_1d(dim // 2, torch.arange(gw).repeat(gh))
        emb = torch.cat([rows, cols], dim=1)
    else:
        emb = sincos_1d(dim - dim % 2, torch.arange(gh * gw))
        emb = torch.cat([emb, torch.zeros(gh * gw, dim % 2)], dim=1)
    return torch.cat([torch.zeros(1, dim), emb])[None]


def random_masking(
    x: torch.Tensor, mask_ratio: float, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Keep a random subset of tokens per sample.

    Args:
        x: [B, L, D] token sequence.
    Returns:
        kept [B, L_keep, D]; mask [B, L] (1 = masked); ids_restore [B, L].
    """
    B, L, D = x.shape
    keep = max(1, int(round(L * (1 - mask_ratio))))
    noise = torch.rand(B, L, generator=generator).to(x.device)
    ids_shuffle = noise.argsort(dim=1)
    ids_restore = ids_shuffle.argsort(dim=1)
    kept = torch.gather(x, 1, ids_shuffle[:, :keep].unsqueeze(-1).expand(-1, -1, D))
    mask = torch.ones(B, L, device=x.device)
    mask[:, :keep] = 0
    return kept, torch.gather(mask, 1, ids_restore), ids_restore
