"""presa.sweep: grid validation, cell expansion and labels, store making/reuse, and a tiny real sweep
(BallRun, quick training, 2-episode evaluations) run half, interrupted, resumed and reported."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from feedbackgen.errors import FeedbackgenError
from presa.report import build_report
from presa.sweep import (
    Cell,
    StoreEntry,
    build_spec,
    cell_action,
    expand_cells,
    load_grid,
    made_store_path,
    prepare_stores,
    ray_available,
    run_cell,
    run_sweep,
)

TASK = "BallRun-sweeptest"
SMALL = {"total_steps": 30, "bc_steps": 10, "hidden": [32, 32], "bc_batch": 64, "pair_batch": 16,
         "safety_batch": 16, "log_every": 10, "checkpoint_every": 10}


@pytest.fixture(scope="module")
def ballrun_task(tmp_path_factory: pytest.TempPathFactory):
    """A real BallRun dataset (random policy, 8 episodes of 40 steps) registered as a shipped task."""
    pytest.importorskip("bullet_safety_gym")
    from feedbackgen.collect import CollectConfig, collect

    root = tmp_path_factory.mktemp("registry")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FEEDBACKGEN_DATASETS_DIR", str(root))
        collect(CollectConfig(task="BallRun", out=root / TASK, episodes=8, policies=("random",), seed=0,
                              workers=1, max_episode_steps=40))
        yield TASK


def _grid(out: Path, **kw) -> dict:
    return {"out": str(out), "tasks": [TASK], "noise": [0.1],
            "make": {"n_pairs": 60, "n_safety": 60, "segment_length": 10}, "thresholds": [20],
            "seeds": [0, 1],
            "methods": ["bc_all", "bc_safe_seg"], "set": dict(SMALL), "episodes": 2, "workers": 1, **kw}


# ------------------------------------------------------------------------------- spec (no simulator)


@pytest.mark.parametrize("values, match", [
    ({"tasks": ["X"], "methods": ["presa"]}, "no output folder"),
    ({"out": "o", "methods": ["presa"]}, "names no data"),
    ({"out": "o", "tasks": ["X"]}, "no methods"),
    ({"out": "o", "tasks": ["X"], "methods": ["presaa"]}, "unknown algorithm 'presaa'"),
    ({"out": "o", "tasks": ["X"], "methods": ["presa"], "sedes": [0]}, "did you mean seeds"),
    ({"out": "o", "tasks": ["X"], "methods": ["presa"], "grid": {"dleta": [1]}},
     "unknown config key 'dleta'"),
    ({"out": "o", "tasks": ["X"], "methods": ["presa"], "grid": {"seed": [1, 2]}}, "grid dimension"),
    ({"out": "o", "tasks": ["X"], "methods": ["presa", {"algo": "presa"}]}, "share the label presa"),
    ({"out": "o", "tasks": ["X"], "methods": ["presa"], "noise": [1.5]}, "probabilities"),
    ({"out": "o", "tasks": ["X"], "methods": ["presa"], "seeds": ["a"]}, "list of integers"),
    ({"out": "o", "tasks": ["X"], "methods": ["presa"], "backend": "slurm"}, "unknown backend"),
    ({"out": "o", "tasks": ["X"], "methods": ["presa"], "make": {"noise": 0.2}}, "may not set noise"),
    # a method's own options must be keys its algorithm reads
    ({"out": "o", "tasks": ["X"], "methods": [{"algo": "bc_all", "set": {"nu_lr": 0.1}}]},
     r"method 'bc_all', 'set': unknown config key 'nu_lr' \(only presa, two_stage read it\) for algorithm "
     "bc_all; valid keys: algo,"),
    ({"out": "o", "tasks": ["X"], "methods": [{"algo": "cpl", "label": "c", "grid": {"delta": [0.8]}}]},
     r"method 'c', 'grid': unknown config key 'delta' \(only presa read it\) for algorithm cpl"),
    # grid-wide options are a recipe for every method, but a key no algorithm reads is still an error
    ({"out": "o", "tasks": ["X"], "methods": ["bc_all"], "set": {"nu_lrr": 0.1}}, "did you mean nu_lr"),
])
def test_bad_grids_are_one_line_errors(values: dict, match: str):
    with pytest.raises(FeedbackgenError, match=match) as exc:
        build_spec(values)
    assert "\n" not in str(exc.value)


def test_grid_file_paths_are_relative_to_the_file(tmp_path: Path):
    (tmp_path / "g").mkdir()
    path = tmp_path / "g" / "grid.yaml"
    path.write_text(yaml.safe_dump({"out": "sw", "stores": ["s.zarr"], "methods": ["presa"], "seeds": "0,1",
                                    "thresholds": "all"}))
    spec = build_spec(load_grid(path))
    assert spec.out == tmp_path / "g" / "sw" and spec.stores == (tmp_path / "g" / "s.zarr",)
    assert spec.seeds == (0, 1) and spec.thresholds is None and spec.preset == "quick"
    path.write_text("out: [unclosed")
    with pytest.raises(FeedbackgenError, match="not readable YAML"):
        load_grid(path)


def test_cells_labels_and_run_dirs_are_deterministic(tmp_path: Path):
    pid = {"algo": "presa", "label": "presa-pid", "set": {"nu_rule": "pid"}, "grid": {"pid_kp": [0.5, 1]}}
    spec = build_spec({"out": str(tmp_path), "stores": ["a.zarr"], "methods": ["bc_all", pid],
                       "grid": {"delta": [0.8, 0.9]}, "thresholds": "all", "seeds": [0, 1],
                       "set": {"total_steps": 50, "bc_steps": 10}})
    stores = [StoreEntry(Path("/s/T-noise0.1.zarr"), "T", "bullet", 0.1, (10.0, 20.0)),
              StoreEntry(Path("/s/T-noise0.2.zarr"), "T", "bullet", 0.2, (10.0, 20.0))]
    cells = expand_cells(spec, stores)
    # 2 stores × (bc_all once: it reads neither delta nor bc_steps + presa-pid × 2 deltas × 2 kp)
    # × 2 thresholds × 2 seeds
    assert len(cells) == 2 * (1 + 4) * 2 * 2
    assert cells == expand_cells(spec, stores)
    labels = {c.method for c in cells}
    assert "bc_all[noise=0.1]" in labels and "presa-pid[delta=0.9,pid_kp=1,noise=0.2]" in labels
    bc = next(c for c in cells if c.algo == "bc_all")
    assert bc.overrides == {"total_steps": 50, "algo": "bc_all", "threshold": 10.0, "seed": 0,
                            "device": "cpu"}
    c = next(c for c in cells if c.method == "presa-pid[delta=0.9,pid_kp=0.5,noise=0.1]"
             and c.threshold == 20 and c.seed == 1)
    assert c.overrides == {"total_steps": 50, "bc_steps": 10, "nu_rule": "pid", "delta": 0.9, "pid_kp": 0.5,
                           "algo": "presa", "threshold": 20.0, "seed": 1, "device": "cpu"}
    assert Path(c.run_dir) == tmp_path / "runs" / "T-noise0.1-presa-pid-delta=0.9-pid_kp=0.5-k20-s1"
    assert len({x.run_dir for x in cells}) == len(cells)
    with pytest.raises(FeedbackgenError, match="threshold 15 is not in the store"):
        expand_cells(build_spec({"out": str(tmp_path), "stores": ["a.zarr"], "methods": ["bc_all"],
                                 "thresholds": [15]}), stores)
    # one store per task: no noise tag
    assert {x.method for x in expand_cells(spec, stores[:1])} >= {"bc_all", "presa-pid[delta=0.8,pid_kp=1]"}


def test_a_run_saved_by_an_earlier_version_still_counts_as_the_cells(tmp_path: Path):
    """Earlier versions saved every key in config.yaml, whatever the algorithm: a sweep run then is
    still recognised as its cell's (resumed or skipped), and a changed option is still found."""
    from presa.config import PRESET_VALUES, SUITE_DEFAULTS, TrainConfig
    from presa.sweep import _cell_config, _check_same_config

    spec = build_spec({"out": str(tmp_path), "stores": ["a.zarr"], "methods": ["bc_all"], "preset": "study",
                       "set": {"total_steps": 2500, "nu_lr": 0.1}})
    (cell,) = expand_cells(spec, [StoreEntry(Path("/s/T.zarr"), "T", "bullet", 0.1, (10.0,))])
    assert "nu_lr" not in cell.overrides
    cfg = _cell_config(cell)
    old = TrainConfig.from_dict({**SUITE_DEFAULTS["bullet"], **PRESET_VALUES["study"], "nu_lr": 0.1,
                                 **cfg.to_dict()}).to_dict()
    run = Path(cell.run_dir)
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump(old))
    _check_same_config(cell, cfg)
    (run / "config.yaml").write_text(yaml.safe_dump({**old, "lr": 3e-4}))
    with pytest.raises(FeedbackgenError, match=r"another configuration \(lr"):
        _check_same_config(cell, cfg)


