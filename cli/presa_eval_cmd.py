"""`presa eval`: roll a trained policy out in its task's simulator and print normalised scores."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import presa_cli.console as term
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from presa.evaluate import evaluate, json_safe, resolve_final_checkpoint, write_eval_json


def eval_table(result) -> Table:
    """A Rich table of one evaluation: one row per threshold, the run's own threshold first.

    Safe rows are bold green, unsafe ones dimmed (the field's convention).
    """
    t = Table(title=f"{result.task.name} · {result.method or 'policy'} · κ={result.threshold:g} · "
                    f"{len(result.episodes)} episodes (seed {result.seed})", title_justify="left")
    t.add_column("threshold κ", justify="right")
    t.add_column("norm. reward", justify="right")
    t.add_column("norm. cost", justify="right")
    t.add_column("safe episodes", justify="right")
    t.add_column("safe")
    nr, nr_std = result.normalized_reward, float(result.normalized_rewards.std())
    order = [result.threshold, *[k for k in result.thresholds if k != result.threshold]]
    for k in order:
        s = result.score(k)
        style = "bold green" if s.safe else "dim"
        label = f"{k:g} (run)" if k == result.threshold else f"{k:g}"
        t.add_row(label, f"{nr:.3f} ± {nr_std:.3f}", f"{s.normalized_cost:.3f} ± {s.normalized_cost_std:.3f}",
                  f"{s.safe_episodes:.0%}", "yes" if s.safe else "no", style=style)
    return t


def eval_command(
    target: Annotated[Path, typer.Argument(
        help="A run directory (uses checkpoints/final.pt) or a checkpoint file.", show_default=False)],
    episodes: Annotated[int, typer.Option(min=1, help="Evaluation episodes (DSRL protocol: 20).")] = 20,
    seed: Annotated[int, typer.Option(min=0, help="Evaluation seed; episode i resets with a seed derived "
                                                  "from (seed, i).")] = 0,
    workers: Annotated[int | None, typer.Option(
        min=1, help="Worker processes (default: every available core); results do not depend on it.")] = None,
    task: Annotated[str | None, typer.Option(
        help="Evaluate in this task instead of the one the checkpoint was trained on.")] = None,
    as_json: Annotated[bool, typer.Option(
        "--json", help="Print the result as JSON (no table, no progress bar).")] = False,
    save: Annotated[bool, typer.Option(
        "--save/--no-save", help="Write the result to RUN_DIR/eval/eval-seed<S>-n<N>.json.")] = True,
) -> None:
    """Roll a trained policy out (mean action) and report normalised reward and cost (DSRL protocol)."""
    console = term.out()
    with term.user_errors():
        ckpt, run_dir = resolve_final_checkpoint(target)
        if as_json:
            result = evaluate(ckpt, episodes=episodes, seed=seed, workers=workers, task=task)
        else:
            with Progress(TextColumn("evaluating"), BarColumn(), MofNCompleteColumn(), TextColumn("episodes"),
                          TimeElapsedColumn(), console=console, transient=True) as bar:
                tid = bar.add_task("eval", total=episodes)
                result = evaluate(ckpt, episodes=episodes, seed=seed, workers=workers, task=task,
                                  progress=lambda done, total: bar.update(tid, completed=done))
        written = write_eval_json(run_dir if run_dir is not None else ckpt.parent, result) if save else None
    if as_json:
        record = result.to_dict()
        record["eval_json"] = str(written) if written else None
        typer.echo(json.dumps(json_safe(record), indent=2))
        return
    console.print(eval_table(result))
    console.print(f"episode reward {result.reward:.1f} ± {float(result.rewards.std()):.1f}   "
                  f"episode cost {result.cost:.2f} ± {float(result.costs.std()):.2f}   "
                  f"length {float(result.lengths.mean()):.0f}   "
                  f"{result.workers} worker(s), {result.wall_s:.1f} s", highlight=False)
    verdict = "[bold green]safe[/bold green]" if result.safe else "[red]unsafe[/red]"
    console.print(f"normalised reward {result.normalized_reward:.3f}, normalised cost "
                  f"{result.normalized_cost:.3f} at κ={result.threshold:g}: {verdict}", highlight=False)
    if written:
        console.print(f"wrote {written}", highlight=False)
