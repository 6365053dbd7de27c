"""``presa train``: parse options → resolve one TrainConfig → ``presa.trainer.train`` → Rich summary.

Config precedence (lowest first): defaults < the store's suite defaults < ``--preset`` <
``--config file.yaml`` < explicit options (``--threshold``, ``--seed``, ``--algo``, ``--device``)
< ``--set key=value``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import presa_cli.console as term
import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from feedbackgen.errors import FeedbackgenError

# metric -> short label in the progress bar and the summary
_SHOWN = (("bc_loss", "bc"), ("pref_loss", "L_pref"), ("g", "g"), ("nu", "ν"), ("zref", "z_ref"),
          ("pref_acc", "acc"), ("steps_per_s", "it/s"))


def _metrics_text(record: dict[str, float] | None) -> str:
    if not record:
        return ""
    parts = []
    for key, label in _SHOWN:
        v = record.get(f"train/{key}")
        if v is not None:
            parts.append(f"{label}={v:.3g}")
    return " ".join(parts)


def train_command(
    data: Annotated[Path | None, typer.Option(
        "--data", help="Feedback store (directory or published .zip).", show_default=False)] = None,
    threshold: Annotated[float | None, typer.Option(
        "--threshold", help="Episode cost threshold κ (one of the store's thresholds).",
        show_default=False)] = None,
    seed: Annotated[int | None, typer.Option(
        "--seed", min=0, help="Seed (default 0).", show_default=False)] = None,
    out: Annotated[Path | None, typer.Option(
        "--out", help="New run directory (never reused). Default: "
                      "runs/<store-name>-<algo>-k<K>-s<S>-<timestamp>.", show_default=False)] = None,
    preset: Annotated[str | None, typer.Option(
        "--preset", help="full (the method's defaults), quick (a few thousand steps, for demos and "
                         "tests) or study (the benchmark study's); a preset sets only the keys the "
                         "algorithm reads.", show_default=False)] = None,
    algo: Annotated[str | None, typer.Option(
        "--algo", help="Algorithm: presa (default), bc_all, ...", show_default=False)] = None,
    config: Annotated[Path | None, typer.Option(
        "--config", help="YAML mapping of config keys the algorithm reads (or a run's config.yaml, "
                         "of which it takes the keys the algorithm reads).",
        show_default=False)] = None,
    set_: Annotated[list[str] | None, typer.Option(
        "--set", help="Set a config key the algorithm reads: --set delta=0.95 --set hidden=[128,128] "
                      "(a key it does not read is an error listing the valid ones).",
        show_default=False)] = None,
    device: Annotated[str | None, typer.Option(
        "--device", help="cpu (default) or cuda.", show_default=False)] = None,
    resume_dir: Annotated[Path | None, typer.Option(
        "--resume", help="Continue this run directory from its latest checkpoint (bit-identical on the "
                         "same device); only --set total_steps/log_every/checkpoint_every may change.",
        show_default=False)] = None,
    progress: Annotated[bool, typer.Option(
        "--progress/--no-progress", help="Show a progress bar with key metrics.")] = True,
    eval_every: Annotated[int, typer.Option(
        "--eval-every", min=0, help="Evaluate the policy in the simulator every N steps and at the end, "
                                    "logging eval/... metrics (0: never). The run's policy stays "
                                    "final.pt; these evaluations never select a checkpoint.")] = 0,
    eval_episodes: Annotated[int, typer.Option(
        "--eval-episodes", min=1, help="Episodes per evaluation during training.")] = 10,
) -> None:
    """Train PreSa (or a baseline) on a feedback store into a new run directory."""
    from presa.config import load_config_file, parse_set, resolve_config
    from presa.evaluate import eval_callback
    from presa.trainer import default_run_dir, resume, store_suite, train

    console = term.out()
    try:
        overrides = parse_set(set_)
        if resume_dir is not None:
            given = [name for name, v in (("--data", data), ("--threshold", threshold), ("--seed", seed),
                                          ("--out", out), ("--preset", preset), ("--algo", algo),
                                          ("--config", config), ("--device", device)) if v is not None]
            if given:
                raise FeedbackgenError(f"--resume continues a run as it was configured; drop "
                                       f"{', '.join(given)} (only --set total_steps/log_every/"
                                       "checkpoint_every may change)")
            run_dir = resume_dir
            with _ProgressBar(console, progress, f"resuming {run_dir}") as bar, \
                    eval_callback(run_dir, eval_every, episodes=eval_episodes, then=bar.update) as cb:
                result = resume(resume_dir, overrides=overrides, callback=cb)
        else:
            if data is None:
                raise FeedbackgenError("pass --data STORE (a feedback store), or --resume RUN_DIR")
            explicit: dict[str, Any] = {k: v for k, v in (("threshold", threshold), ("seed", seed),
                                                         ("algo", algo), ("device", device)) if v is not None}
            suite = store_suite(data)
            file_values = load_config_file(config) if config is not None else {}
            cfg = resolve_config(suite=suite, preset=preset, file_values=file_values,
                                 overrides={**explicit, **overrides})
            if cfg.threshold is None:
                raise FeedbackgenError("no cost threshold given; pass --threshold K "
                                       "(one of the store's thresholds)")
            run_dir = out if out is not None else default_run_dir(data, cfg)
            with _ProgressBar(console, progress, f"{cfg.algo} → {run_dir}") as bar, \
                    eval_callback(run_dir, eval_every, episodes=eval_episodes, then=bar.update) as cb:
                result = train(cfg, data, run_dir, callback=cb)
    except FeedbackgenError as exc:
        raise term.fail(str(exc)) from None
    except OSError as exc:
        raise term.fail(term.os_error_text(exc)) from None
    except KeyboardInterrupt:
        term.warn(f"interrupted; continue from the last checkpoint with `presa train --resume {run_dir}`")
        raise typer.Exit(130) from None
    _summary(console, result)


def _summary(console: Console, result: Any) -> None:
    cfg = result.config
    if result.already_complete:
        console.print(f"{result.run_dir} is already complete ({result.step} steps); pass "
                      "--set total_steps=N to train longer")
    t = Table(title=f"{cfg.algo} · κ={cfg.threshold:g} · seed {cfg.seed} · {result.step} steps",
              title_justify="left", show_header=True)
    t.add_column("metric")
    t.add_column("last value", justify="right")
    for key, value in sorted(result.metrics.items()):
        if key.startswith("train/"):
            t.add_row(key, f"{value:.4g}")
    console.print(t)
    if result.resumed_from is not None and not result.already_complete:
        console.print(f"resumed from step {result.resumed_from}")
    console.print(f"run directory  {result.run_dir}")
    console.print(f"checkpoint     {result.checkpoint}")
    console.print(f"curves         {result.run_dir / 'curves.png'}")


class _ProgressBar:
    """Rich progress bar (stderr) fed by the trainer's per-step callback."""

    def __init__(self, console: Console, enabled: bool, title: str) -> None:
        self.enabled = enabled
        self.bar = Progress(TextColumn("{task.description:<6}"), BarColumn(bar_width=24),
                            MofNCompleteColumn(),
                            TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[metrics]}"),
                            console=term.err(), transient=False, disable=not enabled)
        self.task: TaskID | None = None
        self.title = title

    def __enter__(self) -> _ProgressBar:
        self.bar.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.bar.__exit__(*exc)

    def update(self, event: Any) -> None:
        if not self.enabled:
            return
        if self.task is None:
            self.task = self.bar.add_task(event.phase, total=event.total_steps, completed=event.step - 1,
                                          metrics="")
        fields: dict[str, Any] = {"description": event.phase}
        if event.metrics is not None:
            fields["metrics"] = _metrics_text(event.metrics)
        self.bar.update(self.task, completed=event.step, **fields)
