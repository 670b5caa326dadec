"""Figures say what they show: draws kept apart, cut values annotated, one model order,
distinguishable baselines, captions and index order that match the figures."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.colors as mcolors
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from cbhlib import plots
from cbhlib.plots import style
from cbhlib.plots.train import huber

FLIGHTS = ["F0", "F1", "F2"]


@pytest.fixture(autouse=True)
def _close_figures() -> None:
    yield
    plt.close("all")


def _texts(fig: plt.Figure) -> list[str]:
    return [t.get_text() for ax in fig.axes for t in ax.texts] + [t.get_text() for t in fig.texts]


def _pred(models: dict[str, bool], n: int = 20, seeds: int = 3) -> pd.DataFrame:
    """Tidy LOFO predictions; models -> whether its seeds differ."""
    rng = np.random.default_rng(0)
    rows = []
    for m, differ in models.items():
        for k, fl in enumerate(FLIGHTS):
            truth = rng.uniform(0.2, 1.5, n)
            base = truth + rng.normal(0, 0.3, n) - 0.4
            for s in range(seeds):
                p = base + (rng.normal(0, 0.1, n) if differ else 0)
                rows += [
                    {
                        "model": m,
                        "protocol": "lofo",
                        "seed": s,
                        "fold": k,
                        "flight": fl,
                        "sample": k * n + i,
                        "truth_km": truth[i],
                        "pred_km": p[i],
                    }
                    for i in range(n)
                ]
    return pd.DataFrame(rows)


def test_model_order_matches_the_tables() -> None:
    from cbhlib.evaluation.results import BASELINE_ORDER, MODEL_ORDER

    assert style.MODEL_ORDER == BASELINE_ORDER + MODEL_ORDER
    assert style.order_models(["attention", "gbdt", "climatology", "concat_finetuned", "concat"]) == [
        "climatology",
        "gbdt",
        "concat",
        "concat_finetuned",
        "attention",
    ]


def test_baselines_are_told_apart_and_flights_avoid_model_colours() -> None:
    assert len({style.model_marker(b) for b in style.BASELINES}) == len(style.BASELINES)
    assert len({style.model_hatch(b) for b in style.BASELINES}) == len(style.BASELINES)
    model_rgb = {mcolors.to_hex(c) for c in style.MODEL_COLORS.values()} | {style.OTHER_MODEL_COLOR}
    flights = [mcolors.to_hex(style.flight_color(k)) for k in range(len(style.FLIGHT_PALETTE))]
    assert not set(flights) & model_rgb and len(set(flights)) == len(flights)


def test_coverage_has_a_panel_per_method_rings_the_worst_flight_and_marks_the_flight_level_bound() -> None:
    rows = []
    for m in ("concat", "climatology"):
        for j, fl in enumerate(FLIGHTS):
            for method, cov in (("validation", 0.3 + 0.1 * j), ("flight", 0.6 + 0.05 * j), ("aci", 0.9)):
                rows.append({"model": m, "seed": 0, "flight": fl, "method": method, "coverage": cov, "n_scored": 100})
    fig = plots.coverage_dots(pd.DataFrame(rows), 0.9, flight_level=0.8)
    titles = [ax.get_title() for ax in fig.axes[:3]]
    assert "validation" in titles[0] and "flight-aware" in titles[1] and "ACI" in titles[2]  # short panel titles
    flight_panel = fig.axes[1]
    rings = [c for c in flight_panel.collections if c.get_sizes()[0] > 100]  # the worst flight of each model
    assert rings and set(np.round(rings[0].get_offsets()[:, 0], 3)) == {0.6}
    assert set(np.round(rings[0].get_offsets()[:, 1], 3)) == {-0.12, 0.88}  # on F0's markers (first of 3, 0.12 up)
    assert flight_panel.get_xlim()[0] < 0 and flight_panel.get_xlim()[1] > 1
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["climatology", "concat"]
    assert any(ln.get_xdata()[0] == 0.8 and ln.get_linestyle() == ":" for ln in flight_panel.get_lines())
    legends = [c for ax in fig.axes for c in ax.get_children() if isinstance(c, matplotlib.legend.Legend)]
    legend_text = " ".join(t.get_text() for leg in legends for t in leg.get_texts())
    assert "worst flight" in legend_text and "(F-1)/F = 80%" in legend_text and "n = 100" in legend_text


def test_protocol_inflation_annotates_cut_bars_and_missing_protocols() -> None:
    head = pd.DataFrame(
        [
            {"model": "lcl", "protocol": "lofo", "r2_pooled": -8.2, "r2_pooled_sd": 0.0},
            {"model": "lcl", "protocol": "random", "r2_pooled": 0.5, "r2_pooled_sd": 0.0},
            {"model": "concat", "protocol": "lofo", "r2_pooled": -1.9, "r2_pooled_sd": 0.5},
        ]
    )
    fig = plots.protocol_inflation(head)
    texts = _texts(fig)
    assert "-8.2" in texts and "-1.9" in texts and "not run" in texts
    ax = fig.axes[0]
    assert ax.get_ylim()[0] < -1
    # no error bar from a cut value: the only error bars are of bars that are not cut (none here)
    assert not [c for c in ax.containers if isinstance(c, matplotlib.container.ErrorbarContainer)]


def _per_flight(models: dict[str, float]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"model": m, "protocol": "lofo", "flight": fl, "n": 20, "mae_m": 300.0, "mae_m_sd": 10.0, "r2": r2,
             "r2_sd": 0.2, "bias_m": 0.0}
            for m, r2 in models.items()
            for fl in FLIGHTS
        ]
    )  # fmt: skip


def test_per_flight_bars_annotate_cut_r2_and_name_the_ceiling() -> None:
    fig = plots.per_flight_bars(
        _per_flight({"climatology": -0.1, "concat": -25.0}), "lofo", {fl: 0.9 for fl in FLIGHTS}
    )
    cut = [t for t in _texts(fig) if "-25" in t]
    assert cut == ["-25, -25, -25, mean -25"]  # one label per row: a value per flight, the mean
    ticks = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert ticks == ["best achievable R2", "baselines", "climatology", "models", "concat"]
    labels = [t.get_text() for t in fig.axes[1].get_legend().get_texts()]
    assert any("best achievable" in t for t in labels) and labels[0] == "F0 (n = 20)"
    assert "((" not in fig.axes[1].get_title() and "))" not in fig.axes[1].get_title()


def test_per_flight_figure_stays_readable_with_every_model_of_a_run() -> None:
    """22 models (plain, _fn variants, baselines): one row each in four labelled blocks, no bars."""
    from cbhlib.plots.style import BASELINES, MODES

    models = [*BASELINES, *(f"{m}_fn" for m in ("gbdt", "ridge", "image_stats_gbdt", "gbdt_all", "ridge_all")), *MODES]
    models += [f"{m}_fn" for m in MODES]
    assert len(models) == 22
    fig = plots.per_flight_bars(_per_flight(dict.fromkeys(models, 0.2)), "lofo")
    ticks = fig.axes[0].get_yticklabels()
    names = [t.get_text() for t in ticks]
    assert sorted(n for n in names if n in models) == sorted(models) and len(names) == 22 + 4
    assert names.index("flight-normalised baselines (_fn)") < names.index("gbdt_fn") < names.index("models")
    assert names.index("concat") < names.index("flight-normalised models (_fn)") < names.index("concat_fn")
    italic = {t.get_text() for t in ticks if t.get_style() == "italic"}
    assert italic == {m for m in models if style.is_baseline(m)}  # baselines told apart from the models
    assert not [c for ax in fig.axes for c in ax.containers if isinstance(c, matplotlib.container.BarContainer)]
    for ax in fig.axes:  # a marker per model and flight, none off the axes
        lo, hi = sorted(ax.get_ylim())
        for coll in ax.collections:
            y = coll.get_offsets()[:, 1]
            assert ((y >= lo) & (y <= hi)).all()


def test_pred_vs_true_shows_negative_predictions_and_counts_samples_not_seeds() -> None:
    pred = _pred({"concat": True, "gbdt": False})
    fig = plots.pred_vs_true(pred[pred["model"] == "concat"], "concat")
    assert fig.axes[0].get_ylim()[0] <= pred.loc[pred["model"] == "concat", "pred_km"].min()
    assert any("n = 20 (×3 seeds)" in t for t in _texts(fig))
    fig = plots.pred_vs_true(pred[pred["model"] == "gbdt"], "gbdt")
    first = [t for t in fig.axes[0].texts if t.get_text().startswith("n =")][0].get_text()
    assert first.startswith("n = 20\n")  # identical seeds drawn and counted once
    assert sum(len(c.get_offsets()) for c in fig.axes[0].collections) == 20
    rows = fig.axes[0].get_subplotspec().get_gridspec().nrows
    assert rows == 2  # a grid, not a strip


def test_best_pred_vs_true_draws_one_row_per_model() -> None:
    pred = _pred({"climatology": False, "gbdt": False})
    fig = plots.best_pred_vs_true(pred, [("climatology", "climatology: lowest"), ("gbdt", "gbdt: best other")])
    assert len(fig.axes) == 2 * (len(FLIGHTS) + 1)


def test_fold_bars_leave_room_under_the_floor() -> None:
    rows = [
        {
            "model": m,
            "protocol": "lofo",
            "flight": fl,
            "n": 20,
            "mae_m": 300.0,
            "mae_m_sd": 0.0 if m == "climatology" else 5.0,
            "r2": -37.2 if fl == "F2" else -2.98,
            "r2_sd": 0.0,
            "bias_m": 0.0,
        }
        for m in ("random_init", "climatology")
        for fl in FLIGHTS
    ]
    fig = plots.fold_bars(pd.DataFrame(rows), "random_init")
    assert fig.axes[1].get_ylim()[0] < -3
    assert _texts(fig).count("-37.2") == 2


def test_loss_curves_draw_train_black_dashed_and_the_mean_predictor() -> None:
    log = pd.DataFrame(
        [
            {
                "model": "random_init",
                "protocol": "lofo",
                "fold": f,
                "test_flight": FLIGHTS[f],
                "seed": 0,
                "epoch": e,
                "train_loss": 0.3 / e,
                "val_loss": 0.3 + 0.01 * e,
            }
            for f in range(3)
            for e in range(1, 6)
        ]
    )
    fig = plots.loss_curves(log, "random_init", reference={0: 0.5, 1: 0.6, 2: 0.7})
    lines = fig.axes[0].get_lines()
    assert lines[0].get_color() == "k" and lines[0].get_linestyle() == "--"
    assert any(np.allclose(ln.get_ydata(), 0.5) for ln in lines)
    assert "e-" not in " ".join(t.get_text() for t in fig.axes[0].get_yticklabels(minor=False))


def test_mean_predictor_loss_is_the_huber_of_the_training_mean() -> None:
    class Fold:
        fold_id, train_idx, val_idx = 0, np.array([0, 1, 2, 3]), np.array([4, 5])

    y = np.array([0.5, 0.7, 0.9, 1.1, 0.2, 2.0])
    tr = y[:4]
    z = (y[4:] - tr.mean()) / tr.std()
    got = plots.mean_predictor_loss(y, [Fold()], 0.3)
    assert got[0] == pytest.approx(huber(z, 0.3 / tr.std()).mean())


def test_few_shot_draws_the_headline_draw_only() -> None:
    rows = [
        {
            "model": m,
            "draw": d,
            "method": meth,
            "k": k,
            "mae_m": 300.0 - k + (50 if d == "random" else 0),
            "mae_m_sd": 5.0,
            "r2": -60.0,
            "r2_sd": 1.0,
            "n_seeds": 3,
        }
        for m in ("climatology", "gbdt", "concat", "concat_fn")
        for d in ("first", "random")
        for meth in ("offset", "linear")
        for k in (0, 5, 10)
    ]
    fig = plots.few_shot_plot(pd.DataFrame(rows), "first")
    assert len(fig.axes) == 4  # methods x (baselines, fusion modes)
    baselines = fig.axes[0]
    assert len(baselines.get_lines()) == 2 + 1  # two baselines, one faint reference of the other draw
    lines = {ln.get_label(): ln for ln in fig.axes[1].get_lines()}  # a model and its flight-normalised variant
    plain, fn = (lines[style.label(name)] for name in ("concat", "concat_fn"))
    assert plain.get_color() == fn.get_color()  # one colour per model ...
    assert (plain.get_linestyle(), fn.get_linestyle()) == ("-", "--")  # ... told apart by the line and the fill
    assert plain.get_markerfacecolor() != fn.get_markerfacecolor()


def _verdict(model: str, ref: str, pooled: tuple[float, float, float], flight: tuple[float, float, float]) -> dict:
    from cbhlib.evaluation.verdicts import combine

    sign = lambda t: -1 if t[2] < 0 else (1 if t[1] > 0 else 0)
    status, verdict = combine(sign(pooled), sign(flight), model, ref)
    return {
        "model": model, "reference": ref, "block": 20, "status": status, "verdict": verdict,
        "pooled_diff_m": pooled[0], "pooled_lo_m": pooled[1], "pooled_hi_m": pooled[2],
        "flight_diff_m": flight[0], "flight_lo_m": flight[1], "flight_hi_m": flight[2],
        "holds_at_2x_block": True, "flights_better": 1, "n_flights": 5, "sign_flip_p": 0.31,
        "sign_flip_p_min": 0.0625, "n_samples": 933, "n_seeds": 3,
    }  # fmt: skip


def test_differences_show_both_metrics_and_take_the_winners_colour() -> None:
    comp = pd.DataFrame(
        [
            _verdict("physical_only", "gbdt_all", (140.0, 80.0, 220.0), (90.0, 40.0, 150.0)),
            _verdict("concat", "physical_only", (-40.0, -90.0, 5.0), (-30.0, -60.0, -5.0)),
            _verdict("attention", "physical_only", (100.0, 50.0, 600.0), (20.0, -10.0, 50.0)),  # a long whisker
        ]
    )
    fig = plots.differences(comp, reps=1000)
    pooled, flight = fig.axes[0], fig.axes[1]
    assert "pooled" in pooled.get_title() and "per-flight" in flight.get_title()
    marker_lines = [ln for ln in pooled.get_lines() if ln.get_marker() not in ("None", "", None, "|", "_")]
    assert mcolors.to_hex(marker_lines[0].get_color()) == style.model_color("gbdt_all")
    assert marker_lines[1].get_markerfacecolor() == "white"  # pooled includes 0: hollow
    flight_lines = [ln for ln in flight.get_lines() if ln.get_marker() not in ("None", "", None, "|", "_")]
    assert flight_lines[1].get_markerfacecolor() != "white"  # per-flight excludes 0: filled
    text = " ".join(_texts(fig))
    assert "gbdt_all beats physical_only" in text and "one metric" in text  # no ranking from one metric
    assert "+600" in text and "[+50, +600]" not in text  # a whisker cut at the axis shows its end's value
    assert "first better on 1/5 flights" in text  # whose flights the count is
    assert "bootstrap" in fig._suptitle.get_text()


def test_differences_keep_a_far_winner_on_the_axis() -> None:
    """On a campaign with small errors the best models sat beyond the axis, drawn as edge arrows only:
    every point estimate where the first model is better is on the axis; a far worse row is an arrow."""
    rows = [_verdict(f"m{i}", "climatology", (5.0 + i, -10.0, 20.0), (3.0, -12.0, 18.0)) for i in range(8)]
    rows.append(_verdict("ridge", "climatology", (-60.0, -70.0, -50.0), (-55.0, -66.0, -44.0)))
    rows.append(_verdict("lcl", "climatology", (630.0, 520.0, 730.0), (450.0, 380.0, 530.0)))  # far, and worse
    fig = plots.differences(pd.DataFrame(rows), reps=1000)
    for ax in fig.axes[:2]:
        lo, hi = ax.get_xlim()
        marked = [ln for ln in ax.get_lines() if ln.get_marker() not in ("None", "", None, "|", "_")]
        assert len(marked) == 9 and all(lo < ln.get_xdata()[0] < hi for ln in marked)
        assert mcolors.to_hex(marked[-1].get_color()) == style.model_color("ridge")
        assert hi < 200  # the far worse row does not squash the others: an arrow with its values
    assert "+630 [+520, +730]" in " ".join(_texts(fig))


def test_every_pipeline_figure_has_its_own_caption_and_pipeline_order() -> None:
    names = [
        "compare_pca",
        "train_concat_loss",
        "explore_ks_heatmap",
        "pretrain_loss",
        "train_physical_only_fold_bars",
        "train_physical_only_loss",
        "explore_cbh_per_flight",
        "compare_protocol_inflation",
        "zz_other",
    ]
    steps = ["explore", "pretrain", "physical_only", "concat", "compare"]
    ordered = sorted(names, key=lambda n: style.figure_rank(n, steps))
    assert ordered == [
        "explore_cbh_per_flight",
        "explore_ks_heatmap",
        "pretrain_loss",
        "train_physical_only_loss",
        "train_physical_only_fold_bars",
        "train_concat_loss",
        "compare_protocol_inflation",
        "compare_pca",
        "zz_other",
    ]
    for name in style.FIGURE_ORDER:
        if name != "train_":
            assert style.caption(name) != name.replace("_", " ")
    assert "held-in training flights" in style.caption("train_concat_loss")
    assert "bootstrap" in style.caption("compare_differences")


def test_units_are_typeset() -> None:
    assert style.display("g/x", np.ones(2), "1")[1] == "dimensionless"
    assert style.display("era5/tcwv", np.ones(2), "kg/m2")[1] == "kg m⁻²"
    values, unit = style.display("era5/sp", np.array([100000.0]), "Pa")
    assert unit == "hPa" and values[0] == pytest.approx(1000.0)


def test_explore_figures_on_a_small_campaign(small_file: Path, tmp_path: Path) -> None:
    from cbhlib.data.campaign import Campaign
    from cbhlib.evaluation import explore

    camp = Campaign(small_file)
    plots.cbh_distributions(camp, save_to=tmp_path / "a.png")
    plots.feature_distributions(camp, save_to=tmp_path / "b.png")
    fig = plots.cbh_along_track(camp, save_to=tmp_path / "c.png")
    assert "lag-1 autocorrelation" in fig.axes[0].get_title(loc="left")
    mats = {"CBH": explore.ks_matrix(camp.cbh_km, camp.flight, camp.n_flights)}
    fig = plots.ks_heatmaps(mats, camp.flight_names, save_to=tmp_path / "d.png", n=np.bincount(camp.flight))
    assert "n=" in fig.axes[0].get_yticklabels()[0].get_text()
    plots.feature_correlation_bars(explore.feature_correlations(camp), save_to=tmp_path / "e.png")
    assert all((tmp_path / f"{c}.png").stat().st_size > 0 for c in "abcde")


def test_sweep_lines_show_every_r2_on_a_symlog_axis_without_cut_arrows() -> None:
    t = pd.DataFrame(
        {
            "model": ["gbdt", "gbdt", "physical_only", "physical_only"],
            "shift_strength": [0, 1, 0, 1],
            "pooled_mae_m": [300.0, 350, 280, 300],
            "pooled_mae_m_sd": [0.0, 0, 5, 9],
            "r2_folds": [-0.5, -42.3, -9.8, -0.2],
            "r2_folds_sd": [0.0, 0, 0.4, 0.1],
        }
    )
    fig = plots.sweep_lines(t)
    ax = fig.axes[1]
    assert ax.get_yscale() == "symlog" and ax.get_ylim()[0] < -42.3 and ax.get_ylim()[1] == 1
    assert not _texts(fig) and "cut" not in ax.get_title()  # no arrows, no values written in
    drawn = np.concatenate([np.asarray(c.lines[0].get_ydata(), float) for c in ax.containers])
    assert {-42.3, -9.8} <= set(np.round(drawn, 1))


def test_image_colour_bars_name_kelvin_only_where_the_file_is_known_to_hold_it(tiny_campaign: Path) -> None:
    """A user's float32 images without units were labelled 'brightness temperature (K)'."""
    from cbhlib.data.campaign import Campaign

    def bars(camp: Campaign) -> str:
        return " ".join(ax.get_ylabel() for ax in plots.example_images(camp, per_flight=1).axes)

    camp = Campaign(tiny_campaign)
    assert "brightness temperature (K)" in bars(camp)
    camp.source = "dataframe"
    assert "pixel value (units not recorded)" in bars(camp) and "brightness temperature" not in bars(camp)
