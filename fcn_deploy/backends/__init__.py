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
  otherwise onnxruntime (CPU EP) when installed, else openvino when installed.

Importing this module imports no runtime library.
"""

from __future__ import annotations

import importlib
import importlib.util
import platform
from pathlib import Path
from typing import Dict, Iterable, Optional

from fcn_deploy.errors import FcnError, unknown_name

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
) -> str:
    """The backend that will run ``path``; the keyword arguments exist so the rule can be
    tested with any machine's facts (they default to this machine's)."""
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
    if want != "auto":
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
    if ort_installed and ort_gpu_providers(ort_providers or ()):
        return "onnxruntime"
    if vendor == "intel" and openvino_installed:
        return "openvino"
    if ort_installed:
        return "onnxruntime"
    if openvino_installed:
        return "openvino"
    raise FcnError(f"no runtime for {path}: {INSTALL_HINTS['onnxruntime']} (or {INSTALL_HINTS['openvino']})")


def runner_class(name: str):
    name = canonical_name(name)
    if name == "auto":
        raise FcnError("resolve 'auto' with choose_backend() first")
    module, cls = BACKENDS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def create_runner(path, backend: str = "auto", **options):
    """Open ``path`` on ``backend`` (``auto`` per :func:`choose_backend`); returns a Runner."""
    name = choose_backend(path, backend)
    return runner_class(name)(path, **options)
