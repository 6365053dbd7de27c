"""``migrate_store``: a schema-1 store rewritten as schema 2 with the same arrays, attributes and id."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr

from feedbackgen._io import exchange_paths as _exchange
from feedbackgen._io import replace_dir as _replace
from feedbackgen.errors import FeedbackgenError
from feedbackgen.labels import import_labels
from feedbackgen.publish import publish_store
from feedbackgen.store import SCHEMA_VERSION, migrate_store, open_store
from feedbackgen.verify import validate_store, verify_store

FINAL = "transitions/final_next_observations"
NEXT = "transitions/next_observations"
LAYOUT_ATTRS = ("schema_version", "next_observations")


def to_schema_v1(src: Path, dest: Path) -> Path:
    """Copy a schema-2 store into the schema-1 layout: the full next-observations array (its own,
    bit for bit), no final rows, no ``next_observations`` attribute, version 1 at the root and in
    the metadata."""
    nobs = np.asarray(open_store(src).next_observations, dtype=np.float32)
    shutil.copytree(src, dest)
    root = zarr.open_group(str(dest), mode="r+")
    root.create_array(NEXT, shape=nobs.shape, dtype="float32", chunks=(64, nobs.shape[1]))[...] = nobs
    if (dest / FINAL).exists():
        shutil.rmtree(dest / FINAL)
    meta = json.loads((dest / "zarr.json").read_text())
    attrs = meta["attributes"]
    attrs.pop("next_observations", None)
    attrs["schema_version"] = attrs["metadata"]["schema_version"] = 1
    (dest / "zarr.json").write_text(json.dumps(meta))
    return dest


def arrays(path: Path) -> dict[str, tuple[str, tuple[int, ...], bytes]]:
    """Every stored array: name -> (dtype, shape, raw bytes)."""
    root = zarr.open_group(str(path), mode="r")
    return {name: (str(node.dtype), tuple(node.shape), np.ascontiguousarray(node[...]).tobytes())
            for name, node in root.members(max_depth=None) if not isinstance(node, zarr.Group)}


def root_attrs(path: Path) -> dict:
    return dict(zarr.open_group(str(path), mode="r").attrs)


def tree(root: Path) -> dict[str, tuple[int, int, bytes]]:
    """Every file under ``root`` -> (size, mtime_ns, content): equal trees = nothing changed."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted(root.rglob("*")) if p.is_file()}


def next_obs_bits(path: Path, lazy: bool) -> np.ndarray:
    nobs = open_store(path, lazy=lazy).next_observations[...]
    return np.ascontiguousarray(nobs, np.float32).view(np.uint32)


def assert_same_content(v1: Path, before_arrays: dict, before_attrs: dict, migrated: Path, form: str) -> None:
    """Arrays bit-identical (next observations as the reader sees them), attributes equal except the
    layout/version fields and the one migration record."""
    after = arrays(migrated)
    moved = {NEXT, FINAL}
    assert set(after) - moved == set(before_arrays) - moved
    for name in set(after) - moved:
        assert after[name] == before_arrays[name], name
    assert (NEXT in after, FINAL in after) == ((False, True) if form == "derived" else (True, False))
    if form == "explicit":
        assert after[NEXT] == before_arrays[NEXT]
    attrs = root_attrs(migrated)
    assert attrs["schema_version"] == SCHEMA_VERSION and attrs["next_observations"] == form
    meta = attrs["metadata"]
    assert meta["schema_version"] == SCHEMA_VERSION
    (record,) = meta.pop("migrations")
    assert record["from_schema_version"] == 1 and record["to_schema_version"] == SCHEMA_VERSION
    assert record["toolkit_version"] and record["time"].endswith("+00:00") and "git_commit" in record
    old_meta = dict(before_attrs["metadata"])
    assert {**meta, "schema_version": 1} == old_meta
    assert {k: v for k, v in attrs.items() if k not in (*LAYOUT_ATTRS, "metadata")} == \
        {k: v for k, v in before_attrs.items() if k not in (*LAYOUT_ATTRS, "metadata")}


def siblings(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir() if p.name != path.name)


