"""The PyTorch baseline as a runtime backend (``torch`` in fcn_deploy.backends.BACKENDS, for
``.pt``/``.pth`` checkpoints): the loader :class:`ModelFromCheckpoint` and :class:`TorchRunner`
over what it opens, so ``open_runner("model.pt")``, fcn-bench and fcn-eval treat it like any
deployed backend.

torch (and ``fcn_deploy.training``, which rebuilds the model) is imported only inside the
functions that open or run a checkpoint, so importing this module, the registry and the rest
of the runtime needs no torch. (It lived in ``fcn_deploy.benchmarks.torch_runner``, which now
re-exports it.)

Variants: eager fp32 (the reference every ratio is quoted against), autocast bf16 / fp16,
``torch.compile``; device cpu or cuda. On CUDA the runner times host->device, compute and
device->host with CUDA events after synchronising (unverified on hardware: this project's
machines have no GPU).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np

from fcn_deploy.backends.base import Loader, Runner, TensorSpec, Timing
from fcn_deploy.errors import FcnError, first_line

log = logging.getLogger(__name__)

AUTOCAST = (None, "bf16", "fp16")
DEVICES = ("cpu", "cuda")


def _import_torch():
    from fcn_deploy.backends import not_installed

    try:
        import torch
    except ImportError:
        raise not_installed("torch") from None
    return torch


@dataclass
class TorchModel:
    """What :class:`ModelFromCheckpoint` opens: the module on its device (``fn``: the module
    or its ``torch.compile`` wrapper) and the checkpoint's ModelInfo."""

    module: object
    fn: object
    info: object
    device: object


class ModelFromCheckpoint(Loader):
    """Rebuilds an fcn-deploy checkpoint (``torch.load(weights_only=True)``) on ``device``;
    calling it returns a new :class:`TorchModel`.

    ``threads`` sets ``torch.set_num_threads`` (process-wide, as PyTorch has no per-model
    setting). ``autocast`` is None, "bf16" or "fp16" (how the runner calls the model);
    ``compile`` wraps the model in ``torch.compile`` (the first call per shape compiles: warm up).
    """

    def __init__(self, path, *, device: str = "cpu", autocast: Optional[str] = None,
                 compile: bool = False, threads: Optional[int] = None):
        super().__init__(path)
        if device not in DEVICES:
            raise FcnError(f"unknown torch device {device!r}; valid: {', '.join(DEVICES)}")
        if autocast not in AUTOCAST:
            raise FcnError(f"unknown autocast {autocast!r}; valid: bf16, fp16")
        self.device, self.autocast, self.compile, self.threads = device, autocast, bool(compile), threads

    def __call__(self) -> TorchModel:
        torch = _import_torch()
        from fcn_deploy.training.checkpoint import model_from_checkpoint

        if self.threads:
            torch.set_num_threads(int(self.threads))
        if self.device == "cuda" and not torch.cuda.is_available():
            raise FcnError("--device cuda: this torch build sees no CUDA GPU")
        model, info, _ = model_from_checkpoint(self.path)
        dev = torch.device(self.device)
        model = model.to(dev).eval()
        return TorchModel(module=model, fn=torch.compile(model) if self.compile else model, info=info, device=dev)


class TorchRunner(Runner):
    """Run an fcn-deploy checkpoint with PyTorch: ``TorchRunner(checkpoint, **options)`` opens
    it with :class:`ModelFromCheckpoint` (the options are that loader's)."""

    backend = "torch"
    loader_class = ModelFromCheckpoint

    def _bind(self, loader: Loader, model: TorchModel) -> None:
        import torch

        self._torch = torch
        self._info = model.info
        self._dev = model.device
        self._model, self._fn = model.module, model.fn
        self.autocast = getattr(loader, "autocast", None)
        self.compiled = model.fn is not model.module
        self.precision = {None: "fp32", "bf16": "bf16-autocast", "fp16": "fp16-autocast"}[self.autocast]
        if self._dev.type == "cuda":
            self.device = f"cuda:{self._dev.index or 0} ({torch.cuda.get_device_name(self._dev)})"
        else:
            self.device = f"cpu ({torch.get_num_threads()} threads)"

    def model_info(self):
        return self._info

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

    def _infer(self, feeds: Dict[str, np.ndarray]) -> Tuple[Dict[str, np.ndarray], Optional[Timing]]:
        torch = self._torch
        if self._fn is None:
            raise FcnError(f"{self.path.name}: the PyTorch runner is closed")
        if len(feeds) != 1:
            raise FcnError(f"the PyTorch model takes one input, got {sorted(feeds)}")
        arr = np.ascontiguousarray(next(iter(feeds.values())), dtype=np.float32)
        if arr.ndim != 4 or arr.shape[1] != 3:
            raise FcnError(f"input must be N x 3 x H x W, got {tuple(arr.shape)}")
        try:
            with torch.inference_mode():
                if self._dev.type == "cuda":
                    return self._infer_cuda(arr)
                return {"logits": self._forward(torch.from_numpy(arr)).float().numpy()}, None
        except FcnError:
            raise
        except Exception as e:  # the model's own RuntimeError (an empty or too small input...)
            raise FcnError(f"PyTorch failed on input {tuple(arr.shape)}: {first_line(e)}") from None

    def _infer_cuda(self, arr: np.ndarray) -> Tuple[Dict[str, np.ndarray], Timing]:
        # Unverified on hardware. Events bracket each stage on the current stream; the final
        # synchronize makes every elapsed_time valid (total_ms: Runner.infer_timed).
        torch = self._torch
        ev = [torch.cuda.Event(enable_timing=True) for _ in range(4)]
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
        timing = Timing(
            h2d_ms=ev[0].elapsed_time(ev[1]),
            compute_ms=ev[1].elapsed_time(ev[2]),
            d2h_ms=ev[2].elapsed_time(ev[3]),
        )
        return {"logits": out.numpy()}, timing

    def _close(self) -> None:
        self._fn = None
        self._model = None


ModelFromCheckpoint.runner_class = TorchRunner
