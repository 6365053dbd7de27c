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
    resolve_final_checkpoint,
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
        resolve_final_checkpoint(tmp_path / "nope")
    with pytest.raises(FeedbackgenError, match="final.pt"):
        resolve_final_checkpoint(tmp_path)
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(FeedbackgenError, match="not a presa evaluation"):
        read_eval_json(tmp_path / "x.json")
    with pytest.raises(FeedbackgenError, match="at least one episode"):
        EvalResult(task=get_task("BallRun"), threshold=10.0, seed=0, episodes=())
    assert np.isfinite(_result().normalized_reward)


# ----------------------------------------------------- real checkpoints, real BallRun simulator

BULLET_EXTRA = "needs the bullet extra: pip install 'presa-toolkit[bullet]'"
TINY_TRAIN = {"hidden": [32, 32], "pair_batch": 16, "safety_batch": 16, "bc_batch": 64, "bc_steps": 20,
              "total_steps": 40, "warmup_steps": 5, "log_every": 10, "checkpoint_every": 20}


def build_run(root: Path, *, obs_dim: int = 7, act_dim: int = 2, threshold: float = 10.0,
              seed: int = 0) -> Path:
    """A real presa run on BallRun: DSRL-layout source -> ``make_store`` -> ``train`` (quick preset,
    shrunk further). ``obs_dim`` other than 7 makes a checkpoint that does not fit BallRun's env."""
    from feedbackgen.make import MakeConfig, make_store
    from feedbackgen.sources import Trajectories, write_dsrl
    from presa.config import resolve_config
    from presa.trainer import train

    rng = np.random.default_rng(seed)
    n_ep, t_len = 6, 100
    n = n_ep * t_len
    obs = rng.normal(size=(n, obs_dim)).astype(np.float32)
    act = rng.uniform(-1, 1, size=(n, act_dim)).astype(np.float32)
    trunc = np.zeros(n, bool)
    trunc[t_len - 1::t_len] = True
    traj = Trajectories(observations=obs, next_observations=np.roll(obs, -1, 0), actions=act,
                        rewards=(1.0 + act[:, 0]).astype(np.float32),
                        costs=(act[:, 1] > 0.5).astype(np.float32), terminations=np.zeros(n, bool),
                        truncations=trunc, episode_start=np.arange(n_ep, dtype=np.int64) * t_len,
                        episode_length=np.full(n_ep, t_len, dtype=np.int64))
    root.mkdir(parents=True, exist_ok=True)
    src = write_dsrl(root / "source.hdf5", traj)
    store = make_store(MakeConfig(task="BallRun", source=src, out=root / "store.zarr", n_pairs=60,
                                  n_safety=60, seed=seed, download=False))
    cfg = resolve_config(suite="bullet", preset="quick",
                         overrides={**TINY_TRAIN, "threshold": threshold, "seed": seed})
    return train(cfg, store, root / "run").run_dir


@pytest.fixture(scope="module")
def ballrun_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tests that roll the run out in BallRun skip (not fail) without the ``bullet`` extra."""
    pytest.importorskip("bullet_safety_gym", reason=BULLET_EXTRA)
    return build_run(tmp_path_factory.mktemp("evalrun"))


def test_real_rollout_of_a_trained_checkpoint(ballrun_run: Path):
    from presa.evaluate import evaluate

    seen = []
    res = evaluate(ballrun_run, episodes=3, seed=0, workers=2, progress=lambda d, t: seen.append((d, t)))
    assert res.task.name == "BallRun" and res.method == "presa" and res.threshold == 10.0
    assert res.run_dir == str(ballrun_run) and res.checkpoint.endswith("final.pt") and res.step == 40
    assert len(res.episodes) == 3 and seen[-1] == (3, 3)
    assert [e.seed for e in res.episodes] == [episode_seed(0, i) for i in range(3)]
    assert all(1 <= e.length <= 100 for e in res.episodes)
    assert all(np.isfinite(e.reward) and e.cost >= 0 for e in res.episodes)
    # scores are the protocol's functions of the per-episode numbers
    t = get_task("BallRun")
    rewards = np.array([e.reward for e in res.episodes])
    assert res.normalized_reward == pytest.approx(
        float(np.mean((rewards - t.min_episode_reward) / (t.max_episode_reward - t.min_episode_reward))))
    assert res.normalized_cost == pytest.approx(np.mean([e.cost for e in res.episodes]) / 10.0)
    assert res.versions["bullet-safety-gym"] == "1.4.0" and "pybullet" in res.versions
    path = write_eval_json(ballrun_run, res)
    assert path == ballrun_run / "eval" / "eval-seed0-n3.json"
    assert read_eval_json(path)["per_episode"]["reward"] == [e.reward for e in res.episodes]


def test_results_do_not_depend_on_the_number_of_workers(ballrun_run: Path):
    from presa.evaluate import Evaluator

    with Evaluator(workers=1) as one:
        a = one.evaluate(ballrun_run, episodes=4, seed=7)
    with Evaluator(workers=2) as two:
        b = two.evaluate(ballrun_run / "checkpoints" / "final.pt", episodes=4, seed=7)
        c = two.evaluate(ballrun_run, episodes=2, seed=7)      # the same pool, reused
    assert a.workers == 1 and b.workers == 2
    assert a.episodes == b.episodes                             # identical per-episode results
    assert c.episodes == a.episodes[:2]


def test_an_in_memory_actor_evaluates_like_its_checkpoint(ballrun_run: Path):
    from presa.checkpoint import load_actor
    from presa.evaluate import evaluate

    actor = load_actor(ballrun_run)
    a = evaluate(actor, episodes=2, seed=3, workers=1)
    b = evaluate(ballrun_run, episodes=2, seed=3, workers=1)
    assert a.episodes == b.episodes and a.checkpoint is None


def test_checkpoint_with_wrong_observation_size_is_a_clear_error(tmp_path: Path, ballrun_run: Path):
    from presa.evaluate import evaluate

    bad_run = build_run(tmp_path / "bad", obs_dim=5)            # "BallRun" store with 5-dim observations
    with pytest.raises(FeedbackgenError) as info:
        evaluate(bad_run, episodes=1, workers=1)
    msg = str(info.value)
    assert "\n" not in msg
    assert "expects 5-dim observations" in msg and "'BallRun'" in msg and "gives 7" in msg
    assert "store made from this task's data" in msg
    # a good checkpoint in a task with another observation size: same error
    with pytest.raises(FeedbackgenError, match="expects 7-dim observations but task 'BallCircle'.*gives 8"):
        evaluate(ballrun_run, episodes=1, workers=1, task="BallCircle")
