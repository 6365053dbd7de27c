"""summary.csv: the study's headline columns, one row per dataset × method × threshold plus 'all'."""

from __future__ import annotations

import csv
import io

import pytest

from presa.report import SUMMARY_FIELDS, RunResult, aggregate, summary_csv, write_report


def _run(method: str, threshold: float, seed: int, reward: float, cost: float) -> RunResult:
    return RunResult(suite="bullet", task="BallRun-mini", method=method, threshold=threshold, train_seed=seed,
                     normalized_reward=reward, normalized_cost=cost, safe=cost <= 1, episodes=20, eval_seed=0,
                     eval_path=f"/x/{method}-{threshold}-{seed}.json", run_dir=None)


def _rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_summary_columns_rows_and_statistics():
    runs = [_run("presa", 10, 0, 0.2, 0.5), _run("presa", 10, 1, 0.4, 1.5),
            _run("presa", 20, 0, 0.6, 2.0), _run("bc_all", 10, 0, 0.9, 3.0)]
    text = summary_csv(aggregate(runs))
    assert text.splitlines()[0] == ",".join(SUMMARY_FIELDS)
    assert SUMMARY_FIELDS == ("dataset", "method", "threshold", "seeds", "norm_reward_mean",
                              "norm_reward_std", "norm_cost_mean", "norm_cost_std")
    rows = {(r["method"], r["threshold"]): r for r in _rows(text)}
    assert set(rows) == {("presa", "10"), ("presa", "20"), ("presa", "all"),
                         ("bc_all", "10"), ("bc_all", "all")}
    k10 = rows[("presa", "10")]
    assert k10["dataset"] == "BallRun-mini" and k10["seeds"] == "2"
    assert float(k10["norm_reward_mean"]) == pytest.approx(0.3)
    assert float(k10["norm_reward_std"]) == pytest.approx(0.1)  # population std
    assert float(k10["norm_cost_mean"]) == pytest.approx(1.0)
    assert float(k10["norm_cost_std"]) == pytest.approx(0.5)
    every = rows[("presa", "all")]
    assert every["seeds"] == "2"
    assert float(every["norm_reward_mean"]) == pytest.approx(0.4)
    assert float(every["norm_cost_mean"]) == pytest.approx(4.0 / 3.0, rel=1e-5)
    assert rows[("bc_all", "all")]["seeds"] == "1"
    # per-method order: thresholds ascending, then 'all'
    order = [(r["method"], r["threshold"]) for r in _rows(text)]
    assert order.index(("presa", "10")) < order.index(("presa", "20")) < order.index(("presa", "all"))


def test_write_report_writes_summary(tmp_path):
    runs = [_run("presa", 20, 0, 0.5, 0.8), _run("cpl", 20, 0, 0.7, 1.8)]
    written = write_report(aggregate(runs), tmp_path)
    assert written["summary.csv"] == tmp_path / "summary.csv"
    rows = _rows((tmp_path / "summary.csv").read_text())
    assert [(r["method"], r["threshold"]) for r in rows] == [("presa", "20"), ("presa", "all"),
                                                             ("cpl", "20"), ("cpl", "all")]
