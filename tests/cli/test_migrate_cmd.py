"""`feedbackgen migrate` through Typer's CliRunner: in place, --out, already current, errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr
from cli_assertions import one_error_line
from presa_cli.feedbackgen_app import app
from typer.testing import CliRunner

from feedbackgen.store import open_store

TASK = "TinyRun-mini"
NEXT = "transitions/next_observations"
FINAL = "transitions/final_next_observations"


def run(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args])


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def v1(tiny_task, tmp_path: Path) -> Path:
    """A store made by the CLI, rewritten into the schema-1 layout (full next observations, version 1)."""
    made = tmp_path / "made" / "s.zarr"
    res = run("make", "--task", TASK, "--noise", "0.1", "--seed", "3", "--n-pairs", "80", "--n-safety", "60",
              "--out", made)
    assert res.exit_code == 0, res.output
    nobs = np.asarray(open_store(made).next_observations)
    dest = shutil.copytree(made, tmp_path / "stores" / "s.zarr")
    root = zarr.open_group(str(dest), mode="r+")
    root.create_array(NEXT, shape=nobs.shape, dtype="float32")[...] = nobs
    shutil.rmtree(dest / FINAL)
    meta = json.loads((dest / "zarr.json").read_text())
    del meta["attributes"]["next_observations"]
    meta["attributes"]["schema_version"] = meta["attributes"]["metadata"]["schema_version"] = 1
    (dest / "zarr.json").write_text(json.dumps(meta))
    assert run("verify", dest).exit_code == 0
    return dest


def test_migrate_in_place_then_validate_verify_info(v1: Path) -> None:
    sid = open_store(v1).store_id
    nobs = np.asarray(open_store(v1).next_observations)
    res = run("migrate", v1)
    assert res.exit_code == 0, res.output
    lines = res.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("migrated ") and "in place" in lines[0], res.stdout
    assert "schema v1 -> v2" in lines[0] and sid in lines[0] and "derived" in lines[0]
    assert sorted(p.name for p in v1.parent.iterdir()) == ["s.zarr"]
    assert run("validate", v1).exit_code == 0
    assert run("verify", v1).exit_code == 0
    rec = json.loads(run("info", v1, "--json").stdout)
    assert rec["schema_version"] == 2 and rec["next_observations"] == "derived" and rec["store_id"] == sid
    assert [m["from_schema_version"] for m in rec["metadata"]["migrations"]] == [1]
    np.testing.assert_array_equal(np.asarray(open_store(v1).next_observations), nobs)
    before = files(v1)
    res = run("migrate", v1)  # now current: one line, exit 0, nothing touched
    assert res.exit_code == 0 and res.stderr == ""
    assert res.stdout.strip().splitlines() == [f"{v1} is already at schema version 2; nothing to do"]
    assert files(v1) == before


def test_migrate_out_overwrite_and_errors(v1: Path, tmp_path: Path) -> None:
    before = files(v1)
    out = tmp_path / "new.zarr"
    res = run("migrate", v1, "--out", out)
    assert res.exit_code == 0 and f"from {v1}" in res.stdout, res.output
    assert files(v1) == before and open_store(out).schema_version == 2
    assert run("verify", out).exit_code == 0
    one_error_line(run("migrate", v1, "--out", out), "already exists", "--overwrite")
    assert run("migrate", v1, "--out", out, "--overwrite").exit_code == 0
    one_error_line(run("migrate", v1, "--out", v1), "is the input store")
    res = run("migrate", out, "--out", tmp_path / "again.zarr")
    assert res.exit_code == 0 and "already at schema version 2" in res.stdout
    assert "again.zarr not written" in res.stdout and not (tmp_path / "again.zarr").exists()
    one_error_line(run("migrate", tmp_path / "none.zarr"), "does not exist")
    v3 = shutil.copytree(v1, tmp_path / "v3.zarr")
    meta = json.loads((v3 / "zarr.json").read_text())
    meta["attributes"]["schema_version"] = 3
    (v3 / "zarr.json").write_text(json.dumps(meta))
    one_error_line(run("migrate", v3), "schema version 3")
    assert json.loads((v3 / "zarr.json").read_text())["attributes"]["schema_version"] == 3
    assert files(v1) == before


def test_migrate_help_is_listed() -> None:
    res = run("--help")
    assert res.exit_code == 0 and "migrate" in res.stdout
    res = run("migrate", "--help")
    assert res.exit_code == 0 and "--out" in res.stdout and "--overwrite" in res.stdout
