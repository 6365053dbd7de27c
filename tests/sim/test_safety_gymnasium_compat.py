"""The Python 3.11 dataclass shim for safety-gymnasium."""

import dataclasses
import sys

import numpy as np
import pytest

from feedbackgen.sim.safety_gymnasium_compat import import_safety_gymnasium, ndarray_defaults_as_factories


@pytest.mark.skipif(sys.version_info < (3, 11), reason="the ndarray-default error appears in Python 3.11")
def test_plain_dataclasses_reject_ndarray_defaults():
    with pytest.raises(ValueError, match="mutable default"):
        @dataclasses.dataclass
        class Geom:
            color: np.ndarray = np.array([1.0, 0.0, 0.0])


def test_shim_turns_ndarray_defaults_into_factories():
    with ndarray_defaults_as_factories():
        from dataclasses import dataclass, field  # bound inside the block, as in the library

        @dataclass
        class Geom:
            name: str = "vase"
            color: np.ndarray = np.array([0.0, 1.0, 1.0, 1.0])
            group: np.ndarray = field(default=np.array([2]))
            locations: list = field(default_factory=list)

        @dataclass(frozen=True)
        class Frozen:
            color: np.ndarray = np.array([1.0])

    a, b = Geom(), Geom()
    np.testing.assert_array_equal(a.color, [0.0, 1.0, 1.0, 1.0])
    np.testing.assert_array_equal(a.group, [2])
    assert a.color is not b.color  # each instance owns its copy
    a.color[0] = 5.0
    assert b.color[0] == 0.0 and Geom().color[0] == 0.0
    assert a.name == "vase" and a.locations == [] and a.locations is not b.locations
    np.testing.assert_array_equal(Geom(color=np.zeros(2)).color, [0.0, 0.0])
    np.testing.assert_array_equal(Frozen().color, [1.0])
    with pytest.raises(dataclasses.FrozenInstanceError):
        Frozen().color = np.zeros(1)


def test_shim_restores_dataclass_even_on_error():
    original = dataclasses.dataclass
    with pytest.raises(RuntimeError), ndarray_defaults_as_factories():
        assert dataclasses.dataclass is not original
        raise RuntimeError("boom")
    assert dataclasses.dataclass is original


@pytest.mark.slow
def test_import_safety_gymnasium_is_idempotent():
    original = dataclasses.dataclass
    sg = import_safety_gymnasium()
    assert import_safety_gymnasium() is sg
    assert dataclasses.dataclass is original
    from safety_gymnasium.assets.geoms.hazards import Hazards

    h1, h2 = Hazards(), Hazards()
    assert isinstance(h1.color, np.ndarray) and h1.color is not h2.color
