"""Aggregate many evaluated runs into the field's tables and plots.

A report reads the evaluation JSONs written by :func:`presa.evaluate.write_eval_json`
(``RUN_DIR/eval/*.json``) under any number of folders, keeps **one evaluation per run** and
aggregates over runs (tasks × thresholds × seeds × methods):

- per task, method and threshold: mean ± std over the runs (seeds) of normalised reward and cost;
- per task and method: mean ± std over all runs (thresholds × seeds) — the field's headline table;
- per suite and method: the mean of the per-task means, ± their std across tasks (how the
  published ``AVERAGE`` rows are formed).

Standard deviations are population ones (ddof 0). A cell is **safe** when its mean normalised
cost is ≤ 1; per task (and per suite average) the safe row with the highest mean normalised reward
is the **best safe** one — among every row shown, including the published reference methods when
they are asked for.

Which evaluation stands for a run (when a run folder holds several): the final checkpoint's, in
the task the run was trained on, with the most episodes; ties go to the most recently written.

Method names come from the evaluation record (the checkpoint's algorithm), else from the run's
``run.json`` (``method`` or ``algo``), else ``unknown``.

Outputs (:func:`write_report`): ``report.md``, ``results.csv`` (all aggregation levels),
``runs.csv`` (one row per run), ``summary.csv`` (the study's headline columns, :func:`summary_csv`),
``reward_cost.png`` and ``training_curves.png``.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from feedbackgen._io import atomic_path, atomic_write_text
from feedbackgen.errors import FeedbackgenError
from presa.evaluate import read_eval_json
from presa.normalize import is_safe
from presa.plots import read_metrics

AVERAGE = "AVERAGE"
"""The task name of a per-suite average row (as in the reference CSV)."""

SUITE_ORDER = ("bullet", "safety_gymnasium", "metadrive")
SUITE_TITLES = {"bullet": "BulletGym", "safety_gymnasium": "Safety-Gymnasium", "metadrive": "MetaDrive"}


# ------------------------------------------------------------------------------------- records


@dataclass(frozen=True)
class RunResult:
    """One run's evaluation as the report sees it.

    Attributes:
        suite, task, method: where it belongs.
        threshold: the cost threshold the run was trained for.
        train_seed: the run's training seed (None when unknown).
        normalized_reward, normalized_cost: means over the evaluation's episodes.
        safe: ``normalized_cost <= 1``.
        episodes: number of evaluation episodes.
        eval_seed: the evaluation seed.
        eval_path: the evaluation JSON.
        run_dir: the run folder (None for a loose evaluation file).
    """

    suite: str
    task: str
    method: str
    threshold: float
    train_seed: int | None
    normalized_reward: float
    normalized_cost: float
    safe: bool
    episodes: int
    eval_seed: int
    eval_path: str
    run_dir: str | None


@dataclass(frozen=True)
class Cell:
    """An aggregated row: mean ± std of normalised reward and cost over ``n`` runs (or tasks).

    Attributes:
        suite, task, method: the group (``task == AVERAGE`` for a suite average).
        threshold: the threshold for per-threshold rows, None when aggregated over thresholds.
        n: runs aggregated (tasks, for suite averages).
        reward_mean, reward_std, cost_mean, cost_std: the statistics.
        source: ``ours`` or ``reference`` (the published numbers).
        safe: ``cost_mean <= 1``.
        best: whether this is the best safe row of its task (or suite average).
    """

    suite: str
    task: str
    method: str
    threshold: float | None
    n: int
    reward_mean: float
    reward_std: float
    cost_mean: float
    cost_std: float
    source: str = "ours"
    safe: bool = False
    best: bool = False


@dataclass
class Report:
    """Everything a report shows.

    Attributes:
        runs: the per-run results aggregated.
        by_threshold: task × method × threshold cells (ours).
        by_task: task × method cells: ours, then the reference methods when asked for.
        by_suite: suite × method averages (``task == AVERAGE``), same order.
        methods: our method names, in order of appearance.
        reference_methods: the published methods shown (empty without references).
        skipped: evaluation files that were not used, with the reason.
    """

    runs: list[RunResult]
    by_threshold: list[Cell]
    by_task: list[Cell]
    by_suite: list[Cell]
    methods: list[str]
    reference_methods: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def tasks(self) -> list[tuple[str, str]]:
        """(suite, task) pairs with our results, in suite then name order."""
        seen = {(c.suite, c.task) for c in self.by_task if c.source == "ours"}
        return sorted(seen, key=lambda st: (_suite_rank(st[0]), st[1]))

    def suites(self) -> list[str]:
        """Suites with our results, in the canonical order."""
        return sorted({s for s, _ in self.tasks()}, key=_suite_rank)

    def all_methods(self) -> list[str]:
        """Our methods followed by the reference methods."""
        return [*self.methods, *self.reference_methods]

    def cell(self, suite: str, task: str, method: str) -> Cell | None:
        """The task-level (or, with ``task == AVERAGE``, suite-level) cell of a method, if any."""
        rows = self.by_suite if task == AVERAGE else self.by_task
        for c in rows:
            if c.suite == suite and c.task == task and c.method == method:
                return c
        return None


def _suite_rank(suite: str) -> tuple[int, str]:
    return (SUITE_ORDER.index(suite) if suite in SUITE_ORDER else len(SUITE_ORDER), suite)


# ----------------------------------------------------------------------------------- collection


def find_eval_files(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Every ``eval/*.json`` under the given folders (or the files themselves), sorted, unique.

    Raises:
        FeedbackgenError: a path does not exist.
    """
    found: set[Path] = set()
    for raw in paths:
        p = Path(raw)
        if p.is_file():
            found.add(p.resolve())
        elif p.is_dir():
            found.update(f.resolve() for f in p.rglob("*.json") if f.parent.name == "eval")
        else:
            raise FeedbackgenError(f"{p} does not exist; pass run directories or folders of runs")
    return sorted(found)


