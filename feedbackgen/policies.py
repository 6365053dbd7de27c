"""Behaviour-policy loaders, looked up by the prefix of a policy spec (``KIND:PATH``).

:mod:`feedbackgen.collect` builds ``random``, ``sb3:PATH`` and ``switch:A>B`` policies itself; any
other ``KIND:PATH`` goes to the loader registered for ``KIND``. A loader is called as
``loader(path, obs_dim, act_dim)`` and returns a callable ``policy(obs, rng) -> action``
(float64, shape ``(act_dim,)``); it raises :class:`~feedbackgen.errors.FeedbackgenError` with one
line when the file does not fit.

``feedbackgen`` never imports ``presa``: ``presa`` registers its ``presa:`` loader when it is
imported (``presa/__init__.py``). When a ``presa:`` spec is asked for before that, this module
imports ``presa`` once (:data:`PROVIDERS`, the one place ``feedbackgen`` names it), so a spawned
collection worker finds the loader too.

Example:
    >>> register_policy_loader("const", lambda path, obs_dim, act_dim: (lambda obs, rng: [0.0] * act_dim))
    >>> get_policy_loader("const")(Path("x"), 3, 2)(None, None)
    [0.0, 0.0]
    >>> unregister_policy_loader("const")
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from feedbackgen.errors import FeedbackgenError

__all__ = ["PROVIDERS", "PolicyLoader", "get_policy_loader", "register_policy_loader",
           "registered_prefixes", "unregister_policy_loader"]

PolicyLoader = Callable[[Path, int, int], Callable[[Any, Any], Any]]

#: spec prefix -> the module that registers its loader when imported
PROVIDERS: dict[str, str] = {"presa": "presa"}

_LOADERS: dict[str, PolicyLoader] = {}
_TRIED: set[str] = set()


def register_policy_loader(prefix: str, fn: PolicyLoader) -> None:
    """Make ``fn`` the loader of ``PREFIX:PATH`` policy specs (replacing an earlier one)."""
    if not prefix or ":" in prefix or prefix in ("random", "switch"):
        raise ValueError(f"bad policy prefix {prefix!r}")
    _LOADERS[prefix] = fn


def unregister_policy_loader(prefix: str) -> None:
    """Forget the loader of ``prefix`` (no error when there is none)."""
    _LOADERS.pop(prefix, None)


def registered_prefixes() -> tuple[str, ...]:
    """The prefixes with a loader now, sorted."""
    return tuple(sorted(_LOADERS))


def get_policy_loader(prefix: str) -> PolicyLoader:
    """The loader of ``PREFIX:PATH`` specs, importing its provider module (:data:`PROVIDERS`) once
    when it has not registered yet.

    Raises:
        FeedbackgenError: the provider is not installed, or no loader is known for ``prefix``.
    """
    if prefix not in _LOADERS and prefix in PROVIDERS and prefix not in _TRIED:
        _TRIED.add(prefix)
        try:
            importlib.import_module(PROVIDERS[prefix])
        except ImportError as exc:
            _TRIED.discard(prefix)
            raise FeedbackgenError(f"{prefix}: policies need the {PROVIDERS[prefix]} package and torch "
                                   f"({exc}); install presa-toolkit") from None
    if prefix not in _LOADERS:
        raise FeedbackgenError(f"no loader for '{prefix}:' policies (known: "
                               f"{', '.join(registered_prefixes()) or 'none'})")
    return _LOADERS[prefix]
