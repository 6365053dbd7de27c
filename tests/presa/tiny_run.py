"""The tiny training configuration and the helpers the presa tests share (imported by name: pytest puts
tests/presa on sys.path; a conftest is never imported by name, which breaks when several test
folders run together)."""

import pytest
import torch

TINY = {
    "hidden": [32, 32],
    "pair_batch": 16,
    "safety_batch": 16,
    "bc_batch": 64,
    "bc_steps": 20,
    "total_steps": 60,
    "warmup_steps": 5,
    "log_every": 5,
    "checkpoint_every": 20,
    "threshold": 4.0,
    "threads": 1,
}


def tiny_for(algo: str) -> dict:
    """TINY with only the keys ``algo`` reads: like a preset, a recipe for every algorithm (giving an
    algorithm a key it does not read is an error)."""
    from presa.config import applicable

    return applicable(TINY, algo)


def assert_same_state(a, b, path: str = "") -> None:
    """Recursively compare checkpoint contents (torch.equal for tensors): bit-exact resume checks."""
    assert type(a) is type(b), path
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), path
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            assert_same_state(a[k], b[k], f"{path}/{k}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same_state(x, y, f"{path}[{i}]")
    else:
        assert a == b, path


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny networks: one intra-op thread is fastest (and the machine's cores are shared). Autouse in
    every test module that imports it."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
