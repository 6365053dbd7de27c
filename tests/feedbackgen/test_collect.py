"""feedbackgen.collect: real short rollouts in bullet-safety-gym, read back with read_dsrl."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from feedbackgen.collect import CollectConfig, collect, episode_counts, parse_policy, plan_episodes
from feedbackgen.errors import FeedbackgenError
from feedbackgen.sources import read_dsrl

pytest.importorskip("bullet_safety_gym")



TASK = "BallRun"
STEPS = 15  # short episodes keep every test to a few seconds


def _cfg(tmp_path: Path, out: str = "d.hdf5", **kw) -> CollectConfig:
    base = dict(task=TASK, out=tmp_path / out, episodes=4, policies=("random",), noise=(0.0, 0.3),
                seed=7, workers=1, max_episode_steps=STEPS)
    base.update(kw)
    return CollectConfig(**base)


def _arrays(path: Path) -> dict[str, np.ndarray]:
    with read_dsrl(path, lazy=False) as t:
        return {k: np.asarray(getattr(t, k)) for k in
                ("observations", "next_observations", "actions", "rewards", "costs", "terminations",
                 "truncations", "episode_start", "episode_length")}


@pytest.fixture(scope="module")
def two_worker_file(tmp_path_factory) -> Path:
    """A real random-policy collection with 2 worker processes (shared by several tests)."""
    tmp = tmp_path_factory.mktemp("collect")
    return collect(_cfg(tmp, "two.hdf5", episodes=5, workers=2))


def test_collection_is_a_valid_dsrl_file(two_worker_file: Path) -> None:
    with read_dsrl(two_worker_file, lazy=False) as t:
        assert t.n_episodes == 5
        assert t.episode_length.tolist() == [STEPS] * 5
        assert t.n_transitions == 5 * STEPS
        assert t.obs_dim == 7 and t.act_dim == 2
        ends = t.episode_start + t.episode_length - 1
        assert t.truncations[ends].all() and not t.terminations.any()
        assert t.truncations.sum() == 5
        assert np.all(np.abs(t.actions) <= 1.0)
        # next_observations continue the episode: obs[t+1] == next_obs[t] inside an episode
        inside = np.setdiff1d(np.arange(t.n_transitions - 1), ends)
        np.testing.assert_array_equal(t.observations[inside + 1], t.next_observations[inside])
        ep_r, ep_c = t.episode_returns()
        attrs = t.attrs
    assert attrs["min_episode_reward"] == pytest.approx(ep_r.min(), rel=1e-5)
    assert attrs["max_episode_reward"] == pytest.approx(ep_r.max(), rel=1e-5)
    assert attrs["min_episode_cost"] == pytest.approx(ep_c.min())
    assert attrs["max_episode_cost"] == pytest.approx(ep_c.max())
    record = json.loads(two_worker_file.with_suffix(".json").read_text())
    assert json.loads(attrs["feedbackgen_collection"])["seed"] == 7
    assert record["episodes"] == 5 and record["transitions"] == 5 * STEPS
    assert record["max_episode_cost"] == pytest.approx(ep_c.max())
    assert record["policies"] == [{"spec": "random", "share": 1.0, "episodes": 5}]
    assert record["noise"]["std_range"] == [0.0, 0.3]
    assert "numpy" in record["versions"] and "bullet-safety-gym" in record["versions"]


def test_same_seed_same_data_whatever_the_worker_count(tmp_path: Path, two_worker_file: Path) -> None:
    one = collect(_cfg(tmp_path, "one.hdf5", episodes=5, workers=1))
    a, b = _arrays(one), _arrays(two_worker_file)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    other = _arrays(collect(_cfg(tmp_path, "seed8.hdf5", episodes=5, seed=8)))
    assert not np.array_equal(a["actions"], other["actions"])


def test_noise_free_random_policy_still_differs_between_episodes(tmp_path: Path) -> None:
    arr = _arrays(collect(_cfg(tmp_path, noise=(0.0, 0.0), episodes=2)))
    assert not np.array_equal(arr["actions"][:STEPS], arr["actions"][STEPS:])


def test_episode_plan_follows_shares_and_seed() -> None:
    assert episode_counts([0.5, 0.3, 0.2], 10) == [5, 3, 2]
    assert episode_counts([1 / 3] * 3, 10) == [4, 3, 3]
    assert sum(episode_counts([0.11, 0.89], 7)) == 7
    cfg = CollectConfig(task=TASK, out=Path("x.hdf5"), episodes=20, policies=("random@3", "random@1"),
                        noise=(0.1, 0.4), seed=1)
    assert cfg.policies == (("random", 0.75), ("random", 0.25))
    plans = plan_episodes(cfg)
    assert [p.index for p in plans] == list(range(20))
    assert sum(p.policy == 0 for p in plans) == 15
    stds = np.array([p.noise_std for p in plans])
    assert stds.min() >= 0.1 and stds.max() <= 0.4 and stds.std() > 0
    again = plan_episodes(cfg)
    assert [(p.policy, p.noise_std, p.reset_seed) for p in plans] == \
        [(p.policy, p.noise_std, p.reset_seed) for p in again]


def test_parse_policy() -> None:
    assert parse_policy("random") == ("random", 1.0)
    assert parse_policy("sb3:a/b.zip@0.5") == ("sb3:a/b.zip", 0.5)
    assert parse_policy("presa:runs/x@home") == ("presa:runs/x@home", 1.0)
    assert parse_policy("switch:random>sb3:a.zip") == ("switch:random>sb3:a.zip", 1.0)
    assert parse_policy("idm:20@2") == ("idm:20", 2.0)
    assert parse_policy("switch:idm:10>idm:45") == ("switch:idm:10>idm:45", 1.0)
    for bad in ("ppo:x.zip", "random:x", "sb3:", "random@-1", "random@0", "switch:random", "switch:x>random",
                "switch:random>switch:random>random", "idm:", "idm:fast", "idm:-5"):
        with pytest.raises(FeedbackgenError):
            parse_policy(bad)


def _tiny_sb3_model(task: str, path: Path, steps: int = 128) -> Path:
    """Train PPO for ``steps`` steps (0: save it untrained) on reward - cost in our env."""
    import gymnasium as gym
    import torch
    from stable_baselines3 import PPO

    from feedbackgen.sim import make_env

    torch.set_num_threads(1)

    class Penalised(gym.Env):
        def __init__(self) -> None:
            # bullet-safety-gym redirects sys.stdout/stderr by C stream name while it builds an env, which
            # fails on pytest's capture stream: build it with the real one (collect itself only
            # runs simulators in spawned workers, so it is not affected).
            with pytest.MonkeyPatch.context() as mp:
                mp.setattr(sys, "stdout", sys.__stdout__)
                mp.setattr(sys, "stderr", sys.__stderr__)
                self.env = make_env(task)
            self.observation_space = self.env.observation_space
            self.action_space = self.env.action_space

        def reset(self, *, seed=None, options=None):
            return self.env.reset(seed=seed)

        def step(self, action):
            obs, r, c, term, trunc, info = self.env.step(action)
            return obs, r - c, term, trunc or False, info

    env = Penalised()
    model = PPO("MlpPolicy", env, n_steps=64, batch_size=32, n_epochs=1, seed=0, device="cpu",
                policy_kwargs={"net_arch": [16, 16]})
    if steps:
        model.learn(steps)
    model.save(path)
    env.env.close()
    return path


@pytest.fixture(scope="module")
def sb3_model(tmp_path_factory) -> Path:
    """A PPO model trained for 128 steps on BallRun (reward - cost)."""
    pytest.importorskip("stable_baselines3")
    return _tiny_sb3_model(TASK, tmp_path_factory.mktemp("sb3") / "ppo.zip")


def test_sb3_policy_in_a_mixture(tmp_path: Path, sb3_model: Path) -> None:
    """sb3 episodes act exactly as the model's deterministic predict; random ones do not."""
    from stable_baselines3 import PPO

    cfg = _cfg(tmp_path, "mix", policies=(f"sb3:{sb3_model}@0.5", "random@0.5"), episodes=4,
               noise=(0.0, 0.0), name="Mix-mini")
    folder = collect(cfg)
    meta = json.loads((folder / "dataset.json").read_text())
    record = meta["collection"]
    assert meta["task"]["name"] == "Mix-mini" and meta["task"]["base_task"] == TASK
    assert [p["episodes"] for p in record["policies"]] == [2, 2]
    assert record["policies"][0]["spec"] == f"sb3:{sb3_model}"
    assert len(record["policies"][0]["sha256"]) == 64
    assert "stable-baselines3" in record["versions"]

    arr = _arrays(folder / "data.hdf5")
    model = PPO.load(sb3_model, device="cpu")
    expected, _ = model.predict(arr["observations"], deterministic=True)
    expected = np.clip(expected, -1, 1)
    for ep, pol in enumerate(record["episode_policy"]):
        rows = slice(arr["episode_start"][ep], arr["episode_start"][ep] + arr["episode_length"][ep])
        same = np.allclose(arr["actions"][rows], expected[rows], atol=1e-6)
        assert same == (pol == 0), (ep, pol)