def test_a_cell_asking_auto_accepts_the_precision_its_run_recorded(tmp_path: Path):
    """A run records what ``precision: auto`` resolved to on its machine (fp32 or bf16): a cell asking
    auto is the same configuration; one asking a precision explicitly must match it. A run made
    before ``safety_draw`` existed drew its safety rows independently: not the default cell."""
    from presa.config import dump_yaml
    from presa.sweep import _cell_config, _check_same_config

    spec = build_spec({"out": str(tmp_path), "stores": ["a.zarr"], "methods": ["presa"], "thresholds": [10],
                       "seeds": [0], "set": {"total_steps": 50, "bc_steps": 10}})
    stores = [StoreEntry(Path("/s/T.zarr"), "T", "bullet", 0.1, (10.0,))]
    cell = expand_cells(spec, stores)[0]
    cfg = _cell_config(cell)
    assert cfg.precision == "auto"
    run = Path(cell.run_dir)
    run.mkdir(parents=True)
    for recorded in ("bf16", "fp32"):
        (run / "config.yaml").write_text(dump_yaml(cfg.replace(precision=recorded)))
        _check_same_config(cell, cfg)
    _check_same_config(cell, cfg.replace(precision="fp32"))  # the run recorded fp32
    with pytest.raises(FeedbackgenError, match=r"another configuration \(precision differ"):
        _check_same_config(cell, cfg.replace(precision="bf16"))
    values = cfg.replace(precision="fp32").to_dict()
    del values["safety_draw"]
    (run / "config.yaml").write_text(yaml.safe_dump(values))
    with pytest.raises(FeedbackgenError, match=r"another configuration \(safety_draw differ"):
        _check_same_config(cell, cfg)
    _check_same_config(cell, cfg.replace(safety_draw="independent"))


