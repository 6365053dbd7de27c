"""Output that survives pipes: paths, ids and hashes are never wrapped or cut when stdout is not a
terminal, whatever $COLUMNS says (CI runs the suite with COLUMNS=40)."""

from __future__ import annotations

from pathlib import Path

import presa_cli.console as term
import pytest
from presa_cli.feedbackgen_app import app
from typer.testing import CliRunner

from feedbackgen.store import open_store

TASK = "TinyRun-mini"


def run(*args: object, columns: int):
    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": str(columns)})


@pytest.mark.parametrize("columns", [40, 80])
def test_long_paths_and_ids_are_printed_whole(tiny_task, tmp_path: Path, columns: int) -> None:
    deep = tmp_path / ("a-rather-long-folder-name-" * 6) / "nested-folder-for-the-store"
    out = deep / "store-with-a-long-name.zarr"
    res = run("make", "--task", TASK, "--seed", "1", "--n-pairs", "40", "--n-safety", "20", "--out", out,
              columns=columns)
    assert res.exit_code == 0, res.output
    assert any(str(out) in line for line in res.stdout.splitlines()), res.stdout
    sid = open_store(out).store_id
    assert any(sid in line for line in res.stdout.splitlines()), res.stdout

    res = run("info", out, columns=columns)
    assert res.exit_code == 0, res.output
    assert any(str(out) in line for line in res.stdout.splitlines()), res.stdout

    bad = deep / "missing-store-with-an-even-longer-name-than-before.zarr"
    res = run("validate", bad, columns=columns)
    assert res.exit_code == 1
    err = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(err) == 1 and str(bad) in err[0], res.stderr


def test_task_table_names_are_not_cut(columns: int = 40) -> None:
    res = run("tasks", columns=columns)
    assert res.exit_code == 0, res.output
    assert "HalfCheetahVelocity" in res.stdout and "…" not in res.stdout


def test_help_keeps_option_names_whole() -> None:
    res = run("make", "--help", columns=40)
    assert res.exit_code == 0, res.output
    assert "--safety-noise-model" in res.stdout


def test_consoles_are_wide_off_a_terminal() -> None:
    # under pytest stdout and stderr are captured, i.e. not terminals
    assert term.out().width == term.PIPE_WIDTH and term.err().width == term.PIPE_WIDTH
