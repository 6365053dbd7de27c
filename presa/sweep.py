"""Run a grid of training + evaluation cells, resumably, and feed ``presa report``.

A grid is stores (or tasks × noise levels) × thresholds × seeds × methods × any training options.
Each **cell** is one ``presa train`` (through :func:`presa.trainer.train`) followed by one
``presa eval`` (:func:`presa.evaluate.evaluate`), written to a run directory whose name is a
function of the cell alone, so the same grid always maps to the same folders.

Grid file (YAML; every key optional except a source of stores and ``methods``)::

    name: ballrun-study            # recorded in the manifest
    out: results/sweeps/ballrun    # output folder (relative paths: to the grid file's folder)
    stores: [datasets/stores/BallRun-mini-noise0.1-seed0.zarr]   # existing stores, and/or
    tasks: [BallRun-mini, CarRun-mini]   # tasks: one store per task × noise level, made with
    noise: [0.1]                         #   `feedbackgen make` into stores_dir (reused if there)
    make: {seed: 0, n_pairs: 10000, n_safety: 10000}   # further `feedbackgen make` options
    stores_dir: stores             # where made stores go (default OUT/stores)
    thresholds: all                # or a list, e.g. [10, 20, 40]; all = the store's thresholds
    seeds: [0, 1, 2]
    methods:                       # names for `presa train --algo`, or mappings:
      - presa
      - bc_safe_seg
      - {algo: presa, label: presa-pid, set: {nu_rule: pid}, grid: {pid_kp: [0.5, 1.0]}}
    preset: quick                  # quick | study | full
    set: {total_steps: 20000}      # options for every method that reads them (config keys)
    grid: {delta: [0.8, 0.9]}      # options swept for every method that reads them (cartesian product)
    episodes: 20                   # evaluation episodes, seed and worker processes per cell
    eval_seed: 0
    eval_workers: 1
    threads: 1                     # torch threads per cell
    device: cpu
    workers: 4                     # cells at once (default: every available core)
    backend: local                 # local (process pool) | ray

**Which options a method gets.** A method's own ``set`` and ``grid`` may hold only keys its
algorithm reads (else the one-line error of :func:`presa.config.check_keys`). The grid-wide ``set``
and ``grid``, like the preset, are recipes for all methods: each method takes the keys its algorithm
reads and leaves the others (``grid: {delta: [0.8, 0.9]}`` sweeps δ for ``presa`` and trains
``bc_all`` once), so one grid file serves any list of methods; a key that no algorithm reads is an
error.

**Method names in the report.** The report groups evaluations by method, so each cell's
evaluation is labelled with the method's ``label`` (default: its algorithm) followed by what
distinguishes it from the other cells of the same task: the swept options (``presa[delta=0.8]``),
and the noise level when one task has stores at several noise levels (``presa[noise=0.2]``), or
the store name when one task has several stores at the same noise level.

**Run directories.** ``OUT/runs/<store>-<label>-<options>-k<κ>-s<seed>``. ``presa report OUT``
(or ``OUT/runs``) reads every evaluation below it; the sweep also writes that report to
``OUT/report`` when it ends.

**Resuming** (a sweep can be stopped at any time and started again with the same grid):

- a cell whose evaluation JSON (``RUN_DIR/eval/eval-seed<S>-n<N>.json``) exists is skipped (after
  checking that its run was trained with the cell's configuration: a grid whose ``set`` changed
  fails those cells rather than mixing old results in);
- a cell whose run directory holds a checkpoint is continued with the trainer's exact resume from
  its latest checkpoint (bit-identical to an uninterrupted run; a finished run is not retrained,
  only evaluated), after checking that its configuration is the cell's (only ``total_steps``,
  ``log_every`` and ``checkpoint_every`` may differ: a larger ``total_steps`` extends the run);
  a run directory made with another configuration is an error (delete it, or use another ``out``);
- a run directory without any checkpoint (stopped before its first one) is deleted and the cell
  restarted from scratch: nothing of it could be reused exactly.

``OUT/manifest.json`` lists every cell with its status (``pending``, ``done``, ``failed``), run
directory, evaluation file and headline scores; it is rewritten atomically after every cell.
``OUT/grid.yaml`` holds the resolved grid, so ``presa sweep OUT/grid.yaml`` resumes a sweep. A lock
file keeps two sweeps from running on the same folder at once.

**Backends.** ``local`` runs cells in a pool of ``workers`` spawned processes (one cell in the
calling process when ``workers`` is 1). ``ray`` submits each cell as a Ray task (``num_cpus`` =
``threads``) to the cluster of ``RAY_ADDRESS`` or a local one; stores and ``out`` must be on a file
system every node sees. Results do not depend on the backend or the number of workers.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import math
import os
import re
import shutil
import time
import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import yaml

from feedbackgen._io import atomic_write_text, available_cores, json_safe, read_yaml_mapping
from feedbackgen.errors import FeedbackgenError

SWEEP_SCHEMA = "presa-sweep/1"
BACKENDS = ("local", "ray")
GRID_KEYS = ("name", "out", "stores", "tasks", "noise", "make", "stores_dir", "thresholds", "seeds",
             "methods", "preset", "set", "grid", "episodes", "eval_seed", "eval_workers", "threads", "device",
             "workers", "backend")
METHOD_KEYS = ("algo", "label", "set", "grid")
DEFAULT_NOISE = 0.1
RAY_MISSING = ("the ray backend needs Ray, which is not installed; install the 'ray' extra: "
               "pip install 'presa-toolkit[ray]' (or use backend local)")
_SLUG = re.compile(r"[^A-Za-z0-9._=+-]+")


# ------------------------------------------------------------------------------------------- spec


@dataclass(frozen=True)
class MethodSpec:
    """One method of the grid: an algorithm, its report label, fixed and swept options."""

    algo: str
    label: str
    set: dict[str, Any] = field(default_factory=dict)
    grid: dict[str, list[Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"algo": self.algo, "label": self.label, "set": dict(self.set), "grid": dict(self.grid)}


@dataclass(frozen=True)
class SweepSpec:
    """A validated grid (see the module docstring for the keys)."""

    out: Path
    methods: tuple[MethodSpec, ...]
    stores: tuple[Path, ...] = ()
    tasks: tuple[str, ...] = ()
    noise: tuple[float, ...] = (DEFAULT_NOISE,)
    make: dict[str, Any] = field(default_factory=dict)
    stores_dir: Path | None = None
    thresholds: tuple[float, ...] | None = None
    seeds: tuple[int, ...] = (0,)
    preset: str = "quick"
    set: dict[str, Any] = field(default_factory=dict)
    grid: dict[str, list[Any]] = field(default_factory=dict)
    episodes: int = 20
    eval_seed: int = 0
    eval_workers: int = 1
    threads: int = 1
    device: str = "cpu"
    workers: int | None = None
    backend: str = "local"
    name: str = "sweep"

    def to_dict(self) -> dict[str, Any]:
        """The resolved grid as YAML-able values (absolute paths)."""
        return {
            "name": self.name, "out": str(self.out), "stores": [str(p) for p in self.stores],
            "tasks": list(self.tasks), "noise": list(self.noise), "make": dict(self.make),
            "stores_dir": str(self.stores_dir) if self.stores_dir else None,
            "thresholds": "all" if self.thresholds is None else list(self.thresholds),
            "seeds": list(self.seeds), "methods": [m.to_dict() for m in self.methods], "preset": self.preset,
            "set": dict(self.set), "grid": dict(self.grid), "episodes": self.episodes,
            "eval_seed": self.eval_seed, "eval_workers": self.eval_workers, "threads": self.threads,
            "device": self.device, "workers": self.workers, "backend": self.backend,
        }

    @property
    def made_stores_dir(self) -> Path:
        return self.stores_dir if self.stores_dir is not None else self.out / "stores"


def load_grid(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a grid YAML file into a mapping (relative paths stay relative to its folder).

    Raises:
        FeedbackgenError: missing/unreadable file, not a mapping, or unknown keys.
    """
    p = Path(path)
    values = read_yaml_mapping(p, "grid file", f"of grid keys ({', '.join(GRID_KEYS)})")
    _check_keys(values, GRID_KEYS, f"grid file {p}")
    base = p.resolve().parent
    for key in ("out", "stores_dir"):
        if values.get(key) is not None:
            values[key] = str(base / str(values[key]))
    if values.get("stores") is not None:
        values["stores"] = [str(base / str(s)) for s in _as_list(values["stores"], "stores")]
    return values