def test_ray_backend_without_ray_names_the_extra(tmp_path: Path):
    if ray_available():
        pytest.skip("ray is installed")
    spec = build_spec({"out": str(tmp_path), "tasks": ["X"], "methods": ["bc_all"], "backend": "ray"})
    with pytest.raises(FeedbackgenError, match=r"presa-toolkit\[ray\]"):
        run_sweep(spec)


def test_a_failing_cell_is_a_record_not_an_exception(tmp_path: Path):
    cell = Cell(id="x", store=str(tmp_path / "missing.zarr"), task="T", suite="bullet", noise=None,
                method="bc_all", algo="bc_all", threshold=10.0, seed=0, options={},
                overrides={"algo": "bc_all", "threshold": 10.0, "seed": 0, "total_steps": 5},
                preset="quick", run_dir=str(tmp_path / "runs" / "x"), episodes=1, eval_seed=0, eval_workers=1,
                threads=1)
    assert cell_action(cell) == "train"
    rec = run_cell(cell.to_dict())
    assert rec["status"] == "failed" and "missing.zarr" in rec["error"] and rec["action"] == "train"


# ------------------------------------------------------------------------ stores and the real sweep


def test_stores_are_made_once_and_reused(ballrun_task: str, tmp_path: Path, monkeypatch):
    spec = build_spec(_grid(tmp_path / "sw", noise=[0.0, 0.2]))
    made = prepare_stores(spec)
    assert [e.made for e in made] == [True, True] and [e.noise for e in made] == [0.0, 0.2]
    assert made[0].path == made_store_path(spec, TASK, 0.0)
    assert made[0].path == tmp_path / "sw" / "stores" / f"{TASK}-noise0-seed0.zarr"
    stamp = os.stat(made[1].path).st_mtime_ns
    again = prepare_stores(spec)
    assert [e.made for e in again] == [False, False] and os.stat(again[1].path).st_mtime_ns == stamp
    other = build_spec(_grid(tmp_path / "sw", noise=[0.2], make={"n_pairs": 50, "n_safety": 50,
                                                                  "segment_length": 10}))
    with pytest.raises(FeedbackgenError, match="made with other parameters"):
        prepare_stores(other)


