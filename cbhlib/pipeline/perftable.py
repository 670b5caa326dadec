"""The README's performance tables, from benchmark JSONs (``benchmarks/run.py``; never by hand)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

LABELS = [  # (exact key, or key prefix ending in _ for heads_<mode>_5folds_<n>ep_s keys, label); first match wins
    ("generate_s", "generate the campaign (s)"),
    ("file_mib", "campaign file (MiB)"),
    ("samples", "labelled samples"),
    ("unlabelled_frames", "unlabelled frames"),
    ("hdf5_read_images_per_s", "HDF5 read (images/s)"),
    ("hdf5_read_mb_per_s", "HDF5 read (MB/s)"),
    ("pretrain_torch_threads", "torch threads an encoder pretrains on (the project's policy)"),
    ("pretrain_default_recipe_s", "pretrain one encoder, default recipe (s)"),
    ("pretrain_default_recipe_images_per_s", "pretraining throughput (images/s)"),
    ("pretrain_default_recipe_final_over_zero", "final loss / predict-zero floor"),
    ("pretrain_in_memory_images_per_s", "pretraining, frames in memory (images/s)"),
    ("pretrain_streamed_images_per_s", "pretraining, frames streamed from HDF5 (images/s)"),
    ("embed_images_per_s", "embedding with the frozen encoder (images/s)"),
    ("heads_all_modes_", "heads: 4 modes x 5 folds x {ep} epochs (s)"),
    ("heads_floor_matmul_s", "heads, the same 4 modes: their matmuls alone, replayed (s)"),
    ("heads_floor_optimizer_s", "heads, the same 4 modes: their optimizer steps alone, replayed (s)"),
    ("heads_floor_masks_s", "heads, the same 4 modes: their dropout-mask draws alone, replayed (s)"),
    ("heads_floor_s", "heads, the same 4 modes: floor, the three above (s)"),
    ("heads_floor_cold_s", "heads, the same 4 modes: the three above, caches flushed before each call (s)"),
    ("heads_matmul_gflop", "heads, the same 4 modes: their matmuls' work (GFLOP)"),
    ("matmul_peak_gflops", "this machine's float32 matmul rate, 2048 x 2048, the heads' threads (GFLOP/s)"),
    ("heads_matmul_at_peak_s", "heads, the same 4 modes: their matmuls' work at that rate (s)"),
    ("heads_", "heads: {mode}, 5 folds x {ep} epochs (s)"),
    ("peak_rss_mb", "peak memory of the process (MB)"),
]


def _label(key: str) -> str | None:
    """The table label of a preset key, or None: not shown (the floor's call counts, for one)."""
    m = re.match(r"heads_(\w+?)_5folds_(\d+)ep_s", key)
    for prefix, label in LABELS:
        if key == prefix or (prefix.endswith("_") and key.startswith(prefix) and m):
            return label.format(mode=m.group(1) if m else "", ep=m.group(2) if m else "")
    return None


def _scaling_label(key: str) -> str:
    if m := re.fullmatch(r"heads_physical_only_(\d+)_samples_(\d+)ep_s", key):
        return f"physical_only heads, {m.group(1)} samples, 5 folds x {m.group(2)} epochs (s)"
    if m := re.fullmatch(r"pretrain_pool_(\d+)_frames_images_per_s", key):
        return f"pretraining throughput, pool of {m.group(1)} frames (images/s)"
    policies = {
        "cbhlib": "the project's thread policy (one thread per encoder, short spin)",
        "cbhlib_all_threads": "every core's thread, short spin, thread governor",
        "libgomp_default": "libgomp's defaults (fixed threads)",
    }
    busy = ", beside one CPU-bound process per core"
    if m := re.fullmatch(r"encoder_(cbhlib|cbhlib_all_threads|libgomp_default)_(quiet|busy)_s", key):
        how = busy[2:] if m.group(2) == "busy" else "quiet machine"
        return f"one default-recipe encoder, {how}, {policies[m.group(1)]}: median seconds"
    if m := re.fullmatch(r"encoder_(cbhlib|cbhlib_all_threads|libgomp_default)_busy_over_quiet", key):
        return f"one encoder, busy / quiet time, {policies[m.group(1)]}"
    if m := re.fullmatch(r"pipeline_(.+?)(-busy)?_w(\d+)_(s|peak_process_rss_mb)", key):
        how = ("serial" if m.group(3) == "0" else f"`--workers {m.group(3)}`") + (busy if m.group(2) else "")
        what = "wall time (s)" if m.group(4) == "s" else "largest process, peak resident (MB)"
        return f"whole `cbh run` on {m.group(1)}, {how}: {what}"
    return ""


def _num(v: object) -> str:
    """Benchmark figures: one decimal, two below 10 (ratios), thousands separated."""
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.2f}" if abs(v) < 10 else f"{v:,.1f}"
    return str(v)


