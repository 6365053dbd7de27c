"""Time and peak memory of ``feedbackgen make`` on a DSRL-sized file, against reading it once.

Each measured step runs in its own process; its wall time and peak resident memory (``ru_maxrss``
from ``os.wait4``) are reported:

- ``read-all``: h5py reads every array of the file fully into memory, once (the naive loader;
  its peak is about the file's size);
- ``make``: ``feedbackgen make --task T --source FILE --noise 0.1 --seed 0 --out STORE``
  (the defaults: 10,000 pairs, 10,000 safety segments, H = 20);
- ``verify`` (with ``--verify``): ``feedbackgen verify STORE``.

Usage::

    python benchmarks/bench_make.py [--source FILE | --workdir DIR] [--task CarPush2] [--verify]

Without ``--source`` a synthetic file is written first (``make_synthetic_dsrl.py`` defaults:
2.2M transitions, obs 88).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
READ_ALL = """
import sys, h5py, numpy as np
with h5py.File(sys.argv[1], "r") as f:
    arrays = {k: f[k][...] for k in ("observations", "next_observations", "actions", "rewards", "costs",
                                     "terminals", "timeouts")}
print(sum(a.nbytes for a in arrays.values()))
"""


def run_measured(cmd: list[str]) -> dict:
    """Fork/exec ``cmd`` and collect its own rusage with ``os.wait4`` (peak RSS of that process)."""
    t0 = time.perf_counter()
    out_f = tempfile.TemporaryFile(mode="w+")
    err_f = tempfile.TemporaryFile(mode="w+")
    proc = subprocess.Popen(cmd, stdout=out_f, stderr=err_f, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    out_f.seek(0)
    err_f.seek(0)
    return {"wall_s": round(wall, 1), "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
            "user_s": round(usage.ru_utime, 1), "sys_s": round(usage.ru_stime, 1), "rc": proc.returncode,
            "stdout_tail": out_f.read()[-400:], "stderr_tail": err_f.read()[-400:]}


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", type=Path,
                    help="An existing DSRL-format file (default: write a synthetic one).")
    ap.add_argument("--workdir", type=Path,
                    help="Where the synthetic file and the store go (default: a tmp dir).")
    ap.add_argument("--task", default="CarPush2", help="Task whose constants (T_max, thresholds) to use.")
    ap.add_argument("--episodes", type=int, default=2200, help="Synthetic file: episodes of 1,000 steps.")
    ap.add_argument("--verify", action="store_true", help="Also time `feedbackgen verify` on the store.")
    ap.add_argument("--keep", action="store_true", help="Keep the work folder.")
    args = ap.parse_args()

    work = args.workdir or Path(tempfile.mkdtemp(prefix="fg-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    results = {}
    try:
        source = args.source
        if source is None:
            sys.path.insert(0, str(HERE))
            from make_synthetic_dsrl import write_synthetic

            t0 = time.perf_counter()
            source = write_synthetic(work, episodes=args.episodes)
            results["synthesize_s"] = round(time.perf_counter() - t0, 1)
        results["source"] = str(source)
        results["source_gib"] = round(source.stat().st_size / 2**30, 2)
        store = work / "bench.zarr"
        feedbackgen = [sys.executable, "-m", "feedbackgen"]
        steps = {
            "read-all": [sys.executable, "-c", READ_ALL, str(source)],
            "make": [*feedbackgen, "make", "--task", args.task, "--source", str(source), "--noise", "0.1",
                     "--seed", "0", "--out", str(store), "--overwrite", "--no-download"],
        }
        if args.verify:
            steps["verify"] = [*feedbackgen, "verify", str(store), "--source", str(source)]
        for name, cmd in steps.items():
            res = run_measured(cmd)
            results[name] = res
            print(f"{name:>9}: {res['wall_s']:7.1f} s wall  {res['peak_rss_mib']:8.1f} MiB peak RSS  "
                  f"(user {res['user_s']} s, sys {res['sys_s']} s, rc {res['rc']})", flush=True)
            if res["rc"] != 0:
                print(res["stderr_tail"], file=sys.stderr)
        if store.exists():
            results["store_gib"] = round(dir_size(store) / 2**30, 2)
        print(json.dumps({k: ({kk: vv for kk, vv in v.items() if not kk.endswith("_tail")}
                              if isinstance(v, dict) else v) for k, v in results.items()}, indent=1))
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
