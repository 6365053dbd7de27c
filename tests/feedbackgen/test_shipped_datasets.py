"""The shipped datasets (``datasets/<Name>/``): frontier criteria and cards that agree with the files.

Reads the HDF5 files only (seconds): no simulator. The cards and the README tables are regenerated
in memory by ``datasets/recipes/cards.py`` and compared with the committed text.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("dataset_cards", ROOT / "datasets" / "recipes" / "cards.py")
cards = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cards)

FOLDERS = cards.dataset_folders(ROOT / "datasets")
MAX_DATASET_MB, MAX_ALL_MB = 10.0, 60.0


@pytest.fixture(scope="module", params=FOLDERS, ids=[f.name for f in FOLDERS])
def shipped(request: pytest.FixtureRequest) -> tuple[Path, dict]:
    return request.param, cards.episode_stats(request.param)


def test_there_are_shipped_datasets() -> None:
    names = {"BallRun-mini", "CarRun-mini", "BallCircle-mini", "PointCircle1-mini", "easysparse-mini"}
    assert names <= {f.name for f in FOLDERS}
    suites = {json.loads((f / "dataset.json").read_text())["task"]["suite"] for f in FOLDERS}
    assert {"bullet", "safety_gymnasium", "metadrive"} <= suites


def test_frontier_criteria(shipped: tuple[Path, dict]) -> None:
    folder, s = shipped
    m = cards.frontier_metrics(s["reward"], s["cost"], s["meta"]["task"])
    assert cards.frontier_failures(m) == [], folder.name
    assert set(m["per_threshold"]) == {float(k) for k in s["meta"]["task"]["thresholds"]}


def test_normalisation_references_are_the_data_range(shipped: tuple[Path, dict]) -> None:
    _, s = shipped
    task = s["meta"]["task"]
    assert task["min_episode_reward"] == pytest.approx(s["reward"].min(), rel=1e-5, abs=1e-3)
    assert task["max_episode_reward"] == pytest.approx(s["reward"].max(), rel=1e-5, abs=1e-3)
    assert task["max_episode_cost"] == pytest.approx(s["cost"].max())


def test_version_is_recorded(shipped: tuple[Path, dict]) -> None:
    """dataset.json, its collection record and the HDF5 attributes (what a store records) agree."""
    from feedbackgen.sources import read_dsrl

    folder, s = shipped
    meta = s["meta"]
    assert meta.get("version")
    assert meta["collection"]["version"] == meta["version"]
    with read_dsrl(folder / meta["file"]) as t:
        assert t.attrs["dataset_version"] == meta["version"]
        assert json.loads(t.attrs["feedbackgen_collection"])["version"] == meta["version"]


def test_build_record(shipped: tuple[Path, dict]) -> None:
    _, s = shipped
    build = s["meta"]["build"]
    assert build["command"].startswith(".venv/bin/python datasets/recipes/build_mini.py --task ")
    assert build["cpu_seconds"]["collect"] > 0


def test_card_agrees_with_the_files(shipped: tuple[Path, dict]) -> None:
    folder, s = shipped
    assert (folder / "README.md").read_text() == cards.card_text(folder, s), (
        f"{folder.name}/README.md is stale: run .venv/bin/python datasets/recipes/cards.py")
    assert (folder / "scatter.png").stat().st_size > 10_000


def test_episode_policy_record_matches_the_data(shipped: tuple[Path, dict]) -> None:
    _, s = shipped
    coll = s["meta"]["collection"]
    assert len(coll["episode_policy"]) == s["episodes"] == coll["episodes"]
    counts = np.bincount(coll["episode_policy"], minlength=len(coll["policies"]))
    assert counts.tolist() == [p["episodes"] for p in coll["policies"]]


def test_readme_tables_agree_with_the_files() -> None:
    stats = {f: cards.episode_stats(f) for f in FOLDERS}
    texts = cards.readme_texts(FOLDERS, stats)
    assert ROOT / "datasets" / "README.md" in texts
    for path, text in texts.items():
        assert path.read_text() == text, f"{path}: stale table, run datasets/recipes/cards.py"


def test_sizes() -> None:
    per = {f.name: sum(p.stat().st_size for p in f.iterdir() if p.is_file()) / 1e6 for f in FOLDERS}
    assert all(mb <= MAX_DATASET_MB for mb in per.values()), per
    total = sum(p.stat().st_size for p in (ROOT / "datasets").rglob("*") if p.is_file()) / 1e6
    assert total <= MAX_ALL_MB, total


def test_frontier_metrics_on_a_toy() -> None:
    task = {"thresholds": [10, 20, 40], "min_episode_reward": 0.0, "max_episode_reward": 100.0}
    cost = np.array([0, 8, 15, 30, 90])
    m = cards.frontier_metrics(np.array([10, 20, 40, 60, 100]), cost, task)
    assert m["per_threshold"][10.0] == {"under": 0.4, "near_budget_share": 0.2, "best_safe_reward": 0.2}
    assert m["per_threshold"][40.0]["best_safe_reward"] == 0.6 and m["best_safe_rise"] == pytest.approx(0.4)
    assert m["widest_gap"] == pytest.approx(50 / 80) and m["max_cost"] == 90
    failures = cards.frontier_failures(m)  # one near-budget episode per κ (1/5) is enough; the gap is not
    assert len(failures) == 1 and "widest empty cost stretch" in failures[0]


def test_frontier_range_follows_the_largest_threshold() -> None:
    """Safety-Gymnasium's κ = 20 / 40 / 80: costs must reach 80 and the gap range is [0, 160]."""
    task = {"thresholds": [20, 40, 80], "min_episode_reward": 0.0, "max_episode_reward": 100.0}
    cost = np.array([0, 15, 30, 60, 70])
    m = cards.frontier_metrics(np.array([10, 20, 40, 60, 100]), cost, task)
    assert m["gap_range"] == (0.0, 160.0) and m["widest_gap"] == pytest.approx(90 / 160)
    failures = cards.frontier_failures(m)
    assert any("κ_max = 80" in f for f in failures) and any("[0, 160]" in f for f in failures)
