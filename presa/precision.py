"""Numeric precision of training: which of ``fp32`` / ``bf16`` the ``precision`` option resolves to.

``precision = auto`` (the default) picks bf16 only where the device computes it natively and
fp32 elsewhere:

- CPU, x86: bf16 when the CPU has AVX-512 BF16 or AMX-BF16 (``avx512_bf16`` / ``amx_bf16``); on
  CPUs without them (AVX2-only CPUs, AVX-512 without BF16) bf16 matmuls are emulated and were
  measured 10× slower than fp32 (benchmarks/README.md);
- CPU, ARM64: bf16 when the CPU has the BF16 extension (``bf16`` / ``sve_bf16``);
- CUDA: bf16 when the GPU supports it (``torch.cuda.is_bf16_supported()``).

The CPU's features come from torch's own query (``torch.cpu.get_capabilities()``), else from the
``flags`` / ``Features`` lines of ``/proc/cpuinfo``. An instruction-set limit set for oneDNN
(``ONEDNN_MAX_CPU_ISA``, e.g. ``AVX2``) below its bf16 levels counts as no native bf16, as oneDNN
then emulates it. An explicit ``bf16`` is honoured on any device
(the trainer warns when it is not native there: correct but slow); ``fp32`` is always exact.

What bf16 means (``presa.policy.Policy.params``): in training steps the policy's layers compute in
bf16 (inputs, weights and activations rounded to bf16, matmuls accumulating in fp32) and return
fp32 parameters; the weights, their gradients, the optimiser state, the reference policy's cache,
the scores and the losses stay fp32. The held-out metrics and ``presa eval`` run in fp32.

Example:
    >>> resolve_precision("fp32", "cpu").precision
    'fp32'
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

#: the CPU features that compute bf16 natively, per architecture
NATIVE_BF16_FEATURES = {"x86": ("amx_bf16", "avx512_bf16"), "arm": ("bf16", "sve_bf16")}


@dataclass(frozen=True)
class Precision:
    """A resolved precision: ``precision`` is ``fp32`` or ``bf16``; ``requested`` what was asked;
    ``native`` whether the device computes bf16 natively; ``reason`` one line saying why."""

    precision: str
    requested: str
    native: bool
    reason: str

    @property
    def dtype(self) -> torch.dtype:
        return torch.bfloat16 if self.precision == "bf16" else torch.float32

    def to_dict(self) -> dict[str, Any]:
        return {"requested": self.requested, "resolved": self.precision, "native_bf16": self.native,
                "reason": self.reason}


def _proc_cpuinfo_features(path: Path = Path("/proc/cpuinfo")) -> set[str]:
    try:
        text = path.read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            return set(value.split())
    return set()


def cpu_features(capabilities: Mapping[str, Any] | None = None) -> tuple[str, set[str]]:
    """(architecture, the CPU's feature names) from ``capabilities`` (as ``torch.cpu.get_capabilities()``
    returns them; None: query torch, else read ``/proc/cpuinfo``)."""
    if capabilities is None:
        query = getattr(getattr(torch, "cpu", None), "get_capabilities", None)
        if query is not None:
            try:
                capabilities = dict(query())
            except Exception:  # an old or unusual build: fall back to /proc/cpuinfo
                capabilities = None
    if capabilities is not None:
        arch = str(capabilities.get("architecture", ""))
        return arch, {k for k, v in capabilities.items() if v is True}
    import platform

    return platform.machine(), _proc_cpuinfo_features()


def onednn_isa_limit(environ: Mapping[str, str] | None = None) -> str | None:
    """The oneDNN instruction-set limit (``ONEDNN_MAX_CPU_ISA`` / ``DNNL_MAX_CPU_ISA``) when it rules
    out oneDNN's native bf16 kernels (AVX-512 BF16, AMX, AVX10), else None."""
    env = os.environ if environ is None else environ
    value = (env.get("ONEDNN_MAX_CPU_ISA") or env.get("DNNL_MAX_CPU_ISA") or "").strip().upper()
    if not value or value in ("ALL", "DEFAULT") or any(k in value for k in ("BF16", "AMX", "AVX10", "FP16")):
        return None
    return value


def native_bf16(device: str | torch.device = "cpu", capabilities: Mapping[str, Any] | None = None,
                environ: Mapping[str, str] | None = None) -> tuple[bool, str]:
    """(whether ``device`` computes bf16 natively, one line saying why)."""
    dev = torch.device(device)
    if dev.type == "cuda":
        ok = bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
        return ok, f"CUDA {'supports' if ok else 'does not support'} bf16"
    if dev.type != "cpu":
        return False, f"{dev.type}: bf16 support unknown"
    arch, feats = cpu_features(capabilities)
    family = "arm" if arch.lower() in ("arm64", "aarch64") else "x86"
    have = [f for f in NATIVE_BF16_FEATURES[family] if f in feats]
    limit = onednn_isa_limit(environ) if family == "x86" else None
    if have and limit:
        return False, f"the CPU has {'+'.join(have)} but ONEDNN_MAX_CPU_ISA={limit} (bf16 would be emulated)"
    if have:
        return True, f"the CPU has {'+'.join(have)}"
    want = " or ".join(NATIVE_BF16_FEATURES[family])
    return False, f"the CPU has no {want} (bf16 would be emulated)"


def resolve_precision(requested: str, device: str | torch.device = "cpu",
                      capabilities: Mapping[str, Any] | None = None,
                      environ: Mapping[str, str] | None = None) -> Precision:
    """Resolve ``auto`` / ``fp32`` / ``bf16`` for ``device`` (see the module docstring); ``capabilities``
    and ``environ`` stand in for the CPU's and the process's (tests)."""
    native, why = native_bf16(device, capabilities, environ)
    if requested == "auto":
        return Precision("bf16" if native else "fp32", requested, native, f"auto: {why}")
    if requested == "bf16":
        return Precision("bf16", requested, native, "asked for" + ("" if native else f"; {why}: slow"))
    if requested == "fp32":
        return Precision("fp32", requested, native, "asked for")
    raise ValueError(f"unknown precision {requested!r}")


def warn_if_emulated(p: Precision) -> None:
    """A ``RuntimeWarning`` when bf16 was asked for on a device without native bf16 (it is correct
    there, but several times slower than fp32)."""
    if p.precision == "bf16" and not p.native:
        warnings.warn(f"precision bf16 on a device without native bf16 ({p.reason}); "
                      "training is correct but several times slower than fp32 — use precision=auto",
                      RuntimeWarning, stacklevel=3)
