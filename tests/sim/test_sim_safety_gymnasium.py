"""safety-gymnasium through make_env (slow: needs the 'safety-gymnasium' extra; resets take seconds)."""

import numpy as np
import pytest

from feedbackgen.errors import FeedbackgenError
from feedbackgen.sim import make_env

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def point_goal():
    env = make_env("PointGoal1")
    yield env
    env.close()


def test_navigation_full_episode(point_goal, rng, run_episode, check_episode):
    env = point_goal
    assert (env.family, env.env_id, env.task.name, env.max_episode_steps) == \
        ("safety_gymnasium", "SafetyPointGoal1-v0", "PointGoal1", 1000)
    assert env.observation_space.shape == (60,) and env.action_space.shape == (2,)
    assert env.observation_space.dtype == np.float32
    steps = run_episode(env, 0, rng)
    check_episode(env, steps)
    assert len(steps) == 1000 and steps[-1][4] and not steps[-1][3]
    assert all("cost_sum" in s[5] for s in steps)  # the simulator's own cost report


def test_reset_seed_determinism(point_goal):
    a, _ = point_goal.reset(seed=5)
    b, _ = point_goal.reset(seed=5)
    c, _ = point_goal.reset(seed=6)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_velocity_task_and_twin_id(rng, run_episode, check_episode):
    with make_env("SafetyAntVelocity-v1", max_episode_steps=50) as env:
        assert env.task.name == "AntVelocity" and env.max_episode_steps == 50
        assert env.observation_space.shape == (27,) and env.action_space.shape == (8,)
        check_episode(env, run_episode(env, 0, rng))
        a, _ = env.reset(seed=1)
        np.testing.assert_array_equal(a, env.reset(seed=1)[0])
    with make_env("SafetySwimmerVelocityGymnasium-v1", max_episode_steps=20) as env:
        assert env.env_id == "SafetySwimmerVelocity-v1"
        steps = run_episode(env, 0, rng)
        check_episode(env, steps)
        assert len(steps) == 20 and steps[-1][4]


def test_costly_velocity_task_reports_cost(rng, run_episode):
    # Swimmer's velocity limit is low: random actions exceed it within 1000 steps.
    with make_env("SwimmerVelocity") as env:
        steps = run_episode(env, 0, rng)
    assert sum(s[2] for s in steps) > 0


def test_unknown_safety_gymnasium_id_is_one_line_error():
    with pytest.raises(FeedbackgenError) as err:
        make_env("SafetyPointGoal9-v0")
    msg = str(err.value)
    assert "unknown safety-gymnasium env id 'SafetyPointGoal9-v0'" in msg and "\n" not in msg
