"""Keep tests off the user's DSRL cache: every test sees an empty tmp ``DSRL_DATASET_DIR``."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _isolated_dsrl_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DSRL_DATASET_DIR", str(tmp_path_factory.mktemp("dsrl-cache")))
