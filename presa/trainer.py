"""The training loop: run directories, metrics, checkpoints, exact resume.

A run directory is created per run and never reused::

    RUN_DIR/config.yaml        the resolved config (the keys of the run's algorithm; ``precision`` as
                               resolved: fp32 or bf16)
    RUN_DIR/run.json           store (path, id, fingerprint), seed, algo, threshold, task, versions,
                               git commit, counts, precision (asked, resolved, why), resumes
    RUN_DIR/metrics.jsonl      {"step": n, "train/<metric>": x, ...} every ``log_every`` steps
    RUN_DIR/checkpoints/       step_XXXXXXX.pt every ``checkpoint_every`` steps, final.pt at the end
    RUN_DIR/curves.png         training curves

``resume(run_dir)`` continues from the latest checkpoint and ends with the same weights as an
uninterrupted run on the same device (every RNG state, the optimiser, ν, z_ref and the reference
policy are in the checkpoint). Metrics are averaged over each logging interval; the interval
that straddles a resume averages only the steps run after it.

Example:
    >>> cfg = resolve_config(suite=store_suite("x.zarr"), preset="quick",
    ...                      overrides={"threshold": 20, "seed": 0})          # doctest: +SKIP
    >>> result = train(cfg, "x.zarr", "runs/demo")                          # doctest: +SKIP
    >>> load_actor(result.run_dir)                                          # doctest: +SKIP
"""

from __future__ import annotations

import functools
import json
import math
import os
import platform
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

import presa
from feedbackgen._io import atomic_write_text, git_state
from feedbackgen.errors import FeedbackgenError
from feedbackgen.store import open_store
from presa.algos import get_algorithm
from presa.algos.base import Algorithm
from presa.checkpoint import (
    capture_rng,
    final_checkpoint_path,
    latest_checkpoint,
    load_checkpoint,
    restore_rng,
    save_checkpoint,
    step_checkpoint_path,
)
from presa.config import RESUME_MUTABLE, BaseConfig, dump_yaml, for_algorithm, saved_config
from presa.data import TrainingData, describe, store_fingerprint
from presa.heldout import HeldoutSet
from presa.plots import plot_training_curves, read_metrics
from presa.precision import resolve_precision, warn_if_emulated


@dataclass(frozen=True)
class TrainEvent:
    """What the trainer reports to its callback after every step.

    Attributes:
        step: completed steps; total_steps: the run's length.
        phase: the algorithm's phase name (``bc``, ``align``, ``train``).
        metrics: the record just written to metrics.jsonl on logging steps, else None.
        checkpoint: builds the checkpoint payload of the current weights (what ``final.pt`` would
            hold now); ``presa.evaluate.EvalEvery`` uses it to evaluate during training.
    """

    step: int
    total_steps: int
    phase: str
    metrics: dict[str, float] | None
    checkpoint: Callable[[], dict[str, Any]] | None = None


@dataclass
class TrainResult:
    """The outcome of :func:`train` / :func:`resume`."""

    run_dir: Path
    checkpoint: Path
    step: int
    config: BaseConfig
    metrics: dict[str, float] = field(default_factory=dict)
    resumed_from: int | None = None
    already_complete: bool = False


Callback = Callable[[TrainEvent], None]


# -- helpers -----------------------------------------------------------------------------------------
def check_device(device: str) -> torch.device:
    """The torch device for ``device``.

    Raises:
        FeedbackgenError: CUDA asked for but not available.
    """
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise FeedbackgenError(f"--device {device} asked for, but no CUDA GPU is available to this torch "
                                   f"({torch.__version__}); use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise FeedbackgenError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) "
                                   "exist; use --device cuda:0")
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS
    return dev


def apply_threads(threads: int) -> None:
    """Set torch's CPU thread count for this process (0 leaves torch's default)."""
    if threads > 0 and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def store_suite(path: str | Path) -> str | None:
    """The task suite recorded in a store (for the per-suite defaults), or None."""
    store = open_store(path, lazy=True)
    task = (store.metadata or {}).get("task") or {}
    return task.get("suite")


