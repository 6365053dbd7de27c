"""Each loss and dual update against values computed by hand (label convention y = P(b ≻ a))."""

from __future__ import annotations

import math

import pytest
import torch

from presa import losses
from presa.policy import DeterministicPolicy, GaussianPolicy, build_policy, dropout, dropout_mask


def t(*xs: float) -> torch.Tensor:
    return torch.tensor(xs, dtype=torch.float32)


def close(a: torch.Tensor | float, b: float, tol: float = 1e-6) -> bool:
    return abs(float(a) - b) < tol


def test_segment_scores_discounted_scaled_log_ratio() -> None:
    # α · Σ_t γ^t (logp − ref) = 0.5 · (1·(−1 + 1.5) + 0.9·(−2 + 1)) = 0.5 · (0.5 − 0.9) = −0.2
    logp, ref, w = t(-1.0, -2.0)[None], t(-1.5, -1.0)[None], t(1.0, 0.9)[None]
    assert close(losses.segment_scores(logp, ref, w, 0.5)[0], -0.2)
    # padding (weight 0) contributes nothing
    assert close(
        losses.segment_scores(t(-1.0, -99.0)[None], t(0.0, 0.0)[None], t(1.0, 0.0)[None], 1.0)[0], -1.0
    )


def test_preference_loss_by_hand() -> None:
    sp2 = math.log1p(math.exp(-2.0))  # softplus(−2) = 0.126928
    s_a, s_b = t(0.0), t(2.0)
    # y = 1 (b preferred, and b scores higher): softplus(−(S_b − S_a))
    assert close(losses.preference_loss(s_a, s_b, t(1.0)), sp2)
    # y = 0 (a preferred): softplus(−(S_a − S_b)) = softplus(2)
    assert close(losses.preference_loss(s_a, s_b, t(0.0)), sp2 + 2.0)
    # y = ½: the average of both
    assert close(losses.preference_loss(s_a, s_b, t(0.5)), 0.5 * (sp2 + sp2 + 2.0))
    # conservative bias λ_cb = 0.5, S_a = 2, S_b = 1, y = 1: softplus(−(1 − 0.5·2)) = log 2
    assert close(losses.preference_loss(t(2.0), t(1.0), t(1.0), 0.5), math.log(2.0))
    # batch mean
    both = losses.preference_loss(t(0.0, 0.0), t(2.0, 2.0), t(1.0, 0.0))
    assert close(both, 0.5 * (sp2 + sp2 + 2.0))
    # λ_cb = 1 is the Bradley–Terry cross-entropy of sigmoid(S_b − S_a) against y
    y, d = 0.3, 0.7
    bce = -(y * math.log(1 / (1 + math.exp(-d))) + (1 - y) * math.log(1 - 1 / (1 + math.exp(-d))))
    assert close(losses.preference_loss(t(0.0), t(d), t(y)), bce, 1e-5)


def test_preference_accuracy_ignores_ties() -> None:
    acc = losses.preference_accuracy(t(0.0, 1.0, 0.0), t(1.0, 0.0, 0.0), t(1.0, 1.0, 0.5))
    assert close(acc, 0.5)
    assert close(losses.preference_accuracy(t(0.0), t(1.0), t(0.5)), 0.0)


def test_safety_values_and_weights() -> None:
    v = losses.safety_values(t(1.0, 1.0), t(1.0, 0.0), 0.5, 2.0)
    assert close(v[0], 1 / (1 + math.exp(-1.0)))  # safe: sigmoid(β(S − z)) = sigmoid(1)
    assert close(v[1], 1 / (1 + math.exp(1.0)))  # unsafe: sigmoid(β(z − S)) = sigmoid(−1)
    w = losses.safety_weights(t(1.0, 1.0, 1.0, 0.0), 0.5)
    assert torch.allclose(w, t(1.0, 1.0, 1.0, 1.5))  # η · N_safe / N_unsafe = 0.5 · 3 / 1
    assert torch.allclose(losses.safety_weights(t(0.0, 0.0), 0.5), t(0.25, 0.25))  # counts clamped at 1
    assert torch.allclose(losses.safety_weights(t(1.0, 1.0), 0.5), t(1.0, 1.0))


