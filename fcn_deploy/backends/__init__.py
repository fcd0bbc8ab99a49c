"""Backend registry: name -> runner class, imported lazily (convention 4: unknown names list
the valid ones).

=============  =====================================  ==============================
name           runs                                   aliases
=============  =====================================  ==============================
onnxruntime    ``.onnx`` (TensorRT / CUDA / CPU EP)   ``ort``
openvino       ``.onnx`` on the CPU                   ``ov``
tensorrt       ``.plan`` + its JSON sidecar           ``trt``
=============  =====================================  ==============================

``auto`` (:func:`choose_backend`):

- ``.plan`` -> tensorrt (a plan runs nowhere else);
- ``.onnx`` -> onnxruntime when it offers a GPU provider (TensorRT or CUDA EP);
  otherwise openvino when the CPU is an Intel one (``GenuineIntel`` in /proc/cpuinfo, or
  "Intel" in the platform's processor string) and openvino is installed;
  otherwise onnxruntime (CPU EP) when installed, else openvino when installed;
- no slow traps (:func:`ort_cpu_hint`): a file known to run *slower than the fp32 file* on
  onnxruntime's CPU provider on x86 (an int8 file in the TensorRT Q/DQ layout, an fp16 file)
  goes to openvino instead when it is installed and the options allow it (one INFO line says
  so); otherwise onnxruntime is kept and one WARNING line says why it is slow and what to do.
  An explicit ``backend="onnxruntime"`` on such a file gets the same warning.

Importing this module imports no runtime library.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import logging
import platform
from pathlib import Path
from typing import Dict, Iterable, Optional, Sequence, Tuple

from fcn_deploy.errors import FcnError, unknown_name

log = logging.getLogger(__name__)

BACKENDS: Dict[str, str] = {
    "onnxruntime": "fcn_deploy.backends.ort:OrtRunner",
    "openvino": "fcn_deploy.backends.openvino:OpenVinoRunner",
    "tensorrt": "fcn_deploy.backends.tensorrt:TrtRunner",
}
ALIASES = {"ort": "onnxruntime", "ov": "openvino", "trt": "tensorrt"}
# Which file suffix each backend runs.
SUFFIXES = {"onnxruntime": ".onnx", "openvino": ".onnx", "tensorrt": ".plan"}
INSTALL_HINTS = {
    "onnxruntime": "pip install onnxruntime (or onnxruntime-gpu on an NVIDIA machine)",
    "openvino": "pip install openvino",
    "tensorrt": "pip install tensorrt pycuda on a machine with an NVIDIA GPU",
}


def backend_names() -> list:
    return sorted(BACKENDS)


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
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("vendor_id"):
                    v = line.split(":", 1)[1].strip()
                    return {"GenuineIntel": "intel", "AuthenticAMD": "amd"}.get(v, v.lower() or "unknown")
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
    if suffix not in (".onnx", ".plan", ".engine"):
        raise FcnError(f"{path}: unknown model file type {suffix or '(none)'}; expected .onnx or .plan")
    want = canonical_name(requested)
    if suffix in (".plan", ".engine"):
        if want not in ("auto", "tensorrt"):
            raise FcnError(f"{path} is a TensorRT plan: it runs only on backend 'tensorrt', not {want!r}")
        return "tensorrt"
    if want == "tensorrt":
        raise FcnError(f"{path} is an ONNX model: build a TensorRT plan with fcn-build, or use backend 'onnxruntime'/'openvino'")
    if want == "openvino":
        return want
    if ort_installed is None:
        ort_installed = is_installed("onnxruntime")
    if openvino_installed is None:
        openvino_installed = is_installed("openvino")
    if ort_installed and ort_providers is None:
        import onnxruntime

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


def create_runner(path, backend: str = "auto", **options):
    """Open ``path`` on ``backend`` (``auto`` per :func:`choose_backend`); returns a Runner."""
    name = choose_backend(path, backend, options=tuple(options))
    return runner_class(name)(path, **options)
