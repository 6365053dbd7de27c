"""The shipped datasets of the Safety-Gymnasium and MetaDrive families, end to end (slow).

For each: it loads, ``feedbackgen make`` makes a feedback store from it, ``presa train`` trains a
few steps on that store, and ``presa eval --episodes 1`` runs one episode in the real simulator.
Needs the simulator (``make install-all``); run with ``make test-slow``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: shipped dataset -> the simulator module its evaluation needs
SIM_DATASETS = {"easysparse-mini": "metadrive", "PointCircle1-mini": "mujoco"}
PRESENT = [name for name in SIM_DATASETS if (ROOT / "datasets" / name / "dataset.json").is_file()]


def _invoke(app, args: list[str]) -> str:
    from typer.testing import CliRunner

    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, f"{args[0]} failed ({res.exit_code}):\n{res.output}\n{res.exception!r}"
    return res.output


@pytest.mark.slow
@pytest.mark.parametrize("name", PRESENT)
def test_shipped_dataset_end_to_end(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip(SIM_DATASETS[name])
    monkeypatch.setenv("FEEDBACKGEN_DATASETS_DIR", str(ROOT / "datasets"))
    from presa_cli.feedbackgen_app import app as feedbackgen_app
    from presa_cli.presa_app import app as presa_app

    from feedbackgen.sources import read_dsrl
    from feedbackgen.tasks import get_task

    task = get_task(name)
    assert task.origin == "shipped"
    with read_dsrl(task.source_path) as t:  # loads (compressed or not: transparent to the reader)
        assert t.n_episodes > 0 and t.observations[:10].shape[0] == 10
    store = tmp_path / "store.zarr"
    _invoke(feedbackgen_app, ["make", "--task", name, "--noise", "0.1", "--seed", "0", "--out", str(store)])
    assert store.exists()
    run = tmp_path / "run"
    _invoke(presa_app, ["train", "--data", str(store), "--threshold", f"{task.thresholds[0]:g}",
                        "--seed", "0", "--preset", "quick", "--set", "total_steps=20", "--set", "bc_steps=10",
                        "--algo", "presa", "--out", str(run), "--no-progress"])
    out = _invoke(presa_app, ["eval", str(run), "--episodes", "1", "--seed", "0"])
    assert "1 episodes" in out, out
