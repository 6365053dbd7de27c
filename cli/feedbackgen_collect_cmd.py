"""`feedbackgen collect`: roll out behaviour policies in a simulator and write a DSRL-layout dataset."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import presa_cli.console as term
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


def collect_command(
    task: Annotated[str, typer.Option(help="Task name (BallRun, easysparse, ...) or simulator env id.")],
    out: Annotated[Path, typer.Option(
        help="Output: a .hdf5 file (a .json record is written next to it), or a dataset folder that "
             "gets data.hdf5 + dataset.json (registrable as a task).")],
    episodes: Annotated[int, typer.Option(min=1, help="Number of episodes to roll out.")] = 100,
    policy: Annotated[list[str] | None, typer.Option(
        help="Behaviour policy: random, sb3:PATH or presa:PATH, optionally SPEC@SHARE; repeat for a "
             "mixture (episodes split by share).")] = None,
    noise: Annotated[tuple[float, float], typer.Option(
        help="Range LOW HIGH of the per-episode Gaussian action-noise std (fraction of the action "
             "half-range).")] = (0.0, 0.0),
    seed: Annotated[int, typer.Option(help="The one seed every episode's seed is derived from.")] = 0,
    workers: Annotated[int | None, typer.Option(
        help="Worker processes (default: every available core); results do not depend on it.")] = None,
    max_episode_steps: Annotated[int | None, typer.Option(
        help="Cap on episode length (default: the task's).")] = None,
    name: Annotated[str | None, typer.Option(
        help="Task name recorded in a dataset folder's dataset.json (default: the folder name).")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing output.")] = False,
    record_frames: Annotated[int, typer.Option(
        min=0, help="Render every K-th step (bullet tasks; CPU renderer) into <data>.frames.hdf5 for "
                    "`feedbackgen annotate` (0: no frames).")] = 0,
    frame_size: Annotated[int, typer.Option(help="Frame width and height in pixels.")] = 64,
    frame_episodes: Annotated[int | None, typer.Option(
        help="With --record-frames: record frames in the first N episodes only.")] = None,
) -> None:
    """Collect an offline safe-RL dataset (DSRL HDF5 layout) from behaviour policies in a simulator."""
    err, console = term.err(), term.out()
    with term.user_errors():
        from feedbackgen.collect import CollectConfig, collect

        cfg = CollectConfig(task=task, out=out, episodes=episodes, policies=tuple(policy or ("random",)),
                            noise=noise, seed=seed, workers=workers, max_episode_steps=max_episode_steps,
                            name=name, overwrite=overwrite, record_frames=record_frames,
                            frame_size=frame_size, frame_episodes=frame_episodes)
        with Progress(TextColumn("collecting"), BarColumn(), MofNCompleteColumn(), TextColumn("episodes"),
                      TimeElapsedColumn(), console=err, transient=True) as bar:
            tid = bar.add_task("collect", total=cfg.episodes)
            path = collect(cfg, progress=lambda done, total: bar.update(tid, completed=done))
    record_path = path / "dataset.json" if path.is_dir() else path.with_suffix(".json")
    record = json.loads(record_path.read_text())
    rec = record.get("collection", record)
    console.print(f"[green]wrote[/green] {path}  ({rec['episodes']} episodes, "
                  f"{rec['transitions']} transitions)")
    console.print(f"episode reward {rec['min_episode_reward']:.1f} .. {rec['max_episode_reward']:.1f}   "
                  f"episode cost {rec['min_episode_cost']:.1f} .. {rec['max_episode_cost']:.1f}")
    console.print(f"record: {record_path}")
