"""Concurrency: two processes read one store while a third writes another store in the same folder.

Readers open the store (``open_store`` of every array) and run ``feedbackgen info --json`` in a
loop; the writer runs ``feedbackgen make`` into the same folder. All must succeed, the readers'
results must equal a sequential read, and the new store must equal one made alone.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from feedbackgen.store import open_store

TASK = "TinyRun-mini"

READER = r"""
import hashlib, json, sys
import numpy as np
from typer.testing import CliRunner
from presa_cli.feedbackgen_app import app
from feedbackgen.store import open_store

def digest(path):
    d = open_store(path)
    h = hashlib.sha256()
    for name in ("observations", "next_observations", "actions", "segment_start", "pref_a", "pref_b",
                 "pref_label", "safety_label"):
        h.update(np.ascontiguousarray(getattr(d, name)).tobytes())
    h.update(np.ascontiguousarray(d.oracle.rewards).tobytes())
    return h.hexdigest()

path, rounds = sys.argv[1], int(sys.argv[2])
seen = set()
for _ in range(rounds):
    res = CliRunner().invoke(app, ["info", path, "--json"])
    assert res.exit_code == 0, res.output
    rec = json.loads(res.stdout)
    rec["metadata"].pop("created", None)
    seen.add((digest(path), hashlib.sha256(json.dumps(rec, sort_keys=True).encode()).hexdigest()))
print(json.dumps(sorted(seen)))
"""


def _sequential(path: Path, cli) -> list[list[str]]:
    proc = cli.python("-c", READER, path, "1")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    return json.loads(out)


def test_two_readers_and_a_writer_in_one_folder(tiny_task, tmp_path: Path, dsrl_factory, cli) -> None:
    folder = tmp_path / "stores"
    res = cli.fg("make", "--task", TASK, "--n-pairs", "200", "--n-safety", "150", "--seed", "1",
                 "--out", folder / "a.zarr")
    assert res.exit_code == 0, res.output
    src = dsrl_factory.write(tmp_path / "src" / "w.hdf5", episode_lengths=(60, 45, 52, 60) * 150,
                             obs_dim=32)
    expected = _sequential(folder / "a.zarr", cli)
    assert len(expected) == 1

    make = ["-m", "feedbackgen", "make", "--task", TASK, "--source", src, "--n-pairs", "1000", "--n-safety",
            "800", "--seed", "2", "--no-download"]
    writer = cli.python(*make, "--out", folder / "b.zarr")
    readers = [cli.python("-c", READER, folder / "a.zarr", "3") for _ in range(2)]
    t0 = time.monotonic()
    outs = [p.communicate(timeout=180) for p in (*readers, writer)]
    assert all(p.returncode == 0 for p in (*readers, writer)), [err[-800:] for _, err in outs]
    assert time.monotonic() - t0 < 180
    for out, _ in outs[:2]:
        assert json.loads(out) == expected  # every round of both readers saw the same store

    alone = cli.python(*make, "--out", tmp_path / "alone" / "b.zarr")
    _, err = alone.communicate(timeout=120)
    assert alone.returncode == 0, err
    a, b = open_store(folder / "b.zarr"), open_store(tmp_path / "alone" / "b.zarr")
    assert a.store_id == b.store_id
    for name in ("observations", "segment_start", "pref_label", "safety_label"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    assert sorted(p.name for p in folder.iterdir()) == ["a.zarr", "b.zarr"]
