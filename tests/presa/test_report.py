"""presa.report on synthetic run results: evaluation JSONs written into tmp_path with the real writer."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest

from feedbackgen.errors import FeedbackgenError
from feedbackgen.tasks import get_task
from presa.evaluate import EpisodeResult, EvalResult, write_eval_json
from presa.report import (
    AVERAGE,
    aggregate,
    build_report,
    collect_results,
    load_reference,
    to_csv,
    to_markdown,
    write_report,
)


def write_run(root: Path, *, task: str, method: str | None, threshold: float, seed: int,
              norm_rewards: list[float], costs: list[float], episodes_tag: str = "",
              metrics: list[dict] | None = None, run_json: dict | None = None) -> Path:
    """A run folder with one evaluation whose episodes have exactly the given normalised rewards."""
    t = get_task(task)
    run_dir = root / f"{task}-{method or 'anon'}-k{threshold:g}-s{seed}{episodes_tag}"
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    lo, hi = t.min_episode_reward, t.max_episode_reward
    eps = tuple(EpisodeResult(index=i, seed=1000 + i, reward=lo + nr * (hi - lo), cost=c,
                              length=t.max_episode_steps, terminated=False)
                for i, (nr, c) in enumerate(zip(norm_rewards, costs, strict=True)))
    res = EvalResult(task=t, threshold=threshold, seed=0, episodes=eps, method=method,
                     checkpoint=str(run_dir / "checkpoints" / "final.pt"), run_dir=str(run_dir), step=100,
                     train_seed=seed, trained_task=task)
    write_eval_json(run_dir, res)
    if metrics is not None:
        (run_dir / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
    if run_json is not None:
        (run_dir / "run.json").write_text(json.dumps(run_json))
    return run_dir


@pytest.fixture
def grid(tmp_path: Path) -> Path:
    """BallRun and CarRun × 3 thresholds × 2 seeds × methods A (unsafe, high reward), B, C (safe)."""
    root = tmp_path / "runs"
    for task in ("BallRun", "CarRun"):
        for k in (10.0, 20.0, 40.0):
            for s in (0, 10):
                # A: normalised cost 2 (unsafe) and high reward
                write_run(root, task=task, method="A", threshold=k, seed=s, norm_rewards=[0.9, 0.9],
                          costs=[2 * k, 2 * k])
                # B: normalised cost 0.5, reward 0.5 on seed 0 and 0.7 on seed 10 (task BallRun) or 0.3
                r = (0.5 if s == 0 else 0.7) if task == "BallRun" else 0.3
                write_run(root, task=task, method="B", threshold=k, seed=s, norm_rewards=[r, r],
                          costs=[0.25 * k, 0.75 * k])
                # C: safe, low reward
                write_run(root, task=task, method="C", threshold=k, seed=s, norm_rewards=[0.1, 0.3],
                          costs=[0.0, 0.0])
    return root


def test_collects_one_result_per_run(grid: Path):
    runs, skipped = collect_results([grid])
    assert len(runs) == 2 * 3 * 2 * 3 and skipped == []
    b = [r for r in runs
         if r.method == "B" and r.task == "BallRun" and r.threshold == 20.0 and r.train_seed == 10]
    assert len(b) == 1
    assert b[0].normalized_reward == pytest.approx(0.7) and b[0].normalized_cost == pytest.approx(0.5)
    assert b[0].safe and b[0].suite == "bullet" and b[0].episodes == 2


def test_aggregates_mean_and_std_per_task_threshold_and_suite(grid: Path):
    rep = build_report([grid])
    assert rep.methods == ["A", "B", "C"]
    b_ball = rep.cell("bullet", "BallRun", "B")
    assert b_ball.n == 6
    assert b_ball.reward_mean == pytest.approx(0.6) and b_ball.reward_std == pytest.approx(0.1)
    assert b_ball.cost_mean == pytest.approx(0.5) and b_ball.cost_std == pytest.approx(0.0)
    a_ball = rep.cell("bullet", "BallRun", "A")
    assert a_ball.cost_mean == pytest.approx(2.0) and a_ball.reward_mean == pytest.approx(0.9)
    # per threshold: two seeds each
    k20 = [c for c in rep.by_threshold if c.task == "BallRun" and c.method == "B" and c.threshold == 20.0]
    assert len(k20) == 1 and k20[0].n == 2 and k20[0].reward_mean == pytest.approx(0.6)
    assert len(rep.by_threshold) == 2 * 3 * 3
    # suite average: mean of per-task means, std across tasks (0.6 and 0.3)
    b_avg = rep.cell("bullet", AVERAGE, "B")
    assert b_avg.n == 2
    assert b_avg.reward_mean == pytest.approx(0.45) and b_avg.reward_std == pytest.approx(0.15)
    c_avg = rep.cell("bullet", AVERAGE, "C")
    assert c_avg.reward_mean == pytest.approx(0.2) and c_avg.cost_mean == pytest.approx(0.0)


def test_safe_unsafe_marking_and_best_safe_method(grid: Path):
    rep = build_report([grid])
    for task in ("BallRun", "CarRun", AVERAGE):
        a, b, c = (rep.cell("bullet", task, m) for m in "ABC")
        assert not a.safe and not a.best          # highest reward but unsafe
        assert b.safe and b.best                  # best among the safe ones
        assert c.safe and not c.best
    md = to_markdown(rep)
    assert "**0.60 ± 0.10** ★" in md              # best safe: bold + star
    assert "_0.90 ± 0.00_" in md and "_2.00 ± 0.00_" in md   # unsafe: italics (dimmed)
    assert "| **0.20 ± 0.00** |" in md            # safe, not best: bold, no star
    rows = list(csv.DictReader(io.StringIO(to_csv(rep))))
    best = {(r["level"], r["task"], r["threshold"]) for r in rows if r["best_safe"] == "1"}
    assert ("task", "BallRun", "") in best and ("suite", AVERAGE, "") in best
    assert all(r["method"] == "B" for r in rows if r["best_safe"] == "1")
    assert {r["safe"] for r in rows if r["method"] == "A"} == {"0"}


def test_best_safe_is_chosen_among_reference_methods_too(tmp_path: Path):
    root = tmp_path / "runs"
    # ours on BallRun: safe with reward 0.2; published TraC on BallRun is 0.27 / 0.49 (safe)
    write_run(root, task="BallRun", method="ours", threshold=10.0, seed=0, norm_rewards=[0.2], costs=[5.0])
    rep = build_report([root], reference=True)
    assert "TraC" in rep.reference_methods and "BCQ-Lag" in rep.reference_methods
    trac = rep.cell("bullet", "BallRun", "TraC")
    assert trac.source == "reference" and trac.reward_mean == pytest.approx(0.27) and trac.safe and trac.best
    assert not rep.cell("bullet", "BallRun", "ours").best
    bcq = rep.cell("bullet", "BallRun", "BCQ-Lag")
    assert not bcq.safe                           # 0.76 / 3.91
    # reference suite averages are recomputed over the tasks shown (only BallRun here)
    assert rep.cell("bullet", AVERAGE, "TraC").reward_mean == pytest.approx(0.27)
    md = to_markdown(rep)
    assert "TraC†" in md and "published" in md
    # without the flag no reference rows appear
    assert build_report([root]).reference_methods == []


def test_reference_table_is_loaded_without_average_rows():
    ref = load_reference()
    assert len({(c.suite, c.task) for c in ref}) == 38
    assert {c.method for c in ref} == {"BC-All", "BC-Safe", "CDT", "BCQ-Lag", "BEAR-Lag", "CPQ", "COptiDICE",
                                        "TraC"}
    assert all(c.task != AVERAGE for c in ref)


def test_prefers_the_largest_final_evaluation_of_a_run(tmp_path: Path):
    root = tmp_path / "runs"
    run = write_run(root, task="BallRun", method="m", threshold=10.0, seed=0, norm_rewards=[0.1], costs=[0.0])
    t = get_task("BallRun")
    lo, hi = t.min_episode_reward, t.max_episode_reward
    eps = tuple(EpisodeResult(i, i, lo + 0.8 * (hi - lo), 1.0, 10, False) for i in range(4))
    write_eval_json(run, EvalResult(task=t, threshold=10.0, seed=3, episodes=eps, method="m",
                                    checkpoint=str(run / "checkpoints" / "final.pt"), run_dir=str(run),
                                    trained_task="BallRun"))
    # an intermediate checkpoint with even more episodes must not be chosen
    eps8 = tuple(EpisodeResult(i, i, lo, 100.0, 10, False) for i in range(8))
    write_eval_json(run, EvalResult(task=t, threshold=10.0, seed=0, episodes=eps8, method="m",
                                    checkpoint=str(run / "checkpoints" / "step_0000050.pt"), run_dir=str(run),
                                    trained_task="BallRun"))
    runs, skipped = collect_results([root])
    assert len(runs) == 1 and runs[0].episodes == 4 and runs[0].normalized_reward == pytest.approx(0.8)
    assert len(skipped) == 2


def test_method_falls_back_to_run_json(tmp_path: Path):
    write_run(tmp_path, task="BallRun", method=None, threshold=10.0, seed=0, norm_rewards=[0.5], costs=[1.0],
              run_json={"algo": "bc_all"})
    runs, _ = collect_results([tmp_path])
    assert runs[0].method == "bc_all"


def test_write_report_files_and_plots(grid: Path, tmp_path: Path):
    # give a few runs training curves
    for run in sorted(grid.iterdir())[:4]:
        rows = [{"step": s, "train/loss": float(np.exp(-s / 50)), "eval/normalized_reward": s / 200,
                 "eval/normalized_cost": 1.5 - s / 200} for s in range(0, 201, 50)]
        (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + "not json\n")
    out = tmp_path / "report"
    written = write_report(build_report([grid], reference=True), out)
    assert set(written) == {"report.md", "results.csv", "runs.csv", "summary.csv", "reward_cost.png",
                            "training_curves.png"}
    for p in written.values():
        assert p.is_file() and p.stat().st_size > 0
    assert (out / "reward_cost.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    runs_rows = list(csv.DictReader((out / "runs.csv").open()))
    assert len(runs_rows) == 36
    assert not list(out.glob(".*"))              # no temp files left behind


def test_no_evaluations_is_a_clear_error(tmp_path: Path):
    with pytest.raises(FeedbackgenError, match="no evaluations found"):
        build_report([tmp_path])
    with pytest.raises(FeedbackgenError, match="does not exist"):
        build_report([tmp_path / "missing"])
    with pytest.raises(FeedbackgenError, match="no runs"):
        aggregate([])


def test_a_foreign_json_is_skipped_not_fatal(grid: Path):
    bad = next(grid.iterdir()) / "eval" / "notes.json"
    bad.write_text('{"hello": 1}')
    runs, skipped = collect_results([grid])
    assert len(runs) == 36
    assert any("notes.json" in f and "not a presa evaluation" in why for f, why in skipped)