def _check_keys(values: dict, allowed: tuple[str, ...], where: str) -> None:
    unknown = [k for k in values if k not in allowed]
    if unknown:
        import difflib

        parts = []
        for k in unknown:
            close = difflib.get_close_matches(str(k), allowed, n=2, cutoff=0.5)
            parts.append(f"'{k}'" + (f" (did you mean {', '.join(close)}?)" if close else ""))
        raise FeedbackgenError(f"{where}: unknown key{'s' if len(unknown) > 1 else ''} {'; '.join(parts)}; "
                               f"valid keys: {', '.join(allowed)}")


def _as_list(value: Any, name: str) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, str) and "," in value:
        return [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, list | tuple):
        return list(value)
    return [value]


def _num_list(value: Any, name: str, kind: type) -> list[Any]:
    out = []
    for v in _as_list(value, name):
        try:
            x = kind(float(v)) if kind is int else float(v)
            if kind is int and float(v) != x:
                raise ValueError(v)
        except (TypeError, ValueError):
            what = "integers" if kind is int else "numbers"
            raise FeedbackgenError(f"grid key '{name}' expects a list of {what}, got {v!r}") from None
        if kind is float and not math.isfinite(x):
            raise FeedbackgenError(f"grid key '{name}' expects finite numbers, got {v!r}")
        out.append(x)
    return out


