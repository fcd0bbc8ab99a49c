"""Training precision for ``fcn-train --amp``: a capability check at start decides bf16 / fp16
autocast or fp32, and channels-last, once; :func:`autocast` is the context the step runs in.

``auto`` (the CamVid recipe's) trains with bf16 autocast when the CPU computes bf16 in hardware
(``torch.cpu._is_amx_tile_supported()`` / ``_is_avx512_bf16_supported()``: Sapphire Rapids and
later, Zen 4 and later) and in fp32 where bf16 would be emulated (an order of magnitude
slower); on CUDA, bf16 where the device supports it, else fp16 with a grad scaler (unverified
on hardware). Validation always runs in fp32.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

import torch

from fcn_deploy.errors import FcnError, unknown_name

# --amp: "auto" = bf16 autocast where the CPU runs bf16 natively (AVX512-BF16 or AMX), fp32 where
# it would be emulated; on CUDA bf16 where supported, else fp16 with a grad scaler (unverified
# on hardware). "on" = the earlier --amp: bf16 on CPU, fp16 on CUDA. "off" = fp32.
AMP_MODES = ("auto", "off", "on", "bf16", "fp16")


def autocast(device: torch.device, amp):
    """``amp``: False/None (off), True (bf16 on CPU, fp16 on CUDA) or a torch dtype."""
    if amp is None or amp is False:
        return torch.autocast(device.type, enabled=False)
    if isinstance(amp, torch.dtype):
        return torch.autocast(device.type, dtype=amp)
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return torch.autocast("cpu", dtype=torch.bfloat16)


def cpu_bf16_native() -> Tuple[bool, str]:
    """Whether this CPU computes bf16 in hardware (AMX tiles or AVX512-BF16), and which; oneDNN
    emulates bf16 elsewhere, an order of magnitude slower than fp32 on the AVX2 EPYC measured."""
    for name, label in (("_is_amx_tile_supported", "AMX"), ("_is_avx512_bf16_supported", "avx512_bf16")):
        check = getattr(torch.cpu, name, None)
        try:
            if check is not None and check():
                return True, label
        except Exception:  # a private torch API: absent or failing means "not known to be native"
            continue
    return False, "no AVX512-BF16 or AMX: bf16 would be emulated"


@dataclass(frozen=True)
class Precision:
    """What ``--amp`` and ``--channels-last`` resolved to on this device, and why."""

    dtype: Optional[torch.dtype]  # autocast dtype; None = fp32
    channels_last: bool
    scaler: bool  # fp16 on CUDA needs a grad scaler
    reason: str

    @property
    def name(self) -> str:
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]

    def describe(self) -> str:
        return f"{self.name} {'autocast ' if self.dtype else ''}{'channels-last' if self.channels_last else 'NCHW'} ({self.reason})"

    def record(self) -> Dict[str, Any]:
        return {"precision": self.name, "channels_last": self.channels_last, "reason": self.reason}


# Whether channels-last goes with bf16 when --channels-last is left to the decision (None): it
# measured no faster than NCHW for the ResNet-18 FCN-8s train step on a CPU with native bf16
# (benchmarks/RESULTS.md, "Training from scratch"). So NCHW.
_CL_WITH_BF16 = False


def resolve_precision(amp: str, device: torch.device, channels_last: Optional[bool]) -> Precision:
    """Decide the training precision at start (a capability check, no timing run)."""
    if isinstance(amp, bool):
        amp = "on" if amp else "off"
    if amp not in AMP_MODES:
        raise unknown_name("amp mode", amp, AMP_MODES)
    dtype, reason = None, "--amp off"
    if device.type == "cuda":  # unverified on hardware
        bf16_ok = bool(torch.cuda.is_bf16_supported())
        if amp == "auto":
            dtype, reason = (torch.bfloat16, "auto: CUDA device supports bf16") if bf16_ok else (
                torch.float16, "auto: CUDA without bf16, fp16 with a grad scaler")
        elif amp in ("on", "fp16"):
            dtype, reason = torch.float16, f"--amp {amp}: fp16 with a grad scaler"
        elif amp == "bf16":
            if not bf16_ok:
                raise FcnError("--amp bf16: this CUDA device does not support bf16; use --amp fp16 or auto")
            dtype, reason = torch.bfloat16, "--amp bf16"
    else:
        native, how = cpu_bf16_native()
        if amp == "fp16":
            raise FcnError("--amp fp16 is for CUDA; on a CPU use --amp bf16 or auto")
        if amp == "auto":
            dtype, reason = (torch.bfloat16, f"auto: CPU has native {how}") if native else (None, f"auto: {how}")
        elif amp in ("on", "bf16"):
            dtype, reason = torch.bfloat16, f"--amp {amp}" + ("" if native else f" ({how}: slow)")
    if channels_last is None:
        cl = bool(dtype is torch.bfloat16 and device.type == "cpu" and _CL_WITH_BF16)
    else:
        cl = bool(channels_last)
    return Precision(dtype=dtype, channels_last=cl, scaler=dtype is torch.float16 and device.type == "cuda",
                     reason=reason)
