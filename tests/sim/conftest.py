"""Helpers shared by the simulator-layer tests."""

import numpy as np
import pytest


def _run_episode(env, seed, rng):
    """Run one full episode with uniform random actions; return per-step records."""
    obs, info = env.reset(seed=seed)
    assert isinstance(info, dict)
    assert obs.dtype == np.float32 and obs.shape == env.observation_space.shape
    steps = []
    while True:
        action = rng.uniform(env.action_space.low, env.action_space.high).astype(np.float32)
        obs, reward, cost, terminated, truncated, info = env.step(action)
        steps.append((obs, reward, cost, terminated, truncated, info))
        if terminated or truncated:
            return steps


def _check_episode(env, steps):
    """The checks every family shares: types, finite non-negative costs, truncation length."""
    for obs, reward, cost, terminated, truncated, info in steps:
        assert obs.dtype == np.float32 and obs.shape == env.observation_space.shape
        assert type(reward) is float and np.isfinite(reward)
        assert type(cost) is float and np.isfinite(cost) and cost >= 0.0
        assert info["cost"] == cost
        assert isinstance(terminated, bool) and isinstance(truncated, bool)
    assert len(steps) <= env.max_episode_steps
    last = steps[-1]
    if not last[3]:  # not terminated: must be the truncation at max_episode_steps
        assert last[4] and len(steps) == env.max_episode_steps
    assert not any(s[3] or s[4] for s in steps[:-1])


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def run_episode():
    """``run_episode(env, seed, rng) -> steps``: one full episode with random actions."""
    return _run_episode


@pytest.fixture
def check_episode():
    """``check_episode(env, steps)``: the per-step checks every family shares."""
    return _check_episode
