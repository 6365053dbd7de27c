"""`presa sweep`: run a grid of train + eval cells (resumable) and write the report.

The grid comes from a YAML file (see :mod:`presa.sweep` for its keys) and/or options; an option
replaces the file's key of the same name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import presa_cli.console as term
import typer
import yaml
from rich.text import Text

from feedbackgen.errors import FeedbackgenError


def _parse_grid(items: list[str] | None) -> dict[str, list[Any]]:
    """``--grid key=v1,v2`` items → ``{key: [v1, v2]}`` (values read as YAML scalars)."""
    out: dict[str, list[Any]] = {}
    for item in items or []:
        if "=" not in item:
            raise FeedbackgenError(f"--grid expects key=v1,v2,..., got {item!r}")
        key, raw = item.split("=", 1)
        key = key.strip().replace("-", "_")
        text = raw.strip()
        if text.startswith("["):
            values = yaml.safe_load(text)
        else:
            values = [yaml.safe_load(v) for v in text.split(",") if v.strip()]
        if not values:
            raise FeedbackgenError(f"--grid {key}= has no values; give e.g. --grid {key}=0.8,0.9")
        out[key] = values
    return out


def sweep_command(
    grid_file: Annotated[Path | None, typer.Argument(
        help="Grid YAML (keys: out, stores, tasks, noise, make, thresholds, seeds, methods, preset, set, "
             "grid, episodes, workers, backend, ...). Options below replace its keys.",
        show_default=False)] = None,
    out: Annotated[Path | None, typer.Option(
        "--out", help="Output folder: runs/, stores/, manifest.json, grid.yaml, report/.",
        show_default=False)] = None,
    stores: Annotated[list[Path] | None, typer.Option(
        "--store", help="A feedback store (repeatable).", show_default=False)] = None,
    tasks: Annotated[list[str] | None, typer.Option(
        "--task", help="A task; its stores are made with `feedbackgen make` per noise level (repeatable).",
        show_default=False)] = None,
    noise: Annotated[str | None, typer.Option(
        "--noise", help="Noise levels for --task stores, e.g. 0,0.1,0.2 (default 0.1).",
        show_default=False)] = None,
    thresholds: Annotated[str | None, typer.Option(
        "--thresholds", help="Thresholds κ, e.g. 10,20,40, or all (the store's; default).",
        show_default=False)] = None,
    seeds: Annotated[str | None, typer.Option(
        "--seeds", help="Training seeds, e.g. 0,1,2 (default 0).", show_default=False)] = None,
    methods: Annotated[str | None, typer.Option(
        "--methods", help="Algorithms, e.g. presa,bc_safe_seg,cpl,two_stage.", show_default=False)] = None,
    preset: Annotated[str | None, typer.Option(
        "--preset", help="quick (default) or full.", show_default=False)] = None,
    set_: Annotated[list[str] | None, typer.Option(
        "--set", help="A training option for every cell: --set total_steps=20000 (repeatable).",
        show_default=False)] = None,
    grid: Annotated[list[str] | None, typer.Option(
        "--grid", help="A swept training option: --grid delta=0.8,0.9,0.95 (repeatable; cartesian product).",
        show_default=False)] = None,
    episodes: Annotated[int | None, typer.Option(
        "--episodes", min=1, help="Evaluation episodes per cell (default 20).", show_default=False)] = None,
    eval_seed: Annotated[int | None, typer.Option(
        "--eval-seed", min=0, help="Evaluation seed (default 0).", show_default=False)] = None,
    eval_workers: Annotated[int | None, typer.Option(
        "--eval-workers", min=1, help="Evaluation processes per cell (default 1).",
        show_default=False)] = None,
    threads: Annotated[int | None, typer.Option(
        "--threads", min=1, help="Torch threads per cell (default 1).", show_default=False)] = None,
    device: Annotated[str | None, typer.Option(
        "--device", help="cpu (default) or cuda.", show_default=False)] = None,
    workers: Annotated[int | None, typer.Option(
        "--workers", min=1, help="Cells at once (default: every available core).",
        show_default=False)] = None,
    backend: Annotated[str | None, typer.Option(
        "--backend", help="local (a process pool; default) or ray (needs the 'ray' extra).",
        show_default=False)] = None,
    max_cells: Annotated[int | None, typer.Option(
        "--max-cells", min=0, help="Run at most N of the cells still to do, leave the rest for the next "
                                   "invocation.", show_default=False)] = None,
    report: Annotated[bool, typer.Option(
        "--report/--no-report",
        help="Write OUT/report (presa report's tables and plots) at the end.")] = True,
) -> None:
    """Run a grid (stores × thresholds × seeds × methods × options) of train + eval, resumably."""
    from presa.config import parse_set
    from presa.sweep import build_spec, load_grid, run_sweep

    console = term.out()
    try:
        values: dict[str, Any] = load_grid(grid_file) if grid_file is not None else {}
        given = {"out": str(out) if out is not None else None,
                 "stores": [str(s) for s in stores] if stores else None,
                 "tasks": list(tasks) if tasks else None, "noise": noise, "thresholds": thresholds,
                 "seeds": seeds, "methods": methods, "preset": preset, "episodes": episodes,
                 "eval_seed": eval_seed, "eval_workers": eval_workers, "threads": threads,
                 "device": device, "workers": workers, "backend": backend}
        values.update({k: v for k, v in given.items() if v is not None})
        if set_:
            values["set"] = {**(values.get("set") or {}), **parse_set(set_)}
        if grid:
            values["grid"] = {**(values.get("grid") or {}), **_parse_grid(grid)}
        spec = build_spec(values)

        def on_cell(cell, record) -> None:
            if record["status"] == "done":
                console.print(f"[green]done[/green]   {cell.id}  reward {record['normalized_reward']:.3f}  "
                              f"cost {record['normalized_cost']:.3f}  ({record['wall_s']:.0f} s)")
            else:
                console.print(Text(f"failed {cell.id}: {record['error']}", style="red"))

        result = run_sweep(spec, max_cells=max_cells, report=report,
                           progress=lambda msg: console.print(f"[dim]{msg}[/dim]"), on_cell=on_cell)
    except FeedbackgenError as exc:
        raise term.fail(str(exc)) from None
    except OSError as exc:
        raise term.fail(term.os_error_text(exc)) from None
    except KeyboardInterrupt:
        term.warn("interrupted; run the same command again to resume the sweep")
        raise typer.Exit(130) from None
    total = len(result.cells)
    console.print(f"{total} cells: {result.done} done ({len(result.ran)} run now, {len(result.skipped)} "
                  f"already evaluated), {len(result.failed)} failed, {len(result.left)} left for later")
    console.print(f"wrote {result.manifest}")
    if result.report:
        console.print(f"wrote {spec.out / 'report'} (also: presa report {spec.out} --out DIR)")
    if result.failed:
        raise typer.Exit(1)
