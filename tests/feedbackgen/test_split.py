"""The validation split of ``feedbackgen make``: by episode, seeded, recorded, kept, verified."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr

from feedbackgen.errors import FeedbackgenError
from feedbackgen.labels import import_labels
from feedbackgen.make import MakeConfig, make_store, split_counts
from feedbackgen.publish import publish_store, strip_store
from feedbackgen.segments import sample_segments
from feedbackgen.store import migrate_store, open_store, split_columns
from feedbackgen.verify import validate_store, verify_store

TASK = "TinyRun-mini"


def _make(tmp_path: Path, name: str = "s.zarr", **kw) -> Path:
    base = dict(task=TASK, noise=0.1, seed=7, n_pairs=200, n_safety=150, out=tmp_path / "out" / name)
    return make_store(MakeConfig(**{**base, **kw}))


def _covered(data, segments: np.ndarray) -> set[int]:
    start, length = np.asarray(data.segment_start), np.asarray(data.segment_length)
    return {t for s in np.unique(segments) for t in range(int(start[s]), int(start[s] + length[s]))}


@pytest.mark.parametrize("shared", [True, False])
def test_split_by_episode_respects_fraction_and_never_shares_a_transition(tiny_task, tmp_path: Path,
                                                                          shared: bool) -> None:
    data = open_store(_make(tmp_path, val_fraction=0.2, safety_from_pairs=shared))
    split = data.metadata["split"]
    eligible = np.flatnonzero(np.asarray(data.episode_length) >= 20)  # 9 of the 10 tiny episodes
    val_eps = np.asarray(split["val_episodes"])
    assert split["val_fraction"] == 0.2 and split["seed"] == 7 and split["n_episodes_eligible"] == 9
    assert val_eps.size == 2 and set(val_eps) <= set(eligible)  # round(0.2 * 9)
    pv, sv = split_columns(data)
    assert data.pref_split.dtype == np.int8 and data.safety_split.dtype == np.int8
    # the last round(f * n) rows of each channel (no pair is skipped by this teacher)
    np.testing.assert_array_equal(pv, np.arange(200) >= 160)
    np.testing.assert_array_equal(sv, np.arange(150) >= 120)
    assert (split["n_val_pairs"], split["n_val_safety"]) == (40, 30)
    seg_ep = np.asarray(data.segment_episode)
    a, b, seg = np.asarray(data.pref_a), np.asarray(data.pref_b), np.asarray(data.safety_segment)
    val_segs = np.concatenate([a[pv], b[pv], seg[sv]])
    train_segs = np.concatenate([a[~pv], b[~pv], seg[~sv]])
    assert np.isin(seg_ep[val_segs], val_eps).all()
    assert not np.isin(seg_ep[train_segs], val_eps).any()
    assert not _covered(data, val_segs) & _covered(data, train_segs)
    np.testing.assert_array_equal(b - a, np.full(200, 200))  # pair i is still (i, n_pairs + i)
    assert validate_store(data.path).ok


def test_split_rows_follow_the_kept_pairs(tiny_task, tmp_path: Path) -> None:
    data = open_store(_make(tmp_path, teacher="skip:margin=15", n_pairs=300, n_safety=100))
    pv, _ = split_columns(data)
    assert data.metadata["preferences"]["n_skipped"] > 0
    V = data.metadata["split"]["n_val_pairs_requested"]
    assert V == 30
    np.testing.assert_array_equal(pv, np.asarray(data.pref_a) >= 300 - V)
    assert data.metadata["split"]["n_val_pairs"] == int(pv.sum()) > 0
    assert validate_store(data.path).ok


def test_same_seed_same_split_and_the_fraction_is_content(tiny_task, tmp_path: Path) -> None:
    a, b = open_store(_make(tmp_path, "a.zarr")), open_store(_make(tmp_path, "b.zarr"))
    for name in ("pref_split", "safety_split", "segment_start", "pref_label", "safety_label"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert a.metadata["split"] == b.metadata["split"] and a.store_id == b.store_id
    c = open_store(_make(tmp_path, "c.zarr", val_fraction=0.3))
    assert c.store_id != a.store_id and c.metadata["params"]["val_fraction"] == 0.3
    assert a.metadata["params"]["val_fraction"] == 0.1  # the default


def test_zero_fraction_makes_no_split(tiny_task, tmp_path: Path) -> None:
    data = open_store(_make(tmp_path, val_fraction=0))
    assert data.pref_split is None and data.safety_split is None and not data.has_split
    assert "split" not in data.metadata and "val_fraction" not in data.metadata["params"]
    root = zarr.open_group(str(data.path), mode="r")
    assert "split" not in root["preferences"] and "split" not in root["safety"]
    pv, sv = split_columns(data)
    assert not pv.any() and not sv.any() and pv.size == 200 and sv.size == 150
    np.testing.assert_array_equal(data.safety_segment, np.arange(150))  # as before the split existed
    assert validate_store(data.path).ok and verify_store(data.path).ok


def test_strip_publish_migrate_and_import_keep_the_split(tiny_task, tmp_path: Path) -> None:
    src = _make(tmp_path)
    before = open_store(src)
    stripped = strip_store(src, tmp_path / "blind.zarr")
    pub = publish_store(stripped, tmp_path / "pub")
    for path in (stripped, pub.archive):
        data = open_store(path)
        np.testing.assert_array_equal(data.pref_split, before.pref_split)
        np.testing.assert_array_equal(data.safety_split, before.safety_split)
        assert data.metadata["split"] == before.metadata["split"]
    assert verify_store(stripped).ok and validate_store(pub.archive).ok
    assert "20 pairs and 15 safety segments from 1 held-out episodes" in pub.card.read_text()

    old = _as_schema_1(src, tmp_path / "v1.zarr")
    moved = migrate_store(old, tmp_path / "v2.zarr")
    data = open_store(moved.path)
    assert moved.changed and data.schema_version == 2
    np.testing.assert_array_equal(data.pref_split, before.pref_split)
    np.testing.assert_array_equal(data.safety_split, before.safety_split)
    assert validate_store(moved.path).ok

    rows = [{"source": "alice", "a": 0, "b": 5, "label": 1}, {"source": "alice", "segment": 3, "safe": 1}]
    labels = tmp_path / "alice.jsonl"
    labels.write_text("".join(json.dumps(r) + "\n" for r in rows))
    new = open_store(import_labels(src, labels).path)
    pv, sv = split_columns(new)
    assert pv.size == 201 and not pv[-1] and pv.sum() == 20  # imported rows are training rows
    assert sv.size == 151 and not sv[-1] and sv.sum() == 15
    assert validate_store(new.path).ok


def _as_schema_1(src: Path, dest: Path) -> Path:
    """The store in the schema-1 layout (full next observations, version 1), optional arrays kept."""
    nobs = np.asarray(open_store(src).next_observations, dtype=np.float32)
    shutil.copytree(src, dest)
    root = zarr.open_group(str(dest), mode="r+")
    root.create_array("transitions/next_observations", shape=nobs.shape, dtype="float32",
                      chunks=(64, nobs.shape[1]))[...] = nobs
    shutil.rmtree(dest / "transitions" / "final_next_observations")
    meta = json.loads((dest / "zarr.json").read_text())
    meta["attributes"].pop("next_observations")
    meta["attributes"]["schema_version"] = meta["attributes"]["metadata"]["schema_version"] = 1
    (dest / "zarr.json").write_text(json.dumps(meta))
    return dest


def test_store_made_before_the_split_reads_and_verifies(tiny_task, tmp_path: Path) -> None:
    """A store whose recorded config has no val_fraction was made without a split: it verifies as one."""
    path = _make(tmp_path, val_fraction=0)
    meta = json.loads((path / "zarr.json").read_text())
    del meta["attributes"]["metadata"]["config"]["val_fraction"]
    (path / "zarr.json").write_text(json.dumps(meta))
    data = open_store(path)
    assert not data.has_split and validate_store(path).ok
    assert verify_store(path).ok


def test_verify_and_validate_catch_an_altered_split(tiny_task, tmp_path: Path) -> None:
    path = _make(tmp_path)
    assert verify_store(path).ok and validate_store(path).ok
    root = zarr.open_group(str(path), mode="r+")
    split = root["preferences/split"]
    split[0] = 1  # a training pair relabelled as validation
    rep = verify_store(path)
    assert "preferences/split differs from the recomputed array" in rep.mismatches
    problems = "\n".join(validate_store(path).problems)
    assert "a validation row uses a segment outside the validation episodes" in problems
    assert "n_val_pairs / n_val_safety do not match" in problems
    split[0] = 0
    shutil.rmtree(path / "safety" / "split")
    assert "safety/split is missing, the recomputed store has one" in verify_store(path).mismatches
    assert "preferences/split and safety/split must be present together" in validate_store(path).problems


@pytest.mark.parametrize("value", [1.5, 1.0, -0.1, "x", True])
def test_bad_fraction_is_one_clear_error(tmp_path: Path, value) -> None:
    with pytest.raises(FeedbackgenError, match=r"--val-fraction must be in \[0, 1\)"):
        MakeConfig(task=TASK, val_fraction=value)


def test_a_split_needs_two_long_episodes(tiny_task, tmp_path: Path, dsrl_factory) -> None:
    src = dsrl_factory.write(tmp_path / "one.hdf5", episode_lengths=(40, 15, 12))
    with pytest.raises(FeedbackgenError, match="only 1 episode has at least 20 steps; pass --val-fraction 0"):
        _make(tmp_path, source=src, n_pairs=10, n_safety=10)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    assert open_store(_make(tmp_path, source=src, n_pairs=10, n_safety=10, val_fraction=0)).n_segments == 20


def test_split_counts_and_restricted_sampling() -> None:
    assert split_counts(200, 150, 0.1, safety_from_pairs=True) == (20, 15)
    assert split_counts(1, 1, 0.6, safety_from_pairs=True) == (0, 0)  # one row stays for training
    assert split_counts(10, 20, 0.5, safety_from_pairs=True) == (5, 10)
    assert split_counts(10, 20, 0.04, safety_from_pairs=True) == (0, 0)  # within the 2V val pair segments
    assert split_counts(10, 20, 0.0, safety_from_pairs=False) == (0, 0)
    start, length = np.array([0, 30, 60]), np.array([30, 30, 30])
    ep, s, _ = sample_segments(start, length, 50, 10, np.random.default_rng(0), episodes=np.array([2]))
    assert (ep == 2).all() and (s >= 60).all()
    with pytest.raises(FeedbackgenError, match="none of the 1 episodes"):
        sample_segments(start, np.array([30, 30, 5]), 1, 10, np.random.default_rng(0), episodes=np.array([2]))
