"""The baselines: their losses and data selection on hand cases and toys (their short real runs
through the trainer and exact resume: test_algorithm_contract.py, for every algorithm)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_run import one_thread  # noqa: F401 (autouse fixture)

from feedbackgen.errors import FeedbackgenError
from feedbackgen.publish import strip_store
from feedbackgen.store import open_store, split_columns
from presa import baseline_losses as bl
from presa import losses
from presa.algos import get_algorithm
from presa.algos.bc_safe import safe_episode_pool
from presa.algos.bc_safe_seg import safe_segment_pool
from presa.algos.binary import binary_labels
from presa.algos.trac import trac_labels, trac_loss
from presa.algos.two_stage import COST_MARGIN, COST_TEMPERATURE, StepModel, segment_threshold
from presa.config import applicable, resolve_config
from presa.data import TrainingData
from presa.heldout import segment_safe_oracle
from presa.trainer import train

SMALL = {"hidden": [32, 32], "pair_batch": 16, "safety_batch": 16, "bc_batch": 64, "log_every": 10,
         "checkpoint_every": 0, "warmup_steps": 10}


def _cfg(algo: str, threshold: float = 10.0, **kw):
    # SMALL and the step counts are a recipe for every algorithm: each takes the keys it reads
    recipe = applicable({**SMALL, "total_steps": 40, "bc_steps": 15}, algo)
    values = {**recipe, "algo": algo, "threshold": threshold, "seed": 0, **kw}
    return resolve_config(suite="bullet", preset="quick", overrides=values)


def _ranges(starts, lengths) -> set[int]:
    return {int(t) for s, n in zip(starts, lengths, strict=True) for t in range(int(s), int(s) + int(n))}


# ----------------------------------------------------------------------------------- data selection


@pytest.mark.parametrize("kappa", [5.0, 20.0])
def test_bc_safe_seg_pool_is_exactly_the_transitions_of_safe_segments(tiny_store: Path, kappa: float):
    data = TrainingData.from_store(tiny_store, threshold=kappa, gamma=0.99)
    store = open_store(tiny_store)
    k = store.threshold_index(kappa)
    train = ~split_columns(store)[1]  # the validation rows are held out from training
    safe = np.asarray(store.safety_segment)[train & (np.asarray(store.safety_label)[:, k] == 1)]
    expected = _ranges(np.asarray(store.segment_start)[safe], np.asarray(store.segment_length)[safe])
    pool = safe_segment_pool(data)
    assert pool.tolist() == sorted(expected)           # each transition once, sorted
    assert 0 < len(expected) < data.n_transitions


def test_bc_safe_seg_refuses_a_threshold_without_safe_segments(tiny_store: Path):
    data = TrainingData.from_store(tiny_store, threshold=5.0, gamma=0.99)
    data.safety_label = torch.zeros_like(data.safety_label)
    with pytest.raises(FeedbackgenError, match="no segment is labelled safe"):
        get_algorithm("bc_safe_seg").check_data(data, _cfg("bc_safe_seg", 5.0))


@pytest.mark.parametrize("kappa", [5.0, 10.0, 20.0])
def test_bc_safe_pool_is_the_episodes_with_oracle_cost_within_the_threshold(tiny_store: Path, kappa: float):
    data = TrainingData.from_store(tiny_store, threshold=kappa, gamma=0.99)
    store = open_store(tiny_store)
    cost = np.asarray(store.oracle.episode_cost)
    keep = cost <= kappa
    assert 0 < keep.sum() < keep.size
    expected = _ranges(np.asarray(store.episode_start)[keep], np.asarray(store.episode_length)[keep])
    assert safe_episode_pool(data).tolist() == sorted(expected)


def test_bc_safe_on_a_stripped_store_is_a_clear_error(tiny_store: Path, tmp_path: Path):
    stripped = strip_store(tiny_store, tmp_path / "stripped.zarr")
    with pytest.raises(FeedbackgenError, match="no oracle group") as exc:
        train(_cfg("bc_safe"), stripped, tmp_path / "run")
    assert "\n" not in str(exc.value)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("kappa", [5.0, 20.0])
def test_trac_labels_top_safe_half_desirable_every_unsafe_undesirable(tiny_store: Path, kappa: float):
    data = TrainingData.from_store(tiny_store, threshold=kappa, gamma=0.99)
    store = open_store(tiny_store)
    segs, labels = trac_labels(data)
    segs, labels = segs.numpy(), labels.numpy()
    safe = segment_safe_oracle(store, store.threshold_index(kappa))
    ret = np.asarray(store.oracle.segment_return, dtype=np.float64)
    pv, sv = split_columns(store)  # the validation rows are held out from training
    used = np.unique(np.concatenate([np.asarray(store.pref_a)[~pv], np.asarray(store.pref_b)[~pv],
                                     np.asarray(store.safety_segment)[~sv]]))
    # every unsafe segment the feedback uses is undesirable, and nothing else is
    assert set(segs[labels == 0]) == set(used[~safe[used]])
    # desirable: the safe segments at or above the median return of the safe ones
    safe_used = used[safe[used]]
    want = set(safe_used[ret[safe_used] >= np.quantile(ret[safe_used], 0.5)])
    assert set(segs[labels == 1]) == want and 0 < len(want) < len(safe_used) + 1
    # segment safety agrees with the stored oracle labels of the safety rows
    k = store.threshold_index(kappa)
    rows = np.asarray(store.safety_segment)
    assert np.array_equal(safe[rows], np.asarray(store.oracle.safety_label)[:, k] == 1)


def test_trac_on_a_stripped_store_is_a_clear_error(tiny_store: Path, tmp_path: Path):
    stripped = strip_store(tiny_store, tmp_path / "blind.zarr")
    data = TrainingData.from_store(stripped, threshold=20.0, gamma=0.99)
    with pytest.raises(FeedbackgenError, match="trac needs the ground-truth"):
        get_algorithm("trac").check_data(data, _cfg("trac"))


def test_trac_loss_is_weighted_log_sigmoid_classification():
    scores = torch.tensor([2.0, -1.0, 0.5, -3.0])
    good = torch.tensor([1.0, 1.0, 0.0, 0.0])
    w_u = 0.25 * 2 / 2
    want = -(torch.nn.functional.logsigmoid(torch.tensor([2.0, -1.0])).sum()
             + w_u * torch.nn.functional.logsigmoid(torch.tensor([-0.5, 3.0])).sum()) / 4
    assert torch.allclose(trac_loss(scores, good, 0.25), want)


def test_merged_binary_labels_follow_the_documented_rule():
    # pairs: (0, 1) b wins, (2, 3) a wins, (4, 5) tie, (6, 7) b wins, (8, 9) soft 0.8 -> b wins
    a = torch.tensor([0, 2, 4, 6, 8])
    b = torch.tensor([1, 3, 5, 7, 9])
    y = torch.tensor([1.0, 0.0, 0.5, 1.0, 0.8])
    # safety: 1, 2, 3, 5 safe; 0, 4 unsafe; 9 labelled safe then unsafe; 10 safe (in no pair)
    seg = torch.tensor([1, 2, 3, 4, 5, 0, 9, 9, 10])
    lab = torch.tensor([1.0, 1.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0])
    segments, labels = bl.merged_binary_labels(11, a, b, y, seg, lab)
    got = dict(zip(segments.tolist(), labels.tolist(), strict=True))
    assert got == {
        0: 0.0,   # loser and unsafe
        1: 1.0,   # winner and safe -> desirable
        2: 1.0,   # winner (as a) and safe
        3: 0.0,   # loser, although safe
        4: 0.0,   # tie but unsafe
        # 5: tie and safe -> no label; 6: loser without safety label -> undesirable
        6: 0.0,
        # 7: winner without a safety label -> no label
        8: 0.0,   # loser (soft label 0.8 for b)
        9: 0.0,   # winner but one of its labels says unsafe
        # 10: safe but in no pair -> no label
    }


def test_merged_labels_count_wins_and_losses_over_several_pairs():
    a, b = torch.tensor([0, 0, 1]), torch.tensor([1, 2, 2])
    y = torch.tensor([0.0, 0.0, 1.0])          # 0 beats 1, 0 beats 2, 2 beats 1
    seg, lab = torch.tensor([0, 1, 2]), torch.ones(3)
    segments, labels = bl.merged_binary_labels(3, a, b, y, seg, lab)
    # 2 has one win and one loss: no label
    assert dict(zip(segments.tolist(), labels.tolist(), strict=True)) == {0: 1.0, 1: 0.0}


def test_binary_labels_on_the_store_match_winner_and_safety(tiny_store: Path):
    data = TrainingData.from_store(tiny_store, threshold=10.0, gamma=0.99)
    segments, labels = binary_labels(data)
    store = open_store(tiny_store)
    k = store.threshold_index(10.0)
    safety = dict(zip(np.asarray(store.safety_segment).tolist(),
                      np.asarray(store.safety_label)[:, k].tolist(), strict=True))
    for s, lab in zip(segments.tolist(), labels.tolist(), strict=True):
        in_a = np.flatnonzero(np.asarray(store.pref_a) == s)
        in_b = np.flatnonzero(np.asarray(store.pref_b) == s)
        y = np.asarray(store.pref_label)
        won = (y[in_a] < 0.5).sum() + (y[in_b] > 0.5).sum()
        lost = (y[in_a] > 0.5).sum() + (y[in_b] < 0.5).sum()
        if lab == 1.0:
            assert won > lost and safety.get(s) == 1
        else:
            assert lost > won or safety.get(s) == 0
    assert 0 < labels.sum() < labels.numel()


# ----------------------------------------------------------------------------------------- losses


def test_kto_loss_is_one_minus_the_weighted_value_and_prefers_separation():
    good = torch.tensor([1.0, 1.0, 0.0])
    separated = bl.kto_loss(torch.tensor([3.0, 2.0, -3.0]), good, 0.0, 1.0, 0.5)
    mixed = bl.kto_loss(torch.tensor([-3.0, 2.0, 3.0]), good, 0.0, 1.0, 0.5)
    assert separated < mixed
    assert float(separated) == pytest.approx(1.0 - float(losses.safety_alignment(
        torch.tensor([3.0, 2.0, -3.0]), good, 0.0, 1.0, 0.5)))
    # hand value: w = (1, 1, 0.5*2/1 = 1), v = sigmoid(3), sigmoid(2), sigmoid(3)
    s = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    assert float(separated) == pytest.approx(1 - (2 * s(3) + s(2)) / 3, rel=1e-6)


def test_reward_model_loss_is_bradley_terry_on_summed_rewards():
    pred_a = torch.tensor([[1.0, 2.0, 9.0]])
    pred_b = torch.tensor([[0.5, 0.5, 9.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])       # the third step is padding
    y = torch.tensor([0.0])                      # a preferred: R(a) = 3, R(b) = 1
    assert float(bl.reward_model_loss(pred_a, pred_b, mask, y)) == pytest.approx(math.log1p(math.exp(-2.0)))


def test_cost_logits_put_the_boundary_half_a_unit_above_the_segment_threshold():
    cost = torch.tensor([[1.0, 1.0], [1.0, 2.0]])
    mask = torch.ones(2, 2)
    logit = bl.cost_logits(cost, mask, kappa_seg=2.0, margin=0.5, temperature=0.5)
    assert logit.tolist() == pytest.approx([1.0, -1.0])   # C = 2 safe, C = 3 unsafe


def test_discounted_budget_and_dual_and_actor_loss():
    assert bl.discounted_cost_threshold(10.0, 100, 1.0) == 10.0
    budget = bl.discounted_cost_threshold(10.0, 100, 0.99)
    assert budget == pytest.approx(0.1 * sum(0.99 ** t for t in range(100)))
    nu = torch.tensor(1.0)
    assert float(bl.lagrangian_dual_update(nu, torch.tensor([budget + 2.0]), budget, 0.1, 100.0)) == \
        pytest.approx(1.2)
    clipped = bl.lagrangian_dual_update(nu, torch.tensor([0.0]), budget, 1.0, 100.0)
    assert float(clipped) == 0.0
    assert bl.td_target(torch.tensor([1.0, 1.0]), torch.tensor([0.0, 1.0]), torch.tensor([10.0, 10.0]),
                        0.9).tolist() == pytest.approx([10.0, 1.0])
    q_r, q_c = torch.tensor([2.0, 4.0], requires_grad=True), torch.tensor([1.0, 1.0])
    loss = bl.lagrangian_td3bc_actor_loss(q_r, q_c, 2.0, torch.tensor([0.5, 0.5]), 2.5)
    # q = (0, 2): λ = 2.5 / 1; loss = −2.5·1 + 0.5
    assert float(loss.detach()) == pytest.approx(-2.0)
    loss.backward()
    assert q_r.grad.tolist() == pytest.approx([-1.25, -1.25])


def _toy_segments(rng: np.random.Generator, n: int, h: int):
    obs = torch.as_tensor(rng.normal(size=(n, h, 3)), dtype=torch.float32)
    act = torch.as_tensor(rng.uniform(-1, 1, size=(n, h, 2)), dtype=torch.float32)
    return obs, act


def _fit(model: StepModel, loss_fn, steps: int = 200) -> None:
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        loss = loss_fn()
        opt.zero_grad()
        loss.backward()
        opt.step()


def test_reward_model_ranks_segments_by_preference_on_a_toy():
    rng = np.random.default_rng(0)
    h, n = 5, 400
    obs, act = _toy_segments(rng, 2 * n, h)
    true = (obs[..., 0] + act[..., 0]).sum(-1)               # true reward r = obs_0 + act_0
    y = (true[n:] > true[:n]).float()                          # P(b ≻ a), b = second half
    mask = torch.ones(n, h)
    model = StepModel(3, 2, (32,), torch.Generator().manual_seed(0))

    def loss():
        pred = model(obs, act)
        return bl.reward_model_loss(pred[:n], pred[n:], mask, y)

    _fit(model, loss)
    test_obs, test_act = _toy_segments(np.random.default_rng(1), 200, h)
    with torch.no_grad():
        pred = (model(test_obs, test_act)).sum(-1)
    truth = (test_obs[..., 0] + test_act[..., 0]).sum(-1)
    agree = ((pred[:100] > pred[100:]) == (truth[:100] > truth[100:])).float().mean()
    assert agree > 0.9


def test_cost_model_separates_safe_from_unsafe_on_a_toy():
    rng = np.random.default_rng(0)
    h, n, kappa_seg = 4, 400, 1.0
    obs, act = _toy_segments(rng, n, h)
    true_cost = (obs[..., 1] > 0.5).float()                    # unit costs where obs_1 > 0.5
    safe = (true_cost.sum(-1) <= kappa_seg).float()
    assert 0.2 < safe.mean() < 0.8
    mask = torch.ones(n, h)
    model = StepModel(3, 2, (32,), torch.Generator().manual_seed(0), positive=True)
    _fit(model, lambda: bl.cost_model_loss(model(obs, act), mask, safe, kappa_seg, COST_MARGIN,
                                           COST_TEMPERATURE))
    t_obs, t_act = _toy_segments(np.random.default_rng(1), 300, h)
    t_cost = (t_obs[..., 1] > 0.5).float().sum(-1)
    with torch.no_grad():
        pred = model(t_obs, t_act)
        logits = bl.cost_logits(pred, torch.ones(300, h), kappa_seg, COST_MARGIN, COST_TEMPERATURE)
    assert ((logits > 0).float() == (t_cost <= kappa_seg).float()).float().mean() > 0.9
    assert float(pred.min()) >= 0.0                            # softplus costs
    assert np.corrcoef(pred.sum(-1).numpy(), t_cost.numpy())[0, 1] > 0.7   # on the scale of the real costs


def test_segment_threshold_reads_the_store_metadata(tiny_store: Path):
    data = TrainingData.from_store(tiny_store, threshold=20.0, gamma=0.99)
    meta = data.store.metadata
    assert meta["safety"]["rule"] == "scaled"
    h = meta["segments"]["resolved_length"]
    assert segment_threshold(data) == pytest.approx(20.0 * h / meta["task"]["max_episode_steps"])


# ----------------------------------------------------------------- what each loss reads from the store


def _train_steps(algo: str, data: TrainingData, steps: int) -> dict[str, torch.Tensor]:
    cfg = _cfg(algo, total_steps=steps + 5, bc_steps=3)
    a = get_algorithm(algo)(cfg, data, torch.Generator().manual_seed(0))
    for step in range(steps):
        a.update(step)
    return a.policy.state_dict()


def _same(sd1, sd2) -> bool:
    return all(torch.equal(sd1[k], sd2[k]) for k in sd1)


def test_each_alignment_baseline_reads_only_its_labels(tiny_store: Path):
    base = TrainingData.from_store(tiny_store, threshold=10.0, gamma=0.99)
    flipped_safety = TrainingData.from_store(tiny_store, threshold=10.0, gamma=0.99)
    flipped_safety.safety_label = 1.0 - flipped_safety.safety_label
    flipped_pref = TrainingData.from_store(tiny_store, threshold=10.0, gamma=0.99)
    flipped_pref.pref_label = 1.0 - flipped_pref.pref_label
    ref = {algo: _train_steps(algo, base, 6) for algo in ("cpl", "safety_only", "binary")}
    assert _same(ref["cpl"], _train_steps("cpl", flipped_safety, 6))           # no safety term
    assert not _same(ref["cpl"], _train_steps("cpl", flipped_pref, 6))
    assert _same(ref["safety_only"], _train_steps("safety_only", flipped_pref, 6))  # no preference term
    assert not _same(ref["safety_only"], _train_steps("safety_only", flipped_safety, 6))
    assert not _same(ref["binary"], _train_steps("binary", flipped_pref, 6))     # both
    assert not _same(ref["binary"], _train_steps("binary", flipped_safety, 6))


def test_safety_only_needs_a_positive_weight(tiny_store: Path):
    data = TrainingData.from_store(tiny_store, threshold=10.0, gamma=0.99)
    with pytest.raises(FeedbackgenError, match="nu_init"):
        get_algorithm("safety_only").check_data(data, _cfg("safety_only", nu_init=0.0))


def test_two_stage_needs_both_phases(tiny_store: Path):
    data = TrainingData.from_store(tiny_store, threshold=10.0, gamma=0.99)
    with pytest.raises(FeedbackgenError, match="bc_steps < total_steps"):
        get_algorithm("two_stage").check_data(data, _cfg("two_stage", bc_steps=40, total_steps=40))


# ------------------------------------------------------------------------- real runs via the trainer
# (every registered algorithm's runs, checkpoints and exact resume: test_algorithm_contract.py)


def test_presa_refuses_a_delta_above_the_label_noise_ceiling_before_training(tiny_store: Path,
                                                                             tmp_path: Path):
    # 10 % flip noise caps g below 0.99 whatever the policy: refused before any step, no run folder
    want = r"delta 0.99 cannot be met .*label noise 0\.\d+: flip noise 0.1"
    with pytest.raises(FeedbackgenError, match=want):
        train(_cfg("presa", delta=0.99), tiny_store, tmp_path / "refused")
    assert not (tmp_path / "refused").exists()


@pytest.mark.parametrize("gate", ["safe", "not_unsafe"])
def test_presa_preference_gate_follows_the_winners_safety_label(tiny_store: Path, gate: str):
    from presa.algos.presa import preference_gate

    data = TrainingData.from_store(tiny_store, threshold=20.0, gamma=0.99)
    assert preference_gate(data, "none") is None
    count_a, count_b = preference_gate(data, gate)
    label = {int(s): float(u) for s, u in zip(data.safety_segment, data.safety_label, strict=True)}
    for seg, count in ((data.pref_a, count_a), (data.pref_b, count_b)):
        for s, c in zip(seg.tolist(), count.tolist(), strict=True):
            u = label.get(s)  # None: the segment has no safety label
            expected = (u == 1.0) if gate == "safe" else (u != 0.0)
            assert c == float(expected)
    # not vacuous: the pairs hold both counted and uncounted preferences
    counted = float(count_a.sum() + count_b.sum())
    assert 0 < counted < 2 * len(count_a)
