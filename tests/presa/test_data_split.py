"""TrainingData on a store with a validation split: training rows only, validation rows in ``val``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from feedbackgen.make import MakeConfig, make_store
from feedbackgen.publish import strip_store
from feedbackgen.segments import gather_windows
from feedbackgen.store import open_store, split_columns
from presa.data import TrainingData, describe, store_fingerprint

TASK = "TinyRun-mini"


def test_training_rows_only_and_the_validation_set(tiny_store: Path) -> None:
    store = open_store(tiny_store)
    pv, sv = split_columns(store)
    assert (int(pv.sum()), int(sv.sum())) == (20, 15)
    k = store.threshold_index(10.0)
    a, b, y = np.asarray(store.pref_a), np.asarray(store.pref_b), np.asarray(store.pref_label)
    seg, lab = np.asarray(store.safety_segment), np.asarray(store.safety_label)[:, k].astype(np.float32)
    o_pref, o_saf = np.asarray(store.oracle.pref_label), np.asarray(store.oracle.safety_label)[:, k]

    data = TrainingData.from_store(tiny_store, threshold=10.0, gamma=0.99)
    assert (data.n_pairs, data.n_safety) == (180, 135)
    np.testing.assert_array_equal(data.pref_a.numpy(), a[~pv])
    np.testing.assert_array_equal(data.pref_b.numpy(), b[~pv])
    np.testing.assert_array_equal(data.pref_label.numpy(), y[~pv])
    np.testing.assert_array_equal(data.safety_segment.numpy(), seg[~sv])
    np.testing.assert_array_equal(data.safety_label.numpy(), lab[~sv])
    np.testing.assert_array_equal(data.train_pref_oracle.numpy(), o_pref[~pv])
    np.testing.assert_array_equal(data.train_safety_oracle.numpy(), o_saf[~sv])

    val = data.val
    assert val is not None and (val.n_pairs, val.n_safety) == (20, 15)
    np.testing.assert_array_equal(val.pref_a.numpy(), a[pv])
    np.testing.assert_array_equal(val.pref_b.numpy(), b[pv])
    np.testing.assert_array_equal(val.pref_label.numpy(), y[pv])
    np.testing.assert_array_equal(val.pref_oracle.numpy(), o_pref[pv])
    np.testing.assert_array_equal(val.safety_segment.numpy(), seg[sv])
    np.testing.assert_array_equal(val.safety_label.numpy(), lab[sv])
    np.testing.assert_array_equal(val.safety_oracle.numpy(), o_saf[sv])
    assert val.pref_a.dtype == data.pref_a.dtype and val.safety_label.dtype == data.safety_label.dtype
    # no training segment lies in a validation episode
    val_eps = store.metadata["split"]["val_episodes"]
    seg_ep = np.asarray(store.segment_episode)
    train_ids = np.concatenate([data.pref_a.numpy(), data.pref_b.numpy(), data.safety_segment.numpy()])
    assert not np.isin(seg_ep[train_ids], val_eps).any()
    counts = describe(data)
    assert (counts["pairs"], counts["safety_segments"]) == (180, 135)
    assert (counts["val_pairs"], counts["val_safety_segments"]) == (20, 15)


def test_oracle_rows_match_after_skipped_pairs(tiny_task, tmp_path: Path) -> None:
    path = make_store(MakeConfig(task=TASK, seed=2, n_pairs=300, n_safety=100, teacher="skip:margin=15",
                                 out=tmp_path / "skip.zarr"))
    store = open_store(path)
    assert store.metadata["preferences"]["n_skipped"] > 0
    rewards, start = np.asarray(store.oracle.rewards), np.asarray(store.segment_start)
    ret = gather_windows(rewards, start, 20).sum(axis=1)  # float64 sums, as the teacher's
    data = TrainingData.from_store(path, threshold=20.0, gamma=0.99)
    for a, b, oracle in ((data.pref_a, data.pref_b, data.train_pref_oracle),
                         (data.val.pref_a, data.val.pref_b, data.val.pref_oracle)):
        a, b = a.numpy(), b.numpy()
        np.testing.assert_array_equal(oracle.numpy(), 0.5 * (1 + np.sign(ret[b] - ret[a])))
    assert data.val.n_pairs == int(split_columns(store)[0].sum()) > 0


def test_stripped_store_has_no_oracle_tensors(tiny_store: Path, tmp_path: Path) -> None:
    blind = strip_store(tiny_store, tmp_path / "blind.zarr")
    data = TrainingData.from_store(blind, threshold=10.0, gamma=0.99)
    assert data.train_pref_oracle is None and data.train_safety_oracle is None
    assert data.val is not None and data.val.pref_oracle is None and data.val.safety_oracle is None
    assert data.val.n_pairs == 20


def test_store_without_split_has_no_validation_set(tiny_task, tmp_path: Path) -> None:
    path = make_store(MakeConfig(task=TASK, seed=3, n_pairs=200, n_safety=150, val_fraction=0,
                                 out=tmp_path / "nosplit.zarr"))
    data = TrainingData.from_store(path, threshold=10.0, gamma=0.99)
    assert data.val is None and (data.n_pairs, data.n_safety) == (200, 150)
    assert data.train_pref_oracle is not None and data.train_pref_oracle.shape == (200,)
    counts = describe(data)
    assert counts["val_pairs"] == 0 and counts["val_safety_segments"] == 0
    # the fingerprint of a store without a split is what it was before the split existed
    store = open_store(path)
    with_empty = open_store(path)
    with_empty.pref_split = np.zeros(200, np.int8)
    with_empty.safety_split = np.zeros(150, np.int8)
    assert store_fingerprint(store) != store_fingerprint(with_empty)
