"""Backend registry: name -> runner class, imported lazily; unknown names list the valid ones.

=============  =====================================  ==============================
name           runs                                   aliases
=============  =====================================  ==============================
onnxruntime    ``.onnx`` (TensorRT / CUDA / CPU EP)   ``ort``
openvino       ``.onnx`` on the CPU                   ``ov``
tensorrt       ``.plan`` + its JSON sidecar           ``trt``
torch          ``.pt`` / ``.pth`` checkpoints         ``pytorch``
reference      ``.onnx`` in onnx.reference (numpy)    ``onnx-reference``
=============  =====================================  ==============================

Every backend is a Loader (opens the library object) and a Runner over it
(:mod:`fcn_deploy.backends.base`). :func:`open_runner` is the one way to open a model file:
``Segmenter.load``, fcn-bench / fcn-eval and fcn-verify all go through it.

``auto`` (:func:`choose_backend`):

- ``.plan`` -> tensorrt (a plan runs nowhere else); ``.pt``/``.pth`` -> torch (needs torch);
- ``.onnx`` -> onnxruntime when it offers a GPU provider (TensorRT or CUDA EP);
  otherwise openvino when the CPU is an Intel one (``GenuineIntel`` in /proc/cpuinfo, or
  "Intel" in the platform's processor string) and openvino is installed;
  otherwise onnxruntime (CPU EP) when installed, else openvino when installed
  (``reference`` only when asked for by name);
- no slow traps (:func:`ort_cpu_hint`): a file known to run *slower than the fp32 file* on
  onnxruntime's CPU provider on x86 (an int8 file in the TensorRT Q/DQ layout, an fp16 file)
  goes to openvino instead when it is installed and the options allow it (one INFO line says
  so); otherwise onnxruntime is kept and one WARNING line says why it is slow and what to do.
  An explicit ``backend="onnxruntime"`` on such a file gets the same warning.

Importing this module imports no runtime library (and never torch: the torch backend's module
is imported only when a checkpoint is opened).
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import json
import logging
import platform
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from fcn_deploy.errors import FcnError, unknown_name

log = logging.getLogger(__name__)

BACKENDS: Dict[str, str] = {
    "onnxruntime": "fcn_deploy.backends.ort:OrtRunner",
    "openvino": "fcn_deploy.backends.openvino:OpenVinoRunner",
    "tensorrt": "fcn_deploy.backends.tensorrt:TrtRunner",
    "torch": "fcn_deploy.backends.torch:TorchRunner",
    "reference": "fcn_deploy.backends.reference:ReferenceRunner",
}
ALIASES = {"ort": "onnxruntime", "ov": "openvino", "trt": "tensorrt", "pytorch": "torch", "onnx-reference": "reference"}
# Which file suffixes each backend runs (the first is its own).
SUFFIXES: Dict[str, Tuple[str, ...]] = {
    "onnxruntime": (".onnx",), "openvino": (".onnx",), "tensorrt": (".plan", ".engine"),
    "torch": (".pt", ".pth"), "reference": (".onnx",),
}
# The module each backend imports (what "not installed" means for it).
LIBRARIES = {"onnxruntime": "onnxruntime", "openvino": "openvino", "tensorrt": "tensorrt", "torch": "torch",
             "reference": "onnx"}
# The one place install hints are written; the runners' "not installed" lines come from here
# (:func:`not_installed`). Keys: backend names, and libraries a backend needs besides its own.
INSTALL_HINTS = {
    "onnxruntime": "pip install onnxruntime (or onnxruntime-gpu on an NVIDIA machine)",
    "openvino": "pip install openvino",
    "tensorrt": "pip install tensorrt on a machine with an NVIDIA GPU",
    "pycuda": "pip install pycuda (needs the CUDA toolkit and an NVIDIA GPU)",
    "torch": "pip install 'fcn-deploy[train]'",
    "reference": "pip install onnx",
}


def not_installed(name: str, library: Optional[str] = None) -> FcnError:
    """The one-line error for a backend (or library) whose module is missing:
    ``"<library> is not installed: <its INSTALL_HINTS entry>"``."""
    return FcnError(f"{library or LIBRARIES.get(name, name)} is not installed: {INSTALL_HINTS[name]}")


def backend_names() -> list:
    return sorted(BACKENDS)


def model_file_types() -> str:
    """The model files the registry runs, for help texts: ``".onnx (onnxruntime, openvino,
    reference), .plan/.engine (tensorrt), .pt/.pth (torch)"``."""
    by_suffixes: Dict[Tuple[str, ...], List[str]] = {}
    for name in BACKENDS:
        by_suffixes.setdefault(SUFFIXES[name], []).append(name)
    return ", ".join(f"{'/'.join(s)} ({', '.join(names)})" for s, names in by_suffixes.items())


