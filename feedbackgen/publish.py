"""Releasing a store: strip the ground truth, zip it, checksum it, describe it.

- :func:`strip_store` copies a store without its ``oracle`` group (a blind release: the labels
  stay, the true rewards, costs and noise-free labels go). The copy gets the store id
  ``<namespace>/<name>-blind-vN`` and records where it came from under ``metadata.stripped``.
- :func:`publish_store` writes a folder with the store zipped without compression (``ZIP_STORED``,
  so zarr's ``ZipStore`` and :func:`feedbackgen.store.open_store` read it in place), a
  ``SHA256SUMS`` manifest (``sha256sum -c`` format) and a dataset card ``README.md`` with YAML
  front matter as dataset hubs expect, generated from the store's metadata.

Both write atomically (temporary sibling, then rename) and refuse to replace existing outputs
unless ``overwrite=True``.
"""

from __future__ import annotations

import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from feedbackgen._io import atomic_dir, sha256_file
from feedbackgen.errors import FeedbackgenError
from feedbackgen.store import open_store, rewrite_store, split_columns

_ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # fixed entry times: the same store zips to the same bytes


def _blind_id(store_id: str) -> str:
    head, sep, version = store_id.rpartition("-v")
    if not sep or not version.isdigit():
        return f"{store_id}-blind"
    return f"{head}-blind-v{version}"


def strip_store(path: str | Path, out: str | Path, *, overwrite: bool = False) -> Path:
    """Copy the store at ``path`` to ``out`` without the ``oracle`` group (the copy is written in
    the current schema version, through :func:`feedbackgen.store.rewrite_store`).

    Raises:
        FeedbackgenError: ``path`` is not a store, ``out`` is ``path``, or ``out`` exists and
            ``overwrite`` is false.
    """
    path = Path(path)
    data = open_store(path, lazy=True)
    if data.oracle is None:
        raise FeedbackgenError(f"{path} is already stripped (it has no oracle group); publish it as it is")
    meta = dict(data.metadata)
    meta["stripped"] = {"from_store_id": data.store_id, "removed": ["oracle"]}
    data.metadata = meta
    data.oracle = None
    data.store_id = _blind_id(data.store_id)
    return rewrite_store(data, out, overwrite=overwrite)


@dataclass
class Publication:
    """What :func:`publish_store` wrote."""

    folder: Path
    archive: Path
    card: Path
    manifest: Path
    sha256: str


def zip_store(store_dir: Path, archive: Path) -> None:
    """Zip a directory store with ``ZIP_STORED`` and sorted entries, paths relative to the store root."""
    files = sorted(p for p in store_dir.rglob("*") if p.is_file())
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for p in files:
            info = zipfile.ZipInfo(p.relative_to(store_dir).as_posix(), date_time=_ZIP_DATE)
            info.compress_type = zipfile.ZIP_STORED
            info.external_attr = 0o644 << 16
            with p.open("rb") as src, zf.open(info, "w", force_zip64=True) as dst:
                shutil.copyfileobj(src, dst, 8 << 20)


