"""MAE pretraining: learns what can be learned, reports floors, sees only the frames its scope
allows, follows the unit seed, and is never run on the side."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cbhlib.config import load_config
from cbhlib.data.campaign import Campaign
from cbhlib.data.frames import ALL, FrameSet, Scope, select_frames
from cbhlib.errors import CbhError
from cbhlib.models.mae import build_encoder
from cbhlib.store.checkpoints import load_checkpoint
from cbhlib.store.rundir import RunDir
from cbhlib.training import encoders
from cbhlib.training.pretrain import load_encoder, masked_losses, pretrain_encoder, reconstruct_examples

TINY_ENC = {
    "encoder.embed_dim": 32,
    "encoder.depth": 1,
    "encoder.heads": 4,
    "encoder.decoder_dim": 16,
    "encoder.decoder_heads": 4,
    "encoder.patch": 4,
}


def _cfg(camp_path: Path, run_dir: Path, **kw: object) -> object:
    return load_config(
        overrides={
            "campaign": str(camp_path),
            "run_dir": str(run_dir),
            "progress": False,
            "pretrain.batch_size": 32,
            **TINY_ENC,
            **kw,
        }
    )


def test_pretraining_beats_both_floors_on_learnable_images(pool_file: Path, tmp_path: Path) -> None:
    camp = Campaign(pool_file)
    cfg = _cfg(pool_file, tmp_path, **{"pretrain.epochs": 30, "pretrain.lr": 2e-3})
    ck = pretrain_encoder(camp, cfg.encoder, cfg.pretrain, ALL, 0, tmp_path / "e.pt", progress=False)
    assert ck["history"][-1] < 0.5 * ck["history"][0]
    assert ck["loss_final"] < 0.5 * ck["floor_predict_zero"]
    assert ck["loss_final"] < ck["loss_before"]
    assert 0 < ck["floor_interpolation"] < ck["floor_predict_zero"]  # smooth images: neighbours predict masked patches


def test_floors_on_unpredictable_noise(tmp_path: Path, pool_file: Path) -> None:
    """On white noise nothing masked is predictable: both floors sit at the noise level."""
    cfg = _cfg(pool_file, tmp_path)
    model = build_encoder(cfg.encoder, (1, 16, 16))
    x = torch.randn(64, 1, 16, 16)
    f = masked_losses(model, x, 0.75, seed=0)
    assert f["predict_zero"] == pytest.approx(1.0, abs=0.1)
    assert f["interpolation"] > 0.9 * f["predict_zero"]


def test_losses_in_chunks_match_one_pass(tmp_path: Path, pool_file: Path) -> None:
    """Large frames are scored in chunks (memory); the masks and the losses stay those of one pass."""
    cfg = _cfg(pool_file, tmp_path)
    model = build_encoder(cfg.encoder, (1, 16, 16))
    x = torch.randn(40, 1, 16, 16) + torch.linspace(0, 1, 16)
    one = masked_losses(model, x, 0.75, seed=3)
    chunked = masked_losses(model, x, 0.75, seed=3, chunk_values=7 * 256)  # 7 frames per chunk
    assert chunked == pytest.approx(one, rel=1e-5)


def test_streamed_and_in_memory_pretraining_are_identical(pool_file: Path, tmp_path: Path) -> None:
    camp = Campaign(pool_file)
    a = _cfg(pool_file, tmp_path, **{"pretrain.epochs": 2})
    b = _cfg(pool_file, tmp_path, **{"pretrain.epochs": 2, "pretrain.memory_limit_mb": 0})
    assert FrameSet(camp, *select_frames(camp, ALL), 0).in_memory is False
    ha = pretrain_encoder(camp, a.encoder, a.pretrain, ALL, 3, tmp_path / "a.pt", progress=False)["history"]
    hb = pretrain_encoder(camp, b.encoder, b.pretrain, ALL, 3, tmp_path / "b.pt", progress=False)["history"]
    np.testing.assert_allclose(ha, hb, rtol=1e-5)


def test_default_scope_never_trains_on_the_held_out_flight(
    pool_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every frame that reaches a training or evaluation batch belongs to a training flight."""
    camp = Campaign(pool_file)
    used: list[np.ndarray] = []  # flight of every frame in every batch
    real_batch = FrameSet.batch

    def spy(self, rows):
        used.append(self.flights()[np.asarray(rows)])
        return real_batch(self, rows)

    monkeypatch.setattr(FrameSet, "batch", spy)
    cfg = _cfg(pool_file, tmp_path, **{"pretrain.epochs": 1, "pretrain.max_frames": 0})
    ck = pretrain_encoder(camp, cfg.encoder, cfg.pretrain, Scope.for_fold(1), 0, tmp_path / "f1.pt", progress=False)
    flights = np.concatenate(used)
    assert len(flights) >= 210 and not (flights == 1).any() and (flights == 0).any()
    assert ck["frames_by_flight"]["F1"] == 0 and ck["held_out_flight"] == "F1"
    assert ck["frames_labelled"] == 70 and ck["frames_unlabelled"] == 140
    lab, unl = select_frames(camp, Scope.for_fold(1))  # the labelled and the unlabelled pool of training flights
    assert not (camp.flight[lab] == 1).any() and not (camp.unlabelled_flight[unl] == 1).any()
    # transductive: the held-out flight's unlabelled frames (never its labelled ones)
    lab_t, unl_t = select_frames(camp, Scope.for_fold(1, transductive=True))
    assert not (camp.flight[lab_t] == 1).any() and (camp.unlabelled_flight[unl_t] == 1).sum() == 60


