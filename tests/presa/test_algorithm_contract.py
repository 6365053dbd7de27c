"""The contract every registered algorithm keeps (``presa.algos.base``), checked for each of them:
short real runs through the trainer on the tiny store (finite metrics, a checkpoint ``load_actor``
exports, a config with exactly its keys, each of which it reads), and exact resume, also of a run
whose config.yaml was saved by an earlier version (every key, whatever the algorithm)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from tiny_run import (
    assert_same_state,
    one_thread,  # noqa: F401 (autouse fixture)
)

import presa.config
from feedbackgen.store import open_store
from presa.algos import available_algorithms, get_algorithm
from presa.checkpoint import load_actor, load_checkpoint
from presa.config import PRESET_VALUES, SUITE_DEFAULTS, TrainConfig, applicable, resolve_config, valid_keys
from presa.trainer import resume, train

ALGORITHMS = available_algorithms()
SMALL = {"hidden": [32, 32], "pair_batch": 16, "safety_batch": 16, "bc_batch": 64, "log_every": 10,
         "checkpoint_every": 0, "warmup_steps": 10, "total_steps": 40, "bc_steps": 15}


def _cfg(algo: str, **kw):
    # SMALL is a recipe for every algorithm, as presets are: each takes the keys it reads
    values = {**applicable(SMALL, algo), "algo": algo, "threshold": 10.0, "seed": 0, **kw}
    return resolve_config(suite="bullet", preset="quick", overrides=values)


def test_every_algorithm_is_covered():
    assert len(ALGORITHMS) >= 9 and {"presa", "bc_all", "bc_safe", "two_stage"} <= set(ALGORITHMS)


def _recording(cfg):
    """``cfg`` as an instance of a subclass of its class that records which of its keys code outside
    presa/config.py (validation, to_dict) reads."""
    base, keys, reads = type(cfg), set(type(cfg).valid_keys()), set()
    skip = {presa.config.__file__, "<string>"}  # the config module and dataclass-generated methods

    def __getattribute__(self, name):
        if name in keys and sys._getframe(1).f_code.co_filename not in skip:
            reads.add(name)
        return object.__getattribute__(self, name)

    recording = type(base.__name__, (base,), {"__getattribute__": __getattribute__})
    return recording(**{k: getattr(cfg, k) for k in keys}), reads


@pytest.mark.parametrize("algo", ALGORITHMS)
def test_short_training_run_through_the_trainer(tiny_store: Path, tmp_path: Path, algo: str):
    cfg, reads = _recording(_cfg(algo))
    result = train(cfg, tiny_store, tmp_path / algo)
    assert result.step == 40 and result.checkpoint.name == "final.pt"
    assert result.metrics and all(math.isfinite(v) for v in result.metrics.values())
    ckpt = load_checkpoint(result.checkpoint)
    assert ckpt["algo"] == algo
    actor = load_actor(result.run_dir)
    obs = np.asarray(open_store(tiny_store).observations[:5])
    act = actor(obs)
    assert act.shape == (5, 2) and np.all(np.abs(act) <= 1.0)
    # the run's config holds exactly the algorithm's keys ...
    saved = yaml.safe_load((result.run_dir / "config.yaml").read_text())
    assert list(saved) == list(valid_keys(algo)) == list(ckpt["config"])
    # ... and the run read every one of them (an undeclared key cannot be read: AttributeError)
    assert sorted(set(valid_keys(algo)) - reads) == []


class _Interrupt(Exception):
    pass


def _stop_at(step: int):
    def callback(event) -> None:
        if event.step == step:
            raise _Interrupt
    return callback


def _final_state(run_dir: Path) -> dict:
    ckpt = load_checkpoint(run_dir / "checkpoints" / "final.pt")
    return {k: ckpt[k] for k in ("policy", "optimizer", "algo_state", "rng", "step", "nu", "zref")}


def _as_saved_by_an_earlier_version(run_dir: Path) -> None:
    """Rewrite the run's config.yaml as versions before per-algorithm configs saved it: every key of
    TrainConfig, the ones the algorithm does not read at the values the same command gave them."""
    path = run_dir / "config.yaml"
    values = yaml.safe_load(path.read_text())
    flat = TrainConfig.from_dict({**SUITE_DEFAULTS["bullet"], **PRESET_VALUES["quick"], **SMALL,
                                  **values}).to_dict()
    assert set(flat) > set(values) or values["algo"] == "presa"
    path.write_text(yaml.safe_dump(flat, sort_keys=False))


@pytest.mark.parametrize("saved_by", ["this version", "an earlier version"])
@pytest.mark.parametrize("algo", ALGORITHMS)
def test_resume_is_bit_identical(tiny_store: Path, tmp_path: Path, algo: str, saved_by: str):
    """A run interrupted (checkpoints every 5 steps) during its first phase and again after it, and
    resumed, ends with exactly the uninterrupted run's state; two_stage is interrupted in its model
    phase and after the relabelling. A config.yaml in the form of earlier versions resumes too."""
    cfg = _cfg(algo, checkpoint_every=5)
    full = train(cfg, tiny_store, tmp_path / "full")
    with pytest.raises(_Interrupt):
        train(cfg, tiny_store, tmp_path / "part", callback=_stop_at(12))
    if saved_by == "an earlier version":
        _as_saved_by_an_earlier_version(tmp_path / "part")
    with pytest.raises(_Interrupt):
        resume(tmp_path / "part", callback=_stop_at(27))
    part = resume(tmp_path / "part")
    assert part.step == 40 and part.resumed_from == 25
    assert type(part.config) is get_algorithm(algo).config_class and part.config == full.config
    assert_same_state(_final_state(full.run_dir), _final_state(part.run_dir))
    if algo == "two_stage":
        ckpt = load_checkpoint(full.checkpoint)
        assert ckpt["algo_state"]["relabelled"] is True and ckpt["nu"] is not None
        early = load_checkpoint(tmp_path / "part" / "checkpoints" / "step_0000010.pt")
        assert early["algo_state"]["relabelled"] is False
