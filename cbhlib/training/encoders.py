"""Which encoders a run needs, where they live, and making sure they exist.

An encoder is identified by its settings (architecture + pretraining recipe + campaign
file), its scope (``fold<k>``: flight k never seen; ``all``; ``random-init``) and its
seed. A unit's seed is its encoder's seed unless ``pretrain.seed`` pins one, so the
spread over seeds covers pretraining too. Encoders are cached per (settings, scope, seed).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import socket
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cbhlib import threads
from cbhlib.atomic import atomic_write_text
from cbhlib.config import Config
from cbhlib.data.campaign import Campaign
from cbhlib.data.frames import ALL, Scope
from cbhlib.errors import CbhError, CheckpointError
from cbhlib.store.checkpoints import load_checkpoint
from cbhlib.store.rundir import RunDir
from cbhlib.training.cluster import current_client, worker_resources
from cbhlib.training.pretrain import pretrain_encoder, random_encoder

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

_ABSENT = object()
_NOT_RECIPE = ("seed", "missing", "eval_frames", "memory_limit_mb", "scope")


def settings_key(cfg: Config, camp: Campaign) -> str:
    """``<encoder>-<hash>`` of the architecture, pretraining recipe, campaign file and the torch
    thread count encoders train on (float sums depend on it: an encoder trained under an
    earlier every-core policy is not reused for one trained on :data:`threads.ENCODER_THREADS`)."""
    recipe = {k: v for k, v in asdict(cfg.pretrain).items() if k not in _NOT_RECIPE}
    blob = json.dumps(
        {
            "encoder": cfg.encoder.to_dict(),
            "pretrain": recipe,
            "campaign": camp.fingerprint(),
            "torch_threads": threads.ENCODER_THREADS,
        },
        sort_keys=True,
    )
    return f"{cfg.encoder.name}-{hashlib.sha256(blob.encode()).hexdigest()[:10]}"


def settings_names(cfg: Config, camp: Campaign) -> dict[str, object]:
    """What :func:`settings_key` hashes, by notebook parameter name (``pretrain_epochs``)."""
    out: dict[str, object] = {f"encoder_{k}": v for k, v in cfg.encoder.to_dict().items()}
    out.update({f"pretrain_{k}": v for k, v in asdict(cfg.pretrain).items() if k not in _NOT_RECIPE})
    out["campaign (file contents)"] = camp.fingerprint()[:12]
    out["encoder torch threads"] = threads.ENCODER_THREADS
    return out


def _differences(run: RunDir, key: str, mine: dict[str, object]) -> str:
    """How the closest existing encoder folder's settings differ from ``mine`` ("" if there is none)."""
    best: list[str] | None = None
    for folder in sorted(run.encoder_dir(key).parent.glob("*")) if run.encoder_dir(key).parent.is_dir() else []:
        try:
            theirs = json.loads(run.encoder_settings(folder.name).read_text())
        except (OSError, ValueError):
            continue
        diff = [
            f"{n} = {theirs[n]!r} for the existing encoders, {mine[n]!r} here"
            if n in theirs
            else f"{n} not recorded for the existing encoders (an earlier version), {mine[n]!r} here"
            for n in mine
            if theirs.get(n, _ABSENT) != mine[n]
        ]
        if diff and (best is None or len(diff) < len(best)):
            best = diff
    return "; ".join(best or [])


def encoder_seed(cfg: Config, unit_seed: int) -> int:
    """The pretraining seed of a unit's encoder: the unit's own unless pinned."""
    return unit_seed if cfg.pretrain.seed < 0 else cfg.pretrain.seed


def scopes_for(cfg: Config, camp: Campaign, protocol: str, untrained: bool = False) -> list[Scope]:
    """Encoder scopes of a protocol: one per held-out flight under LOFO (scope fold or
    transductive), else one on every frame (the pooled protocols mix flights anyway)."""
    if protocol == "lofo" and cfg.pretrain.scope in ("fold", "transductive"):
        scopes = [Scope.for_fold(k, cfg.pretrain.scope == "transductive") for k in range(camp.n_flights)]
    else:
        scopes = [ALL]
    return [s.as_untrained() for s in scopes] if untrained else scopes