def _options(value: Any, name: str) -> dict[str, Any]:
    from presa.config import check_keys

    if value is None:
        return {}
    if not isinstance(value, dict):
        raise FeedbackgenError(f"grid key '{name}' must be a mapping of training options, got {value!r}")
    check_keys(value)
    return dict(value)


def _grid_options(value: Any, name: str) -> dict[str, list[Any]]:
    opts = _options(value, name)
    out = {}
    for k, v in opts.items():
        values = v if isinstance(v, list | tuple) else [v]
        if not values:
            raise FeedbackgenError(f"grid key '{name}': option '{k}' has no values")
        out[k] = list(values)
    return out


def build_spec(values: dict[str, Any]) -> SweepSpec:
    """Validate a grid mapping (from :func:`load_grid` and/or CLI options) into a :class:`SweepSpec`.

    Raises:
        FeedbackgenError: a missing or bad key, with what to do.
    """
    from presa.algos import get_algorithm
    from presa.config import PRESETS, check_keys

    _check_keys(values, GRID_KEYS, "grid")
    if not values.get("out"):
        raise FeedbackgenError("the grid has no output folder; give 'out' in the grid file or --out")
    stores = tuple(Path(s).resolve() for s in _as_list(values.get("stores"), "stores"))
    tasks = tuple(str(t) for t in _as_list(values.get("tasks"), "tasks"))
    if not stores and not tasks:
        raise FeedbackgenError("the grid names no data: give 'stores' (feedback stores) and/or 'tasks' "
                               "(stores are made with `feedbackgen make` per noise level)")
    noise = tuple(_num_list(values.get("noise", [DEFAULT_NOISE]), "noise", float)) or (DEFAULT_NOISE,)
    if any(not 0.0 <= e <= 1.0 for e in noise):
        raise FeedbackgenError(f"grid key 'noise' expects probabilities in [0, 1], got {list(noise)}")
    make = values.get("make") or {}
    if not isinstance(make, dict):
        raise FeedbackgenError("grid key 'make' must be a mapping of `feedbackgen make` options")
    bad = sorted(set(make) & {"task", "noise", "out", "overwrite"})
    if bad:
        raise FeedbackgenError(f"grid key 'make' may not set {', '.join(bad)} (the sweep sets them)")
    raw_th = values.get("thresholds", "all")
    thresholds = None if raw_th in (None, "all") else tuple(_num_list(raw_th, "thresholds", float))
    seeds = tuple(_num_list(values.get("seeds", [0]), "seeds", int))
    if not seeds or any(s < 0 for s in seeds):
        raise FeedbackgenError("grid key 'seeds' needs at least one seed, all ≥ 0")
    methods = []
    for m in _as_list(values.get("methods"), "methods"):
        if isinstance(m, str):
            m = {"algo": m}
        if not isinstance(m, dict) or not m.get("algo"):
            raise FeedbackgenError(f"each method is an algorithm name or a mapping with 'algo', got {m!r}")
        _check_keys(m, METHOD_KEYS, f"method {m.get('algo')!r}")
        get_algorithm(str(m["algo"]))
        spec_m = MethodSpec(algo=str(m["algo"]), label=str(m.get("label") or m["algo"]),
                            set=_options(m.get("set"), "methods.set"),
                            grid=_grid_options(m.get("grid"), "methods.grid"))
        for key in ("set", "grid"):
            try:
                check_keys(getattr(spec_m, key), spec_m.algo)
            except FeedbackgenError as exc:
                raise FeedbackgenError(f"method {spec_m.label!r}, '{key}': {exc}") from None
        methods.append(spec_m)
    if not methods:
        raise FeedbackgenError("the grid has no methods; give e.g. methods: [presa, bc_safe_seg, two_stage]")
    labels = [m.label for m in methods]
    dup = sorted({x for x in labels if labels.count(x) > 1})
    if dup:
        raise FeedbackgenError(f"two methods share the label {', '.join(dup)}; give each a distinct 'label'")
    preset = str(values.get("preset") or "quick")
    if preset not in PRESETS:
        raise FeedbackgenError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    for key in ("algo", "threshold", "seed", "device"):
        if key in (values.get("set") or {}) or key in (values.get("grid") or {}):
            raise FeedbackgenError(f"'{key}' is a grid dimension of its own; do not put it in 'set' or "
                                   "'grid'")
    backend = str(values.get("backend") or "local")
    if backend not in BACKENDS:
        raise FeedbackgenError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")

    def positive(key: str, default: int | None) -> int | None:
        v = values.get(key, default)
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, int | float) or int(v) != v or v < 1:
            raise FeedbackgenError(f"grid key '{key}' must be a whole number ≥ 1, got {v!r}")
        return int(v)

    eval_seed = values.get("eval_seed", 0)
    if isinstance(eval_seed, bool) or not isinstance(eval_seed, int) or eval_seed < 0:
        raise FeedbackgenError(f"grid key 'eval_seed' must be a whole number ≥ 0, got {eval_seed!r}")
    return SweepSpec(
        out=Path(values["out"]).resolve(), methods=tuple(methods), stores=stores, tasks=tasks, noise=noise,
        make=dict(make),
        stores_dir=Path(values["stores_dir"]).resolve() if values.get("stores_dir") else None,
        thresholds=thresholds, seeds=seeds, preset=preset, set=_options(values.get("set"), "set"),
        grid=_grid_options(values.get("grid"), "grid"), episodes=positive("episodes", 20) or 20,
        eval_seed=int(eval_seed), eval_workers=positive("eval_workers", 1) or 1,
        threads=positive("threads", 1) or 1, device=str(values.get("device") or "cpu"),
        workers=positive("workers", None), backend=backend, name=str(values.get("name") or "sweep"))


