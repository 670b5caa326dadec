"""Benchmark suite: prints a table and writes benchmarks/results/bench-<date>-<machine>.json.

    python benchmarks/run.py                              # default preset, CPU: stages and scaling rows
    python benchmarks/run.py --presets default seed-shape --device cuda
    python benchmarks/run.py --pipeline --workers 1 2 4   # also time whole `cbh run`s (fresh run folders)
    python benchmarks/run.py --presets seed-shape --pipeline --quick   # peak memory of a seed-shape pipeline
    python benchmarks/run.py --contention --pipeline --workers 0 1 2  # a busy machine; Dask against serial

Every preset runs in its own subprocess so its peak resident memory is its own; each
pipeline run is a subprocess too. Figures, not pass/fail: nothing here asserts a speed.
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def cpu_model() -> str | None:
    """The CPU's model name (Linux ``/proc/cpuinfo``), or None where it cannot be read."""
    try:
        with open("/proc/cpuinfo") as fh:
            return next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), None)
    except OSError:
        return None


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _pretrain_row(camp, cfg, workdir: Path, tag: str) -> dict:
    """Seconds and throughput of one default-recipe encoder (scope: every frame), trained as the
    project trains it: on a CPU, on :data:`cbhlib.threads.ENCODER_THREADS` torch threads."""
    import contextlib

    from cbhlib import threads
    from cbhlib.data.frames import ALL
    from cbhlib.training.encoders import on_gpu
    from cbhlib.training.pretrain import pretrain_encoder

    t0 = time.perf_counter()
    with contextlib.nullcontext() if on_gpu(cfg) else threads.pinned(threads.ENCODER_THREADS):
        ck = pretrain_encoder(
            camp, cfg.encoder, cfg.pretrain, ALL, 0, workdir / f"{tag}.pt", device=cfg.device, progress=False
        )
    dt = time.perf_counter() - t0
    seen = ck["steps"] * min(cfg.pretrain.batch_size, 10**9)
    return {
        f"pretrain_{tag}_s": dt,
        f"pretrain_{tag}_images_per_s": seen / dt,
        f"pretrain_{tag}_final_over_zero": ck["loss_final"] / ck["floor_predict_zero"],
    }