def store_name(path: str | Path) -> str:
    name = Path(path).name
    for suffix in (".zip", ".zarr"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return name or "store"


def default_run_dir(store: str | Path, cfg: BaseConfig, root: str | Path = "runs",
                    now: datetime | None = None) -> Path:
    """``runs/<store-name>-<algo>-k<K>-s<S>-<timestamp>`` (a suffix is added if it exists)."""
    stamp = (now or datetime.now()).strftime("%Y%m%d-%H%M%S")
    k = f"{cfg.threshold:g}" if cfg.threshold is not None else "none"
    base = Path(root) / f"{store_name(store)}-{cfg.algo}-k{k}-s{cfg.seed}-{stamp}"
    path, i = base, 1
    while path.exists():
        i += 1
        path = base.with_name(f"{base.name}-{i}")
    return path


_write_atomic = atomic_write_text
_NO_THRESHOLD = "no cost threshold given; pass --threshold K (one of the store's thresholds)"


def _git_commit() -> tuple[str | None, bool | None]:
    return git_state(Path(presa.__file__).resolve().parent.parent)


def _load_data(cfg: BaseConfig, store: str | Path, device: torch.device) -> TrainingData:
    if cfg.threshold is None:  # (train refuses this first; a saved run config always has one)
        raise FeedbackgenError(_NO_THRESHOLD)
    return TrainingData.from_store(store, threshold=float(cfg.threshold), gamma=cfg.gamma, device=device,
                                   label_sources=cfg.label_sources)


def seed_global_rngs(seed: int) -> None:
    """Seed the global torch/CUDA, numpy and python RNGs too. presa's own code draws only from the
    run's explicit ``torch.Generator``; this keeps any library code that falls back on global state
    reproducible as well (their states are saved in every checkpoint and restored on resume)."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def _make_generator(seed: int, device: torch.device) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


# -- public entry points ----------------------------------------------------------------------------
def train(cfg: BaseConfig, store: str | Path, out: str | Path | None = None, *,
          callback: Callback | None = None, runs_root: str | Path = "runs") -> TrainResult:
    """Train ``cfg.algo`` on ``store`` into a new run directory.

    Args:
        cfg: the resolved configuration (``cfg.threshold`` must be set): an instance of the
            algorithm's config class, as :func:`presa.config.resolve_config` makes it (another
            class, e.g. a ``TrainConfig`` for a baseline, is converted by
            :func:`presa.config.for_algorithm`).
        store: a feedback store (directory or published zip).
        out: the run directory (must not exist); None: :func:`default_run_dir` under ``runs_root``.
        callback: called with a :class:`TrainEvent` after every step.

    Raises:
        FeedbackgenError: no threshold, threshold not in the store, existing run directory, bad
            device, unknown algorithm, a key the algorithm does not read, or a store the algorithm
            cannot train on.
    """
    if cfg.threshold is None:
        raise FeedbackgenError(_NO_THRESHOLD)
    algo_cls = get_algorithm(cfg.algo)
    cfg = for_algorithm(cfg)
    device = check_device(cfg.device)
    apply_threads(cfg.threads)
    precision = resolve_precision(cfg.precision, device)
    warn_if_emulated(precision)
    cfg = cfg.replace(precision=precision.precision)  # config.yaml records what auto resolved to
    run_dir = Path(out) if out is not None else default_run_dir(store, cfg, runs_root)
    if run_dir.exists():
        raise FeedbackgenError(f"run directory {run_dir} already exists and runs are never reused; choose "
                               f"another --out, or continue that run with `presa train --resume {run_dir}`")
    data = _load_data(cfg, store, device)
    algo_cls.check_data(data, cfg)
    fingerprint = store_fingerprint(data.store)
    seed_global_rngs(cfg.seed)
    gen = _make_generator(cfg.seed, device)
    algo = algo_cls(cfg, data, gen)

    try:
        run_dir.mkdir(parents=True, exist_ok=False)
    except FileExistsError:
        raise FeedbackgenError(f"run directory {run_dir} already exists and runs are never reused; "
                               "choose another --out") from None
    commit, dirty = _git_commit()
    info = {
        "store": {"path": str(Path(store).resolve()), "id": data.store_id, "fingerprint": fingerprint,
                  "schema_version": data.store.schema_version},
        "algo": cfg.algo, "seed": cfg.seed, "threshold": data.threshold, "device": str(device),
        "threads": torch.get_num_threads(), "precision": precision.to_dict(), "task": data.task,
        "counts": describe(data),
        "toolkit_version": presa.__version__, "git_commit": commit, "git_dirty": dirty,
        "torch_version": torch.__version__, "python_version": platform.python_version(),
        "command": " ".join(sys.argv), "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "resumes": [],
    }
    _write_atomic(run_dir / "config.yaml", dump_yaml(cfg))
    _write_atomic(run_dir / "run.json", json.dumps(info, indent=2) + "\n")
    (run_dir / "checkpoints").mkdir()
    return _Loop(cfg, data, algo, gen, run_dir, fingerprint, start=0).run(callback)


def resume(run_dir: str | Path, *, overrides: dict[str, Any] | None = None,
           callback: Callback | None = None) -> TrainResult:
    """Continue a run from its latest checkpoint, bit-identically on the same device.

    Args:
        run_dir: an existing run directory.
        overrides: only ``total_steps``, ``log_every``, ``checkpoint_every`` may change on resume.

    Raises:
        FeedbackgenError: not a run directory, no checkpoint, a changed store, or other overrides.
    """
    run_dir = Path(run_dir)
    cfg_path, info_path = run_dir / "config.yaml", run_dir / "run.json"
    if not cfg_path.is_file() or not info_path.is_file():
        raise FeedbackgenError(f"{run_dir} is not a presa run directory (no config.yaml/run.json)")
    cfg = saved_config(yaml.safe_load(cfg_path.read_text()) or {})  # also the every-key configs of old runs
    info = json.loads(info_path.read_text())
    overrides = dict(overrides or {})
    bad = sorted(k for k in overrides if k not in RESUME_MUTABLE)
    if bad:
        raise FeedbackgenError(f"cannot change {', '.join(bad)} when resuming (it would change the run); "
                               f"only {', '.join(RESUME_MUTABLE)} may change; start a new run instead")
    if overrides:
        cfg = cfg.replace(**overrides)
    ckpt_path = latest_checkpoint(run_dir)
    device = check_device(cfg.device)
    apply_threads(cfg.threads)
    warn_if_emulated(resolve_precision(cfg.precision, device))
    ckpt = load_checkpoint(ckpt_path, map_location=device)
    start = int(ckpt["step"])
    if start >= cfg.total_steps:
        return TrainResult(run_dir, ckpt_path, start, cfg, _last_record(run_dir), start,
                           already_complete=True)

    store = info["store"]["path"]
    data = _load_data(cfg, store, device)
    fingerprint = store_fingerprint(data.store)
    if fingerprint != info["store"]["fingerprint"]:
        raise FeedbackgenError(f"the store {store} changed since this run started (fingerprint differs); "
                               "start a new run on it instead of resuming")
    algo_cls = get_algorithm(cfg.algo)
    gen = _make_generator(cfg.seed, device)
    algo = algo_cls(cfg, data, gen)
    sd = dict(ckpt["algo_state"])
    sd["policy"], sd["optimizer"] = ckpt["policy"], ckpt["optimizer"]
    algo.load_state_dict(sd)
    restore_rng(ckpt["rng"], gen)

    # metrics after the checkpoint were not reproduced yet: drop them (atomically).
    records = [r for r in read_metrics(run_dir / "metrics.jsonl") if r["step"] <= start]
    _write_atomic(run_dir / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in records))
    info.setdefault("resumes", []).append({"from_step": start, "checkpoint": ckpt_path.name,
                                           "at": datetime.now(UTC).isoformat(timespec="seconds")})
    _write_atomic(info_path, json.dumps(info, indent=2) + "\n")
    if overrides:
        _write_atomic(cfg_path, dump_yaml(cfg))
    final = final_checkpoint_path(run_dir)
    if final.exists():  # a finished run extended with a larger total_steps
        final.unlink()
    result = _Loop(cfg, data, algo, gen, run_dir, fingerprint, start=start).run(callback)
    result.resumed_from = start
    return result


def _last_record(run_dir: Path) -> dict[str, float]:
    records = read_metrics(run_dir / "metrics.jsonl")
    return records[-1] if records else {}


class _Loop:
    """The step loop of one (possibly resumed) run."""

    def __init__(self, cfg: BaseConfig, data: TrainingData, algo: Algorithm, gen: torch.Generator,
                 run_dir: Path, fingerprint: str, start: int) -> None:
        self.cfg, self.data, self.algo, self.gen = cfg, data, algo, gen
        self.run_dir, self.fingerprint, self.start = run_dir, fingerprint, start
        self.heldout = HeldoutSet.from_data(data)

    def heldout_metrics(self) -> dict[str, float]:
        """The held-out metrics (presa.heldout) of each of the algorithm's scorers
        (:meth:`presa.algos.base.Algorithm.heldout_scorers`); none without a validation split."""
        if self.heldout is None:
            return {}
        out: dict[str, float] = {}
        for prefix, score in self.algo.heldout_scorers().items():
            out.update(self.heldout.metrics(score, prefix=prefix))
        return out

    def checkpoint_payload(self, step: int) -> dict[str, Any]:
        sd = self.algo.state_dict()
        policy, optimizer = sd.pop("policy"), sd.pop("optimizer", None)

        def scalar(v: Any) -> float | None:
            return float(v) if isinstance(v, torch.Tensor) else v

        return {
            "format": 1, "policy": policy, "policy_kind": self.algo.policy.kind,
            "policy_kwargs": self.algo.policy.init_kwargs(), "optimizer": optimizer,
            "nu": scalar(sd.get("nu")), "zref": scalar(sd.get("zref")), "algo_state": sd,
            "obs_mean": self.data.obs_mean, "obs_std": self.data.obs_std,
            "config": self.cfg.to_dict(), "algo": self.cfg.algo, "step": step, "rng": capture_rng(self.gen),
            "task": self.data.task, "obs_dim": self.data.obs_dim, "act_dim": self.data.act_dim,
            "threshold": self.data.threshold, "store_id": self.data.store_id, "store_hash": self.fingerprint,
            "toolkit_version": presa.__version__,
        }

    def run(self, callback: Callback | None) -> TrainResult:
        cfg, algo = self.cfg, self.algo
        metrics_path = self.run_dir / "metrics.jsonl"
        sums: dict[str, list[Any]] = {}
        last: dict[str, float] = {}
        t0, s0 = time.perf_counter(), self.start
        step = self.start
        with open(metrics_path, "a") as log:
            while step < cfg.total_steps:
                phase = algo.phase(step)
                out = algo.update(step)
                step += 1
                for k, v in out.items():
                    sums.setdefault(k, []).append(v.detach() if isinstance(v, torch.Tensor) else v)
                record = None
                if step % cfg.log_every == 0 or step == cfg.total_steps:
                    now = time.perf_counter()
                    record = {"step": step, **_reduce(sums)}
                    record["train/steps_per_s"] = (step - s0) / max(now - t0, 1e-9)
                    record.update(self.heldout_metrics())
                    t0, s0 = time.perf_counter(), step  # held-out metrics are not training time
                    sums = {}
                    bad = [k for k, v in record.items() if isinstance(v, float) and not math.isfinite(v)]
                    log.write(json.dumps(record) + "\n")
                    log.flush()
                    last = record
                    if bad:
                        raise FeedbackgenError(f"training diverged at step {step} ({', '.join(bad)} not "
                                               "finite); lower the learning rate or alpha, or use fp32")
                if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < cfg.total_steps:
                    save_checkpoint(step_checkpoint_path(self.run_dir, step), self.checkpoint_payload(step))
                if callback is not None:
                    callback(TrainEvent(step, cfg.total_steps, phase, record,
                                        checkpoint=functools.partial(self.checkpoint_payload, step)))
        final = save_checkpoint(final_checkpoint_path(self.run_dir), self.checkpoint_payload(step))
        delta, bc_steps = getattr(cfg, "delta", None), getattr(cfg, "bc_steps", None)  # PreSa's / two-phase
        plot_training_curves(read_metrics(metrics_path), self.run_dir / "curves.png",
                             delta=delta if algo.needs_safety else None,
                             bc_steps=bc_steps if bc_steps is not None and algo.phase(0) == "bc"
                             and bc_steps < cfg.total_steps else None,
                             title=f"{self.run_dir.name}")
        return TrainResult(self.run_dir, final, step, cfg, last)


def _reduce(sums: dict[str, list[Any]]) -> dict[str, float]:
    """Average each metric over the interval with one device sync."""
    keys, means = [], []
    floats: dict[str, float] = {}
    for k, vs in sums.items():
        if isinstance(vs[0], torch.Tensor):
            keys.append(k)
            means.append(torch.stack([v.float() for v in vs]).mean())
        else:
            floats[f"train/{k}"] = float(sum(vs) / len(vs))
    out = {}
    if means:
        values = torch.stack(means).cpu().tolist()
        out = {f"train/{k}": float(v) for k, v in zip(keys, values, strict=True)}
    out.update(floats)
    return out
