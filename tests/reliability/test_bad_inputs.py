"""Bad input to every command: one red ``error:`` line on stderr, exit code 1, no traceback, and
nothing written or changed (every path under the test's tmp folder keeps its size and mtime).

Decisions recorded here (the code owners' behaviour):

- A source whose arrays are *numeric* but not float32 (e.g. int observations) is accepted and
  converted; a non-numeric array, a wrong rank, or non-0/1 end flags is an error.
- Segments are sampled with replacement (``docs/data.md`` of the specification), so a label budget larger than
  the number of distinct windows is valid; the limits are ``--n-pairs >= 1``, ``--n-safety >= 0``,
  ``--n-safety <= 2 * --n-pairs`` for shared safety segments, at most 10^9 each, and a budget that
  does not fit in memory is a one-line error, not a MemoryError traceback.
- A threshold at which every safety label is safe (or every one unsafe) still gives a valid store
  (the other thresholds may be fine; preference-only methods can train): ``make`` exits 0 with a
  yellow ``warning:`` line; ``presa train`` with an algorithm that separates safe from unsafe
  segments (presa, safety_only, two_stage) refuses it with one line.
- Values the command-line parser itself rejects (not a number, below an option's ``min``) get
  click's usage message and exit code 2; they are not covered here.
- Flipped bytes inside an HDF5 file's raw float data cannot be detected (HDF5 keeps no checksum
  of raw data and the values stay finite); damage to its structure can, and is tested.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

TASK = "TinyRun-mini"
N = 453  # transitions of the default tiny file
SMALL = ("--n-pairs", "40", "--n-safety", "30")


@pytest.fixture
def good(tiny_task, tmp_path: Path, dsrl_factory) -> Path:
    return dsrl_factory.write(tmp_path / "src" / "good.hdf5")


@pytest.fixture
def store(good: Path, tmp_path: Path, cli) -> Path:
    out = tmp_path / "stores" / "s.zarr"
    res = cli.fg("make", "--task", TASK, "--source", good, *SMALL, "--seed", "1", "--out", out)
    assert res.exit_code == 0, res.output
    return out


def _nan_at(shape: tuple[int, ...], row: int, value: float = np.nan) -> np.ndarray:
    a = np.zeros(shape, np.float32)
    a[row] = value
    return a


# name -> (write kwargs, fragments of the expected message)
DEFECTS = {
    "nan rewards": ({"overrides": {"rewards": _nan_at((N,), 7)}}, ("'rewards'", "NaN or inf", "row 7")),
    "inf costs": ({"overrides": {"costs": _nan_at((N,), N - 1, np.inf)}}, ("'costs'", "NaN or inf")),
    "nan observations": ({"overrides": {"observations": _nan_at((N, 4), 5)}}, ("'observations'", "row 5")),
    "inf next_observations": ({"overrides": {"next_observations": _nan_at((N, 4), 9, -np.inf)}},
                              ("'next_observations'", "NaN or inf")),
    "nan actions": ({"overrides": {"actions": _nan_at((N, 2), 0)}}, ("'actions'", "NaN or inf")),
    "string rewards": ({"overrides": {"rewards": np.array([b"x"] * N)}}, ("'rewards'", "numeric")),
    "1-d observations": ({"overrides": {"observations": np.zeros(N, np.float32)}}, ("'observations'", "2-D")),
    "2-d costs": ({"overrides": {"costs": np.zeros((N, 2), np.float32)}}, ("'costs'", "1-D")),
    "non-boolean flags": ({"overrides": {"terminals": np.full(N, 0.5, np.float32)}}, ("'terminals'", "0/1")),
    "mismatched lengths": ({"overrides": {"costs": np.zeros(N - 3, np.float32)}},
                           ("different lengths", "costs=450")),
    "next_observations shape": ({"overrides": {"next_observations": np.zeros((N, 5), np.float32)}},
                                ("'next_observations' has shape",)),
    "missing key": ({"drop": ("timeouts",)}, ("no dataset 'timeouts'",)),
    "empty file": ({"episode_lengths": ()}, ("no transitions",)),
    "no episode as long as H": ({"episode_lengths": (10, 19, 8, 15)}, ("no episode has at least 20 steps",
                                                                       "at most 19")),
}


@pytest.mark.parametrize("defect", list(DEFECTS))
def test_make_refuses_damaged_source(defect: str, tiny_task, tmp_path: Path, dsrl_factory, cli) -> None:
    kwargs, fragments = DEFECTS[defect]
    src = dsrl_factory.write(tmp_path / "src" / "bad.hdf5", **kwargs)
    before = cli.snapshot(tmp_path)
    res = cli.fg("make", "--task", TASK, "--source", src, *SMALL, "--out", tmp_path / "stores" / "x.zarr")
    cli.one_error_line(res, *fragments)
    assert cli.snapshot(tmp_path) == before


def _garbage(b: bytes) -> bytes:
    return np.random.default_rng(0).integers(0, 256, len(b), dtype=np.uint8).tobytes()


def _truncated(b: bytes) -> bytes:
    return b[: len(b) // 2]


def _zeroed_superblock(b: bytes) -> bytes:
    return bytes(64) + b[64:]


def _zeroed_metadata(b: bytes) -> bytes:
    # the root group's object header and B-tree live in the first KiB after the superblock
    return b[:96] + bytes(1024) + b[96 + 1024:]


@pytest.mark.parametrize("damage", [_garbage, _truncated, _zeroed_superblock, _zeroed_metadata],
                         ids=lambda f: f.__name__.strip("_"))
def test_make_refuses_corrupt_or_truncated_hdf5(damage, good: Path, tmp_path: Path, cli) -> None:
    bad = tmp_path / "src" / "bad.hdf5"
    bad.write_bytes(damage(good.read_bytes()))
    before = cli.snapshot(tmp_path)
    res = cli.fg("make", "--task", TASK, "--source", bad, *SMALL, "--out", tmp_path / "stores" / "x.zarr")
    line = cli.one_error_line(res, str(bad))
    assert "re-download" in line or "DSRL format" in line or "no dataset" in line
    assert cli.snapshot(tmp_path) == before


def test_make_refuses_a_file_whose_name_contradicts_its_episode_count(good: Path, tmp_path: Path,
                                                                       cli) -> None:
    named = tmp_path / "src" / "SafetyTinyRun-v0-60-99.hdf5"  # DSRL-style name: 99 trajectories
    shutil.copy(good, named)
    before = cli.snapshot(tmp_path)
    res = cli.fg("make", "--task", TASK, "--source", named, *SMALL, "--out", tmp_path / "x.zarr")
    cli.one_error_line(res, "99 trajectories", "gives 10")
    assert cli.snapshot(tmp_path) == before


@pytest.mark.parametrize("args,fragments", [
    (("--task", "NoSuchTask"), ("unknown task 'NoSuchTask'",)),
    (("--n-pairs", "0"), ("--n-pairs", ">= 1")),
    (("--n-pairs", "-3"), ("--n-pairs", ">= 1")),
    (("--n-safety", "-1"), ("--n-safety", ">= 0")),
    (("--n-pairs", "10", "--n-safety", "21"), ("--n-safety 21 exceeds the 20 pair segments",)),
    (("--n-pairs", str(10**12)), ("at most 1,000,000,000",)),
    (("--noise", "1.5"), ("--noise", "probability")),
    (("--teacher", "wizard"), ("wizard",)),
    (("--segment-length", "0"), ("segment length",)),
    (("--safety-noise-model", "gauss"), ("unknown safety noise model",)),
])
def test_make_refuses_bad_parameters(args, fragments, good: Path, tmp_path: Path, cli) -> None:
    base = {"--task": TASK, "--n-pairs": "40", "--n-safety": "30"}
    pairs = dict(zip(args[::2], args[1::2], strict=True))
    merged = [x for k, v in {**base, **pairs}.items() for x in (k, v)]
    before = cli.snapshot(tmp_path)
    res = cli.fg("make", *merged, "--source", good, "--out", tmp_path / "stores" / "x.zarr")
    cli.one_error_line(res, *fragments)
    assert cli.snapshot(tmp_path) == before


def test_make_budget_beyond_memory_is_one_line(good: Path, tmp_path: Path, cli) -> None:
    """2·10^9 segment draws (16 GB of indices) in a child limited to 4 GB of address space: the
    MemoryError becomes one line (the limit keeps the test from touching the machine's memory)."""
    import resource

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))

    before = cli.snapshot(tmp_path)
    proc = cli.python("-m", "feedbackgen", "make", "--task", TASK, "--source", good, "--n-pairs", str(10**9),
                      "--n-safety", "0", "--out", tmp_path / "stores" / "x.zarr", preexec_fn=limit)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1 and "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: not enough memory"), err
    assert "2000000000 segments" in lines[0] and "--n-pairs" in lines[0]
    assert cli.snapshot(tmp_path) == before


