"""Store schema 2: derived next observations, the explicit fallback, and reading schema-1 stores."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr

from feedbackgen.errors import FeedbackgenError
from feedbackgen.make import MakeConfig, make_store
from feedbackgen.publish import publish_store, strip_store
from feedbackgen.sources import read_dsrl
from feedbackgen.store import DerivedNextObservations, open_store
from feedbackgen.verify import validate_store, verify_store

FINAL = "transitions/final_next_observations"
NEXT = "transitions/next_observations"


def _make(task: str, tmp_path: Path, name: str, source: Path | None = None) -> Path:
    return make_store(MakeConfig(task=task, source=source, noise=0.1, seed=5, n_pairs=40, n_safety=30,
                                 out=tmp_path / "stores" / name))


def _source_next(source: Path) -> np.ndarray:
    with read_dsrl(source, lazy=False) as traj:
        return np.asarray(traj.next_observations, dtype=np.float32)


def _bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)


LONG_OBS_DIM = 1024  # 4 MiB chunks of rows -> 1,024 rows per chunk


def _long_source(dsrl_factory, path: Path, mismatch_row: int | None = None) -> Path:
    """3,000 steps in 3 episodes (1,500 / 700 / 800), obs 1,024: with 1,024-row chunks, episode 0
    spans two chunks; ``mismatch_row`` gets a next observation one float32 ulp off its episode's."""
    lengths = (1500, 700, 800)
    if mismatch_row is None:
        return dsrl_factory.write(path, episode_lengths=lengths, obs_dim=LONG_OBS_DIM)
    rng = np.random.default_rng(0)  # write_tiny_dsrl's own data: same seed, same first draw
    obs = rng.normal(size=(sum(lengths), LONG_OBS_DIM)).astype(np.float32)
    nobs = np.roll(obs, -1, axis=0)
    nobs[mismatch_row, 1] = np.nextafter(nobs[mismatch_row, 1], np.float32(np.inf))
    return dsrl_factory.write(path, episode_lengths=lengths, obs_dim=LONG_OBS_DIM,
                              overrides={"next_observations": nobs})


def test_v2_store_derives_next_observations(tiny_task, tmp_path: Path) -> None:
    path = _make(tiny_task.name, tmp_path, "v2.zarr")
    root = zarr.open_group(str(path), mode="r")
    assert root.attrs["schema_version"] == 2 and root.attrs["next_observations"] == "derived"
    assert root.attrs["metadata"]["schema_version"] == 2
    assert NEXT.split("/")[1] not in root["transitions"]
    want = _source_next(tiny_task.source_path)
    eager, lazy = open_store(path), open_store(path, lazy=True)
    assert tuple(root[FINAL].shape) == (eager.n_episodes, eager.obs_dim)
    assert eager.next_observations_form == lazy.next_observations_form == "derived"
    assert isinstance(eager.next_observations, np.ndarray) and eager.next_observations.dtype == np.float32
    np.testing.assert_array_equal(_bits(eager.next_observations), _bits(want))
    view = lazy.next_observations
    assert isinstance(view, DerivedNextObservations)
    assert view.shape == want.shape and view.dtype == np.float32 and len(view) == want.shape[0]
    np.testing.assert_array_equal(np.asarray(view), want)
    n = want.shape[0]
    ends = eager.episode_start + eager.episode_length - 1
    keys = [slice(0, 61), slice(59, 106), slice(100, None), slice(None, None, 7), slice(n - 1, n),
            slice(5, 5), 0, int(ends[0]), -1, np.array([n - 1, 3, int(ends[2])]), eager.episode == 3,
            (slice(40, 70), 2), (slice(None), slice(1, 3)), (int(ends[1]), 0), Ellipsis]
    for key in keys:
        np.testing.assert_array_equal(view[key], want[key], err_msg=repr(key))
    with pytest.raises(IndexError):
        view[n]
    assert validate_store(path).ok
    rep = verify_store(path)
    assert rep.ok, rep.mismatches
    assert NEXT in rep.compared and "metadata.schema_version" in rep.compared


@pytest.mark.parametrize("row", [None, 10, 1023, 1024, 1499])
def test_derived_or_explicit_across_chunks(row, tiny_task, tmp_path: Path, dsrl_factory) -> None:
    """Rows 10 (inside a chunk), 1023 (last row of a chunk: compared with the next chunk's first
    observation) and 1024 differ inside episode 0 -> explicit; row 1499 is that episode's last
    step, whose next observation is stored anyway -> still derived."""
    source = _long_source(dsrl_factory, tmp_path / "src" / "long.hdf5", row)
    path = _make(tiny_task.name, tmp_path, "long.zarr", source=source)
    root = zarr.open_group(str(path), mode="r")
    assert root["transitions/observations"].chunks[0] == 1024
    explicit = row is not None and row != 1499
    assert root.attrs["next_observations"] == ("explicit" if explicit else "derived")
    assert (NEXT.split("/")[1] in root["transitions"]) is explicit
    assert (FINAL.split("/")[1] in root["transitions"]) is not explicit
    want = _source_next(source)
    for lazy in (False, True):
        np.testing.assert_array_equal(_bits(open_store(path, lazy=lazy).next_observations[...]), _bits(want))
    assert validate_store(path).ok
    rep = verify_store(path, source=source)
    assert rep.ok, rep.mismatches