def bench_preset(preset: str, device: str, workdir: Path, epochs: int) -> dict:
    """Stages for one synthetic preset (run inside a fresh process)."""
    import torch

    from cbhlib import threads
    from cbhlib.config import HeadConfig, TrainConfig, load_config
    from cbhlib.data.campaign import Campaign
    from cbhlib.data.folds import lofo_folds
    from cbhlib.models.fusion import MODES
    from cbhlib.sources import synth
    from cbhlib.store.rundir import RunDir
    from cbhlib.store.units import Unit, UnitStore
    from cbhlib.training.embed import embed_campaign
    from cbhlib.training.encoders import on_gpu
    from cbhlib.training.heads import TrainInputs, train_units

    out: dict = {"preset": preset, "device": device, "torch_threads": torch.get_num_threads()}
    path = workdir / f"{preset}.h5"
    t0 = time.perf_counter()
    synth.generate(synth.preset(preset), path)
    out["generate_s"] = time.perf_counter() - t0
    out["file_mib"] = path.stat().st_size / 2**20
    camp = Campaign(path)
    C, H, W = camp.image_shape
    out["samples"], out["unlabelled_frames"], out["image_shape"] = camp.n_samples, camp.n_unlabelled, [C, H, W]
    os.system(f"cat {path} > /dev/null 2>&1")  # same page-cache state for every read below
    t0 = time.perf_counter()
    for s in range(0, camp.n_samples, 64):
        camp.images(slice(s, min(camp.n_samples, s + 64)))
    dt = time.perf_counter() - t0
    out["hdf5_read_images_per_s"] = camp.n_samples / dt
    out["hdf5_read_mb_per_s"] = camp.n_samples * C * H * W * 4 / 2**20 / dt
    big = H * W > 128 * 128
    enc = {"encoder.patch": 16, "pretrain.epochs": 1, "pretrain.max_frames": 64} if big else {}
    cfg = load_config(overrides={"device": device, "progress": False, **enc})
    if not on_gpu(cfg):
        out["pretrain_torch_threads"] = threads.ENCODER_THREADS
    out.update(_pretrain_row(camp, cfg, workdir, "default_recipe"))
    if not big:  # throughput against the unlabelled-pool size: in memory vs streamed from HDF5
        for limit, tag in ((1024, "in_memory"), (0, "streamed")):
            cfg_s = load_config(
                overrides={"device": device, "progress": False, "pretrain.epochs": 2, "pretrain.memory_limit_mb": limit}
            )
            out.update(_pretrain_row(camp, cfg_s, workdir, tag))
    out["rss_after_pretrain_mb"] = _rss_mb()
    e = embed_campaign(camp, workdir / "default_recipe.pt", None, device=device, progress=False)
    out["embed_images_per_s"], out["embed_s"] = e.images_per_second, e.seconds
    out["rss_after_embed_mb"] = _rss_mb()
    X, names = camp.feature_matrix()
    inputs = TrainInputs(camp.cbh_km.astype(float), X, names, [e.pooled], [e.regions], key="bench")
    total = 0.0
    for mode in MODES:  # the yardstick: 4 modes x 5 folds x 50 epochs, no early stopping
        units = [Unit(mode, "lofo", f, 0) for f in lofo_folds(camp)]
        t0 = time.perf_counter()
        train_units(
            inputs,
            units,
            mode,
            TrainConfig(epochs=epochs, patience=epochs),
            HeadConfig(),
            UnitStore(RunDir(workdir / f"heads_{mode}")),
            progress=False,
            device=device,
        )
        out[f"heads_{mode}_5folds_{epochs}ep_s"] = time.perf_counter() - t0
        total += out[f"heads_{mode}_5folds_{epochs}ep_s"]
    out[f"heads_all_modes_5folds_{epochs}ep_s"] = total
    if device == "cpu":  # what the same training cannot go below: its matmuls, optimizer steps and masks alone
        out.update(_heads_floor(inputs, camp, workdir, epochs))
    out["peak_rss_mb"] = _rss_mb()
    return out


def _heads_floor(inputs, camp, workdir: Path, epochs: int) -> dict:
    """The heads row's matmuls, optimizer steps and dropout-mask draws, recorded and replayed alone
    (``heads_floor.py``): seconds per kind, their sum, and how many calls of each kind."""
    from collections import Counter

    from heads_floor import calls_per_kind, matmul_flops, matmul_rate, record, replay

    from cbhlib.config import HeadConfig, TrainConfig
    from cbhlib.data.folds import lofo_folds
    from cbhlib.models.fusion import MODES
    from cbhlib.store.rundir import RunDir
    from cbhlib.store.units import Unit, UnitStore
    from cbhlib.training.heads import train_units

    calls: Counter = Counter()
    for mode in MODES:
        units = [Unit(mode, "lofo", f, 0) for f in lofo_folds(camp)]

        def run(e: int, mode: str = mode, units: list = units) -> None:
            store = UnitStore(RunDir(workdir / f"floor_{mode}_{e}ep"))
            train_units(inputs, units, mode, TrainConfig(epochs=e, patience=e), HeadConfig(), store, progress=False)

        calls += record(run, epochs)
    seconds, cold = replay(calls), replay(calls, cold=True)
    out = {f"heads_floor_{kind}_s": s for kind, s in seconds.items()}
    out["heads_floor_s"] = sum(seconds.values())
    out.update({f"heads_floor_cold_{kind}_s": s for kind, s in cold.items()})
    out["heads_floor_cold_s"] = sum(cold.values())
    out["heads_matmul_gflop"] = matmul_flops(calls) / 1e9  # the row's work, whatever the machine
    out["matmul_peak_gflops"] = matmul_rate()
    out["heads_matmul_at_peak_s"] = out["heads_matmul_gflop"] / out["matmul_peak_gflops"]
    out.update({f"heads_floor_{kind}_calls": n for kind, n in calls_per_kind(calls).items()})
    return out


