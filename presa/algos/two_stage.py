"""Two-stage (Safe-RLHF style) baseline: reward and cost models from the feedback, relabelling,
then Lagrangian offline safe RL — the approach PreSa claims to beat.

Stage 1, steps ``[0, bc_steps)`` — models (one Adam step on both per training step, lr ``lr``):

- reward model r̂(s, a): an MLP (``hidden``) trained with the Bradley–Terry loss on the summed
  per-step predictions, P(b ≻ a) = sigmoid(R̂(b) − R̂(a)), R̂(σ) = Σ_t r̂(s_t, a_t) over the real
  steps (``pair_batch`` pairs per step);
- cost model ĉ(s, a) = softplus(MLP) ≥ 0: a classifier of the safety labels on the summed per-step
  predicted cost against the segment threshold, P(safe | σ) = sigmoid((κ_seg + m − Ĉ(σ)) / τ),
  κ_seg from the store metadata (rule ``scaled``: κ·H/T_max; ``episode``: κ; ``zero``: 0),
  m = :data:`COST_MARGIN`, τ = :data:`COST_TEMPERATURE` (``safety_batch`` segments per step).
  With unit step costs (BulletGym, Safety-Gymnasium) segment costs are integers, the true safe /
  unsafe boundary lies between κ_seg and the next integer, so m = ½ keeps Ĉ on the scale of the real
  costs (which the RL budget below assumes) and leaves a boundary even when κ_seg = 0.

At step ``bc_steps`` both models are frozen and every transition is relabelled: r̂ standardised
over the dataset (Bradley–Terry identifies per-step rewards only up to an offset and a scale), ĉ in
cost units. The relabelled arrays are recomputed from the frozen models on resume (same result).

Stage 2, steps ``[bc_steps, total_steps)`` — **Lagrangian TD3+BC** on the relabelled transitions
(``bc_batch`` transitions per step; ``next_observations`` and ``terminations`` from the store):

- twin reward critics Q_r (target: min of the target twins) and twin cost critics Q_c (target: max
  of the target twins, pessimistic on cost), TD targets r + γ(1 − done)·Q'(s', a') with the target
  actor's action plus clipped Gaussian smoothing noise (TD3), Polyak-averaged targets;
- the actor (the run's policy, whose mean action is exported) minimises
  ``−λ·mean(Q_r − ν·Q_c) + mean(−log π(a|s))`` with λ = α / mean|Q_r − ν·Q_c| (TD3+BC's
  normaliser, α = :data:`TD3_ALPHA`); for the default deterministic policy the BC term is
  ‖μ(s) − a‖², exactly TD3+BC's;
- ν by projected dual ascent on the cost critic's estimate at the actor's actions against the
  discounted budget κ/T_max · Σ_{t<T_max} γ^t (OSRL's conversion of an episode threshold):
  ν ← clip(ν + ``nu_lr``·(mean Q_c(s, π(s)) − budget), 0, ``nu_max``), from ``nu_init``.

Why this algorithm rather than BCQ-Lag (OSRL's): BCQ-Lag needs a generative VAE, a perturbation
network and several sampled actions per state — heavy on CPU and with many more tuning knobs.
TD3+BC is the simplest well-established offline actor-critic (one deterministic actor, critics,
a BC regulariser, no behaviour model), its Lagrangian version only adds cost critics and one
multiplier, it needs no action sampling at evaluation (the same deterministic-mean export as every
other method here), and one step is a few MLP passes over one batch. Measured on this
project's CPU (one torch thread, default 256×256 networks, ``bc_batch`` 1024): about 35 ms per RL
step and 12–25 ms per model step, so a quick-preset run takes about a minute and the full BulletGym
preset (30k model + 70k RL steps) under an hour, against about two hours for PreSa's full preset.
The actor update runs every step (policy delay 1) so every step reports the same metrics. All
randomness (weights, batches, smoothing noise, dropout) comes from the run's generator; the whole
state is checkpointed, so a resumed run is bit-identical.

Fixed hyper-parameters (module constants, TD3+BC's published values): γ = :data:`RL_GAMMA`,
Polyak τ = :data:`TAU`, smoothing noise :data:`POLICY_NOISE` clipped at :data:`NOISE_CLIP`. The
learning rate of models, critics and actor is ``lr`` (1e-4 by default; TD3+BC used 3e-4). PreSa's
alignment options are not among its settings.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from feedbackgen.errors import FeedbackgenError
from feedbackgen.safety import segment_thresholds
from presa import baseline_losses, losses
from presa.algos.base import Algorithm, _cpu_generator, register
from presa.algos.presa import require_both_safety_classes
from presa.config import BaseConfig, TrainConfig
from presa.data import TrainingData

RL_GAMMA = 0.99
TAU = 0.005
POLICY_NOISE = 0.2
NOISE_CLIP = 0.5
TD3_ALPHA = 2.5
COST_MARGIN = 0.5
COST_TEMPERATURE = 0.5
_CHUNK = 65_536


class MLP(nn.Module):
    """ReLU MLP ``in → hidden → … → out`` with weights drawn from an explicit generator
    (PyTorch's default Linear ranges)."""

    def __init__(self, n_in: int, hidden: tuple[int, ...], n_out: int, generator: torch.Generator) -> None:
        super().__init__()
        sizes = (n_in, *hidden, n_out)
        layers = [nn.Linear(i, o) for i, o in zip(sizes[:-1], sizes[1:], strict=True)]
        with torch.no_grad():
            for lin in layers:
                bound = 1.0 / math.sqrt(lin.in_features)
                lin.weight.uniform_(-bound, bound, generator=generator)
                lin.bias.uniform_(-bound, bound, generator=generator)
        self.layers = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for lin in self.layers[:-1]:
            x = torch.relu(lin(x))
        return self.layers[-1](x)


class StepModel(nn.Module):
    """A per-step model f(s, a) → scalar; ``positive`` applies softplus (a cost)."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: tuple[int, ...], generator: torch.Generator,
                 positive: bool = False) -> None:
        super().__init__()
        self.net = MLP(obs_dim + act_dim, hidden, 1, generator)
        self.positive = positive

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        out = self.net(torch.cat([obs, act], -1)).squeeze(-1)
        return nn.functional.softplus(out) if self.positive else out


class TwinQ(nn.Module):
    """Two independent Q networks Q₁, Q₂(s, a)."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: tuple[int, ...],
                 generator: torch.Generator) -> None:
        super().__init__()
        self.q1 = MLP(obs_dim + act_dim, hidden, 1, generator)
        self.q2 = MLP(obs_dim + act_dim, hidden, 1, generator)

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.cat([obs, act], -1)
        return self.q1(x).squeeze(-1), self.q2(x).squeeze(-1)


