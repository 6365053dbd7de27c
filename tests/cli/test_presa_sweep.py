"""`presa sweep` through Typer's CliRunner: grid file + options, planning without running, a real
one-cell sweep that is resumed and read by `presa report`, and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
import yaml
from presa_cli.presa_sweep_cmd import sweep_command
from typer.testing import CliRunner

TASK = "BallRun-clisweep"
SMALL = {"total_steps": 20, "bc_steps": 10, "hidden": [16, 16], "bc_batch": 32, "pair_batch": 8,
         "safety_batch": 8, "log_every": 10, "checkpoint_every": 10}


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    """The real ``presa`` app, which registers :func:`sweep_command` as ``sweep``."""
    from presa_cli.presa_app import app as presa_app

    assert any(c.callback is sweep_command and c.name == "sweep" for c in presa_app.registered_commands)
    return presa_app


@pytest.fixture(scope="module")
def ballrun_task(tmp_path_factory: pytest.TempPathFactory):
    """A real BallRun dataset (random policy, 6 episodes of 30 steps) registered as a shipped task."""
    pytest.importorskip("bullet_safety_gym")
    from feedbackgen.collect import CollectConfig, collect

    root = tmp_path_factory.mktemp("registry")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FEEDBACKGEN_DATASETS_DIR", str(root))
        collect(CollectConfig(task="BallRun", out=root / TASK, episodes=6, policies=("random",), seed=1,
                              workers=1, max_episode_steps=30))
        yield TASK


def _grid_file(tmp_path: Path, **kw) -> Path:
    grid = {"out": "sw", "tasks": [TASK], "make": {"n_pairs": 40, "n_safety": 40, "segment_length": 10},
            "thresholds": [20], "seeds": [0], "methods": ["bc_all"], "set": dict(SMALL), "episodes": 2,
            "workers": 1, **kw}
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(grid))
    return path


def test_sweep_runs_resumes_and_feeds_report(app: typer.Typer, ballrun_task: str, tmp_path: Path):
    grid = _grid_file(tmp_path)
    res = CliRunner().invoke(app, ["sweep", str(grid)])
    assert res.exit_code == 0, res.output
    assert "done   BallRun-clisweep-noise0.1-seed0-bc_all-k20-s0" in res.output
    assert "1 cells: 1 done (1 run now, 0 already evaluated), 0 failed" in res.output
    out = tmp_path / "sw"
    assert (out / "report" / "report.md").is_file()

    again = CliRunner().invoke(app, ["sweep", str(out / "grid.yaml")])       # the resolved grid resumes
    assert again.exit_code == 0, again.output
    assert "1 done (0 run now, 1 already evaluated)" in again.output

    rep = CliRunner().invoke(app, ["report", str(out), "--out", str(tmp_path / "rep")])
    assert rep.exit_code == 0, rep.output
    assert "bc_all" in rep.output and (tmp_path / "rep" / "results.csv").is_file()

    changed = CliRunner().invoke(app, ["sweep", str(grid), "--set", "lr=0.001"])
    assert changed.exit_code == 1
    assert "another configuration (lr" in changed.output and "1 failed" in changed.output


def test_options_replace_grid_keys_and_max_cells_zero_only_plans(app: typer.Typer, ballrun_task: str,
                                                                   tmp_path: Path):
    grid = _grid_file(tmp_path)
    res = CliRunner().invoke(app, ["sweep", str(grid), "--methods", "presa,cpl", "--seeds", "0,1",
                                   "--grid", "delta=0.8,0.95", "--max-cells", "0", "--no-report"])
    assert res.exit_code == 0, res.output
    # cpl does not read delta: the grid-wide sweep of delta applies to presa only (2 × 2 + 2 cells)
    assert "6 cells: 0 done" in res.output and "6 left for later" in res.output
    manifest = json.loads((tmp_path / "sw" / "manifest.json").read_text())
    methods = sorted({c["method"] for c in manifest["cells"]})
    assert methods == ["cpl", "presa[delta=0.8]", "presa[delta=0.95]"]
    assert len(manifest["cells"]) == 6 and {c["status"] for c in manifest["cells"]} == {"pending"}
    assert not list((tmp_path / "sw").glob("runs/*"))


@pytest.mark.parametrize("args, match", [
    (["--out", "x"], "names no data"),
    (["--out", "x", "--task", "T", "--methods", "presa", "--grid", "delta"], "--grid expects key=v1,v2"),
    (["--out", "x", "--task", "T", "--methods", "nosuch"], "unknown algorithm 'nosuch'"),
    (["--out", "x", "--store", "missing.zarr", "--methods", "presa", "--max-cells", "0"], "does not exist"),
])
def test_errors_are_one_red_line(app: typer.Typer, tmp_path: Path, monkeypatch, args: list[str], match: str):
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(app, ["sweep", *args])
    assert res.exit_code == 1
    assert "error:" in res.output and match in res.output and "Traceback" not in res.output


def test_unknown_grid_key_and_missing_ray(app: typer.Typer, tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"out": "sw", "task": ["X"]}))
    res = CliRunner().invoke(app, ["sweep", str(bad)])
    assert res.exit_code == 1 and "unknown key 'task' (did you mean tasks" in res.output
    from presa.sweep import ray_available

    if not ray_available():
        res = CliRunner().invoke(app, ["sweep", "--out", str(tmp_path / "o"), "--task", "X", "--methods",
                                       "bc_all", "--backend", "ray"])
        assert res.exit_code == 1 and "'ray' extra" in res.output