def bench_pretrain_vs_pool(workdir: Path, device: str, factors: tuple[float, ...] = (0.0, 1.0, 4.0)) -> dict:
    """Pretraining throughput (images/s, 2 epochs) against the unlabelled-pool size: the
    default preset with 0x, 1x and 4x as many unlabelled frames as labelled ones."""
    from cbhlib.config import load_config
    from cbhlib.data.campaign import Campaign
    from cbhlib.sources import synth

    out = {}
    for f in factors:
        path = workdir / f"pool{f:g}.h5"
        synth.generate(synth.preset("default", unlabelled_factor=f), path)
        camp = Campaign(path)
        cfg = load_config(
            overrides={"device": device, "progress": False, "pretrain.epochs": 2, "pretrain.max_frames": 0}
        )
        row = _pretrain_row(camp, cfg, workdir, "pool")
        frames = camp.n_samples + camp.n_unlabelled
        out[f"pretrain_pool_{frames}_frames_images_per_s"] = row["pretrain_pool_images_per_s"]
        out[f"pretrain_pool_{frames}_frames_s"] = row["pretrain_pool_s"]
    return out


def bench_heads_vs_samples(
    workdir: Path, sizes: tuple[int, ...] = (1000, 5000, 20000), epochs: int = 20, device: str = "cpu"
) -> dict:
    """physical_only heads (5 LOFO folds, 1 seed, no early stopping) against the sample count."""
    from cbhlib.config import HeadConfig, TrainConfig
    from cbhlib.data.campaign import Campaign
    from cbhlib.data.folds import lofo_folds
    from cbhlib.sources import synth
    from cbhlib.store.rundir import RunDir
    from cbhlib.store.units import Unit, UnitStore
    from cbhlib.training.heads import TrainInputs, train_units

    out = {}
    for n in sizes:
        path = workdir / f"feat{n}.h5"
        synth.generate(synth.preset("default", n_scale=n / 933, unlabelled_factor=0.0), path, with_images=False)
        camp = Campaign(path)
        X, names = camp.feature_matrix()
        inputs = TrainInputs(camp.cbh_km.astype(float), X, names, key=f"n{n}")
        units = [Unit("physical_only", "lofo", f, 0) for f in lofo_folds(camp)]
        t0 = time.perf_counter()
        train_units(
            inputs,
            units,
            "physical_only",
            TrainConfig(epochs=epochs, patience=epochs),
            HeadConfig(),
            UnitStore(RunDir(workdir / f"hs{n}")),
            progress=False,
            device=device,
        )
        out[f"heads_physical_only_{camp.n_samples}_samples_{epochs}ep_s"] = time.perf_counter() - t0
    return out


ENCODER_CHILD = """
import sys, time
sys.path.insert(0, {root!r})
{first}
import torch
from cbhlib.config import load_config
from cbhlib.data.campaign import Campaign
from cbhlib.data.frames import ALL
from cbhlib.training.pretrain import pretrain_encoder
camp = Campaign({campaign!r})
cfg = load_config(overrides={{"progress": False}})
t0 = time.perf_counter()
with {context}:
    pretrain_encoder(camp, cfg.encoder, cfg.pretrain, ALL, 0, {out!r}, device="cpu", progress=False)
print(time.perf_counter() - t0)
"""
PIN = "__import__('cbhlib').threads.pinned(__import__('cbhlib').threads.ENCODER_THREADS)"
FREE = "__import__('contextlib').nullcontext()"
POLICIES = {  # name -> (imported first, environment, how the encoder trains)
    "cbhlib": ("import cbhlib", {}, PIN),  # the project's policy: short spin, one thread per encoder
    "cbhlib_all_threads": ("import cbhlib", {}, FREE),  # short spin, threads follow the free cores (governor)
    "libgomp_default": ("import torch", {"OMP_NUM_THREADS": str(os.cpu_count() or 1)}, FREE),  # spin 300k, fixed
}


