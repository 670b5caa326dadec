"""Fusion heads over cached image embeddings and physical features, batched over models.

``M`` independent models (one per fold x seed) live in one module: every weight has a
leading model axis and each forward pass runs all of them with batched matmuls, so
cross-validation of small heads costs about one model's wall time. Each model owns a
random generator for its initialisation and dropout, so its result does not depend on
which other models share the batch (a resumed run reproduces an uninterrupted one).

Modes:
    image_only     head(image embedding)
    physical_only  head(physical encoder(features))
    concat         head([image embedding, physical encoder(features)])
    attention      a query from the image attends over one token per physical variable
                   and one token per image region; head([query, attended]). The
                   weights vary per sample and are returned for plotting.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, fields

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cbhlib.fields import opt

# a [M, 1, 1] bias's gradient is a view of the optimizer's flat buffer (strides of the buffer, not of a fresh
# tensor): autograd still accumulates into it in place, and says so with this warning
warnings.filterwarnings("ignore", message="grad and param do not obey the gradient layout contract")

MODES = ("image_only", "physical_only", "concat", "attention")
MAX_LAYERS = 8  # per list of widths (a head is a few layers; 300 x 4096 would need gigabytes)
MAX_HEAD_PARAMS = 20_000_000  # one head (80 MB of float32 weights)
MAX_INPUT_DIM = 65_536  # image embedding width or number of physical features
MAX_FOLD_PARAMS = 20_000_000  # seeds x head parameters (a fold trains one head per seed at once)
IMAGE_MODES = ("image_only", "concat", "attention")
PHYSICAL_MODES = ("physical_only", "concat", "attention")


@dataclass
class HeadConfig:
    """Head architecture (the seed's sizes by default); the mode is a training setting."""

    phys_hidden: list[int] = opt([128, 64], "physical encoder widths: K -> 128 -> 64", min=1, max=4096)
    phys_dropout: float = opt(0.1, "dropout in the physical encoder", min=0, max=0.9)
    hidden: list[int] = opt([256, 128], "regression head widths: in -> 256 -> 128 -> 1", min=1, max=4096)
    dropout: float = opt(0.2, "dropout in the regression head", min=0, max=0.9)
    attn_dim: int = opt(64, "attention mode: token width (divisible by attn_heads)", min=4, max=1024)
    attn_heads: int = opt(4, "attention mode: heads", min=1, max=32)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    def problem(self, mode: str | None = None, img_dim: int = 0, n_phys: int = 0) -> str | None:
        """Why this head cannot be built or is too large (checked before anything is allocated), or None.

        With ``mode``, the parameters of one head of that mode are counted on the meta device.
        """
        for f in fields(self):
            meta, v = f.metadata, getattr(self, f.name)
            items = v if isinstance(v, list) else [v]
            if isinstance(v, list) and not 1 <= len(v) <= MAX_LAYERS:
                return f"{f.name} = {_short(v)}: expected 1 to {MAX_LAYERS} layers"
            for x in items:
                if isinstance(x, bool) or not isinstance(x, int if "int" in str(f.type) else (int, float)):
                    return f"{f.name} = {_short(v)}: expected {'integers' if 'int' in str(f.type) else 'numbers'}"
                if (meta.get("min") is not None and x < meta["min"]) or (
                    meta.get("max") is not None and x > meta["max"]
                ):
                    return f"{f.name} = {_short(v)}: expected values in {meta.get('min')}..{meta.get('max')}"
        if self.attn_dim % self.attn_heads:
            return f"attn_heads = {self.attn_heads} does not divide attn_dim = {self.attn_dim}"
        if mode is None:
            return None
        if mode not in MODES or not (0 <= img_dim <= MAX_INPUT_DIM and 0 <= n_phys <= MAX_INPUT_DIM):
            return (
                f"mode {mode!r}, {img_dim} image and {n_phys} physical inputs: "
                f"expected a mode of {MODES}, inputs <= {MAX_INPUT_DIM}"
            )
        try:
            n = self.n_params(mode, img_dim, n_phys)
        except ValueError as exc:
            return str(exc)
        if n > MAX_HEAD_PARAMS:
            return (
                f"about {n:.2g} parameters per head: expected at most {MAX_HEAD_PARAMS:.0e} (fewer or narrower layers)"
            )
        return None

    def training_problem(self, n_seeds: int, img_dim: int, n_phys: int = 64) -> tuple[str, str, str] | None:
        """(key, expected, found) if these heads cannot be trained in memory (checked with the config), else None."""
        problem = self.problem("concat", img_dim, n_phys)
        if problem:
            return "head", "a head that fits in memory", problem
        n = self.n_params("concat", img_dim, n_phys)
        if n_seeds * n > MAX_FOLD_PARAMS:
            return (
                "seeds",
                f"at most {MAX_FOLD_PARAMS:.0e} head parameters per fold",
                f"{n_seeds} seeds x {n:,} parameters",
            )
        return None

    def n_params(self, mode: str, img_dim: int, n_phys: int) -> int:
        """Parameters of one head of ``mode`` (counted on the meta device: nothing is allocated)."""
        with torch.device("meta"):
            return sum(p.numel() for p in FusionHeads(mode, self, 1, img_dim, n_phys, seeds=[0]).parameters())


def _short(v: object) -> str:
    text = repr(v)
    return text if len(text) <= 60 else f"{text[:40]}... ({len(v) if isinstance(v, list) else '?'} items)"


class BLinear(nn.Module):
    """M independent linear layers: x [M, B, in] -> [M, B, out]."""

    def __init__(self, n_models: int, d_in: int, d_out: int, gens: list[torch.Generator]) -> None:
        super().__init__()
        bound = 1.0 / math.sqrt(d_in)  # nn.Linear's default (kaiming_uniform a=sqrt(5))
        w = torch.stack([(torch.rand(d_in, d_out, generator=g) * 2 - 1) * bound for g in gens])
        b = torch.stack([(torch.rand(1, d_out, generator=g) * 2 - 1) * bound for g in gens])
        self.weight = nn.Parameter(w)  # [M, in, out]
        self.bias = nn.Parameter(b)  # [M, 1, out]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias, x, self.weight)


class ModelDropout(nn.Module):
    """Dropout whose masks come from each model's own generator, drawn once per epoch.

    ``FusionHeads.begin_epoch`` draws, for every model still training, the masks of all
    its steps of the epoch in one call; inactive models draw nothing, so a model's
    random stream depends only on its own steps (not on which models share the batch).
    """

    def __init__(self, p: float, dim: int) -> None:
        super().__init__()
        self.p, self.dim = p, dim
        self.masks: torch.Tensor | None = None  # [steps, M, B, dim]
        self.step = 0

    def draw(
        self, gens: list[torch.Generator], n_steps: list[int], batch: int, device: torch.device | None = None
    ) -> None:
        """Masks for one epoch: model m gets n_steps[m] masks (0 = not training), drawn on
        the CPU generators (the same masks on every device) and moved to ``device`` once."""
        total = max(n_steps) if n_steps else 0
        masks = torch.ones(total, len(gens), batch, self.dim)
        if self.p > 0:
            for m, (g, n) in enumerate(zip(gens, n_steps, strict=True)):
                if n:  # in place: (u >= p) / (1 - p), without a boolean and a float temporary
                    masks[:n, m] = torch.rand(n, batch, self.dim, generator=g).ge_(self.p).div_(1 - self.p)
        self.masks = masks if device is None else masks.to(device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0 or self.masks is None:
            return x
        return x * self.masks[self.step, :, : x.shape[1]]


def _mlp(M: int, dims: list[int], p: float, gens: list[torch.Generator], last_act: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
        layers.append(BLinear(M, a, b, gens))
        if i < len(dims) - 2 or last_act:
            layers += [nn.ReLU(), ModelDropout(p, b)]
    return nn.Sequential(*layers)


class FusionHeads(nn.Module):
    """M fusion models of one mode.

    Args:
        mode: one of MODES.
        cfg: architecture.
        n_models: M.
        img_dim: D of the image embedding (0 for physical_only).
        n_phys: K physical features (0 for image_only).
        seeds: one integer per model; drives its initialisation and dropout.
    """

    def __init__(self, mode: str, cfg: HeadConfig, n_models: int, img_dim: int, n_phys: int, seeds: list[int]) -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"unknown mode '{mode}'; choose from {', '.join(MODES)}")
        if len(seeds) != n_models:
            raise ValueError("one seed per model is required")
        self.mode, self.cfg, self.M, self.img_dim, self.n_phys = mode, cfg, n_models, img_dim, n_phys
        self.gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
        M, g = n_models, self.gens
        if mode in PHYSICAL_MODES and n_phys < 1:
            raise ValueError(f"mode '{mode}' needs at least one physical feature")
        if mode in IMAGE_MODES and img_dim < 1:
            raise ValueError(f"mode '{mode}' needs image embeddings")
        d_in = 0
        if mode in ("physical_only", "concat"):
            self.phys = _mlp(M, [n_phys, *cfg.phys_hidden], cfg.phys_dropout, g, last_act=True)
            d_in += cfg.phys_hidden[-1]
        if mode in ("image_only", "concat"):
            d_in += img_dim
        if mode == "attention":
            d = cfg.attn_dim
            if d % cfg.attn_heads:
                raise ValueError("attn_dim must be divisible by attn_heads")
            # one token per variable (x_j * w_j + b_j) and per image region; layer-normalised, so a
            # variable far outside its training range (a shifted flight) cannot dominate the keys
            self.tok_w = nn.Parameter(torch.stack([torch.randn(n_phys, d, generator=gi) * 0.5 for gi in g]))
            self.tok_b = nn.Parameter(torch.stack([torch.randn(n_phys, d, generator=gi) * 0.1 for gi in g]))
            self.region_proj = BLinear(M, img_dim, d, g)
            self.query = BLinear(M, img_dim, d, g)
            self.key_value = BLinear(M, d, 2 * d, g)  # keys and values in one matmul
            self.out = BLinear(M, d, d, g)
            d_in = 2 * d
        self.head = _mlp(M, [d_in, *cfg.hidden, 1], cfg.dropout, g, last_act=False)
        self._drop: list[ModelDropout] | None = None

    def _dropouts(self) -> list[ModelDropout]:
        if self._drop is None:  # found once: set_step runs every training step
            self._drop = [mod for mod in self.modules() if isinstance(mod, ModelDropout)]
        return self._drop

    def begin_epoch(self, n_steps: list[int], batch: int) -> None:
        """Draw this epoch's dropout masks; ``n_steps[m]`` steps for model m (0 = idle)."""
        dev = next(self.parameters()).device
        for mod in self._dropouts():
            mod.draw(self.gens, n_steps, batch, dev)

    def set_step(self, step: int) -> None:
        """Select the dropout masks of training step ``step`` of the epoch."""
        for mod in self._dropouts():
            mod.step = step

    def forward(
        self, img: torch.Tensor | None = None, regions: torch.Tensor | None = None, phys: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Predict (standardised) CBH.

        Args:
            img: [M, B, D] image embeddings.
            regions: [M, B, R, D] region tokens (attention mode).
            phys: [M, B, K] scaled physical features.
        Returns:
            pred [M, B]; attention weights [M, B, K + R] (averaged over heads) or None.
        """
        mode = self.mode
        if mode == "image_only":
            return self.head(img).squeeze(-1), None
        if mode == "physical_only":
            return self.head(self.phys(phys)).squeeze(-1), None
        if mode == "concat":
            return self.head(torch.cat([img, self.phys(phys)], dim=-1)).squeeze(-1), None
        return self._attend(img, regions, phys)

    def _attend(
        self, img: torch.Tensor, regions: torch.Tensor | None, phys: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        M, B, _ = img.shape
        d, h = self.cfg.attn_dim, self.cfg.attn_heads
        tokens = phys.unsqueeze(-1) * self.tok_w[:, None] + self.tok_b[:, None]  # [M, B, K, d]
        if regions is not None and regions.shape[2] > 0:
            R = regions.shape[2]
            tokens = torch.cat([tokens, self.region_proj(regions.reshape(M, B * R, -1)).reshape(M, B, R, d)], dim=2)
        tokens = F.layer_norm(tokens, (d,))  # [M, B, T, d]
        q = self.query(img)  # [M, B, d]
        # keys and values are linear in the tokens, so the projections move to the query and to the
        # attended sum (T times fewer multiply-adds than projecting every token; the same attention):
        # score_t = (W_k x_t + b_k) . q = x_t . (W_k q) + b_k . q, and b_k . q is the same for every
        # token (softmax drops it); sum_t w_t (W_v x_t + b_v) = W_v (sum_t w_t x_t) + b_v
        w_k, w_v = self.key_value.weight.reshape(M, d, 2, h, d // h).unbind(2)  # each [M, d, h, d/h]
        b_v = self.key_value.bias[:, 0, d:].reshape(M, 1, h, d // h)
        qk = torch.einsum("mdhj,mbhj->mbhd", w_k, q.reshape(M, B, h, d // h))  # [M, B, h, d]
        # per sample, heads as rows: [h, d] x [d, T] (a head's scores contiguous, softmax along rows);
        # about 2x faster forward + backward on a CPU than scores laid out [M, B, T, h]
        flat = tokens.reshape(M * B, -1, d)  # [M*B, T, d]
        scores = torch.bmm(qk.reshape(M * B, h, d), flat.transpose(1, 2)) / math.sqrt(d // h)  # [M*B, h, T]
        weights = scores.softmax(dim=-1)
        pooled = torch.bmm(weights, flat).reshape(M, B, h, d)
        att = (torch.einsum("mbhd,mdhj->mbhj", pooled, w_v) + b_v).reshape(M, B, d)
        fused = torch.cat([q, self.out(att)], dim=-1)
        return self.head(fused).squeeze(-1), weights.reshape(M, B, h, -1).mean(dim=2)

    def slice_state(self, m: int) -> dict[str, torch.Tensor]:
        """State dict of model ``m`` alone (leading axis of size 1): loads into M=1 heads."""
        return {k: v[m : m + 1].detach().clone() for k, v in self.state_dict().items()}

    def subset(self, rows: list[int]) -> FusionHeads:
        """The models ``rows`` alone, with their weights and their random generators (so each
        continues exactly as it would have in the full batch)."""
        dev = next(self.parameters()).device
        sub = FusionHeads(self.mode, self.cfg, len(rows), self.img_dim, self.n_phys, seeds=[0] * len(rows)).to(dev)
        idx = torch.as_tensor(rows, device=dev)
        sub.load_state_dict({k: v[idx].detach().clone() for k, v in self.state_dict().items()})
        sub.gens = [self.gens[r] for r in rows]
        sub.train(self.training)
        return sub


class BatchedAdamW:
    """AdamW over parameters with a leading model axis, stepping only active models.

    Elementwise like torch's AdamW with a step count per model, so a model that has
    finished its epoch or stopped early is left exactly as it is. The parameters are
    re-seated as views of one flat buffer [M, P]; a step is torch's fused AdamW kernel over
    the active models' rows (one call; a dozen vector operations where torch has no fused
    kernel for the device).
    """

    def __init__(
        self,
        params: list[nn.Parameter],
        n_models: int,
        lr: float,
        weight_decay: float,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        self.params = [p for p in params if p.requires_grad]
        self.lr, self.wd, self.b1, self.b2, self.eps = lr, weight_decay, betas[0], betas[1], eps
        self.M = n_models
        sizes = [p.numel() // n_models for p in self.params]
        self.flat = torch.cat([p.detach().reshape(n_models, -1) for p in self.params], dim=1)  # [M, P]
        self.grad = torch.zeros_like(self.flat)  # gradients accumulate into views of one buffer: no concatenation
        off = 0
        for p, n in zip(self.params, sizes, strict=True):
            p.data = self.flat[:, off : off + n].view(p.shape)
            p.grad = self.grad[:, off : off + n].view(p.shape)
            off += n
        self.m = torch.zeros_like(self.flat)
        self.v = torch.zeros_like(self.flat)
        self.t = torch.zeros(n_models, 1, device=self.flat.device)
        self._views: dict[tuple[int, ...], tuple[list[torch.Tensor], ...]] = {}  # rows -> their row views

    def subset(self, rows: list[int], params: list[nn.Parameter]) -> BatchedAdamW:
        """The optimizer of the models ``rows`` (their moments and step counts), over ``params``."""
        sub = BatchedAdamW(params, len(rows), self.lr, self.wd, (self.b1, self.b2), self.eps)
        idx = torch.as_tensor(rows, device=self.flat.device)
        sub.m.copy_(self.m[idx])
        sub.v.copy_(self.v[idx])
        sub.t.copy_(self.t[idx])
        return sub

    def zero_grad(self) -> None:
        self.grad.zero_()

    @torch.no_grad()
    def step(self, active: torch.Tensor | np.ndarray, lr: float) -> None:
        """Update models where ``active`` [M] is True (decoupled weight decay, as AdamW).

        Pass a host array (numpy) on a GPU: the rows to update are chosen on the host.
        """
        act = np.flatnonzero(active.cpu().numpy() if isinstance(active, torch.Tensor) else np.asarray(active))
        if not len(act):
            return
        if FUSED_ADAMW:
            key = tuple(act.tolist())
            if key not in self._views:  # a few row sets per epoch: the views are built once each
                if len(self._views) >= 64:
                    self._views.clear()
                bufs = (self.flat, self.grad, self.m, self.v)
                self._views[key] = (*([b[i] for i in key] for b in bufs), [self.t[i, 0] for i in key])
            flat, grad, m, v, steps = self._views[key]
            if len(key) == self.M:
                self.t += 1
            else:
                self.t[torch.as_tensor(act, device=self.t.device)] += 1
            torch._fused_adamw_(
                flat,
                grad,
                m,
                v,
                [],
                steps,
                lr=lr,
                beta1=self.b1,
                beta2=self.b2,
                weight_decay=self.wd,
                eps=self.eps,
                amsgrad=False,
                maximize=False,
            )
            return
        mask = np.zeros(self.M, np.float32)
        mask[act] = 1.0
        a = torch.from_numpy(mask).to(self.flat.device)[:, None]  # [M, 1]
        self.t += a
        t = self.t.clamp_min(1)
        bc1, bc2 = 1 - self.b1**t, 1 - self.b2**t
        g = self.grad  # every parameter's gradient, in place (zeroed again by zero_grad)
        self.m.lerp_(g, a * (1 - self.b1))
        self.v.lerp_(g.mul_(g), a * (1 - self.b2))
        denom = torch.sqrt(self.v, out=g).div_(bc2.sqrt()).add_(self.eps)  # g's buffer is free again
        self.flat.mul_(1 - a * (lr * self.wd))
        self.flat.addcdiv_(self.m * (a * (lr / bc1)), denom, value=-1.0)


FUSED_ADAMW = hasattr(torch, "_fused_adamw_")  # torch's one-kernel AdamW (CPU and CUDA, torch >= 2.4)
