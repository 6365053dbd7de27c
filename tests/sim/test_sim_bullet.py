"""bullet-safety-gym through make_env (default suite: a few seconds)."""

import numpy as np
import pytest

# skip (not fail) the whole module without the bullet extra: gymnasium comes with it too
BULLET_EXTRA = "needs the bullet extra: pip install 'presa-toolkit[bullet]'"
gymnasium = pytest.importorskip("gymnasium", reason=BULLET_EXTRA)
pytest.importorskip("bullet_safety_gym", reason=BULLET_EXTRA)

from feedbackgen.errors import FeedbackgenError  # noqa: E402
from feedbackgen.sim import make_env  # noqa: E402
from feedbackgen.sim.bullet import open_backend  # noqa: E402
from feedbackgen.sim.core import SafeEnv  # noqa: E402


@pytest.mark.parametrize(("task", "obs_dim", "act_dim", "t_max"), [
    ("BallRun", 7, 2, 100), ("BallCircle", 8, 2, 200), ("CarRun", 7, 2, 200),
])
def test_full_episode(task, obs_dim, act_dim, t_max, rng, run_episode, check_episode):
    with make_env(task) as env:
        assert (env.family, env.task.name, env.max_episode_steps) == ("bullet", task, t_max)
        raw = open_backend(env.env_id, None, {})  # the simulator's own gymnasium env
        assert env.observation_space.shape == raw.env.observation_space.shape == (obs_dim,)
        assert env.action_space.shape == raw.env.action_space.shape == (act_dim,)
        np.testing.assert_array_equal(env.action_space.low, raw.env.action_space.low)
        np.testing.assert_array_equal(env.action_space.high, raw.env.action_space.high)
        raw.close()
        steps = run_episode(env, 0, rng)
        check_episode(env, steps)
        assert all("cost" in s[5] for s in steps)


def test_costs_are_reported_by_a_costly_task(rng, run_episode):
    # BallCircle with random actions leaves the safe band: the summed cost must be positive.
    with make_env("BallCircle") as env:
        steps = run_episode(env, 0, rng)
    assert sum(s[2] for s in steps) > 0


def test_reset_seed_determinism():
    with make_env("SafetyBallRun-v0") as env:
        a, _ = env.reset(seed=7)
        b, _ = env.reset(seed=7)
        c, _ = env.reset(seed=8)
        np.testing.assert_array_equal(a, b)
        assert not np.array_equal(a, c)


def test_same_seed_same_trajectory_in_fresh_envs():
    # Within one env, PyBullet's restoreState keeps some solver state from the previous episode,
    # so later steps can differ slightly (~1e-2); two fresh envs agree exactly.
    act = np.full(2, 0.5, np.float32)
    runs = []
    for _ in range(2):
        with make_env("BallRun") as env:
            env.reset(seed=3)
            runs.append([env.step(act)[0] for _ in range(10)])
    np.testing.assert_array_equal(runs[0], runs[1])


def test_env_randomness_leaves_global_numpy_rng_alone():
    np.random.seed(123)
    expected = np.random.RandomState(123).uniform(size=3)
    with make_env("BallRun") as env:
        env.reset(seed=0)
        env.step(np.zeros(2))
    np.testing.assert_array_equal(np.random.uniform(size=3), expected)


def test_make_env_seed_is_first_reset_seed():
    with make_env("BallRun", seed=11) as env, make_env("BallRun") as ref:
        first, _ = env.reset()
        np.testing.assert_array_equal(first, ref.reset(seed=11)[0])


def test_truncation_at_max_episode_steps():
    with make_env("BallRun", max_episode_steps=5) as env:
        env.reset(seed=0)
        flags = [env.step(np.zeros(2))[4] for _ in range(5)]
        assert flags == [False] * 4 + [True]
        with pytest.raises(FeedbackgenError, match="call reset"):
            env.step(np.zeros(2))


def test_wrapper_enforces_truncation_itself():
    # The simulator's own limit is 100; the wrapper must stop at 7 on its own.
    backend = open_backend("SafetyBallRun-v0", None, {})
    assert backend.spec_max_episode_steps == 100
    env = SafeEnv(backend, env_id="SafetyBallRun-v0", family="bullet", task=None, max_episode_steps=7)
    env.reset(seed=0)
    out = [env.step(np.zeros(2)) for _ in range(7)]
    assert [o[4] for o in out] == [False] * 6 + [True]
    env.close()


def test_raw_id_outside_the_task_table(rng, run_episode, check_episode):
    with make_env("SafetyBallReach-v0") as env:
        assert env.task is None
        assert env.max_episode_steps == gymnasium.spec("SafetyBallReach-v0").max_episode_steps
        check_episode(env, run_episode(env, 1, rng))


def test_step_errors():
    env = make_env("BallRun")
    with pytest.raises(FeedbackgenError, match="call reset"):
        env.step(np.zeros(2))
    env.reset(seed=0)
    with pytest.raises(FeedbackgenError, match=r"action of shape \(3,\)"):
        env.step(np.zeros(3))
    env.close()
    env.close()  # idempotent
    with pytest.raises(FeedbackgenError, match="closed"):
        env.reset()


def test_unknown_bullet_id_is_one_line_error():
    with pytest.raises(FeedbackgenError) as err:
        make_env("SafetyBallRunn-v0")
    msg = str(err.value)
    assert "unknown bullet-safety-gym env id 'SafetyBallRunn-v0'" in msg and "SafetyBallRun-v0" in msg
    assert "\n" not in msg


def test_shipped_task_uses_its_own_length(tmp_path, monkeypatch, rng, run_episode, check_episode):
    import json

    from feedbackgen.tasks import get_task

    rec = get_task("BallRun").to_dict()
    rec.update(name="BallRun-tiny", max_episode_steps=12, base_task="BallRun")
    (tmp_path / "BallRun-tiny").mkdir()
    (tmp_path / "BallRun-tiny" / "dataset.json").write_text(json.dumps({"task": rec}))
    monkeypatch.setenv("FEEDBACKGEN_DATASETS_DIR", str(tmp_path))
    with make_env("BallRun-tiny") as env:
        assert env.task.origin == "shipped" and env.max_episode_steps == 12
        steps = run_episode(env, 0, rng)
        check_episode(env, steps)
        assert len(steps) == 12
