"""Helpers for the reliability tests: run both CLIs, check the one-line error contract, snapshot folders.

Every test works under ``tmp_path`` with the tiny fixtures of ``tests/conftest.py``; the DSRL cache
is an empty tmp folder so nothing is ever downloaded.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from presa_cli.feedbackgen_app import app as feedbackgen_app
from presa_cli.presa_app import app as presa_app
from typer.testing import CliRunner

REPO = Path(__file__).resolve().parents[2]

#: presa settings for training runs that finish in about a second (one torch thread: exact resume).
TINY_TRAIN = ("hidden=[32,32]", "pair_batch=16", "safety_batch=16", "bc_batch=64", "bc_steps=20",
              "warmup_steps=5", "log_every=5", "threads=1")


def tiny_train_for(algo: str) -> tuple[str, ...]:
    """TINY_TRAIN with only the keys ``algo`` reads (a key it does not read is an error)."""
    from presa.config import valid_keys

    return tuple(item for item in TINY_TRAIN if item.split("=", 1)[0] in valid_keys(algo))


def set_args(*items: str) -> list[str]:
    """``("a=1", "b=2")`` -> ``["--set", "a=1", "--set", "b=2"]``."""
    return [x for item in items for x in ("--set", item)]


class Cli:
    """What the ``cli`` fixture hands out."""

    tiny_train = TINY_TRAIN
    tiny_train_for = staticmethod(tiny_train_for)
    set_args = staticmethod(set_args)

    @staticmethod
    def fg(*args: Any):
        """``feedbackgen ARGS`` in this process (Typer's CliRunner)."""
        return CliRunner().invoke(feedbackgen_app, [str(a) for a in args])

    @staticmethod
    def presa(*args: Any):
        """``presa ARGS`` in this process (Typer's CliRunner)."""
        return CliRunner().invoke(presa_app, [str(a) for a in args])

    @staticmethod
    def one_error_line(res, *fragments: str) -> str:
        """Exit code 1, one non-empty stderr line ``error: ...`` holding ``fragments``, no traceback."""
        assert res.exit_code == 1, (res.exit_code, res.output, res.exception)
        assert "Traceback" not in res.output
        assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
        lines = [line for line in res.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
        for f in fragments:
            assert f in lines[0], (f, lines[0])
        return lines[0]

    @staticmethod
    def snapshot(root: Path) -> dict[str, tuple[bool, int, int]]:
        """Every path under ``root`` -> (is_dir, size, mtime_ns): equal snapshots = nothing written."""
        out = {}
        for dirpath, dirnames, filenames in os.walk(root):
            for name in dirnames + filenames:
                p = Path(dirpath) / name
                st = p.lstat()
                out[str(p.relative_to(root))] = (p.is_dir(), 0 if p.is_dir() else st.st_size, st.st_mtime_ns)
        return out

    @staticmethod
    def subprocess_env(**extra: str) -> dict[str, str]:
        """The test's environment (tmp registry, DSRL cache) for a child ``python -m ...``."""
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **extra}
        env.pop("COLUMNS", None)
        return env

    @staticmethod
    def python(*args: Any, **kwargs: Any) -> subprocess.Popen:
        """Start ``python ARGS`` (this interpreter) in the repository root."""
        return subprocess.Popen([sys.executable, *map(str, args)], cwd=REPO, env=Cli.subprocess_env(),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


@pytest.fixture
def cli() -> type[Cli]:
    return Cli


@pytest.fixture(autouse=True)
def _isolated_dsrl_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DSRL_DATASET_DIR", str(tmp_path_factory.mktemp("dsrl-cache")))
