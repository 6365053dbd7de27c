"""PreSa: preference alignment under a safety-alignment constraint (docs/method.md).

Phase 1 (steps < ``bc_steps``): behaviour cloning on every transition; the result becomes the
frozen reference π_ref (see :class:`presa.algos.base.ReferenceAlignment`), whose residual action
variance calibrates the scores (log-likelihood ratios in nats). When phase 2 starts, the
attainable ceiling of g_θ on this store and threshold is computed (:mod:`presa.ceiling`) and δ
is chosen from it (or a given δ is checked against it). Phase 2, per step::

    pairs (a, b, y = P(b ≻ a)) and safety segments (σ, u) drawn uniformly (by default the safety
        rows of the drawn pairs where the store's safety segments are its pairs' segments:
        ``safety_draw``, :func:`pair_safety_rows`)
    S_θ for the distinct segments among the 2·pair_batch + safety_batch in one forward pass (no dropout)
    z_ref ← reference point (zero by default | ema | batch | kl), detached
    g_θ   = weighted KTO-style value of the safety batch
    L     = L_pref(S_a, S_b, y) + ν · (δ_target − g_θ)     → one Adam step on θ
    ν     ← dual update towards δ_target = δ + margin (sgd: clip(ν + lr_ν(δ_target − g_θ), 0, ν_max); or pid)
"""

from __future__ import annotations

from typing import Any

import torch

from feedbackgen.errors import FeedbackgenError
from presa import ceiling as ceiling_rule
from presa import losses
from presa.algos.base import ReferenceAlignment, register
from presa.config import TrainConfig
from presa.data import TrainingData


def require_both_safety_classes(data: TrainingData, algo: str) -> None:
    """Raise unless the safety labels at the run's threshold hold both safe and unsafe segments.

    The safety alignment (and ``two_stage``'s cost classifier) learns to separate safe from unsafe
    segments; with one class only there is nothing to separate and training would run on a
    meaningless constraint.
    """
    n = data.n_safety
    n_safe = int((data.safety_label > 0.5).sum()) if n else 0
    if n and n_safe in (0, n):
        kind, other = ("safe", "unsafe") if n_safe == n else ("unsafe", "safe")
        raise FeedbackgenError(f"{algo}: all {n} safety labels at threshold {data.threshold:g} are {kind} "
                               f"(none {other}), and it needs both; choose another --threshold or a store "
                               "with both kinds of segments")


def label_purity(data: TrainingData) -> tuple[float, float, str]:
    """(π_safe, π_unsafe, source) of the training safety labels (:mod:`presa.ceiling`): from the
    store's recorded noise model, or 1 for human labels, whose quality is unknown."""
    sources = data.store.metadata.get("label_sources", [])
    if any(str(src.get("id", "")).startswith("human:") for src in sources if isinstance(src, dict)):
        return 1.0, 1.0, "human labels: purity unknown, taken as 1"
    return ceiling_rule.purity_from_noise_model(data.store.metadata.get("safety"),
                                                float(data.safety_label.mean()))


def pair_safety_rows(data: TrainingData) -> torch.Tensor | None:
    """For each training pair row i, the safety row whose segment is the pair's first segment
    (``pref_a[i]``; else, for every row, ``pref_b[i]``), when that is one-to-one between the
    pairs and the safety rows — as in the stores ``feedbackgen make`` writes by default, whose
    safety segments are the pairs' first segments (``safety_from_pairs``). None otherwise.

    Drawing pair rows uniformly and taking these safety rows draws the safety rows uniformly too,
    so the safety batch has the distribution of an independent draw, and its segments are
    among the step's pair segments (scored once, :meth:`ReferenceAlignment.segment_scores`).
    """
    n = data.n_pairs
    if n == 0 or data.n_safety != n:
        return None
    seg = data.safety_segment
    row_of = torch.full((data.n_segments,), -1, dtype=torch.int64, device=seg.device)
    row_of[seg] = torch.arange(n, device=seg.device)
    if int((row_of >= 0).sum()) != n:  # a segment in two safety rows: no one-to-one map
        return None
    for side in (data.pref_a, data.pref_b):
        rows = row_of[side]
        if bool((rows >= 0).all()) and int(torch.unique(rows).shape[0]) == n:
            return rows
    return None