def _to_schema_v1(src: Path, dest: Path, next_observations: np.ndarray) -> Path:
    """Rewrite a schema-2 store into the schema-1 layout: the full next-observations array, no
    final rows, no ``next_observations`` attribute, version 1 at the root and in the metadata."""
    shutil.copytree(src, dest)
    root = zarr.open_group(str(dest), mode="r+")
    arr = root.create_array(NEXT, shape=next_observations.shape, dtype="float32", chunks=(64, 4))
    arr[...] = next_observations
    shutil.rmtree(dest / FINAL)
    meta = json.loads((dest / "zarr.json").read_text())
    attrs = meta["attributes"]
    del attrs["next_observations"]
    attrs["schema_version"] = attrs["metadata"]["schema_version"] = 1
    (dest / "zarr.json").write_text(json.dumps(meta))
    return dest


def test_schema_v1_store_still_reads_and_verifies(tiny_task, tmp_path: Path) -> None:
    want = _source_next(tiny_task.source_path)
    v1 = _to_schema_v1(_make(tiny_task.name, tmp_path, "v2.zarr"), tmp_path / "v1.zarr", want)
    for lazy in (False, True):
        data = open_store(v1, lazy=lazy)
        assert data.schema_version == 1 and data.next_observations_form == "explicit"
        assert data.final_next_observations is None
        np.testing.assert_array_equal(np.asarray(data.next_observations[...]), want)
    assert validate_store(v1).ok
    rep = verify_store(v1)
    assert rep.ok, rep.mismatches
    # a store rewritten from it (strip, import-labels) is schema 2 with derived next observations
    blind = strip_store(v1, tmp_path / "blind.zarr")
    root = zarr.open_group(str(blind), mode="r")
    assert root.attrs["schema_version"] == 2 and root.attrs["next_observations"] == "derived"
    np.testing.assert_array_equal(open_store(blind).next_observations, want)
    assert verify_store(blind).ok
    pub = publish_store(v1, tmp_path / "release")
    assert open_store(pub.archive).schema_version == 1
    assert "schema version 1" in pub.card.read_text()


def test_tampered_final_row_is_caught(tiny_task, tmp_path: Path) -> None:
    path = _make(tiny_task.name, tmp_path, "v2.zarr")
    bad = tmp_path / "bad.zarr"
    shutil.copytree(path, bad)
    final = zarr.open_group(str(bad), mode="r+")[FINAL]
    final[3, 1] = final[3, 1] + 1.0
    assert validate_store(bad).ok  # structurally fine
    rep = verify_store(bad)
    assert rep.mismatches == [f"{NEXT} (derived from transitions/observations and {FINAL}) differs "
                              "from the source's"]
    final[3, 1] = np.nan
    assert any("transitions/final_next_observations has NaN" in p for p in validate_store(bad).problems)


def test_damaged_derived_layout_is_one_error_line(tiny_task, tmp_path: Path) -> None:
    path = _make(tiny_task.name, tmp_path, "v2.zarr")
    short = tmp_path / "short.zarr"  # one final row missing
    shutil.copytree(path, short)
    root = zarr.open_group(str(short), mode="r+")
    rows = np.asarray(root[FINAL][:-1])
    del root[FINAL]
    root.create_array(FINAL, shape=rows.shape, dtype="float32")[...] = rows
    rep = validate_store(short)
    assert any(f"{FINAL} has shape" in p for p in rep.problems), rep.problems
    with pytest.raises(FeedbackgenError, match="does not fit the episode table"):
        open_store(short)
    assert any("cannot be derived" in m for m in verify_store(short).mismatches)

    gone = tmp_path / "gone.zarr"
    shutil.copytree(path, gone)
    shutil.rmtree(gone / FINAL)
    with pytest.raises(FeedbackgenError, match=f"missing array '{FINAL}'"):
        validate_store(gone)

    odd = tmp_path / "odd.zarr"
    shutil.copytree(path, odd)
    zarr.open_group(str(odd), mode="r+").attrs["next_observations"] = "zipped"
    with pytest.raises(FeedbackgenError, match="next_observations form 'zipped'"):
        open_store(odd, lazy=True)