def test_safety_alignment_by_hand() -> None:
    # v = [σ(2), σ(0), σ(1)], w = [1, 1, 0.5·2/1] → g = mean(v)
    g = losses.safety_alignment(t(2.0, 0.0, -1.0), t(1.0, 1.0, 0.0), 0.0, 1.0, 0.5)
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    assert close(g, (sig(2) + 0.5 + sig(1)) / 3)
    # with η = 0.25 the unsafe one weighs 0.5
    g = losses.safety_alignment(t(2.0, 0.0, -1.0), t(1.0, 1.0, 0.0), 0.0, 1.0, 0.25)
    assert close(g, (sig(2) + 0.5 + 0.5 * sig(1)) / 2.5)


def test_lagrangian() -> None:
    assert close(losses.lagrangian(t(0.7)[0], t(0.6)[0], 2.0, 0.9), 1.3)


def test_dual_update_sgd_direction_and_clip() -> None:
    # g < δ: ν rises by lr (δ − g)
    assert close(losses.dual_update_sgd(t(1.0)[0], t(0.5)[0], 0.9, 0.1, 100.0), 1.04)
    # g > δ: ν falls, and never below 0
    assert close(losses.dual_update_sgd(t(1.0)[0], t(0.95)[0], 0.9, 0.1, 100.0), 0.995)
    assert close(losses.dual_update_sgd(t(0.005)[0], t(1.0)[0], 0.9, 0.1, 100.0), 0.0)
    # and never above ν_max
    assert close(losses.dual_update_sgd(t(99.99)[0], t(0.0)[0], 0.9, 1.0, 100.0), 100.0)


def test_dual_updates_move_nu_the_right_way_over_many_steps() -> None:
    nu = torch.tensor(1.0)
    for _ in range(100):  # constraint violated: g = 0.5 < δ = 0.9
        nu = losses.dual_update_sgd(nu, torch.tensor(0.5), 0.9, 0.01, 100.0)
    assert close(nu, 1.0 + 100 * 0.01 * 0.4, 1e-4)
    for _ in range(2000):  # constraint holds: g = 0.99 > δ (0.0009 per step)
        nu = losses.dual_update_sgd(nu, torch.tensor(0.99), 0.9, 0.01, 100.0)
    assert float(nu) == 0.0


def test_dual_update_pid_by_hand_and_reduces_to_sgd() -> None:
    nu, integral, err = losses.dual_update_pid(
        torch.tensor(1.0), None, torch.tensor(0.5), 0.9, 0.1, 1.0, 2.0, 100
    )
    assert close(integral, 1.04) and close(err, 0.4)
    assert close(nu, 1.04 + 1.0 * 0.4)  # no derivative on the first call
    nu, _, _ = losses.dual_update_pid(
        torch.tensor(1.0), torch.tensor(0.1), torch.tensor(0.5), 0.9, 0.1, 1.0, 2.0, 100
    )
    assert close(nu, 1.04 + 0.4 + 2.0 * (0.4 - 0.1))
    # k_p = k_d = 0, k_i = lr: identical to projected dual ascent
    sgd = integral = torch.tensor(1.0)
    prev = None
    for g in (0.2, 0.95, 0.99, 0.3, 1.0, 1.0):
        sgd = losses.dual_update_sgd(sgd, torch.tensor(g), 0.9, 0.5, 100.0)
        pid, integral, prev = losses.dual_update_pid(
            integral, prev, torch.tensor(g), 0.9, 0.5, 0.0, 0.0, 100.0
        )
        assert torch.equal(pid, sgd)