def _run_method(record: dict, run_dir: Path | None) -> str:
    if record.get("method"):
        return str(record["method"])
    if run_dir is not None and (run_dir / "run.json").is_file():
        try:
            info = json.loads((run_dir / "run.json").read_text())
        except (OSError, ValueError):
            info = {}
        for key in ("method", "algo"):
            if isinstance(info, dict) and info.get(key):
                return str(info[key])
    return "unknown"


def _preference(path: Path, record: dict) -> tuple:
    ckpt = Path(record["checkpoint"]).stem if record.get("checkpoint") else "final"
    trained_task = record.get("trained_task") or record.get("task")
    return (ckpt == "final", record.get("task") == trained_task, int(record.get("episodes", 0)),
            path.stat().st_mtime_ns, str(path))


def collect_results(paths: Iterable[str | os.PathLike[str]]) -> tuple[list[RunResult], list[tuple[str, str]]]:
    """Read the evaluations under ``paths`` and keep one per run (see the module docstring).

    Returns:
        ``(runs, skipped)``: the chosen results, and ``(file, reason)`` for every file not used.

    Raises:
        FeedbackgenError: a path does not exist, or no evaluation was found at all.
    """
    files = find_eval_files(paths)
    skipped: list[tuple[str, str]] = []
    by_run: dict[str, list[tuple[tuple, Path, dict]]] = defaultdict(list)
    for f in files:
        try:
            record = read_eval_json(f)
        except FeedbackgenError as exc:
            skipped.append((str(f), str(exc)))
            continue
        run_dir = f.parent.parent if f.parent.name == "eval" else None
        key = str(run_dir) if run_dir is not None else str(f)
        by_run[key].append((_preference(f, record), f, record))
    if not by_run:
        names = ", ".join(str(p) for p in paths)
        raise FeedbackgenError(f"no evaluations found under {names}; run `presa eval RUN_DIR` first")
    runs: list[RunResult] = []
    for _key, cands in sorted(by_run.items()):
        cands.sort(key=lambda c: c[0], reverse=True)
        _, f, rec = cands[0]
        skipped.extend((str(other), f"another evaluation of the same run was used ({f.name})")
                       for _, other, _ in cands[1:])
        run_dir = f.parent.parent if f.parent.name == "eval" else None
        try:
            runs.append(RunResult(
                suite=str(rec["suite"]), task=str(rec["task"]), method=_run_method(rec, run_dir),
                threshold=float(rec["threshold"]),
                train_seed=int(rec["train_seed"]) if rec.get("train_seed") is not None else None,
                normalized_reward=_num(rec["normalized_reward"]),
                normalized_cost=_num(rec["normalized_cost"]),
                safe=bool(rec["safe"]), episodes=int(rec["episodes"]), eval_seed=int(rec["seed"]),
                eval_path=str(f), run_dir=str(run_dir) if run_dir is not None else None))
        except (KeyError, TypeError, ValueError) as exc:
            skipped.append((str(f), f"incomplete evaluation record ({exc!r})"))
    if not runs:
        raise FeedbackgenError("no usable evaluations found; re-run `presa eval` on the runs")
    return runs, skipped


