"""Masked autoencoders over thermal images: a 1-D column encoder and a 2-D ViT encoder.

After facebookresearch/mae: patches -> random masking -> transformer encoder on the
visible patches -> light decoder predicting the masked patches' pixels. Image features
for CBH are the mean over patch tokens, never the CLS token.

``MAE1D`` encodes image columns (a column of H pixels, Conv1d patches along H); the
seed fed one middle column, we encode every ``column_stride``-th column and pool.
``MAE2D`` encodes 2-D patches of the full image with all channels.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class EncoderConfig:
    """Architecture of an image encoder; saved in checkpoints."""

    name: str = "mae1d"  # mae1d or mae2d
    in_chans: int = 1  # image channels C
    img_h: int = 64  # image height H (the 1-D column length)
    img_w: int = 64  # image width W
    patch: int = 8  # patch size (pixels along H for mae1d; square for mae2d)
    embed_dim: int = 192  # token width D
    depth: int = 4  # encoder blocks
    heads: int = 3  # attention heads
    mlp_ratio: float = 4.0  # MLP hidden / D
    decoder_dim: int = 96  # light decoder width
    decoder_depth: int = 1  # decoder blocks
    decoder_heads: int = 3  # decoder attention heads
    columns: str = "all"  # mae1d: "all" (every column_stride-th) or "middle" (the seed)
    column_stride: int = 4  # mae1d: encode every n-th column

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(ln(x)); x + mlp(ln(x)). x: (B, L, D)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


def random_masking(x: torch.Tensor, mask_ratio: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Keep a random subset of tokens per sample.

    Args:
        x: [B, L, D] token sequence.
    Returns:
        kept [B, L_keep, D]; mask [B, L] (1 = masked); ids_restore [B, L].
    """
    B, L, D = x.shape
    keep = max(1, int(round(L * (1 - mask_ratio))))
    noise = torch.rand(B, L, device=x.device)
    ids_shuffle = noise.argsort(dim=1)
    ids_restore = ids_shuffle.argsort(dim=1)
    ids_keep = ids_shuffle[:, :keep]
    kept = torch.gather(x, 1, ids_keep.unsqueeze(-1).expand(-1, -1, D))
    mask = torch.ones(B, L, device=x.device)
    mask[:, :keep] = 0
    return kept, torch.gather(mask, 1, ids_restore), ids_restore


