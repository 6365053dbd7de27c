"""`feedbackgen collect` through Typer's CliRunner: exit codes, output, files written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from presa_cli.feedbackgen_collect_cmd import collect_command
from typer.testing import CliRunner

pytest.importorskip("bullet_safety_gym")




@pytest.fixture(scope="module")
def app() -> typer.Typer:
    """The real ``feedbackgen`` app (which registers :func:`collect_command` as ``collect``)."""
    from presa_cli.feedbackgen_app import app as feedbackgen_app

    assert any(c.callback is collect_command for c in feedbackgen_app.registered_commands)
    return feedbackgen_app


def test_collect_writes_file_and_summary(app: typer.Typer, tmp_path: Path) -> None:
    out = tmp_path / "ballrun.hdf5"
    res = CliRunner().invoke(app, ["collect", "--task", "BallRun", "--out", str(out), "--episodes", "3",
                                   "--max-episode-steps", "10", "--noise", "0", "0.2", "--seed", "4",
                                   "--workers", "1", "--policy", "random"])
    assert res.exit_code == 0, res.output
    assert "wrote" in res.output and "3 episodes" in res.output and "30 transitions" in res.output
    assert out.is_file()
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["seed"] == 4 and record["noise"]["std_range"] == [0.0, 0.2]

    again = CliRunner().invoke(app, ["collect", "--task", "BallRun", "--out", str(out), "--episodes", "3"])
    assert again.exit_code == 1
    assert "error:" in again.output and "--overwrite" in again.output
    assert "Traceback" not in again.output


def test_collect_dataset_folder(app: typer.Typer, tmp_path: Path) -> None:
    out = tmp_path / "Mine-mini"
    res = CliRunner().invoke(app, ["collect", "--task", "BallRun", "--out", str(out), "--episodes", "2",
                                   "--max-episode-steps", "10", "--workers", "1"])
    assert res.exit_code == 0, res.output
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["task"]["name"] == "Mine-mini" and (out / "data.hdf5").is_file()


@pytest.mark.parametrize("args, match", [
    (["--task", "NoSuchTask"], "unknown task"),
    (["--task", "BallRun", "--policy", "sb3:/no/model.zip"], "does not exist"),
    (["--task", "BallRun", "--noise", "0.5", "0.1"], "bad noise range"),
    (["--task", "BallRun", "--policy", "ppo:x.zip"], "bad policy"),
])
def test_collect_errors_are_one_red_line(app: typer.Typer, tmp_path: Path, args: list[str],
                                         match: str) -> None:
    res = CliRunner().invoke(app, ["collect", "--out", str(tmp_path / "x.hdf5"), "--episodes", "1", *args])
    assert res.exit_code == 1
    assert "error:" in res.output and match in res.output
    assert "Traceback" not in res.output
    assert not (tmp_path / "x.hdf5").exists()