def _size_category(n: int) -> str:
    for bound, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                         (1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M")):
        if n < bound:
            return label
    return "10M<n<100M"


def _fmt(x: Any, digits: int = 3) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def dataset_card(data: Any, *, archive_name: str, archive_sha256: str) -> str:
    """The dataset card (README.md): YAML front matter + a description generated from metadata."""
    import yaml

    meta, q = data.metadata, data.quality
    task = meta.get("task", {})
    src = meta.get("source", {})
    seg = meta.get("segments", {})
    pref = meta.get("preferences", {})
    saf = meta.get("safety", {})
    thresholds = [float(t) for t in saf.get("thresholds", [])]
    n_pairs = int(data.pref_a.shape[0])
    pref_val, saf_val = split_columns(data)
    split = meta.get("split") if isinstance(meta.get("split"), dict) else {}
    split_line = ("no validation split: every row is a training row" if not data.has_split else
                  f"{int(pref_val.sum())} pairs and {int(saf_val.sum())} safety segments from "
                  f"{len(split.get('val_episodes') or [])} held-out episodes (`preferences/split`, "
                  "`safety/split`: 1 = validation); no training segment comes from those episodes")
    front = {
        "pretty_name": f"{task.get('name', '?')} safe-RLHF feedback ({data.store_id})",
        "license": "other",
        "task_categories": ["reinforcement-learning"],
        "tags": ["offline-rl", "safe-rl", "rlhf", "preference-learning", "zarr", task.get("suite", "")],
        "size_categories": [_size_category(n_pairs)],
        "configs": [{"config_name": "default", "data_files": [archive_name]}],
        "dataset_info": {
            "store_id": data.store_id, "schema_version": data.schema_version,
            "transitions": data.n_transitions, "episodes": data.n_episodes, "segments": data.n_segments,
            "preference_pairs": n_pairs, "safety_segments": int(data.safety_segment.shape[0]),
            "thresholds": thresholds, "has_oracle": data.oracle is not None,
            "validation_pairs": int(pref_val.sum()), "validation_safety_segments": int(saf_val.sum()),
        },
    }
    agree = q.get("safety_agreement_per_threshold") or [None] * len(thresholds)
    safe = q.get("safe_fraction") or [None] * len(thresholds)
    rows = "\n".join(f"| {t:g} | {_fmt(s)} | {_fmt(a)} |"
                     for t, s, a in zip(thresholds, safe, agree, strict=False))
    teacher = ", ".join(f"{k}={v}" for k, v in pref.get("teacher", {}).items() if v is not None)
    blind = ("This is a **blind** release: the `oracle` group (true rewards, costs and noise-free labels) "
             "was removed." if data.oracle is None else
             "The `oracle` group holds the true rewards, costs and noise-free labels; "
             "`feedbackgen strip` removes it for a blind release.")
    body = f"""
# {data.store_id}

Preference and safety feedback for offline safe RL from human feedback, made by
`feedbackgen make` (toolkit {meta.get('toolkit_version')}, commit {meta.get('git_commit')}) from
{task.get('name')} ({task.get('suite')}, `{task.get('env_id')}`, T_max = {task.get('max_episode_steps')}).

- **Source**: `{src.get('file_name', Path(str(src.get('path', ''))).name)}` ({src.get('format')}),
  {src.get('transitions')} transitions in {src.get('episodes')} episodes, SHA-256 `{src.get('sha256')}`.
- **Segments**: {seg.get('method')} sampling, H = {seg.get('resolved_length', seg.get('length'))} steps,
  seed {seg.get('seed')}.
- **Preferences**: {n_pairs} pairs (asked {pref.get('n_requested')}), teacher {teacher or 'oracle'};
  label y = P(b ≻ a): 1 b preferred, 0 a preferred, 0.5 equal.
- **Safety**: {saf.get('n')} segments, rule `{saf.get('rule')}`, noise `{saf.get('noise_model')}`
  (ε = {saf.get('noise')}), {'the pair segments' if saf.get('shared_with_pairs') else 'drawn separately'};
  label 1 = safe, 0 = unsafe, one column per threshold.
- **Validation split**: {split_line}.
- **Seed**: {meta.get('seed')}. Created {meta.get('created')}.

{blind}

## Label quality

| measure | value |
|---|---|
| preference agreement with oracle (ties excluded) | {_fmt(q.get('preference_agreement'))} |
| safety agreement with oracle (mean over thresholds) | {_fmt(q.get('safety_agreement'))} |
| oracle tie rate | {_fmt(q.get('tie_rate'))} |
| skip rate | {_fmt(q.get('skip_rate'))} |

| threshold κ | safe fraction | safety agreement |
|---|---|---|
{rows}

## Files

| file | SHA-256 |
|---|---|
| `{archive_name}` | `{archive_sha256}` |

`SHA256SUMS` lists the checksums (`sha256sum -c SHA256SUMS`).

## Use

```python
from feedbackgen.store import open_store
data = open_store("{archive_name}")      # reads the zip in place
```
or `presa train --data {archive_name}`.

The layout is documented in `feedbackgen/store.py` (schema version {data.schema_version}).
"""
    return "---\n" + yaml.safe_dump(front, sort_keys=False, allow_unicode=True) + "---\n" + body


def publish_store(path: str | Path, out_dir: str | Path, *, overwrite: bool = False) -> Publication:
    """Write ``out_dir`` with ``<store>.zip``, ``README.md`` (dataset card) and ``SHA256SUMS``.

    Raises:
        FeedbackgenError: ``path`` is not a directory store, or ``out_dir`` exists and
            ``overwrite`` is false.
    """
    path, out_dir = Path(path), Path(out_dir)
    data = open_store(path, lazy=True)
    if not path.is_dir():
        raise FeedbackgenError(f"{path} is not a directory store; publish the store folder made by "
                               "`feedbackgen make`")
    if out_dir.exists() and not overwrite:
        raise FeedbackgenError(f"{out_dir} already exists; pass --overwrite to replace it "
                               "or choose another --out")
    name = path.name if path.name.endswith(".zarr") else f"{path.name}.zarr"
    archive_name = f"{name}.zip"
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with atomic_dir(out_dir) as tmp:
        zip_store(path, tmp / archive_name)
        digest = sha256_file(tmp / archive_name)
        open_store(tmp / archive_name, lazy=True)  # the archive must open in place
        (tmp / "README.md").write_text(dataset_card(data, archive_name=archive_name, archive_sha256=digest))
        sums = f"{digest}  {archive_name}\n{sha256_file(tmp / 'README.md')}  README.md\n"
        (tmp / "SHA256SUMS").write_text(sums)
    return Publication(folder=out_dir, archive=out_dir / archive_name, card=out_dir / "README.md",
                       manifest=out_dir / "SHA256SUMS", sha256=digest)
