"""The reward-cost plot from a store and from a source."""

from __future__ import annotations

from pathlib import Path

import pytest

from feedbackgen.errors import FeedbackgenError
from feedbackgen.plots import plot_source, plot_store
from feedbackgen.publish import strip_store

PNG = b"\x89PNG\r\n\x1a\n"


def test_plot_from_store_and_source(tiny_store: Path, tiny_task, tmp_path: Path) -> None:
    a = plot_store(tiny_store, tmp_path / "figs" / "store.png")
    b = plot_source(tiny_task.name, tmp_path / "figs" / "source.png")
    for p in (a, b):
        assert p.read_bytes()[:8] == PNG and p.stat().st_size > 5000
    assert sorted(p.name for p in (tmp_path / "figs").iterdir()) == ["source.png", "store.png"]


def test_stripped_store_cannot_be_plotted(tiny_store: Path, tmp_path: Path) -> None:
    blind = strip_store(tiny_store, tmp_path / "blind.zarr")
    with pytest.raises(FeedbackgenError, match="stripped"):
        plot_store(blind, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()
