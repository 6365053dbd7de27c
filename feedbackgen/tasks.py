"""Task registry: the 38 DSRL tasks plus the datasets the project ships.

The DSRL constants (max episode steps, normalisation references, cost thresholds) come from the
DSRL package (``dsrl/infos.py``, Apache-2.0, by the DSRL authors), copied into
``feedbackgen/data/dsrl_tasks.csv``.

Shipped datasets live in ``datasets/<Name>/`` at the repository root (or in the folder named by
``$FEEDBACKGEN_DATASETS_DIR``); each holds ``dataset.json`` (its task record), ``data.hdf5`` (DSRL
layout) and a card (``README.md``). They register as tasks named ``<Name>`` (e.g. ``BallRun-mini``).
"""

from __future__ import annotations

import csv
import difflib
import json
import os
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path

from feedbackgen.errors import FeedbackgenError

SUITE_THRESHOLDS = {"bullet": (10.0, 20.0, 40.0), "metadrive": (10.0, 20.0, 40.0),
                    "safety_gymnasium": (20.0, 40.0, 80.0)}


@dataclass(frozen=True)
class Task:
    """Everything the toolkit knows about one task.

    Attributes:
        name: task name (``BallRun``, ``easysparse``, ``BallRun-mini``).
        suite: ``bullet``, ``safety_gymnasium`` or ``metadrive``.
        env_id: the simulator's environment id (``SafetyBallRun-v0``).
        max_episode_steps: T_max, where evaluation truncates an episode.
        min_episode_reward, max_episode_reward: normalisation references for reward.
        min_episode_cost, max_episode_cost: episode cost range of the reference data.
        thresholds: the suite's customary episode cost thresholds κ.
        dsrl_file: DSRL HDF5 file name (DSRL tasks only).
        dsrl_env_id: DSRL's offline env id (DSRL tasks only).
        source_path: the HDF5 file of a shipped dataset (shipped tasks only).
        base_task: the DSRL task a shipped dataset was collected in (shipped tasks only).
        origin: ``dsrl`` or ``shipped``.
    """

    name: str
    suite: str
    env_id: str
    max_episode_steps: int
    min_episode_reward: float
    max_episode_reward: float
    min_episode_cost: float
    max_episode_cost: float
    thresholds: tuple[float, ...]
    dsrl_file: str | None = None
    dsrl_env_id: str | None = None
    source_path: Path | None = None
    base_task: str | None = None
    origin: str = "dsrl"
    extra: dict = field(default_factory=dict, compare=False, hash=False)

    def to_dict(self) -> dict:
        """A JSON-able record of the task (what stores and checkpoints embed)."""
        return {
            "name": self.name, "suite": self.suite, "env_id": self.env_id,
            "max_episode_steps": self.max_episode_steps,
            "min_episode_reward": self.min_episode_reward, "max_episode_reward": self.max_episode_reward,
            "min_episode_cost": self.min_episode_cost, "max_episode_cost": self.max_episode_cost,
            "thresholds": list(self.thresholds), "dsrl_file": self.dsrl_file,
            "dsrl_env_id": self.dsrl_env_id, "base_task": self.base_task, "origin": self.origin,
            "source_path": str(self.source_path) if self.source_path else None,
        }

    @classmethod
    def from_dict(cls, d: dict) -> Task:
        """Inverse of :meth:`to_dict` (used when a store or checkpoint names its task)."""
        return cls(
            name=d["name"], suite=d["suite"], env_id=d["env_id"],
            max_episode_steps=int(d["max_episode_steps"]),
            min_episode_reward=float(d["min_episode_reward"]),
            max_episode_reward=float(d["max_episode_reward"]),
            min_episode_cost=float(d["min_episode_cost"]), max_episode_cost=float(d["max_episode_cost"]),
            thresholds=tuple(float(x) for x in d["thresholds"]), dsrl_file=d.get("dsrl_file"),
            dsrl_env_id=d.get("dsrl_env_id"), base_task=d.get("base_task"), origin=d.get("origin", "dsrl"),
            source_path=Path(d["source_path"]) if d.get("source_path") else None,
        )


def datasets_dir() -> Path:
    """Folder of the shipped datasets: ``$FEEDBACKGEN_DATASETS_DIR`` or ``<repo>/datasets``.

    ``<repo>/datasets`` exists in a clone (and in an editable install of it); an installed wheel does
    not carry the datasets, so there the variable must name a clone's ``datasets/`` folder.
    """
    env = os.environ.get("FEEDBACKGEN_DATASETS_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent / "datasets"


@cache
def _dsrl_tasks() -> dict[str, Task]:
    text = resources.files("feedbackgen").joinpath("data/dsrl_tasks.csv").read_text()
    tasks = {}
    for row in csv.DictReader(text.splitlines()):
        tasks[row["task"]] = Task(
            name=row["task"], suite=row["suite"], env_id=row["simulator_env_id"],
            max_episode_steps=int(row["max_episode_steps"]),
            min_episode_reward=float(row["min_episode_reward"]),
            max_episode_reward=float(row["max_episode_reward"]),
            min_episode_cost=float(row["min_episode_cost"]), max_episode_cost=float(row["max_episode_cost"]),
            thresholds=tuple(float(x) for x in row["cost_thresholds"].split(";")),
            dsrl_file=row["dsrl_file"], dsrl_env_id=row["dsrl_env_id"], origin="dsrl",
        )
    return tasks


def _shipped_tasks(folder: Path) -> dict[str, Task]:
    tasks: dict[str, Task] = {}
    if not folder.is_dir():
        return tasks
    for meta_path in sorted(folder.glob("*/dataset.json")):
        try:
            meta = json.loads(meta_path.read_text())
            rec = dict(meta["task"])
        except (OSError, ValueError, KeyError) as exc:
            raise FeedbackgenError(f"shipped dataset record {meta_path} is unreadable ({exc}); "
                                   "fix or remove that folder") from None
        rec["origin"] = "shipped"
        rec["source_path"] = str(meta_path.parent / meta.get("file", "data.hdf5"))
        task = Task.from_dict(rec)
        tasks[task.name] = task
    return tasks


def all_tasks() -> dict[str, Task]:
    """Every known task by name: DSRL's 38, then the shipped datasets."""
    tasks = dict(_dsrl_tasks())
    tasks.update(_shipped_tasks(datasets_dir()))
    return tasks


def get_task(name: str) -> Task:
    """Look a task up by name (case-insensitive), by DSRL offline id, or by simulator env id.

    Raises:
        FeedbackgenError: unknown task, with the closest known names.
    """
    tasks = all_tasks()
    if name in tasks:
        return tasks[name]
    lowered = {k.lower(): t for k, t in tasks.items()}
    if name.lower() in lowered:
        return lowered[name.lower()]
    for t in tasks.values():
        if t.origin == "dsrl" and name in (t.dsrl_env_id, t.env_id):
            return t
    close = difflib.get_close_matches(name, list(tasks), n=3)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    folder = datasets_dir()
    if not folder.is_dir():
        raise FeedbackgenError(
            f"unknown task '{name}'{hint}; the shipped datasets (the *-mini tasks) were not found: {folder} "
            "does not exist. Set FEEDBACKGEN_DATASETS_DIR to the datasets/ folder of a clone of the "
            "repository (an installed wheel does not carry them)")
    raise FeedbackgenError(f"unknown task '{name}'{hint}; `feedbackgen tasks` lists the known tasks")