def canonical_name(name: str) -> str:
    """``"ORT"`` -> ``"onnxruntime"``; ``"auto"`` stays; unknown names list the valid ones."""
    key = str(name).strip().lower()
    key = ALIASES.get(key, key)
    if key == "auto" or key in BACKENDS:
        return key
    raise unknown_name("backend", str(name), list(BACKENDS) + ["auto"])


def is_installed(module: str) -> bool:
    """Whether ``module`` can be imported, without importing it."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def cpu_vendor() -> str:
    """'intel', 'amd', 'arm' or 'unknown' (Linux reads /proc/cpuinfo)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("vendor_id"):
                    vendor = line.split(":", 1)[1].strip()
                    return {"GenuineIntel": "intel", "AuthenticAMD": "amd"}.get(vendor, vendor.lower() or "unknown")
                if line.startswith("CPU implementer"):
                    return "arm"
    except OSError:
        pass
    proc = (platform.processor() or "").lower()
    if "intel" in proc:
        return "intel"
    if "amd" in proc:
        return "amd"
    if platform.machine().lower() in ("arm64", "aarch64"):
        return "arm"
    return "unknown"


def ort_gpu_providers(available: Iterable[str]) -> list:
    return [p for p in ("TensorrtExecutionProvider", "CUDAExecutionProvider") if p in set(available)]


def choose_backend(
    path,
    requested: str = "auto",
    *,
    ort_installed: Optional[bool] = None,
    ort_providers: Optional[Iterable[str]] = None,
    openvino_installed: Optional[bool] = None,
    vendor: Optional[str] = None,
    layout: Optional[Tuple[Optional[str], Optional[str]]] = None,
    options: Sequence[str] = (),
    log_hint: bool = True,
) -> str:
    """The backend that will run ``path``; the keyword arguments exist so the rule can be
    tested with any machine's facts (they default to this machine's; ``layout`` is the file's
    (precision, int8 target), see :func:`file_layout`). ``options``: names of the runner options
    the caller will pass (an auto switch to openvino needs openvino to take all of them).
    Logs the slow-pairing line of :func:`ort_cpu_hint` where it applies (``log_hint=False``:
    decide only, e.g. to pick options before the real load logs it)."""
    if not log_hint:
        level = log.level
        log.setLevel(logging.ERROR)
        try:
            return choose_backend(path, requested, ort_installed=ort_installed, ort_providers=ort_providers,
                                  openvino_installed=openvino_installed, vendor=vendor, layout=layout, options=options)
        finally:
            log.setLevel(level)
    suffix = Path(str(path)).suffix.lower()
    known = sorted({x for xs in SUFFIXES.values() for x in xs})
    want = canonical_name(requested)
    # ``auto`` goes by the suffix; an explicit backend opens any file whose suffix is no other
    # backend's (``fcn-export m.pt out.bin`` verifies out.bin; ``torch:model.bin`` in the bench).
    if suffix not in known and want == "auto":
        raise FcnError(f"{path}: unknown model file type {suffix or '(none)'}; expected one of {', '.join(known)} "
                       "(or name the backend)")
    if want != "auto" and suffix in known and suffix not in SUFFIXES[want]:
        kind = {".plan": "a TensorRT plan", ".engine": "a TensorRT plan", ".pt": "a PyTorch checkpoint",
                ".pth": "a PyTorch checkpoint"}.get(suffix, "an ONNX model")
        runs_on = [n for n in BACKENDS if suffix in SUFFIXES[n]]
        hint = ": build a TensorRT plan with fcn-build" if want == "tensorrt" else ""
        raise FcnError(f"{path} is {kind}: it runs only on backend {' or '.join(map(repr, runs_on))}, not {want!r}{hint}")
    if suffix in SUFFIXES["tensorrt"] or want == "tensorrt":
        return "tensorrt"
    if suffix in SUFFIXES["torch"] or want == "torch":
        if not is_installed(LIBRARIES["torch"]):
            raise FcnError(f"{path} is a PyTorch checkpoint: running it needs torch, which is not installed "
                           f"({INSTALL_HINTS['torch']}); or export it with fcn-export and run the .onnx")
        return "torch"
    if want in ("openvino", "reference"):
        return want
    if ort_installed is None:
        ort_installed = is_installed("onnxruntime")
    if openvino_installed is None:
        openvino_installed = is_installed("openvino")
    if ort_installed and ort_providers is None:
        try:
            import onnxruntime
        except ImportError:  # found but broken: the runner says it is not installed
            ort_installed, ort_providers = False, ()
        else:
            ort_providers = onnxruntime.get_available_providers()
    if vendor is None:
        vendor = cpu_vendor()
    gpu = bool(ort_installed and ort_gpu_providers(ort_providers or ()))
    if not gpu and layout is None and vendor in X86_VENDORS and Path(str(path)).is_file():
        layout = file_layout(path)
    if want == "onnxruntime":
        if not gpu:
            hint = ort_cpu_hint(path, layout=layout, vendor=vendor)
            if hint:
                log.warning("%s", hint)
        return want
    if gpu:
        return "onnxruntime"
    if vendor == "intel" and openvino_installed:
        return "openvino"
    if ort_installed:
        hint = ort_cpu_hint(path, layout=layout, vendor=vendor)
        if hint and openvino_installed and set(options) <= OPENVINO_OPTIONS:
            log.info("%s: onnxruntime CPU runs this %s file slower than fp32, so backend 'auto' runs it on OpenVINO "
                     "(backend='onnxruntime' to insist)", Path(str(path)).name, _layout_words(path, layout))
            return "openvino"
        if hint:
            log.warning("%s", hint)
        return "onnxruntime"
    if openvino_installed:
        return "openvino"
    raise FcnError(f"no runtime for {path}: {INSTALL_HINTS['onnxruntime']} (or {INSTALL_HINTS['openvino']})")


