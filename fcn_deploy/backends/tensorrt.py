"""TensorRT backend: ``TrtRunner("fcn8s.plan")`` over TensorRT's named-tensor API (TRT >= 10).

Unverified on hardware: this project's machines have no NVIDIA GPU, so :class:`TrtRunner` is
written against NVIDIA's documented Python API and never runs in the CPU test suite:
``Runtime.deserialize_cuda_engine`` (``None`` on a TensorRT version / GPU mismatch),
``create_execution_context``, ``num_io_tensors`` / ``get_tensor_name`` / ``get_tensor_mode`` /
``get_tensor_dtype``, ``get_tensor_profile_shape(name, 0)``, ``set_input_shape``,
``get_tensor_shape``, ``set_tensor_address`` and ``execute_async_v3(stream)``. Device and
pinned host buffers live in :mod:`fcn_deploy.backends.cuda_buffers` (pycuda).

Everything that does not need a GPU is a plain function here, tested on CPU: sidecar reading
(before TensorRT is imported, so a plan without its sidecar is refused anywhere), dtype
mapping, I/O validation against the sidecar, the profile check that names the profile, the
version parsing and the deserialization failure message.

Thread safety: an execution context is not thread-safe, so every call holds a lock (one
context, one stream); timing of host->device, compute and device->host comes from CUDA events.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from fcn_deploy.backends.base import Runner, TensorSpec, Timing
from fcn_deploy.errors import FcnError
from fcn_deploy.modelinfo import ModelInfo
from fcn_deploy.shapes import Profile, format_shape
from fcn_deploy.sidecar import PlanSidecar, read_sidecar

log = logging.getLogger(__name__)

# trt.DataType member name -> numpy dtype name (None: no numpy equivalent).
TRT_DTYPES = {
    "FLOAT": "float32", "HALF": "float16", "INT8": "int8", "INT32": "int32", "INT64": "int64",
    "BOOL": "bool", "UINT8": "uint8", "BF16": None, "FP8": None, "INT4": None, "FP4": None,
}

NOT_INSTALLED = "TensorRT is not installed: pip install tensorrt on a machine with an NVIDIA GPU"


def import_tensorrt():
    """``import tensorrt`` with the one-line error the CLIs print when it is missing."""
    try:
        import tensorrt as trt
    except ImportError:
        raise FcnError(NOT_INSTALLED) from None
    return trt


def parse_version(text: str) -> Tuple[int, int, int]:
    """"10.3.0.26" -> (10, 3, 0)."""
    parts = []
    for p in str(text).split(".")[:3]:
        digits = "".join(ch for ch in p if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    if not parts:
        raise FcnError(f"cannot parse TensorRT version {text!r}")
    while len(parts) < 3:
        parts.append(0)
    return tuple(parts)  # type: ignore[return-value]


def require_trt10(version: str) -> None:
    if parse_version(version) < (10, 0, 0):
        raise FcnError(f"TensorRT {version} is too old: fcn-deploy needs TensorRT >= 10 (the named-tensor API)")


def numpy_dtype(trt_dtype_name: str) -> np.dtype:
    """TensorRT DataType name ("FLOAT", "HALF", "INT32"...) -> numpy dtype; FcnError when numpy has none."""
    name = str(trt_dtype_name).split(".")[-1].upper()
    if name not in TRT_DTYPES:
        raise FcnError(f"unknown TensorRT data type {trt_dtype_name!r}")
    np_name = TRT_DTYPES[name]
    if np_name is None:
        raise FcnError(f"engine I/O tensor of type {name} has no numpy equivalent; export the ONNX with float32/float16 I/O")
    return np.dtype(np_name)


def deserialize_failure(plan, sidecar: Optional[PlanSidecar], runtime_version: str, gpu: str) -> str:
    """The message when ``deserialize_cuda_engine`` returns None."""
    built = ""
    if sidecar is not None:
        built = f" It was built with TensorRT {sidecar.tensorrt_version} on {sidecar.gpu}; this machine has TensorRT {runtime_version} on {gpu}."
    else:
        built = f" This machine has TensorRT {runtime_version} on {gpu}."
    return (
        f"TensorRT could not deserialize {plan}: a plan runs only on the TensorRT version and GPU "
        f"architecture it was built for (unless built with --version-compatible / --hardware-compat ampere+).{built} "
        "Rebuild it here with fcn-build."
    )


def validate_io(io: Sequence[Tuple[str, bool, str]], sidecar: PlanSidecar) -> Tuple[str, List[str]]:
    """Check the engine's I/O tensors (name, is_input, numpy dtype name) against the sidecar.

    Returns (input name, output names in the sidecar's order)."""
    inputs = [n for n, is_in, _ in io if is_in]
    outputs = [n for n, is_in, _ in io if not is_in]
    if len(inputs) != 1:
        raise FcnError(f"engine has {len(inputs)} inputs ({', '.join(inputs)}); an FCN plan has exactly one")
    if inputs[0] != sidecar.input_name:
        raise FcnError(f"engine input is {inputs[0]!r} but its sidecar says {sidecar.input_name!r}: sidecar and plan do not belong together")
    missing = [o for o in sidecar.output_names if o not in outputs]
    if missing:
        raise FcnError(f"engine lacks output(s) {', '.join(missing)} named in its sidecar (outputs: {', '.join(outputs)})")
    return inputs[0], list(sidecar.output_names)


class TrtRunner(Runner):
    """One TensorRT plan: one engine, one execution context, one stream, under a lock."""

    backend = "tensorrt"

    def __init__(self, path, *, device_id: int = 0, verify_plan: bool = True):
        super().__init__()
        self.path = Path(path)
        if not self.path.is_file():
            raise FcnError(f"{self.path}: no such file")
        # Sidecar first: a plan without it is refused on any machine, GPU or not.
        self.sidecar = read_sidecar(self.path, verify_plan=verify_plan)
        trt = import_tensorrt()
        require_trt10(trt.__version__)
        from fcn_deploy.backends import cuda_buffers

        self._cuda = cuda_buffers.CudaDevice(device_id)
        self.device = f"TensorRT {trt.__version__} on {self._cuda.name}"
        self._trt = trt
        self._lock = threading.Lock()
        with self._cuda.active():
            self._logger = trt.Logger(trt.Logger.WARNING)
            self._runtime = trt.Runtime(self._logger)
            if self.sidecar.builder.get("version_compatible"):
                # Version-compatible plans embed a lean runtime the host must be allowed to run.
                self._runtime.engine_host_code_allowed = True
            self.engine = self._runtime.deserialize_cuda_engine(self.path.read_bytes())
            if self.engine is None:
                raise FcnError(deserialize_failure(self.path, self.sidecar, trt.__version__, self._cuda.name))
            self.context = self.engine.create_execution_context()
            if self.context is None:
                raise FcnError(f"TensorRT could not create an execution context for {self.path} (out of GPU memory?)")
            io = []
            for i in range(self.engine.num_io_tensors):
                name = self.engine.get_tensor_name(i)
                is_input = self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
                dt = numpy_dtype(self.engine.get_tensor_dtype(name).name)
                io.append((name, is_input, dt.name))
            self._input_name, self._output_names = validate_io(io, self.sidecar)
            self._dtypes = {n: np.dtype(d) for n, _, d in io}
            self._static_shapes = {n: tuple(self.engine.get_tensor_shape(n)) for n, _, _ in io}
            pmin, popt, pmax = self.engine.get_tensor_profile_shape(self._input_name, 0)
            self._profile = Profile(tuple(pmin), tuple(popt), tuple(pmax))
            if self._profile != self.sidecar.profile:
                log.warning("%s: engine profile (%s) differs from its sidecar (%s); using the engine's",
                            self.path.name, self._profile.describe(), self.sidecar.profile.describe())
            self._buffers = {n: cuda_buffers.HostDeviceBuffer(self._dtypes[n]) for n, _, _ in io}
        log.info("%s: %s, profile %s", self.path.name, self.device, self._profile.describe())

    # -- metadata ------------------------------------------------------------------------------
    def model_info(self) -> ModelInfo:
        return self.sidecar.info

    def inputs(self) -> List[TensorSpec]:
        s = self._static_shapes[self._input_name]
        return [TensorSpec(self._input_name, self._dtypes[self._input_name].name, tuple(d if d >= 0 else None for d in s))]

    def outputs(self) -> List[TensorSpec]:
        return [TensorSpec(n, self._dtypes[n].name, tuple(d if d >= 0 else None for d in self._static_shapes[n]))
                for n in self._output_names]

    def profile(self):
        p = self._profile
        return p.min, p.opt, p.max

    # -- inference -----------------------------------------------------------------------------
    def infer_timed(self, feeds: Dict[str, np.ndarray]) -> Tuple[Dict[str, np.ndarray], Timing]:
        if set(feeds) != {self._input_name}:
            raise FcnError(f"engine takes one input {self._input_name!r}, got {sorted(feeds)}")
        x = feeds[self._input_name]
        self._profile.check(x.shape, name=f"input {self._input_name!r}")
        want = self._dtypes[self._input_name]
        if x.dtype != want:
            raise FcnError(f"engine input {self._input_name!r} is {want.name}, got {x.dtype.name}")
        cuda = self._cuda
        t0 = time.perf_counter()
        with self._lock, cuda.active():
            ctx = self.context
            if not ctx.set_input_shape(self._input_name, tuple(int(d) for d in x.shape)):
                raise FcnError(f"TensorRT refused input shape {format_shape(x.shape)} (profile {self._profile.describe()})")
            host_in = self._buffers[self._input_name].ensure(x.shape)
            np.copyto(host_in, x)
            out_shapes = {}
            for name in self._output_names:
                shape = tuple(ctx.get_tensor_shape(name))
                if any(d < 0 for d in shape):
                    raise FcnError(f"TensorRT could not infer the shape of output {name!r} for input {format_shape(x.shape)}")
                out_shapes[name] = shape
                self._buffers[name].ensure(shape)
            for name, buf in self._buffers.items():
                ctx.set_tensor_address(name, buf.device_ptr)
            stream = cuda.stream
            cuda.record(0)
            self._buffers[self._input_name].to_device(stream, x.size)
            cuda.record(1)
            ok = ctx.execute_async_v3(stream.handle)
            cuda.record(2)
            for name in self._output_names:
                self._buffers[name].to_host(stream, int(np.prod(out_shapes[name])))
            cuda.record(3)
            cuda.synchronize()
            if not ok:
                raise FcnError("TensorRT execute_async_v3 failed (see the TensorRT log above)")
            outs = {n: np.array(self._buffers[n].ensure(out_shapes[n]), copy=True) for n in self._output_names}
            timing = Timing(
                total_ms=(time.perf_counter() - t0) * 1e3,
                h2d_ms=cuda.elapsed_ms(0, 1),
                compute_ms=cuda.elapsed_ms(1, 2),
                d2h_ms=cuda.elapsed_ms(2, 3),
            )
        return outs, timing

    def infer(self, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        out, self.last_timing = self.infer_timed(feeds)
        return out

    def close(self) -> None:
        cuda = getattr(self, "_cuda", None)
        if cuda is None:
            return
        with self._lock:
            with cuda.active():
                for buf in self._buffers.values():
                    buf.free()
                self.context = None
                self.engine = None
            cuda.close()
        self._cuda = None