class _Interrupt(Exception):
    pass


def _interrupt_at(step: int):
    def callback(event) -> None:
        if event.step == step:
            raise _Interrupt
    return callback


def test_sweep_runs_half_resumes_and_feeds_report(ballrun_task: str, tmp_path: Path):
    from presa.checkpoint import load_checkpoint
    from presa.config import resolve_config
    from presa.evaluate import read_eval_json
    from presa.trainer import train

    out = tmp_path / "sw"
    spec = build_spec(_grid(out))
    first = run_sweep(spec, max_cells=2, report=False)
    ids = [c.id for c in first.cells]
    assert len(ids) == 4 and first.ran == ids[:2] and first.left == ids[2:] and not first.skipped
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"] == {"cells": 4, "done": 2, "failed": 0, "pending": 2}
    assert [c["status"] for c in manifest["cells"]] == ["done", "done", "pending", "pending"]
    assert (out / "grid.yaml").is_file() and not (out / ".sweep.lock").exists()

    # cell 3 is interrupted after its step-10 checkpoint; cell 4 died before its first checkpoint
    c3, c4 = first.cells[2], first.cells[3]
    cfg3 = resolve_config(suite="bullet", preset="quick", overrides=c3.overrides)
    with pytest.raises(_Interrupt):
        train(cfg3, c3.store, c3.run_dir, callback=_interrupt_at(15))
    Path(c4.run_dir).mkdir(parents=True)
    (Path(c4.run_dir) / "config.yaml").write_text("half-written")
    assert [cell_action(c) for c in first.cells] == ["skip", "skip", "resume", "restart"]

    second = run_sweep(build_spec(_grid(out, workers=1)))
    assert second.skipped == ids[:2] and sorted(second.ran) == ids[2:] and not second.failed
    assert second.records[c3.id]["action"] == "resume" and second.records[c4.id]["action"] == "restart"
    info = json.loads((Path(c3.run_dir) / "run.json").read_text())
    assert [r["from_step"] for r in info["resumes"]] == [10]
    assert load_checkpoint(Path(c3.run_dir) / "checkpoints" / "final.pt")["step"] == 30
    assert json.loads((out / "manifest.json").read_text())["counts"]["done"] == 4

    rec = read_eval_json(c3.eval_path)
    assert rec["method"] == "bc_safe_seg" and rec["episodes"] == 2 and rec["extra"]["sweep"]["cell"] == c3.id
    rep = build_report([out])
    assert len(rep.runs) == 4 and sorted(rep.methods) == ["bc_all", "bc_safe_seg"]
    assert {r.train_seed for r in rep.runs} == {0, 1}
    assert (out / "report" / "results.csv").is_file() and (out / "report" / "report.md").is_file()

    third = run_sweep(spec, report=False)
    assert third.skipped == ids and not third.ran
    changed = run_sweep(build_spec(_grid(out, set={**SMALL, "lr": 3e-4})), report=False)
    assert changed.failed == ids and "another configuration (lr" in changed.records[ids[0]]["error"]


