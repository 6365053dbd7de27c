"""Normalisation against hand-computed values (DSRL references, shipped references, κ = 0)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from feedbackgen.errors import FeedbackgenError
from feedbackgen.tasks import Task, get_task
from presa.normalize import cost_epsilon, is_safe, normalized_cost, normalized_reward, reward_range


def _shipped_task(lo: float, hi: float) -> Task:
    return Task(name="Toy-mini", suite="bullet", env_id="SafetyBallRun-v0", max_episode_steps=100,
                min_episode_reward=lo, max_episode_reward=hi, min_episode_cost=0.0,
                max_episode_cost=50.0, thresholds=(10.0, 20.0, 40.0), origin="shipped",
                base_task="BallRun")


def test_reward_uses_dsrl_references_of_ballrun():
    task = get_task("BallRun")
    # dsrl_tasks.csv: BallRun min 26.339754104614258, max 1327.445556640625
    lo, hi = 26.339754104614258, 1327.445556640625
    assert reward_range(task) == (lo, hi)
    assert normalized_reward(lo, task) == 0.0
    assert normalized_reward(hi, task) == pytest.approx(1.0)
    assert normalized_reward(676.8926553, task) == pytest.approx((676.8926553 - lo) / (hi - lo))
    # hand value: (500 - 26.3397541) / 1301.1058025 = 0.3640444
    assert normalized_reward(500.0, task) == pytest.approx(0.3640444, abs=1e-7)


def test_reward_uses_the_shipped_collection_references():
    task = _shipped_task(-20.0, 180.0)
    assert normalized_reward(80.0, task) == pytest.approx(0.5)
    assert normalized_reward(-70.0, task) == pytest.approx(-0.25)  # below R_min is negative, not clipped
    arr = normalized_reward(np.array([-20.0, 30.0, 180.0, 230.0]), task)
    np.testing.assert_allclose(arr, [0.0, 0.25, 1.0, 1.25])


def test_cost_normalisation_hand_values():
    assert cost_epsilon(10.0) == 0.0 and cost_epsilon(0.0) == 1.0
    assert normalized_cost(15.0, 10.0) == pytest.approx(1.5)
    assert normalized_cost(10.0, 10.0) == pytest.approx(1.0)
    assert normalized_cost(0.0, 40.0) == 0.0
    assert normalized_cost(7.0, 20.0) == pytest.approx(0.35)
    np.testing.assert_allclose(normalized_cost(np.array([0.0, 20.0, 80.0]), 40.0), [0.0, 0.5, 2.0])


def test_cost_normalisation_with_zero_threshold_uses_epsilon_one():
    # kappa = 0 -> (C + 1) / (0 + 1)
    assert normalized_cost(0.0, 0.0) == pytest.approx(1.0)
    assert normalized_cost(3.0, 0.0) == pytest.approx(4.0)
    assert normalized_cost(0.5, 0.0) == pytest.approx(1.5)
    assert is_safe(normalized_cost(0.0, 0.0))
    assert not is_safe(normalized_cost(0.5, 0.0))


def test_safe_iff_normalised_cost_at_most_one():
    assert is_safe(1.0) and is_safe(0.0) and is_safe(0.999)
    assert not is_safe(1.0001) and not is_safe(math.nan)


def test_bad_references_and_thresholds_are_one_line_errors():
    with pytest.raises(FeedbackgenError, match="reward references"):
        normalized_reward(1.0, _shipped_task(5.0, 5.0))
    with pytest.raises(FeedbackgenError, match="threshold"):
        normalized_cost(1.0, -1.0)
