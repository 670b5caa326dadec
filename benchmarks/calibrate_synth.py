"""Calibration of the synthetic campaign against the real one: a table of targets.

    python benchmarks/calibrate_synth.py                       # default preset
    python benchmarks/calibrate_synth.py --preset easy
    python benchmarks/calibrate_synth.py --set shift_strength=2 --json out.json
    python benchmarks/calibrate_synth.py --image-only           # + the seed-style image_only run (minutes)

Prints ``quantity | target | measured | ok`` for: the gradient-boosted-trees baseline
(``baselines.gbdt`` on all 12 physical features) under leave-one-flight-out and random
5-fold, the ERA5 feature statistics of er2-data-facts.md, the shadow NaN fraction, the
lag-1 autocorrelation of CBH, pixel autocorrelations and the masked-patch floors of a
masked autoencoder (patch 8, mask 0.75) for two target normalisations.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy import interpolate, ndimage

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cbhlib.data.campaign import Campaign
from cbhlib.data.folds import lofo_folds, random_folds
from cbhlib.evaluation.baselines import BaselineData, make_predictor
from cbhlib.evaluation.explore import pooled_lag1
from cbhlib.evaluation.metrics import regression_metrics
from cbhlib.sources import synth

# er2-data-facts.md: observed mean / std over the 933 samples
ERA5_OBSERVED = {
    "blh": (0.849, 0.348),
    "lcl": (1.178, 0.889),
    "inversion_height": (1.643, 1.015),
    "stability_index": (-4.997, 0.865),
    "t2m": (287.68, 6.74),
    "d2m": (278.25, 9.05),
    "sp": (96833.0, 7486.0),
    "tcwv": (13.84, 7.73),
}
LAGS = (4, 8, 12, 16)


def gbdt_scores(camp: Campaign) -> dict[str, float]:
    """The project's gbdt baseline on all physical features: LOFO and random 5-fold."""
    y = camp.cbh_km.astype(np.float64)
    X, names = camp.feature_matrix()
    predict = make_predictor("gbdt", BaselineData(y, X, names))
    out: dict[str, float] = {}
    for proto, folds in (("lofo", lofo_folds(camp)), ("random", random_folds(camp))):
        pred, r2, mae = np.empty(len(y)), [], []
        for fold in folds:
            pred[fold.test_idx] = predict(fold.fit_idx)[fold.test_idx]
            fm = regression_metrics(y[fold.test_idx], pred[fold.test_idx])
            r2.append(fm["r2"])
            mae.append(fm["mae_km"])
        pooled = regression_metrics(y, pred)
        out[f"{proto}_pooled_mae_km"], out[f"{proto}_pooled_r2"] = pooled["mae_km"], pooled["r2"]
        out[f"{proto}_mean_r2"] = float(np.mean(r2))
        out[f"{proto}_mean_mae_km"] = float(np.mean(mae))  # the seed's convention: the mean of fold MAE
    return out


def pixel_autocorrelation(images: np.ndarray, lags: tuple[int, ...] = LAGS) -> dict[int, float]:
    """Autocorrelation of per-image-centred pixels at each lag (rows and columns pooled)."""
    x = images[:, 0].astype(np.float64)
    x = x - x.mean(axis=(1, 2), keepdims=True)
    var = float(np.mean(x * x))
    out = {}
    for lag in lags:
        num = np.mean(x[:, lag:, :] * x[:, :-lag, :]) + np.mean(x[:, :, lag:] * x[:, :, :-lag])
        out[lag] = float(num / 2.0 / var)
    return out