def scope_of_fold(scopes: list[Scope], held_out_flight: int | None) -> Scope:
    """The scope a fold's units use (its held-out flight's, or the single shared one)."""
    if len(scopes) == 1:
        return scopes[0]
    return next(s for s in scopes if s.held_out == held_out_flight)


def required(
    cfg: Config, camp: Campaign, protocols: list[str] | None = None, untrained: bool = False
) -> list[tuple[Scope, int]]:
    """Every (scope, seed) the configured protocols and seeds need, without duplicates
    (``untrained``: the random-weight twins of those encoders)."""
    out: list[tuple[Scope, int]] = []
    for proto in protocols or cfg.protocols:
        for scope in scopes_for(cfg, camp, proto, untrained):
            for s in cfg.seeds:
                item = (scope, encoder_seed(cfg, s))
                if item not in out:
                    out.append(item)
    return out


def check_encoder(path: Path, camp: Campaign) -> None:
    """Refuse an encoder pretrained on another campaign file."""
    ck = load_checkpoint(path)
    if ck.get("campaign_sha256") not in (None, camp.fingerprint()):
        raise CheckpointError(
            f"{path}: expected an encoder pretrained on {camp.path}; found one of another campaign "
            "file (delete it or use another run folder)"
        )


def ensure(
    cfg: Config,
    camp: Campaign,
    run: RunDir,
    needed: list[tuple[Scope, int]],
    allow_train: bool,
    progress: bool = False,
    step: str = "pretrain",
) -> dict[tuple[str, int], Path]:
    """Paths of the needed encoders, pretraining the missing ones only if ``allow_train``.

    Raises:
        CbhError: encoders are missing and this step may not pretrain them.
    """
    key = settings_key(cfg, camp)
    out: dict[tuple[str, int], Path] = {}
    missing = [(sc, s) for sc, s in needed if not sc.untrained and not run.encoder(key, sc.key, s).exists()]
    mine = settings_names(cfg, camp)
    if missing and not allow_train:
        names = ", ".join(f"{sc.key}_seed{s}" for sc, s in missing[:4]) + (" ..." if len(missing) > 4 else "")
        diff = _differences(run, key, mine)
        how = (
            f"this run's encoders were pretrained with other settings: {diff}; make them match (the same "
            "values in both notebooks' parameters cells, or the same params/encoder.yaml for cbh run), or"
            if diff
            else "run the {step} step first (cbh run --only pretrain, or notebooks/01b_pretrain_encoder), or"
        ).format(step=step)
        raise CbhError(
            f"{run.encoder_dir(key)}: encoders for {key} are missing ({names}): {how} set "
            "pretrain_missing = 'pretrain' (pretrain.missing: pretrain) to pretrain them here"
        )
    if needed and not run.encoder_settings(key).exists():
        run.encoder_dir(key).mkdir(parents=True, exist_ok=True)
        atomic_write_text(run.encoder_settings(key), json.dumps(mine, indent=1, default=str))
    todo = [(sc, s) for sc, s in needed if not run.encoder(key, sc.key, s).exists()]
    for sc, s in needed:
        if (sc, s) not in todo:
            check_encoder(run.encoder(key, sc.key, s), camp)
        out[(sc.key, s)] = run.encoder(key, sc.key, s)
    _write_plan(run, key, needed)
    client = current_client() if len([t for t in todo if not t[0].untrained]) > 1 else None
    if client is not None:  # a Dask cluster runs this pipeline: one task per encoder
        slots = {"GPU": 1} if on_gpu(cfg) else ({"cpu": 1} if "cpu" in worker_resources(client) else None)
        futures = [
            client.submit(
                _make_encoder,
                str(camp.path),
                cfg,
                sc,
                s,
                str(run.encoder(key, sc.key, s)),
                str(run.pretrain_log),
                key,
                pure=False,
                resources=slots,
            )
            for sc, s in todo
        ]
        client.gather(futures)
        client.close()
        return out
    trained = [(sc, s) for sc, s in todo if not sc.untrained]
    n_proc = 1 if on_gpu(cfg) else min(len(trained), threads.usable_cores(cfg.threads))
    if n_proc > 1 and len(trained) * _work(cfg, camp) >= POOL_MIN_WORK:  # one single-threaded process per core
        _pool(camp, cfg, trained, run, key, n_proc, progress)
        todo = [t for t in todo if t[0].untrained]
    for sc, s in todo:
        _make_encoder(camp, cfg, sc, s, run.encoder(key, sc.key, s), run.pretrain_log, key, progress)
    return out