def test_zref_modes() -> None:
    scores = t(2.0, 4.0)  # batch mean 3
    assert close(losses.zref_update("ema", torch.tensor(1.0), scores, 0.9), 0.9 + 0.1 * 3)
    assert close(losses.zref_update("ema", torch.tensor(0.0), t(-5.0), 0.9), 0.0)  # clamped ≥ 0
    assert close(losses.zref_update("batch", torch.tensor(7.0), scores, 0.9), 3.0)
    assert close(losses.zref_update("batch", torch.tensor(7.0), t(-1.0), 0.9), 0.0)
    # zref_clamp=False: the reference point may go negative (ema and batch only)
    assert close(losses.zref_update("batch", torch.tensor(7.0), t(-1.0), 0.9, clamp=False), -1.0)
    assert close(losses.zref_update("ema", torch.tensor(0.0), t(-5.0), 0.9, clamp=False), -0.5)
    kl = torch.tensor(0.25)
    assert close(losses.zref_update("kl", torch.tensor(7.0), scores, 0.9, kl=kl, clamp=False), 0.25)
    assert close(losses.zref_update("kl", torch.tensor(7.0), scores, 0.9, kl=torch.tensor(0.25)), 0.25)
    assert close(losses.zref_update("zero", torch.tensor(7.0), scores, 0.9), 0.0)
    with pytest.raises(ValueError):
        losses.zref_update("kl", torch.tensor(0.0), scores, 0.9)
    s = torch.tensor([1.0, 2.0], requires_grad=True)
    assert not losses.zref_update("ema", torch.tensor(0.0), s, 0.5).requires_grad


def test_bc_loss() -> None:
    assert close(losses.bc_loss(t(-1.0, -3.0)), 2.0)


def test_deterministic_policy_log_prob_and_kl() -> None:
    pi = DeterministicPolicy(1, 1, (4,), 0.0)
    p = torch.atanh(t(0.5))[None]  # μ = tanh(p) = 0.5
    assert close(pi.log_prob_from_params(p, t(0.1)[None])[0], -0.16)  # −(0.5 − 0.1)²
    assert close(pi.kl_from_params(p, torch.zeros(1, 1))[0], 0.25)  # ‖0.5 − 0‖²
    assert close(pi.mean_from_params(p)[0, 0], 0.5)


def test_gaussian_policy_log_prob_and_kl() -> None:
    pi = GaussianPolicy(1, 1, (4,), 0.0)
    a = math.tanh(0.5)
    params = t(0.0, 0.0)[None]  # mean 0, log σ 0; u = atanh(a) = 0.5
    want = (-0.5 * 0.25 - 0.5 * math.log(2 * math.pi)) - math.log(1 - a * a)
    assert close(pi.log_prob_from_params(params, t(a)[None])[0], want, 1e-5)
    # KL(N(1, 1) ‖ N(0, 1)) = ½; KL(N(0, 1) ‖ N(0, 2²)) = log 2 + 1/8 − ½
    assert close(pi.kl_from_params(t(1.0, 0.0)[None], t(0.0, 0.0)[None])[0], 0.5, 1e-6)
    assert close(
        pi.kl_from_params(t(0.0, 0.0)[None], t(0.0, math.log(2))[None])[0], math.log(2) + 0.125 - 0.5, 1e-6
    )
    # log σ is clamped to [−5, 2]
    assert close(
        pi.log_prob_from_params(t(0.0, 10.0)[None], t(0.0)[None])[0],
        float(pi.log_prob_from_params(t(0.0, 2.0)[None], t(0.0)[None])[0]),
    )


@pytest.mark.parametrize("p", [0.25, 0.1])
def test_dropout_keeps_expected_fraction_and_scale(p: float) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.ones(512, 256)
    y = dropout(x, p, g)
    kept = (y != 0).float().mean()
    assert abs(float(kept) - (1 - p)) < 0.01
    assert torch.allclose(y[y != 0], torch.full_like(y[y != 0], 1 / (1 - p)))
    # same generator state -> same mask
    assert torch.equal(dropout(x, p, torch.Generator().manual_seed(0)), y)