def _patchify(x: np.ndarray, p: int) -> np.ndarray:
    """(H, W) -> (H/p * W/p, p*p)."""
    H, W = x.shape
    return x.reshape(H // p, p, W // p, p).transpose(0, 2, 1, 3).reshape(-1, p * p)


def _norm_patches(t: np.ndarray) -> np.ndarray:
    """The MAE paper's norm_pix_loss target: each patch minus its mean over sqrt(var + 1e-6)."""
    return (t - t.mean(1, keepdims=True)) / np.sqrt(t.var(1, keepdims=True) + 1e-6)


def masked_patch_floors(
    images: np.ndarray,
    patch: int = 8,
    mask_ratio: float = 0.75,
    seed: int = 0,
    method: str = "linear",
    sigma: float = 4.0,
) -> dict[str, float]:
    """Mean squared error on masked patches of two trivial predictors.

    Inputs are per-image centred and divided by the pooled std of the centred pixels.
    (a) targets are those pixels: predict-zero ~ 1; (b) targets are each patch normalised
    by its own mean and std (norm_pix_loss): predict-zero = 1. The interpolation floor
    predicts every masked pixel from the visible patches' pixels (linear interpolation
    over the visible pixels, nearest where outside their hull) and, for (b), normalises
    each predicted patch by its own mean and std as the target is.
    """
    rng = np.random.default_rng(seed)
    x = images[:, 0].astype(np.float64)
    x = x - x.mean(axis=(1, 2), keepdims=True)
    x /= x.std()
    n, H, W = x.shape
    H, W = H // patch * patch, W // patch * patch
    gh, gw = H // patch, W // patch
    yy, xx = np.mgrid[0:H, 0:W]
    pid = (yy // patch) * gw + xx // patch
    sums = {"a_zero": 0.0, "a_interp": 0.0, "b_zero": 0.0, "b_interp": 0.0}
    count = 0
    for i in range(n):
        img = x[i, :H, :W]
        n_keep = max(1, int(round(gh * gw * (1 - mask_ratio))))
        visible = np.zeros(gh * gw, bool)
        visible[rng.choice(gh * gw, n_keep, replace=False)] = True
        vis_px = visible[pid]
        pts = np.stack([yy[vis_px], xx[vis_px]], 1)
        q = np.stack([yy[~vis_px], xx[~vis_px]], 1)
        pred = img.copy()
        if method == "gaussian":  # Gaussian-weighted average of the visible pixels
            w = ndimage.gaussian_filter(vis_px.astype(np.float64), sigma, mode="constant")
            pred[~vis_px] = (ndimage.gaussian_filter(np.where(vis_px, img, 0.0), sigma, mode="constant") / w)[~vis_px]
        else:
            lin = interpolate.griddata(pts, img[vis_px], q, method=method)
            near = interpolate.griddata(pts, img[vis_px], q, method="nearest")
            pred[~vis_px] = np.where(np.isfinite(lin), lin, near)
        t, pr = _patchify(img, patch)[~visible], _patchify(pred, patch)[~visible]
        sums["a_zero"] += float(np.sum(t**2))
        sums["a_interp"] += float(np.sum((t - pr) ** 2))
        tn = _norm_patches(t)
        sums["b_zero"] += float(np.sum(tn**2))
        sums["b_interp"] += float(np.sum((tn - _norm_patches(pr)) ** 2))
        count += t.size
    return {k: v / count for k, v in sums.items()}


def image_only_run(campaign: Path, workdir: Path) -> dict[str, float]:
    """The seed-style image_only model (1-D MAE over the middle column, LOFO) through
    ``cbh train``; returns its and climatology's mean-of-fold MAE, as the seed reported it, and
    pooled MAE (minutes on a CPU)."""
    from cbhlib.config import load_config
    from cbhlib.training.runner import run_mode

    cfg = load_config(
        ROOT / "params" / "seed_style.yaml",
        overrides={
            "campaign": str(campaign),
            "run_dir": str(workdir / "run"),
            "train.mode": "image_only",
            "protocols": ["lofo"],
            "seeds": [0],
            "progress": False,
            "pretrain.missing": "pretrain",
            "pretrain.unlabelled": False,
        },
    )
    report = run_mode(cfg).reports["lofo"]
    return {
        "image_only": report["aggregate_metrics"]["mean_mae_km"],
        "climatology": report["climatology"]["mean_mae_km"],
        "image_only_pooled": report["aggregate_metrics"]["pooled_mae_km"],
        "climatology_pooled": report["climatology"]["pooled_mae_km"],
    }


def _row(quantity: str, target: str, measured: float, lo: float | None = None, hi: float | None = None) -> dict:
    ok = None if lo is None and hi is None else bool((lo is None or measured >= lo) and (hi is None or measured <= hi))
    return {"quantity": quantity, "target": target, "measured": float(measured), "ok": ok}


def calibration_table(
    cfg: synth.SynthConfig, workdir: Path, image_only: bool = False, n_images: int = 300
) -> tuple[list[dict], dict[str, float]]:
    """Generate the campaign into ``workdir`` and measure every calibration quantity."""
    timings = {}
    t0 = time.perf_counter()
    path = synth.generate(cfg, workdir / "campaign.h5", overwrite=True)  # the scratch file of an earlier --workdir run
    timings["generate_s"] = time.perf_counter() - t0
    camp = Campaign(path)
    rows = []
    g = gbdt_scores(camp)
    # like with like: the real 0.491 km is the mean of the five folds' MAE (as its R2 is the mean of fold R2)
    rows.append(_row("gbdt LOFO mean-of-fold MAE (km)", "0.40-0.60 (real 0.491)", g["lofo_mean_mae_km"], 0.40, 0.60))
    rows.append(_row("gbdt LOFO pooled MAE (km)", "(no real counterpart)", g["lofo_pooled_mae_km"]))
    rows.append(_row("gbdt LOFO mean-of-fold R2", "< 0 (real -14.15)", g["lofo_mean_r2"], None, 0.0))
    rows.append(_row("gbdt random 5-fold mean R2", "0.55-0.80 (real 0.676)", g["random_mean_r2"], 0.55, 0.80))
    rows.append(_row("gbdt random 5-fold pooled R2", "0.55-0.80", g["random_pooled_r2"], 0.55, 0.80))
    era5 = camp.features["era5"]
    for name, (mean, std) in ERA5_OBSERVED.items():
        v = era5.values[:, era5.names.index(name)].astype(np.float64)
        rows.append(_row(f"{name} mean", f"{mean:g} +- 25%", v.mean(), *sorted((0.75 * mean, 1.25 * mean))))
        rows.append(_row(f"{name} std", f"{std:g} +- 25%", v.std(), 0.75 * std, 1.25 * std))
    mg = era5.values[:, era5.names.index("moisture_gradient")]
    rows.append(_row("moisture_gradient mean (g/kg/km)", "plausible (< 0)", mg.mean(), -12.0, 0.0))
    geom = camp.features["geometric"]
    h = geom.values[:, geom.names.index("derived_geometric_H")]
    rows.append(_row("shadow height NaN fraction", "~0.13 (120 of 933)", np.isnan(h).mean(), 0.09, 0.18))
    ok = np.isfinite(h)
    rows.append(
        _row(
            "shadow height |r| with CBH", "< 0.9, well below", abs(np.corrcoef(h[ok], camp.cbh_km[ok])[0, 1]), None, 0.6
        )
    )
    rows.append(_row("CBH lag-1 autocorrelation", "~0.89", pooled_lag1(camp), 0.8, 0.97))
    if camp.has_images:
        idx = np.linspace(0, camp.n_samples - 1, min(n_images, camp.n_samples)).astype(int)
        images = camp.images(idx)
        for lag, v in pixel_autocorrelation(images).items():
            rows.append(
                _row(
                    f"pixel autocorrelation at {lag} px",
                    "old 0.24 at 8, 0.04 at 12",
                    v,
                    *((0.5, None) if lag == 8 else (None, None)),
                )
            )
        if min(camp.image_shape[1:]) >= 16:
            floors = masked_patch_floors(images)
            rows.append(_row("floor (a) image-centred: predict zero", "~1.0", floors["a_zero"]))
            rows.append(_row("floor (a) image-centred: interpolation", "<= 0.5", floors["a_interp"], None, 0.5))
            rows.append(_row("floor (b) norm_pix: predict zero", "1.0", floors["b_zero"]))
            rows.append(_row("floor (b) norm_pix: interpolation", "<= 0.75 (aim)", floors["b_interp"], None, 0.75))
        if camp.n_unlabelled:
            rows.append(
                _row(
                    "unlabelled frames per labelled sample",
                    f"{cfg.unlabelled_factor:g}",
                    camp.n_unlabelled / camp.n_samples,
                )
            )
    if image_only:
        t0 = time.perf_counter()
        res = image_only_run(path, workdir)
        timings["image_only_s"] = time.perf_counter() - t0
        rows.append(
            _row(
                "seed-style image_only LOFO mean-of-fold MAE (km)",
                "0.25-0.40 (seed 0.322 mean of folds)",
                res["image_only"],
                0.25,
                0.40,
            )
        )
        rows.append(_row("climatology LOFO mean-of-fold MAE (km)", "reference", res["climatology"]))
        rows.append(_row("seed-style image_only LOFO pooled MAE (km)", "for information", res["image_only_pooled"]))
        rows.append(_row("climatology LOFO pooled MAE (km)", "for information", res["climatology_pooled"]))
    return rows, timings


def print_table(rows: list[dict]) -> None:
    w = max(len(r["quantity"]) for r in rows)
    t = max(len(r["target"]) for r in rows)
    print(f"{'quantity':<{w}} | {'target':<{t}} | {'measured':>10} | ok")
    print(f"{'-' * w}-|-{'-' * t}-|-{'-' * 10}-|---")
    for r in rows:
        ok = "" if r["ok"] is None else ("yes" if r["ok"] else "NO")
        print(f"{r['quantity']:<{w}} | {r['target']:<{t}} | {r['measured']:>10.4g} | {ok}")


def main(argv: list[str] | None = None) -> int:
    import yaml

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="default")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a SynthConfig field")
    p.add_argument("--image-only", action="store_true", help="also run the seed-style image_only model (minutes)")
    p.add_argument("--json", metavar="OUT", help="write the table as JSON")
    p.add_argument("--workdir", help="keep the campaign and runs here (default: a temporary folder)")
    a = p.parse_args(argv)
    overrides = {k.strip(): yaml.safe_load(v) for k, v in (item.split("=", 1) for item in a.set)}
    cfg = synth.preset(a.preset, **overrides)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(a.workdir or tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        rows, timings = calibration_table(cfg, workdir, image_only=a.image_only)
    print(f"preset {a.preset} {overrides or ''}: generated in {timings['generate_s']:.1f} s")
    print_table(rows)
    if a.json:
        Path(a.json).write_text(
            json.dumps({"preset": a.preset, "overrides": overrides, "timings": timings, "rows": rows}, indent=2)
        )
    return 0 if all(r["ok"] is not False for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
