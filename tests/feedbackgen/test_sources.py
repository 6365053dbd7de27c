"""DSRL reader/writer: round trip, episode split, name self-check, clear errors, locating files."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from feedbackgen import sources
from feedbackgen.errors import FeedbackgenError
from feedbackgen.sources import (
    expected_trajectories,
    locate_source,
    read_dsrl,
    sha256_file,
    split_episodes,
    write_dsrl,
)
from feedbackgen.tasks import get_task


@pytest.fixture(name="F")
def _factory(dsrl_factory):
    return dsrl_factory


def test_read_maps_vocabulary_and_splits_episodes(F, tiny_dsrl: Path) -> None:
    with read_dsrl(tiny_dsrl) as traj:
        assert isinstance(traj.observations, h5py.Dataset)  # lazy: stays on disk
        assert traj.n_transitions == sum(F.episode_lengths)
        assert traj.episode_length.tolist() == list(F.episode_lengths)
        starts = np.concatenate([[0], np.cumsum(F.episode_lengths)[:-1]])
        assert traj.episode_start.tolist() == starts.tolist()
        done = traj.terminations | traj.truncations
        assert np.flatnonzero(done).tolist() == (np.cumsum(F.episode_lengths) - 1).tolist()
        assert traj.truncations.sum() == sum(n == 60 for n in F.episode_lengths)
        assert (traj.obs_dim, traj.act_dim) == (4, 2)
    assert traj._file is None  # closed by the context manager


def test_round_trip_write_read(tiny_dsrl: Path, tmp_path: Path) -> None:
    with read_dsrl(tiny_dsrl) as traj:
        out = write_dsrl(tmp_path / "copy" / "c.hdf5", traj, {"origin": "test", "nested": {"a": 1}})
    a, b = read_dsrl(tiny_dsrl, lazy=False), read_dsrl(out, lazy=False)
    for name in ("observations", "next_observations", "actions", "rewards", "costs", "terminations",
                 "truncations", "episode_start", "episode_length"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert b.attrs["origin"] == "test" and b.attrs["nested"] == '{"a": 1}'
    assert [p.name for p in out.parent.iterdir()] == ["c.hdf5"]  # no temporary sibling left


@pytest.mark.parametrize("compression", ["gzip", "lzf"])
def test_compressed_write_is_transparent_to_readers(tiny_dsrl: Path, tmp_path: Path,
                                                   compression: str) -> None:
    with read_dsrl(tiny_dsrl) as traj:
        out = write_dsrl(tmp_path / "c.hdf5", traj, {"origin": "test"}, compression=compression)
    with h5py.File(out, "r") as f:
        assert f["observations"].compression == compression and f["observations"].shuffle
    a, b = read_dsrl(tiny_dsrl, lazy=False), read_dsrl(out, lazy=False)
    for name in ("observations", "next_observations", "actions", "rewards", "costs", "terminations",
                 "truncations", "episode_start", "episode_length"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    with read_dsrl(out) as lazy:  # lazy (h5py) reads decode chunk by chunk
        np.testing.assert_array_equal(lazy.observations[5:9], a.observations[5:9])
    with pytest.raises(FeedbackgenError, match="compression"):
        write_dsrl(tmp_path / "d.hdf5", a, compression="zstd")


def test_split_trailing_unflagged_run_is_an_episode() -> None:
    start, length = split_episodes(np.array([0, 0, 1, 0, 0], bool), np.zeros(5, bool))
    assert start.tolist() == [0, 3] and length.tolist() == [3, 2]
    start, length = split_episodes(np.zeros(4, bool), np.zeros(4, bool))
    assert start.tolist() == [0] and length.tolist() == [4]


def test_trailing_partial_episode_in_file(F, tmp_path: Path) -> None:
    path = F.write(tmp_path / "t.hdf5", episode_lengths=(30, 25), flag_last=False)
    with read_dsrl(path) as traj:
        assert traj.episode_length.tolist() == [30, 25]
        assert not traj.terminations[-1] and not traj.truncations[-1]


def test_trajectory_count_in_dsrl_name(F, tmp_path: Path) -> None:
    assert expected_trajectories("SafetyCarCircle-v0-100-1450.hdf5") == 1450
    assert expected_trajectories("data.hdf5") is None
    good = F.write(tmp_path / "SafetyTiny-v0-80-3.hdf5", episode_lengths=(30, 25, 40))
    assert read_dsrl(good).n_episodes == 3
    bad = F.write(tmp_path / "SafetyTiny-v0-80-4.hdf5", episode_lengths=(30, 25, 40))
    with pytest.raises(FeedbackgenError, match="says 4 trajectories .* gives 3"):
        read_dsrl(bad)
    assert read_dsrl(bad, check_count=False).n_episodes == 3


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FeedbackgenError, match="does not exist.*--source"):
        read_dsrl(tmp_path / "nope.hdf5")


def test_corrupt_and_truncated_hdf5(tiny_dsrl: Path, tmp_path: Path) -> None:
    junk = tmp_path / "junk.hdf5"
    junk.write_bytes(b"not an hdf5 file at all" * 10)
    with pytest.raises(FeedbackgenError, match="not a readable HDF5 file"):
        read_dsrl(junk)
    cut = tmp_path / "cut.hdf5"
    cut.write_bytes(tiny_dsrl.read_bytes()[:3000])
    with pytest.raises(FeedbackgenError) as exc:
        read_dsrl(cut)
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize("key", ["observations", "actions", "rewards", "costs", "terminals", "timeouts",
                                 "next_observations"])
def test_missing_key(F, tmp_path: Path, key: str) -> None:
    path = F.write(tmp_path / "m.hdf5", drop=[key])
    with pytest.raises(FeedbackgenError, match=f"no dataset '{key}'"):
        read_dsrl(path)


def test_wrong_shapes_and_dtypes(F, tmp_path: Path) -> None:
    n = sum(F.episode_lengths)
    cases = {
        "rewards": (np.zeros((n, 2), np.float32), "'rewards' must be 1-D"),
        "observations": (np.zeros(n, np.float32), "'observations' must be a 2-D"),
        "costs": (np.array([b"x"] * n), "'costs' must be numeric"),
        "terminals": (np.full(n, 2.0), "'terminals' must hold booleans"),
        "next_observations": (np.zeros((n, 5), np.float32), "'next_observations' has shape"),
        "actions": (np.zeros((n - 1, 2), np.float32), "different lengths"),
    }
    for key, (value, message) in cases.items():
        path = F.write(tmp_path / f"{key}.hdf5", overrides={key: value})
        with pytest.raises(FeedbackgenError, match=message):
            read_dsrl(path)


@pytest.mark.parametrize("key", ["rewards", "costs", "observations", "actions"])
def test_nan_and_inf_rejected(F, tmp_path: Path, key: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sources, "SCAN_CHUNK_ROWS", 64)  # the bad row sits in a later chunk
    with h5py.File(F.write(tmp_path / "base.hdf5"), "r") as f:
        value = f[key][...]
    value[300] = np.inf if key == "costs" else np.nan
    path = F.write(tmp_path / f"nan-{key}.hdf5", overrides={key: value})
    with pytest.raises(FeedbackgenError, match=f"'{key}' has NaN or inf values \\(first at row 300\\)"):
        read_dsrl(path)


def test_nan_scan_reads_in_chunks(tiny_dsrl: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The lazy arrays are only ever sliced by at most SCAN_CHUNK_ROWS rows (never loaded whole)."""
    monkeypatch.setattr(sources, "SCAN_CHUNK_ROWS", 50)
    seen: list[int] = []
    real = h5py.Dataset.__getitem__

    def spy(self, key):
        out = real(self, key)
        if self.name in ("/observations", "/next_observations", "/actions"):
            seen.append(out.shape[0])
        return out

    monkeypatch.setattr(h5py.Dataset, "__getitem__", spy)
    read_dsrl(tiny_dsrl).close()
    assert seen and max(seen) <= 50


def test_locate_source_order(F, tiny_task, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # explicit source wins; a missing explicit source is an error naming --source
    explicit = F.write(tmp_path / "explicit.hdf5")
    assert locate_source(tiny_task, explicit) == explicit
    with pytest.raises(FeedbackgenError, match="--source"):
        locate_source(tiny_task, tmp_path / "missing.hdf5")
    # a shipped task uses its own file
    assert locate_source(tiny_task) == tiny_task.source_path
    # a DSRL task: the cache folder, else (offline) one error naming file, cache and --source
    cache = tmp_path / "cache"
    monkeypatch.setenv("DSRL_DATASET_DIR", str(cache))
    ballrun = get_task("BallRun")
    with pytest.raises(FeedbackgenError) as exc:
        locate_source(ballrun, download=False)
    msg = str(exc.value)
    assert ballrun.dsrl_file in msg and str(cache) in msg and "--source" in msg
    F.write(cache / ballrun.dsrl_file)
    assert locate_source(ballrun, download=False) == cache / ballrun.dsrl_file


def test_sha256_file(tmp_path: Path) -> None:
    p = tmp_path / "x.bin"
    p.write_bytes(b"abc")
    assert sha256_file(p) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