# ------------------------------------------------------------------------------------------ stores


@dataclass(frozen=True)
class StoreEntry:
    """A store of the grid: its path, task, noise level (None if unknown) and thresholds."""

    path: Path
    task: str
    suite: str | None
    noise: float | None
    thresholds: tuple[float, ...]
    made: bool = False


def _store_entry(path: Path, made: bool = False) -> StoreEntry:
    from feedbackgen.store import open_store

    data = open_store(path, lazy=True)
    meta = data.metadata or {}
    task = meta.get("task") or {}
    pref_noise = (meta.get("preferences") or {}).get("noise")
    return StoreEntry(path=path, task=str(task.get("name") or path.name), suite=task.get("suite"),
                      noise=float(pref_noise) if pref_noise is not None else None,
                      thresholds=tuple(float(t) for t in data.thresholds[:]), made=made)


def made_store_path(spec: SweepSpec, task: str, noise: float) -> Path:
    """Where the grid's store of ``task`` at ``noise`` lives: ``STORES_DIR/<task>-noise<ε>-seed<S>.zarr``."""
    seed = int(spec.make.get("seed", 0))
    return spec.made_stores_dir / f"{task}-noise{noise:g}-seed{seed}.zarr"


def prepare_stores(spec: SweepSpec, progress: Callable[[str], None] | None = None) -> list[StoreEntry]:
    """The grid's stores: the given ones, then one per task × noise level, made with
    ``feedbackgen make`` unless a store made with the same parameters is already there.

    Raises:
        FeedbackgenError: a missing store, or an existing store at a made-store path whose
            parameters differ from the grid's.
    """
    from feedbackgen.make import MakeConfig, make_store
    from feedbackgen.store import open_store

    entries = []
    for p in spec.stores:
        if not p.exists():
            raise FeedbackgenError(f"store {p} does not exist; make it with `feedbackgen make` or fix "
                                   "'stores'")
        entries.append(_store_entry(p))
    for task in spec.tasks:
        for noise in spec.noise:
            out = made_store_path(spec, task, noise)
            try:
                cfg = MakeConfig(task=task, noise=noise, out=out, **spec.make)
            except TypeError as exc:
                raise FeedbackgenError(f"grid key 'make': {exc}; use `feedbackgen make` option "
                                       "names") from None
            if out.exists():
                have = (open_store(out, lazy=True).metadata or {}).get("params")
                want = json.loads(json.dumps(cfg.content_params()))
                if have != want:
                    raise FeedbackgenError(f"{out} exists but was made with other parameters than the "
                                           "grid's; "
                                           "delete it, or set 'stores_dir' to another folder")
                entries.append(_store_entry(out, made=False))
                continue
            if progress is not None:
                progress(f"making store {out.name} (feedbackgen make --task {task} --noise {noise:g})")
            out.parent.mkdir(parents=True, exist_ok=True)
            make_store(cfg)
            entries.append(_store_entry(out, made=True))
    paths = [e.path for e in entries]
    if len(set(paths)) != len(paths):
        raise FeedbackgenError("the grid names the same store twice; list each store once")
    return entries


