"""The ``BACKEND:PATH`` registry behind ``fcn-bench --compare`` (and the single-model options).

Each backend name maps to an opener ``open(path, *, threads) -> Runner``; the runner follows
:class:`fcn_deploy.backends.base.Runner`. New backends register themselves with
:func:`register_backend`; an unknown name lists the valid ones.

Built-in names::

    torch, torch-bf16, torch-fp16, torch-compile, torch-compile-bf16     checkpoint, CPU
    torch-cuda, torch-cuda-fp16                                          checkpoint, CUDA (unverified)
    onnx (= onnx-cpu), onnx-cuda, onnx-trt                               ONNX on onnxruntime
    openvino, openvino-bf16, openvino[-bf16]-throughput                  ONNX on OpenVINO
    onnx-throughput                                                      ONNX on onnxruntime, 1 thread/request
    plan                                                                 TensorRT engine (unverified)

Opening a file may fail (missing file, wrong format, backend not installed): that is
reported per target by :func:`open_target` so a comparison still runs the others.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional

from fcn_deploy.errors import FcnError, unknown_name

log = logging.getLogger(__name__)

Opener = Callable[..., object]


@dataclass(frozen=True)
class Backend:
    name: str
    description: str
    opener: Opener
    # What PATH must be: "checkpoint" (.pt), "onnx" (.onnx / IR), "plan" (TensorRT engine).
    kind: str


_REGISTRY: Dict[str, Backend] = {}


def register_backend(name: str, opener: Opener, *, description: str, kind: str, replace: bool = False) -> None:
    """Add a backend to the registry (``name`` is what users write before the colon)."""
    if not name or ":" in name:
        raise ValueError(f"invalid backend name {name!r}")
    if name in _REGISTRY and not replace:
        raise ValueError(f"backend {name!r} is already registered")
    _REGISTRY[name] = Backend(name=name, description=description, opener=opener, kind=kind)


def backend_names() -> List[str]:
    return sorted(_REGISTRY)


def get_backend(name: str) -> Backend:
    if name not in _REGISTRY:
        raise unknown_name("backend", name, _REGISTRY)
    return _REGISTRY[name]


@dataclass(frozen=True)
class TargetSpec:
    """One ``BACKEND:PATH`` entry; ``label`` is what reports show (unique within a run)."""

    backend: str
    path: str
    label: str


def parse_target(text: str) -> TargetSpec:
    """Parse ``BACKEND:PATH``; an unknown backend or a missing colon is an FcnError."""
    backend, sep, path = text.partition(":")
    if not sep or not backend or not path:
        raise FcnError(
            f"compare target {text!r} is not BACKEND:PATH (e.g. onnx:fcn8s.onnx); "
            f"backends: {', '.join(backend_names())}"
        )
    get_backend(backend)
    return TargetSpec(backend=backend, path=path, label=text)


def unique_labels(specs: List[TargetSpec]) -> List[TargetSpec]:
    """Suffix repeated labels with #2, #3... so every report row is distinct."""
    seen: Dict[str, int] = {}
    out = []
    for s in specs:
        n = seen.get(s.label, 0) + 1
        seen[s.label] = n
        out.append(s if n == 1 else TargetSpec(s.backend, s.path, f"{s.label}#{n}"))
    return out


def current_rss_mb() -> Optional[float]:
    """Resident set size now (Linux /proc/self/statm), MiB; None where unavailable."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / (1 << 20)
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def peak_rss_mb() -> Optional[float]:
    """The process's resident-set high-water mark so far (getrusage ru_maxrss), MiB."""
    try:
        import resource
        import sys

        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        # Linux reports KiB, macOS bytes.
        return kb / (1 << 20) if sys.platform == "darwin" else kb / 1024.0
    except (ImportError, OSError):
        return None


@dataclass
class OpenedTarget:
    spec: TargetSpec
    runner: Optional[object] = None
    info: Optional[object] = None  # ModelInfo when the runner exposes one
    error: Optional[str] = None
    load_ms: Optional[float] = None
    load_rss_mb: Optional[float] = None
    precision: Optional[str] = None
    device: Optional[str] = None
    extra: Dict[str, object] = field(default_factory=dict)

    def close(self) -> None:
        if self.runner is not None:
            try:
                self.runner.close()
            except Exception:  # closing must never hide a result
                log.debug("closing %s failed", self.spec.label, exc_info=True)
            self.runner = None


def error_text(e: BaseException) -> str:
    """One line for a report row: FcnError text as is, other exceptions with their type."""
    msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
    if isinstance(e, FcnError):
        return msg or "failed"
    return f"{type(e).__name__}: {msg}"[:300] if msg else type(e).__name__


