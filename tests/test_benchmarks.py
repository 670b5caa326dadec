"""The benchmark's heads floor (``benchmarks/heads_floor.py``): it must see every matmul, optimizer
step and dropout-mask draw of head training, backward included, and extrapolate epochs exactly."""

from __future__ import annotations

import math
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from cbhlib.config import HeadConfig, TrainConfig
from cbhlib.data.campaign import Campaign
from cbhlib.data.folds import lofo_folds
from cbhlib.pipeline.perftable import performance_section
from cbhlib.store.rundir import RunDir
from cbhlib.store.units import Unit, UnitStore
from cbhlib.training.heads import TrainInputs, train_units
from cbhlib.training.inputs import effective_batch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from heads_floor import Recorder, calls_per_kind, matmul_flops, matmul_rate, record, replay


def _shapes(calls: Counter) -> Counter:
    """Calls by op and argument layouts (the learning rate, a keyword, differs between schedules)."""
    out: Counter = Counter()
    for (func, args, _), n in calls.items():
        out[(func, args)] += n
    return out


def test_the_heads_floor_records_forward_backward_and_every_epoch(tiny_campaign: Path, tmp_path: Path) -> None:
    camp = Campaign(tiny_campaign)
    X, names = camp.feature_matrix()
    inputs = TrainInputs(camp.cbh_km.astype(float), X, names, key="floor")
    units = [Unit("physical_only", "lofo", f, 0) for f in lofo_folds(camp)]
    runs = iter(range(100))

    def run(e: int) -> None:  # a fresh store each time: nothing is skipped as finished
        store = UnitStore(RunDir(tmp_path / f"r{next(runs)}"))
        cfg = TrainConfig(epochs=e, patience=e)
        train_units(inputs, units, "physical_only", cfg, HeadConfig(), store, progress=False)

    epochs = 4
    extrapolated = record(run, epochs)
    with Recorder() as rec:
        run(epochs)
    assert _shapes(extrapolated) == _shapes(rec.calls)

    B = effective_batch(TrainConfig().batch_size, units)
    steps = epochs * max(math.ceil(len(u.fold.train_idx) / B) for u in units)  # every unit steps in lockstep
    by_op = Counter()
    for (func, _, _), n in extrapolated.items():
        by_op[str(func)] += n
    # physical_only: 2 + 3 layers; backward: 5 weight gradients and 4 input gradients (the features need none)
    assert by_op["aten.bmm.default"] == 9 * steps
    assert by_op["aten._fused_adamw_.default"] == steps
    assert by_op["aten.rand.generator"] == epochs * 4 * len(units)  # 4 dropout layers per model, per epoch
    # forward: 5 layers per training step, per epoch's validation pass and per unit's final scoring
    assert by_op["aten.baddbmm.default"] == 5 * (steps + epochs + len(units))
    assert calls_per_kind(extrapolated) == {
        "matmul": 14 * steps + 5 * (epochs + len(units)),
        **{"optimizer": steps, "masks": epochs * 4 * len(units)},
    }
    with Recorder() as replayed:  # the replay makes every recorded call as often (+1: its warm-up)
        seconds = replay(extrapolated)
    assert replayed.calls == Counter({k: n + 1 for k, n in extrapolated.items()})
    assert set(seconds) == {"matmul", "optimizer", "masks"} and all(s > 0 for s in seconds.values())
    with Recorder() as cold:  # cold: a sample of each call, caches flushed before each, its median times its count
        cold_seconds = replay(extrapolated, cold=True, sample=3)
    assert cold.calls == Counter({k: min(n, 3) + 1 for k, n in extrapolated.items()})
    assert set(cold_seconds) == set(seconds) and all(s > 0 for s in cold_seconds.values())


def test_the_heads_floor_sees_the_attention_modes_einsums(tiny_campaign: Path, tmp_path: Path) -> None:
    camp = Campaign(tiny_campaign)
    X, names = camp.feature_matrix()
    rng = np.random.default_rng(0)
    n = camp.n_samples
    pooled, regions = rng.normal(size=(n, 8)).astype(np.float32), rng.normal(size=(n, 4, 8)).astype(np.float32)
    inputs = TrainInputs(camp.cbh_km.astype(float), X, names, [pooled], [regions], key="floor-att")
    units = [Unit("attention", "lofo", f, 0) for f in lofo_folds(camp)]
    runs = iter(range(100))

    def run(e: int) -> None:
        store = UnitStore(RunDir(tmp_path / f"r{next(runs)}"))
        train_units(inputs, units, "attention", TrainConfig(epochs=e, patience=e), HeadConfig(), store, progress=False)

    extrapolated = record(run, 3)
    with Recorder() as rec:
        run(3)
    assert _shapes(extrapolated) == _shapes(rec.calls)
    B = effective_batch(TrainConfig().batch_size, units)
    steps = 3 * max(math.ceil(len(u.fold.train_idx) / B) for u in units)
    bmm = sum(n for (func, _, _), n in extrapolated.items() if str(func) == "aten.bmm.default")
    # the 4 einsums are bmm's: 4 forward and 8 backward per step (today 22 bmm per step in all, with the
    # linear layers' 10 weight and input gradients); without the einsums the count would fall below this
    assert bmm >= (4 + 8) * steps
    assert calls_per_kind(extrapolated)["optimizer"] == steps