class Neighbours:
    """``n`` CPU-bound processes (``while True: pass``) while the block runs: a machine someone else uses."""

    def __init__(self, n: int) -> None:
        self.n, self.procs = n, []

    def __enter__(self) -> Neighbours:
        self.procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(self.n)]
        time.sleep(0.5)
        return self

    def __exit__(self, *exc: object) -> None:
        for p in self.procs:
            p.kill()
            p.wait()


def bench_contention(workdir: Path, campaign: Path, repeats: int = 3) -> dict:
    """One default-recipe encoder (median of ``repeats``) quiet and beside one CPU-bound neighbour per
    core, under the project's thread policy (one thread per encoder, short spin), with every thread
    (short spin, the governor) and under libgomp's defaults."""
    import statistics

    out: dict = {}
    busy = os.cpu_count() or 1
    for name, (first, env, context) in POLICIES.items():
        code = ENCODER_CHILD.format(
            root=str(ROOT), first=first, campaign=str(campaign), out=str(workdir / "e.pt"), context=context
        )
        for label, n in (("quiet", 0), ("busy", busy)):
            times = []
            with Neighbours(n):
                for _ in range(repeats):
                    env_all = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_NUM_THREADS")}
                    proc = subprocess.run(
                        [sys.executable, "-c", code], env={**env_all, **env}, capture_output=True, text=True
                    )
                    times.append(float(proc.stdout.strip().splitlines()[-1]))
            out[f"encoder_{name}_{label}_s"] = statistics.median(times)
        out[f"encoder_{name}_busy_over_quiet"] = out[f"encoder_{name}_busy_s"] / out[f"encoder_{name}_quiet_s"]
    return out


