"""Training curves of a run (PNG): losses, g_θ against δ, ν and z_ref over steps."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from feedbackgen._io import atomic_path


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl`` file, or of ``RUN_DIR/metrics.jsonl`` when ``path`` is a
    folder. A missing file gives []; blank or unreadable lines, and lines that are not a record with
    a ``step``, are skipped (a run killed mid-write can leave half a line)."""
    p = Path(path)
    if p.is_dir():
        p = p / "metrics.jsonl"
    if not p.is_file():
        return []
    rows = []
    for line in p.read_text().splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and "step" in row:
            rows.append(row)
    return rows


def plot_training_curves(records: list[dict[str, Any]], out: str | Path, *, delta: float | None = None,
                         bc_steps: int | None = None, title: str = "") -> Path:
    """Draw the training curves of ``records`` (``metrics.jsonl`` lines) into ``out`` (PNG, atomic).

    Panels: losses (BC, preference, total), g_θ with the constraint level δ, ν, z_ref (and the
    batch safe fraction). Panels whose metrics never appear say so instead of staying blank.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    def series(key: str) -> tuple[list[float], list[float]]:
        xs, ys = [], []
        for r in records:
            v = r.get(f"train/{key}")
            if v is not None:
                xs.append(r["step"])
                ys.append(v)
        return xs, ys

    fig, axes = plt.subplots(2, 2, figsize=(11, 7))
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.08, top=0.9, wspace=0.2, hspace=0.35)
    ax = axes[0, 0]
    drawn = False
    for key, label in (("bc_loss", "BC loss"), ("pref_loss", "L_pref"), ("loss", "Lagrangian")):
        xs, ys = series(key)
        if xs:
            ax.plot(xs, ys, label=label)
            drawn = True
    ax.set_title("losses")
    if drawn:
        ax.legend()
        ax.set_yscale("symlog", linthresh=1e-2)

    panels = [(axes[0, 1], "g", "g_θ (safety alignment)"), (axes[1, 0], "nu", "ν (Lagrange multiplier)"),
              (axes[1, 1], "zref", "z_ref (reference point)")]
    for ax, key, name in panels:
        xs, ys = series(key)
        ax.set_title(name)
        if xs:
            ax.plot(xs, ys, label=key)
        else:
            ax.text(0.5, 0.5, f"no {key} (not used by this algorithm)", ha="center", va="center",
                    transform=ax.transAxes, color="grey")
    logged_delta, logged_ceiling = series("delta")[1], series("g_ceiling")[1]
    if delta is None and logged_delta:
        delta = logged_delta[-1]
    if logged_ceiling and series("g")[0]:
        axes[0, 1].axhline(logged_ceiling[-1], color="black", ls=":",
                           label=f"ceiling {logged_ceiling[-1]:.3f}")
    if delta is not None and series("g")[0]:
        axes[0, 1].axhline(delta, color="red", ls="--", label=f"δ = {delta:.3f}")
        xs, ys = series("safe_frac")
        if xs:
            axes[0, 1].plot(xs, ys, color="grey", alpha=0.5, label="safe fraction (batch)")
        axes[0, 1].set_ylim(0, 1)
        axes[0, 1].legend()
    for ax in axes.flat:
        ax.set_xlabel("step")
        if bc_steps:
            ax.axvline(bc_steps, color="black", alpha=0.25, ls=":")
    if title:
        fig.suptitle(title)
    out = Path(out)
    try:
        with atomic_path(out, keep_suffix=True) as tmp:
            fig.savefig(tmp, dpi=100)
    finally:
        plt.close(fig)
    return out
