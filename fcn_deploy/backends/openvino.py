"""OpenVINO backend: ``OpenVinoRunner(path, precision="f32", performance="latency")``.

Reads the ONNX with ``ov.Core().read_model`` (dynamic N/H/W kept dynamic) and compiles it
for the CPU with:

- ``precision``: ``"f32"`` or ``"bf16"`` -> ``INFERENCE_PRECISION_HINT``. bf16 runs natively
  only on CPUs with AVX512-BF16 / AMX; elsewhere OpenVINO falls back to f32. The precision
  OpenVINO actually chose is read back, logged and kept in ``runner.precision``.
  ``None`` leaves OpenVINO's default (bf16 on AMX machines, f32 elsewhere).
- ``performance``: ``"latency"`` or ``"throughput"`` -> ``PERFORMANCE_HINT``.
- ``threads``: ``INFERENCE_NUM_THREADS`` (None = OpenVINO's choice).

The class names and normalization come from the ONNX metadata, read without onnx or
onnxruntime (:mod:`fcn_deploy.onnx_info`). Thread safety: each call takes an infer request
from a pool (created on demand), so one runner may serve several threads.
"""

from __future__ import annotations

import logging
import queue
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from fcn_deploy.backends.base import OnnxFileRunner, TensorSpec, Timing
from fcn_deploy.errors import FcnError, first_line
from fcn_deploy.onnx_info import read_onnx_header

log = logging.getLogger(__name__)

PRECISIONS = {"f32": "f32", "fp32": "f32", "bf16": "bf16"}
PERFORMANCE = {"latency": "LATENCY", "throughput": "THROUGHPUT"}
OV_TYPES = {"f32": "float32", "f16": "float16", "i64": "int64", "i32": "int32", "u8": "uint8", "i8": "int8",
            "boolean": "bool", "f64": "float64", "bf16": "bfloat16"}


def compile_config(precision: Optional[str], performance: str, threads: Optional[int]) -> Dict[str, object]:
    """The ``compile_model`` properties for the options (plain logic, tested without OpenVINO)."""
    cfg: Dict[str, object] = {}
    if precision is not None:
        key = str(precision).lower()
        if key not in PRECISIONS:
            raise FcnError(f"unknown OpenVINO precision {precision!r}; valid: f32, bf16")
        cfg["INFERENCE_PRECISION_HINT"] = PRECISIONS[key]
    key = str(performance).lower()
    if key not in PERFORMANCE:
        raise FcnError(f"unknown OpenVINO performance hint {performance!r}; valid: latency, throughput")
    cfg["PERFORMANCE_HINT"] = PERFORMANCE[key]
    if threads is not None:
        if int(threads) < 1:
            raise FcnError(f"threads must be >= 1, got {threads}")
        cfg["INFERENCE_NUM_THREADS"] = int(threads)
    return cfg


def _dims(partial_shape) -> Tuple[object, ...]:
    out = []
    for d in partial_shape:
        out.append(d.get_length() if d.is_static else None)
    return tuple(out)


class OpenVinoRunner(OnnxFileRunner):
    backend = "openvino"

    def __init__(
        self,
        path,
        *,
        precision: Optional[str] = "f32",
        performance: str = "latency",
        threads: Optional[int] = None,
        device: str = "CPU",
    ):
        super().__init__()
        cfg = compile_config(precision, performance, threads)
        try:
            import openvino as ov
        except ImportError:
            raise FcnError("openvino is not installed: pip install openvino (or fcn-deploy[openvino])") from None
        self.path = Path(path)
        self._header = read_onnx_header(self.path)  # also validates the file before OpenVINO sees it
        core = ov.Core()
        try:
            model = core.read_model(str(self.path))
            self.compiled = core.compile_model(model, device, cfg)
        except Exception as e:
            first = first_line(e)
            raise FcnError(f"{self.path}: OpenVINO cannot load this model ({first})") from None
        self.device = f"OpenVINO {device}"
        try:
            p = self.compiled.get_property("INFERENCE_PRECISION_HINT")
            self.precision = p.get_type_name() if hasattr(p, "get_type_name") else str(p)
            self.performance = str(self.compiled.get_property("PERFORMANCE_HINT"))
        except Exception:
            self.precision, self.performance = "?", "?"
        if precision is not None and PRECISIONS[str(precision).lower()] != self.precision:
            log.warning("OpenVINO: precision %s requested, the CPU runs %s", precision, self.precision)
        log.info("openvino %s: %s on %s, precision %s, hint %s", ov.__version__, self.path.name, device,
                 self.precision, self.performance)
        self._inputs = [TensorSpec(p.get_any_name(), OV_TYPES.get(p.get_element_type().get_type_name(), "?"), _dims(p.get_partial_shape()))
                        for p in self.compiled.inputs]
        self._outputs = [TensorSpec(p.get_any_name(), OV_TYPES.get(p.get_element_type().get_type_name(), "?"), _dims(p.get_partial_shape()))
                         for p in self.compiled.outputs]
        self._pool: "queue.SimpleQueue" = queue.SimpleQueue()

    def metadata(self) -> Dict[str, str]:
        return dict(self._header.metadata)

    def _infer(self, feeds: Dict[str, np.ndarray]) -> Tuple[Dict[str, np.ndarray], Timing]:
        try:
            req = self._pool.get_nowait()
        except queue.Empty:
            req = self.compiled.create_infer_request()
        try:
            t0 = time.perf_counter()
            try:
                req.infer({k: np.ascontiguousarray(v) for k, v in feeds.items()})
            except Exception as e:
                first = first_line(e)
                raise FcnError(f"OpenVINO failed on input {[v.shape for v in feeds.values()]}: {first}") from None
            # Copies: the request's output tensors are reused by the next call.
            outs = {spec.name: np.array(req.get_output_tensor(i).data, copy=True) for i, spec in enumerate(self._outputs)}
            ms = (time.perf_counter() - t0) * 1e3
        finally:
            self._pool.put(req)
        return outs, Timing(total_ms=ms, compute_ms=ms)

    def close(self) -> None:
        self.compiled = None
        self._pool = queue.SimpleQueue()