def segment_threshold(data: TrainingData) -> float:
    """κ_seg of the run's threshold, from the store metadata (safety rule, segment length H, T_max).

    Raises:
        FeedbackgenError: the store records no task (no T_max).
    """
    meta = data.store.metadata or {}
    task = meta.get("task") or {}
    t_max = task.get("max_episode_steps")
    if not t_max:
        raise FeedbackgenError(f"two_stage needs the task's max_episode_steps, but the store "
                               f"{data.store_path} "
                               "records no task; remake the store with `feedbackgen make`")
    rule = (meta.get("safety") or {}).get("rule", "scaled")
    length = int((meta.get("segments") or {}).get("resolved_length") or data.horizon)
    return float(segment_thresholds([data.threshold], length, int(t_max), rule)[0])


def cost_budget(data: TrainingData) -> float:
    """The cost critic's discounted budget for the run's threshold (see the module docstring)."""
    t_max = int((data.task or {}).get("max_episode_steps") or 0)
    if t_max <= 0:
        raise FeedbackgenError(f"two_stage needs the task's max_episode_steps, but the store "
                               f"{data.store_path} "
                               "records no task; remake the store with `feedbackgen make`")
    return baseline_losses.discounted_cost_threshold(data.threshold, t_max, RL_GAMMA)


@dataclass(frozen=True)
class TwoStageConfig(BaseConfig):
    """Two-stage's settings: the shared ones and these (each documented in
    :class:`presa.config.TrainConfig`); ``bc_steps`` counts its model steps."""

    algo: str = "two_stage"
    nu_init: float = TrainConfig.nu_init
    nu_lr: float = TrainConfig.nu_lr
    nu_max: float = TrainConfig.nu_max
    bc_steps: int = TrainConfig.bc_steps
    pair_batch: int = TrainConfig.pair_batch
    safety_batch: int = TrainConfig.safety_batch