DONE = "done "


def write_jobs(
    path: Path, cfg: Config, campaign: str, log_path: str, key: str, jobs: list[tuple[Scope, int, str]]
) -> None:
    """The JSON file a worker reads: settings, campaign, and (scope, seed, checkpoint path) per encoder."""
    spec: dict[str, Any] = {
        "config": cfg.to_nested(),
        "campaign": campaign,
        "log": log_path,
        "key": key,
        "jobs": [{"scope": asdict(sc), "seed": s, "path": p} for sc, s, p in jobs],
    }
    path.write_text(json.dumps(spec))


POOL_MIN_WORK = 8 * 1024 * 64 * 64
"""Pixel-epochs (epochs x frames x pixels) below which encoders train in this process: one
default encoder (about 8 s on one core) pays for starting the processes (about 3 s each)."""


def _work(cfg: Config, camp: Campaign) -> int:
    """Pixel-epochs of one encoder: epochs x frames drawn per epoch x pixels per frame."""
    frames = camp.n_samples + (camp.n_unlabelled if cfg.pretrain.unlabelled else 0)
    if cfg.pretrain.max_frames:
        frames = min(frames, cfg.pretrain.max_frames)
    C, H, W = camp.image_shape
    return cfg.pretrain.epochs * frames * C * H * W


def _pool(
    camp: Campaign, cfg: Config, todo: list[tuple[Scope, int]], run: RunDir, key: str, n_proc: int, progress: bool
) -> None:
    """Pretrain ``todo`` in ``n_proc`` fresh processes (:mod:`cbhlib.training.pretrain_worker`),
    encoder i in process i mod n_proc, each on :data:`cbhlib.threads.ENCODER_THREADS` torch
    threads: the same weights as in this process.

    Raises:
        CbhError: a process failed (its own one-line message) or died (out of memory?).
    """
    import subprocess
    import sys
    import tempfile

    from tqdm.auto import tqdm

    log.info(
        "pretraining %d encoders in %d processes of %d torch thread(s)", len(todo), n_proc, threads.ENCODER_THREADS
    )
    jobs = [(sc, s, str(run.encoder(key, sc.key, s))) for sc, s in todo]
    with tempfile.TemporaryDirectory(prefix="cbh-pretrain-") as tmp:
        procs = []
        for i in range(n_proc):
            spec = Path(tmp) / f"jobs{i}.json"
            write_jobs(spec, cfg, str(camp.path), str(run.pretrain_log), key, jobs[i::n_proc])
            cmd = [sys.executable, "-m", "cbhlib.training.pretrain_worker", str(spec)]
            err = open(Path(tmp) / f"stderr{i}.txt", "w")  # a file: a full pipe would stall the process
            procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True))
            err.close()
        with tqdm(total=len(jobs), desc=f"pretrain ({n_proc} processes)", disable=not progress) as bar:
            for p in procs:  # every process writes a line per encoder; read them in turn
                assert p.stdout is not None
                for line in p.stdout:
                    if line.startswith(DONE):
                        bar.update(1)
                        log.info("encoder %s ready", line[len(DONE) :].strip())
        failed = [(p.wait(), (Path(tmp) / f"stderr{i}.txt").read_text().strip()) for i, p in enumerate(procs)]
    for rc, err in failed:
        if rc:
            last = err.splitlines()[-1] if err else f"exit status {rc}"
            if last.startswith("cbh: "):
                raise CbhError(last[len("cbh: ") :])
            raise CbhError(
                f"{run.encoder_dir(key)}: a pretraining process failed ({last}); expected {len(jobs)} encoders, "
                f"found {sum(Path(p).exists() for _, _, p in jobs)} (out of memory? threads: 1 pretrains one at a time)"
            )