def test_switch_policy_switches_at_the_planned_step(tmp_path: Path, sb3_model: Path) -> None:
    """switch:A>B acts as A before the episode's switch step and as B from it on; a selection keeps
    the chosen episodes in plan order and records itself; the version goes to the file and record."""
    from stable_baselines3 import PPO

    spec = f"switch:sb3:{sb3_model}>random"
    assert parse_policy(f"{spec}@2") == (spec, 2.0)
    cfg = _cfg(tmp_path, "sw", policies=(spec, f"sb3:{sb3_model}"), episodes=6, noise=(0.0, 0.0),
               switch_range=(0.2, 0.8), version="v9")
    plans = plan_episodes(cfg)
    assert all(0.2 <= p.switch_frac <= 0.8 for p in plans)
    other = plan_episodes(replace(cfg, switch_range=(0, 1)))
    assert [(p.noise_std, p.reset_seed) for p in plans] == [(p.noise_std, p.reset_seed) for p in other]

    def select(ep_reward, ep_cost, ep_policy):
        assert len(ep_reward) == len(ep_cost) == len(ep_policy) == 6
        return np.array([4, 0, 1]), {"rule": "three"}

    folder = collect(cfg, select=select)
    meta = json.loads((folder / "dataset.json").read_text())
    record = meta["collection"]
    assert meta["version"] == record["version"] == "v9"
    assert record["selection"] == {"pool_episodes": 6, "kept_episodes": 3, "rule": "three",
                                   "kept_plan_index": [0, 1, 4]}
    assert record["episodes"] == 3 and len(record["episode_policy"]) == 3
    assert len(record["policies"][0]["sha256"]) == 1  # a switch spec lists the files of its parts
    arr = _arrays(folder / "data.hdf5")
    with read_dsrl(folder / "data.hdf5") as t:
        assert t.attrs["dataset_version"] == "v9"
    model = PPO.load(sb3_model, device="cpu")
    expected = np.clip(model.predict(arr["observations"], deterministic=True)[0], -1, 1)
    steps = record["episode_switch_step"]
    for ep, (pol, step) in enumerate(zip(record["episode_policy"], steps, strict=True)):
        plan = plans[record["selection"]["kept_plan_index"][ep]]
        rows = np.arange(arr["episode_start"][ep], arr["episode_start"][ep] + arr["episode_length"][ep])
        same = np.isclose(arr["actions"][rows], expected[rows], atol=1e-6).all(axis=1)
        if pol == 0:
            assert step == int(plan.switch_frac * STEPS) and 0 < step < STEPS
            assert same[:step].all() and not same[step:].any()
        else:
            assert step == -1 and same.all()


