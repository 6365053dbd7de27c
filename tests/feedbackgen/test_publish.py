"""strip and publish: blind copies, stored zips readable in place, manifest, dataset card."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml
import zarr

from feedbackgen.errors import FeedbackgenError
from feedbackgen.publish import publish_store, strip_store
from feedbackgen.store import open_store
from feedbackgen.verify import validate_store


def test_strip_removes_oracle_keeps_labels(tiny_store: Path, tmp_path: Path) -> None:
    out = strip_store(tiny_store, tmp_path / "blind.zarr")
    full, blind = open_store(tiny_store), open_store(out)
    assert blind.oracle is None and not (out / "oracle").exists()
    np.testing.assert_array_equal(full.pref_label, blind.pref_label)
    np.testing.assert_array_equal(full.observations, blind.observations)
    assert blind.store_id == full.store_id.replace("-v1", "-blind-v1")
    assert blind.metadata["stripped"] == {"from_store_id": full.store_id, "removed": ["oracle"]}
    with pytest.raises(FeedbackgenError, match="already stripped"):
        strip_store(out, tmp_path / "again.zarr")
    with pytest.raises(FeedbackgenError, match="already exists"):
        strip_store(tiny_store, out)
    with pytest.raises(FeedbackgenError, match="is the input store"):
        strip_store(tiny_store, tiny_store)


def test_publish_zip_manifest_and_card(tiny_store: Path, tmp_path: Path) -> None:
    pub = publish_store(tiny_store, tmp_path / "release")
    assert sorted(p.name for p in pub.folder.iterdir()) == ["README.md", "SHA256SUMS", "tiny.zarr.zip"]
    with zipfile.ZipFile(pub.archive) as zf:
        assert all(i.compress_type == zipfile.ZIP_STORED for i in zf.infolist())
        assert "zarr.json" in zf.namelist()
    # readable in place, by zarr's ZipStore and by open_store, with identical content
    root = zarr.open_group(store=zarr.storage.ZipStore(str(pub.archive), mode="r"), mode="r")
    np.testing.assert_array_equal(root["preferences/label"][...], open_store(tiny_store).pref_label)
    assert open_store(pub.archive).store_id == open_store(tiny_store).store_id
    assert validate_store(pub.archive).ok
    # manifest in sha256sum format
    lines = dict(reversed(line.split("  ")) for line in pub.manifest.read_text().splitlines())
    assert lines["tiny.zarr.zip"] == hashlib.sha256(pub.archive.read_bytes()).hexdigest() == pub.sha256
    assert lines["README.md"] == hashlib.sha256(pub.card.read_bytes()).hexdigest()
    # dataset card: YAML front matter + body
    text = pub.card.read_text()
    assert text.startswith("---\n")
    front = yaml.safe_load(text.split("---\n")[1])
    assert front["task_categories"] == ["reinforcement-learning"]
    assert front["dataset_info"]["store_id"] == open_store(tiny_store).store_id
    assert front["dataset_info"]["preference_pairs"] == 200 and front["dataset_info"]["has_oracle"] is True
    assert front["size_categories"] == ["n<1K"]
    assert pub.sha256 in text and "y = P(b ≻ a)" in text


def test_publish_is_deterministic_and_refuses_overwrite(tiny_store: Path, tmp_path: Path) -> None:
    a = publish_store(tiny_store, tmp_path / "a")
    b = publish_store(tiny_store, tmp_path / "b")
    assert a.sha256 == b.sha256
    with pytest.raises(FeedbackgenError, match="already exists"):
        publish_store(tiny_store, tmp_path / "a")
    publish_store(tiny_store, tmp_path / "a", overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    with pytest.raises(FeedbackgenError, match="not a directory store"):
        publish_store(a.archive, tmp_path / "c")
