"""Rendered pages: titled from their notebook, campaign text from the campaign, names from the
data shown as typed (never run as HTML or Markdown)."""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbconvert.filters.markdown_mistune import markdown2html_mistune

from cbhlib.data.campaign import Campaign, write_campaign
from cbhlib.pipeline.render import escape_markdown, findings_markdown, page_title, render_html
from cbhlib.pipeline.summary import campaign_info, campaign_text
from tests.conftest import ROOT, small_data


def test_pages_are_titled_from_their_notebook_step_and_run(tmp_path: Path) -> None:
    nb = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_markdown_cell("# Explore a campaign\n\ntext"), nbformat.v4.new_code_cell("1")]
    )
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, tmp_path / "explore.ipynb")
    full, report = render_html(tmp_path / "explore.ipynb", tmp_path / "a.html", tmp_path / "b.html", run="r1")
    for page in (full, report):
        assert "<title>Explore a campaign · step explore · run r1</title>" in page.read_text()
    untitled = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1")])
    assert page_title(untitled, "compare", "r1") == "compare · run r1"


def test_one_process_renders_each_notebook_as_if_it_were_the_first(tmp_path: Path) -> None:
    """The exporters are built once per process: a page must not keep anything of the one before."""
    for i, (title, text) in enumerate((("First notebook", "alpha-only"), ("Second notebook", "beta-only"))):
        nb = nbformat.v4.new_notebook(
            cells=[nbformat.v4.new_markdown_cell(f"# {title}"), nbformat.v4.new_code_cell(f"print('{text}')")]
        )
        nb.cells[1].outputs = [nbformat.v4.new_output("stream", name="stdout", text=text)]
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nbformat.write(nb, tmp_path / f"n{i}.ipynb")
    first = [p.read_text() for p in render_html(tmp_path / "n0.ipynb", tmp_path / "a0.html", tmp_path / "b0.html")]
    second = [p.read_text() for p in render_html(tmp_path / "n1.ipynb", tmp_path / "a1.html", tmp_path / "b1.html")]
    for page in second:
        assert "Second notebook" in page and "beta-only" in page
        assert "First notebook" not in page and "alpha-only" not in page
    assert 'class="highlight hl-ipython3' in second[0] and 'class="highlight hl-ipython3' not in second[1]  # no code
    again = [p.read_text() for p in render_html(tmp_path / "n0.ipynb", tmp_path / "c0.html", tmp_path / "d0.html")]
    assert again == first


def test_campaign_text_names_the_flights_counts_and_origin_of_the_data(tmp_path: Path) -> None:
    data = small_data((6, 5, 4, 7))
    data.source = "my lidar import"
    camp = Campaign(write_campaign(tmp_path / "own.h5", data))
    text = campaign_text(campaign_info(camp))
    assert text.startswith("4 flights with 22 labelled samples (F0: 6, F1: 5, F2: 4, F3: 7)")
    assert "source recorded in the file: my lidar import" in text and "synthetic" not in text
    synthetic = campaign_text({"source": "synthetic(seed=0)", "n_flights": 1, "flights": {"A": 3}})
    assert synthetic.startswith("1 flight with 3 labelled samples (A: 3)") and "a synthetic campaign" in synthetic
    assert "could not be read" in campaign_text({})


def test_the_sweep_text_says_what_it_varies_and_runs_on(tmp_path: Path, monkeypatch) -> None:
    from cbhlib.pipeline import sweep

    shift = sweep.describe(sweep.load_sweep(ROOT / "params" / "sweep_shift.yaml", ROOT), ROOT)
    assert "5 points (synthetic.shift_strength in 0, 0.5, 1, 1.5, 2)" in shift and "generates the synthetic" in shift
    monkeypatch.chdir(tmp_path)
    write_campaign(tmp_path / "own.h5", small_data((6, 5, 4, 7)))
    (tmp_path / "s.yaml").write_text(
        "name: own\nset: {campaign: own.h5}\nmodels: [gbdt]\ngrid: {train.epochs: [1, 2]}\n"
    )
    own = sweep.describe(sweep.load_sweep("s.yaml"))
    assert own.endswith("2 points (train.epochs in 1, 2) x 1 model (gbdt); every point runs on own.h5.")


def test_escaped_names_render_as_typed() -> None:
    cases = {
        '"><img src=x onerror=alert(5)>': '"&gt;&lt;img src=x onerror=alert(5)&gt;',
        "[go](javascript:alert(1)) &lt;b&gt;": "[go](javascript:alert(1)) &amp;lt;b&amp;gt;",
        "the flight's mean (a_b) x*y": "the flight's mean (a_b) x*y",  # was the flight&#x27;s
        "two\nlines # no heading": "two lines # no heading",
    }
    for raw, shown in cases.items():
        html = markdown2html_mistune(f"text {escape_markdown(raw)} text")
        assert html.replace("&quot;", '"').strip() == f"<p>text {shown} text</p>", html
    found = findings_markdown({"shows": ["x on <b>F1</b>'s data"], "does_not_show": []})
    html = markdown2html_mistune(found)
    assert "&lt;b&gt;F1&lt;/b&gt;'s data" in html and "<b>" not in html
