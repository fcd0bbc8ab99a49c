"""TensorRT backend: the loader :class:`EngineFromPlan` (a :class:`TrtEngine`: engine, execution
context, CUDA device) and :class:`TrtRunner` over it; ``TrtRunner("fcn8s.plan")`` opens and owns
one. TensorRT's named-tensor API (TRT >= 10).

Unverified on hardware (see README, "GPU status": the one place that says what has and has not
run). On the CPU the code is held to the real bindings two ways: every ``trt.*`` / ``pycuda.*``
name it uses is checked against the names TensorRT 10.x and 11.x and pycuda define
(tests/test_trt_api.py, from tests/data/trt_manifest.json), and the whole runner, from plan +
sidecar to labels, runs against strict stand-ins built from that manifest
(tests/trt_standin.py, tests/test_trt_runner.py). The sequence: ``Runtime.deserialize_cuda_engine``
(``None`` on a TensorRT version / GPU mismatch), ``create_execution_context``,
``num_io_tensors`` / ``get_tensor_name`` / ``get_tensor_mode`` / ``get_tensor_dtype``,
``get_tensor_profile_shape(name, 0)``, ``set_input_shape`` then ``infer_shapes()``,
``get_tensor_shape`` for every output, ``set_tensor_address`` for every I/O tensor,
``execute_async_v3(stream handle)``, copies back and a stream synchronize before the host reads.
Device and pinned host buffers live in :mod:`fcn_deploy.backends.cuda_buffers` (pycuda).

Before TensorRT sees a plan, its sidecar is read (a plan without one is refused anywhere) and
:func:`portability_problem` compares the TensorRT version and GPU the plan was built for with
this machine's, so a mismatch is one line naming both instead of TensorRT's deserialization
error; version-compatible and hardware-compatible builds are let through.

Thread safety: an execution context is not thread-safe, so every call holds a lock (one
context, one stream); timing of host->device, compute and device->host comes from CUDA events.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from fcn_deploy.backends.base import Loader, Runner, TensorSpec, Timing
from fcn_deploy.errors import FcnError
from fcn_deploy.modelinfo import ModelInfo
from fcn_deploy.shapes import Profile, format_shape
from fcn_deploy.sidecar import PlanSidecar, read_sidecar

log = logging.getLogger(__name__)

# trt.DataType member name -> numpy dtype name. Every other member (BF16, FP8, INT4, FP4,
# E8M0 and whatever a later TensorRT adds) has no numpy type.
TRT_DTYPES = {
    "FLOAT": "float32", "HALF": "float16", "INT8": "int8", "INT32": "int32", "INT64": "int64",
    "BOOL": "bool", "UINT8": "uint8",
}

_LOGGER = None


def shared_logger(trt, *, verbose: bool = False):
    """The process's one ``trt.Logger``: TensorRT keeps the first logger it is given and
    ignores later ones, so builder and runtime share this one; ``verbose`` lowers its
    severity threshold (and it stays there)."""
    global _LOGGER
    if _LOGGER is None or _LOGGER[0] is not trt:
        _LOGGER = (trt, trt.Logger(trt.Logger.WARNING))
    logger = _LOGGER[1]
    if verbose:
        logger.min_severity = trt.Logger.VERBOSE
    return logger



def import_tensorrt():
    """``import tensorrt`` with the one-line error the CLIs print when it is missing."""
    from fcn_deploy.backends import not_installed

    try:
        import tensorrt as trt
    except ImportError:
        raise not_installed("tensorrt", "TensorRT") from None
    return trt


def parse_version(text: str) -> Tuple[int, int, int]:
    """"10.3.0.26" -> (10, 3, 0)."""
    parts = []
    for part in str(text).split(".")[:3]:
        digits = "".join(char for char in part if char.isdigit())
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
    np_name = TRT_DTYPES.get(name)
    if np_name is None:
        raise FcnError(f"engine I/O tensor of TensorRT type {name} has no numpy equivalent; export the ONNX with float32/float16 I/O")
    return np.dtype(np_name)


def _built_on(sidecar: PlanSidecar) -> str:
    cc = f" (sm_{sidecar.compute_capability.replace('.', '')})" if sidecar.compute_capability else ""
    return f"TensorRT {sidecar.tensorrt_version} on GPU {sidecar.gpu}{cc}"


def _this_machine(runtime_version: str, gpu: str, cc: Optional[str]) -> str:
    return f"TensorRT {runtime_version} on GPU {gpu}" + (f" (sm_{cc.replace('.', '')})" if cc else "")


def portability_problem(plan, sidecar: PlanSidecar, runtime_version: str, gpu: str, cc: Optional[str]) -> Optional[str]:
    """None when the plan may run here, else the one line to print.

    A plan runs on the TensorRT version it was built with, on GPUs of its compute capability.
    ``--version-compatible`` plans also run on later TensorRT versions; ``--hardware-compat
    ampere+`` plans on any GPU of compute capability 8.0 or later. A sidecar without a compute
    capability (written before it was recorded) is checked on the TensorRT version only."""
    builder = sidecar.builder or {}
    built_v = parse_version(sidecar.tensorrt_version)
    here_v = parse_version(runtime_version)
    reasons = []
    if builder.get("version_compatible"):
        if here_v < built_v:
            reasons.append("version")
    elif here_v != built_v:
        reasons.append("version")
    if sidecar.compute_capability and cc:
        want = tuple(int(x) for x in sidecar.compute_capability.split("."))
        have = tuple(int(x) for x in cc.split("."))
        hc = builder.get("hardware_compat", "none")
        if hc == "ampere+":
            if have < (8, 0):
                reasons.append("gpu")
        elif have != want:
            reasons.append("gpu")
    if not reasons:
        return None
    return (f"{plan}: built with {_built_on(sidecar)}; this machine has "
            f"{_this_machine(runtime_version, gpu, cc)}: rebuild with fcn-build")


def deserialize_failure(plan, sidecar: Optional[PlanSidecar], runtime_version: str, gpu: str, cc: Optional[str] = None) -> str:
    """The message when ``deserialize_cuda_engine`` returns None."""
    here = _this_machine(runtime_version, gpu, cc)
    built = f"built with {_built_on(sidecar)}; this machine has {here}" if sidecar is not None else f"this machine has {here}"
    return (
        f"TensorRT could not deserialize {plan} ({built}): a plan runs only on the TensorRT version and GPU "
        "architecture it was built for (unless built with --version-compatible / --hardware-compat ampere+); "
        "rebuild with fcn-build"
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


class TrtEngine:
    """What :class:`EngineFromPlan` opens: one deserialized engine, its execution context, the
    CUDA device (context, stream, events) it lives on, and the lock every inference holds (a
    context is not thread-safe, so runners sharing one engine take turns)."""

    def __init__(self, path: Path, sidecar: PlanSidecar, trt, cuda):
        self.path, self.sidecar, self.trt, self.cuda = path, sidecar, trt, cuda
        self.lock = threading.Lock()
        self.runtime = self.engine = self.context = None
        # The device buffers of the runners over this engine (id(runner) -> their buffers):
        # released first, close() frees what those runners have not.
        self.runner_buffers: Dict[int, dict] = {}
        self.device = f"TensorRT {trt.__version__} on {cuda.name}"

    def open(self, trt) -> None:
        """Deserialize the plan and create the execution context (``trt``: the module)."""
        cuda, path, sidecar = self.cuda, self.path, self.sidecar
        problem = portability_problem(path, sidecar, str(trt.__version__), cuda.name, cuda.compute_capability)
        if problem:
            raise FcnError(problem)
        with cuda.active():
            self.runtime = trt.Runtime(shared_logger(trt))
            if sidecar.builder.get("version_compatible"):
                # Version-compatible plans embed a lean runtime the host must be allowed to run.
                self.runtime.engine_host_code_allowed = True
            self.engine = self.runtime.deserialize_cuda_engine(path.read_bytes())
            if self.engine is None:
                raise FcnError(deserialize_failure(path, sidecar, trt.__version__, cuda.name, cuda.compute_capability))
            self.context = self.engine.create_execution_context()
            if self.context is None:
                raise FcnError(f"TensorRT could not create an execution context for {path} (out of GPU memory?)")
            io = []
            for i in range(self.engine.num_io_tensors):
                name = self.engine.get_tensor_name(i)
                is_input = self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
                dtype = numpy_dtype(self.engine.get_tensor_dtype(name).name)
                io.append((name, is_input, dtype.name))
            self.input_name, self.output_names = validate_io(io, sidecar)
            self.all_outputs = [n for n, is_in, _ in io if not is_in]
            extra = [n for n in self.all_outputs if n not in self.output_names]
            if extra:
                log.info("%s: engine output(s) %s not in the sidecar get buffers but are not returned", path.name, ", ".join(extra))
            self.dtypes = {n: np.dtype(d) for n, _, d in io}
            self.static_shapes = {n: tuple(self.engine.get_tensor_shape(n)) for n, _, _ in io}
            pmin, popt, pmax = self.engine.get_tensor_profile_shape(self.input_name, 0)
            self.profile = Profile(tuple(pmin), tuple(popt), tuple(pmax))
            if self.profile != sidecar.profile:
                log.warning("%s: engine profile (%s) differs from its sidecar (%s); using the engine's",
                            path.name, self.profile.describe(), sidecar.profile.describe())
        log.info("%s: %s, profile %s", path.name, self.device, self.profile.describe())

    @property
    def closed(self) -> bool:
        return self.cuda is None

    def close(self) -> None:
        """The buffers of runners still open over it, execution context, engine and runtime go
        with the CUDA context current, in that order; then the device's stream, events and
        primary context (CudaDevice.close). Those runners then say "closed"."""
        cuda, self.cuda = self.cuda, None
        if cuda is None:
            return
        with self.lock:
            try:
                if cuda._ctx is not None:
                    with cuda.active():
                        for buffers in self.runner_buffers.values():
                            for buf in buffers.values():
                                buf.free()
                        self.runner_buffers.clear()
                        self.context = None
                        self.engine = None
                        self.runtime = None
            finally:
                cuda.close()


class EngineFromPlan(Loader):
    """Opens a TensorRT plan (after its sidecar and the portability check); calling it returns
    a new :class:`TrtEngine`. Unverified on hardware (see the module docstring)."""

    def __init__(self, path, *, device_id: int = 0, verify_plan: bool = True):
        super().__init__(path)
        self.device_id = int(device_id)
        self.verify_plan = bool(verify_plan)

    def __call__(self) -> TrtEngine:
        if not self.path.is_file():
            raise FcnError(f"{self.path}: no such file")
        # Sidecar first: a plan without it is refused on any machine, GPU or not.
        sidecar = read_sidecar(self.path, verify_plan=self.verify_plan)
        trt = import_tensorrt()
        require_trt10(trt.__version__)
        from fcn_deploy.backends import cuda_buffers

        engine = TrtEngine(self.path, sidecar, trt, cuda_buffers.CudaDevice(self.device_id))
        try:
            engine.open(trt)
        except BaseException:
            engine.close()
            raise
        return engine

    def release(self, loaded: TrtEngine) -> None:
        loaded.close()


class TrtRunner(Runner):
    """One TensorRT engine: ``TrtRunner(path, device_id=0)`` opens the plan with
    :class:`EngineFromPlan` and owns it; ``EngineFromPlan(...).runner(engine)`` shares one
    (the runners take turns on its context). Every engine output gets a device buffer and an
    address (TensorRT needs all of them), but only the outputs the sidecar names are returned."""

    backend = "tensorrt"
    loader_class = EngineFromPlan

    def _bind(self, loader: Loader, engine: TrtEngine) -> None:
        from fcn_deploy.backends import cuda_buffers

        self._engine = engine
        self._cuda = engine.cuda
        self.sidecar = engine.sidecar
        self.device = engine.device
        self._input_name, self._output_names = engine.input_name, engine.output_names
        self._all_outputs = engine.all_outputs
        self._dtypes, self._static_shapes, self._profile = engine.dtypes, engine.static_shapes, engine.profile
        with engine.lock:
            if engine.closed:
                raise FcnError(f"{engine.path.name}: the TensorRT engine was released")
            with engine.cuda.active():
                self._buffers = {n: cuda_buffers.HostDeviceBuffer(d) for n, d in self._dtypes.items()}
            engine.runner_buffers[id(self)] = self._buffers

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
    def _infer(self, feeds: Dict[str, np.ndarray]) -> Tuple[Dict[str, np.ndarray], Timing]:
        if self._cuda is None or self._engine.closed:
            raise FcnError(f"{self.path.name}: the TensorRT runner is closed")
        if set(feeds) != {self._input_name}:
            raise FcnError(f"engine takes one input {self._input_name!r}, got {sorted(feeds)}")
        x = feeds[self._input_name]
        self._profile.check(x.shape, name=f"input {self._input_name!r}")
        want = self._dtypes[self._input_name]
        if x.dtype != want:
            raise FcnError(f"engine input {self._input_name!r} is {want.name}, got {x.dtype.name}")
        cuda = self._cuda
        engine = self._engine
        with engine.lock, cuda.active():
            if engine.closed:  # released by another thread since the check above
                raise FcnError(f"{self.path.name}: the TensorRT runner is closed (its engine was released)")
            ctx = engine.context
            if not ctx.set_input_shape(self._input_name, tuple(int(d) for d in x.shape)):
                raise FcnError(f"TensorRT refused input shape {format_shape(x.shape)} (profile {self._profile.describe()})")
            unset = ctx.infer_shapes()
            if unset:
                raise FcnError(f"TensorRT cannot infer shapes for input {format_shape(x.shape)}: "
                               f"{', '.join(map(str, unset))} insufficiently specified")
            host_in = self._buffers[self._input_name].ensure(x.shape)
            np.copyto(host_in, x)
            out_shapes = {}
            for name in self._all_outputs:
                shape = tuple(ctx.get_tensor_shape(name))
                if any(d < 0 for d in shape):
                    raise FcnError(f"TensorRT could not infer the shape of output {name!r} for input {format_shape(x.shape)}")
                out_shapes[name] = shape
                self._buffers[name].ensure(shape)
            for name, buf in self._buffers.items():
                if not ctx.set_tensor_address(name, buf.device_ptr):
                    raise FcnError(f"TensorRT refused the device address of tensor {name!r}")
            stream = cuda.stream
            cuda.record(0)
            self._buffers[self._input_name].to_device(stream, x.size)
            cuda.record(1)
            ok = ctx.execute_async_v3(stream.handle)
            cuda.record(2)
            if ok:
                for name in self._output_names:
                    self._buffers[name].to_host(stream, int(np.prod(out_shapes[name])))
            cuda.record(3)
            cuda.synchronize()
            if not ok:
                raise FcnError("TensorRT execute_async_v3 failed (see the TensorRT log above)")
            outs = {n: np.array(self._buffers[n].host_view(out_shapes[n]), copy=True) for n in self._output_names}
            timing = Timing(
                h2d_ms=cuda.elapsed_ms(0, 1),
                compute_ms=cuda.elapsed_ms(1, 2),
                d2h_ms=cuda.elapsed_ms(2, 3),
            )
        return outs, timing

    def _close(self) -> None:
        """The runner's buffers go with the engine's CUDA context current; the engine itself
        goes back to its loader when this runner opened it (Runner.close)."""
        engine, self._cuda = getattr(self, "_engine", None), None
        buffers, self._buffers = getattr(self, "_buffers", {}), {}
        if engine is None:
            return
        with engine.lock:
            engine.runner_buffers.pop(id(self), None)
            cuda = engine.cuda
            if buffers and cuda is not None and cuda._ctx is not None:
                with cuda.active():
                    for buf in buffers.values():
                        buf.free()
            # else the engine was released first: TrtEngine.close freed these buffers with
            # its context current, and only the references go (with ``buffers``).


EngineFromPlan.runner_class = TrtRunner
