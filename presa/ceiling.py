"""The attainable ceiling of PreSa's safety measure g_θ, and the rule that picks δ from it.

g_θ = Σ w·v / Σ w, with v = sigmoid(β_s·(S_θ − z)) for a segment labelled safe and
sigmoid(β_s·(z − S_θ)) for one labelled unsafe (z = 0: "as likely as under π_ref"), weight 1 for
safe and η·N_safe/N_unsafe for unsafe segments. Two things cap it below 1
(docs/method.md, "The attainable ceiling"):

- **score scale**: a policy of the class can raise a segment's score only up to S_max (its mean on
  every action of the segment) and lower it only down to S_min (its mean as far away as the action
  space allows): v ≤ sigmoid(β_s·S_max) for a safe label, ≤ sigmoid(−β_s·S_min) for an unsafe one.
- **label noise**: with noisy labels some segments labelled safe are unsafe (share 1 − π_safe) and
  vice versa. A policy that separates the *true* classes (rather than memorising the noise) gets
  at most ½ on a mislabelled segment (it scores it no better than π_ref does).

Together::

    ceiling = [ Σ_safe-labelled  (π_s·sigmoid(β·S_max) + (1 − π_s)·½)
              + w_u·Σ_unsafe-labelled (π_u·sigmoid(−β·S_min) + (1 − π_u)·½) ] / (N_s + w_u·N_u)

The label purities π come from the store's recorded noise model (flip ε, asymmetric rates), never
from its oracle, so the same rule works on a blind store; for labels of unknown quality (human
labels, the logistic model) they are taken as 1 and the ceiling is the score-scale one alone.

Default δ = ½ + ρ·(ceiling − ½) with ρ = ``delta_fraction``: a fixed share of the way from chance
(½, where π_θ = π_ref puts every segment) to the best attainable value.

Example:
    >>> purity_from_noise_model({"noise_model": "flip", "noise": 0.1}, observed_safe=0.29)
    (0.7370689655172413, 0.966549295774648, 'flip noise 0.1')
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch

from feedbackgen.errors import FeedbackgenError


@dataclass(frozen=True)
class Ceiling:
    """The ceiling of g_θ on one store at one threshold.

    Attributes:
        value: the attainable ceiling (score scale and label noise together).
        scale: the score-scale ceiling alone (labels taken as exact).
        noise: the label-noise ceiling alone (every segment at v = 1 but the mislabelled at ½).
        purity_safe, purity_unsafe: share of segments labelled safe (unsafe) that truly are.
        purity_source: where the purities come from.
    """

    value: float
    scale: float
    noise: float
    purity_safe: float
    purity_unsafe: float
    purity_source: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def purity_from_noise_model(safety_meta: dict[str, Any] | None, observed_safe: float
                            ) -> tuple[float, float, str]:
    """(π_safe, π_unsafe, source) from a store's ``metadata.safety`` record and the share of
    training segments labelled safe.

    With false-safe rate f_s and false-unsafe rate f_u, the true safe share is
    p = (p_obs − f_s)/(1 − f_s − f_u), and π_safe = p·(1 − f_u)/p_obs,
    π_unsafe = (1 − p)·(1 − f_s)/(1 − p_obs).
    """
    meta = safety_meta or {}
    model = meta.get("noise_model", "none")
    if model == "none":
        return 1.0, 1.0, "no label noise"
    if model == "flip":
        fs = fu = float(meta.get("noise", 0.0))
        source = f"flip noise {fs:g}"
    elif model == "asymmetric":
        spec = meta.get("spec") or {}
        fs, fu = float(spec.get("false_safe", 0.0)), float(spec.get("false_unsafe", 0.0))
        source = f"asymmetric noise (false safe {fs:g}, false unsafe {fu:g})"
    else:
        return 1.0, 1.0, f"unknown ({model} noise model): purity taken as 1"
    if fs + fu >= 1.0 or not 0.0 < observed_safe < 1.0:
        return 1.0, 1.0, f"{source}: purity not identifiable, taken as 1"
    p = min(max((observed_safe - fs) / (1.0 - fs - fu), 0.0), 1.0)
    return p * (1.0 - fu) / observed_safe, (1.0 - p) * (1.0 - fs) / (1.0 - observed_safe), source


def ceiling(safe: torch.Tensor, s_max: torch.Tensor, s_min: torch.Tensor, *, beta_s: float, eta: float,
            purity: tuple[float, float, str], beta_safe: float | None = None) -> Ceiling:
    """The ceiling of g_θ for the training safety segments.

    Args:
        safe: labels, 1 safe / 0 unsafe, (M,).
        s_max, s_min: the largest and smallest reachable score of each segment, (M,).
        beta_s, eta, beta_safe: as in g_θ.
        purity: (π_safe, π_unsafe, source), see :func:`purity_from_noise_model`.
    """
    ps, pu, source = purity
    safe = safe.double()
    n_s, n_u = float(safe.sum()), float((1 - safe).sum())
    w_u = eta * max(n_s, 1.0) / max(n_u, 1.0)
    v_safe = torch.sigmoid((beta_s if beta_safe is None else beta_safe) * s_max.double())
    v_unsafe = torch.sigmoid(-beta_s * s_min.double())  # 1 where S_min = −inf
    total = n_s + w_u * n_u
    scale = float(((safe * v_safe).sum() + w_u * ((1 - safe) * v_unsafe).sum()) / total)
    noise = (n_s * (ps + (1 - ps) * 0.5) + w_u * n_u * (pu + (1 - pu) * 0.5)) / total
    value = float(((safe * (ps * v_safe + (1 - ps) * 0.5)).sum()
                   + w_u * ((1 - safe) * (pu * v_unsafe + (1 - pu) * 0.5)).sum()) / total)
    return Ceiling(value=value, scale=scale, noise=float(noise), purity_safe=ps, purity_unsafe=pu,
                   purity_source=source)


def choose_delta(c: Ceiling, delta: float | None, fraction: float, *, threshold: float,
                 before_training: bool = False) -> float:
    """δ for this run: ``delta`` if given (checked against the ceiling), else ½ + fraction·(ceiling − ½).

    ``before_training``: ``c`` is the label-noise ceiling alone (no policy yet), so the error names
    the default rule instead of its value.

    Raises:
        FeedbackgenError: a given δ at or above the ceiling (it cannot be met: the multiplier would
            grow without bound), or a ceiling at or below ½ (nothing to align).
    """
    if c.value <= 0.5:
        raise FeedbackgenError(f"the safety measure cannot rise above chance on this store at threshold "
                               f"{threshold:g} (ceiling {c.value:.3f}, label purity {c.purity_safe:.2f} / "
                               f"{c.purity_unsafe:.2f}); the safety labels carry no usable signal")
    auto = 0.5 + fraction * (c.value - 0.5)
    if delta is None:
        return auto
    if delta >= c.value:
        default = (f"½ + {fraction:g}·(ceiling − ½), set when alignment starts" if before_training
                   else f"{auto:.3f}")
        raise FeedbackgenError(f"delta {delta:g} cannot be met on this store at threshold {threshold:g}: the "
                               f"attainable ceiling of g is {c.value:.3f} (score scale {c.scale:.3f}, label "
                               f"noise {c.noise:.3f}: {c.purity_source}); drop --set delta for the default "
                               f"({default}) or choose a value below {c.value:.3f}")
    return float(delta)