def open_target(spec: TargetSpec, *, threads: Optional[int] = None) -> OpenedTarget:
    """Open one target; any failure is captured in ``.error`` instead of raised."""
    out = OpenedTarget(spec=spec)
    backend = get_backend(spec.backend)
    if not Path(spec.path).exists():
        out.error = f"file not found: {spec.path}"
        return out
    rss0 = current_rss_mb()
    t0 = time.perf_counter()
    try:
        runner = backend.opener(spec.path, threads=threads)
    except Exception as e:  # one bad model must not stop a comparison
        log.debug("opening %s failed", spec.label, exc_info=True)
        out.error = error_text(e)
        return out
    out.load_ms = (time.perf_counter() - t0) * 1000.0
    rss1 = current_rss_mb()
    out.load_rss_mb = (rss1 - rss0) if (rss0 is not None and rss1 is not None) else None
    out.runner = runner
    out.info = getattr(runner, "info", None)
    out.device = str(getattr(runner, "device", "?"))
    out.precision = describe_precision(runner, out.info)
    return out


def describe_precision(runner, info) -> Optional[str]:
    """The model file's precision (fp32/fp16/int8 from its metadata) and, where the backend
    computes in another one (OpenVINO bf16, torch autocast), that one too."""
    run = getattr(runner, "precision", None)
    if getattr(runner, "backend", None) == "torch":
        return run
    file_prec = getattr(info, "precision", None) if info is not None else None
    if file_prec is None:
        return run
    r = str(run).lower() if run is not None else ""
    run_norm = ("bf16" if ("bf16" in r or "bfloat16" in r) else "fp16" if ("f16" in r or "float16" in r)
                else "fp32" if ("f32" in r or "float32" in r) else r)
    if not run_norm or run_norm == file_prec or file_prec == "int8":
        return file_prec
    return f"{file_prec} file, {run_norm} inference"


# -- built-in openers --------------------------------------------------------------------------

def _torch_opener(**fixed):
    def open_(path, *, threads=None):
        from fcn_deploy.benchmarks.torch_runner import TorchRunner

        return TorchRunner(path, threads=threads, **fixed)

    return open_


def _runtime_opener(backend: str, **options):
    """Open a deployed model through the runtime (fcn_deploy.segmenter), keep its runner."""

    def open_(path, *, threads=None):
        from fcn_deploy.benchmarks import runtime

        return runtime.open_runner(path, backend=backend, threads=threads, **options)

    return open_


for _name, _desc, _fixed in (
    ("torch", "PyTorch eager fp32 on CPU (the baseline)", {}),
    ("torch-bf16", "PyTorch eager, bf16 autocast, CPU", {"autocast": "bf16"}),
    ("torch-fp16", "PyTorch eager, fp16 autocast, CPU", {"autocast": "fp16"}),
    ("torch-compile", "torch.compile fp32, CPU", {"compile": True}),
    ("torch-compile-bf16", "torch.compile with bf16 autocast, CPU", {"compile": True, "autocast": "bf16"}),
    ("torch-cuda", "PyTorch eager fp32 on CUDA (unverified here)", {"device": "cuda"}),
    ("torch-cuda-fp16", "PyTorch eager fp16 autocast on CUDA (unverified here)", {"device": "cuda", "autocast": "fp16"}),
):
    register_backend(_name, _torch_opener(**_fixed), description=_desc, kind="checkpoint")

for _name, _desc, _backend, _opts in (
    ("onnx", "ONNX on onnxruntime, CPU provider", "onnxruntime", {"providers": ("cpu",)}),
    ("onnx-cpu", "ONNX on onnxruntime, CPU provider", "onnxruntime", {"providers": ("cpu",)}),
    ("onnx-cuda", "ONNX on onnxruntime, CUDA provider (unverified here)", "onnxruntime", {"providers": ("cuda",)}),
    ("onnx-trt", "ONNX on onnxruntime, TensorRT provider (unverified here)", "onnxruntime", {"providers": ("trt",)}),
    ("openvino", "ONNX on OpenVINO CPU, f32 inference precision", "openvino", {"precision": "f32"}),
    ("openvino-bf16", "ONNX on OpenVINO CPU, bf16 inference precision", "openvino", {"precision": "bf16"}),
    ("openvino-throughput", "ONNX on OpenVINO CPU, f32, THROUGHPUT hint (streams; use --concurrency)", "openvino",
     {"precision": "f32", "performance": "throughput"}),
    ("openvino-bf16-throughput", "ONNX on OpenVINO CPU, bf16, THROUGHPUT hint (use --concurrency)", "openvino",
     {"precision": "bf16", "performance": "throughput"}),
    ("plan", "TensorRT engine (unverified here)", "tensorrt", {}),
):
    register_backend(_name, _runtime_opener(_backend, **_opts), description=_desc,
                     kind="plan" if _backend == "tensorrt" else "onnx")



def _ort_throughput_opener(path, *, threads=None):
    """onnxruntime CPU, one intra-op thread per request: with ``--concurrency K`` K requests
    run side by side on K cores (``threads`` is ignored: each request is one thread)."""
    from fcn_deploy.benchmarks import runtime

    return runtime.open_runner(path, backend="onnxruntime", threads=1, providers=("cpu",))


register_backend("onnx-throughput", _ort_throughput_opener, kind="onnx",
                 description="ONNX on onnxruntime CPU, 1 thread per request (use --concurrency)")


def backends_help() -> str:
    return "\n".join(f"  {b.name:<20} {b.description}" for b in sorted(_REGISTRY.values(), key=lambda b: b.name))
