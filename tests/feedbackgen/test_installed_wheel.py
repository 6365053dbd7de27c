"""A non-editable install (what `pip install presa-toolkit` gives) finds the shipped datasets only
through ``$FEEDBACKGEN_DATASETS_DIR``, and says so in one line when they are missing."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

LOOKUP = ("import sys\nfrom feedbackgen.errors import FeedbackgenError\n"
          "from feedbackgen.tasks import get_task\n"
          "try:\n    print(get_task('BallRun-mini').source_path)\n"
          "except FeedbackgenError as exc:\n    print(exc, file=sys.stderr)\n    sys.exit(1)\n")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project installed (no dependencies, no editable link) into a bare folder, from a copy of
    its sources so the build leaves nothing in the repository."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    for name in ("feedbackgen", "presa", "cli"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    out = subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", "install",
                          "--no-deps", "--no-build-isolation", "--target", str(tmp / "site"), str(src)],
                         capture_output=True, text=True)
    assert out.returncode == 0, f"the package does not build and install: {out.stderr.strip()[-500:]}"
    return tmp / "site"


def _lookup(site: Path, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "FEEDBACKGEN_DATASETS_DIR")}
    environ.update(PYTHONPATH=str(site), **env)
    return subprocess.run([sys.executable, "-c", LOOKUP], capture_output=True, text=True, cwd=cwd,
                          env=environ)


def test_installed_package_points_to_the_variable_when_datasets_are_missing(site: Path, tmp_path: Path):
    out = _lookup(site, tmp_path)
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert "FEEDBACKGEN_DATASETS_DIR" in lines[0] and "does not exist" in lines[0]


def test_installed_package_reads_a_clones_datasets_folder(site: Path, tmp_path: Path):
    out = _lookup(site, tmp_path, FEEDBACKGEN_DATASETS_DIR=str(ROOT / "datasets"))
    assert out.returncode == 0, out.stderr
    imported = Path(out.stdout.strip())
    assert imported == ROOT / "datasets" / "BallRun-mini" / "data.hdf5"
