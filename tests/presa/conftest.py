"""Tiny synthetic feedback stores with learnable structure, for the presa tests.

The toy task: 2-dim observations, 1-dim actions in [-1, 1]. Each episode's behaviour policy has a
"style" c (cautious c < 0 … reckless c > 0) and acts a = clip(c + 0.2·s₀ + noise). Reward rises
with the action (r = 1 + a) and so does cost (c_t = 1 when a > 0.2). Preferences (y = P(b ≻ a))
and safety labels are computed from that ground truth, so a preference-trained policy should push
actions up and a safety-constrained one should hold them down.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from feedbackgen.store import FeedbackData, OracleData, write_store
from feedbackgen.tasks import Task

T_MAX = 20
H = 5
THRESHOLDS = (4.0, 8.0)  # per-segment budgets κ·H/T_max = 1 and 2 costly steps

TOY_TASK = Task(
    name="Toy-v0",
    suite="bullet",
    env_id="Toy-v0",
    max_episode_steps=T_MAX,
    min_episode_reward=0.0,
    max_episode_reward=40.0,
    min_episode_cost=0.0,
    max_episode_cost=20.0,
    thresholds=THRESHOLDS,
    origin="shipped",
)


def make_toy_data(n_episodes: int = 40, n_pairs: int = 200, seed: int = 0) -> FeedbackData:
    rng = np.random.default_rng(seed)
    n = n_episodes * T_MAX
    style = rng.uniform(-0.9, 0.9, size=n_episodes)
    obs = rng.normal(size=(n, 2)).astype(np.float32)
    episode = np.repeat(np.arange(n_episodes, dtype=np.int32), T_MAX)
    act = np.clip(style[episode] + 0.2 * obs[:, 0] + 0.1 * rng.normal(size=n), -1, 1)
    act = act.astype(np.float32)[:, None]
    rewards = (1.0 + act[:, 0]).astype(np.float32)
    costs = (act[:, 0] > 0.2).astype(np.float32)
    next_obs = np.roll(obs, -1, axis=0)
    trunc = np.zeros(n, bool)
    trunc[T_MAX - 1 :: T_MAX] = True
    ep_start = np.arange(n_episodes, dtype=np.int64) * T_MAX
    ep_len = np.full(n_episodes, T_MAX, dtype=np.int64)

    seg_episode = np.repeat(np.arange(n_episodes, dtype=np.int32), T_MAX // H)
    offsets = np.tile(np.arange(0, T_MAX, H, dtype=np.int64), n_episodes)
    seg_start = seg_episode.astype(np.int64) * T_MAX + offsets
    seg_len = np.full(seg_start.shape, H, dtype=np.int32)
    rows = seg_start[:, None] + np.arange(H)
    seg_ret = rewards[rows].sum(1)
    seg_cost = costs[rows].sum(1)

    s = seg_start.shape[0]
    a = rng.integers(0, s, n_pairs)
    b = (a + rng.integers(1, s, n_pairs)) % s
    label = np.where(seg_ret[b] > seg_ret[a], 1.0, np.where(seg_ret[b] < seg_ret[a], 0.0, 0.5))
    label = label.astype(np.float32)
    safety_segment = np.arange(s, dtype=np.int64)
    budgets = np.asarray(THRESHOLDS) * H / T_MAX
    safety_label = (seg_cost[:, None] <= budgets[None, :]).astype(np.int8)
    ep_reward = rewards.reshape(n_episodes, T_MAX).sum(1)
    ep_cost = costs.reshape(n_episodes, T_MAX).sum(1)
    oracle = OracleData(
        rewards=rewards,
        costs=costs,
        episode_reward=ep_reward,
        episode_cost=ep_cost,
        segment_return=seg_ret,
        segment_cost=seg_cost,
        pref_label=label,
        safety_label=safety_label,
    )
    meta = {
        "task": TOY_TASK.to_dict(),
        "obs_mean": obs.mean(0).tolist(),
        "obs_std": obs.std(0).tolist(),
        "seed": seed,
        "segments": {"method": "fixed", "length": H},
    }
    return FeedbackData(
        observations=obs,
        next_observations=next_obs,
        actions=act,
        episode=episode,
        terminations=np.zeros(n, bool),
        truncations=trunc,
        episode_start=ep_start,
        episode_length=ep_len,
        segment_episode=seg_episode,
        segment_start=seg_start,
        segment_length=seg_len,
        pref_a=a.astype(np.int64),
        pref_b=b.astype(np.int64),
        pref_label=label,
        pref_prob=np.full(n_pairs, np.nan, np.float32),
        thresholds=np.asarray(THRESHOLDS, np.float32),
        safety_segment=safety_segment,
        safety_label=safety_label,
        oracle=oracle,
        metadata=meta,
        store_id="test/toy-v0",
    )


@pytest.fixture(scope="session")
def toy_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ~800-transition toy store (written once per test session)."""
    path = tmp_path_factory.mktemp("stores") / "toy.zarr"
    write_store(path, make_toy_data())
    return path


# Small, fast settings for real training runs in tests.
