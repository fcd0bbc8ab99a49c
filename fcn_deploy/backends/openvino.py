"""OpenVINO backend: the loader :class:`CompiledModelFromOnnx` (a ``CompiledModel``) and
:class:`OpenVinoRunner` over it; ``OpenVinoRunner(path, precision="f32", performance="latency")``
opens and owns one.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from fcn_deploy.backends.base import Loader, OnnxFileRunner, TensorSpec, Timing
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


@dataclass(frozen=True)
class OvModel:
    """What :class:`CompiledModelFromOnnx` opens: the ``CompiledModel`` and the file's
    metadata as it was when compiled (a runner over it never re-reads the file, which may
    have been replaced or removed since)."""

    compiled: object
    metadata: Dict[str, str]


class CompiledModelFromOnnx(Loader):
    """Reads an ONNX file with OpenVINO and compiles it for ``device``; calling it returns a
    new :class:`OvModel`. The options are checked when the loader is built."""

    def __init__(
        self,
        path,
        *,
        precision: Optional[str] = "f32",
        performance: str = "latency",
        threads: Optional[int] = None,
        device: str = "CPU",
    ):
        super().__init__(path)
        self.config = compile_config(precision, performance, threads)
        self.precision = precision
        self.device = device

    def __call__(self):
        from fcn_deploy.backends import not_installed

        try:
            import openvino as ov
        except ImportError:
            raise not_installed("openvino") from None
        header = read_onnx_header(self.path)  # validates the file before OpenVINO sees it
        core = ov.Core()
        try:
            compiled = core.compile_model(core.read_model(str(self.path)), self.device, self.config)
        except Exception as e:
            raise FcnError(f"{self.path}: OpenVINO cannot load this model ({first_line(e)})") from None
        running, hint = compiled_precision(compiled)
        if self.precision is not None and PRECISIONS[str(self.precision).lower()] != running:
            log.warning("OpenVINO: precision %s requested, the CPU runs %s", self.precision, running)
        log.info("openvino %s: %s on %s, precision %s, hint %s", ov.__version__, self.path.name, self.device,
                 running, hint)
        return OvModel(compiled, dict(header.metadata))


def compiled_precision(compiled) -> Tuple[str, str]:
    """(inference precision, performance hint) a CompiledModel actually runs with ("?" when
    this OpenVINO does not say)."""
    try:
        prop = compiled.get_property("INFERENCE_PRECISION_HINT")
        precision = prop.get_type_name() if hasattr(prop, "get_type_name") else str(prop)
        return precision, str(compiled.get_property("PERFORMANCE_HINT"))
    except Exception:
        return "?", "?"


def _spec(port) -> TensorSpec:
    return TensorSpec(port.get_any_name(), OV_TYPES.get(port.get_element_type().get_type_name(), "?"),
                      _dims(port.get_partial_shape()))


class OpenVinoRunner(OnnxFileRunner):
    """One compiled model: ``OpenVinoRunner(path, **options)`` opens it with
    :class:`CompiledModelFromOnnx` (the options are that loader's);
    ``CompiledModelFromOnnx(...).runner(model)`` shares an opened :class:`OvModel`."""

    backend = "openvino"
    loader_class = CompiledModelFromOnnx

    def _bind(self, loader: Loader, model: OvModel) -> None:
        compiled = self.compiled = model.compiled
        self._metadata = dict(model.metadata)
        self.device = f"OpenVINO {getattr(loader, 'device', 'CPU')}"
        self.precision, self.performance = compiled_precision(compiled)
        self._inputs = [_spec(port) for port in compiled.inputs]
        self._outputs = [_spec(port) for port in compiled.outputs]
        self._pool: "queue.SimpleQueue" = queue.SimpleQueue()

    def metadata(self) -> Dict[str, str]:
        return dict(self._metadata)

    def _infer(self, feeds: Dict[str, np.ndarray]) -> Tuple[Dict[str, np.ndarray], Optional[Timing]]:
        compiled = self.compiled
        if compiled is None:
            raise FcnError(f"{self.path.name}: the OpenVINO runner is closed")
        try:
            request = self._pool.get_nowait()
        except queue.Empty:
            request = compiled.create_infer_request()
        try:
            try:
                request.infer({k: np.ascontiguousarray(v) for k, v in feeds.items()})
            except Exception as e:
                raise FcnError(f"OpenVINO failed on input {[v.shape for v in feeds.values()]}: {first_line(e)}") from None
            # Copies: the request's output tensors are reused by the next call.
            outs = {spec.name: np.array(request.get_output_tensor(i).data, copy=True) for i, spec in enumerate(self._outputs)}
        finally:
            self._pool.put(request)
        return outs, None  # compute = the call (Runner.infer_timed)

    def _close(self) -> None:
        self.compiled = None
        self._pool = queue.SimpleQueue()


CompiledModelFromOnnx.runner_class = OpenVinoRunner
