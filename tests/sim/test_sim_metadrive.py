"""DSRL MetaDrive tasks through make_env (slow: needs the 'metadrive' extra)."""

import numpy as np
import pytest

from feedbackgen.errors import FeedbackgenError
from feedbackgen.sim import make_env

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def easysparse():
    env = make_env("easysparse")
    yield env
    env.close()


def test_full_episode(easysparse, rng, run_episode, check_episode):
    env = easysparse
    assert (env.family, env.env_id, env.task.name, env.max_episode_steps) == \
        ("metadrive", "SafeMetaDrive-easysparse", "easysparse", 1000)
    assert env.observation_space.shape == (261,) and env.action_space.shape == (2,)
    steps = run_episode(env, 0, rng)
    check_episode(env, steps)
    for obs, _r, cost, _terminated, _t, info in steps:
        for key in ("velocity_cost", "proximity_cost", "out_of_road_cost", "crash_cost"):
            assert np.isfinite(info[key]) and info[key] >= 0.0
        # cost = MetaDrive's (out-of-road / crash) + DSRL's velocity and proximity terms
        assert cost >= info["velocity_cost"] + info["proximity_cost"] - 1e-12
        expected = 0.01 * max(0.0, 0.1 - float(obs[-240:].min())) ** 2
        np.testing.assert_allclose(info["proximity_cost"], expected, rtol=1e-5, atol=1e-12)
    last = steps[-1][5]
    assert steps[-1][3] == bool(last["arrive_dest"] or last["crash"] or last["out_of_road"])


def test_dsrl_costs_while_driving_fast(easysparse):
    env = easysparse
    env.reset(seed=1)
    infos = []
    for _ in range(60):  # full throttle straight ahead: exceeds 10 km/h, then velocity cost > 0
        _o, _r, cost, terminated, truncated, info = env.step(np.array([0.0, 1.0], np.float32))
        infos.append(info)
        if terminated or truncated:
            break
    assert max(i["velocity_cost"] for i in infos) > 0
    fast = max(infos, key=lambda i: i["velocity"])
    np.testing.assert_allclose(fast["velocity_cost"], 0.01 * (fast["velocity"] * 3.6 - 10.0), rtol=1e-6)


def test_reset_seed_determinism(easysparse):
    a, _ = easysparse.reset(seed=3)
    b, _ = easysparse.reset(seed=3)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (261,)
    # the two entries DSRL's 261-dim state adds: the default car's normalised length and width
    np.testing.assert_allclose(a[:2], [4.515 / 10.0, 1.852 / 2.5], rtol=1e-5)


def test_one_metadrive_env_per_process(easysparse):
    with pytest.raises(FeedbackgenError, match="already open"):
        make_env("harddense")


def test_other_task_and_truncation(easysparse, run_episode, check_episode):
    easysparse.close()  # MetaDrive allows one env per process
    with make_env("SafeMetaDrive-mediumdense", max_episode_steps=25) as env:
        assert env.max_episode_steps == 25 and env.task.name == "mediumdense"
        obs, _ = env.reset(seed=0)
        assert obs.shape == (261,)
        steps = []
        while True:  # gentle actions: stays on the road, so the episode ends by truncation
            out = env.step(np.array([0.0, 0.2], np.float32))
            steps.append(out)
            if out[3] or out[4]:
                break
        check_episode(env, steps)
        assert len(steps) == 25 and steps[-1][4] and not steps[-1][3]


def test_idm_traffic_matches_dsrl():
    from metadrive.policy.idm_policy import IDMPolicy

    assert (IDMPolicy.NORMAL_SPEED, IDMPolicy.ACC_FACTOR, IDMPolicy.DEACC_FACTOR) == (30, 1.0, -5)