def bench_pipeline(workers: int, preset: str, quick: bool, device: str = "cpu", neighbours: int = 0) -> dict:
    """One whole `cbh run` in a subprocess (a fresh run folder); wall time, step times, peak memory."""
    tag = f"{preset}-busy" if neighbours else preset
    run = f"bench-{tag}-w{workers}-{int(time.time())}"
    args = [sys.executable, "-m", "cbhlib.cli", "run", "--run-name", run, "--quiet", "--set", f"device={device}"]
    if workers:
        args += ["--workers", str(workers)]
    if preset != "default":
        campaign = ROOT / "data" / f"synthetic_{preset}.h5"
        subprocess.run(
            [sys.executable, "-m", "cbhlib.cli", "generate", "--preset", preset, "-o", str(campaign)],
            cwd=ROOT,
            check=True,
        )
        args += ["--campaign", str(campaign.relative_to(ROOT))]
    if quick:  # memory, not skill: the smallest settings that still run every step
        for s in (
            "seeds=[0]",
            "pretrain.epochs=1",
            "pretrain.max_frames=64",
            "train.epochs=2",
            "encoder.patch=16",
            "compare.bootstrap_reps=100",
        ):
            args += ["--set", s]
    with Neighbours(neighbours):
        t0 = time.perf_counter()
        proc = subprocess.run(
            ["/usr/bin/time", "-v", *args] if Path("/usr/bin/time").exists() else args,
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        wall = time.perf_counter() - t0
    preset = tag
    out = {f"pipeline_{preset}_w{workers}_s": wall, f"pipeline_{preset}_w{workers}_ok": proc.returncode == 0}
    for line in proc.stderr.splitlines():
        if "Maximum resident set size" in line:  # the largest single process (a notebook kernel or a worker)
            out[f"pipeline_{preset}_w{workers}_peak_process_rss_mb"] = int(line.split(":")[1]) / 1024.0
    log = ROOT / "runs" / run / "logs" / "pipeline.log"
    if log.exists():
        for line in log.read_text().splitlines():
            e = json.loads(line)
            out[f"pipeline_{preset}_w{workers}_step_{e['name']}_s"] = e["seconds"]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", nargs="+", default=["default"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--epochs", type=int, default=50, help="head-training epochs per fold and mode")
    ap.add_argument("--pipeline", action="store_true", help="also time whole `cbh run`s")
    ap.add_argument(
        "--workers", type=int, nargs="+", default=[0], help="pipeline runs with these --workers (0: serial)"
    )
    ap.add_argument("--quick", action="store_true", help="pipeline with the smallest settings (for peak memory)")
    ap.add_argument("--no-stages", action="store_true", help="skip the per-preset stages")
    ap.add_argument(
        "--contention",
        action="store_true",
        help="one encoder quiet and beside one CPU-bound neighbour per core, under the project's thread policy and "
        "libgomp's defaults; with --pipeline also a serial `cbh run` beside the neighbours",
    )
    ap.add_argument("--out", help="JSON path (default benchmarks/results/bench-<date>-<machine>.json)")
    ap.add_argument("--_child", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a._child:
        with tempfile.TemporaryDirectory() as d:
            if a._child == "heads-vs-samples":
                res = bench_heads_vs_samples(Path(d), device=a.device)
            elif a._child == "pretrain-vs-pool":
                res = bench_pretrain_vs_pool(Path(d), a.device)
            else:
                res = bench_preset(a._child, a.device, Path(d), a.epochs)
            print(json.dumps(res))
        return 0
    import torch

    results = {
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "cpu_model": cpu_model(),
            "torch": torch.__version__,
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        },
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "presets": [],
        "scaling": {},
        "command": " ".join(["python benchmarks/run.py", *sys.argv[1:]]),
    }
    out = Path(
        a.out or ROOT / "benchmarks" / "results" / f"bench-{time.strftime('%Y%m%d-%H%M')}-{platform.node()}.json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:  # after every row: a run stopped part-way keeps what it measured
        out.write_text(json.dumps(results, indent=2))

    children = [] if a.no_stages else [*a.presets, "heads-vs-samples", "pretrain-vs-pool"]
    for child in children:
        proc = subprocess.run(
            [sys.executable, __file__, "--_child", child, "--device", a.device, "--epochs", str(a.epochs)],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            print(proc.stderr[-3000:], file=sys.stderr)
            return 1
        res = json.loads(proc.stdout.strip().splitlines()[-1])
        (
            results["scaling"].update(res)
            if child in ("heads-vs-samples", "pretrain-vs-pool")
            else results["presets"].append(res)
        )
        save()
    if a.contention:
        with tempfile.TemporaryDirectory() as d:
            camp = ROOT / "data" / "synthetic_default.h5"
            if not camp.exists():
                subprocess.run([sys.executable, "-m", "cbhlib.cli", "generate"], cwd=ROOT, check=True)
            results["scaling"].update(bench_contention(Path(d), camp))
        save()
    if a.pipeline:
        for preset in a.presets:
            for w in a.workers:
                results["scaling"].update(bench_pipeline(w, preset, a.quick, a.device))
                save()
            if a.contention:
                results["scaling"].update(bench_pipeline(0, preset, a.quick, a.device, neighbours=os.cpu_count() or 1))
                save()
    save()
    keys = sorted({k for p in results["presets"] for k in p if k not in ("preset", "image_shape")})
    width = max([len(k) for k in keys] + [len(k) for k in results["scaling"]] + [10])
    print(f"{'metric':{width}s} " + " ".join(f"{p['preset']:>14s}" for p in results["presets"]))
    for k in keys:
        cells = [p.get(k) for p in results["presets"]]
        print(f"{k:{width}s} " + " ".join(f"{v:14.2f}" if isinstance(v, float) else f"{v!s:>14s}" for v in cells))
    for k, v in results["scaling"].items():
        print(f"{k:{width}s} {v:14.2f}" if isinstance(v, float) else f"{k:{width}s} {v!s:>14s}")
    print(f"written: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