def preference_gate(data: TrainingData, gate: str) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Per training pair, (P,) 0/1 weights of a preference for a and for b (None: all count).

    ``safe``: a preference counts only when the segment it prefers is labelled safe at the run's
    threshold; ``not_unsafe``: unless that segment is labelled unsafe (segments without a safety
    label count). At a larger threshold more segments are safe, so more of the preferences — those
    for costlier, higher-reward behaviour — shape the policy (docs/method.md, "Preference gate").
    """
    if gate == "none":
        return None
    label = torch.full((data.n_segments,), -1.0, device=data.pref_a.device)  # -1: no safety label
    label[data.safety_segment] = data.safety_label
    counts = (label > 0.5) if gate == "safe" else (label != 0.0)
    return counts[data.pref_a].to(torch.float32), counts[data.pref_b].to(torch.float32)


@register("presa")
class PreSa(ReferenceAlignment[TrainConfig]):
    """The PreSa algorithm (it reads every key); state beyond the networks: ν (and the PID terms)
    and z_ref."""

    needs_preferences = True
    needs_safety = True

    @classmethod
    def check_data(cls, data: TrainingData, cfg: TrainConfig) -> None:
        super().check_data(data, cfg)
        require_both_safety_classes(data, cls.name)
        if cfg.delta is not None:
            # the label-noise part of the ceiling needs no policy: refuse a δ above it before any
            # training (the score-scale part is checked again when alignment starts)
            inf = torch.full_like(data.safety_label, float("inf"))
            noise_only = ceiling_rule.ceiling(data.safety_label, inf, -inf, beta_s=cfg.beta_s, eta=cfg.eta,
                                              purity=label_purity(data), beta_safe=cfg.beta_safe)
            ceiling_rule.choose_delta(noise_only, cfg.delta, cfg.delta_fraction, threshold=data.threshold,
                                      before_training=True)

    def __init__(self, cfg: TrainConfig, data: TrainingData, generator: torch.Generator) -> None:
        super().__init__(cfg, data, generator)
        self.nu = torch.tensor(cfg.nu_init, dtype=torch.float32, device=self.device)
        self.zref = torch.tensor(0.0, dtype=torch.float32, device=self.device)
        self.pid_integral = self.nu.clone()
        self.pid_prev_error: torch.Tensor | None = None
        self.ceiling: ceiling_rule.Ceiling | None = None
        self.delta = self.delta_target = float("nan")
        self.pair_safety = pair_safety_rows(data) if cfg.safety_draw == "pairs" else None
        self.pref_counts = preference_gate(data, cfg.pref_gate)

    def _cache_reference(self) -> None:
        super()._cache_reference()
        self.set_constraint()

    def set_constraint(self) -> None:
        """Compute g_θ's attainable ceiling on the training safety segments and choose δ (or check
        the configured one). Deterministic given the reference, so a resumed run gets the same."""
        cfg, d = self.cfg, self.data
        s_max, s_min = self.score_bounds(d.safety_segment)
        self.ceiling = ceiling_rule.ceiling(d.safety_label, s_max, s_min, beta_s=cfg.beta_s, eta=cfg.eta,
                                            purity=label_purity(d), beta_safe=cfg.beta_safe)
        self.delta = ceiling_rule.choose_delta(self.ceiling, cfg.delta, cfg.delta_fraction,
                                               threshold=d.threshold)
        self.delta_target = min(self.delta + cfg.delta_margin, (self.delta + self.ceiling.value) / 2.0)

    def align_update(self, step: int) -> dict[str, torch.Tensor | float]:
        cfg, d = self.cfg, self.data
        p = d.sample(self.gen, d.n_pairs, cfg.pair_batch)
        s = self.draw_safety(p)
        y = d.pref_label[p]
        safe = d.safety_label[s]
        segments = torch.cat([d.pref_a[p], d.pref_b[p], d.safety_segment[s]])
        scores, kl = self.segment_scores(segments, with_kl=cfg.zref_mode == "kl")
        n = cfg.pair_batch
        s_a, s_b, s_s = scores[:n], scores[n:2 * n], scores[2 * n:]

        zref = losses.zref_update(cfg.zref_mode, self.zref, s_s, cfg.zref_momentum,
                                  kl[2 * n:].mean() if kl is not None else None, clamp=cfg.zref_clamp)
        g = losses.safety_alignment(s_s, safe, zref, cfg.beta_s, cfg.eta, cfg.beta_safe)
        count_a, count_b = ((None, None) if self.pref_counts is None
                            else (self.pref_counts[0][p], self.pref_counts[1][p]))
        pref = losses.preference_loss(s_a, s_b, y, cfg.lambda_cb, count_a, count_b)
        loss = losses.lagrangian(pref, g, self.nu, self.delta_target)

        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()

        self.zref = zref
        self.dual_update(g)
        with torch.no_grad():
            n_safe = safe.sum()
            s_det = s_s.detach()
            return {
                "loss": loss.detach(), "pref_loss": pref.detach(), "g": g.detach(), "nu": self.nu,
                "zref": zref, "safe_frac": n_safe / safe.numel(),
                "pref_acc": losses.preference_accuracy(s_a.detach(), s_b.detach(), y),
                "score_safe": (s_det * safe).sum() / n_safe.clamp(min=1),
                "score_unsafe": (s_det * (1 - safe)).sum() / (safe.numel() - n_safe).clamp(min=1),
                "delta": self.delta, "g_ceiling": self.ceiling.value if self.ceiling else float("nan"),
            }

    def draw_safety(self, pairs: torch.Tensor) -> torch.Tensor:
        """The step's ``safety_batch`` safety rows, each uniform over the safety table: the safety
        rows of the drawn ``pairs`` (:func:`pair_safety_rows`; fresh draws for any beyond
        ``pair_batch``), or an independent draw (``safety_draw = independent``, or a store whose
        safety segments are not its pair segments)."""
        d, k = self.data, self.cfg.safety_batch
        if self.pair_safety is None:
            return d.sample(self.gen, d.n_safety, k)
        s = self.pair_safety[pairs[:k]]
        if k > s.shape[0]:
            s = torch.cat([s, d.sample(self.gen, d.n_safety, k - int(s.shape[0]))])
        return s

    def dual_update(self, g: torch.Tensor) -> None:
        """Move ν with the configured rule (g_θ detached)."""
        cfg = self.cfg
        if cfg.nu_rule == "sgd":
            self.nu = losses.dual_update_sgd(self.nu, g, self.delta_target, cfg.nu_lr, cfg.nu_max)
        else:
            self.nu, self.pid_integral, self.pid_prev_error = losses.dual_update_pid(
                self.pid_integral, self.pid_prev_error, g, self.delta_target, cfg.nu_lr, cfg.pid_kp,
                cfg.pid_kd, cfg.nu_max)

    def state_dict(self) -> dict[str, Any]:
        sd = super().state_dict()
        sd.update(nu=self.nu.clone(), zref=self.zref.clone(),
                  pid={"integral": self.pid_integral.clone(), "prev_error": self.pid_prev_error})
        return sd

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        super().load_state_dict(sd)
        self.nu = sd["nu"].to(self.device)
        self.zref = sd["zref"].to(self.device)
        self.pid_integral = sd["pid"]["integral"].to(self.device)
        prev = sd["pid"]["prev_error"]
        self.pid_prev_error = prev.to(self.device) if prev is not None else None