def _num(x: Any) -> float:
    return float("nan") if x is None else float(x)


# ---------------------------------------------------------------------------------- aggregation


def _stats(values: Sequence[float]) -> tuple[float, float]:
    arr = np.asarray(values, dtype=np.float64)
    return float(arr.mean()), float(arr.std())


def _mark(cells: list[Cell], group_key) -> list[Cell]:
    """Set ``safe`` on every cell and ``best`` on the highest-reward safe cell(s) of each group."""
    cells = [replace(c, safe=is_safe(c.cost_mean), best=False) for c in cells]
    groups: dict[Any, list[int]] = defaultdict(list)
    for i, c in enumerate(cells):
        groups[group_key(c)].append(i)
    for idx in groups.values():
        safe = [i for i in idx if cells[i].safe and math.isfinite(cells[i].reward_mean)]
        if not safe:
            continue
        top = max(cells[i].reward_mean for i in safe)
        for i in safe:
            if cells[i].reward_mean == top:
                cells[i] = replace(cells[i], best=True)
    return cells


def aggregate(runs: Sequence[RunResult], *, reference: bool = False) -> Report:
    """Aggregate per-run results into the report's tables.

    Args:
        runs: one result per run (from :func:`collect_results`, or built directly).
        reference: add the published numbers (``feedbackgen/data/offline_safe_rl_reference.csv``)
            for the DSRL tasks we have results on; their suite averages are recomputed over those
            same tasks so they compare like with like.

    Returns:
        The :class:`Report` with safe flags and best-safe marks set.
    """
    if not runs:
        raise FeedbackgenError("no runs to aggregate; run `presa eval` on some runs first")
    methods = list(dict.fromkeys(r.method for r in runs))
    groups_t: dict[tuple, list[RunResult]] = defaultdict(list)
    groups_k: dict[tuple, list[RunResult]] = defaultdict(list)
    for r in runs:
        groups_t[(r.suite, r.task, r.method)].append(r)
        groups_k[(r.suite, r.task, r.method, r.threshold)].append(r)

    def cell(key: tuple, rs: list[RunResult], threshold: float | None) -> Cell:
        rm, rsd = _stats([r.normalized_reward for r in rs])
        cm, csd = _stats([r.normalized_cost for r in rs])
        return Cell(suite=key[0], task=key[1], method=key[2], threshold=threshold, n=len(rs),
                    reward_mean=rm, reward_std=rsd, cost_mean=cm, cost_std=csd)

    by_threshold = [cell(k, v, k[3]) for k, v in groups_k.items()]
    by_task = [cell(k, v, None) for k, v in groups_t.items()]

    ref_methods: list[str] = []
    if reference:
        ref = load_reference()
        ours_tasks = {(c.suite, c.task) for c in by_task}
        ref_rows = [c for c in ref if (c.suite, c.task) in ours_tasks]
        ref_methods = list(dict.fromkeys(c.method for c in ref_rows))
        by_task.extend(ref_rows)

    by_suite = []
    per_suite: dict[tuple[str, str, str], list[Cell]] = defaultdict(list)
    for c in by_task:
        per_suite[(c.suite, c.method, c.source)].append(c)
    for (suite, method, source), cs in per_suite.items():
        rm, rsd = _stats([c.reward_mean for c in cs])
        cm, csd = _stats([c.cost_mean for c in cs])
        by_suite.append(Cell(suite=suite, task=AVERAGE, method=method, threshold=None, n=len(cs),
                             reward_mean=rm, reward_std=rsd, cost_mean=cm, cost_std=csd, source=source))

    order = {m: i for i, m in enumerate([*methods, *ref_methods])}

    def sort_key(c: Cell):
        return (_suite_rank(c.suite), c.task, order.get(c.method, len(order)), c.threshold or 0.0)

    by_threshold = sorted(_mark(by_threshold, lambda c: (c.suite, c.task, c.threshold)), key=sort_key)
    by_task = sorted(_mark(by_task, lambda c: (c.suite, c.task)), key=sort_key)
    by_suite = sorted(_mark(by_suite, lambda c: c.suite), key=sort_key)
    return Report(runs=list(runs), by_threshold=by_threshold, by_task=by_task, by_suite=by_suite,
                  methods=methods, reference_methods=ref_methods)


