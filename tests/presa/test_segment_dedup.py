"""One forward pass per distinct segment of a step, and PreSa's safety rows drawn from the pairs:
the same loss and gradients as scoring every position on its own, exact resume. Timings are in
benchmarks/bench_train.py, not here."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from tiny_run import TINY

from feedbackgen.make import MakeConfig, make_store
from presa.algos import get_algorithm
from presa.algos.presa import pair_safety_rows
from presa.checkpoint import load_checkpoint
from presa.config import KEYS_ADDED_LATER, TrainConfig, resolve_config, saved_config
from presa.data import TrainingData
from presa.trainer import resume, train


def test_saved_config_reads_runs_made_before_safety_draw_existed() -> None:
    # a run directory written before the option: its safety rows were drawn independently
    assert KEYS_ADDED_LATER["safety_draw"] == "independent"
    assert saved_config({"threshold": 4.0}).safety_draw == "independent"
    assert saved_config({"threshold": 4.0, "safety_draw": "pairs"}).safety_draw == "pairs"
    assert TrainConfig().safety_draw == "pairs"
    # an old every-key config of an algorithm that does not read it: nothing to fill in
    old = {k: v for k, v in TrainConfig(algo="bc_all", threshold=4.0).to_dict().items() if k != "safety_draw"}
    assert "safety_draw" not in saved_config(old).valid_keys()


# ------------------------------------------------------------------------------ distinct segments
def _paired_store(tmp_path: Path, tiny_task) -> Path:
    """A store as ``feedbackgen make`` writes it by default: safety segments are the pairs' first
    segments, one safety row per pair."""
    cfg = MakeConfig(task=tiny_task.name, noise=0.1, seed=3, n_pairs=200, n_safety=200,
                     out=tmp_path / "stores" / "paired.zarr")
    return make_store(cfg)


def _algo(store: Path, **over):
    cfg = resolve_config(suite="bullet", overrides={**TINY, "threshold": 10.0, "bc_steps": 0,
                                                     "warmup_steps": 0, "precision": "fp32", **over})
    data = TrainingData.from_store(store, threshold=cfg.threshold, gamma=cfg.gamma)
    algo = get_algorithm("presa")(cfg, data, torch.Generator().manual_seed(0))
    algo.make_reference()
    with torch.no_grad():  # move away from the reference so that scores and gradients are not ~0
        for p in algo.policy.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    return algo, data


def _plain_scores(algo, segments: torch.Tensor) -> torch.Tensor:
    """S_θ of every position of ``segments`` on its own (no deduplication), as the method defines it."""
    d = algo.data
    rows = d.seg_index[segments]
    flat = rows.reshape(-1)
    params = algo.policy.params(d.obs[flat])
    logp = algo.policy.score_log_prob(params, d.actions[flat], algo.ref_params[flat], algo.action_var)
    return algo.cfg.alpha * ((logp.view(rows.shape) - algo.ref_logp[rows]) * d.seg_weight[segments]).sum(-1)


def test_segment_scores_run_each_distinct_segment_once_with_the_same_loss_and_gradient(
        tmp_path: Path, tiny_task) -> None:
    algo, data = _algo(_paired_store(tmp_path, tiny_task))
    algo.policy.eval()
    g = torch.Generator().manual_seed(5)
    p = torch.randint(data.n_pairs, (24,), generator=g)
    s = pair_safety_rows(data)[p]
    segments = torch.cat([data.pref_a[p], data.pref_b[p], data.safety_segment[s], data.pref_b[p[:3]]])
    weights = torch.randn(segments.shape[0], generator=g)
    n_rows = []
    handle = algo.policy.head.register_forward_hook(lambda m, i, o: n_rows.append(o.shape[0]))
    try:
        scores, _ = algo.segment_scores(segments)
        loss = (weights * scores).sum()
        grads = torch.autograd.grad(loss, list(algo.policy.parameters()))
    finally:
        handle.remove()
    plain = _plain_scores(algo, segments)
    plain_grads = torch.autograd.grad((weights * plain).sum(), list(algo.policy.parameters()))
    assert n_rows == [int(torch.unique(segments).shape[0]) * data.horizon]  # one pass, distinct only
    assert n_rows[0] < segments.shape[0] * data.horizon
    torch.testing.assert_close(scores, plain, rtol=1e-5, atol=1e-6)
    for a, b in zip(grads, plain_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_segment_scores_without_duplicates_are_bit_identical_to_one_pass_over_all(
        tmp_path: Path, tiny_task) -> None:
    algo, data = _algo(_paired_store(tmp_path, tiny_task))
    algo.policy.eval()
    segments = torch.randperm(data.n_segments, generator=torch.Generator().manual_seed(2))[:40]
    assert torch.equal(algo.segment_scores(segments)[0], _plain_scores(algo, segments))


def test_pair_safety_rows_map_each_pair_to_the_safety_row_of_its_first_segment(
        tmp_path: Path, tiny_task, tiny_store: Path) -> None:
    data = TrainingData.from_store(_paired_store(tmp_path, tiny_task), threshold=10.0, gamma=0.99)
    rows = pair_safety_rows(data)
    assert rows is not None and data.n_pairs == data.n_safety
    assert torch.equal(data.safety_segment[rows], data.pref_a)
    assert torch.equal(torch.sort(rows).values, torch.arange(data.n_safety))  # one-to-one: uniform
    # 200 pairs but 150 safety rows: no one-to-one map, the safety rows are drawn on their own
    assert pair_safety_rows(TrainingData.from_store(tiny_store, threshold=10.0, gamma=0.99)) is None


def test_safety_draw_pairs_uses_the_pairs_rows_and_independent_draws_as_before(
        tmp_path: Path, tiny_task) -> None:
    store = _paired_store(tmp_path, tiny_task)
    algo, data = _algo(store)
    p = torch.randint(data.n_pairs, (16,), generator=torch.Generator().manual_seed(0))
    assert torch.equal(data.safety_segment[algo.draw_safety(p)], data.pref_a[p])
    wide, _ = _algo(store, safety_batch=24)
    s = wide.draw_safety(p)
    assert s.shape == (24,) and torch.equal(data.safety_segment[s[:16]], data.pref_a[p])
    assert bool(((s >= 0) & (s < data.n_safety)).all())
    ind, _ = _algo(store, safety_draw="independent")
    assert ind.pair_safety is None
    gen = torch.Generator().manual_seed(9)
    ind.gen = torch.Generator().manual_seed(9)
    assert torch.equal(ind.draw_safety(p), torch.randint(data.n_safety, (16,), generator=gen))


def test_paired_draws_train_and_resume_bit_identically(tmp_path: Path, tiny_task) -> None:
    store = _paired_store(tmp_path, tiny_task)
    cfg = resolve_config(suite="bullet", overrides={**TINY, "threshold": 10.0, "total_steps": 40,
                                                     "checkpoint_every": 10})
    full = train(cfg, store, tmp_path / "full")
    info = json.loads((tmp_path / "full" / "run.json").read_text())
    assert info["precision"]["requested"] == "auto"

    class Stop(Exception):
        pass

    def stop(event) -> None:
        if event.step == 27:
            raise Stop

    with pytest.raises(Stop):
        train(cfg, store, tmp_path / "part", callback=stop)
    part = resume(tmp_path / "part")
    assert part.resumed_from == 20 and part.step == 40
    a, b = load_checkpoint(full.checkpoint), load_checkpoint(part.checkpoint)
    for k in a["policy"]:
        assert torch.equal(a["policy"][k], b["policy"][k]), k
    assert a["nu"] == b["nu"] and math.isfinite(a["nu"])
