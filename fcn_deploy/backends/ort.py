"""onnxruntime backend: the loader :class:`SessionFromOnnx` (an ``InferenceSession``) and
:class:`OrtRunner` over it; ``OrtRunner(path, providers="auto")`` opens and owns one.

Providers, best first, when ``providers="auto"``: TensorRT EP (fp16 on by default, engine
and timing caches under ``~/.cache/fcn_deploy/ort_trt``), CUDA EP, CPU EP. The CPU EP is
always appended as the fallback. What onnxruntime actually uses is logged and kept in
``runner.providers`` (``runner.device`` is the first one).

The GPU providers' options follow onnxruntime's documented names (``trt_fp16_enable``,
``trt_engine_cache_enable``, ``trt_engine_cache_path``, ``trt_timing_cache_enable``,
``trt_timing_cache_path``, ``trt_profile_{min,opt,max}_shapes``, ``device_id``); the GPU paths
are unverified on hardware (see README, "GPU status"). The profile shapes name the model's own
input (read from the ONNX header), not a fixed "input". Provider selection itself is the plain
function :func:`resolve_providers`, tested on CPU.

``session.run`` is thread-safe, so one runner may serve several threads.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

from fcn_deploy.backends.base import Loader, OnnxFileRunner, TensorSpec, Timing
from fcn_deploy.errors import FcnError, first_line
from fcn_deploy.shapes import Profile, format_shape

log = logging.getLogger(__name__)

PROVIDER_ALIASES = {
    "tensorrt": "TensorrtExecutionProvider",
    "trt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "dml": "DmlExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
}
AUTO_ORDER = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
CPU = "CPUExecutionProvider"

ORT_TYPES = {
    "tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
    "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(int8)": "int8",
    "tensor(uint8)": "uint8", "tensor(bool)": "bool", "tensor(bfloat16)": "bfloat16",
}


def default_trt_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "fcn_deploy" / "ort_trt"


def provider_name(name: str) -> str:
    """Short ("cuda") or full ("CUDAExecutionProvider") name -> full name."""
    if name in PROVIDER_ALIASES.values() or name.endswith("ExecutionProvider"):
        return name
    key = name.strip().lower()
    if key in PROVIDER_ALIASES:
        return PROVIDER_ALIASES[key]
    valid = sorted(set(PROVIDER_ALIASES) | {"auto"})
    raise FcnError(f"unknown onnxruntime provider {name!r}; valid: {', '.join(valid)} (or a full *ExecutionProvider name)")


def resolve_providers(
    requested: Union[str, Sequence[str]],
    available: Iterable[str],
    *,
    device_id: int = 0,
    trt_fp16: bool = True,
    trt_cache_dir: Optional[Union[str, Path]] = None,
    trt_profile: Optional[Profile] = None,
    input_name: str = "input",
) -> List[Tuple[str, dict]]:
    """The (provider, options) list to hand to ``InferenceSession``.

    ``requested``: "auto", one name or a list of names, best first. A provider that this
    onnxruntime build lacks is an error (with the list of what it has), except under "auto",
    which takes what is there. The CPU provider always ends the list.
    """
    available = list(available)
    if isinstance(requested, str):
        requested = [requested]
    requested = list(requested)
    if not requested:
        raise FcnError("no onnxruntime provider requested")
    if len(requested) == 1 and requested[0].strip().lower() == "auto":
        names = [p for p in AUTO_ORDER if p in available]
    else:
        names = []
        for r in requested:
            full = provider_name(r)
            if full not in available:
                short = {v: k for k, v in PROVIDER_ALIASES.items()}
                have = ", ".join(f"{short.get(a, a)}" for a in available if a != "AzureExecutionProvider") or "none"
                hint = " (install onnxruntime-gpu on an NVIDIA machine)" if full in AUTO_ORDER[:2] else ""
                raise FcnError(f"onnxruntime provider {r!r} is not available here; available: {have}{hint}")
            if full not in names:
                names.append(full)
    if CPU not in names:
        names.append(CPU)
    out = []
    for name in names:
        opts: dict = {}
        if name == "TensorrtExecutionProvider":
            cache = Path(trt_cache_dir) if trt_cache_dir else default_trt_cache_dir()
            opts = {
                "device_id": int(device_id),
                "trt_fp16_enable": bool(trt_fp16),
                "trt_engine_cache_enable": True,
                "trt_engine_cache_path": str(cache),
                "trt_timing_cache_enable": True,
                "trt_timing_cache_path": str(cache),
            }
            if trt_profile is not None:
                for key, shape in (("min", trt_profile.min), ("opt", trt_profile.opt), ("max", trt_profile.max)):
                    opts[f"trt_profile_{key}_shapes"] = f"{input_name}:{format_shape(shape)}"
        elif name == "CUDAExecutionProvider":
            opts = {"device_id": int(device_id)}
        out.append((name, opts))
    return out


def ort_dtype(type_str: str) -> str:
    """onnxruntime's "tensor(float)" -> numpy's "float32"."""
    if type_str in ORT_TYPES:
        return ORT_TYPES[type_str]
    raise FcnError(f"unsupported tensor type {type_str}")


def _dims(shape) -> Tuple[object, ...]:
    return tuple(d if isinstance(d, int) and d > 0 else (d if isinstance(d, str) else None) for d in shape)


# onnxruntime graph transformers to skip: none by default. ``QDQPropagationTransformer`` is a
# trade-off on our int8 files: it moves a Q/DQ pair across a MaxPool. The export puts no Q/DQ
# on MaxPool outputs, so for VGG16 it is what lets the Conv after each MaxPool run as
# QLinearConv (much slower without it); for ResNet-18's float stem it turns the stem's float
# MaxPool into the slow NCHW uint8 one (faster with it off, outputs bit-identical).
# Measurements: benchmarks/RESULTS.md ("CPU speed").
DISABLED_OPTIMIZERS: Tuple[str, ...] = ()


LEVELS = ("disable", "basic", "extended", "all")


class SessionFromOnnx(Loader):
    """Opens an ONNX file in an onnxruntime ``InferenceSession``; calling it returns a new one.

    ``disabled_optimizers`` names onnxruntime graph transformers to skip (default
    :data:`DISABLED_OPTIMIZERS`, i.e. none), e.g. ``("QDQPropagationTransformer",)``; one name
    may be given as a string. onnxruntime does not check the names: an unknown one is ignored.
    """

    def __init__(
        self,
        path,
        *,
        providers: Union[str, Sequence[str]] = "auto",
        threads: Optional[int] = None,
        device_id: int = 0,
        trt_fp16: bool = True,
        trt_cache_dir=None,
        trt_profile: Optional[Profile] = None,
        optimization: str = "all",
        disabled_optimizers: Sequence[str] = DISABLED_OPTIMIZERS,
    ):
        super().__init__(path)
        if isinstance(disabled_optimizers, str):
            disabled_optimizers = (disabled_optimizers,)
        if threads is not None and int(threads) < 0:
            raise FcnError(f"threads must be >= 0 (0 = onnxruntime's default), got {threads}")
        if optimization not in LEVELS:
            raise FcnError(f"unknown optimization level {optimization!r}; valid: {', '.join(LEVELS)}")
        self.providers = providers
        self.threads = threads
        self.device_id = device_id
        self.trt_fp16 = trt_fp16
        self.trt_cache_dir = trt_cache_dir
        self.trt_profile = trt_profile
        self.optimization = optimization
        self.disabled_optimizers = tuple(disabled_optimizers)

    def __call__(self):
        from fcn_deploy.backends import not_installed

        try:
            import onnxruntime as ort
        except ImportError:
            raise not_installed("onnxruntime") from None
        path = self.path
        if not path.is_file():
            raise FcnError(f"{path}: no such file")
        input_name = "input"
        if self.trt_profile is not None:
            # The TensorRT EP's trt_profile_*_shapes name the model's real input.
            from fcn_deploy.onnx_info import read_onnx_header

            header = read_onnx_header(path)
            if len(header.inputs) != 1:
                raise FcnError(f"{path}: a TensorRT EP profile needs a model with one input, this one has {len(header.inputs)}")
            input_name = header.inputs[0].name
        chosen = resolve_providers(
            self.providers, ort.get_available_providers(), device_id=self.device_id, trt_fp16=self.trt_fp16,
            trt_cache_dir=self.trt_cache_dir, trt_profile=self.trt_profile, input_name=input_name,
        )
        for name, opts in chosen:
            if name == "TensorrtExecutionProvider":
                Path(opts["trt_engine_cache_path"]).mkdir(parents=True, exist_ok=True)
        options = ort.SessionOptions()
        if self.threads is not None:
            options.intra_op_num_threads = int(self.threads)
        options.graph_optimization_level = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[self.optimization]
        options.log_severity_level = 3
        try:
            session = ort.InferenceSession(
                str(path), sess_options=options,
                providers=[n for n, _ in chosen], provider_options=[o for _, o in chosen],
                disabled_optimizers=list(self.disabled_optimizers) or None,
            )
        except Exception as e:  # InvalidProtobuf, InvalidGraph, Fail, NoSuchFile...
            raise FcnError(f"{path}: onnxruntime cannot load this model ({first_line(e)})") from None
        running = list(session.get_providers())
        if chosen[0][0] != running[0]:
            log.warning("onnxruntime: %s was requested but the session runs on %s", chosen[0][0], running[0])
        log.info("onnxruntime %s: %s on %s", ort.__version__, path.name, ", ".join(running))
        return session


class OrtRunner(OnnxFileRunner):
    """One ONNX model in one onnxruntime ``InferenceSession``: ``OrtRunner(path, **options)``
    opens it with :class:`SessionFromOnnx` (the options are that loader's);
    ``SessionFromOnnx(...).runner(session)`` shares an opened one."""

    backend = "onnxruntime"
    loader_class = SessionFromOnnx

    def _bind(self, loader: Loader, session) -> None:
        self.session = session
        self.providers = list(session.get_providers())
        self.device = self.providers[0]
        self.threads = getattr(loader, "threads", None)
        self._inputs = [TensorSpec(i.name, ort_dtype(i.type), _dims(i.shape)) for i in session.get_inputs()]
        self._outputs = [TensorSpec(o.name, ort_dtype(o.type), _dims(o.shape)) for o in session.get_outputs()]
        self._output_names = [o.name for o in self._outputs]

    # -- metadata ------------------------------------------------------------------------------
    def metadata(self) -> Dict[str, str]:
        return dict(self.session.get_modelmeta().custom_metadata_map)

    # -- Runner protocol (inputs/outputs/model_info: OnnxFileRunner) ---------------------------
    def _infer(self, feeds: Dict[str, np.ndarray]) -> Tuple[Dict[str, np.ndarray], Optional[Timing]]:
        session = self.session
        if session is None:
            raise FcnError(f"{self.path.name}: the onnxruntime runner is closed")
        try:
            outs = session.run(self._output_names, feeds)
        except Exception as e:
            raise FcnError(f"onnxruntime failed on input {_shapes(feeds)}: {first_line(e)}") from None
        return dict(zip(self._output_names, outs)), None  # compute = the call (Runner.infer_timed)

    def _close(self) -> None:
        self.session = None


SessionFromOnnx.runner_class = OrtRunner


def _shapes(feeds) -> str:
    return ", ".join(f"{k} {format_shape(v.shape)} {v.dtype}" for k, v in feeds.items())