def load_reference() -> list[Cell]:
    """The published per-task numbers (mean ± std over 3 thresholds × 3 seeds) of eight methods.

    Source: the results figure of TraC (AAAI 2025), transcribed by hand (a single value may be off);
    the ``AVERAGE`` rows are left out (:func:`aggregate` recomputes them over the tasks shown).
    """
    text = resources.files("feedbackgen").joinpath("data/offline_safe_rl_reference.csv").read_text()
    out = []
    for row in csv.DictReader(io.StringIO(text)):
        if row["task"] == AVERAGE:
            continue
        out.append(Cell(suite=row["suite"], task=row["task"], method=row["method"], threshold=None, n=9,
                        reward_mean=float(row["norm_reward_mean"]), reward_std=float(row["norm_reward_std"]),
                        cost_mean=float(row["norm_cost_mean"]), cost_std=float(row["norm_cost_std"]),
                        source="reference"))
    return out


def build_report(paths: Iterable[str | os.PathLike[str]], *, reference: bool = False) -> Report:
    """:func:`collect_results` then :func:`aggregate`."""
    runs, skipped = collect_results(paths)
    rep = aggregate(runs, reference=reference)
    rep.skipped = skipped
    return rep


# -------------------------------------------------------------------------------------- output


def fmt_pm(mean: float, std: float) -> str:
    """``0.61 ± 0.19`` (two decimals; ``n/a`` for a missing value)."""
    if not math.isfinite(mean):
        return "n/a"
    return f"{mean:.2f} ± {std:.2f}"


def _md_cell(text: str, c: Cell) -> str:
    if c.best:
        return f"**{text}** ★"
    return f"**{text}**" if c.safe else f"_{text}_"


