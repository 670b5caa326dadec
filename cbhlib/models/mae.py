"""Masked autoencoders over thermal images: a 2-D ViT encoder and the seed's 1-D column encoder.

After facebookresearch/mae (``models_mae.py``): patches -> random masking -> transformer
encoder on the visible patches -> light decoder predicting the masked patches' pixels,
``forward_loss`` with optional per-patch normalised targets (``norm_pix_loss``). Image
features for CBH are the mean over patch tokens, never the CLS token.

The encoder owns its input normalisation: raw pixels [B, C, H, W] (kelvin or counts) go
in; ``pixel_norm`` ``image`` subtracts each image's mean (removing camera calibration
offsets and the flight's sea-surface temperature), and the fitted ``pixel_mean`` /
``pixel_std`` buffers (saved in the checkpoint) scale the result.

``MAE1D`` encodes image columns (H pixels, patches along H): the seed fed one middle
column (``columns: middle``); by default every ``column_stride``-th column is encoded.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from cbhlib.fields import opt
from cbhlib.models.layers import Block, random_masking, sincos_pos_embed

ENCODERS = ("mae2d", "mae1d")
PIXEL_NORMS = ("image", "global")


@dataclass
class EncoderConfig:
    """Architecture and input normalisation of an image encoder (saved in its checkpoint)."""

    name: str = opt(
        "mae2d", "mae2d: 2-D patches of the whole image; mae1d: the seed's column encoder", choices=ENCODERS
    )
    patch: int = opt(8, "patch size in pixels (square for mae2d, along the column for mae1d)", min=1, max=512)
    embed_dim: int = opt(64, "encoder token width", min=4, max=2048)
    depth: int = opt(1, "encoder transformer blocks", min=1, max=48)
    heads: int = opt(4, "encoder attention heads (must divide embed_dim)", min=1, max=64)
    mlp_ratio: float = opt(4.0, "transformer MLP width / token width", above=0, max=16)
    decoder_dim: int = opt(64, "decoder token width", min=4, max=2048)
    decoder_depth: int = opt(1, "decoder transformer blocks", min=1, max=48)
    decoder_heads: int = opt(4, "decoder attention heads (must divide decoder_dim)", min=1, max=64)
    norm_pix_loss: bool = opt(False, "reconstruct per-patch normalised pixels (MAE paper) instead of image pixels")
    pixel_norm: str = opt(
        "image", "image: subtract each image's mean (calibration-free); global: one mean", choices=PIXEL_NORMS
    )
    columns: str = opt(
        "all",
        "mae1d: all (every column_stride-th column) or middle (the seed's single column)",
        choices=("all", "middle"),
    )
    column_stride: int = opt(4, "mae1d: encode every n-th column", min=1, max=4096)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> EncoderConfig:
        """Rebuild from a checkpoint; unknown keys (older files) are ignored."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})  # type: ignore[arg-type]

    def problem(self, geometry: tuple[int, int, int] | None = None) -> str | None:
        """Why this architecture cannot be built (or is absurdly large), or None."""
        for f in fields(self):
            meta, v = f.metadata, getattr(self, f.name)
            if meta.get("choices") and v not in meta["choices"]:
                return f"{f.name} = {v!r}: expected one of {meta['choices']}"
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                if (meta.get("min") is not None and v < meta["min"]) or (
                    meta.get("max") is not None and v > meta["max"]
                ):
                    return f"{f.name} = {v!r}: expected {meta.get('min')}..{meta.get('max')}"
        if self.embed_dim % self.heads:
            return f"heads = {self.heads} does not divide embed_dim = {self.embed_dim}"
        if self.decoder_dim % self.decoder_heads:
            return f"decoder_heads = {self.decoder_heads} does not divide decoder_dim = {self.decoder_dim}"
        if geometry is not None:
            c, h, w = geometry
            if not (1 <= c <= 64 and 1 <= h <= 16384 and 1 <= w <= 16384):
                return f"image geometry {geometry}: expected C <= 64 and H, W <= 16384"
            if h < self.patch or (self.name == "mae2d" and w < self.patch):
                return f"image {h}x{w} is smaller than patch {self.patch}"
            n_params = 12 * self.depth * self.embed_dim**2 + 12 * self.decoder_depth * self.decoder_dim**2
            n_params += (self.patch ** (2 if self.name == "mae2d" else 1)) * c * (self.embed_dim + self.decoder_dim)
            if n_params > 5e8:
                return f"about {n_params:.2g} parameters: expected at most 5e8"
        return None


