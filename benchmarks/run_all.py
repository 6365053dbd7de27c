"""Run the three benchmarks (make, train, eval) and print one table with the machine they ran on.

Each benchmark runs as its own process (``benchmarks/bench_make.py``, ``bench_train.py``,
``bench_eval.py``); its full output is printed first, then a summary table of the headline numbers
with the machine description (CPU model from ``/proc/cpuinfo``, cores, memory, load average,
torch/numpy versions). Do not run it while other heavy work shares the machine: the load average
is printed so a disturbed run can be recognised.

Usage::

    .venv/bin/python benchmarks/run_all.py                       # 1M-transition make, CPU train, eval
    .venv/bin/python benchmarks/run_all.py --make-episodes 4400  # the 4.4M-transition size
    .venv/bin/python benchmarks/run_all.py --only make --make-source FILE.hdf5
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHES = ("make", "train", "eval")


def machine() -> dict[str, str]:
    """CPU model, usable cores, memory, load average, and library versions."""
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "?"
    try:
        kb = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))
        mem = f"{kb / 2**20:.1f} GiB"
    except (OSError, AttributeError):
        pass
    versions = subprocess.run(
        [sys.executable, "-c", "import numpy, torch; print(numpy.__version__, torch.__version__, "
                               "torch.cuda.get_device_name() if torch.cuda.is_available() else '-')"],
        capture_output=True, text=True).stdout.split(maxsplit=2)
    numpy_v, torch_v, gpu = (versions + ["?", "?", "?"])[:3]
    return {"cpu": cpu, "cores": str(len(os.sched_getaffinity(0))), "memory": mem,
            "load average (1 min)": f"{os.getloadavg()[0]:.2f}", "gpu": gpu.strip(),
            "python": platform.python_version(), "numpy": numpy_v, "torch": torch_v}


def run(cmd: list[str]) -> tuple[str, float, int]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=HERE.parent)
    out = proc.stdout + (f"\n[stderr]\n{proc.stderr[-2000:]}" if proc.returncode else "")
    return out, time.perf_counter() - t0, proc.returncode


def summarise_make(out: str) -> list[tuple[str, str]]:
    start = out.find("{")
    if start < 0:
        return [("make", "no result (see output above)")]
    rec = json.loads(out[start:])
    rows = [("source", f"{rec.get('source_gib')} GiB")]
    read, make = rec.get("read-all", {}), rec.get("make", {})
    steps = (("h5py read-all (I/O floor)", read), ("feedbackgen make", make), ("verify", rec.get("verify")))
    for name, r in steps:
        if r:
            rows.append((name, f"{r['wall_s']} s, {r['peak_rss_mib']} MiB peak RSS"))
    if read and make and read["wall_s"]:
        mem = make["peak_rss_mib"] / 1024 / rec["source_gib"]
        rows.append(("make / floor", f"{make['wall_s'] / read['wall_s']:.1f}× time, "
                                     f"{mem:.2f}× source size in memory"))
    return rows


def summarise_train(out: str) -> list[tuple[str, str]]:
    rows = []
    device = threads = ""
    preset = False
    for line in out.splitlines():
        if line.startswith("== device"):
            device = line[len("== device "):].split(":", 1)[0]
        elif line.startswith("-- threads"):
            threads = line.split()[2].rstrip(";")
        m = re.match(r"((?:plain loop|trainer)\b.*?)\s{2,}([\d.]+)\s+([\d.]+)×\s+([\d.]+)\s+([\d.]+)×", line)
        if m and threads:
            rows.append((f"{m.group(1).strip()} [{device}, {threads} thr]",
                         f"{m.group(2)} ms/step, {m.group(3)}× the plain loop (CPU time {m.group(5)}×)"))
        preset = line.startswith("full Bullet preset") or (preset and line.startswith("  "))
        if preset and line.startswith("  "):
            label, _, rest = line.strip().partition("  ")
            rows.append((f"full preset, {label} [{device}, {threads} thr]", rest.strip()))
    return rows or [("train", "no result (see output above)")]


def summarise_eval(out: str) -> list[tuple[str, str]]:
    rows = []
    for line in out.splitlines():
        m = re.match(r"((?:raw|evaluator)\b.*?)\s{2,}(\d+)\s+([\d.]+)\s+(\d+)$", line.strip())
        if m:
            rows.append((m.group(1), f"{m.group(2)} env steps/s ({m.group(4)} steps in {m.group(3)} s)"))
    return rows or [("eval", "no result (see output above)")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=BENCHES, action="append", help="Run only these (repeatable).")
    ap.add_argument("--make-source", type=Path, help="DSRL file for the make benchmark (default: synthetic).")
    ap.add_argument("--make-episodes", type=int, default=1000,
                    help="Synthetic make source: episodes of 1,000 steps (1000 = 1M transitions, obs 88).")
    ap.add_argument("--train-device", default="cpu", help="cpu or cuda (bench_train.py --device).")
    ap.add_argument("--eval-episodes", type=int, default=20)
    args = ap.parse_args()
    which = args.only or list(BENCHES)
    py = sys.executable
    summary: list[tuple[str, str, str]] = []
    with tempfile.TemporaryDirectory(prefix="bench-all-") as tmp:
        cmds = {
            "make": [py, str(HERE / "bench_make.py"), "--task", "CarPush2"]
                    + (["--source", str(args.make_source)] if args.make_source
                       else ["--workdir", tmp, "--episodes", str(args.make_episodes)]),
            "train": [py, str(HERE / "bench_train.py"), "--device", args.train_device],
            "eval": [py, str(HERE / "bench_eval.py"), "--episodes", str(args.eval_episodes)],
        }
        parse = {"make": summarise_make, "train": summarise_train, "eval": summarise_eval}
        for name in which:
            print(f"\n######## {name}: {' '.join(cmds[name][1:])}", flush=True)
            out, wall, rc = run(cmds[name])
            print(out.rstrip(), flush=True)
            rows = parse[name](out) if rc == 0 else [(name, f"failed (exit {rc})")]
            summary += [(name, k, v) for k, v in rows]
            summary.append((name, "benchmark wall time", f"{wall:.0f} s"))
    info = machine()
    print("\n######## summary")
    print("machine: " + "; ".join(f"{k} {v}" for k, v in info.items()))
    width = max(len(k) for _, k, _ in summary) if summary else 10
    print(f"{'bench':<6} {'what':<{width}}  result")
    for bench, k, v in summary:
        print(f"{bench:<6} {k:<{width}}  {v}")


if __name__ == "__main__":
    main()