# ------------------------------------------------------------------------------------------- cells


@dataclass(frozen=True)
class Cell:
    """One training + evaluation of the grid (everything a worker needs; plain values only)."""

    id: str
    store: str
    task: str
    suite: str | None
    noise: float | None
    method: str
    algo: str
    threshold: float
    seed: int
    options: dict[str, Any]
    overrides: dict[str, Any]
    preset: str
    run_dir: str
    episodes: int
    eval_seed: int
    eval_workers: int
    threads: int

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def eval_path(self) -> Path:
        return Path(self.run_dir) / "eval" / f"eval-seed{self.eval_seed}-n{self.episodes}.json"


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, list | tuple):
        return "x".join(_fmt(x) for x in v)
    return str(v)


def _slug(text: str) -> str:
    return _SLUG.sub("_", text).strip("_") or "x"


def _store_name(path: Path) -> str:
    name = path.name
    for suffix in (".zip", ".zarr"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return name


def _product(grid: dict[str, list[Any]]) -> Iterator[dict[str, Any]]:
    keys = sorted(grid)
    for values in itertools.product(*(grid[k] for k in keys)):
        yield dict(zip(keys, values, strict=True))


def expand_cells(spec: SweepSpec, stores: list[StoreEntry]) -> list[Cell]:
    """Every cell of the grid, in a fixed order (store, method, options, threshold, seed).

    Raises:
        FeedbackgenError: a threshold a store does not have, or options that fail validation.
    """
    from presa.config import applicable, resolve_config

    by_task: dict[str, list[StoreEntry]] = {}
    for e in stores:
        by_task.setdefault(e.task, []).append(e)
    cells: list[Cell] = []
    for entry in stores:
        siblings = by_task[entry.task]
        tags: list[str] = []
        if len(siblings) > 1:
            noises = [s.noise for s in siblings]
            if None not in noises and len(set(noises)) == len(noises):
                tags.append(f"noise={entry.noise:g}")
            else:
                tags.append(f"store={_store_name(entry.path)}")
        thresholds = entry.thresholds if spec.thresholds is None else spec.thresholds
        for k in thresholds:
            if not any(math.isclose(k, t) for t in entry.thresholds):
                have = ", ".join(f"{t:g}" for t in entry.thresholds)
                raise FeedbackgenError(f"threshold {k:g} is not in the store {entry.path} (it has {have}); "
                                       "fix 'thresholds' or use thresholds: all")
        for method in spec.methods:
            # the grid-wide options this method's algorithm reads (see the module docstring)
            grid = {**applicable(spec.grid, method.algo), **method.grid}
            common = {**applicable(spec.set, method.algo), **method.set}
            for options in _product(grid):
                opt_tags = [f"{k}={_fmt(v)}" for k, v in options.items()]
                label = method.label + (f"[{','.join(opt_tags + tags)}]" if opt_tags or tags else "")
                for k in thresholds:
                    for seed in spec.seeds:
                        overrides = {**common, **options, "algo": method.algo,
                                     "threshold": float(k), "seed": int(seed), "device": spec.device}
                        # validates the options now rather than in a worker
                        resolve_config(suite=entry.suite, preset=spec.preset, overrides=overrides)
                        name = "-".join([_store_name(entry.path), method.label, *opt_tags, f"k{k:g}",
                                         f"s{seed}"])
                        run_dir = spec.out / "runs" / _slug(name)
                        cells.append(Cell(
                            id=_slug(name), store=str(entry.path), task=entry.task, suite=entry.suite,
                            noise=entry.noise, method=label, algo=method.algo, threshold=float(k),
                            seed=int(seed),
                            options=options, overrides=overrides, preset=spec.preset, run_dir=str(run_dir),
                            episodes=spec.episodes, eval_seed=spec.eval_seed, eval_workers=spec.eval_workers,
                            threads=spec.threads))
    ids = [c.id for c in cells]
    if len(set(ids)) != len(ids):
        raise FeedbackgenError("two cells of the grid map to the same run directory (stores with the same "
                               "name?); give the stores distinct names")
    return cells


# ------------------------------------------------------------------------------------- cell state


def cell_action(cell: Cell) -> str:
    """What a cell needs: ``skip`` (evaluated), ``resume`` (a checkpoint exists: continue it, or
    only evaluate a finished run; also an evaluated run shorter than the cell's ``total_steps``),
    ``restart`` (a run directory without checkpoint) or ``train``."""
    from presa.checkpoint import final_checkpoint_path, step_checkpoints

    run_dir = Path(cell.run_dir)
    if cell.eval_path.is_file():
        trained = _run_total_steps(run_dir)
        if trained is None or trained >= _cell_config(cell).total_steps:
            return "skip"
        return "resume"  # the grid asks for more steps than this run had: extend it, evaluate again
    if not run_dir.exists():
        return "train"
    has_ckpt = final_checkpoint_path(run_dir).is_file() or bool(step_checkpoints(run_dir))
    if has_ckpt and (run_dir / "config.yaml").is_file() and (run_dir / "run.json").is_file():
        return "resume"
    return "restart"


def _run_total_steps(run_dir: Path) -> int | None:
    try:
        values = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
        return int(values["total_steps"])
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError):
        return None


