"""presa.evaluate: records, seeds and JSON output; real rollouts of a real checkpoint on BallRun."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from feedbackgen.errors import FeedbackgenError
from feedbackgen.tasks import get_task
from presa.evaluate import (
    EVAL_SCHEMA,
    EpisodeResult,
    EvalResult,
    episode_seed,
    read_eval_json,
    resolve_checkpoint,
    write_eval_json,
)

# ------------------------------------------------------------------------ records (no simulator)


def _result(threshold: float = 20.0, costs=(10.0, 30.0, 0.0), rewards=(100.0, 200.0, 300.0),
            **kw) -> EvalResult:
    task = get_task("BallRun")
    eps = tuple(EpisodeResult(index=i, seed=episode_seed(0, i), reward=r, cost=c, length=100,
                              terminated=False)
                for i, (r, c) in enumerate(zip(rewards, costs, strict=True)))
    return EvalResult(task=task, threshold=threshold, seed=0, episodes=eps, method="presa", **kw)


def test_scores_follow_the_protocol():
    res = _result()
    task = res.task
    lo, hi = task.min_episode_reward, task.max_episode_reward
    assert res.reward == pytest.approx(200.0) and res.cost == pytest.approx(40.0 / 3)
    assert res.normalized_reward == pytest.approx((200.0 - lo) / (hi - lo))
    assert res.normalized_cost == pytest.approx((40.0 / 3) / 20.0)       # mean of 0.5, 1.5, 0
    assert res.safe
    s10 = res.score(10.0)
    assert s10.normalized_cost == pytest.approx(4.0 / 3) and not s10.safe
    assert s10.safe_episodes == pytest.approx(2 / 3)                       # 1.0 and 0.0 are ≤ 1
    assert res.thresholds == (10.0, 20.0, 40.0)
    assert _result(threshold=15.0).thresholds == (10.0, 15.0, 20.0, 40.0)


def test_record_has_the_script_interface_and_round_trips():
    res = _result(checkpoint="/x/checkpoints/final.pt", step=7, train_seed=10, trained_task="BallRun",
                  extra={"store_id": "abc"})
    d = res.to_dict()
    for key in ("normalized_reward", "normalized_cost", "reward", "cost", "episodes", "safe"):
        assert key in d
    assert d["schema"] == EVAL_SCHEMA and d["episodes"] == 3 and d["safe"] is True
    assert d["per_episode"]["cost"] == [10.0, 30.0, 0.0]
    assert [p["threshold"] for p in d["per_threshold"]] == [10.0, 20.0, 40.0]
    assert [p["safe"] for p in d["per_threshold"]] == [False, True, True]
    back = EvalResult.from_dict(json.loads(json.dumps(d)))
    assert back.to_dict() == d


def test_write_eval_json_is_atomic_and_named_by_seed_and_episodes(tmp_path: Path):
    res = _result(checkpoint=str(tmp_path / "checkpoints" / "final.pt"), trained_task="BallRun")
    path = write_eval_json(tmp_path, res)
    assert path == tmp_path / "eval" / "eval-seed0-n3.json"
    rec = read_eval_json(path)
    assert rec["normalized_cost"] == pytest.approx(res.normalized_cost) and "created" in rec
    assert [p.name for p in (tmp_path / "eval").iterdir()] == ["eval-seed0-n3.json"]
    mid = _result(checkpoint=str(tmp_path / "checkpoints" / "step_0000500.pt"), trained_task="BallRun")
    assert write_eval_json(tmp_path, mid).name == "eval-step_0000500-seed0-n3.json"
    other = EvalResult(task=get_task("CarRun"), threshold=20.0, seed=1, episodes=res.episodes,
                       trained_task="BallRun")
    assert write_eval_json(tmp_path, other).name == "eval-CarRun-seed1-n3.json"


def test_episode_seeds_are_reproducible_distinct_and_worker_free():
    seeds = [episode_seed(0, i) for i in range(50)]
    assert seeds == [episode_seed(0, i) for i in range(50)]
    assert len(set(seeds)) == 50
    assert episode_seed(1, 0) != episode_seed(0, 0)
    assert all(0 <= s < 2**31 for s in seeds)
    with pytest.raises(FeedbackgenError):
        episode_seed(-1, 0)


def test_bad_paths_and_records_are_one_line_errors(tmp_path: Path):
    with pytest.raises(FeedbackgenError, match="does not exist"):
        resolve_checkpoint(tmp_path / "nope")
    with pytest.raises(FeedbackgenError, match="final.pt"):
        resolve_checkpoint(tmp_path)
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(FeedbackgenError, match="not a presa evaluation"):
        read_eval_json(tmp_path / "x.json")
    with pytest.raises(FeedbackgenError, match="at least one episode"):
        EvalResult(task=get_task("BallRun"), threshold=10.0, seed=0, episodes=())
    assert np.isfinite(_result().normalized_reward)