@pytest.fixture
def v1_store(tiny_store: Path, tmp_path: Path) -> Path:
    return to_schema_v1(tiny_store, tmp_path / "old" / "s.zarr")


def test_migrate_in_place_keeps_content_and_id(v1_store: Path) -> None:
    before_arrays, before_attrs = arrays(v1_store), root_attrs(v1_store)
    nobs = {lazy: next_obs_bits(v1_store, lazy) for lazy in (False, True)}
    rep_v1 = verify_store(v1_store)
    assert rep_v1.ok, rep_v1.mismatches

    res = migrate_store(v1_store)
    assert res.changed and res.path == v1_store and (res.from_version, res.to_version) == (1, SCHEMA_VERSION)
    assert res.next_observations == "derived" and res.store_id == before_attrs["store_id"]
    assert siblings(v1_store) == []  # no temporary or old copy left beside it
    assert_same_content(v1_store, before_arrays, before_attrs, v1_store, "derived")
    for lazy in (False, True):
        np.testing.assert_array_equal(next_obs_bits(v1_store, lazy), nobs[lazy])
    data = open_store(v1_store)
    assert data.schema_version == SCHEMA_VERSION and data.oracle is not None
    assert validate_store(v1_store).ok, validate_store(v1_store).problems
    rep = verify_store(v1_store)
    assert rep.ok and rep.compared == rep_v1.compared


def test_migrate_with_out_leaves_the_source(v1_store: Path, tmp_path: Path) -> None:
    before = tree(v1_store)
    before_arrays, before_attrs = arrays(v1_store), root_attrs(v1_store)
    out = tmp_path / "new" / "s2.zarr"
    res = migrate_store(v1_store, out)
    assert res.path == out and res.changed and tree(v1_store) == before
    assert_same_content(v1_store, before_arrays, before_attrs, out, "derived")
    np.testing.assert_array_equal(next_obs_bits(out, True), next_obs_bits(v1_store, False))
    assert verify_store(out).ok
    with pytest.raises(FeedbackgenError, match="already exists; pass --overwrite"):
        migrate_store(v1_store, out)
    assert migrate_store(v1_store, out, overwrite=True).path == out
    assert siblings(out) == []
    with pytest.raises(FeedbackgenError, match="is the input store"):
        migrate_store(v1_store, v1_store)
    assert tree(v1_store) == before


def test_migrate_keeps_label_sources_imports_and_verify_result(tiny_store: Path, tmp_path: Path) -> None:
    labels = tmp_path / "labels.csv"
    labels.write_text("kind,source,time,confidence,a,b,label,segment,safe\n"
                      "preference,alice,2025-01-31T10:00:00Z,0.8,3,7,1,,\n"
                      "safety,bob,,,,,,5,unsafe\n")
    imported = import_labels(tiny_store, labels, out=tmp_path / "labelled.zarr").path
    v1 = to_schema_v1(imported, tmp_path / "old" / "labelled.zarr")
    before_arrays, before_attrs = arrays(v1), root_attrs(v1)
    assert {"preferences/source", "safety/single", "oracle/pref_label"} <= set(before_arrays)
    rep_v1 = verify_store(v1)  # new labels: not what the recorded parameters make
    assert not rep_v1.ok
    migrate_store(v1)
    assert_same_content(v1, before_arrays, before_attrs, v1, "derived")
    assert root_attrs(v1)["metadata"]["label_sources"] == before_attrs["metadata"]["label_sources"]
    assert validate_store(v1).ok
    rep = verify_store(v1)
    assert (rep.mismatches, rep.compared) == (rep_v1.mismatches, rep_v1.compared)


def test_migrate_keeps_explicit_next_observations_that_break_the_identity(v1_store: Path) -> None:
    arr = zarr.open_group(str(v1_store), mode="r+")[NEXT]
    arr[10, 1] = np.nextafter(arr[10, 1], np.float32(np.inf))  # row 10 is inside episode 0
    before_arrays, before_attrs = arrays(v1_store), root_attrs(v1_store)
    rep_v1 = verify_store(v1_store)
    assert rep_v1.mismatches == [f"{NEXT} differs from the recomputed array"]
    res = migrate_store(v1_store)
    assert res.next_observations == "explicit"
    assert_same_content(v1_store, before_arrays, before_attrs, v1_store, "explicit")
    assert verify_store(v1_store).mismatches == rep_v1.mismatches