def to_markdown(rep: Report) -> str:
    """The report as Markdown: one table per suite (tasks × methods) and a per-threshold table.

    Convention: safe results in bold, unsafe ones in italics (dimmed), the best safe method of each
    task marked ★; reference methods carry a † and are the published numbers.
    """
    lines = ["# Evaluation report", "",
             f"{len(rep.runs)} runs; normalised reward (R↑) and normalised cost (C↓), mean ± std over "
             "runs (thresholds × seeds); suite rows average the per-task means (± their std across "
             "tasks). **bold** = safe (C ≤ 1), _italic_ = unsafe, ★ = best safe method of the row's "
             "task."]
    if rep.reference_methods:
        lines.append("† published numbers (TraC, AAAI 2025, transcribed from a figure: a single "
                     "value may be off); their averages are recomputed over the tasks shown.")
    methods = rep.all_methods()
    header = ["Task"] + [f"{_label(rep, m)} {k}" for m in methods for k in ("R↑", "C↓")]
    for suite in rep.suites():
        lines += ["", f"## {SUITE_TITLES.get(suite, suite)}", "",
                  "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        tasks = [t for s, t in rep.tasks() if s == suite]
        for task in [*tasks, AVERAGE]:
            row = [task if task != AVERAGE else "**Average**"]
            for m in methods:
                c = rep.cell(suite, task, m)
                if c is None:
                    row += ["–", "–"]
                else:
                    row += [_md_cell(fmt_pm(c.reward_mean, c.reward_std), c),
                            _md_cell(fmt_pm(c.cost_mean, c.cost_std), c)]
            lines.append("| " + " | ".join(row) + " |")
    lines += ["", "## Per threshold", "", "| Suite | Task | Method | κ | runs | R↑ | C↓ |",
              "|---|---|---|---|---|---|---|"]
    for c in rep.by_threshold:
        lines.append(f"| {c.suite} | {c.task} | {c.method} | {c.threshold:g} | {c.n} | "
                     f"{_md_cell(fmt_pm(c.reward_mean, c.reward_std), c)} | "
                     f"{_md_cell(fmt_pm(c.cost_mean, c.cost_std), c)} |")
    return "\n".join(lines) + "\n"


def _label(rep: Report, method: str) -> str:
    return f"{method}†" if method in rep.reference_methods and method not in rep.methods else method


RESULT_FIELDS = ("level", "source", "suite", "task", "method", "threshold", "n", "norm_reward_mean",
                 "norm_reward_std", "norm_cost_mean", "norm_cost_std", "safe", "best_safe")
RUN_FIELDS = ("suite", "task", "method", "threshold", "train_seed", "normalized_reward", "normalized_cost",
              "safe", "episodes", "eval_seed", "run_dir", "eval_path")


def to_csv(rep: Report) -> str:
    """All aggregation levels (``threshold``, ``task``, ``suite``) as CSV text."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(RESULT_FIELDS)
    for level, cells in (("threshold", rep.by_threshold), ("task", rep.by_task), ("suite", rep.by_suite)):
        for c in cells:
            w.writerow([level, c.source, c.suite, c.task, c.method,
                        "" if c.threshold is None else f"{c.threshold:g}", c.n,
                        f"{c.reward_mean:.6g}", f"{c.reward_std:.6g}", f"{c.cost_mean:.6g}",
                        f"{c.cost_std:.6g}", int(c.safe), int(c.best)])
    return buf.getvalue()


SUMMARY_FIELDS = ("dataset", "method", "threshold", "seeds", "norm_reward_mean", "norm_reward_std",
                  "norm_cost_mean", "norm_cost_std")
"""Columns of ``summary.csv`` (the study's headline file, issue 8)."""


def summary_csv(rep: Report) -> str:
    """The study summary as CSV text: one row per dataset × method × threshold, then per dataset ×
    method a row with threshold ``all`` (mean ± std over every run of all thresholds and seeds).

    ``seeds`` is the number of distinct training seeds in the row; statistics are over runs
    (population std, as everywhere in the report). Only our own results are written (no reference
    rows).
    """
    seeds: dict[tuple, set] = defaultdict(set)
    for r in rep.runs:
        seeds[(r.suite, r.task, r.method, r.threshold)].add(r.train_seed)
        seeds[(r.suite, r.task, r.method, None)].add(r.train_seed)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(SUMMARY_FIELDS)
    rows = [c for c in rep.by_threshold if c.source == "ours"]
    rows += [c for c in rep.by_task if c.source == "ours"]
    rank = {m: i for i, m in enumerate(rep.methods)}
    rows.sort(key=lambda c: (_suite_rank(c.suite), c.task, rank.get(c.method, len(rank)),
                             c.threshold is None, c.threshold or 0.0))
    for c in rows:
        w.writerow([c.task, c.method, "all" if c.threshold is None else f"{c.threshold:g}",
                    len(seeds[(c.suite, c.task, c.method, c.threshold)]), f"{c.reward_mean:.6g}",
                    f"{c.reward_std:.6g}", f"{c.cost_mean:.6g}", f"{c.cost_std:.6g}"])
    return buf.getvalue()


def runs_csv(rep: Report) -> str:
    """One row per run, as CSV text."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(RUN_FIELDS)
    for r in rep.runs:
        w.writerow([r.suite, r.task, r.method, f"{r.threshold:g}",
                    "" if r.train_seed is None else r.train_seed, f"{r.normalized_reward:.6g}",
                    f"{r.normalized_cost:.6g}", int(r.safe), r.episodes, r.eval_seed, r.run_dir or "",
                    r.eval_path])
    return buf.getvalue()


def _atomic_fig(fig, path: Path) -> None:
    with atomic_path(path, keep_suffix=True) as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight")


def plot_reward_cost(rep: Report, path: Path) -> Path:
    """Normalised reward vs normalised cost, one panel per suite, one colour per method.

    Filled markers with error bars are our per-task means (± std); small dots are single runs;
    hollow markers are the published reference methods. The dashed line is cost = 1 (left: safe).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    suites = rep.suites()
    fig, axes = plt.subplots(1, len(suites), figsize=(5.5 * len(suites), 4.5), squeeze=False)
    methods = rep.all_methods()
    cmap = plt.get_cmap("tab10" if len(methods) <= 10 else "tab20")
    colors = {m: cmap(i % cmap.N) for i, m in enumerate(methods)}
    for ax, suite in zip(axes[0], suites, strict=True):
        for m in rep.methods:
            runs = [r for r in rep.runs if r.suite == suite and r.method == m]
            ax.scatter([r.normalized_cost for r in runs], [r.normalized_reward for r in runs], s=8,
                       color=colors[m], alpha=0.35, linewidths=0)
            cells = [c for c in rep.by_task if c.suite == suite and c.method == m]
            if cells:
                ax.errorbar([c.cost_mean for c in cells], [c.reward_mean for c in cells],
                            xerr=[c.cost_std for c in cells], yerr=[c.reward_std for c in cells], fmt="o",
                            color=colors[m], capsize=2, label=m)
        for m in rep.reference_methods:
            cells = [c for c in rep.by_task if c.suite == suite and c.method == m and c.source == "reference"]
            if cells:
                ax.scatter([c.cost_mean for c in cells], [c.reward_mean for c in cells], marker="s",
                           facecolors="none", edgecolors=[colors[m]], label=f"{m} (published)")
        ax.axvline(1.0, color="k", linestyle="--", linewidth=1)
        ax.set_xlabel("normalised cost (≤ 1 is safe)")
        ax.set_ylabel("normalised reward")
        ax.set_title(SUITE_TITLES.get(suite, suite))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    _atomic_fig(fig, path)
    plt.close(fig)
    return path


CURVE_PRIORITY = ("eval/normalized_reward", "eval/normalized_cost", "train/bc_loss", "train/pref_loss",
                  "train/loss", "train/g", "train/nu", "train/zref")
"""The training-curve panels, in order, when the runs logged them."""


def _curve_keys(all_rows: list[list[dict]], limit: int = 6) -> list[str]:
    """The panels: :data:`CURVE_PRIORITY` first, then other ``train/`` metrics (not lr or speed)."""
    keys = {k for rows in all_rows for row in rows for k, v in row.items()
            if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)}
    chosen = [k for k in CURVE_PRIORITY if k in keys]
    rest = sorted(k for k in keys if k.startswith("train/") and k not in chosen
                  and k not in ("train/lr", "train/steps_per_s"))
    return [*chosen, *rest][:limit]


def plot_report_curves(rep: Report, path: Path) -> Path | None:
    """Training curves of all the report's runs from their ``metrics.jsonl``: up to six metrics (see
    :func:`_curve_keys`), one line per run, coloured by method. Returns None when no run has
    metrics. (One run's own panels: :func:`presa.plots.plot_training_curves`.)"""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [r for r in rep.runs if r.run_dir]
    metrics = [read_metrics(r.run_dir) for r in runs if r.run_dir]  # (every run: the test types run_dir)
    keys = _curve_keys([m for m in metrics if m])
    if not keys:
        return None
    ncol = min(3, len(keys))
    nrow = math.ceil(len(keys) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.5 * ncol, 3.2 * nrow), squeeze=False)
    cmap = plt.get_cmap("tab10")
    colors = {m: cmap(i % 10) for i, m in enumerate(rep.methods)}
    for ax, key in zip(axes.flat, keys, strict=False):
        labelled = set()
        for r, rows in zip(runs, metrics, strict=True):
            pts = [(row["step"], row[key]) for row in rows if isinstance(row.get(key), (int, float))]
            if not pts:
                continue
            xs, ys = zip(*pts, strict=True)
            label = r.method if r.method not in labelled else None
            labelled.add(r.method)
            ax.plot(xs, ys, color=colors[r.method], alpha=0.7, linewidth=1, label=label)
        if key in ("eval/normalized_cost",):
            ax.axhline(1.0, color="k", linestyle="--", linewidth=1)
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if labelled:
            ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(keys):]:
        ax.set_visible(False)
    fig.tight_layout()
    _atomic_fig(fig, path)
    plt.close(fig)
    return path


def write_report(rep: Report, out_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """Write ``report.md``, ``results.csv``, ``runs.csv``, ``summary.csv``, ``reward_cost.png`` and
    (when the runs logged metrics) ``training_curves.png`` into ``out_dir``, each atomically.

    Returns:
        Name → path of every file written.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, text in (("report.md", to_markdown(rep)), ("results.csv", to_csv(rep)),
                       ("runs.csv", runs_csv(rep)), ("summary.csv", summary_csv(rep))):
        atomic_write_text(out / name, text)
        written[name] = out / name
    written["reward_cost.png"] = plot_reward_cost(rep, out / "reward_cost.png")
    curves = plot_report_curves(rep, out / "training_curves.png")
    if curves is not None:
        written["training_curves.png"] = curves
    return written
