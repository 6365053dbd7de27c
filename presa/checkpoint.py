"""Checkpoints (save, find, load) and the deployable :class:`Actor`.

A checkpoint is a ``torch.save`` dict, loadable with ``torch.load(weights_only=True)``::

    policy, policy_kind, policy_kwargs    weights and how to rebuild the network
    optimizer                             the main optimiser's state dict
    nu, zref                              Lagrange multiplier and reference point (floats or None)
    algo_state                            everything else the algorithm needs to continue
    obs_mean, obs_std                     the observation normaliser (tensors)
    config, algo, step, threshold         the resolved TrainConfig (dict), its algo, steps done
    rng                                   the run's generator state and the global torch / CUDA /
                                          numpy / python RNG states
    task, obs_dim, act_dim, store_id, store_hash, toolkit_version, format

Example:
    >>> actor = load_actor("runs/BallRun-mini-presa-k20-s0-20250101-000000")  # doctest: +SKIP
    >>> actor(obs_batch).shape                                                # doctest: +SKIP
    (B, act_dim)
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from feedbackgen._io import atomic_path
from feedbackgen.errors import FeedbackgenError
from feedbackgen.tasks import Task
from presa.policy import POLICY_CLASSES, Policy

CHECKPOINT_FORMAT = 1
_STEP_RE = re.compile(r"^step_(\d+)\.pt$")


def checkpoint_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def step_checkpoint_path(run_dir: Path, step: int) -> Path:
    return checkpoint_dir(run_dir) / f"step_{step:07d}.pt"


def final_checkpoint_path(run_dir: Path) -> Path:
    return checkpoint_dir(run_dir) / "final.pt"


def save_checkpoint(path: Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` with ``torch.save`` to a temporary sibling, then rename it to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint safely (``weights_only=True``).

    Raises:
        FeedbackgenError: missing or unreadable file, or not a presa checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise FeedbackgenError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises several types for damaged files
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise FeedbackgenError(f"checkpoint {path} is not readable ({msg}); it may be damaged") from None
    if not isinstance(ckpt, dict) or "policy" not in ckpt or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise FeedbackgenError(f"{path} is not a presa checkpoint (format {CHECKPOINT_FORMAT})")
    return ckpt


def step_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """Periodic checkpoints of a run, sorted by step."""
    folder = checkpoint_dir(run_dir)
    found = []
    if folder.is_dir():
        for p in folder.iterdir():
            m = _STEP_RE.match(p.name)
            if m:
                found.append((int(m.group(1)), p))
    return sorted(found)


def latest_checkpoint(run_dir: Path) -> Path:
    """The checkpoint with the most steps: ``final.pt`` if present, else the last ``step_*.pt``.

    Raises:
        FeedbackgenError: the run has no checkpoint yet.
    """
    final = final_checkpoint_path(run_dir)
    if final.is_file():
        return final
    steps = step_checkpoints(run_dir)
    if not steps:
        raise FeedbackgenError(f"{run_dir} has no checkpoint yet (checkpoints/final.pt or step_*.pt); "
                               "start the run again or wait for its first checkpoint")
    return steps[-1][1]


def resolve_latest_checkpoint(path_or_run_dir: str | Path) -> Path:
    """A checkpoint file as it is, or the latest checkpoint of a run directory
    (:func:`latest_checkpoint`; compare :func:`presa.evaluate.resolve_final_checkpoint`)."""
    p = Path(path_or_run_dir)
    if p.is_dir():
        return latest_checkpoint(p)
    if not p.exists():
        raise FeedbackgenError(f"{p} does not exist; pass a run directory or a checkpoint .pt file")
    return p


# -- RNG state --------------------------------------------------------------------------------------
def capture_rng(generator: torch.Generator) -> dict[str, Any]:
    """Every RNG state: the run's generator and the global torch / CUDA / numpy / python ones."""
    np_state = np.random.get_state(legacy=True)
    assert isinstance(np_state, tuple)  # the MT19937 tuple (numpy's stubs type the default as a dict)
    return {
        "generator": generator.get_state(),
        "generator_device": str(generator.device),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "python": _py_state_to_list(random.getstate()),
    }


def restore_rng(state: dict[str, Any], generator: torch.Generator) -> None:
    """Inverse of :func:`capture_rng` (the CUDA states only when CUDA is present)."""
    generator.set_state(state["generator"].cpu())
    torch.set_rng_state(state["torch"].cpu())
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    random.setstate(_py_state_from_list(state["python"]))


