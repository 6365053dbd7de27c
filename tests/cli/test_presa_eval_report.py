"""`presa train --eval-every`, `presa eval` and `presa report` through the real app with CliRunner.

The run is real: a DSRL-layout BallRun source -> `make_store` -> `presa train` (quick preset, shrunk
further) with evaluation during training; evaluations roll out in the real bullet simulator.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

pytest.importorskip("bullet_safety_gym")

TINY_SET = ["hidden=[32,32]", "pair_batch=16", "safety_batch=16", "bc_batch=64", "bc_steps=20",
            "total_steps=40", "warmup_steps=5", "log_every=10", "checkpoint_every=20"]


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    from presa_cli.presa_app import app as presa_app
    from presa_cli.presa_eval_cmd import eval_command
    from presa_cli.presa_report_cmd import report_command

    callbacks = {c.callback for c in presa_app.registered_commands}
    assert eval_command in callbacks and report_command in callbacks
    return presa_app


def _store(root: Path) -> Path:
    """A tiny BallRun feedback store made by feedbackgen from a DSRL-layout file."""
    from feedbackgen.make import MakeConfig, make_store
    from feedbackgen.sources import Trajectories, write_dsrl

    rng = np.random.default_rng(1)
    n_ep, t_len = 6, 100
    n = n_ep * t_len
    obs = rng.normal(size=(n, 7)).astype(np.float32)
    act = rng.uniform(-1, 1, size=(n, 2)).astype(np.float32)
    trunc = np.zeros(n, bool)
    trunc[t_len - 1::t_len] = True
    traj = Trajectories(observations=obs, next_observations=np.roll(obs, -1, 0), actions=act,
                        rewards=(1.0 + act[:, 0]).astype(np.float32),
                        costs=(act[:, 1] > 0.5).astype(np.float32),
                        terminations=np.zeros(n, bool), truncations=trunc,
                        episode_start=np.arange(n_ep, dtype=np.int64) * t_len,
                        episode_length=np.full(n_ep, t_len, dtype=np.int64))
    root.mkdir(parents=True, exist_ok=True)
    src = write_dsrl(root / "source.hdf5", traj)
    return make_store(MakeConfig(task="BallRun", source=src, out=root / "store.zarr", n_pairs=60, n_safety=60,
                                 seed=0, download=False))


@pytest.fixture(scope="module")
def trained(app: typer.Typer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``presa train ... --eval-every 20 --eval-episodes 2`` into runs/ballrun-presa-k10-s0."""
    root = tmp_path_factory.mktemp("cli-eval")
    store = _store(root)
    run = root / "runs" / "ballrun-presa-k10-s0"
    args = ["train", "--data", str(store), "--threshold", "10", "--seed", "0", "--out", str(run),
            "--preset", "quick", "--no-progress", "--eval-every", "20", "--eval-episodes", "2"]
    for item in TINY_SET:
        args += ["--set", item]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    return run


def test_train_eval_every_logs_eval_metrics_and_keeps_final(trained: Path):
    rows = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if "eval/normalized_reward" in r]
    assert [r["step"] for r in evals] == [20, 40]
    for r in evals:
        assert {"eval/normalized_cost", "eval/reward", "eval/cost", "eval/length", "eval/safe"} <= set(r)
    assert any("train/loss" in r for r in rows)                 # the trainer's own records are intact
    names = sorted(p.name for p in (trained / "eval").iterdir())
    assert names == ["eval-seed0-n2.json", "eval-step_0000020-seed0-n2.json"]
    final = json.loads((trained / "eval" / "eval-seed0-n2.json").read_text())
    assert final["checkpoint"].endswith("checkpoints/final.pt") and final["step"] == 40
    assert (trained / "checkpoints" / "final.pt").is_file()


def test_eval_json_interface(app: typer.Typer, trained: Path):
    res = CliRunner().invoke(app, ["eval", str(trained), "--episodes", "2", "--seed", "0", "--json",
                                   "--workers", "2"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)                                 # stdout is pure JSON
    for key in ("normalized_reward", "normalized_cost", "reward", "cost", "episodes", "safe"):
        assert key in out
    assert out["episodes"] == 2 and out["threshold"] == 10.0 and out["task"] == "BallRun"
    assert isinstance(out["safe"], bool) and out["safe"] == (out["normalized_cost"] <= 1.0)
    assert len(out["per_episode"]["reward"]) == 2 and out["versions"]["pybullet"] == "3.2.7"
    assert [p["threshold"] for p in out["per_threshold"]] == [10.0, 20.0, 40.0]
    # the same policy and seeds as the evaluation at the end of training: the same episodes
    during = json.loads((trained / "eval" / "eval-seed0-n2.json").read_text())
    assert out["per_episode"]["reward"] == during["per_episode"]["reward"]
    assert out["eval_json"] == str(trained / "eval" / "eval-seed0-n2.json")


def test_eval_table_and_errors(app: typer.Typer, trained: Path, tmp_path: Path):
    res = CliRunner().invoke(app, ["eval", str(trained / "checkpoints" / "final.pt"), "--episodes", "1",
                                   "--seed", "5", "--workers", "1", "--no-save"])
    assert res.exit_code == 0, res.output
    assert "norm. reward" in res.output and "10 (run)" in res.output and "normalised reward" in res.output
    assert not (trained / "eval" / "eval-seed5-n1.json").exists()

    bad = CliRunner().invoke(app, ["eval", str(trained), "--episodes", "1", "--task", "BallCircle"])
    assert bad.exit_code == 1
    assert "error: checkpoint" in bad.output and "expects 7-dim observations" in bad.output
    assert "trained on ('BallRun')" in bad.output
    assert "Traceback" not in bad.output

    missing = CliRunner().invoke(app, ["eval", str(tmp_path / "nope"), "--json"])
    assert missing.exit_code == 1 and "does not exist" in missing.output


def test_report_tables_and_files(app: typer.Typer, trained: Path, tmp_path: Path):
    out = tmp_path / "report"
    res = CliRunner().invoke(app, ["report", str(trained.parent), "--out", str(out), "--reference"])
    assert res.exit_code == 0, res.output
    assert "BallRun" in res.output and "presa" in res.output and "TraC†" in res.output
    for name in ("report.md", "results.csv", "runs.csv", "reward_cost.png", "training_curves.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0
    runs = (out / "runs.csv").read_text().splitlines()
    assert len(runs) == 2 and "eval-seed0-n2.json" in runs[1]  # the final evaluation stands for the run
    md = (out / "report.md").read_text()
    assert "## BulletGym" in md and "| BallRun |" in md

    empty = CliRunner().invoke(app, ["report", str(tmp_path / "report"), "--out", str(tmp_path / "r2")])
    assert empty.exit_code == 1 and "no evaluations found" in empty.output
