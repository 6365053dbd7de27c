"""`presa report`: aggregate evaluated runs into the field's tables (Rich, Markdown, CSV) and plots."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import presa_cli.console as term
import typer
from rich.table import Table

from presa.report import AVERAGE, SUITE_TITLES, Cell, Report, build_report, fmt_pm, write_report


def _styled(text: str, c: Cell, star: bool = False) -> str:
    if c.best:
        return f"[bold green]{text}{' ★' if star else ''}[/bold green]"
    return f"[bold]{text}[/bold]" if c.safe else f"[dim]{text}[/dim]"


def report_table(rep: Report, suite: str) -> Table:
    """One suite's results as a Rich table: a row per task × method, then the suite averages.

    Safe rows are bold, unsafe rows dimmed, the best safe method of each task green with ★;
    published reference methods carry a †.
    """
    t = Table(title=f"{SUITE_TITLES.get(suite, suite)}: normalised reward ↑ / cost ↓ "
                    "(mean ± std over thresholds × seeds)", title_justify="left")
    t.add_column("task")
    t.add_column("method")
    t.add_column("runs", justify="right")
    t.add_column("norm. reward", justify="right")
    t.add_column("norm. cost", justify="right")
    t.add_column("safe")
    tasks = [task for s, task in rep.tasks() if s == suite]
    for i, task in enumerate([*tasks, AVERAGE]):
        cells = [c for c in (rep.by_suite if task == AVERAGE else rep.by_task)
                 if c.suite == suite and c.task == task]
        for j, c in enumerate(cells):
            name = c.method + ("†" if c.source == "reference" else "")
            label = ("Average" if task == AVERAGE else task) if j == 0 else ""
            n = f"{c.n} task{'s' if c.n != 1 else ''}" if task == AVERAGE else str(c.n)
            t.add_row(label, _styled(name, c, star=True), n, _styled(fmt_pm(c.reward_mean, c.reward_std), c),
                      _styled(fmt_pm(c.cost_mean, c.cost_std), c), "yes" if c.safe else "[dim]no[/dim]",
                      end_section=(j == len(cells) - 1 and i < len(tasks)))
    return t


def report_command(
    runs: Annotated[list[Path], typer.Argument(
        help="Run directories or folders of runs (every RUN_DIR/eval/*.json below them is read).",
        show_default=False)],
    out: Annotated[Path, typer.Option(help="Folder for report.md, results.csv, runs.csv and the plots.")],
    reference: Annotated[bool, typer.Option(
        "--reference", help="Show the published numbers of eight offline safe RL methods beside ours "
                            "(DSRL tasks).")] = False,
) -> None:
    """Aggregate evaluated runs into tables (mean ± std per task and per suite) and plots."""
    console = term.out()
    with term.user_errors():
        rep = build_report(runs, reference=reference)
        written = write_report(rep, out)
    for suite in rep.suites():
        console.print(report_table(rep, suite))
    console.print("[bold]bold[/bold] = safe (norm. cost ≤ 1), [dim]dim[/dim] = unsafe, "
                  "[bold green]★[/bold green] = best safe method of the task"
                  + (", † = published (TraC, AAAI 2025)" if rep.reference_methods else ""), highlight=False)
    counts = f"{_n(len(rep.runs), 'run')}, {_n(len(rep.methods), 'method')}, {_n(len(rep.tasks()), 'task')}"
    if rep.skipped:
        counts += (f"; {_n(len(rep.skipped), 'other evaluation file')} not used "
                   "(one evaluation per run: see runs.csv)")
    console.print(counts, highlight=False)
    for path in written.values():
        console.print(f"wrote {path}", highlight=False)


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"