def test_encoder_seed_follows_the_unit_seed(pool_file: Path, tmp_path: Path) -> None:
    from cbhlib.training.runner import run_mode

    cfg = _cfg(
        pool_file,
        tmp_path,
        **{
            "pretrain.epochs": 1,
            "seeds": [3, 5],
            "protocols": ["lofo"],
            "train.mode": "image_only",
            "train.epochs": 2,
            "pretrain.missing": "pretrain",
        },
    )
    result = run_mode(cfg)
    for u in result.units["lofo"]:
        ck = load_checkpoint(tmp_path / u.encoder)
        assert ck["seed"] == u.seed and u.encoder.endswith(f"_seed{u.seed}.pt")
        assert ck["held_out_flight"] == u.test_flight
    # two seeds give two different encoders for the same fold
    e3 = load_checkpoint(tmp_path / result.units["lofo"][0].encoder)["state_dict"]["proj.weight"]
    e5 = load_checkpoint(tmp_path / result.units["lofo"][1].encoder)["state_dict"]["proj.weight"]
    assert not torch.equal(e3, e5)
    pinned = load_config(overrides={"pretrain.seed": 7})
    assert encoders.encoder_seed(pinned, 3) == 7 and encoders.encoder_seed(cfg, 3) == 3


def test_a_training_step_never_pretrains_on_the_side(pool_file: Path, tmp_path: Path) -> None:
    from cbhlib.training.runner import run_mode

    cfg = _cfg(
        pool_file,
        tmp_path,
        **{"pretrain.epochs": 1, "seeds": [0], "protocols": ["lofo"], "train.mode": "concat", "train.epochs": 2},
    )
    with pytest.raises(CbhError, match="encoders for mae2d-.* are missing .*run the pretrain step"):
        run_mode(cfg)
    assert not list(tmp_path.rglob("*.pt"))
    encoders.pretrain_step(cfg, Campaign(pool_file), RunDir(tmp_path))  # the pretrain step, then training works
    assert run_mode(cfg).reports["lofo"]["n_seeds"] == 1


def test_random_init_is_the_untrained_twin(pool_file: Path, tmp_path: Path) -> None:
    camp = Campaign(pool_file)
    cfg = _cfg(pool_file, tmp_path, **{"pretrain.epochs": 2})
    run = RunDir(tmp_path)
    scope = Scope.for_fold(0)
    paths = encoders.ensure(cfg, camp, run, [(scope, 1), (scope.as_untrained(), 1)], allow_train=True)
    trained, _ = load_encoder(paths[(scope.key, 1)])
    untrained, ck = load_encoder(paths[(scope.key + "-random", 1)])
    assert ck["epochs"] == 0 and ck["scope"] == "fold0-random"
    torch.testing.assert_close(trained.pixel_std, untrained.pixel_std)  # same frames, same statistics
    assert not torch.equal(trained.proj.weight, untrained.proj.weight)


