"""Figures fit for a paper or a talk (issue 22 item 8): resolution and vector files from the
settings, no figure drawn when it has nothing to show (and index.html says why), attention
without lines across unrelated variables, the track map and the along-track figure, and the
README's figures copied from the run it reports."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cbhlib import plots
from cbhlib.plots import files
from cbhlib.store.rundir import RunDir

FLIGHTS = ["F0", "F1", "F2"]


@pytest.fixture(autouse=True)
def _defaults() -> None:
    yield
    files.configure()
    plt.close("all")


def test_figures_are_written_at_the_set_resolution_and_in_the_set_vector_formats(tmp_path: Path) -> None:
    fig, ax = plt.subplots(figsize=(2, 1))
    ax.plot([0, 1], [0, 1])
    files.configure(dpi=200, formats=["pdf", "svg"])
    files.save(fig, tmp_path / "a.png")
    assert Image.open(tmp_path / "a.png").size[0] > 300  # 2 in at 200 dpi (tight bbox)
    assert (tmp_path / "a.pdf").read_bytes().startswith(b"%PDF") and "<svg" in (tmp_path / "a.svg").read_text()
    svg = (tmp_path / "a.svg").read_bytes()
    files.save(fig, tmp_path / "a.png")
    assert (tmp_path / "a.svg").read_bytes() == svg  # no date: the same figure gives the same file
    files.configure(dpi=100)
    files.save(fig, tmp_path / "a.png")
    assert not (tmp_path / "a.pdf").exists() and not (tmp_path / "a.svg").exists()  # no stale copies
    assert Image.open(tmp_path / "a.png").size[0] < 300
    with pytest.raises(ValueError, match="eps"):
        files.configure(formats=["eps"])


def test_the_notebook_setup_applies_the_figure_settings(small_file: Path, tmp_path: Path) -> None:
    from cbhlib.pipeline.notebook import setup

    ns = {"campaign": str(small_file), "run_dir": str(tmp_path / "run"), "figures_dpi": 300, "figures_formats": ["svg"]}
    cfg, _, _ = setup(ns, "explore")
    assert cfg.figures.dpi == 300 and files.SETTINGS == {"dpi": 300, "formats": ("svg",)}


def _log(epochs: int) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"model": "concat", "protocol": "lofo", "fold": f, "test_flight": FLIGHTS[f], "seed": 0, "epoch": e,
             "train_loss": 0.3 / e, "val_loss": 0.3 + 0.01 * e}
            for f in range(3)
            for e in range(1, epochs + 1)
        ]
    )  # fmt: skip


def test_a_figure_with_nothing_to_show_is_not_drawn_and_says_why(small_file: Path, tmp_path: Path) -> None:
    from cbhlib.data.campaign import Campaign

    out = tmp_path / "figures"
    plots.loss_curves(_log(3), "concat", save_to=out / "train_concat_loss.png")
    assert (out / "train_concat_loss.png").exists()
    assert plots.loss_curves(_log(1), "concat", save_to=out / "train_concat_loss.png") is None
    assert not (out / "train_concat_loss.png").exists()  # the earlier drawing goes
    assert "one epoch" in files.notes(out)["train_concat_loss"]
    assert plots.shadow_vs_lidar(Campaign(small_file), save_to=out / "explore_shadow_vs_lidar.png") is None
    assert "no shadow-derived height" in files.notes(out)["explore_shadow_vs_lidar"]
    plots.loss_curves(_log(2), "concat", save_to=out / "train_concat_loss.png")
    assert "train_concat_loss" not in files.notes(out)  # drawn again: the note goes


def test_index_lists_vector_copies_and_why_figures_were_not_drawn(tmp_path: Path) -> None:
    from cbhlib.pipeline.summary import _figures_html

    run = RunDir(tmp_path / "run")
    fig, _ = plt.subplots()
    files.configure(formats=["svg"])
    files.save(fig, run.figure("compare_pca"))
    files.not_drawn(run.figure("explore_shadow_vs_lidar"), "this campaign has no <shadow> height")
    page = "\n".join(_figures_html(run, ["explore", "compare"]))
    assert "href='figures/compare_pca.svg'>SVG</a>" in page
    assert "Figures not drawn" in page and "explore_shadow_vs_lidar" in page
    assert "this campaign has no &lt;shadow&gt; height" in page


def test_attention_weights_are_not_joined_across_variables() -> None:
    att = np.random.default_rng(0).dirichlet(np.ones(7), size=3)
    fig = plots.attention_weights(att, [f"v{i}" for i in range(3)] + [f"r{i}" for i in range(4)], 3, (2, 2), FLIGHTS)
    ax = fig.axes[0]
    per_flight = [ln for ln in ax.get_lines() if len(ln.get_xdata()) == 3]
    assert len(per_flight) == 3 and all(ln.get_linestyle() == "None" for ln in per_flight)
    assert len(ax.patches) == 3  # the mean over flights per variable


def _track(models: tuple[str, ...] = ("concat", "climatology"), positions: bool = True) -> pd.DataFrame:
    rows = []
    for m in models:
        for k, fl in enumerate(FLIGHTS):
            for s in (0, 1):
                for i in range(12):
                    rows.append(
                        {"model": m, "protocol": "lofo", "seed": s, "fold": k, "flight": fl, "sample": 12 * k + i,
                         "time_utc": f"2024-10-0{k + 1}T18:{i:02d}:00Z", "lat": 33 + k + 0.01 * i,
                         "lon": -120 - 0.02 * i, "truth_km": 0.8, "pred_km": 0.8 + 0.1 * i / 12 + 0.01 * s}
                    )  # fmt: skip
    d = pd.DataFrame(rows)
    return d if positions else d.drop(columns=["lat", "lon"])


def test_the_track_map_colours_each_flight_by_the_mean_error(tmp_path: Path) -> None:
    fig = plots.track_error_map(_track(), "concat", save_to=tmp_path / "map.png")
    panels = [ax for ax in fig.axes if ax.get_xlabel() == "longitude (°E)"]
    assert len(panels) == 3 and "F1" in panels[1].get_title()
    colours = panels[0].collections[0].get_array()
    assert np.allclose(np.sort(colours), 1000 * (0.1 * np.arange(12) / 12 + 0.005))  # m, mean over seeds
    assert any("predicted − lidar" in ax.get_ylabel() for ax in fig.axes)  # the colour bar says what it shows
    assert plots.track_error_map(_track(positions=False), "concat", save_to=tmp_path / "none.png") is None
    assert "no latitude and longitude" in files.notes(tmp_path)["none"]


def test_predictions_along_the_track_draw_every_model_asked_for() -> None:
    fig = plots.intervals_along_track(_track(), ["concat", "climatology"])
    labels = [ln.get_label() for ln in fig.axes[0].get_lines()]
    assert labels == ["lidar CBH", "concat prediction", "climatology prediction"]
    assert fig.axes[0].get_lines()[2].get_color() != "#e6e6e6"  # a light baseline darkened to show on white
    assert not fig.axes[0].collections  # no bands asked for
    assert "interval" not in fig._suptitle.get_text()


def test_interval_bands_along_the_track_do_not_blend_and_mark_the_later_half() -> None:
    """The first method is one grey band, the next drawn as coloured edges (centred with its
    shifts), and a dotted line starts the later half the online check scores."""
    hw = {fl: np.full(12, 0.3) for fl in FLIGHTS}
    shift = {fl: np.full(12, 0.05) for fl in FLIGHTS}
    fig = plots.intervals_along_track(_track(), "concat", {"label-free": hw, "online": hw}, {"online": shift})
    ax = fig.axes[0]
    assert len(ax.collections) == 1 and ax.collections[0].get_label() == "label-free"
    edges = [ln for ln in ax.get_lines() if ln.get_color() == "#9467bd"]
    pred = 0.8 + 0.1 * np.arange(12) / 12  # seed 0
    assert len(edges) == 2 and np.allclose(edges[1].get_ydata(), pred + 0.05 + 0.3)
    start = [ln for ln in ax.get_lines() if ln.get_label().startswith("later half")]
    assert len(start) == 1 and start[0].get_xdata()[0] == 6.0  # minute 6 of 12 samples one minute apart


def test_make_readme_copies_the_figures_of_the_run_it_reports(tmp_path: Path) -> None:
    from cbhlib.pipeline.readme import README_FIGURES, update

    run = tmp_path / "runs" / "default"
    (run / "figures").mkdir(parents=True)
    for name in README_FIGURES[:2]:
        (run / "figures" / f"{name}.png").write_bytes(name.encode())
    row = {"model": "gbdt", "protocol": "lofo", "kind": "baseline", "n": 10, "n_seeds": 1, "pooled_mae_m": 300.0}
    (run / "summary.json").write_text(
        json.dumps({"run": "default", "generated": "now", "campaign": "c.h5", "headline": [row]})
    )
    old = tmp_path / "figures" / "readme" / "old_figure.png"
    old.parent.mkdir(parents=True)
    old.write_bytes(b"stale")
    readme = tmp_path / "README.md"
    readme.write_text("# x\n<!-- results:start -->\n<!-- results:end -->\n")
    update(readme, run)
    text = readme.read_text()
    for name in README_FIGURES[:2]:
        assert (tmp_path / "figures" / "readme" / f"{name}.png").read_bytes() == name.encode()
        assert f"(figures/readme/{name}.png)" in text
    assert not old.exists() and README_FIGURES[2] not in text  # only this run's figures
    assert "Intervals across campaigns" not in text  # no other campaign given
    other = tmp_path / "runs" / "seed7"
    other.mkdir(parents=True)
    conformal = [{"model": "gbdt", "method": "flight_t", "worst_coverage": 0.5, "worst_flight": "F1", "nominal": 0.9}]
    for path, seed in ((run, 0), (other, 7)):
        data = json.loads((path / "summary.json").read_text()) if path == run else {"run": "seed7"}
        data |= {"campaign_info": {"source": f"synthetic(seed={seed})"}, "comparison": {"conformal": conformal}}
        (path / "summary.json").write_text(json.dumps(data))
    update(readme, run, campaigns=[other])
    text = readme.read_text()
    assert "| gbdt | 50.0% (F1); online not held | 50.0% (F1); online not held |" in text
    assert text.index("Intervals across campaigns") < text.index("(figures/readme/")  # before the figures
    assert "\n\nIntervals across campaigns" in text and "at least one run: gbdt.\n\n" in text  # its own paragraphs
