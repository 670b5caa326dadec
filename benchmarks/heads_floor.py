"""The floor under head training: its matmuls, optimizer steps and dropout-mask draws, replayed alone.

:func:`record` runs :func:`cbhlib.training.heads.train_units` under a dispatch mode that
notes every ATen call of these three kinds (forward, backward and validation alike) with
its argument shapes, strides and dtypes. :func:`replay` then times the same calls, as
many of each, back to back on one set of fresh tensors per distinct call (warm caches:
an optimistic floor): no autograd graph, no training loop, no elementwise work between
them. Head training's wall time minus this floor is what everything else costs (dispatch,
autograd, activations, the loss, batching, writing results); the floor itself is what no
restructuring of the loop removes, in float32, on the machine it is measured on.
``replay(calls, cold=True)`` times the same calls with the caches flushed before each: what
they cost where nothing of theirs is left in cache, as when a step's other work runs between.
"""

from __future__ import annotations

import math
import statistics
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten
KINDS: dict[str, tuple[Any, ...]] = {
    "matmul": (aten.bmm.default, aten.baddbmm.default, aten.mm.default, aten.addmm.default),
    "optimizer": (aten._fused_adamw_.default,),
    "masks": (aten.rand.generator,),  # ModelDropout.draw: one [steps, B, width] draw per model and layer
}
KIND_OF = {op: kind for kind, ops in KINDS.items() for op in ops}

Layout = tuple[tuple[int, ...], tuple[int, ...], torch.dtype]  # a tensor's size, stride and dtype


def _layout(x: Any) -> Any:
    """A hashable stand-in for an argument: tensors by layout, lists element-wise, a generator by kind."""
    if isinstance(x, torch.Tensor):
        return ("T", tuple(x.shape), tuple(x.stride()), x.dtype)
    if isinstance(x, list | tuple):
        return tuple(_layout(v) for v in x)
    if isinstance(x, torch.Generator):
        return ("G",)
    return x


def _is_mask_draw(args: tuple, kwargs: dict) -> bool:
    """``ModelDropout.draw`` draws [steps, B, width]; ``BLinear`` draws its initial weights 2-D
    (``cbhlib.models.fusion``), and the attention tokens' initial weights come from ``randn``."""
    size = args[0] if args else kwargs.get("size", ())
    return len(size) == 3


class Recorder(TorchDispatchMode):
    """Counts ``(op, argument layouts)`` of the calls in :data:`KINDS` while active."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: Counter[tuple[Any, Any, Any]] = Counter()

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func in KIND_OF and (KIND_OF[func] != "masks" or _is_mask_draw(args, kwargs)):
            self.calls[(func, _layout(args), _layout(sorted(kwargs.items())))] += 1
        return func(*args, **kwargs)


def record(run: Callable[[int], None], epochs: int) -> Counter[tuple[Any, Any, Any]]:
    """The calls of ``run(epochs)``, from runs of 1 and 2 epochs (every later epoch repeats the second's).

    ``run(e)`` must train for exactly ``e`` epochs (no early stopping) in a fresh place each call.
    """
    counts = []
    for e in (1, 2):
        with Recorder() as rec:
            run(e)
        counts.append(rec.calls)
    one, two = counts
    per_epoch = two.copy()
    per_epoch.subtract(one)
    if min(per_epoch.values(), default=0) < 0:  # a first epoch that depends on the epoch count
        raise ValueError("the 2-epoch run made fewer calls of some kind than the 1-epoch run: cannot extrapolate")
    total = Counter({k: one[k] + (epochs - 1) * per_epoch[k] for k in set(one) | set(per_epoch)})
    return +total  # drops zero counts


def _tensor(layout: Layout) -> torch.Tensor:
    """A tensor of this size, stride and dtype (positive values: Adam's second moment takes a root)."""
    size, stride, dtype = layout
    extent = 1 + sum((n - 1) * s for n, s in zip(size, stride, strict=True)) if all(size) else 0
    return torch.empty(max(extent, 1), dtype=dtype).uniform_(0.5, 1.0).as_strided(size, stride)


def _materialise(x: Any) -> Any:
    """The argument a recorded layout stands for: a fresh tensor, generator or list of them."""
    if isinstance(x, tuple) and x[:1] == ("T",):
        return _tensor(x[1:])
    if x == ("G",):
        return torch.Generator().manual_seed(0)
    if isinstance(x, tuple):
        return [_materialise(v) for v in x]
    return x


FLUSH_MIB = 64  # written before each timed call of a cold replay: more than this machine's L2 and its share of L3


def replay(calls: Counter[tuple[Any, Any, Any]], cold: bool = False, sample: int = 20) -> dict[str, float]:
    """Seconds each kind of call takes alone: every recorded call, as often as recorded, on fresh tensors.

    Warm (the default): each call's repeats back to back, so its operands stay in cache. ``cold``:
    :data:`FLUSH_MIB` written before each timed call, as a training step's other tensors and the
    optimizer's buffers push a kernel's operands out between two steps; each distinct call is timed
    ``sample`` times and its median counted once per recorded call.
    """
    seconds = dict.fromkeys(KINDS, 0.0)
    flush = torch.ones(FLUSH_MIB * 2**20 // 4) if cold else None
    for (func, args, kwargs), n in calls.items():
        a = [_materialise(v) for v in args]
        kw = {k: _materialise(v) for k, v in kwargs}
        func(*a, **kw)  # warm: first-call allocations and kernel selection
        if flush is None:
            t0 = time.perf_counter()
            for _ in range(n):
                func(*a, **kw)
            seconds[KIND_OF[func]] += time.perf_counter() - t0
            continue
        times = []
        for _ in range(min(n, sample)):
            flush.add_(1.0)
            t0 = time.perf_counter()
            func(*a, **kw)
            times.append(time.perf_counter() - t0)
        seconds[KIND_OF[func]] += n * statistics.median(times)
    return seconds


def calls_per_kind(calls: Counter[tuple[Any, Any, Any]]) -> dict[str, int]:
    """How many calls of each kind were recorded."""
    out = dict.fromkeys(KINDS, 0)
    for (func, _, _), n in calls.items():
        out[KIND_OF[func]] += n
    return out


ADDS_A_BIAS = (aten.baddbmm.default, aten.addmm.default)  # (bias, a, b): the product's operands come second


def matmul_flops(calls: Counter[tuple[Any, Any, Any]]) -> int:
    """Floating-point operations of the recorded matmuls: 2 per multiply-add (a [.., n, k] x [.., k, m])."""
    total = 0
    for (func, args, _), n in calls.items():
        if KIND_OF[func] != "matmul":
            continue
        a, b = args[1:3] if func in ADDS_A_BIAS else args[:2]
        total += n * 2 * math.prod(a[1]) * b[1][-1]  # a layout is ("T", size, stride, dtype)
    return total


def matmul_rate(size: int = 2048, repeats: int = 5) -> float:
    """This machine's float32 matmul rate on torch's current threads, GFLOP/s: one large square
    product ([size, size] x [size, size]), the best of ``repeats`` after one warm-up."""
    a, b = torch.rand(size, size), torch.rand(size, size)
    a @ b
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * size**3 / best / 1e9
