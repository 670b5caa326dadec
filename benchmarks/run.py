"""Benchmark suite: prints a table and writes benchmarks/results/<machine>-<date>.json.

    python benchmarks/run.py                         # default preset, CPU
    python benchmarks/run.py --presets default seed-shape --device cuda
    python benchmarks/run.py --pipeline              # also time the whole `cbh run`

Every preset runs in its own subprocess so its peak resident memory is its own.
Figures, not pass/fail: nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def bench_preset(preset: str, device: str, workdir: Path, epochs: int) -> dict:
    """All stages for one synthetic preset (run inside a fresh process)."""
    import torch

    from cbhlib import synth
    from cbhlib.campaign import Campaign
    from cbhlib.data import lofo_folds
    from cbhlib.embed import embed_campaign
    from cbhlib.models.mae import EncoderConfig
    from cbhlib.models.fusion import MODES
    from cbhlib.pretrain import PretrainConfig, pretrain
    from cbhlib.train import TrainConfig, TrainInputs, Unit, train_units

    out: dict = {"preset": preset, "device": device, "torch_threads": torch.get_num_threads()}
    path = workdir / f"{preset}.h5"
    t0 = time.perf_counter()
    synth.generate(synth.preset(preset), path)
    out["generate_s"] = time.perf_counter() - t0
    out["file_mib"] = path.stat().st_size / 2**20
    out["rss_after_generate_mb"] = _rss_mb()
    camp = Campaign(path)
    C, H, W = camp.image_shape
    out["samples"], out["image_shape"] = camp.n_samples, [C, H, W]

    os.system(f"cat {path} > /dev/null 2>&1")  # same page-cache state for every read below
    t0 = time.perf_counter()
    for s in range(0, camp.n_samples, 64):
        camp.images(slice(s, min(camp.n_samples, s + 64)))
    dt = time.perf_counter() - t0
    out["hdf5_read_images_per_s"] = camp.n_samples / dt
    out["hdf5_read_mb_per_s"] = camp.n_samples * C * H * W * 4 / 2**20 / dt

    patch = 8 if H <= 128 else 16
    encoders = {"mae1d": EncoderConfig("mae1d", patch=patch, column_stride=8),
                "mae2d": EncoderConfig("mae2d", patch=patch)}
    emb = None
    for name, enc in encoders.items():
        cfg = PretrainConfig(encoder=enc, epochs=1, batch_size=32 if H > 128 else 64, device=device)
        t0 = time.perf_counter()
        pretrain(camp, np.arange(camp.n_samples), cfg, workdir / f"{preset}_{name}.pt", progress=False)
        out[f"pretrain_epoch_s_{name}"] = time.perf_counter() - t0
        e = embed_campaign(camp, workdir / f"{preset}_{name}.pt", None, device=device, progress=False)
        out[f"embed_images_per_s_{name}"] = e.images_per_second
        out[f"embed_s_{name}"] = e.seconds
        if name == "mae2d":
            emb = e
        out["rss_after_" + name + "_mb"] = _rss_mb()

    X, names = camp.feature_matrix()
    inputs = TrainInputs(camp.cbh_km.astype(float), X, names, [emb.pooled], [emb.regions], "bench")
    units = [Unit(f, 0) for f in lofo_folds(camp)]
    total = 0.0
    for mode in MODES:
        cfg = TrainConfig(mode=mode, epochs=epochs, patience=epochs)  # no early stop: full cost
        t0 = time.perf_counter()
        train_units(inputs, units, cfg, workdir / f"heads_{preset}_{mode}", progress=False)
        dt = time.perf_counter() - t0
        out[f"heads_{mode}_5folds_{epochs}ep_s"] = dt
        total += dt
    out[f"heads_all_modes_5folds_{epochs}ep_s"] = total
    out["seconds_per_epoch_all_modes_5folds"] = total / epochs
    out["peak_rss_mb"] = _rss_mb()
    return out


def bench_pipeline() -> dict:
    run = f"bench-{int(time.time())}"
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "cbhlib.cli", "run", "--run-name", run, "--quiet"], cwd=ROOT,
                          capture_output=True, text=True)
    out = {"pipeline_s": time.perf_counter() - t0, "pipeline_ok": proc.returncode == 0}
    log = ROOT / "runs" / run / "pipeline.log"
    if log.exists():
        for line in log.read_text().splitlines():
            e = json.loads(line)
            out[f"pipeline_step_{e['step']}_s"] = e["seconds"]
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0
    out["pipeline_peak_rss_mb"] = children
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", nargs="+", default=["default"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--epochs", type=int, default=50, help="head-training epochs per fold and mode")
    ap.add_argument("--pipeline", action="store_true", help="also time a whole `cbh run`")
    ap.add_argument("--out", help="JSON path (default benchmarks/results/<machine>-<date>.json)")
    ap.add_argument("--_child", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a._child:
        with tempfile.TemporaryDirectory() as d:
            print(json.dumps(bench_preset(a._child, a.device, Path(d), a.epochs)))
        return 0
    import torch

    results = {"machine": {"platform": platform.platform(), "python": platform.python_version(),
                           "cpus": os.cpu_count(), "torch": torch.__version__,
                           "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None},
               "date": time.strftime("%Y-%m-%d %H:%M"), "presets": []}
    for preset in a.presets:
        proc = subprocess.run([sys.executable, __file__, "--_child", preset, "--device", a.device,
                               "--epochs", str(a.epochs)], capture_output=True, text=True)
        if proc.returncode != 0:
            print(proc.stderr[-2000:], file=sys.stderr)
            return 1
        results["presets"].append(json.loads(proc.stdout.strip().splitlines()[-1]))
    if a.pipeline:
        results["pipeline"] = bench_pipeline()
    out = Path(a.out or ROOT / "benchmarks" / "results" / f"{platform.node()}-{time.strftime('%Y%m%d-%H%M')}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    keys = sorted({k for p in results["presets"] for k in p if k not in ("preset", "image_shape")})
    width = max(len(k) for k in keys)
    print(f"{'metric':{width}s} " + " ".join(f"{p['preset']:>14s}" for p in results["presets"]))
    for k in keys:
        vals = []
        for p in results["presets"]:
            v = p.get(k)
            vals.append(f"{v:14.2f}" if isinstance(v, float) else f"{str(v):>14s}")
        print(f"{k:{width}s} " + " ".join(vals))
    for k, v in results.get("pipeline", {}).items():
        print(f"{k:{width}s} {v:14.2f}" if isinstance(v, float) else f"{k:{width}s} {v!s:>14s}")
    print(f"written: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