def _py_state_to_list(st: tuple) -> list:
    return [st[0], list(st[1]), st[2]]


def _py_state_from_list(st: list) -> tuple:
    return (st[0], tuple(st[1]), st[2])


# -- the deployable actor -------------------------------------------------------------------------
class Actor:
    """A trained policy for deployment: numpy in, numpy out, mean action, normalisation inside.

    Attributes:
        task: the store's task (None if the store recorded none).
        threshold: the episode cost threshold κ the policy was trained for.
        obs_dim, act_dim: input/output sizes.
        meta: checkpoint facts (algo, step, seed, store_id, store_hash, config, path).
    """

    def __init__(self, policy: Policy, obs_mean: torch.Tensor, obs_std: torch.Tensor, *, task: Task | None,
                 threshold: float, meta: dict[str, Any], device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self.policy = policy.to(self.device).eval()
        self.obs_mean = obs_mean.to(self.device, torch.float32)
        self.obs_std = obs_std.to(self.device, torch.float32)
        self.task, self.threshold, self.meta = task, float(threshold), meta
        self.obs_dim, self.act_dim = policy.obs_dim, policy.act_dim

    @torch.no_grad()
    def __call__(self, obs: np.ndarray) -> np.ndarray:
        """Mean actions for raw observations: (B, obs) → (B, act), or (obs,) → (act,), float32.

        Raises:
            FeedbackgenError: the observation size does not match the policy.
        """
        x = np.asarray(obs, dtype=np.float32)
        single = x.ndim == 1
        if single:
            x = x[None]
        if x.ndim != 2 or x.shape[1] != self.obs_dim:
            raise FeedbackgenError(f"the policy expects observations of size {self.obs_dim}, got shape "
                                   f"{tuple(np.shape(obs))}; is this the right task?")
        t = torch.from_numpy(x).to(self.device)
        act = self.policy.mean_action((t - self.obs_mean) / self.obs_std)
        out = act.float().cpu().numpy()
        return out[0] if single else out


def load_actor(path_or_run_dir: str | Path, device: str | torch.device = "cpu") -> Actor:
    """Load the policy of a checkpoint (or of a run directory's latest checkpoint) as an :class:`Actor`.

    Raises:
        FeedbackgenError: no checkpoint, unreadable checkpoint, or an unknown policy class.
    """
    path = resolve_latest_checkpoint(path_or_run_dir)
    ckpt = load_checkpoint(path, map_location="cpu")
    kind = ckpt.get("policy_kind")
    if kind not in POLICY_CLASSES:
        raise FeedbackgenError(f"{path}: unknown policy class {kind!r}; "
                               "is this toolkit older than the checkpoint?")
    kw = dict(ckpt["policy_kwargs"])
    policy = POLICY_CLASSES[kind](kw["obs_dim"], kw["act_dim"], tuple(kw["hidden"]), kw["dropout"], None)
    policy.load_state_dict(ckpt["policy"])
    task = Task.from_dict(ckpt["task"]) if ckpt.get("task") else None
    meta = {k: ckpt.get(k) for k in ("algo", "step", "store_id", "store_hash", "config", "toolkit_version")}
    meta["seed"] = (ckpt.get("config") or {}).get("seed")
    meta["path"] = str(path)
    return Actor(policy, ckpt["obs_mean"], ckpt["obs_std"], task=task, threshold=ckpt["threshold"],
                 meta=meta, device=device)


class BehaviourPolicy:
    """A checkpoint (or a run directory's latest checkpoint) as a ``feedbackgen collect`` behaviour
    policy: ``policy(obs, rng)`` is the deterministic mean action (float64). Registered with
    :mod:`feedbackgen.policies` for ``presa:PATH`` specs by ``presa/__init__.py``.

    Raises:
        FeedbackgenError: no or unreadable checkpoint, or observation/action sizes that differ from
            the task's.
    """

    def __init__(self, path: Path, obs_dim: int, act_dim: int) -> None:
        torch.set_num_threads(1)
        self.actor = load_actor(path, device="cpu")
        if (self.actor.obs_dim, self.actor.act_dim) != (obs_dim, act_dim):
            raise FeedbackgenError(f"presa checkpoint {path} has obs/act dims ({self.actor.obs_dim}, "
                                   f"{self.actor.act_dim}) but the task has ({obs_dim}, {act_dim}): use a "
                                   "checkpoint trained on this task")

    def __call__(self, obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return np.asarray(self.actor(np.asarray(obs, dtype=np.float32)[None]), dtype=np.float64)[0]