class MaskedAutoencoder(nn.Module):
    """Shared MAE machinery; subclasses define patch embedding and (un)patchify."""

    def __init__(self, cfg: EncoderConfig, n_tokens: int, patch_pixels: int) -> None:
        super().__init__()
        self.cfg = cfg
        D = cfg.embed_dim
        self.cls_token = nn.Parameter(torch.zeros(1, 1, D))
        self.pos_embed = nn.Parameter(torch.randn(1, n_tokens + 1, D) * 0.02)
        self.blocks = nn.ModuleList(Block(D, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(D)
        Dd = cfg.decoder_dim
        self.decoder_embed = nn.Linear(D, Dd)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, Dd))
        self.decoder_pos_embed = nn.Parameter(torch.randn(1, n_tokens + 1, Dd) * 0.02)
        self.decoder_blocks = nn.ModuleList(
            Block(Dd, cfg.decoder_heads, cfg.mlp_ratio) for _ in range(cfg.decoder_depth))
        self.decoder_norm = nn.LayerNorm(Dd)
        self.decoder_pred = nn.Linear(Dd, patch_pixels)
        nn.init.normal_(self.cls_token, std=0.02)
        nn.init.normal_(self.mask_token, std=0.02)

    # subclasses: patch_embed(x) -> [B, L, D]; patchify(x) -> [B, L, P]
    def patch_embed(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_encoder(self, x: torch.Tensor, mask_ratio: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x: model input -> latent [B, 1 + L_keep, D], mask [B, L], ids_restore [B, L]."""
        t = self.patch_embed(x) + self.pos_embed[:, 1:]
        t, mask, ids_restore = random_masking(t, mask_ratio)
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(t.shape[0], -1, -1)
        t = torch.cat([cls, t], dim=1)
        for blk in self.blocks:
            t = blk(t)
        return self.norm(t), mask, ids_restore

    def forward_decoder(self, latent: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
        """latent [B, 1 + L_keep, D] -> predicted pixels [B, L, P]."""
        t = self.decoder_embed(latent)
        B, L = ids_restore.shape
        masks = self.mask_token.expand(B, L + 1 - t.shape[1], -1)
        seq = torch.cat([t[:, 1:], masks], dim=1)
        seq = torch.gather(seq, 1, ids_restore.unsqueeze(-1).expand(-1, -1, t.shape[2]))
        t = torch.cat([t[:, :1], seq], dim=1) + self.decoder_pos_embed
        for blk in self.decoder_blocks:
            t = blk(t)
        return self.decoder_pred(self.decoder_norm(t))[:, 1:]

    def forward(self, x: torch.Tensor, mask_ratio: float = 0.75) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns (loss on masked patches, prediction [B, L, P], mask [B, L])."""
        latent, mask, ids_restore = self.forward_encoder(x, mask_ratio)
        pred = self.forward_decoder(latent, ids_restore)
        target = self.patchify(x)
        loss = ((pred - target) ** 2).mean(dim=-1)
        loss = (loss * mask).sum() / mask.sum().clamp_min(1)
        return loss, pred, mask

    def forward_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """All patch tokens, unmasked, CLS dropped: [B, L, D]."""
        t = self.patch_embed(x) + self.pos_embed[:, 1:]
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(t.shape[0], -1, -1)
        t = torch.cat([cls, t], dim=1)
        for blk in self.blocks:
            t = blk(t)
        return self.norm(t)[:, 1:]


class MAE1D(MaskedAutoencoder):
    """MAE over one image column: input [B, C, L_pix] with Conv1d patches along the column."""

    def __init__(self, cfg: EncoderConfig) -> None:
        self.n_tokens = cfg.img_h // cfg.patch
        if self.n_tokens < 1:
            raise ValueError(f"mae1d: image height {cfg.img_h} is shorter than patch {cfg.patch}")
        super().__init__(cfg, self.n_tokens, cfg.patch * cfg.in_chans)
        self.proj = nn.Conv1d(cfg.in_chans, cfg.embed_dim, kernel_size=cfg.patch, stride=cfg.patch)

    def crop(self, x: torch.Tensor) -> torch.Tensor:
        """Centre-crop the column length to a multiple of the patch."""
        L = self.n_tokens * self.cfg.patch
        off = (x.shape[-1] - L) // 2
        return x[..., off : off + L]

    def patch_embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.crop(x)).transpose(1, 2)  # [B, L, D]

    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        x = self.crop(x)  # [B, C, L*p]
        B, C, _ = x.shape
        return x.reshape(B, C, self.n_tokens, self.cfg.patch).permute(0, 2, 3, 1).reshape(B, self.n_tokens, -1)

    def unpatchify(self, p: torch.Tensor) -> torch.Tensor:
        """[B, L, patch * C] -> [B, C, L * patch] (inverse of patchify)."""
        B = p.shape[0]
        C = self.cfg.in_chans
        return p.reshape(B, self.n_tokens, self.cfg.patch, C).permute(0, 3, 1, 2).reshape(B, C, -1)

    def column_indices(self, width: int) -> list[int]:
        """Columns encoded from an image of this width."""
        if self.cfg.columns == "middle":
            return [width // 2]
        stride = max(1, self.cfg.column_stride)
        return list(range(stride // 2, width, stride))

    def image_to_columns(self, img: torch.Tensor) -> torch.Tensor:
        """[B, C, H, W] -> [B * n_cols, C, H] (selected columns)."""
        cols = self.column_indices(img.shape[-1])
        x = img[..., cols]  # [B, C, H, n]
        B, C, H, n = x.shape
        return x.permute(0, 3, 1, 2).reshape(B * n, C, H)

    def image_tokens(self, img: torch.Tensor) -> torch.Tensor:
        """[B, C, H, W] -> token grid [B, Gh, Gw, D] (Gh patches along H, Gw columns)."""
        B = img.shape[0]
        t = self.forward_tokens(self.image_to_columns(img))  # [B*n, L, D]
        n = t.shape[0] // B
        return t.reshape(B, n, self.n_tokens, -1).permute(0, 2, 1, 3)


class MAE2D(MaskedAutoencoder):
    """ViT-style MAE over 2-D patches of the whole image: input [B, C, H, W]."""

    def __init__(self, cfg: EncoderConfig) -> None:
        self.gh, self.gw = cfg.img_h // cfg.patch, cfg.img_w // cfg.patch
        if self.gh < 1 or self.gw < 1:
            raise ValueError(f"mae2d: image {cfg.img_h}x{cfg.img_w} is smaller than patch {cfg.patch}")
        super().__init__(cfg, self.gh * self.gw, cfg.patch * cfg.patch * cfg.in_chans)
        self.proj = nn.Conv2d(cfg.in_chans, cfg.embed_dim, kernel_size=cfg.patch, stride=cfg.patch)

    def crop(self, x: torch.Tensor) -> torch.Tensor:
        """Centre-crop H and W to multiples of the patch."""
        p = self.cfg.patch
        h, w = self.gh * p, self.gw * p
        oh, ow = (x.shape[-2] - h) // 2, (x.shape[-1] - w) // 2
        return x[..., oh : oh + h, ow : ow + w]

    def patch_embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.crop(x)).flatten(2).transpose(1, 2)  # [B, L, D]

    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        x = self.crop(x)
        B, C, _, _ = x.shape
        p = self.cfg.patch
        x = x.reshape(B, C, self.gh, p, self.gw, p).permute(0, 2, 4, 3, 5, 1)
        return x.reshape(B, self.gh * self.gw, p * p * C)

    def unpatchify(self, p: torch.Tensor) -> torch.Tensor:
        """[B, L, patch * patch * C] -> [B, C, Gh * patch, Gw * patch]."""
        B, C, q = p.shape[0], self.cfg.in_chans, self.cfg.patch
        x = p.reshape(B, self.gh, self.gw, q, q, C).permute(0, 5, 1, 3, 2, 4)
        return x.reshape(B, C, self.gh * q, self.gw * q)

    def image_tokens(self, img: torch.Tensor) -> torch.Tensor:
        """[B, C, H, W] -> token grid [B, Gh, Gw, D]."""
        t = self.forward_tokens(img)
        return t.reshape(img.shape[0], self.gh, self.gw, -1)


ENCODERS = {"mae1d": MAE1D, "mae2d": MAE2D}


def build_encoder(cfg: EncoderConfig) -> MaskedAutoencoder:
    """The encoder named by ``cfg.name``."""
    if cfg.name not in ENCODERS:
        raise ValueError(f"unknown encoder '{cfg.name}'; choose from {', '.join(ENCODERS)}")
    return ENCODERS[cfg.name](cfg)


def mae1d_seed(in_chans: int = 1, img_h: int = 440, columns: str = "middle") -> MAE1D:
    """The seed's encoder: 440-pixel columns, patch 16, D 192, depth 4, 3 heads."""
    return MAE1D(EncoderConfig("mae1d", in_chans, img_h, 640, 16, 192, 4, 3, 4.0, columns=columns))


def mae2d_small(in_chans: int = 3, img_h: int = 440, img_w: int = 640, patch: int = 16) -> MAE2D:
    """A small 2-D MAE: patch 16, D 192, depth 4, 3 heads."""
    return MAE2D(EncoderConfig("mae2d", in_chans, img_h, img_w, patch, 192, 4, 3, 4.0))


def pool_tokens(grid: torch.Tensor, regions: tuple[int, int] = (4, 4)) -> tuple[torch.Tensor, torch.Tensor]:
    """Pool a token grid.

    Args:
        grid: [B, Gh, Gw, D] patch tokens (no CLS).
    Returns:
        pooled [B, D] (mean over all patch tokens); regions [B, Rh*Rw, D].
    """
    pooled = grid.mean(dim=(1, 2))
    g = grid.permute(0, 3, 1, 2)  # [B, D, Gh, Gw]
    rh, rw = min(regions[0], g.shape[2]), min(regions[1], g.shape[3])
    reg = F.adaptive_avg_pool2d(g, (rh, rw)).flatten(2).transpose(1, 2)
    return pooled, reg