def _cell_config(cell: Cell):
    from presa.config import resolve_config

    return resolve_config(suite=cell.suite, preset=cell.preset, overrides=cell.overrides)


def _check_same_config(cell: Cell, cfg) -> None:
    from presa.config import RESUME_MUTABLE, saved_config

    have = saved_config(yaml.safe_load((Path(cell.run_dir) / "config.yaml").read_text()) or {})
    a = {k: v for k, v in have.to_dict().items() if k not in RESUME_MUTABLE}
    b = {k: v for k, v in cfg.to_dict().items() if k not in RESUME_MUTABLE}
    if b.get("precision") == "auto":  # a run records what auto resolved to on its machine
        b["precision"] = a.get("precision")
    diff = sorted(k for k in a if a[k] != b.get(k))
    if diff:
        raise FeedbackgenError(f"{cell.run_dir} was trained with another configuration ({', '.join(diff)} "
                               "differ from the grid); delete that run directory or use another 'out'")


def run_cell(cell_dict: dict[str, Any]) -> dict[str, Any]:
    """Train (or resume) and evaluate one cell; never raises (a failure is returned as a record).

    Returns:
        ``{"id", "status": done|failed, "action", "error", "eval_json", "normalized_reward",
        "normalized_cost", "safe", "wall_s"}``.
    """
    import torch

    from presa.evaluate import evaluate, read_eval_json, write_eval_json
    from presa.trainer import resume, train

    cell = Cell(**cell_dict)
    t0 = time.perf_counter()
    record: dict[str, Any] = {"id": cell.id, "status": "failed", "action": None, "error": None,
                              "eval_json": None, "normalized_reward": None, "normalized_cost": None,
                              "safe": None, "wall_s": None}
    threads = torch.get_num_threads()
    torch.set_num_threads(cell.threads)
    try:
        action = cell_action(cell)
        record["action"] = action
        if action == "skip":
            _check_same_config(cell, _cell_config(cell))
            rec = read_eval_json(cell.eval_path)
        else:
            cfg = _cell_config(cell)
            run_dir = Path(cell.run_dir)
            if action == "restart":
                shutil.rmtree(run_dir)
            if action == "resume":
                _check_same_config(cell, cfg)
                from presa.config import RESUME_MUTABLE
                resume(run_dir, overrides={k: getattr(cfg, k) for k in RESUME_MUTABLE})
            else:
                run_dir.parent.mkdir(parents=True, exist_ok=True)
                train(cfg, cell.store, run_dir)
            result = evaluate(run_dir, episodes=cell.episodes, seed=cell.eval_seed, workers=cell.eval_workers)
            sweep_info = {"cell": cell.id, "algo": cell.algo, "options": cell.options, "noise": cell.noise,
                          "store": cell.store}
            result = dataclasses.replace(result, method=cell.method,
                                         extra={**result.extra, "sweep": sweep_info})
            rec = read_eval_json(write_eval_json(run_dir, result))
        record.update(status="done", eval_json=str(cell.eval_path),
                      normalized_reward=rec.get("normalized_reward"),
                      normalized_cost=rec.get("normalized_cost"), safe=rec.get("safe"))
    except FeedbackgenError as exc:
        record["error"] = str(exc)
    except Exception as exc:  # keep the sweep going; the traceback goes beside the run
        record["error"] = f"{type(exc).__name__}: {exc}"
        with contextlib.suppress(OSError):
            Path(cell.run_dir).parent.mkdir(parents=True, exist_ok=True)
            Path(f"{cell.run_dir}.error.txt").write_text(traceback.format_exc())
    finally:
        torch.set_num_threads(threads)
    record["wall_s"] = round(time.perf_counter() - t0, 3)
    return record


