"""No script from the data runs in a rendered page (issue 21 item 1): the whole pipeline on a
tiny campaign whose flight names, feature names and source are HTML and Markdown payloads;
no rendered notebook, report, index.html or SVG figure carries them unescaped."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import h5py
import numpy as np
import pytest

from cbhlib.cli import main
from tests.conftest import project_copy

FLIGHTS = {  # tiny's flights -> hostile names (HTML, Markdown link, entity, mathtext)
    "30Oct24": '"><img src=x onerror=alert(5)>',
    "10Feb25": "<script>alert(6)</script>",
    "23Oct24": "[go](javascript:alert(11)) &lt;b&gt;",
}
FEATURES = {  # feature -> hostile name (no '/': a feature name is one path component)
    "blh": "<svg onload=alert(8)>",
    "inversion_height": "<script>alert(7)",
    "moisture_gradient": "[x](javascript:alert(9))",
    "derived_geometric_H": "shadow height",  # a campaign without the shadow feature the figure needs
}
SOURCE = "<img src=y onerror=alert(10)>"
# what must never appear in a page: an element or a link built from the data
LIVE = [
    re.compile(r"<img[^>]*onerror", re.I),
    re.compile(r"<script>alert", re.I),
    re.compile(r"<svg[^>]*onload", re.I),
    re.compile(r"href=[\"']?javascript:", re.I),
    re.compile(r"<b>", re.I),  # an entity in a name is shown as typed, not decoded into a tag
]
FAST = [
    "threads=1",
    "seeds=[0]",
    "protocols=[lofo]",
    "train.epochs=1",  # one epoch: no loss curve is drawn, index.html says why
    "train.patience=1",
    "train.nested=false",
    "pretrain.epochs=1",
    "pretrain.max_frames=64",
    "pretrain.eval_frames=16",
    "encoder.embed_dim=16",
    "encoder.heads=2",
    "encoder.decoder_dim=8",
    "encoder.decoder_heads=2",
    "compare.bootstrap_reps=50",
    "compare.few_shot_repeats=1",
    "compare.few_shot_ks=[0,10]",
    "explore.images_per_flight=1",
    "figures.formats=[svg]",
]


def own_campaign(src: Path, dst: Path) -> None:
    """A user's own 4-flight campaign from the tiny synthetic one: its last flight (18Feb25)
    dropped, no truth group or generator record, hostile flight and feature names and source."""
    with h5py.File(src, "r") as f, h5py.File(dst, "w") as g:
        keep = f["samples/flight"][:] < 4
        keep_unl = f["unlabelled/flight"][:] < 4
        sizes = {len(keep): keep, len(keep_unl): keep_unl}

        def copy(name: str, obj: object) -> None:
            if not isinstance(obj, h5py.Dataset) or name.startswith("truth"):
                return
            data = obj[:]
            if name.startswith("flights/"):
                data = data[:4]
            elif name.startswith("unlabelled/"):
                data = data[keep_unl]
            elif data.ndim and len(data) in sizes:
                data = data[keep]
            if name == "flights/name" or name.endswith("/names"):
                names = FLIGHTS if name == "flights/name" else FEATURES
                data = np.array([names.get(s.decode(), s.decode()) for s in data], dtype=h5py.string_dtype())
            ds = g.create_dataset(name, data=data)
            ds.attrs.update(dict(obj.attrs))

        f.visititems(copy)
        g.attrs.update({k: v for k, v in f.attrs.items() if not k.startswith("synth")})
        g.attrs["source"] = SOURCE


@pytest.fixture(scope="module")
def hostile_run(tiny_campaign: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = project_copy(tmp_path_factory.mktemp("hostile"))
    own_campaign(tiny_campaign, root / "data" / "hostile.h5")
    cwd = os.getcwd()
    os.chdir(root)
    try:
        sets = [a for s in FAST for a in ("--set", s)]
        only = "explore,pretrain,physical_only,attention,attention_fn,compare"  # every notebook, not every model
        argv = ["run", "--run-name", "hostile", "--campaign", "data/hostile.h5", "--only", only, "--workers", "2"]
        code = main([*argv, "--quiet", *sets])
    finally:
        os.chdir(cwd)
    assert code == 0
    return root / "runs" / "hostile"


def test_no_rendered_page_runs_a_name_from_the_data(hostile_run: Path) -> None:
    summary = json.loads((hostile_run / "summary.json").read_text())
    assert summary["steps"]["failed"] == 0, summary["steps"]["detail"]
    assert set(FLIGHTS.values()) <= set(summary["campaign_info"]["flights"])
    pages = [hostile_run / "index.html", *sorted((hostile_run / "html").glob("*.html"))]
    pages += sorted((hostile_run / "figures").glob("*.svg"))  # figures.formats: matplotlib's SVG text
    assert len(pages) > 30 and len([p for p in pages if p.suffix == ".svg"]) > 15
    for page in pages:
        text = page.read_text()
        for pattern in LIVE:
            hit = pattern.search(text)
            assert hit is None, f"{page.name}: {text[max(0, hit.start() - 80) : hit.end() + 80]!r}"
    # the names are shown (escaped), not dropped
    compare = (hostile_run / "html" / "compare.report.html").read_text()
    assert "&lt;img src=x onerror=alert(5)&gt;" in compare
    index = (hostile_run / "index.html").read_text()
    assert "&lt;img src=y onerror=alert(10)&gt;" in index and "&lt;script&gt;alert(6)&lt;/script&gt;" in index


def test_text_fits_the_data_and_pages_have_titles(hostile_run: Path) -> None:
    """Issue 22 item 1: a 4-flight campaign of one's own is described as such everywhere."""
    index = (hostile_run / "index.html").read_text()
    assert "4 flights with 227 labelled samples" in index and "source recorded in the file" in index
    pages = {p.name: p.read_text() for p in [hostile_run / "index.html", *(hostile_run / "html").glob("*.html")]}
    for name, text in pages.items():
        body = re.sub(r"<style.*?</style>|<script.*?</script>", "", text, flags=re.S)
        for claim in ("18Feb25", "five flights", "5 flights", "synthetic unless", "synthetic campaign (", "~0.9"):
            assert claim not in body, f"{name}: {claim!r}"
        title = re.search(r"<title>(.*?)</title>", text, re.S).group(1)
        assert title != "Notebook" and "hostile" in title, f"{name}: {title!r}"
        if name != "index.html":
            assert f"step {name.split('.')[0]}" in title
    explore = pages["explore.report.html"]
    assert "This campaign: 4 flights" in explore and "source: &lt;img" in explore
    compare = pages["compare.report.html"]
    assert "lag-1 autocorrelation of CBH in this campaign" in compare
    assert "These numbers come from the campaign file" in compare


def test_figures_fit_the_campaign_and_the_settings(hostile_run: Path) -> None:
    """Issue 22 item 8 through the pipeline: SVG copies beside the PNGs (linked from index.html),
    the new track figures, and figures with nothing to show replaced by a reason."""
    figures = hostile_run / "figures"
    for name in ("compare_track_error_map", "compare_pred_along_track", "compare_per_flight_lofo"):
        assert (figures / f"{name}.png").exists() and (figures / f"{name}.svg").exists()
    assert (
        not (figures / "explore_shadow_vs_lidar.png").exists() and not (figures / "train_attention_loss.png").exists()
    )
    index = (hostile_run / "index.html").read_text()
    assert "href='figures/compare_track_error_map.svg'>SVG</a>" in index
    section = index.split("Figures not drawn")[1]
    assert "explore_shadow_vs_lidar" in section and "no shadow-derived height" in section
    assert "train_attention_loss" in section and "one epoch" in section
    explore = (hostile_run / "html" / "explore.report.html").read_text()
    assert "figure explore_shadow_vs_lidar not drawn: this campaign has no shadow-derived height" in explore