def _write_plan(run: RunDir, key: str, needed: list[tuple[Scope, int]]) -> None:
    """Record which encoders this step needs, so ``cbh monitor`` can count pending ones."""
    run.logs.mkdir(parents=True, exist_ok=True)
    with open(run.logs / "pretrain_plan.jsonl", "a") as fh:
        for sc, s in needed:
            if not sc.untrained:
                fh.write(json.dumps({"settings": key, "key": sc.key, "seed": s}) + "\n")


def on_gpu(cfg: Config) -> bool:
    """Whether encoders of ``cfg`` train on a GPU (elsewhere: on :data:`threads.ENCODER_THREADS` CPU threads)."""
    import torch

    return cfg.device.startswith("cuda") or (cfg.device == "auto" and torch.cuda.is_available())


def _make_encoder(
    camp: Campaign | str,
    cfg: Config,
    sc: Scope,
    seed: int,
    path: Path | str,
    log_path: Path | str,
    key: str,
    progress: bool = False,
) -> None:
    """Pretrain (or, for the untrained twin, initialise) one encoder; runs here, in a pool process
    or on a Dask worker, always on :data:`cbhlib.threads.ENCODER_THREADS` torch threads."""
    camp = Campaign(camp) if isinstance(camp, str) else camp
    if sc.untrained:
        random_encoder(camp, cfg.encoder, cfg.pretrain, sc, seed, path)
        return
    cpu = not on_gpu(cfg)  # on the CPU: the same weights on any machine, setting and load
    with threads.pinned(threads.ENCODER_THREADS) if cpu else contextlib.nullcontext():
        pretrain_encoder(
            camp,
            cfg.encoder,
            cfg.pretrain,
            sc,
            seed,
            path,
            log_path,
            cfg.device,
            progress,
            {"settings": key, "worker": f"{socket.gethostname()}:{os.getpid()}"},
        )


def encoder_table(paths: dict[tuple[str, int], Path]) -> pd.DataFrame:
    """One row per encoder: scope, held-out flight, seed, frames seen (and of the held-out
    flight: 0 under the default scope), loss before and after, both floors, seconds."""
    import pandas as pd

    rows = []
    for (scope, seed), path in paths.items():
        ck = load_checkpoint(path)
        held = ck.get("held_out_flight", "")
        by_flight = ck.get("frames_by_flight", {})
        final, zero = ck.get("loss_final"), ck.get("floor_predict_zero")
        rows.append(
            {
                "name": f"{scope}_seed{seed}",
                "scope": scope,
                "held_out_flight": held,
                "seed": seed,
                "frames_labelled": ck.get("frames_labelled"),
                "frames_unlabelled": ck.get("frames_unlabelled"),
                "frames_of_held_out": by_flight.get(held, 0) if held else None,
                "loss_before": ck.get("loss_before"),
                "loss_final": final,
                "floor_predict_zero": zero,
                "floor_interpolation": ck.get("floor_interpolation"),
                "final_over_zero": (final / zero) if final is not None and zero else None,
                "epochs": ck.get("epochs"),
                "seconds": ck.get("seconds"),
            }
        )
    return pd.DataFrame(rows)


def pretrain_step(cfg: Config, camp: Campaign, run: RunDir) -> tuple[pd.DataFrame, dict[tuple[str, int], Path]]:
    """Pretrain (or reuse) every encoder the configured protocols and seeds need; write
    ``pretrain_summary.json`` (per encoder, and the mean loss beside the mean floors)."""
    from cbhlib.evaluation.reports import write_json

    paths = ensure(cfg, camp, run, required(cfg, camp), allow_train=True, progress=cfg.progress)
    table = encoder_table(paths)
    summary = {
        "settings": settings_key(cfg, camp),
        "encoder": cfg.encoder.to_dict(),
        "n_encoders": len(table),
        "loss_final": float(table["loss_final"].mean()),
        "floor_predict_zero": float(table["floor_predict_zero"].mean()),
        "floor_interpolation": float(table["floor_interpolation"].mean()),
        "encoders": table.to_dict("records"),
    }
    summary["final_over_zero"] = summary["loss_final"] / summary["floor_predict_zero"]
    write_json(run.pretrain_summary, summary)
    return table, paths