class MaskedAutoencoder(nn.Module):
    """Shared MAE machinery; subclasses define patch embedding, (un)patchify and the model input.

    Args:
        cfg: architecture.
        geometry: (C, H, W) of the campaign's images.
    """

    def __init__(
        self, cfg: EncoderConfig, geometry: tuple[int, int, int], grid: tuple[int, int], patch_pixels: int
    ) -> None:
        super().__init__()
        self.cfg, self.geometry = cfg, tuple(int(g) for g in geometry)
        C = self.geometry[0]
        D, Dd = cfg.embed_dim, cfg.decoder_dim
        self.register_buffer("pixel_mean", torch.zeros(C))
        self.register_buffer("pixel_std", torch.ones(C))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, D))
        self.register_buffer("pos_embed", sincos_pos_embed(D, grid))  # fixed, as in the MAE reference
        self.blocks = nn.ModuleList(Block(D, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(D)
        self.decoder_embed = nn.Linear(D, Dd)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, Dd))
        self.register_buffer("decoder_pos_embed", sincos_pos_embed(Dd, grid))
        self.decoder_blocks = nn.ModuleList(
            Block(Dd, cfg.decoder_heads, cfg.mlp_ratio) for _ in range(cfg.decoder_depth)
        )
        self.decoder_norm = nn.LayerNorm(Dd)
        self.decoder_pred = nn.Linear(Dd, patch_pixels)
        nn.init.normal_(self.cls_token, std=0.02)
        nn.init.normal_(self.mask_token, std=0.02)

    # ---- input normalisation (owned by the encoder, saved with it)
    def centre(self, images: torch.Tensor) -> torch.Tensor:
        """Raw [B, C, H, W] -> per-image centred if ``pixel_norm == "image"`` (float32)."""
        x = images.float()
        return x - x.mean(dim=(1, 2, 3), keepdim=True) if self.cfg.pixel_norm == "image" else x

    def set_pixel_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Per-channel statistics of *centred* training pixels ([C] each)."""
        self.pixel_mean.copy_(mean)
        self.pixel_std.copy_(std.clamp_min(1e-6))

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """Raw [B, C, H, W] -> the network's input scale."""
        x = self.centre(images)
        return (x - self.pixel_mean[None, :, None, None]) / self.pixel_std[None, :, None, None]

    # ---- subclasses
    def patch_embed(self, x: torch.Tensor) -> torch.Tensor:  # [B, L, D]
        raise NotImplementedError

    def patchify(self, x: torch.Tensor) -> torch.Tensor:  # [B, L, P]
        raise NotImplementedError

    def model_input(self, images: torch.Tensor, columns: torch.Tensor | None = None) -> torch.Tensor:
        """Normalised images [B, C, H, W] -> what patch_embed takes."""
        return images

    # ---- MAE
    def forward_encoder(
        self, x: torch.Tensor, mask_ratio: float, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x: model input -> latent [B, 1 + L_keep, D], mask [B, L], ids_restore [B, L]."""
        t = self.patch_embed(x) + self.pos_embed[:, 1:]
        t, mask, ids_restore = random_masking(t, mask_ratio, generator)
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

    def target(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruction target [B, L, P] of model input x (per-patch normalised if asked)."""
        t = self.patchify(x)
        if self.cfg.norm_pix_loss:
            mean, var = t.mean(dim=-1, keepdim=True), t.var(dim=-1, keepdim=True)
            t = (t - mean) / (var + 1e-6) ** 0.5
        return t

    def forward_loss(self, x: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Mean squared error on masked patches. x: model input; pred [B, L, P]; mask [B, L]."""
        loss = ((pred - self.target(x)) ** 2).mean(dim=-1)
        return (loss * mask).sum() / mask.sum().clamp_min(1)

    def forward(
        self, x: torch.Tensor, mask_ratio: float = 0.75, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x: model input. Returns (loss on masked patches, prediction [B, L, P], mask [B, L])."""
        latent, mask, ids_restore = self.forward_encoder(x, mask_ratio, generator)
        pred = self.forward_decoder(latent, ids_restore)
        return self.forward_loss(x, pred, mask), pred, mask

    def forward_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """All patch tokens of model input x, unmasked, CLS dropped: [B, L, D]."""
        t = self.patch_embed(x) + self.pos_embed[:, 1:]
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(t.shape[0], -1, -1)
        t = torch.cat([cls, t], dim=1)
        for blk in self.blocks:
            t = blk(t)
        return self.norm(t)[:, 1:]

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        """Raw images [B, C, H, W] -> token grid [B, Gh, Gw, D] (normalisation applied here)."""
        raise NotImplementedError

    @property
    def grid(self) -> tuple[int, int]:
        """(Gh, Gw) of the token grid of :meth:`forward_features`."""
        raise NotImplementedError


class MAE2D(MaskedAutoencoder):
    """ViT-style MAE over 2-D patches of the whole image: model input [B, C, H, W]."""

    def __init__(self, cfg: EncoderConfig, geometry: tuple[int, int, int]) -> None:
        C, H, W = geometry
        self.gh, self.gw = H // cfg.patch, W // cfg.patch
        if self.gh < 1 or self.gw < 1:
            raise ValueError(f"mae2d: image {H}x{W} is smaller than patch {cfg.patch}")
        super().__init__(cfg, geometry, (self.gh, self.gw), cfg.patch * cfg.patch * C)
        self.proj = nn.Linear(cfg.patch * cfg.patch * C, cfg.embed_dim)  # a strided conv, as a cheaper matmul

    def crop(self, x: torch.Tensor) -> torch.Tensor:
        """Centre-crop H and W to multiples of the patch."""
        p = self.cfg.patch
        h, w = self.gh * p, self.gw * p
        oh, ow = (x.shape[-2] - h) // 2, (x.shape[-1] - w) // 2
        return x[..., oh : oh + h, ow : ow + w]

    def patch_embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.patchify(x))

    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        x = self.crop(x)
        B, C, _, _ = x.shape
        p = self.cfg.patch
        x = x.reshape(B, C, self.gh, p, self.gw, p).permute(0, 2, 4, 3, 5, 1)
        return x.reshape(B, self.gh * self.gw, p * p * C)

    def unpatchify(self, p: torch.Tensor) -> torch.Tensor:
        """[B, L, patch * patch * C] -> [B, C, Gh * patch, Gw * patch]."""
        B, C, q = p.shape[0], self.geometry[0], self.cfg.patch
        x = p.reshape(B, self.gh, self.gw, q, q, C).permute(0, 5, 1, 3, 2, 4)
        return x.reshape(B, C, self.gh * q, self.gw * q)

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        t = self.forward_tokens(self.normalize(images))
        return t.reshape(images.shape[0], self.gh, self.gw, -1)

    @property
    def grid(self) -> tuple[int, int]:
        return self.gh, self.gw


class MAE1D(MaskedAutoencoder):
    """MAE over image columns: model input [B', C, H] (one column per row of the batch)."""

    def __init__(self, cfg: EncoderConfig, geometry: tuple[int, int, int]) -> None:
        C, H, W = geometry
        self.n_tokens = H // cfg.patch
        if self.n_tokens < 1:
            raise ValueError(f"mae1d: image height {H} is shorter than patch {cfg.patch}")
        super().__init__(cfg, geometry, (self.n_tokens, 1), cfg.patch * C)
        self.proj = nn.Linear(cfg.patch * C, cfg.embed_dim)

    def crop(self, x: torch.Tensor) -> torch.Tensor:
        """Centre-crop the column length to a multiple of the patch."""
        L = self.n_tokens * self.cfg.patch
        off = (x.shape[-1] - L) // 2
        return x[..., off : off + L]

    def patch_embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.patchify(x))

    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        x = self.crop(x)
        B, C, _ = x.shape
        return x.reshape(B, C, self.n_tokens, self.cfg.patch).permute(0, 2, 3, 1).reshape(B, self.n_tokens, -1)

    def unpatchify(self, p: torch.Tensor) -> torch.Tensor:
        """[B, L, patch * C] -> [B, C, L * patch]."""
        B, C = p.shape[0], self.geometry[0]
        return p.reshape(B, self.n_tokens, self.cfg.patch, C).permute(0, 3, 1, 2).reshape(B, C, -1)

    def column_indices(self, width: int | None = None) -> list[int]:
        """Columns encoded from an image of this width."""
        width = self.geometry[2] if width is None else width
        if self.cfg.columns == "middle":
            return [width // 2]
        stride = max(1, self.cfg.column_stride)
        return list(range(stride // 2, width, stride))

    def model_input(self, images: torch.Tensor, columns: torch.Tensor | None = None) -> torch.Tensor:
        """Normalised [B, C, H, W] -> columns [B * k, C, H]: ``columns`` [B, k] per image, or the
        encoded columns (:meth:`column_indices`) for every image."""
        B, C, H, W = images.shape
        if columns is None:
            x = images[..., self.column_indices(W)]  # [B, C, H, k]
        else:
            k = columns.shape[1]
            x = torch.gather(images, 3, columns[:, None, None, :].expand(B, C, H, k))
        return x.permute(0, 3, 1, 2).reshape(-1, C, H)

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        B = images.shape[0]
        t = self.forward_tokens(self.model_input(self.normalize(images)))  # [B * n, L, D]
        n = t.shape[0] // B
        return t.reshape(B, n, self.n_tokens, -1).permute(0, 2, 1, 3)

    @property
    def grid(self) -> tuple[int, int]:
        return self.n_tokens, len(self.column_indices())


def build_encoder(cfg: EncoderConfig, geometry: tuple[int, int, int]) -> MaskedAutoencoder:
    """The encoder named by ``cfg.name`` for images of shape ``geometry`` = (C, H, W)."""
    problem = cfg.problem(geometry)
    if problem:
        raise ValueError(f"encoder config: {problem}")
    return (MAE2D if cfg.name == "mae2d" else MAE1D)(cfg, geometry)


def mae1d_seed(in_chans: int = 1, img_h: int = 440, columns: str = "middle") -> MAE1D:
    """The seed's encoder: 440-pixel columns, patch 16, D 192, depth 4, 3 heads."""
    cfg = EncoderConfig(
        name="mae1d", patch=16, embed_dim=192, depth=4, heads=3, decoder_dim=96, decoder_heads=3, columns=columns
    )
    return MAE1D(cfg, (in_chans, img_h, 640))


def mae2d_small(in_chans: int = 3, img_h: int = 440, img_w: int = 640, patch: int = 16) -> MAE2D:
    """A small 2-D MAE for seed-shape images: patch 16, D 192, depth 4, 3 heads."""
    cfg = EncoderConfig(name="mae2d", patch=patch, embed_dim=192, depth=4, heads=3, decoder_dim=96, decoder_heads=3)
    return MAE2D(cfg, (in_chans, img_h, img_w))


def pool_tokens(grid: torch.Tensor, regions: tuple[int, int] = (4, 4)) -> tuple[torch.Tensor, torch.Tensor]:
    """Pool a token grid.

    Args:
        grid: [B, Gh, Gw, D] patch tokens (no CLS).
    Returns:
        pooled [B, D] (mean over all patch tokens); regions [B, Rh * Rw, D].
    """
    pooled = grid.mean(dim=(1, 2))
    g = grid.permute(0, 3, 1, 2)  # [B, D, Gh, Gw]
    rh, rw = min(regions[0], g.shape[2]), min(regions[1], g.shape[3])
    reg = F.adaptive_avg_pool2d(g, (rh, rw)).flatten(2).transpose(1, 2)
    return pooled, reg
