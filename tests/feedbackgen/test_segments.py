"""Segment sampling and window gathering (feedbackgen.segments)."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import zarr

from feedbackgen.errors import FeedbackgenError
from feedbackgen.segments import SegmentSpec, gather_windows, sample_segments

LENGTHS = np.array([3, 10, 7, 20, 5], dtype=np.int64)
STARTS = np.concatenate([[0], np.cumsum(LENGTHS)[:-1]]).astype(np.int64)


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


# --------------------------------------------------------------------------- SegmentSpec


def test_spec_default_is_twenty_steps() -> None:
    assert SegmentSpec().resolve(1000) == 20


@pytest.mark.parametrize(
    ("spec", "t_max", "expected"),
    [
        (SegmentSpec(fraction=0.05), 1000, 50),
        (SegmentSpec(length=None, fraction=0.1), 250, 25),
        (SegmentSpec(fraction=1.0), 300, 300),
        (SegmentSpec(fraction=0.0013), 1000, 1),  # 1.3 rounds to 1
        (SegmentSpec(fraction=0.0017), 1000, 2),  # 1.7 rounds to 2
        (SegmentSpec(length=7), 1000, 7),
    ],
)
def test_spec_resolve(spec: SegmentSpec, t_max: int, expected: int) -> None:
    assert spec.resolve(t_max) == expected


def test_spec_fraction_clears_default_length() -> None:
    spec = SegmentSpec(fraction=0.2)
    assert spec.length is None and spec.fraction == 0.2


def test_spec_fraction_rounding_to_zero_is_an_error() -> None:
    with pytest.raises(FeedbackgenError, match="rounds to 0 steps"):
        SegmentSpec(fraction=1e-4).resolve(1000)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"length": 0},
        {"length": -3},
        {"length": 2.5},
        {"length": None},
        {"length": 10, "fraction": 0.1},
        {"length": None, "fraction": 0.0},
        {"length": None, "fraction": 1.5},
        {"length": None, "fraction": float("nan")},
        {"method": "stratified"},
    ],
)
def test_spec_validation(kwargs: dict) -> None:
    with pytest.raises(FeedbackgenError):
        SegmentSpec(**kwargs)


def test_spec_resolve_rejects_bad_t_max() -> None:
    with pytest.raises(FeedbackgenError, match="max episode steps"):
        SegmentSpec().resolve(0)


@pytest.mark.parametrize("spec", [SegmentSpec(), SegmentSpec(length=33), SegmentSpec(fraction=0.25)])
def test_spec_dict_round_trip(spec: SegmentSpec) -> None:
    d = spec.to_dict()
    assert set(d) == {"method", "length", "fraction"}
    assert SegmentSpec.from_dict(d) == spec


def test_spec_from_dict_rejects_unknown_keys() -> None:
    with pytest.raises(FeedbackgenError, match="unknown keys"):
        SegmentSpec.from_dict({"length": 5, "stride": 2})


# --------------------------------------------------------------------------- sample_segments


@pytest.mark.parametrize("length", [1, 3, 5, 7, 10, 20])
def test_segments_stay_inside_their_episode(length: int) -> None:
    ep, start, seg_len = sample_segments(STARTS, LENGTHS, 2000, length, _rng(length))
    assert ep.dtype == np.int32 and start.dtype == np.int64 and seg_len.dtype == np.int32
    assert ep.shape == start.shape == seg_len.shape == (2000,)
    assert (seg_len == length).all()
    assert (start >= STARTS[ep]).all()
    assert (start + length <= STARTS[ep] + LENGTHS[ep]).all()
    # the episode each step belongs to, from the flat index: every step of a segment is in `ep`
    step_episode = np.repeat(np.arange(LENGTHS.size), LENGTHS)
    steps = start[:, None] + np.arange(length)[None, :]
    assert (step_episode[steps] == ep[:, None]).all()


def test_only_long_enough_episodes_are_chosen() -> None:
    ep, _, _ = sample_segments(STARTS, LENGTHS, 3000, 7, _rng(1))
    assert set(np.unique(ep).tolist()) == {1, 2, 3}


def test_episodes_uniform_regardless_of_length_and_starts_uniform_inside() -> None:
    # episodes of 3 and 30 steps: each is chosen with probability 1/2 (not by length)
    n = 40_000
    ep, start, _ = sample_segments(np.array([0, 3]), np.array([3, 30]), n, 3, _rng(2))
    share = np.mean(ep == 1)
    assert abs(share - 0.5) < 5 * np.sqrt(0.25 / n)
    # inside the 30-step episode, the 28 possible starts are equally likely
    offsets = start[ep == 1] - 3
    counts = np.bincount(offsets, minlength=28)
    assert counts.size == 28
    m = offsets.size
    p = 1 / 28
    assert np.all(np.abs(counts - m * p) < 5 * np.sqrt(m * p * (1 - p)))


def test_sampling_is_deterministic_for_a_seed() -> None:
    a = sample_segments(STARTS, LENGTHS, 500, 4, _rng(7))
    b = sample_segments(STARTS, LENGTHS, 500, 4, _rng(7))
    c = sample_segments(STARTS, LENGTHS, 500, 4, _rng(8))
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[1], c[1])


def test_zero_segments() -> None:
    ep, start, seg_len = sample_segments(STARTS, LENGTHS, 0, 4, _rng())
    assert ep.shape == start.shape == seg_len.shape == (0,)


def test_no_long_enough_episode_is_a_clear_error() -> None:
    with pytest.raises(FeedbackgenError) as info:
        sample_segments(np.array([0, 3, 7]), np.array([3, 4, 2]), 10, 10, _rng())
    msg = str(info.value)
    assert "episode 1" in msg and "has 4" in msg and "--segment-length" in msg
    assert "\n" not in msg


@pytest.mark.parametrize(
    ("starts", "lengths", "n", "length"),
    [
        (STARTS, LENGTHS[:-1], 5, 3),
        (STARTS[:, None], LENGTHS[:, None], 5, 3),
        (STARTS, LENGTHS, -1, 3),
        (STARTS, LENGTHS, 5, 0),
        (np.zeros(0, np.int64), np.zeros(0, np.int64), 5, 3),
    ],
)
def test_sample_segments_rejects_bad_input(starts, lengths, n, length) -> None:
    with pytest.raises(FeedbackgenError):
        sample_segments(starts, lengths, n, length, _rng())


# --------------------------------------------------------------------------- gather_windows


def test_gather_windows_numpy() -> None:
    values = np.arange(45, dtype=np.float32) * 0.5
    starts = np.array([40, 0, 12, 12, 3])
    out = gather_windows(values, starts, 5)
    assert out.dtype == np.float64 and out.shape == (5, 5)
    expected = (starts[:, None] + np.arange(5)[None, :]) * 0.5
    np.testing.assert_array_equal(out, expected)


def _h5_dataset(tmp_path, values):
    f = h5py.File(tmp_path / "src.hdf5", "w")
    f.create_dataset("rewards", data=values, chunks=(8,))
    return f, f["rewards"]


def _zarr_array(tmp_path, values):
    arr = zarr.create_array(tmp_path / "src.zarr", shape=values.shape, chunks=(8,), dtype=values.dtype)
    arr[:] = values
    return None, arr


@pytest.mark.parametrize("backend", [_h5_dataset, _zarr_array], ids=["h5py", "zarr"])
@pytest.mark.parametrize("chunk_rows", [1, 7, 1 << 20])
def test_gather_windows_lazy_dataset_matches_numpy(tmp_path, backend, chunk_rows: int) -> None:
    rng = _rng(3)
    values = rng.normal(size=200).astype(np.float32)
    starts = rng.integers(0, 200 - 6 + 1, size=60)  # unsorted, with repeats
    handle, dataset = backend(tmp_path, values)
    try:
        out = gather_windows(dataset, starts, 6, chunk_rows=chunk_rows)
    finally:
        if handle is not None:
            handle.close()
    np.testing.assert_array_equal(out, gather_windows(values, starts, 6))
    np.testing.assert_array_equal(out[:, 0], values[starts].astype(np.float64))


class _SliceRecorder:
    """A read-only per-step array that records every slice read from it (like a lazy dataset)."""

    def __init__(self, values: np.ndarray) -> None:
        self._values = values
        self.shape = values.shape
        self.reads: list[tuple[int, int]] = []

    def __getitem__(self, key: slice) -> np.ndarray:
        assert isinstance(key, slice), "lazy datasets must be read by contiguous slices"
        self.reads.append((key.start, key.stop))
        return self._values[key]


def test_gather_windows_reads_lazy_sources_in_order_and_about_once() -> None:
    n_rows, length, chunk_rows = 10_000, 10, 1000
    rng = _rng(4)
    values = rng.normal(size=n_rows)
    starts = rng.integers(0, n_rows - length + 1, size=3000)
    source = _SliceRecorder(values)
    out = gather_windows(source, starts, length, chunk_rows=chunk_rows)
    np.testing.assert_array_equal(out, gather_windows(values, starts, length))
    reads = np.array(source.reads)
    assert (np.diff(reads[:, 0]) > 0).all()                      # ascending, no slice twice
    assert ((reads[:, 1] - reads[:, 0]) <= chunk_rows + length).all()
    assert (reads[:, 1] - reads[:, 0]).sum() <= n_rows + len(reads) * length


def test_gather_windows_reads_only_where_segments_are() -> None:
    source = _SliceRecorder(np.arange(1_000_000, dtype=np.float64))
    gather_windows(source, np.array([10, 999_000]), 4, chunk_rows=100)
    assert source.reads == [(10, 14), (999_000, 999_004)]


def test_gather_windows_empty() -> None:
    out = gather_windows(np.arange(10.0), np.zeros(0, np.int64), 3)
    assert out.shape == (0, 3) and out.dtype == np.float64


@pytest.mark.parametrize(
    ("values", "starts", "length", "match"),
    [
        (np.arange(10.0), np.array([8]), 3, "outside"),
        (np.arange(10.0), np.array([-1]), 3, "outside"),
        (np.zeros((10, 2)), np.array([0]), 3, "1-D"),
        (np.arange(10.0), np.array([0]), 0, "positive"),
    ],
)
def test_gather_windows_rejects_bad_input(values, starts, length, match) -> None:
    with pytest.raises(FeedbackgenError, match=match):
        gather_windows(values, starts, length)