def test_a_second_sweep_on_the_same_folder_is_refused(ballrun_task: str, tmp_path: Path):
    out = tmp_path / "sw"
    out.mkdir()
    (out / ".sweep.lock").write_text(str(os.getpid()))
    spec = build_spec(_grid(out))
    with pytest.raises(FeedbackgenError, match="another sweep"):
        run_sweep(spec, max_cells=0)
    (out / ".sweep.lock").write_text("999999999")            # a process that is gone: stale lock
    result = run_sweep(spec, max_cells=0)
    assert len(result.left) == 4 and not (out / ".sweep.lock").exists()


class _FakeRay:
    """A stand-in for the third-party ``ray`` module (not installed here): runs each task when it is
    submitted and records how it was asked to, so the ray backend's dispatch is exercised."""

    def __init__(self) -> None:
        self.initialized, self.num_cpus, self.submitted, self.results = False, None, [], {}

    def is_initialized(self) -> bool:
        return self.initialized

    def init(self, address=None, **kw) -> None:
        self.initialized = True

    def remote(self, num_cpus: int):
        self.num_cpus = num_cpus

        def wrap(fn):
            fake = self

            class Task:
                @staticmethod
                def remote(arg):
                    fake.submitted.append(arg["id"])
                    ref = len(fake.results)
                    fake.results[ref] = fn(arg)
                    return ref
            return Task
        return wrap

    def wait(self, refs, num_returns=1):
        return refs[:num_returns], refs[num_returns:]

    def get(self, ref):
        return self.results[ref]


def _stripped(tiny_store: Path, tmp_path: Path) -> Path:
    """The tiny store without its oracle group: bc_safe cells on it fail fast, before training."""
    from feedbackgen.publish import strip_store

    return strip_store(tiny_store, tmp_path / "tiny-stripped.zarr")


def test_process_pool_runs_cells_in_worker_processes(tiny_store: Path, tmp_path: Path):
    spec = build_spec({"out": str(tmp_path / "sw"), "stores": [str(_stripped(tiny_store, tmp_path))],
                       "methods": ["bc_safe"], "thresholds": [10], "seeds": [0, 1, 2], "workers": 2})
    seen = []
    result = run_sweep(spec, on_cell=lambda cell, rec: seen.append(cell.id))
    ids = [c.id for c in result.cells]
    assert sorted(seen) == sorted(ids) and sorted(result.failed) == sorted(ids)
    assert all("no oracle group" in result.records[i]["error"] for i in ids)


def test_ray_backend_runs_every_cell_as_a_task(tiny_store: Path, tmp_path: Path, monkeypatch):
    stripped = _stripped(tiny_store, tmp_path)
    fake = _FakeRay()
    monkeypatch.setitem(__import__("sys").modules, "ray", fake)
    spec = build_spec({"out": str(tmp_path / "sw"), "stores": [str(stripped)], "methods": ["bc_safe"],
                       "thresholds": [10], "seeds": [0, 1], "backend": "ray", "threads": 2})
    result = run_sweep(spec)
    ids = [c.id for c in result.cells]
    assert fake.initialized and fake.num_cpus == 2 and fake.submitted == ids
    assert result.failed == ids and all("no oracle group" in result.records[i]["error"] for i in ids)
    assert json.loads((tmp_path / "sw" / "manifest.json").read_text())["counts"]["failed"] == 2