def test_the_performance_section_shows_the_floor_and_not_the_call_counts(tmp_path: Path) -> None:
    bench = tmp_path / "bench.json"
    bench.write_text(
        '{"machine": {"cpus": 2, "torch": "2.13.0"}, "date": "2026-12-07 19:00", "command": "python benchmarks/run.py",'
        ' "presets": [{"preset": "default", "heads_all_modes_5folds_50ep_s": 12.0, "heads_floor_matmul_s": 2.5,'
        ' "heads_floor_optimizer_s": 0.5, "heads_floor_masks_s": 0.8, "heads_floor_s": 3.8,'
        ' "heads_floor_cold_s": 9.1, "heads_floor_cold_matmul_s": 7.0, "heads_floor_matmul_calls": 74865}],'
        ' "scaling": {}}'
    )
    text = performance_section([bench])
    assert "| heads, the same 4 modes: the three above, caches flushed before each call (s) | 9.10 |" in text
    assert "| 7.00 |" not in text  # the cold floor's parts stay in the JSON
    assert "| heads, the same 4 modes: their matmuls alone, replayed (s) | 2.50 |" in text
    assert "| heads, the same 4 modes: floor, the three above (s) | 3.80 |" in text
    assert "74865" not in text and "74,865" not in text


def test_the_matmul_work_counts_two_flops_per_multiply_add() -> None:
    with Recorder() as rec:
        torch.bmm(torch.ones(3, 4, 5), torch.ones(3, 5, 6))  # 3 x 4 x 5 x 6 multiply-adds
        torch.baddbmm(torch.ones(3, 1, 6), torch.ones(3, 4, 5), torch.ones(3, 5, 6))  # the same, after the bias
        for _ in range(2):
            torch.mm(torch.ones(7, 8), torch.ones(8, 2))  # 7 x 8 x 2, twice
        torch.addmm(torch.ones(2), torch.ones(7, 8), torch.ones(8, 2))
        torch.relu(torch.ones(4))  # not a matmul
    assert matmul_flops(rec.calls) == 2 * (2 * 3 * 4 * 5 * 6 + 3 * 7 * 8 * 2)
    assert matmul_rate(size=64, repeats=2) > 0


def test_the_performance_section_alone_is_rewritten_without_a_run(tmp_path: Path) -> None:
    from cbhlib.pipeline.readme import main as readme_main

    readme = tmp_path / "README.md"
    readme.write_text(
        "# x\n<!-- results:start -->\nold results\n<!-- results:end -->\n<!-- performance:start -->\nold\n"
        "<!-- performance:end -->\ntail\n"
    )
    bench = tmp_path / "bench.json"
    bench.write_text(
        '{"machine": {"cpus": 2, "cpu_model": "AMD EPYC", "torch": "2.13.0"}, "date": "2026-12-08 04:04",'
        ' "command": "python benchmarks/run.py",'
        ' "presets": [{"preset": "default", "heads_matmul_gflop": 381.2, "matmul_peak_gflops": 103.3,'
        ' "heads_matmul_at_peak_s": 3.69}], "scaling": {}}'
    )
    args = [str(tmp_path / "no-run"), str(readme), "--benchmarks", str(bench), "--performance-only"]
    assert readme_main(args) == 0
    text = readme.read_text()
    assert "on 2 CPU cores (AMD EPYC), no GPU" in text
    assert "\nold results\n" in text and "\nold\n" not in text and text.endswith("tail\n")
    assert "| heads, the same 4 modes: their matmuls' work (GFLOP) | 381.2 |" in text
    assert "| heads, the same 4 modes: their matmuls' work at that rate (s) | 3.69 |" in text
    assert "against a goal" not in text  # no heads row in this file


def test_the_heads_row_is_read_against_its_goal() -> None:
    from cbhlib.pipeline.perftable import heads_goal

    row = {"preset": "default", "heads_all_modes_5folds_50ep_s": 23.2, "heads_floor_matmul_s": 5.34}
    assert heads_goal(row) == (
        "default: the heads row takes 23.2 s against a goal of 5 s (not met); its matmuls alone, replayed warm, "
        "take 5.34 s, above the goal already: this recipe cannot reach it on this machine in float32 with torch's "
        "kernels."
    )
    fast = heads_goal({**row, "heads_all_modes_5folds_50ep_s": 4.5, "heads_floor_matmul_s": 2.0})
    assert fast.endswith("(met); its matmuls alone, replayed warm, take 2.00 s.")
    assert heads_goal({"preset": "default", "heads_all_modes_5folds_50ep_s": 23.2}) == ""