def test_sb3_policy_for_another_task_is_refused(tmp_path: Path) -> None:
    pytest.importorskip("stable_baselines3")
    model_path = _tiny_sb3_model("BallCircle", tmp_path / "circle.zip", steps=0)  # obs 8, BallRun has 7
    with pytest.raises(FeedbackgenError, match="trained on this task"):
        collect(_cfg(tmp_path, policies=(f"sb3:{model_path}",)))


def test_zip_that_is_not_an_sb3_model_is_refused(tmp_path: Path) -> None:
    pytest.importorskip("stable_baselines3")
    import zipfile

    from feedbackgen.collect import SB3Policy

    path = tmp_path / "notes.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("notes.txt", "not a model")
    with pytest.raises(FeedbackgenError, match="not a readable stable-baselines3 model"):
        SB3Policy(path, obs_dim=7, act_dim=2)


def test_dataset_folder_registers_as_a_task(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from feedbackgen.tasks import get_task

    folder = collect(_cfg(tmp_path, "MyRun-mini", episodes=3))
    assert sorted(p.name for p in folder.iterdir()) == ["data.hdf5", "dataset.json"]
    meta = json.loads((folder / "dataset.json").read_text())
    assert meta["file"] == "data.hdf5" and meta["task"]["origin"] == "shipped"
    monkeypatch.setenv("FEEDBACKGEN_DATASETS_DIR", str(tmp_path))
    task = get_task("MyRun-mini")
    assert task.origin == "shipped" and task.env_id == "SafetyBallRun-v0"
    assert task.max_episode_steps == STEPS and task.thresholds == (10.0, 20.0, 40.0)
    with read_dsrl(task.source_path) as t:
        ep_r, ep_c = t.episode_returns()
    assert task.max_episode_reward == pytest.approx(ep_r.max(), rel=1e-5)
    assert task.max_episode_cost == pytest.approx(ep_c.max())


def test_existing_output_needs_overwrite(tmp_path: Path) -> None:
    collect(_cfg(tmp_path, episodes=1))
    with pytest.raises(FeedbackgenError, match="--overwrite"):
        collect(_cfg(tmp_path, episodes=1))
    collect(_cfg(tmp_path, episodes=2, overwrite=True))
    assert _arrays(tmp_path / "d.hdf5")["episode_start"].size == 2
    # a folder output only ever replaces a dataset folder, never some other folder
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("mine")
    with pytest.raises(FeedbackgenError, match="not a dataset folder"):
        collect(_cfg(tmp_path, "notes", episodes=1, overwrite=True))
    assert (tmp_path / "notes" / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize("kw, match", [
    ({"task": "NoSuchTask"}, "unknown task"),
    ({"policies": ("sb3:/no/such/model.zip",)}, "does not exist"),
    ({"policies": ("presa:/no/such/run",)}, "does not exist"),
    ({"policies": ("ppo:x.zip",)}, "bad policy"),
    ({"noise": (0.3, 0.1)}, "bad noise range"),
    ({"noise": (-0.1, 0.1)}, "bad noise range"),
    ({"noise": (0.1,)}, "bad noise range"),
    ({"episodes": 0}, "episodes"),
    ({"workers": 0}, "workers"),
])
def test_bad_input_is_one_clear_line(tmp_path: Path, kw: dict, match: str) -> None:
    with pytest.raises(FeedbackgenError, match=match) as info:
        collect(_cfg(tmp_path, **kw))
    assert "\n" not in str(info.value)
    assert not (tmp_path / "d.hdf5").exists()


def _short_run(tmp_path: Path, task: str, steps: int = 20) -> None:
    cfg = CollectConfig(task=task, out=tmp_path / "d.hdf5", episodes=2, noise=(0.0, 0.2), seed=0,
                        workers=1, max_episode_steps=steps)
    with read_dsrl(collect(cfg)) as t:
        assert t.n_episodes == 2
        assert t.episode_length.max() <= steps


@pytest.mark.slow
def test_safety_gymnasium_short_run(tmp_path: Path) -> None:
    pytest.importorskip("mujoco")
    _short_run(tmp_path, "PointGoal1")


@pytest.mark.slow
def test_metadrive_short_run(tmp_path: Path) -> None:
    pytest.importorskip("metadrive")
    _short_run(tmp_path, "easysparse")


def test_idm_policy_needs_no_file_and_refuses_other_simulators(tmp_path: Path) -> None:
    from feedbackgen.collect import policy_files

    assert policy_files("switch:idm:10>idm:45") == [] and policy_files("idm:30") == []
    with pytest.raises(FeedbackgenError, match="not a MetaDrive task"):
        collect(_cfg(tmp_path, policies=("idm:30",), workers=1))


@pytest.mark.slow
def test_metadrive_idm_policies_and_compression(tmp_path: Path) -> None:
    """MetaDrive's own IDM policy drives (faster target: more velocity cost); gzip is transparent."""
    pytest.importorskip("metadrive")
    import h5py

    cfg = CollectConfig(task="easysparse", out=tmp_path / "d.hdf5", episodes=3, seed=0, workers=1,
                        max_episode_steps=60, compression="gzip",
                        policies=("idm:10", "idm:60", "switch:idm:10>idm:60"))
    out = collect(cfg)
    with h5py.File(out, "r") as f:
        assert f["observations"].compression == "gzip"
    rec = json.loads(out.with_suffix(".json").read_text())
    cost = {p["spec"]: p["mean_episode_cost"] for p in rec["policies"]}
    assert cost["idm:60"] > cost["idm:10"] and "sha256" not in rec["policies"][0]
    with read_dsrl(out) as t:
        assert t.n_episodes == 3 and t.obs_dim == 261
