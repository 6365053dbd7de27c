"""Python 3.11 compatibility shim for safety-gymnasium 1.0.0.

Why: safety-gymnasium 1.0.0 declares dataclass fields with numpy-array defaults
(``color: np.array = COLOR['vase']``). Since Python 3.11, ``dataclasses`` rejects any unhashable
default (``ValueError: mutable default <class 'numpy.ndarray'> for field color is not allowed: use
default_factory``), so ``import safety_gymnasium`` fails.

What: while safety-gymnasium and its task/asset modules are imported (and only then),
``dataclasses.dataclass`` is wrapped so that an ndarray default -- a plain class attribute or a
``field(default=...)`` -- becomes ``field(default_factory=<copy of that array>)``. Each instance
then gets its own copy of the array, which is what the library meant. Nothing else changes, and
``dataclasses.dataclass`` is restored when the import is done.

The shim is idempotent: :func:`import_safety_gymnasium` imports once and afterwards returns the
module from ``sys.modules``. Use it instead of ``import safety_gymnasium``.
"""

from __future__ import annotations

import dataclasses
import importlib
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType

import numpy as np

# Modules imported inside the shim: the package itself and the builder, which pulls in every
# navigation task and asset (the modules that hold the ndarray defaults). The builder is otherwise
# imported lazily by the first ``safety_gymnasium.make``.
_MODULES = ("safety_gymnasium", "safety_gymnasium.builder")
_LOCK = threading.Lock()


def _array_factory(value: np.ndarray):
    def factory() -> np.ndarray:
        return value.copy()

    return factory


def _convert_ndarray_defaults(cls: type) -> type:
    """Turn the ndarray defaults declared on ``cls`` into default factories (in place)."""
    for name in cls.__dict__.get("__annotations__", {}):
        value = cls.__dict__.get(name, dataclasses.MISSING)
        if isinstance(value, np.ndarray):
            setattr(cls, name, dataclasses.field(default_factory=_array_factory(value)))
        elif isinstance(value, dataclasses.Field) and isinstance(value.default, np.ndarray):
            value.default_factory = _array_factory(value.default)
            value.default = dataclasses.MISSING
    return cls


@contextmanager
def ndarray_defaults_as_factories() -> Iterator[None]:
    """Within this block, ``@dataclass`` accepts numpy-array defaults (as default factories).

    ``dataclasses.dataclass`` is restored on exit, also when the block raises.
    """
    original = dataclasses.dataclass

    def dataclass(cls=None, /, **kwargs):
        if cls is None:
            return lambda c: original(_convert_ndarray_defaults(c), **kwargs)
        return original(_convert_ndarray_defaults(cls), **kwargs)

    with _LOCK:
        dataclasses.dataclass = dataclass
        try:
            yield
        finally:
            dataclasses.dataclass = original


def import_safety_gymnasium() -> ModuleType:
    """Import ``safety_gymnasium`` (with its task builder) under the shim and return it.

    Raises:
        ImportError: safety-gymnasium or one of its dependencies is not installed.
    """
    if all(sys.modules.get(name) is not None for name in _MODULES):
        return sys.modules["safety_gymnasium"]
    with ndarray_defaults_as_factories():
        for name in _MODULES:
            importlib.import_module(name)
    return sys.modules["safety_gymnasium"]