def test_reconstructions_fill_only_masked_patches(pool_file: Path, tmp_path: Path) -> None:
    camp = Campaign(pool_file)
    cfg = _cfg(pool_file, tmp_path, **{"pretrain.epochs": 1, "encoder.norm_pix_loss": True})
    pretrain_encoder(camp, cfg.encoder, cfg.pretrain, ALL, 0, tmp_path / "e.pt", progress=False)
    rec = reconstruct_examples(camp, tmp_path / "e.pt", np.array([0, 5]), 0.75)
    m = rec["mask"] > 0
    assert 0.6 < m.mean() < 0.9
    np.testing.assert_allclose(rec["reconstruction"][~m], rec["input"][~m], rtol=1e-5)
    assert np.isnan(rec["masked"][m]).all() and (rec["error"][~m] == 0).all()


def test_a_step_with_other_encoder_settings_says_which_differ_in_notebook_names(
    tmp_path: Path, pool_file: Path
) -> None:
    """Issue 22 item 6: pretrain_epochs changed in the pretraining notebook only."""
    from cbhlib.training.encoders import ensure, required, settings_key, settings_names

    camp, run = Campaign(pool_file), RunDir(tmp_path / "run")
    pretrained = load_config({"pretrain_epochs": 2, "encoder_patch": 4, "seeds": [0]})
    key = settings_key(pretrained, camp)
    run.encoder_dir(key).mkdir(parents=True)
    run.encoder_settings(key).write_text(json.dumps(settings_names(pretrained, camp)))
    here = load_config({"seeds": [0]})
    with pytest.raises(CbhError) as info:
        ensure(here, camp, run, required(here, camp), allow_train=False)
    msg = str(info.value)
    assert "pretrain_epochs = 2 for the existing encoders, 8 here" in msg
    assert "encoder_patch = 4 for the existing encoders, 8 here" in msg and "pretrain_missing = 'pretrain'" in msg
    assert "pretrain.epochs" not in msg and "run the pretrain step first" not in msg
    empty = RunDir(tmp_path / "empty")
    with pytest.raises(CbhError, match="run the pretrain step first"):
        ensure(here, camp, empty, required(here, camp), allow_train=False)


