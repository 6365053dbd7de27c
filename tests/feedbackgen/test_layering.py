"""feedbackgen never imports presa: a trained presa policy reaches ``feedbackgen collect`` only
through the loader registry of :mod:`feedbackgen.policies`, which presa fills when imported."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import feedbackgen
from feedbackgen.errors import FeedbackgenError
from feedbackgen.policies import (
    get_policy_loader,
    register_policy_loader,
    registered_prefixes,
    unregister_policy_loader,
)

PACKAGE = Path(feedbackgen.__file__).resolve().parent


def _imports(tree: ast.AST) -> list[str]:
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
    return names


def test_no_module_under_feedbackgen_imports_presa() -> None:
    offenders = []
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 10
    for path in files:
        for name in _imports(ast.parse(path.read_text(), str(path))):
            if name == "presa" or name.startswith("presa."):
                offenders.append(f"{path.relative_to(PACKAGE.parent)}: import {name}")
    assert offenders == []


def test_presa_loader_is_found_through_the_registry() -> None:
    loader = get_policy_loader("presa")  # imports presa once when needed; presa registers itself
    assert "presa" in registered_prefixes()
    from presa.checkpoint import BehaviourPolicy

    with pytest.raises(FeedbackgenError, match="checkpoint"):
        loader(Path("/nonexistent/run"), 3, 2)
    assert BehaviourPolicy.__module__ == "presa.checkpoint"


def test_unknown_prefix_is_one_line_error_and_registration_works() -> None:
    with pytest.raises(FeedbackgenError, match="no loader for 'nosuch:' policies"):
        get_policy_loader("nosuch")
    register_policy_loader("const", lambda path, obs_dim, act_dim: "policy")
    try:
        assert get_policy_loader("const")(Path("x"), 1, 1) == "policy"
    finally:
        unregister_policy_loader("const")
    with pytest.raises(ValueError):
        register_policy_loader("switch", lambda *a: None)
