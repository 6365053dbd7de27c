"""Shared fixtures: tiny DSRL-shaped HDF5 files, a registered tiny task, a tiny feedback store.

Everything is written under ``tmp_path``; the real ``datasets/`` folder and ``~/.dsrl`` are never
touched (``tiny_task`` points ``FEEDBACKGEN_DATASETS_DIR`` and ``DSRL_DATASET_DIR`` at tmp folders).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

#: episode lengths of the default tiny file: varied, all >= 20 steps except one short episode.
TINY_EPISODE_LENGTHS = (60, 45, 52, 30, 60, 38, 60, 12, 55, 41)
TINY_TASK_NAME = "TinyRun-mini"
TINY_THRESHOLDS = (5.0, 10.0, 20.0)
TINY_MAX_EPISODE_STEPS = 60


def write_tiny_dsrl(path: Path, *, episode_lengths: Sequence[int] = TINY_EPISODE_LENGTHS, obs_dim: int = 4,
                    act_dim: int = 2, seed: int = 0, flag_last: bool = True,
                    overrides: dict | None = None, drop: Sequence[str] = ()) -> Path:
    """Write a DSRL-layout HDF5 file with episodes of the given lengths.

    Episode ``i`` has a per-step cost probability rising with ``i`` (episode costs from 0 to
    about the episode length), and reward that rises with cost, as in DSRL data, so the
    thresholds in :data:`TINY_THRESHOLDS` split the episodes. Episodes end with a timeout at
    the max length and a terminal otherwise.

    Args:
        path: file to write.
        episode_lengths: steps per episode.
        obs_dim, act_dim: dimensions.
        seed: data seed.
        flag_last: set the end flag of the last episode (False leaves a trailing unflagged run).
        overrides: replace arrays by key (DSRL names) before writing, e.g. to insert NaNs.
        drop: DSRL keys to leave out.
    """
    import h5py

    rng = np.random.default_rng(seed)
    n = int(sum(episode_lengths))
    n_ep = len(episode_lengths)
    p_cost = np.linspace(0.0, 0.6, n_ep)
    obs = rng.normal(size=(n, obs_dim)).astype(np.float32)
    nobs = np.roll(obs, -1, axis=0)
    act = rng.uniform(-1, 1, size=(n, act_dim)).astype(np.float32)
    costs = np.zeros(n, np.float32)
    rewards = np.zeros(n, np.float32)
    terminals = np.zeros(n, bool)
    timeouts = np.zeros(n, bool)
    lo = 0
    for i, length in enumerate(episode_lengths):
        hi = lo + length
        costs[lo:hi] = (rng.random(length) < p_cost[i]).astype(np.float32)
        rewards[lo:hi] = (0.5 + p_cost[i] + 0.3 * rng.normal(size=length)).astype(np.float32)
        if i < n_ep - 1 or flag_last:
            (timeouts if length >= TINY_MAX_EPISODE_STEPS else terminals)[hi - 1] = True
        lo = hi
    arrays = {"observations": obs, "next_observations": nobs, "actions": act, "rewards": rewards,
              "costs": costs, "terminals": terminals, "timeouts": timeouts}
    arrays.update(overrides or {})
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        for key, value in arrays.items():
            if key not in drop:
                f.create_dataset(key, data=value)
    return path


def register_tiny_task(folder: Path, *, name: str = TINY_TASK_NAME, data_file: Path | None = None,
                       thresholds: Sequence[float] = TINY_THRESHOLDS, **write_kwargs) -> Path:
    """Create ``folder/<name>/dataset.json`` (+ ``data.hdf5`` unless ``data_file`` is given)."""
    ds = folder / name
    ds.mkdir(parents=True, exist_ok=True)
    if data_file is None:
        write_tiny_dsrl(ds / "data.hdf5", **write_kwargs)
    task = {"name": name, "suite": "bullet", "env_id": "SafetyBallRun-v0",
            "max_episode_steps": TINY_MAX_EPISODE_STEPS, "min_episode_reward": 0.0,
            "max_episode_reward": 100.0, "min_episode_cost": 0.0, "max_episode_cost": 60.0,
            "thresholds": list(thresholds), "base_task": "BallRun"}
    record = {"task": task, "file": str(data_file) if data_file is not None else "data.hdf5",
              "collection": {"how": "tests/conftest.py write_tiny_dsrl"}}
    (ds / "dataset.json").write_text(json.dumps(record))
    return ds


@pytest.fixture
def tiny_dsrl(tmp_path: Path) -> Path:
    """A tiny DSRL-format file (10 episodes, 453 steps, obs 4, act 2) in its own tmp folder."""
    return write_tiny_dsrl(tmp_path / "src" / "tiny.hdf5")


@pytest.fixture
def tiny_task(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Register :data:`TINY_TASK_NAME` as a shipped dataset in a tmp ``FEEDBACKGEN_DATASETS_DIR``.

    Also points ``DSRL_DATASET_DIR`` at an empty tmp folder. Returns the :class:`Task`.
    """
    from feedbackgen.tasks import get_task

    folder = tmp_path / "registry"
    register_tiny_task(folder)
    monkeypatch.setenv("FEEDBACKGEN_DATASETS_DIR", str(folder))
    monkeypatch.setenv("DSRL_DATASET_DIR", str(tmp_path / "dsrl-cache"))
    return get_task(TINY_TASK_NAME)


@pytest.fixture
def tiny_store(tiny_task, tmp_path: Path) -> Path:
    """A small feedback store made from the tiny task (200 pairs, 150 safety segments, ε = 0.1)."""
    from feedbackgen.make import MakeConfig, make_store

    cfg = MakeConfig(task=TINY_TASK_NAME, noise=0.1, seed=3, n_pairs=200, n_safety=150,
                     out=tmp_path / "stores" / "tiny.zarr")
    return make_store(cfg)


class DsrlFactory:
    """What ``dsrl_factory`` hands to tests (so test modules need not import this conftest)."""

    episode_lengths = TINY_EPISODE_LENGTHS
    task_name = TINY_TASK_NAME
    thresholds = TINY_THRESHOLDS
    max_episode_steps = TINY_MAX_EPISODE_STEPS
    write = staticmethod(write_tiny_dsrl)
    register = staticmethod(register_tiny_task)


@pytest.fixture
def dsrl_factory() -> type[DsrlFactory]:
    """Helpers to write tiny DSRL files (``.write(path, **kw)``) and register tasks (``.register``)."""
    return DsrlFactory