@register("two_stage")
class TwoStage(Algorithm[TwoStageConfig]):
    """Reward/cost models from the labels, relabelling, then Lagrangian TD3+BC."""

    needs_preferences = True
    needs_safety = True

    def __init__(self, cfg: TwoStageConfig, data: TrainingData, generator: torch.Generator) -> None:
        super().__init__(cfg, data, generator)
        init = _cpu_generator(generator)
        od, ad, hid, dev = data.obs_dim, data.act_dim, tuple(cfg.hidden), self.device
        self.reward_model = StepModel(od, ad, hid, init).to(dev)
        self.cost_model = StepModel(od, ad, hid, init, positive=True).to(dev)
        self.model_optimizer = torch.optim.Adam(
            [*self.reward_model.parameters(), *self.cost_model.parameters()], lr=cfg.lr)
        self.q_r = TwinQ(od, ad, hid, init).to(dev)
        self.q_c = TwinQ(od, ad, hid, init).to(dev)
        self.critic_optimizer = torch.optim.Adam([*self.q_r.parameters(), *self.q_c.parameters()], lr=cfg.lr)
        self.q_r_target = copy.deepcopy(self.q_r).requires_grad_(False)
        self.q_c_target = copy.deepcopy(self.q_c).requires_grad_(False)
        self.actor_target = copy.deepcopy(self.policy).requires_grad_(False).eval()
        self.nu = torch.tensor(cfg.nu_init, dtype=torch.float32, device=dev)
        self.kappa_seg = segment_threshold(data)
        self.budget = cost_budget(data)
        store = data.store
        next_obs = np.asarray(store.next_observations, dtype=np.float32)
        self.next_obs = ((torch.as_tensor(next_obs) - data.obs_mean) / data.obs_std).to(dev)
        self.done = torch.as_tensor(np.asarray(store.terminations, dtype=np.float32)).to(dev)
        self.rewards: torch.Tensor | None = None  # relabelled, (N,)
        self.costs: torch.Tensor | None = None

    @classmethod
    def check_data(cls, data: TrainingData, cfg: TwoStageConfig) -> None:
        super().check_data(data, cfg)
        if not 1 <= cfg.bc_steps < cfg.total_steps:
            raise FeedbackgenError(f"two_stage learns its reward and cost models for bc_steps steps and then "
                                   "runs RL until total_steps; need 1 ≤ bc_steps < total_steps, got "
                                   f"bc_steps={cfg.bc_steps}, total_steps={cfg.total_steps}")
        require_both_safety_classes(data, cls.name)
        segment_threshold(data)
        cost_budget(data)

    def phase(self, step: int) -> str:
        return "models" if step < self.cfg.bc_steps else "rl"

    def update(self, step: int) -> dict[str, torch.Tensor | float]:
        if step < self.cfg.bc_steps:
            return self.model_update()
        if self.rewards is None:
            self.relabel()
        return self.rl_update()

    # -- stage 1 ---------------------------------------------------------------------------------
    def _segment_predictions(self, model: StepModel, segments: torch.Tensor
                             ) -> tuple[torch.Tensor, torch.Tensor]:
        rows = self.data.seg_index[segments]
        mask = (self.data.seg_weight[segments] > 0).float()
        flat = rows.reshape(-1)
        pred = model(self.data.obs[flat], self.data.actions[flat]).view(rows.shape)
        return pred, mask

    def model_update(self) -> dict[str, torch.Tensor | float]:
        cfg, d = self.cfg, self.data
        p = d.sample(self.gen, d.n_pairs, cfg.pair_batch)
        s = d.sample(self.gen, d.n_safety, cfg.safety_batch)
        y, safe = d.pref_label[p], d.safety_label[s]
        pred, mask = self._segment_predictions(self.reward_model, torch.cat([d.pref_a[p], d.pref_b[p]]))
        n = cfg.pair_batch
        rm_loss = baseline_losses.reward_model_loss(pred[:n], pred[n:], mask[:n], y, mask_b=mask[n:])
        cost, cmask = self._segment_predictions(self.cost_model, d.safety_segment[s])
        cm_loss = baseline_losses.cost_model_loss(cost, cmask, safe, self.kappa_seg, COST_MARGIN,
                                                  COST_TEMPERATURE)
        loss = rm_loss + cm_loss
        self.model_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.model_optimizer.step()
        with torch.no_grad():
            r_a = baseline_losses.segment_sums(pred[:n], mask[:n])
            r_b = baseline_losses.segment_sums(pred[n:], mask[n:])
            logits = baseline_losses.cost_logits(cost, cmask, self.kappa_seg, COST_MARGIN, COST_TEMPERATURE)
            return {"rm_loss": rm_loss.detach(), "cm_loss": cm_loss.detach(),
                    "rm_acc": losses.preference_accuracy(r_a, r_b, y),
                    "cm_acc": ((logits > 0).float() == safe).float().mean(),
                    "lr": cfg.lr}

    @torch.no_grad()
    def relabel(self) -> None:
        """Freeze the models and relabel every transition (standardised r̂, ĉ in cost units)."""
        self.reward_model.eval()
        self.cost_model.eval()
        r, c = [], []
        for lo in range(0, self.data.n_transitions, _CHUNK):
            obs, act = self.data.obs[lo:lo + _CHUNK], self.data.actions[lo:lo + _CHUNK]
            r.append(self.reward_model(obs, act))
            c.append(self.cost_model(obs, act))
        rewards = torch.cat(r)
        self.rewards = (rewards - rewards.mean()) / rewards.std(correction=0).clamp(min=1e-6)
        self.costs = torch.cat(c)

    # -- stage 2 ---------------------------------------------------------------------------------
    def rl_update(self) -> dict[str, torch.Tensor | float]:
        cfg, d = self.cfg, self.data
        assert self.rewards is not None and self.costs is not None
        idx = d.sample(self.gen, d.n_transitions, cfg.bc_batch)
        obs, act, obs2 = d.obs[idx], d.actions[idx], self.next_obs[idx]
        rew, cost, done = self.rewards[idx], self.costs[idx], self.done[idx]
        with torch.no_grad():
            noise = (torch.randn(act.shape, generator=self.gen, device=self.device) * POLICY_NOISE
                     ).clamp(-NOISE_CLIP, NOISE_CLIP)
            act2 = (self.actor_target.mean_action(obs2) + noise).clamp(-1.0, 1.0)
            qr1_t, qr2_t = self.q_r_target(obs2, act2)
            qc1_t, qc2_t = self.q_c_target(obs2, act2)
            y_r = baseline_losses.td_target(rew, done, torch.minimum(qr1_t, qr2_t), RL_GAMMA)
            y_c = baseline_losses.td_target(cost, done, torch.maximum(qc1_t, qc2_t), RL_GAMMA)
        qr1, qr2 = self.q_r(obs, act)
        qc1, qc2 = self.q_c(obs, act)
        mse = nn.functional.mse_loss
        critic_loss = mse(qr1, y_r) + mse(qr2, y_r) + mse(qc1, y_c) + mse(qc2, y_c)
        self.critic_optimizer.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_optimizer.step()

        self.policy.train()
        self.set_lr(cfg.lr)
        params = self.policy.params(obs, self.gen, dtype=self.compute_dtype)
        pi = self.policy.mean_from_params(params)
        bc = -self.policy.log_prob_from_params(params, act)
        x = torch.cat([obs, pi], -1)
        q_r_pi, q_c_pi = self.q_r.q1(x).squeeze(-1), self.q_c.q1(x).squeeze(-1)
        actor_loss = baseline_losses.lagrangian_td3bc_actor_loss(q_r_pi, q_c_pi, self.nu, bc, TD3_ALPHA)
        self.optimizer.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.optimizer.step()
        self.nu = baseline_losses.lagrangian_dual_update(self.nu, q_c_pi, self.budget, cfg.nu_lr, cfg.nu_max)

        with torch.no_grad():
            for net, target in ((self.q_r, self.q_r_target), (self.q_c, self.q_c_target),
                                (self.policy, self.actor_target)):
                for p, tp in zip(net.parameters(), target.parameters(), strict=True):
                    tp.lerp_(p, TAU)
            return {"critic_loss": critic_loss.detach(), "actor_loss": actor_loss.detach(),
                    "bc_loss": bc.detach().mean(), "q_r": q_r_pi.detach().mean(),
                    "q_c": q_c_pi.detach().mean(),
                    "cost_budget": self.budget, "nu": self.nu, "lr": cfg.lr}

    # -- state -----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        sd = super().state_dict()
        sd.update(
            nu=self.nu.clone(), reward_model=self.reward_model.state_dict(),
            cost_model=self.cost_model.state_dict(), model_optimizer=self.model_optimizer.state_dict(),
            q_r=self.q_r.state_dict(), q_c=self.q_c.state_dict(),
            q_r_target=self.q_r_target.state_dict(), q_c_target=self.q_c_target.state_dict(),
            actor_target=self.actor_target.state_dict(), critic_optimizer=self.critic_optimizer.state_dict(),
            relabelled=self.rewards is not None)
        return sd

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        super().load_state_dict(sd)
        self.nu = sd["nu"].to(self.device)
        self.reward_model.load_state_dict(sd["reward_model"])
        self.cost_model.load_state_dict(sd["cost_model"])
        self.model_optimizer.load_state_dict(sd["model_optimizer"])
        self.q_r.load_state_dict(sd["q_r"])
        self.q_c.load_state_dict(sd["q_c"])
        self.q_r_target.load_state_dict(sd["q_r_target"])
        self.q_c_target.load_state_dict(sd["q_c_target"])
        self.actor_target.load_state_dict(sd["actor_target"])
        self.critic_optimizer.load_state_dict(sd["critic_optimizer"])
        if sd["relabelled"]:
            self.relabel()
        else:
            self.rewards = self.costs = None
