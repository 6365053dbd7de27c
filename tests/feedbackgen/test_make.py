"""make_store: determinism, layout, noise resolution, budgets, metadata, atomicity, errors."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from feedbackgen.errors import FeedbackgenError
from feedbackgen.make import MakeConfig, make_store, observation_stats, parse_safety_noise
from feedbackgen.sources import read_dsrl
from feedbackgen.store import open_store, schema_arrays


def _cfg(tmp_path: Path, name: str = "s.zarr", **kw) -> MakeConfig:
    base = dict(task="TinyRun-mini", noise=0.1, seed=7, n_pairs=120, n_safety=90, out=tmp_path / "out" / name)
    base.update(kw)
    return MakeConfig(**base)


def _arrays(path: Path) -> dict[str, np.ndarray]:
    data = open_store(path)
    return {name: np.asarray(getattr(data.oracle if o else data, attr))
            for name, (_, attr, o) in schema_arrays(include_oracle=True).items()}


def test_same_seed_identical_other_seed_differs(tiny_task, tmp_path: Path) -> None:
    a = _arrays(make_store(_cfg(tmp_path, "a.zarr")))
    b = _arrays(make_store(_cfg(tmp_path, "b.zarr")))
    c = _arrays(make_store(_cfg(tmp_path, "c.zarr", seed=8)))
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    assert not np.array_equal(a["segments/start"], c["segments/start"])
    ids = {n: open_store(tmp_path / "out" / f"{n}.zarr").store_id for n in "abc"}
    assert ids["a"] == ids["b"] != ids["c"]


def test_store_content_matches_source(tiny_task, tmp_path: Path) -> None:
    data = open_store(make_store(_cfg(tmp_path)))
    src = read_dsrl(tiny_task.source_path, lazy=False)
    np.testing.assert_array_equal(data.observations, src.observations)
    np.testing.assert_array_equal(data.actions, src.actions)
    np.testing.assert_array_equal(data.terminations, src.terminations)
    np.testing.assert_array_equal(data.oracle.rewards, src.rewards)
    np.testing.assert_array_equal(data.episode_length, src.episode_length)
    # segments lie inside their episode, have H = 20 steps, and never use the 12-step episode
    s, e = data.segment_start, data.segment_episode
    assert (data.segment_length == 20).all()
    assert (s >= data.episode_start[e]).all()
    assert (s + 20 <= data.episode_start[e] + data.episode_length[e]).all()
    assert not np.isin(e, np.flatnonzero(data.episode_length < 20)).any()
    # pairs: (i, n_pairs + i); segment returns are the reward sums over the window
    np.testing.assert_array_equal(data.pref_b - data.pref_a, np.full(120, 120))
    ret = np.array([src.rewards[i:i + 20].sum(dtype=np.float64) for i in s])
    np.testing.assert_allclose(data.oracle.segment_return, ret, rtol=1e-6)
    # oracle preference label: 1 if R(b) > R(a), 0 if less, 0.5 on a tie (e.g. a segment drawn twice)
    expected = 0.5 * (1 + np.sign(ret[data.pref_b] - ret[data.pref_a]))
    np.testing.assert_array_equal(data.oracle.pref_label, expected)
    # safety rows: the first 81 training pair segments, then the first 9 validation ones (the last
    # 12 pairs, segments 108..119 and 228..239, are the 10 % validation split); scaled rule κ·H/T_max
    np.testing.assert_array_equal(data.safety_segment, np.r_[np.arange(81), np.arange(108, 117)])
    kseg = np.asarray(tiny_task.thresholds) * 20 / tiny_task.max_episode_steps
    oracle_safe = (data.oracle.segment_cost[data.safety_segment, None] <= kseg[None, :]).astype(np.int8)
    np.testing.assert_array_equal(data.oracle.safety_label, oracle_safe)
    mean, std = observation_stats(src.observations)
    obs64 = src.observations.astype(np.float64)
    np.testing.assert_allclose(data.metadata["obs_mean"], obs64.mean(0), atol=1e-12)
    np.testing.assert_allclose(data.metadata["obs_std"], obs64.std(0), atol=1e-12)
    np.testing.assert_allclose(mean, data.metadata["obs_mean"])


def test_observation_stats_chunked_equals_numpy() -> None:
    x = np.random.default_rng(0).normal(3.0, 2.0, size=(200_003, 3)).astype(np.float32)
    mean, std = observation_stats(x)
    np.testing.assert_allclose(mean, x.astype(np.float64).mean(0), rtol=1e-10)
    np.testing.assert_allclose(std, x.astype(np.float64).std(0), rtol=1e-10)


def test_metadata_and_store_id(tiny_task, tmp_path: Path) -> None:
    data = open_store(make_store(_cfg(tmp_path, teacher="bt:beta=2")))
    m = data.metadata
    for key in ("task", "source", "segments", "preferences", "safety", "seed", "toolkit_version",
                "git_commit", "created", "libraries", "obs_mean", "obs_std", "config"):
        assert key in m, key
    assert m["task"]["name"] == "TinyRun-mini" and m["task"]["thresholds"] == [5.0, 10.0, 20.0]
    assert m["source"]["format"] == "dsrl-hdf5" and len(m["source"]["sha256"]) == 64
    assert m["source"]["transitions"] == data.n_transitions and m["source"]["episodes"] == 10
    assert m["preferences"]["teacher"] == {"beta": 2.0, "gamma": 1.0, "skip_margin": None,
                                           "equal_margin": None, "mistake": 0.1}
    assert m["safety"]["rule"] == "scaled" and m["safety"]["shared_with_pairs"] is True
    assert set(m["libraries"]) >= {"numpy", "zarr", "h5py"}
    assert data.store_id.startswith("feedbackgen/TinyRun-mini-") and data.store_id.endswith("-v1")
    assert np.isfinite(data.pref_prob).all() and ((data.pref_prob >= 0) & (data.pref_prob <= 1)).all()


def test_noise_resolution(tiny_task, tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, noise=0.2, pref_noise=0.05)
    assert cfg.pref_eps == 0.05 and cfg.safety_eps == 0.2
    assert cfg.teacher_spec().mistake == 0.05 and cfg.safety_spec().eps == 0.2
    assert _cfg(tmp_path, noise=0.3, teacher="mistake:eps=0.01").teacher_spec().mistake == 0.01
    assert parse_safety_noise("logistic:tau=2", 0.1) == {"noise": "logistic", "eps": 0.1, "tau": 2.0}


def test_zero_noise_agrees_exactly_and_noise_is_calibrated(tiny_task, tmp_path: Path) -> None:
    q0 = open_store(make_store(_cfg(tmp_path, "z.zarr", noise=0.0, n_pairs=2000, n_safety=2000))).quality
    assert q0["preference_agreement"] == 1.0 and q0["safety_agreement"] == 1.0
    eps, n = 0.2, 4000
    q = open_store(make_store(_cfg(tmp_path, "n.zarr", noise=eps, n_pairs=n, n_safety=n))).quality
    sd = np.sqrt(eps * (1 - eps) / n)
    assert abs((1 - q["preference_agreement"]) - eps) < 4 * sd
    for agree in q["safety_agreement_per_threshold"]:
        assert abs((1 - agree) - eps) < 4 * sd


def test_separate_safety_segments_and_skip(tiny_task, tmp_path: Path) -> None:
    data = open_store(make_store(_cfg(tmp_path, safety_from_pairs=False, n_safety=300,
                                      teacher="skip:margin=15")))
    assert data.n_segments == 2 * 120 + 300
    np.testing.assert_array_equal(data.safety_segment, np.arange(240, 540))
    assert data.metadata["safety"]["shared_with_pairs"] is False
    ret = data.oracle.segment_return
    kept = data.pref_a
    assert data.metadata["preferences"]["n_skipped"] == 120 - kept.size > 0
    assert not ((ret[data.pref_a] < 15) & (ret[data.pref_b] < 15)).any()
    assert data.quality["skip_rate"] == pytest.approx(1 - kept.size / 120)


def test_segment_fraction(tiny_task, tmp_path: Path) -> None:
    data = open_store(make_store(_cfg(tmp_path, segment_fraction=0.5)))
    assert (data.segment_length == 30).all() and data.metadata["segments"]["resolved_length"] == 30


@pytest.mark.parametrize("kw, match", [
    (dict(noise=1.5), "--noise must be a probability"),
    (dict(n_pairs=0), "--n-pairs"),
    (dict(seed=-1), "--seed"),
    (dict(n_safety=1000), "exceeds the 240 pair segments"),
    (dict(teacher="wise"), "unknown teacher component"),
    (dict(safety_rule="maybe"), "unknown safety rule"),
    (dict(safety_noise_model="gauss"), "unknown safety noise model"),
    (dict(segment_length=0), "segment length"),
    (dict(task=""), "no task given"),
])
def test_config_validation(tmp_path: Path, kw: dict, match: str) -> None:
    with pytest.raises(FeedbackgenError, match=match):
        _cfg(tmp_path, **kw)


def test_config_is_frozen_and_round_trips(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    with pytest.raises(AttributeError):
        cfg.noise = 0.5  # type: ignore[misc]
    assert MakeConfig.from_dict(cfg.to_dict()) == cfg
    assert replace(cfg, out=None).out_path == Path("datasets/stores/TinyRun-mini-noise0.1-seed7.zarr")


def test_errors_leave_nothing(tiny_task, tmp_path: Path, dsrl_factory) -> None:
    out_dir = tmp_path / "out"
    with pytest.raises(FeedbackgenError, match="no episode has at least 70 steps"):
        make_store(_cfg(tmp_path, segment_length=70))
    assert not out_dir.exists() or list(out_dir.iterdir()) == []
    with pytest.raises(FeedbackgenError, match="unknown task"):
        make_store(_cfg(tmp_path, task="NoSuchTask"))
    bad = dsrl_factory.write(tmp_path / "bad.hdf5", drop=["costs"])
    with pytest.raises(FeedbackgenError, match="no dataset 'costs'"):
        make_store(_cfg(tmp_path, source=bad))
    assert not out_dir.exists() or list(out_dir.iterdir()) == []


def test_existing_store_needs_overwrite(tiny_task, tmp_path: Path) -> None:
    path = make_store(_cfg(tmp_path))
    before = open_store(path).store_id
    with pytest.raises(FeedbackgenError, match="already exists; pass --overwrite"):
        make_store(_cfg(tmp_path, seed=9))
    assert open_store(path).store_id == before
    make_store(_cfg(tmp_path, seed=9, overwrite=True))
    assert open_store(path).store_id != before
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def test_progress_callback_reports_steps(tiny_task, tmp_path: Path) -> None:
    seen: dict[str, tuple[int, int]] = {}
    make_store(_cfg(tmp_path), progress=lambda step, done, total: seen.__setitem__(step, (done, total)))
    for step in ("hashing source", "labelling", "observation statistics", "writing observations"):
        assert step in seen and seen[step][0] == seen[step][1], step