# -- file / backend pairings known to be slower than the fp32 file --------------------------------

# Options each ONNX backend takes besides ``threads`` (an auto switch to openvino happens only
# when every option given is one openvino takes too).
OPENVINO_OPTIONS = frozenset({"precision", "performance", "threads", "device"})
X86_VENDORS = ("intel", "amd")
# Metadata key the export writes for int8 files: "tensorrt" or "cpu" (a JSON string).
INT8_TARGET_KEY = "fcn_deploy.int8_target"
SLOW_HINTS = {
    # onnxruntime's CPU provider on x86 fuses DQ -> Conv -> Relu -> Q into QLinearConv only for
    # uint8 activations whose zero point absorbs the Relu; the TensorRT layout's int8 zero point
    # 0 never qualifies, so most convolutions run in float between Q/DQ (issue 16: VGG16 1625 vs
    # 1303 ms, ResNet-18 72.6 vs 66.3 ms against the fp32 file, Zen 4).
    ("int8", "tensorrt"): ("this int8 file uses the TensorRT layout; onnxruntime CPU runs it slower than fp32: "
                           "use OpenVINO (backend='openvino', pip install openvino) or export with --int8-target cpu"),
    # onnxruntime's CPU provider has no float16 Conv kernels on x86: it computes in float32
    # between inserted Casts (issue 16: ResNet-18 78.4 vs 66.3 ms).
    ("fp16", None): ("this fp16 file runs slower than the fp32 file on onnxruntime CPU (no float16 kernels: float32 "
                     "between casts): use the fp32 file, or OpenVINO (backend='openvino', pip install openvino)"),
}


def _uint8_zero_points(path) -> bool:
    """Whether the graph of an ONNX file holds a uint8 zero-point initializer (the ``cpu`` int8
    layout: uint8 activations); walks the protobuf wire format over an mmap, reading only the
    initializers' name and type fields."""
    import mmap

    from fcn_deploy.onnx_info import _fields

    with open(path, "rb") as f:
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    try:
        buf = memoryview(mm)
        for num, wt, val in _fields(buf):
            if num != 7 or wt != 2:
                continue
            for gnum, gwt, gval in _fields(val):
                if gnum != 5 or gwt != 2:
                    continue
                name, dtype = "", 0
                for tnum, twt, tval in _fields(gval):
                    if tnum == 2 and twt == 0:
                        dtype = tval
                    elif tnum == 8 and twt == 2:
                        name = bytes(tval).decode("utf-8", "replace")
                if dtype == 2 and "zero_point" in name:  # TensorProto.UINT8
                    return True
        return False
    finally:
        del buf
        try:
            mm.close()
        except BufferError:
            pass


