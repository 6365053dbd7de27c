"""presa: the PreSa trainer, its baselines, and the evaluator.

Importing ``presa`` registers the ``presa:PATH`` behaviour-policy loader with
:mod:`feedbackgen.policies` (so ``feedbackgen collect`` can roll out a trained policy without
``feedbackgen`` importing ``presa``); torch is imported only when such a policy is loaded.
"""

from pathlib import Path as _Path

from feedbackgen.errors import FeedbackgenError as _FeedbackgenError
from feedbackgen.policies import register_policy_loader as _register_policy_loader

__version__ = "0.1.0"


def _load_behaviour_policy(path: _Path, obs_dim: int, act_dim: int):
    try:
        from presa.checkpoint import BehaviourPolicy
    except ImportError as exc:
        raise _FeedbackgenError(f"presa: policies need the presa package and torch ({exc}); "
                                "install presa-toolkit") from None
    return BehaviourPolicy(path, obs_dim, act_dim)


_register_policy_loader("presa", _load_behaviour_policy)