# ---------------------------------------------------------------------------------------- running


@dataclass
class SweepResult:
    """What a sweep did: every cell's latest record, and counts for this invocation."""

    out: Path
    cells: list[Cell]
    records: dict[str, dict[str, Any]]
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    left: list[str] = field(default_factory=list)
    report: dict[str, Path] | None = None
    manifest: Path | None = None

    @property
    def done(self) -> int:
        return sum(1 for r in self.records.values() if r.get("status") == "done")


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text)


def write_manifest(spec: SweepSpec, cells: list[Cell], records: dict[str, dict[str, Any]]) -> Path:
    """``OUT/manifest.json``: the grid and every cell with its status (atomic)."""
    rows = []
    for c in cells:
        rec = records.get(c.id, {})
        rows.append({"id": c.id, "task": c.task, "store": c.store, "noise": c.noise, "method": c.method,
                     "algo": c.algo, "threshold": c.threshold, "seed": c.seed, "options": c.options,
                     "run_dir": os.path.relpath(c.run_dir, spec.out),
                     "status": rec.get("status", "pending"), "action": rec.get("action"),
                     "error": rec.get("error"), "eval_json": os.path.relpath(rec["eval_json"], spec.out)
                     if rec.get("eval_json") else None,
                     "normalized_reward": rec.get("normalized_reward"),
                     "normalized_cost": rec.get("normalized_cost"), "safe": rec.get("safe"),
                     "wall_s": rec.get("wall_s")})
    counts = {s: sum(1 for r in rows if r["status"] == s) for s in ("done", "failed", "pending")}
    manifest = {"schema": SWEEP_SCHEMA, "name": spec.name,
                "updated": datetime.now(UTC).isoformat(timespec="seconds"),
                "counts": {"cells": len(rows), **counts}, "grid": spec.to_dict(), "cells": rows}
    path = spec.out / "manifest.json"
    _atomic_write(path, json.dumps(json_safe(manifest), indent=2) + "\n")
    return path


@contextlib.contextmanager
def _lock(out: Path) -> Iterator[None]:
    out.mkdir(parents=True, exist_ok=True)
    path = out / ".sweep.lock"
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                pid = int(path.read_text().strip() or 0)
            except (OSError, ValueError):
                pid = 0
            if pid and _alive(pid):
                raise FeedbackgenError(f"another sweep (process {pid}) is running on {out}; wait for it or "
                                       "stop it first") from None
            path.unlink(missing_ok=True)  # stale lock of a process that is gone
            continue
        with os.fdopen(fd, "w") as f:
            f.write(str(os.getpid()))
        break
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def default_workers() -> int:
    """One worker per core this process may run on."""
    return available_cores()


CellCallback = Callable[[Cell, dict[str, Any]], None]


