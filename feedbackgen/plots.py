"""The dataset plot users look at first: episode reward against episode cost, thresholds drawn.

Each point is one episode of the source (its reward and cost sums); the task's cost thresholds κ
are vertical dashed lines, so one sees at a glance how many episodes each budget admits and
whether reward rises with cost. Works from a store (its ``oracle`` group) or from a source file.

matplotlib runs on the Agg backend (no display needed); the PNG is written atomically.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from feedbackgen._io import atomic_path
from feedbackgen.errors import FeedbackgenError


def plot_reward_cost(episode_reward: np.ndarray, episode_cost: np.ndarray,
                     thresholds: Sequence[float] | np.ndarray, out: str | Path, *, title: str = "") -> Path:
    """Scatter episode reward (y) against episode cost (x), with a vertical line per threshold.

    Args:
        episode_reward: (E,) reward sums.
        episode_cost: (E,) cost sums.
        thresholds: cost thresholds κ to draw.
        out: the PNG to write.
        title: figure title.

    Returns:
        ``out``.
    """
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    out = Path(out)
    reward = np.asarray(episode_reward, dtype=np.float64)
    cost = np.asarray(episode_cost, dtype=np.float64)
    fig, ax = plt.subplots(figsize=(6.4, 4.8), dpi=110)
    try:
        ax.scatter(cost, reward, s=10, alpha=0.5, color="tab:blue", edgecolors="none",
                   label=f"episodes ({reward.size})")
        colors = ("tab:green", "tab:orange", "tab:red", "tab:purple", "tab:brown")
        for i, t in enumerate(thresholds):
            share = float(np.mean(cost <= t)) if cost.size else 0.0
            ax.axvline(float(t), color=colors[i % len(colors)], linestyle="--", linewidth=1.2,
                       label=f"κ = {float(t):g} ({share:.0%} of episodes within)")
        ax.set_xlabel("episode cost")
        ax.set_ylabel("episode reward")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
        fig.tight_layout()
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise FeedbackgenError(f"cannot create folder {out.parent} ({exc.strerror}); "
                                   "choose another --out") from None
        with atomic_path(out, keep_suffix=True) as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)
    return out


def plot_store(path: str | Path, out: str | Path) -> Path:
    """:func:`plot_reward_cost` of a store's episodes (needs its ``oracle`` group).

    Raises:
        FeedbackgenError: the store is stripped (no ground truth to plot).
    """
    from feedbackgen.store import open_store

    data = open_store(path, lazy=True)
    if data.oracle is None:
        raise FeedbackgenError(f"{path} is stripped (no oracle group), so it has no episode rewards or "
                               "costs; plot the unstripped store or the source with --task/--source")
    task = data.metadata.get("task", {})
    reward, cost = np.asarray(data.oracle.episode_reward[...]), np.asarray(data.oracle.episode_cost[...])
    return plot_reward_cost(reward, cost, np.asarray(data.thresholds[...]), out,
                            title=f"{task.get('name', '')}: {data.store_id}")


def plot_source(task_name: str, out: str | Path, *, source: str | Path | None = None,
                download: bool = True) -> Path:
    """:func:`plot_reward_cost` of a task's source file (found as ``feedbackgen make`` finds it)."""
    from feedbackgen.sources import locate_source, read_dsrl
    from feedbackgen.tasks import get_task

    task = get_task(task_name)
    path = locate_source(task, source, download=download)
    with read_dsrl(path, lazy=True) as traj:
        reward, cost = traj.episode_returns()
    return plot_reward_cost(reward, cost, task.thresholds, out, title=f"{task.name}: {path.name}")
