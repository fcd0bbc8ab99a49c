"""The one runner protocol every backend implements, and the loaders runners are made from.

A backend is two classes, as Polygraphy splits them (a loader such as ``SessionFromOnnx``, a
runner such as ``OnnxrtRunner(session)``):

- a :class:`Loader`: built from a file and the backend's options (it checks them and opens
  nothing); calling it opens the library object: the onnxruntime ``InferenceSession``, the
  OpenVINO ``CompiledModel``, the TensorRT engine and execution context, the PyTorch module
  (with what the runner needs besides, e.g. the file's metadata as loaded, where the library
  object does not carry it). Every call opens a new one, so a second call is a reload;
- a :class:`Runner` over one opened object: tensor specs, ``model_info``, ``infer``.

Opening once and sharing (what a server does: load, warm up, swap in a reload)::

    loader = SessionFromOnnx("fcn8s.onnx", providers=["cpu"])
    session = loader()                        # the expensive part, once
    a, b = loader.runner(session), loader.runner(session)   # share it; closing a or b leaves it open
    fresh = loader.runner()                   # a reload (a new file at the same path), owned by
                                              # ``fresh``: fresh.close() frees it
    a.close(); b.close(); loader.release(session)           # the old one goes back

(``loader.runner(obj, owns=True)`` hands an object opened earlier to the runner, which then
releases it on close; without ``owns`` a runner over a given object only borrows it.)

The usual way, one runner that owns what it opened (``OrtRunner(path, **options)`` is
``OrtRunner`` over ``SessionFromOnnx(path, **options)()``)::

    from fcn_deploy.backends import open_runner
    with open_runner("fcn8s.onnx", providers=["cpu"]) as r:
        out = r.infer({"input": x})          # dict of numpy arrays in, dict out
        print(r.last_timing, r.info)          # Timing of that call, the model's ModelInfo

``infer`` takes NCHW float32 (or what the model's input dtype is) and returns numpy arrays
on the host. ``Runner.infer_timed`` times every call (``total_ms``); a backend's ``_infer``
reports only what it can separate: ``compute_ms`` and ``h2d_ms``/``d2h_ms`` (TensorRT, CUDA
torch); where it cannot, ``compute_ms`` is the total and the transfers are None.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np


@dataclass
class Timing:
    # Set by Runner.infer_timed (the whole call); a backend's _infer leaves it None.
    total_ms: Optional[float] = None
    compute_ms: Optional[float] = None
    h2d_ms: Optional[float] = None
    d2h_ms: Optional[float] = None


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str  # numpy dtype name, e.g. "float32"
    # Dimensions with None (or a string) for dynamic axes.
    shape: Tuple[object, ...]


class Loader:
    """Opens one model file in one backend's library (see the module docstring).

    Subclasses set ``runner_class`` and implement ``__call__`` (open and return the library
    object; FcnError, one line, when it cannot) and, where the object holds more than memory
    (GPU contexts), ``release``."""

    runner_class: type = None  # type: ignore[assignment]

    def __init__(self, path):
        self.path = Path(path)

    def __call__(self):
        raise NotImplementedError

    def release(self, loaded) -> None:
        """Free what :meth:`__call__` returned (default: nothing; the library frees it with its
        last reference)."""

    def runner(self, loaded=None, *, owns: Optional[bool] = None) -> "Runner":
        """A runner over ``loaded`` (borrowed: closing the runner leaves it open, unless
        ``owns=True`` hands it over), or, without one, over a fresh load (a reload) that the
        runner owns and releases when it is closed."""
        if loaded is None:
            if owns is False:
                raise TypeError("a runner over a fresh load owns it: owns=False needs an object")
            return self.runner_class._over(self, self(), owns=True)
        return self.runner_class._over(self, loaded, owns=bool(owns))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r})"


class Runner:
    """Base class: subclasses set ``backend`` (and ``loader_class`` when they open files) and
    implement ``_bind``, ``_infer``, ``inputs``, ``outputs``, ``model_info`` (and ``_close``
    for state of their own)."""

    backend: str = "?"
    # What device/provider actually runs the model (e.g. "CPUExecutionProvider"), for logs.
    device: str = "?"
    # The Loader that opens this backend's files; ``Runner(path, **options)`` goes through it.
    loader_class: Optional[type] = None

    def __init__(self, path=None, **options):
        self.last_timing: Optional[Timing] = None
        self._owned = None
        if path is None and options:
            raise TypeError(f"{type(self).__name__}: options {', '.join(sorted(options))} without a model path")
        if path is not None:
            if self.loader_class is None:
                raise TypeError(f"{type(self).__name__} opens no files")
            loader = self.loader_class(path, **options)
            self._attach(loader, loader(), owns=True)

    @classmethod
    def _over(cls, loader: Loader, loaded, *, owns: bool) -> "Runner":
        runner = cls.__new__(cls)
        Runner.__init__(runner)
        runner._attach(loader, loaded, owns=owns)
        return runner

    def _attach(self, loader: Loader, loaded, *, owns: bool) -> None:
        self.path = loader.path
        self.loader = loader
        try:
            self._bind(loader, loaded)
        except BaseException:
            try:
                self._close()
            finally:
                if owns:
                    loader.release(loaded)
            raise
        if owns:
            self._owned = loaded

    def _bind(self, loader: Loader, loaded) -> None:
        """Take the opened library object: read its tensors, set ``device``."""
        raise NotImplementedError

    # Specs of the model's inputs and outputs.
    def inputs(self) -> List[TensorSpec]:
        raise NotImplementedError

    def outputs(self) -> List[TensorSpec]:
        raise NotImplementedError

    def model_info(self):
        """The model's :class:`~fcn_deploy.modelinfo.ModelInfo` (classes, palette, input
        convention); FcnError when the file carries none."""
        raise NotImplementedError

    @property
    def info(self):
        """:meth:`model_info`, read once."""
        cached = self.__dict__.get("_model_info")
        if cached is None:
            cached = self.__dict__["_model_info"] = self.model_info()
        return cached

    # Allowed input shape range (min, opt, max) for engines with profiles; None = any size.
    def profile(self) -> Optional[Tuple[Tuple[int, ...], Tuple[int, ...], Tuple[int, ...]]]:
        return None

    # Inference: subclasses implement ``_infer`` (outputs, and a Timing with what the backend
    # can separate: compute/h2d/d2h, or None); ``infer`` and ``infer_timed`` are the template
    # every caller uses, and the one place ``total_ms`` is measured.
    def _infer(self, feeds: Dict[str, np.ndarray]) -> Tuple[Dict[str, np.ndarray], Optional[Timing]]:
        raise NotImplementedError

    def infer_timed(self, feeds: Dict[str, np.ndarray]) -> Tuple[Dict[str, np.ndarray], Timing]:
        """Outputs and this call's Timing together (thread-safe, unlike ``last_timing``)."""
        t0 = time.perf_counter()
        out, timing = self._infer(feeds)
        total = (time.perf_counter() - t0) * 1e3
        timing = timing if timing is not None else Timing()
        timing.total_ms = total
        if timing.compute_ms is None:  # the backend cannot separate transfers from compute
            timing.compute_ms = total
        return out, timing

    def infer(self, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """Outputs only; this call's Timing is left in ``last_timing``."""
        out, self.last_timing = self.infer_timed(feeds)
        return out

    def warmup(self, runs: int = 1, hw: Tuple[int, int] = (64, 64)) -> None:
        """Run ``runs`` inferences on zeros (first-call allocations, lazy compilation) before
        the runner serves real requests: at the profile's smallest shape where the model has
        a profile, else at ``hw`` and the smallest batch its input takes."""
        spec = self.inputs()[0]
        prof = self.profile()
        if prof is not None:
            shape = tuple(int(d) for d in prof[0])
        else:
            nhwc = spec.dtype == "uint8"  # pixels in: N x H x W x 3
            fallback = (1, hw[0], hw[1], 3) if nhwc else (1, 3, hw[0], hw[1])
            shape = tuple(d if isinstance(d, int) and d > 0 else f for d, f in zip(spec.shape, fallback))
        x = np.zeros(shape, np.dtype(spec.dtype))
        for _ in range(int(runs)):
            self._infer({spec.name: x})

    # Closing: ``_close`` drops the runner's own state; what the runner opened itself (not a
    # shared object given to ``loader.runner(obj)``) goes back to its loader.
    def _close(self) -> None:
        pass

    def close(self) -> None:
        owned, self._owned = getattr(self, "_owned", None), None
        try:
            self._close()
        finally:
            if owned is not None:
                self.loader.release(owned)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


class OnnxFileRunner(Runner):
    """A runner over an ONNX file (onnxruntime, OpenVINO, the ONNX reference evaluator): its
    tensor specs are known once loaded (``self._inputs``/``self._outputs``, set by the
    subclass) and its ModelInfo comes from the file's metadata (``self.metadata()``,
    implemented by the subclass)."""

    path: object
    _inputs: List[TensorSpec]
    _outputs: List[TensorSpec]

    def metadata(self) -> Dict[str, str]:
        raise NotImplementedError

    def model_info(self):
        from fcn_deploy.modelinfo import ModelInfo

        return ModelInfo.from_metadata(self.metadata(), source=str(self.path))

    def inputs(self) -> List[TensorSpec]:
        return list(self._inputs)

    def outputs(self) -> List[TensorSpec]:
        return list(self._outputs)