def test_an_encoder_trains_on_one_thread_whatever_the_setting_or_load(
    pool_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The thread count changes a weight gradient's float sum, and training amplifies it into
    another encoder: every encoder runs on threads.ENCODER_THREADS, and the count is restored."""
    from cbhlib import threads

    seen: list[int] = []
    monkeypatch.setattr(encoders, "pretrain_encoder", lambda *a, **k: seen.append(torch.get_num_threads()))
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        cfg = _cfg(pool_file, tmp_path, threads=2)
        encoders._make_encoder(str(pool_file), cfg, Scope.for_fold(0), 0, tmp_path / "e.pt", tmp_path / "log", "k")
        assert seen == [threads.ENCODER_THREADS] and torch.get_num_threads() == 2
        assert not threads.governor().fixed or "OMP_NUM_THREADS" in __import__("os").environ
    finally:
        torch.set_num_threads(before)


def test_an_encoder_keeps_one_thread_while_another_in_the_same_process_ends() -> None:
    """Encoders on one Dask worker's threads: the first to finish must not restore the count."""
    import threading

    from cbhlib import threads

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    a_in, b_out, inside = threading.Event(), threading.Event(), []

    def a() -> None:
        with threads.pinned(1):
            a_in.set()
            b_out.wait(10)
            inside.append(torch.get_num_threads())  # b has left: a still runs on one thread

    t = threading.Thread(target=a)
    t.start()
    a_in.wait(10)
    with threads.pinned(1):
        pass
    b_out.set()
    t.join(10)
    try:
        assert inside == [1]  # not the count from before the pins while another encoder still trains
    finally:
        torch.set_num_threads(before)


def test_encoders_pretrained_side_by_side_in_processes_are_those_of_one_process(
    pool_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A serial run pretrains its encoders in one process per core (threads: 2 here, and no minimum
    of work, so the test runs the pool on any machine); threads: 1 trains them here. The weights
    must be identical."""
    monkeypatch.setattr(encoders, "POOL_MIN_WORK", 0)
    runs = {}
    for threads_setting in (2, 1):
        cfg = _cfg(pool_file, tmp_path / f"t{threads_setting}", threads=threads_setting, seeds=[0, 1])
        cfg.pretrain.epochs = 1
        camp = Campaign(pool_file)
        run = RunDir(tmp_path / f"t{threads_setting}")
        needed = encoders.required(cfg, camp, ["lofo"])
        runs[threads_setting] = (run, encoders.ensure(cfg, camp, run, needed, allow_train=True))
    (run2, p2), (_, p1) = runs[2], runs[1]
    assert p2.keys() == p1.keys() and len(p2) >= 4
    for k in p2:
        a, b = load_checkpoint(p2[k])["state_dict"], load_checkpoint(p1[k])["state_dict"]
        assert all(torch.equal(a[n], b[n]) for n in a), k
    workers = {json.loads(line).get("worker") for line in run2.pretrain_log.read_text().splitlines()}
    pids = {int(w.rsplit(":", 1)[1]) for w in workers if w}
    assert len(pids) == 2 and __import__("os").getpid() not in pids  # two other processes trained them


def test_a_pretraining_process_reports_a_bad_input_in_one_line(tmp_path: Path) -> None:
    import subprocess
    import sys

    from cbhlib.training.encoders import write_jobs

    spec = tmp_path / "jobs.json"
    write_jobs(
        spec, load_config(), str(tmp_path / "missing.h5"), str(tmp_path / "log"), "k", [(Scope.for_fold(0), 0, "x")]
    )
    out = subprocess.run(
        [sys.executable, "-m", "cbhlib.training.pretrain_worker", str(spec)], capture_output=True, text=True
    )
    assert out.returncode == 2
    assert out.stderr.startswith("cbh: ") and "missing.h5" in out.stderr and "Traceback" not in out.stderr


def test_a_few_small_encoders_train_here_and_the_default_ones_in_processes(pool_file: Path) -> None:
    """Starting a process costs seconds: the pool starts only for at least a default encoder's work."""
    camp = Campaign(pool_file)
    small = _cfg(pool_file, Path("."), **{"pretrain.epochs": 2})
    assert 10 * encoders._work(small, camp) < encoders.POOL_MIN_WORK
    default = load_config()
    frames = min(default.pretrain.max_frames, camp.n_samples + camp.n_unlabelled)
    assert encoders._work(default, camp) == default.pretrain.epochs * frames * 16 * 16


def test_encoders_of_the_earlier_every_thread_policy_are_not_reused(
    tmp_path: Path, pool_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Float sums depend on the thread count: the cache key names the one thread encoders now train on,
    so a run folder of the earlier policy (no thread count recorded) retrains, and a step that may not
    pretrain says why."""
    from cbhlib import threads
    from cbhlib.training.encoders import ensure, required, settings_key, settings_names

    camp, run = Campaign(pool_file), RunDir(tmp_path / "run")
    cfg = load_config({"seeds": [0]})
    key = settings_key(cfg, camp)
    monkeypatch.setattr(threads, "ENCODER_THREADS", 2)
    assert settings_key(cfg, camp) != key  # another thread count: another folder
    monkeypatch.undo()
    old = {k: v for k, v in settings_names(cfg, camp).items() if k != "encoder torch threads"}
    old_key = "mae2d-0123456789"  # the folder an earlier version wrote (its key hashed no thread count)
    run.encoder_dir(old_key).mkdir(parents=True)
    run.encoder_settings(old_key).write_text(json.dumps(old))
    with pytest.raises(CbhError) as info:
        ensure(cfg, camp, run, required(cfg, camp), allow_train=False)
    assert "encoder torch threads not recorded for the existing encoders (an earlier version), 1 here" in str(
        info.value
    )