@pytest.mark.parametrize("p,dtype", [(0.25, torch.float32), (0.5, torch.float32), (0.25, torch.bfloat16)])
def test_byte_dropout_mask_keeps_a_unit_iff_its_random_byte_is_at_least_256p(p: float, dtype) -> None:
    # the rule the masks have always followed (same seed, same masks, whatever the implementation)
    mask = dropout_mask((64, 256), p, torch.Generator().manual_seed(3), dtype=dtype)
    bits = torch.empty(64 * 256 // 8, dtype=torch.int64).random_(-(2**63), None,
                                                                 generator=torch.Generator().manual_seed(3))
    keep = bits.view(torch.uint8).view(64, 256) >= int(256 * p)
    assert mask.dtype == dtype
    assert torch.equal(mask, keep.to(dtype) * torch.tensor(1 / (1 - p), dtype=dtype))


def test_policy_init_from_generator_is_deterministic() -> None:
    a = build_policy(
        "deterministic", obs_dim=3, act_dim=2, hidden=(8, 8), generator=torch.Generator().manual_seed(1)
    )
    b = build_policy(
        "deterministic", obs_dim=3, act_dim=2, hidden=(8, 8), generator=torch.Generator().manual_seed(1)
    )
    c = build_policy(
        "deterministic", obs_dim=3, act_dim=2, hidden=(8, 8), generator=torch.Generator().manual_seed(2)
    )
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k])
    assert not torch.equal(a.state_dict()["head.weight"], c.state_dict()["head.weight"])


def test_input_linear_gradient_matches_autograd_linear() -> None:
    import presa.policy as pm

    pi = build_policy(
        "deterministic",
        obs_dim=8,
        act_dim=2,
        hidden=(64, 64),
        dropout=0.0,
        generator=torch.Generator().manual_seed(0),
    )
    g = torch.Generator().manual_seed(1)
    x, a = torch.randn(500, 8, generator=g), torch.rand(500, 2, generator=g) * 2 - 1
    pi.log_prob(x, a).mean().backward()
    fast = {k: p.grad.clone() for k, p in pi.named_parameters()}
    pi.zero_grad()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pm, "_linear", lambda lin, x, first: lin(x))
        pi.log_prob(x, a).mean().backward()
    for k, p in pi.named_parameters():
        assert torch.allclose(p.grad, fast[k], rtol=1e-5, atol=1e-8), k


def test_preference_loss_counts_only_the_preferences_that_count() -> None:
    sp2 = math.log1p(math.exp(-2.0))
    s_a, s_b, y = t(0.0, 0.0), t(2.0, 2.0), t(1.0, 0.0)
    ones = t(1.0, 1.0)
    # every preference counts: the plain loss
    assert close(losses.preference_loss(s_a, s_b, y, count_a=ones, count_b=ones),
                 losses.preference_loss(s_a, s_b, y))
    # pair 1 prefers b, pair 2 prefers a; a preference for a does not count: only pair 1's term
    assert close(losses.preference_loss(s_a, s_b, y, count_a=t(0.0, 0.0), count_b=ones), sp2)
    # a soft label splits a pair: y = ½ with only b counting leaves the "b wins" half
    assert close(losses.preference_loss(t(0.0), t(2.0), t(0.5), count_a=t(0.0), count_b=t(1.0)), sp2)
    # nothing counts: 0, and no NaN gradient
    sa = t(0.0).requires_grad_()
    zero = losses.preference_loss(sa, t(2.0), t(1.0), count_a=t(1.0), count_b=t(0.0))
    zero.backward()
    assert float(zero) == 0.0 and float(sa.grad) == 0.0
