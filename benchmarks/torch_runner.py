"""The PyTorch baseline as a :class:`~fcn_deploy.backends.base.Runner`, so fcn-bench and fcn-eval
treat it like any deployed backend.

torch is imported here only (lazily, when a runner is created): the rest of
``fcn_deploy.benchmarks`` works on a machine without torch.

Variants: eager fp32 (the reference every ratio is quoted against), autocast bf16 / fp16,
``torch.compile``; device cpu or cuda. On CUDA the runner times host->device, compute and
device->host with CUDA events after synchronising (unverified on hardware: this project's
machines have no GPU).
"""

from __future__ import annotations

import logging
import time
from typing import Dict, List, Optional, Tuple

import numpy as np

from fcn_deploy.backends.base import Runner, TensorSpec, Timing
from fcn_deploy.errors import FcnError

log = logging.getLogger(__name__)

AUTOCAST = (None, "bf16", "fp16")
DEVICES = ("cpu", "cuda")


def _import_torch():
    try:
        import torch
    except ImportError:
        raise FcnError("the PyTorch baseline needs torch: pip install 'fcn-deploy[train]'") from None
    return torch


class TorchRunner(Runner):
    """Run an fcn-deploy checkpoint with PyTorch.

    ``threads`` sets ``torch.set_num_threads`` (process-wide, as PyTorch has no per-model
    setting). ``autocast`` is None, "bf16" or "fp16"; ``compile`` wraps the model in
    ``torch.compile`` (the first call per shape compiles: warm up).
    """

    backend = "torch"

    def __init__(self, checkpoint, *, device: str = "cpu", autocast: Optional[str] = None,
                 compile: bool = False, threads: Optional[int] = None):
        super().__init__()
        if device not in DEVICES:
            raise FcnError(f"unknown torch device {device!r}; valid: {', '.join(DEVICES)}")
        if autocast not in AUTOCAST:
            raise FcnError(f"unknown autocast {autocast!r}; valid: bf16, fp16")
        torch = _import_torch()
        from fcn_deploy.training.checkpoint import model_from_checkpoint

        if threads:
            torch.set_num_threads(int(threads))
        if device == "cuda" and not torch.cuda.is_available():
            raise FcnError("--device cuda: this torch build sees no CUDA GPU")
        model, info, _ = model_from_checkpoint(checkpoint)
        self.info = info
        self.path = str(checkpoint)
        self._torch = torch
        self._dev = torch.device(device)
        self._model = model.to(self._dev).eval()
        self._fn = torch.compile(self._model) if compile else self._model
        self.autocast = autocast
        self.compiled = bool(compile)
        self.precision = {None: "fp32", "bf16": "bf16-autocast", "fp16": "fp16-autocast"}[autocast]
        if device == "cuda":
            self.device = f"cuda:{self._dev.index or 0} ({torch.cuda.get_device_name(self._dev)})"
        else:
            self.device = f"cpu ({torch.get_num_threads()} threads)"

    def inputs(self) -> List[TensorSpec]:
        return [TensorSpec(self.info.input_name or "input", "float32", (None, 3, None, None))]

    def outputs(self) -> List[TensorSpec]:
        return [TensorSpec("logits", "float32", (None, self.info.num_classes, None, None))]

    def _forward(self, x):
        torch = self._torch
        if self.autocast is None:
            return self._fn(x)
        dtype = torch.bfloat16 if self.autocast == "bf16" else torch.float16
        with torch.autocast(device_type=self._dev.type, dtype=dtype):
            return self._fn(x)

    def _infer(self, feeds: Dict[str, np.ndarray]) -> Tuple[Dict[str, np.ndarray], Timing]:
        torch = self._torch
        if len(feeds) != 1:
            raise FcnError(f"the PyTorch model takes one input, got {sorted(feeds)}")
        arr = np.ascontiguousarray(next(iter(feeds.values())), dtype=np.float32)
        if arr.ndim != 4 or arr.shape[1] != 3:
            raise FcnError(f"input must be N x 3 x H x W, got {tuple(arr.shape)}")
        with torch.inference_mode():
            if self._dev.type == "cuda":
                return self._infer_cuda(arr)
            t0 = time.perf_counter()
            y = self._forward(torch.from_numpy(arr))
            out = y.float().numpy()
            ms = (time.perf_counter() - t0) * 1000.0
            return {"logits": out}, Timing(total_ms=ms, compute_ms=ms)

    def _infer_cuda(self, arr: np.ndarray) -> Tuple[Dict[str, np.ndarray], Timing]:
        # Unverified on hardware. Events bracket each stage on the current stream; the final
        # synchronize makes every elapsed_time valid.
        torch = self._torch
        ev = [torch.cuda.Event(enable_timing=True) for _ in range(4)]
        t0 = time.perf_counter()
        torch.cuda.synchronize(self._dev)
        host = torch.from_numpy(arr).pin_memory()
        ev[0].record()
        x = host.to(self._dev, non_blocking=True)
        ev[1].record()
        y = self._forward(x).float()
        ev[2].record()
        out = y.to("cpu", non_blocking=False)
        ev[3].record()
        torch.cuda.synchronize(self._dev)
        total = (time.perf_counter() - t0) * 1000.0
        timing = Timing(
            total_ms=total,
            h2d_ms=ev[0].elapsed_time(ev[1]),
            compute_ms=ev[1].elapsed_time(ev[2]),
            d2h_ms=ev[2].elapsed_time(ev[3]),
        )
        return {"logits": out.numpy()}, timing

    def close(self) -> None:
        self._fn = None
        self._model = None
