"""Sentences about the prediction intervals of a comparison, generated from
:func:`cbhlib.evaluation.intervals.interval_summary` (no number in them is typed)."""

from __future__ import annotations

import pandas as pd

from cbhlib.evaluation.intervals import LATER_HALF_BAND, METHODS


def interval_findings(conf: pd.DataFrame) -> list[str]:
    """Sentences about the intervals (:func:`cbhlib.evaluation.intervals.interval_summary`): the
    earlier method's worst flight, and each other method's worst-flight coverage and width."""
    out = []
    nominal = float(conf["nominal"].iloc[0])
    for method, text in METHODS.items():
        d = conf[conf["method"] == method]
        if d.empty:
            continue
        w = d.sort_values("worst_coverage").iloc[0]
        rel = d["width_vs_validation"].dropna()
        width = f"mean width {d['mean_width_m'].min():.0f}-{d['mean_width_m'].max():.0f} m" + (
            f", {rel.min():.1f}-{rel.max():.1f}x the validation-residual width" if method != "validation" and len(rel)
            else ""
        )  # fmt: skip
        line = (
            f"{nominal:.0%} intervals, {text}: worst-flight coverage {d['worst_coverage'].min():.0%} to "
            f"{d['worst_coverage'].max():.0%} across {len(d)} models "
            f"(lowest: {w['model']} on {w['worst_flight']}{_n(w)}); {width}"
        )
        if method.startswith("aci"):
            share, chance = float(d["later_half_in_band"].mean()), float(d["in_band_chance"].median())
            band = LATER_HALF_BAND + 1e-9
            held = int(((d["worst_later_half"] >= nominal - band) & (d["best_later_half"] <= nominal + band)).sum())
            if "gamma_min" in d and d["gamma_min"].notna().any():
                lo, hi = d["gamma_min"].min(), d["gamma_max"].max()
                line += f"; ACI step {lo:.3g}" + (f" to {hi:.3g}" if hi > lo else "") + (
                    ", chosen per fold by replaying the training flights on the later-half criterion below"
                    if method == "aci_centred" else ""
                )  # fmt: skip
            if "widest_share" in d and d["widest_share"].notna().any():
                line += (
                    f"; the widest interval its scores allow (ACI's level at or below 0 after misses) on "
                    f"{d['widest_share'].mean():.0%} of scored samples"
                )
            pts = f"{LATER_HALF_BAND * 100:.0f} points of nominal"
            line += (
                f"; later-half coverage averaged over seeds {d['worst_later_half'].min():.0%} to "
                f"{d['best_later_half'].max():.0%} across models and flights, within {pts} on every flight for "
                f"{held} of {len(d)} models{_out_of_band(d)}; in single runs (model x seed; a deterministic baseline "
                f"repeats over seeds) every flight's later half within {pts} in {share:.0%}, against {chance:.0%} "
                f"expected of an interval that covers each sample independently "
                f"with probability {nominal:.0%} on flights of these sizes"
                + (": below that bar" if share < chance else "")
                + " (ACI's feedback steadies coverage, so that bar is lenient for ACI)"
            )
        out.append(line + ".")
    return out


def _out_of_band(d: pd.DataFrame, most: int = 4) -> str:
    """ " (out of the band on seed means: the farthest models first ...; where at most one covered count
    of the later half lies in the band: ...)" for one method's rows."""
    off = d[d.get("later_half_out", pd.Series("", index=d.index)).fillna("").ne("")]
    dev = pd.concat([d["nominal"] - off["worst_later_half"], off["best_later_half"] - d["nominal"]], axis=1).max(axis=1)
    off = off.loc[dev.reindex(off.index).sort_values(ascending=False, kind="stable").index]  # the farthest first
    parts = [f"{m} {o}" for m, o in zip(off["model"], off["later_half_out"], strict=True)]
    text = "; ".join(parts[:most]) + (f"; {len(parts) - most} more models" if len(parts) > most else "")
    narrow = str(d["narrow_band"].iloc[0]) if "narrow_band" in d and d["narrow_band"].notna().any() else ""
    notes = ([f"out of the band on seed means: {text}"] if parts else []) + (
        [f"where at most one covered count of the later half lies in the band: {narrow}"] if narrow else []
    )
    return f" ({'; '.join(notes)})" if notes else ""


def _n(row: pd.Series) -> str:
    """``, n 24``: the worst flight's scored samples (absent from summaries written before it was kept)."""
    n = row.get("worst_n")
    return "" if n is None or pd.isna(n) else f", n {int(n)}"
