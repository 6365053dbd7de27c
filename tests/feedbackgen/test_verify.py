"""validate (structure) and verify (exact recomputation), including tampered stores."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr

from feedbackgen.errors import FeedbackgenError
from feedbackgen.publish import strip_store
from feedbackgen.verify import validate_store, verify_store


def _copy(store: Path, tmp_path: Path, name: str) -> Path:
    dst = tmp_path / name
    shutil.copytree(store, dst)
    return dst


def test_fresh_store_is_sound(tiny_store: Path) -> None:
    rep = validate_store(tiny_store)
    assert rep.ok, rep.problems
    assert rep.checks > 50
    ver = verify_store(tiny_store)
    assert ver.ok, ver.mismatches
    assert "transitions/observations" in ver.compared and "oracle/safety_label" in ver.compared


def test_flipped_label_passes_validate_fails_verify(tiny_store: Path, tmp_path: Path) -> None:
    store = _copy(tiny_store, tmp_path, "flip.zarr")
    arr = zarr.open_group(str(store), mode="r+")["preferences/label"]
    arr[0] = 1.0 - arr[0]
    assert validate_store(store).ok
    rep = verify_store(store)
    assert not rep.ok and any("preferences/label" in m for m in rep.mismatches)


def test_edited_observation_fails_verify(tiny_store: Path, tmp_path: Path) -> None:
    store = _copy(tiny_store, tmp_path, "obs.zarr")
    arr = zarr.open_group(str(store), mode="r+")["transitions/observations"]
    arr[400, 2] = arr[400, 2] + 1.0
    assert validate_store(store).ok
    mismatches = verify_store(store).mismatches
    # row 400 is inside an episode, so the derived next_observations[399] changes with it (schema 2)
    assert mismatches[0] == "transitions/observations differs from the recomputed array"
    assert len(mismatches) == 2 and mismatches[1].startswith("transitions/next_observations (derived")


@pytest.mark.parametrize("name, index, value, message", [
    ("segments/start", 5, 10_000, "not inside their episode"),
    ("segments/episode", 0, 99, "outside [0, episodes)"),
    ("preferences/a", 3, -1, "outside [0, segments)"),
    ("preferences/label", 0, 0.3, "other than 0, 0.5 and 1"),
    ("safety/label", (0, 1), 2, "other than 0 and 1"),
    ("episodes/length", 0, 1, "do not tile"),
    ("transitions/actions", (10, 0), np.nan, "NaN or inf"),
    ("oracle/segment_return", 0, 1e6, "segment_return is not the reward sum"),
])
def test_tampering_fails_validate(tiny_store: Path, tmp_path: Path, name: str, index, value,
                                  message: str) -> None:
    store = _copy(tiny_store, tmp_path, "t.zarr")
    zarr.open_group(str(store), mode="r+")[name][index] = value
    rep = validate_store(store)
    assert not rep.ok and any(message in p for p in rep.problems), rep.problems


def test_missing_metadata_and_array(tiny_store: Path, tmp_path: Path) -> None:
    store = _copy(tiny_store, tmp_path, "m.zarr")
    root = zarr.open_group(str(store), mode="r+")
    meta = dict(root.attrs["metadata"])
    del meta["obs_std"]
    root.attrs["metadata"] = meta
    assert "metadata has no 'obs_std'" in validate_store(store).problems
    shutil.rmtree(store / "safety" / "label")
    with pytest.raises(FeedbackgenError, match="missing array 'safety/label'"):
        validate_store(store)


def test_unknown_schema_version(tiny_store: Path, tmp_path: Path) -> None:
    store = _copy(tiny_store, tmp_path, "v.zarr")
    zarr.open_group(str(store), mode="r+").attrs["schema_version"] = 99
    for check in (validate_store, verify_store):
        with pytest.raises(FeedbackgenError, match="schema version 99"):
            check(store)


def test_stripped_store_verifies(tiny_store: Path, tmp_path: Path) -> None:
    blind = strip_store(tiny_store, tmp_path / "blind.zarr")
    assert validate_store(blind).ok
    rep = verify_store(blind)
    assert rep.ok, rep.mismatches
    assert not any(c.startswith("oracle/") for c in rep.compared)


def test_verify_with_other_source(tiny_store: Path, tmp_path: Path, dsrl_factory) -> None:
    other = dsrl_factory.write(tmp_path / "other.hdf5", seed=1)
    rep = verify_store(tiny_store, source=other)
    assert not rep.ok and "SHA-256" in rep.mismatches[0]
    with pytest.raises(FeedbackgenError, match="does not exist"):
        verify_store(tiny_store, source=tmp_path / "gone.hdf5")