def test_already_current_store_is_left_alone(tiny_store: Path, tmp_path: Path) -> None:
    before = tree(tiny_store)
    out = tmp_path / "elsewhere.zarr"
    for target in (None, out):
        res = migrate_store(tiny_store, target)
        assert not res.changed and res.path == tiny_store and res.from_version == res.to_version == 2
    assert tree(tiny_store) == before and not out.exists()


def _schema_v3(store: Path, dest: Path) -> Path:
    shutil.copytree(store, dest)
    meta = json.loads((dest / "zarr.json").read_text())
    meta["attributes"]["schema_version"] = 3
    (dest / "zarr.json").write_text(json.dumps(meta))
    return dest


def test_bad_inputs_are_one_line_errors_and_change_nothing(v1_store: Path, tmp_path: Path) -> None:
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "notes").mkdir()
    (folder / "notes" / "a.txt").write_text("hello")
    cut = shutil.copytree(v1_store, folder / "cut.zarr")
    (cut / "zarr.json").write_text('{"zarr_format": 3, "node_')
    v3 = _schema_v3(v1_store, folder / "v3.zarr")
    extra = shutil.copytree(v1_store, folder / "extra.zarr")
    zarr.open_group(str(extra), mode="r+").create_array("notes/x", shape=(2,), dtype="int8")
    attr = shutil.copytree(v1_store, folder / "attr.zarr")
    zarr.open_group(str(attr), mode="r+").attrs["comment"] = "kept by hand"
    gone = shutil.copytree(v1_store, folder / "gone.zarr")
    shutil.rmtree(gone / "safety" / "label")
    cases = {folder / "none.zarr": "does not exist", folder / "notes": "not a feedback store",
             cut: "not a feedback store", v3: "schema version 3", extra: "array 'notes/x'",
             attr: "root attribute 'comment'", gone: "missing array 'safety/label'"}
    before = tree(tmp_path)
    for path, fragment in cases.items():
        for out in (None, tmp_path / "out.zarr"):
            with pytest.raises(FeedbackgenError, match=fragment) as info:
                migrate_store(path, out)
            assert "\n" not in str(info.value)
    assert tree(tmp_path) == before


def test_a_failure_while_writing_leaves_the_old_store(v1_store: Path) -> None:
    chunk = v1_store / "oracle" / "costs" / "c" / "0"
    assert chunk.is_file()
    chunk.write_bytes(b"\x00garbage" * 8)  # fails to decode when the rewrite reaches oracle/costs
    before = tree(v1_store)
    with pytest.raises(FeedbackgenError, match="array 'oracle/costs' cannot be read"):
        migrate_store(v1_store)
    assert tree(v1_store) == before and siblings(v1_store) == []


def test_published_zip_migrates_only_to_a_new_directory(v1_store: Path, tmp_path: Path) -> None:
    archive = publish_store(v1_store, tmp_path / "release").archive
    digest = archive.read_bytes()
    with pytest.raises(FeedbackgenError, match="published zip and cannot be rewritten in place; pass --out"):
        migrate_store(archive)
    out = migrate_store(archive, tmp_path / "from-zip.zarr").path
    assert archive.read_bytes() == digest
    assert open_store(out).schema_version == SCHEMA_VERSION and verify_store(out).ok
    np.testing.assert_array_equal(next_obs_bits(out, False), next_obs_bits(archive, False))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="renameat2 is Linux's")
def test_replace_swaps_an_existing_store_in_one_step(tmp_path: Path) -> None:
    """In place, the finished store and the old one trade names in one atomic step, so the name is
    never empty; the old one is then deleted."""
    old, new = tmp_path / "s.zarr", tmp_path / ".s.zarr.tmp-1-x"
    for d, text in ((old, "old"), (new, "new")):
        d.mkdir()
        (d / "f").write_text(text)
    assert _exchange(new, old)
    assert (old / "f").read_text() == "new" and (new / "f").read_text() == "old"
    _exchange(new, old)
    _replace(new, old)
    assert (old / "f").read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["s.zarr"]
