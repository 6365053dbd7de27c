"""Faults: ``feedbackgen make`` and ``presa train`` killed with SIGKILL, and tampered stores.

- A killed ``make`` never leaves a store under the final name. It may leave its hidden temporary
  sibling ``.NAME.tmp-PID-XXXXXXXX`` (SIGKILL runs no cleanup); the next write to that name
  removes every such sibling whose process is gone (``feedbackgen.store.remove_stale_temporaries``),
  so leftovers never accumulate, and the rerun gives the same store as an uninterrupted run.
- A killed ``presa train`` continues with ``--resume`` from its last periodic checkpoint and ends
  with exactly the weights of an uninterrupted run.
- ``validate`` / ``verify`` exit non-zero on a flipped byte in a chunk, a deleted array or edited
  attributes.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

from feedbackgen.store import open_store, remove_stale_temporaries

TASK = "TinyRun-mini"


def _tmp_siblings(out: Path) -> list[Path]:
    return sorted(out.parent.glob(f".{out.name}.tmp-*")) if out.parent.exists() else []


@pytest.fixture
def big_source(tiny_task, tmp_path: Path, dsrl_factory) -> Path:
    """About 120k transitions × 48-dim observations (46 MB): `make` takes a second or two."""
    return dsrl_factory.write(tmp_path / "src" / "big.hdf5", episode_lengths=(60, 45, 52, 60) * 500,
                              obs_dim=48, seed=5)


def _make_cmd(source: Path, out: Path) -> list[str]:
    return ["-m", "feedbackgen", "make", "--task", TASK, "--source", str(source), "--n-pairs", "2000",
            "--n-safety", "2000", "--seed", "4", "--out", str(out), "--no-download"]


def _wait(proc: subprocess.Popen, timeout: float = 120) -> tuple[int, str]:
    _, err = proc.communicate(timeout=timeout)
    return proc.returncode, err


def test_killed_make_leaves_no_store_and_a_rerun_cleans_up(big_source: Path, tmp_path: Path, cli) -> None:
    rng = np.random.default_rng(7)
    ref = tmp_path / "ref" / "ref.zarr"
    t0 = time.perf_counter()
    rc, err = _wait(cli.python(*_make_cmd(big_source, ref)))
    duration = time.perf_counter() - t0
    assert rc == 0, err

    out = tmp_path / "stores" / "s.zarr"
    killed_pids = []
    # kill points: a random time over the whole run, two random times after the write started
    for when in ("any", "writing", "writing"):
        proc = cli.python(*_make_cmd(big_source, out))
        if when == "any":
            time.sleep(rng.uniform(0.05, 0.9) * duration)
        else:
            deadline = time.monotonic() + 60
            while not _tmp_siblings(out) and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.005)
            time.sleep(rng.uniform(0.0, 0.1))
        proc.send_signal(signal.SIGKILL)
        rc, _ = _wait(proc)
        if rc == 0:  # finished before the kill (a very fast machine): start over from no store
            shutil.rmtree(out)
            continue
        assert rc == -signal.SIGKILL
        killed_pids.append(proc.pid)
        if out.exists():  # killed after the rename (printing its summary): the store must be whole
            assert open_store(out, lazy=True).store_id == open_store(ref, lazy=True).store_id
            assert cli.fg("validate", out).exit_code == 0
            shutil.rmtree(out)
    assert killed_pids, "every make finished before its kill"
    leftovers = _tmp_siblings(out)
    assert all(int(p.name.split("-")[1]) in killed_pids for p in leftovers), leftovers

    rc, err = _wait(cli.python(*_make_cmd(big_source, out)))
    assert rc == 0, err
    assert _tmp_siblings(out) == [], "the rerun did not remove the killed runs' temporaries"
    assert sorted(p.name for p in out.parent.iterdir()) == ["s.zarr"]
    a, b = open_store(out, lazy=True), open_store(ref, lazy=True)
    assert a.store_id == b.store_id
    for name in ("observations", "segment_start", "pref_label", "safety_label"):
        assert np.array_equal(getattr(a, name)[...], getattr(b, name)[...]), name


def test_stale_temporaries_only_of_dead_processes_are_removed(tmp_path: Path) -> None:
    out = tmp_path / "x.zarr"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        names = {
            f".x.zarr.tmp-{dead.pid}-0123abcd": False,     # writer gone: removed
            f".x.zarr.tmp-{live.pid}-0123abcd": True,      # a concurrent writer: kept
            f".x.zarr.tmp-{os.getpid()}-0123abcd": True,   # this process: kept
            f".y.zarr.tmp-{dead.pid}-0123abcd": True,      # another store's: kept
            ".x.zarr.tmp-notapid-0123abcd": True,          # not our pattern: kept
            ".x.zarr.old-0123abcd": True,
        }
        for name in names:
            (tmp_path / name).mkdir()
            (tmp_path / name / "zarr.json").write_text("{}")
        removed = remove_stale_temporaries(out)
        assert [p.name for p in removed] == [f".x.zarr.tmp-{dead.pid}-0123abcd"]
        for name, kept in names.items():
            assert (tmp_path / name).exists() == kept, name
    finally:
        live.kill()
        live.wait()


# ---------------------------------------------------------------------------- presa train
@pytest.fixture
def train_store(tiny_task, tmp_path: Path, cli) -> Path:
    out = tmp_path / "stores" / "t.zarr"
    res = cli.fg("make", "--task", TASK, "--n-pairs", "150", "--n-safety", "100", "--seed", "2", "--out", out)
    assert res.exit_code == 0, res.output
    return out


def test_killed_train_resumes_to_the_uninterrupted_weights(train_store: Path, tmp_path: Path, cli) -> None:
    import torch

    sets = cli.set_args(*cli.tiny_train, "total_steps=120", "checkpoint_every=10")
    args = ["train", "--data", str(train_store), "--threshold", "10", "--preset", "quick", *sets,
            "--no-progress"]
    ref = tmp_path / "runs" / "ref"
    res = cli.presa(*args, "--out", ref)
    assert res.exit_code == 0, res.output

    run = tmp_path / "runs" / "killed"
    proc = cli.python("-m", "presa", *args, "--out", run)
    ckpts = run / "checkpoints"
    deadline = time.monotonic() + 120
    while not any(ckpts.glob("step_*.pt")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(np.random.default_rng(3).uniform(0.0, 0.2))
    proc.send_signal(signal.SIGKILL)
    rc, err = _wait(proc)
    assert rc == -signal.SIGKILL, f"the run ended before the kill (rc {rc}): {err[-500:]}"
    assert not (ckpts / "final.pt").exists()
    steps = sorted(ckpts.glob("step_*.pt"))
    assert steps, "killed before the first checkpoint"

    res = cli.presa("train", "--resume", run, "--no-progress")
    assert res.exit_code == 0, res.output
    assert "resumed from step" in res.stdout
    a = torch.load(ckpts / "final.pt", weights_only=True)
    b = torch.load(ref / "checkpoints" / "final.pt", weights_only=True)
    assert a["step"] == b["step"] == 120
    assert a["policy"].keys() == b["policy"].keys()
    for k in a["policy"]:
        assert torch.equal(a["policy"][k], b["policy"][k]), k
    assert a["nu"] == b["nu"] and a["zref"] == b["zref"]
    info = json.loads((run / "run.json").read_text())
    assert [r["checkpoint"] for r in info["resumes"]] == [steps[-1].name]


# ---------------------------------------------------------------------------- tampered stores
@pytest.fixture
def sound_store(tiny_store: Path, cli) -> Path:
    assert cli.fg("validate", tiny_store).exit_code == 0
    assert cli.fg("verify", tiny_store).exit_code == 0
    return tiny_store


def _chunk(store: Path, array: str) -> Path:
    files = sorted(p for p in (store / array / "c").rglob("*") if p.is_file())
    assert files, array
    return files[0]


def _flip_byte(path: Path, at: float = 0.5) -> None:
    b = bytearray(path.read_bytes())
    i = int(len(b) * at)
    b[i] ^= 0x55
    path.write_bytes(bytes(b))


def _tamper_chunk(store: Path) -> None:
    _flip_byte(_chunk(store, "transitions/observations"))


def _tamper_label_chunk(store: Path) -> None:
    _flip_byte(_chunk(store, "safety/label"), at=0.9)


def _delete_array(store: Path) -> None:
    shutil.rmtree(store / "preferences" / "b")


def _edit_seed(store: Path) -> None:
    meta = json.loads((store / "zarr.json").read_text())
    meta["attributes"]["metadata"]["seed"] += 1
    (store / "zarr.json").write_text(json.dumps(meta))


def _edit_quality(store: Path) -> None:
    meta = json.loads((store / "zarr.json").read_text())
    meta["attributes"]["quality"]["preference_agreement"] = 1.0
    (store / "zarr.json").write_text(json.dumps(meta))


def _edit_array_dtype(store: Path) -> None:
    meta_path = store / "safety" / "label" / "zarr.json"
    meta = json.loads(meta_path.read_text())
    meta["data_type"] = "int16"
    meta_path.write_text(json.dumps(meta))


def _relabel(store: Path) -> None:
    label = zarr.open_group(str(store), mode="r+")["preferences/label"]
    label[0] = 1.0 - label[0]


@pytest.mark.parametrize("tamper", [_tamper_chunk, _tamper_label_chunk, _delete_array, _edit_seed,
                                    _edit_quality, _edit_array_dtype, _relabel],
                         ids=lambda f: f.__name__.strip("_"))
def test_tampered_store_is_caught(tamper, sound_store: Path, tmp_path: Path, cli) -> None:
    bad = tmp_path / "tampered.zarr"
    shutil.copytree(sound_store, bad)
    tamper(bad)
    results = {cmd: cli.fg(cmd, bad) for cmd in ("validate", "verify")}
    assert any(r.exit_code != 0 for r in results.values()), {k: r.output for k, r in results.items()}
    for cmd, r in results.items():
        assert r.exit_code in (0, 1) and "Traceback" not in r.output, (cmd, r.output)
        if r.exit_code:
            assert r.stderr.strip().splitlines()[-1].startswith("error: "), (cmd, r.stderr)