def _run_local(cells: list[Cell], workers: int, on_done: CellCallback) -> None:
    if workers <= 1 or len(cells) <= 1:
        for c in cells:
            on_done(c, run_cell(c.to_dict()))
        return
    with ProcessPoolExecutor(max_workers=min(workers, len(cells)), mp_context=get_context("spawn")) as pool:
        futures: dict[Future, Cell] = {pool.submit(run_cell, c.to_dict()): c for c in cells}
        pending = set(futures)
        try:
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in sorted(done, key=lambda f: futures[f].id):
                    on_done(futures[fut], fut.result())
        except BaseException:
            for fut in pending:
                fut.cancel()
            raise


def ray_available() -> bool:
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


def _run_ray(cells: list[Cell], threads: int, on_done: CellCallback) -> None:
    try:
        import ray
    except ImportError:
        raise FeedbackgenError(RAY_MISSING) from None
    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS"), ignore_reinit_error=True, log_to_driver=False)
    task = ray.remote(num_cpus=threads)(run_cell)
    pending = {task.remote(c.to_dict()): c for c in cells}
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        for ref in done:
            on_done(pending.pop(ref), ray.get(ref))


def plan(spec: SweepSpec, progress: Callable[[str], None] | None = None
         ) -> tuple[list[StoreEntry], list[Cell]]:
    """Prepare the stores (making missing ones) and expand the cells."""
    stores = prepare_stores(spec, progress)
    return stores, expand_cells(spec, stores)


def run_sweep(spec: SweepSpec, *, max_cells: int | None = None, report: bool = True,
              progress: Callable[[str], None] | None = None,
              on_cell: CellCallback | None = None) -> SweepResult:
    """Run (or resume) every cell of ``spec`` and write the manifest and the report.

    Args:
        spec: the grid.
        max_cells: run at most this many of the cells that still need work (None: all); the rest
            stay pending for the next invocation.
        report: write ``OUT/report`` (``presa report``'s files) from every evaluated cell at the end.
        progress: called with one-line messages (stores being made, ...).
        on_cell: called with ``(cell, record)`` as each cell finishes.

    Raises:
        FeedbackgenError: a bad grid, a missing simulator/extra, or another sweep on ``spec.out``.
    """
    if spec.backend == "ray" and not ray_available():
        raise FeedbackgenError(RAY_MISSING)
    created = not spec.out.exists()
    planned = False
    try:
        with _lock(spec.out):
            stores, cells = plan(spec, progress)
            planned = True
            return _run_cells(spec, cells, max_cells=max_cells, report=report, on_cell=on_cell)
    except FeedbackgenError:
        if created and not planned:  # a grid refused before any cell ran leaves no folder behind
            shutil.rmtree(spec.out, ignore_errors=True)
        raise


def _run_cells(spec: SweepSpec, cells: list[Cell], *, max_cells: int | None, report: bool,
               on_cell: CellCallback | None) -> SweepResult:
    """The body of :func:`run_sweep` once the stores exist and the cells are planned (lock held)."""
    _atomic_write(spec.out / "grid.yaml", yaml.safe_dump(spec.to_dict(), sort_keys=False))
    records: dict[str, dict[str, Any]] = {}
    todo: list[Cell] = []
    result = SweepResult(out=spec.out, cells=cells, records=records)
    for c in cells:
        action = cell_action(c)
        if action == "skip":
            records[c.id] = run_cell(c.to_dict())  # checks the config, reads the evaluation
            if records[c.id]["status"] == "done":
                result.skipped.append(c.id)
            else:
                result.failed.append(c.id)
                if on_cell is not None:
                    on_cell(c, records[c.id])
        else:
            todo.append(c)
    if max_cells is not None:
        todo, rest = todo[:max_cells], todo[max_cells:]
        result.left = [c.id for c in rest]
    result.manifest = write_manifest(spec, cells, records)

    def done(cell: Cell, record: dict[str, Any]) -> None:
        records[cell.id] = record
        (result.ran if record["status"] == "done" else result.failed).append(cell.id)
        write_manifest(spec, cells, records)
        if on_cell is not None:
            on_cell(cell, record)

    if todo:
        if spec.backend == "ray":
            _run_ray(todo, spec.threads, done)
        else:
            _run_local(todo, spec.workers or default_workers(), done)
    result.manifest = write_manifest(spec, cells, records)
    if report and result.done:
        from presa.report import build_report, write_report

        evaluated = [records[c.id]["eval_json"] for c in cells
                     if records.get(c.id, {}).get("status") == "done"]
        result.report = write_report(build_report(evaluated), spec.out / "report")
    return result