HEADS_GOAL_S = 5.0  # issue 19: 4 modes x 5 folds x 50 epochs of head training on two quiet cores


def heads_goal(preset: dict[str, Any]) -> str:
    """The heads row against its goal, in one sentence (empty without a 50-epoch heads row and its floor)."""
    row, floor = preset.get("heads_all_modes_5folds_50ep_s"), preset.get("heads_floor_matmul_s")
    if row is None or floor is None:
        return ""
    met = "met" if row <= HEADS_GOAL_S else "not met"
    why = (
        ", above the goal already: this recipe cannot reach it on this machine in float32 with torch's kernels"
        if floor > HEADS_GOAL_S
        else ""
    )
    return (
        f"{preset['preset']}: the heads row takes {_num(row)} s against a goal of {HEADS_GOAL_S:g} s ({met}); its "
        f"matmuls alone, replayed warm, take {_num(floor)} s{why}."
    )


def performance_section(paths: list[Path]) -> str:
    """Tables from benchmark JSONs (``benchmarks/run.py``), each with its machine, date and command.
    A scaling row measured in several files is shown from the newest one (by its ``date``) only."""
    if not paths:
        return "(no benchmark results yet: `make bench`, then `make readme`)"
    results = sorted(((json.loads(p.read_text()), p) for p in paths), key=lambda rp: str(rp[0].get("date", "")))
    newest = {k: i for i, (res, _) in enumerate(results) for k in res.get("scaling", {})}
    lines: list[str] = []
    for i, (res, path) in enumerate(results):
        m, gpu = res.get("machine", {}), res.get("machine", {}).get("gpu") or "no GPU"
        model = f" ({m['cpu_model']})" if m.get("cpu_model") else ""
        lines += [
            f"`{res.get('command', 'python benchmarks/run.py')}` on {m.get('cpus')} CPU cores{model}, {gpu}, torch "
            f"{m.get('torch')}, {res.get('date')} (`{path.as_posix()}`):",
            "",
        ]
        presets = res.get("presets", [])
        if presets:
            lines += [
                "| stage | " + " | ".join(f"{p['preset']} ({p.get('device', 'cpu')})" for p in presets) + " |",
                "|---" * (len(presets) + 1) + "|",
            ]
            keys = [k for k in presets[0] if _label(k)]
            for k in keys:
                cells = [p.get(k) for p in presets]
                lines.append(f"| {_label(k)} | " + " | ".join(_num(v) for v in cells) + " |")
            lines += [""] + [g + "\n" for g in map(heads_goal, presets) if g]
        rows = [
            (_scaling_label(k), v) for k, v in res.get("scaling", {}).items() if _scaling_label(k) and newest[k] == i
        ]
        if rows:
            lines += ["| scaling | value |", "|---|---|"] + [f"| {k} | {_num(v)} |" for k, v in rows] + [""]
    return "\n".join(lines)