def test_make_more_pairs_than_distinct_windows_is_valid(good: Path, tmp_path: Path, cli) -> None:
    """Sampling is with replacement: 400 segments from 270 distinct windows of the tiny file is fine."""
    out = tmp_path / "stores" / "many.zarr"
    res = cli.fg("make", "--task", TASK, "--source", good, "--n-pairs", "200", "--n-safety", "0",
                 "--out", out)
    assert res.exit_code == 0, res.output
    assert json.loads(cli.fg("info", out, "--json").stdout)["counts"]["segments"] == 400


def test_make_never_replaces_an_existing_store(store: Path, good: Path, tmp_path: Path, cli) -> None:
    before = cli.snapshot(tmp_path)
    res = cli.fg("make", "--task", TASK, "--source", good, *SMALL, "--seed", "2", "--out", store)
    cli.one_error_line(res, "already exists", "--overwrite")
    res = cli.fg("make", "--task", TASK, "--source", good, *SMALL, "--out", tmp_path / "s.zip")
    cli.one_error_line(res, "publish")
    assert cli.snapshot(tmp_path) == before


@pytest.mark.parametrize("cost,kind", [(0.0, "safe"), (1.0, "unsafe")])
def test_one_class_threshold_warns_in_make_and_stops_training(cost: float, kind: str, tiny_task,
                                                              tmp_path: Path, dsrl_factory, cli) -> None:
    src = dsrl_factory.write(tmp_path / "src" / f"{kind}.hdf5",
                             overrides={"costs": np.full(N, cost, np.float32)})
    out = tmp_path / "stores" / f"{kind}.zarr"
    res = cli.fg("make", "--task", TASK, "--source", src, *SMALL, "--noise", "0", "--out", out)
    assert res.exit_code == 0, res.output
    warnings = [line for line in res.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 3 and all(f"every safety label is {kind}" in w for w in warnings), res.stderr
    before = cli.snapshot(tmp_path)
    for algo in ("presa", "safety_only", "two_stage"):
        res = cli.presa("train", "--data", out, "--threshold", "10", "--algo", algo, "--preset", "quick",
                        *cli.set_args(*cli.tiny_train_for(algo)), "--out", tmp_path / "runs" / algo,
                        "--no-progress")
        # 30 safety labels, 3 of them in the default 10 % validation split: training sees 27
        cli.one_error_line(res, f"{algo}: all 27 safety labels at threshold 10 are {kind}", "needs both")
    assert cli.snapshot(tmp_path) == before
    # a method that reads no safety labels still trains on it
    res = cli.presa("train", "--data", out, "--threshold", "10", "--algo", "cpl", "--preset", "quick",
                    *cli.set_args(*cli.tiny_train_for("cpl"), "total_steps=25"),
                    "--out", tmp_path / "runs" / "cpl", "--no-progress")
    assert res.exit_code == 0, res.output


def test_mixed_labels_make_no_warning(store: Path, good: Path, tmp_path: Path, cli) -> None:
    res = cli.fg("make", "--task", TASK, "--source", good, *SMALL, "--out", tmp_path / "m.zarr")
    assert res.exit_code == 0 and "warning" not in res.stderr, res.stderr


# ---------------------------------------------------------------------------- broken stores
def _schema_v3(store: Path, dest: Path) -> Path:  # the newest this toolkit reads is 2
    shutil.copytree(store, dest)
    meta = json.loads((dest / "zarr.json").read_text())
    meta["attributes"]["schema_version"] = 3
    (dest / "zarr.json").write_text(json.dumps(meta))
    return dest


def _bad_json(store: Path, dest: Path) -> Path:
    shutil.copytree(store, dest)
    (dest / "zarr.json").write_text('{"zarr_format": 3, "node_')  # cut off mid-write
    return dest


def _not_a_store(store: Path, dest: Path) -> Path:
    dest.mkdir()
    (dest / "notes.txt").write_text("hello")
    return dest


def _missing(store: Path, dest: Path) -> Path:
    return dest


def _missing_array(store: Path, dest: Path) -> Path:
    shutil.copytree(store, dest)
    shutil.rmtree(dest / "safety" / "label")
    return dest


BROKEN = {"missing": (_missing, "does not exist"), "not a store": (_not_a_store, "not a feedback store"),
          "schema v3": (_schema_v3, "schema version 3"),
          "truncated zarr.json": (_bad_json, "not a feedback store"),
          "missing array": (_missing_array, "missing array 'safety/label'")}


def _store_commands(bad: Path, out: Path) -> dict[str, tuple[str, ...]]:
    return {
        "info": ("info", str(bad)),
        "info --json": ("info", str(bad), "--json"),
        "verify": ("verify", str(bad)),
        "strip": ("strip", str(bad), "--out", str(out / "stripped.zarr")),
        "migrate": ("migrate", str(bad)),
        "migrate --out": ("migrate", str(bad), "--out", str(out / "migrated.zarr")),
        "publish": ("publish", str(bad), "--out", str(out / "release")),
        "plot": ("plot", str(bad), "--out", str(out / "plot.png")),
        "import-labels": ("import-labels", str(bad), "--from", str(out / "labels.csv"), "--out",
                          str(out / "labelled.zarr")),
        "annotate": ("annotate", str(bad)),
    }


@pytest.mark.parametrize("broken", list(BROKEN))
def test_every_store_command_refuses_a_broken_store(broken: str, store: Path, tmp_path: Path, cli) -> None:
    make_bad, fragment = BROKEN[broken]
    bad = make_bad(store, tmp_path / "bad.zarr")
    out = tmp_path / "out"
    before = cli.snapshot(tmp_path)
    for name, args in _store_commands(bad, out).items():
        res = cli.fg(*args)
        line = cli.one_error_line(res)
        assert fragment in line, (name, line)
    validate = cli.fg("validate", bad)
    assert validate.exit_code == 1 and "Traceback" not in validate.output
    assert validate.stderr.strip().splitlines()[-1].startswith("error: ")
    res = cli.presa("train", "--data", bad, "--threshold", "10", "--preset", "quick", "--out", out / "run",
                    "--no-progress")
    assert fragment in cli.one_error_line(res)
    assert cli.snapshot(tmp_path) == before


# ---------------------------------------------------------------------------- presa
def test_train_bad_threshold_and_resume_targets(store: Path, tmp_path: Path, cli) -> None:
    runs = tmp_path / "runs"
    before = cli.snapshot(tmp_path)
    common = ("--preset", "quick", "--no-progress")
    cli.one_error_line(cli.presa("train", "--data", store, "--threshold", "7", "--out", runs / "a", *common),
                       "threshold 7 is not in the store", "5, 10, 20")
    cli.one_error_line(cli.presa("train", "--data", store, "--threshold", "10", "--algo", "nope",
                                 "--out", runs / "b", *common), "unknown algorithm 'nope'")
    cli.one_error_line(cli.presa("train", "--data", store, "--threshold", "10", "--set", "lr=-1",
                                 "--out", runs / "c", *common))
    cli.one_error_line(cli.presa("train", "--resume", tmp_path / "stores", "--no-progress"),
                       "not a presa run directory")
    assert cli.snapshot(tmp_path) == before


@pytest.fixture
def tiny_run(store: Path, tmp_path: Path, cli) -> Path:
    run = tmp_path / "runs" / "tiny"
    res = cli.presa("train", "--data", store, "--threshold", "10", "--algo", "bc_all", "--preset", "quick",
                    *cli.set_args(*cli.tiny_train_for("bc_all"), "total_steps=25"), "--out", run,
                    "--no-progress")
    assert res.exit_code == 0, res.output
    return run


def test_eval_refuses_unknown_task_and_missing_targets(tiny_run: Path, tmp_path: Path, cli) -> None:
    before = cli.snapshot(tmp_path)
    cli.one_error_line(cli.presa("eval", tiny_run, "--task", "NoSuchTask", "--episodes", "1"),
                       "unknown task 'NoSuchTask'")
    cli.one_error_line(cli.presa("eval", tmp_path / "nope"), "does not exist")
    broken = tiny_run / "checkpoints" / "final.pt"
    cli.one_error_line(cli.presa("eval", tmp_path / "stores"), "no checkpoints/final.pt")
    assert cli.snapshot(tmp_path) == before
    broken.write_bytes(broken.read_bytes()[:100])  # a truncated checkpoint
    before = cli.snapshot(tmp_path)
    cli.one_error_line(cli.presa("eval", tiny_run, "--episodes", "1", "--workers", "1"), "final.pt")
    assert cli.snapshot(tmp_path) == before


def test_eval_checkpoint_of_another_task_is_refused(tiny_run: Path, tmp_path: Path, cli) -> None:
    """The tiny store has 4-dim observations; BallRun's simulator gives more: a one-line refusal."""
    pytest.importorskip("bullet_safety_gym")
    before = cli.snapshot(tmp_path)
    res = cli.presa("eval", tiny_run, "--task", "BallRun", "--episodes", "1", "--workers", "1")
    cli.one_error_line(res, "expects 4-dim observations", "BallRun")
    assert cli.snapshot(tmp_path) == before


def test_report_and_sweep_refuse_bad_targets(tmp_path: Path, cli) -> None:
    (tmp_path / "empty").mkdir()
    before = cli.snapshot(tmp_path)
    cli.one_error_line(cli.presa("report", tmp_path / "nope", "--out", tmp_path / "rep"), "does not exist")
    cli.one_error_line(cli.presa("report", tmp_path / "empty", "--out", tmp_path / "rep"), "no evaluations")
    assert cli.snapshot(tmp_path) == before
    res = cli.presa("sweep", "--out", tmp_path / "sw", "--store", tmp_path / "none.zarr",
                    "--methods", "presa")
    cli.one_error_line(res, "does not exist")
    res = cli.presa("sweep", "--out", tmp_path / "sw", "--task", "NoSuchTask", "--methods", "presa")
    cli.one_error_line(res, "unknown task")
    assert cli.snapshot(tmp_path) == before  # a refused grid leaves no output folder behind


def test_collect_and_plot_refuse_unknown_tasks(tmp_path: Path, cli) -> None:
    before = cli.snapshot(tmp_path)
    cli.one_error_line(cli.fg("collect", "--task", "NoSuchTask", "--out", tmp_path / "c", "--episodes", "1"),
                       "unknown task")
    cli.one_error_line(cli.fg("plot", "--task", "NoSuchTask", "--out", tmp_path / "p.png"), "unknown task")
    cli.one_error_line(cli.fg("collect", "--task", "BallRun", "--out", tmp_path / "c", "--episodes", "1",
                              "--policy", "bogus:x"), "bad policy")
    assert cli.snapshot(tmp_path) == before