def file_layout(path) -> Tuple[Optional[str], Optional[str]]:
    """(precision, int8 target) of an fcn-deploy ONNX file: from its metadata
    (``fcn_deploy.precision``, ``fcn_deploy.int8_target``); for int8 files written before the
    target was recorded, from the graph (uint8 zero points = ``cpu``, else ``tensorrt``).
    (None, None) when the file cannot be read (the runner reports why)."""
    from fcn_deploy.onnx_info import read_onnx_header

    try:
        meta = read_onnx_header(path).metadata
    except (FcnError, OSError):
        return None, None
    precision = meta.get("fcn_deploy.precision")
    target = None
    if precision == "int8":
        raw = meta.get(INT8_TARGET_KEY)
        if raw is not None:
            try:
                target = json.loads(raw)
            except ValueError:
                target = raw
        else:
            try:
                target = "cpu" if _uint8_zero_points(path) else "tensorrt"
            except Exception:  # an unreadable graph: the runner will say so
                target = None
    return precision, target


def ort_cpu_hint(path, *, layout: Optional[Tuple[Optional[str], Optional[str]]] = None,
                 vendor: Optional[str] = None) -> Optional[str]:
    """The one-line hint when ``path`` is a file known to run slower than its fp32 file on
    onnxruntime's CPU provider on this (x86) machine, else None."""
    if vendor is None:
        vendor = cpu_vendor()
    if vendor not in X86_VENDORS:
        return None
    precision, target = layout if layout is not None else file_layout(path)
    hint = SLOW_HINTS.get((precision, target if precision == "int8" else None))
    return f"{Path(str(path)).name}: {hint}" if hint else None


def _layout_words(path, layout) -> str:
    precision, target = layout if layout is not None else file_layout(path)
    return f"int8 ({target} layout)" if precision == "int8" else str(precision)


def runner_class(name: str):
    name = canonical_name(name)
    if name == "auto":
        raise FcnError("resolve 'auto' with choose_backend() first")
    module, cls = BACKENDS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def runner_options(cls) -> List[str]:
    """The options a runner class takes: the keyword-only parameters of its loader (or, for a
    runner without one, of its own ``__init__``)."""
    opener = getattr(cls, "loader_class", None) or cls
    params = inspect.signature(opener.__init__).parameters
    return [p for p, v in params.items() if v.kind == inspect.Parameter.KEYWORD_ONLY]


def check_options(cls, options, backend: str) -> None:
    """FcnError (one line, naming what the backend takes) for an option ``cls`` does not take."""
    allowed = runner_options(cls)
    bad = [k for k in options if k not in allowed]
    if bad:
        raise FcnError(f"backend {backend!r} does not take option(s) {', '.join(bad)}; it takes: {', '.join(allowed) or 'none'}")


def open_loader(path, backend: str = "auto", *, log_hint: bool = True, **options):
    """The Loader for ``path`` on ``backend`` (``auto`` resolved by :func:`choose_backend`,
    the options checked against the backend); it opens nothing until called. For a server:
    ``loader = open_loader(p); model = loader(); runners = [loader.runner(model) ...]``.

    ``log_hint=False``: no slow-pairing line (:func:`ort_cpu_hint`) and no layout scan for
    it (export verification, which runs a file it is writing on purpose; a bench that reports
    the layout itself)."""
    path = Path(path)
    if not path.exists():
        raise FcnError(f"{path}: no such file")
    # Without the hint the layout only matters to auto's switch to openvino.
    layout = None if log_hint or canonical_name(backend) == "auto" else (None, None)
    name = choose_backend(path, backend, options=tuple(options), log_hint=log_hint, layout=layout)
    cls = runner_class(name)
    check_options(cls, options, name)
    return cls.loader_class(path, **options)


def open_runner(path, backend: str = "auto", *, log_hint: bool = True, read_info: bool = True, **options):
    """Open ``path`` on ``backend`` ("auto", a name of :data:`BACKENDS` or an alias) with the
    backend's options: the one way every stage opens a model file.

    Returns a Runner that owns what it opened, with its :meth:`~base.Runner.model_info` read
    (``runner.info``); when that fails (an ONNX without fcn-deploy metadata, a broken sidecar)
    the runner is closed and the FcnError raised. ``read_info=False`` skips that (a file
    that need not carry fcn-deploy metadata: export verification); ``log_hint``: see
    :func:`open_loader`."""
    runner = open_loader(path, backend, log_hint=log_hint, **options).runner()
    if not read_info:
        return runner
    try:
        runner.info
    except BaseException:
        runner.close()
        raise
    return runner
