"""Precision of the training step: resolution (auto → bf16 only where native) and the bf16 forward
pass. Timings are in benchmarks/bench_train.py, not here."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

from presa.config import TrainConfig
from presa.policy import build_policy
from presa.precision import Precision, cpu_features, native_bf16, resolve_precision, warn_if_emulated

AVX2_ONLY = {"architecture": "x86_64", "avx2": True, "avx512_f": False, "avx512_bf16": False,
             "amx_bf16": False}
AVX512_NO_BF16 = {**AVX2_ONLY, "avx512_f": True, "avx512_bw": True}
AVX512_BF16 = {**AVX512_NO_BF16, "avx512_bf16": True}
AMX = {**AVX512_NO_BF16, "amx_tile": True, "amx_bf16": True}
ARM_BF16 = {"architecture": "arm64", "neon": True, "bf16": True}
ARM_PLAIN = {"architecture": "arm64", "neon": True, "bf16": False}


# ------------------------------------------------------------------------------ precision resolution
@pytest.mark.parametrize("caps,want", [(AVX2_ONLY, "fp32"), (AVX512_NO_BF16, "fp32"), (AVX512_BF16, "bf16"),
                                       (AMX, "bf16"), (ARM_BF16, "bf16"), (ARM_PLAIN, "fp32")])
def test_auto_picks_bf16_only_where_the_cpu_computes_it_natively(caps: dict, want: str) -> None:
    p = resolve_precision("auto", "cpu", caps)
    assert p.precision == want and p.requested == "auto" and p.native == (want == "bf16")
    assert p.dtype == (torch.bfloat16 if want == "bf16" else torch.float32)
    assert p.reason.startswith("auto: the CPU has")


@pytest.mark.parametrize("isa,want", [("AVX2", "fp32"), ("avx512_core", "fp32"), ("AVX512_CORE_BF16", "bf16"),
                                      ("AVX512_CORE_AMX", "bf16"), ("ALL", "bf16"), ("", "bf16")])
def test_auto_honours_a_onednn_instruction_set_limit(isa: str, want: str) -> None:
    # with oneDNN held below its bf16 kernels, bf16 is emulated even on a CPU with AMX
    p = resolve_precision("auto", "cpu", AMX, environ={"ONEDNN_MAX_CPU_ISA": isa})
    assert p.precision == want
    if want == "fp32":
        assert "ONEDNN_MAX_CPU_ISA" in p.reason
    no_bf16 = resolve_precision("auto", "cpu", AVX2_ONLY, environ={"ONEDNN_MAX_CPU_ISA": "ALL"})
    assert no_bf16.precision == "fp32"


@pytest.mark.parametrize("caps", [AVX2_ONLY, AMX])
def test_fp32_is_always_fp32(caps: dict) -> None:
    assert resolve_precision("fp32", "cpu", caps).precision == "fp32"


def test_explicit_bf16_without_native_support_is_allowed_with_a_warning() -> None:
    p = resolve_precision("bf16", "cpu", AVX2_ONLY)
    assert p.precision == "bf16" and not p.native and "slow" in p.reason
    with pytest.warns(RuntimeWarning, match="without native bf16"):
        warn_if_emulated(p)
    native = resolve_precision("bf16", "cpu", AMX)
    assert native.native and native.reason == "asked for"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_if_emulated(native)  # native bf16, and fp32 anywhere: no warning
        warn_if_emulated(Precision("fp32", "fp32", False, "asked for"))


def test_unknown_precision_is_refused() -> None:
    with pytest.raises(ValueError):
        resolve_precision("fp16", "cpu", AMX)
    with pytest.raises(Exception, match="precision must be one of auto, fp32, bf16"):
        TrainConfig(precision="fp16")


def test_cpu_features_fall_back_to_proc_cpuinfo_and_agree_with_torch() -> None:
    arch, feats = cpu_features()
    assert arch
    ok, why = native_bf16("cpu", environ={})
    assert ok == any(f in feats for f in ("amx_bf16", "avx512_bf16", "bf16", "sve_bf16")) and why
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file() and arch.lower() in ("x86_64", "amd64"):
        from presa.precision import _proc_cpuinfo_features

        flags = _proc_cpuinfo_features(cpuinfo)
        assert ("avx512_bf16" in flags or "amx_bf16" in flags) == ok



# ------------------------------------------------------------------------------ bf16 forward pass
def test_bf16_forward_returns_fp32_close_to_the_fp32_pass_and_fp32_gradients() -> None:
    g = torch.Generator().manual_seed(0)
    pi = build_policy("deterministic", obs_dim=8, act_dim=2, hidden=(64, 64), dropout=0.25,
                      generator=g).eval()
    obs = torch.randn(512, 8, generator=g)
    full = pi.params(obs)
    half = pi.params(obs, dtype=torch.bfloat16)
    assert full.dtype == half.dtype == torch.float32
    assert not torch.equal(full, half)  # the hidden matmul did run in bf16
    torch.testing.assert_close(half, full, rtol=0.0, atol=2e-2)
    pi.train()
    half = pi.params(obs, torch.Generator().manual_seed(1), dtype=torch.bfloat16)
    half.square().sum().backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in pi.parameters())
