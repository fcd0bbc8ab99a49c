"""The ``BACKEND:PATH`` registry behind ``fcn-bench --compare`` (and the single-model options).

The target names are the runtime's backend names (fcn_deploy.backends.BACKENDS), each with
the variants the bench measures (``<backend>`` or ``<backend>-<variant>``); every runtime
backend is a target without code here. Each name maps to an opener
``open(path, *, threads) -> Runner`` (fcn_deploy.backends.open_runner); new targets register
themselves with :func:`register_backend`; an unknown name lists the valid ones.

Built-in names (:data:`VARIANTS`)::

    torch, torch-bf16, torch-fp16, torch-compile, torch-compile-bf16     checkpoint, CPU
    torch-cuda, torch-cuda-fp16                                          checkpoint, CUDA (unverified)
    onnxruntime, onnxruntime-cuda, onnxruntime-tensorrt                  ONNX on onnxruntime's CPU / CUDA / TensorRT EP
    onnxruntime-throughput                                               ONNX on onnxruntime, 1 thread/request
    openvino, openvino-bf16, openvino[-bf16]-throughput                  ONNX on OpenVINO
    tensorrt                                                             TensorRT plan (unverified)
    reference                                                            ONNX on onnx.reference (slow)

Aliases (:data:`ALIASES`): the names of earlier versions (``onnx`` = ``onnx-cpu`` =
``onnxruntime``, ``onnx-cuda``, ``onnx-trt``, ``onnx-throughput``, ``plan`` = ``tensorrt``) and
the runtime's own aliases as prefixes (``ort-cuda``, ``ov-bf16``, ``trt``...).

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
    # Timed on a GPU (CUDA events; unverified on hardware).
    gpu: bool = False


_REGISTRY: Dict[str, Backend] = {}
# Other spellings of registered names -> the name (filled in below).
ALIASES: Dict[str, str] = {}


def register_backend(name: str, opener: Opener, *, description: str, gpu: bool = False,
                     replace: bool = False) -> None:
    """Add a backend to the registry (``name`` is what users write before the colon)."""
    if not name or ":" in name:
        raise ValueError(f"invalid backend name {name!r}")
    if name in _REGISTRY and not replace:
        raise ValueError(f"backend {name!r} is already registered")
    _REGISTRY[name] = Backend(name=name, description=description, opener=opener, gpu=gpu)


def backend_names() -> List[str]:
    return sorted(_REGISTRY)


def canonical_target(name: str) -> str:
    """A registered name or alias, in any case and with spaces around (as the runtime's
    ``canonical_name`` takes them) -> the registered name (anything else unchanged)."""
    key = str(name).strip().lower()
    return key if key in _REGISTRY else ALIASES.get(key, name)


def get_backend(name: str) -> Backend:
    key = canonical_target(name)
    if key not in _REGISTRY:
        raise unknown_name("backend", name, _REGISTRY)
    return _REGISTRY[key]


def is_gpu_target(name: str) -> bool:
    """Whether a target name (or alias) times on a GPU; False for names not registered."""
    key = canonical_target(name)
    return key in _REGISTRY and _REGISTRY[key].gpu


@dataclass(frozen=True)
class TargetSpec:
    """One ``BACKEND:PATH`` entry; ``label`` is what reports show (unique within a run).
    ``backend`` is kept as the registered name (an alias such as ``onnx`` becomes
    ``onnxruntime``), so reports name targets one way."""

    backend: str
    path: str
    label: str

    def __post_init__(self):
        object.__setattr__(self, "backend", canonical_target(self.backend))


def parse_target(text: str) -> TargetSpec:
    """Parse ``BACKEND:PATH``; an unknown backend or a missing colon is an FcnError."""
    backend, sep, path = text.partition(":")
    backend = backend.strip()
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
    hint: Optional[str] = None  # the runtime's slow-file line for this pairing (slow_file_hint)
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
    out.hint = slow_file_hint(runner, spec.path)
    return out


def slow_file_hint(runner, path) -> Optional[str]:
    """The runtime's slow-pairing line (fcn_deploy.backends.ort_cpu_hint: an fp16 or int8
    TensorRT-layout file on onnxruntime's CPU provider) for a target, or None; the bench
    measures such a pairing on purpose, so it goes into the report's warnings, once."""
    if getattr(runner, "backend", None) != "onnxruntime" or getattr(runner, "device", None) != "CPUExecutionProvider":
        return None
    from fcn_deploy import backends

    return backends.ort_cpu_hint(path)


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


# -- built-in targets: the runtime's backends and their variants --------------------------------

# backend -> [(variant, description, fixed options)]; the target is named ``backend`` for the
# variant "" and ``backend-variant`` otherwise. A fixed ``threads`` wins over the bench's.
VARIANTS: Dict[str, List[tuple]] = {
    "torch": [
        ("", "PyTorch eager fp32 on CPU (the baseline)", {}),
        ("bf16", "PyTorch eager, bf16 autocast, CPU", {"autocast": "bf16"}),
        ("fp16", "PyTorch eager, fp16 autocast, CPU", {"autocast": "fp16"}),
        ("compile", "torch.compile fp32, CPU", {"compile": True}),
        ("compile-bf16", "torch.compile with bf16 autocast, CPU", {"compile": True, "autocast": "bf16"}),
        ("cuda", "PyTorch eager fp32 on CUDA (unverified here)", {"device": "cuda"}),
        ("cuda-fp16", "PyTorch eager fp16 autocast on CUDA (unverified here)", {"device": "cuda", "autocast": "fp16"}),
    ],
    "onnxruntime": [
        ("", "ONNX on onnxruntime, CPU provider", {"providers": ("cpu",)}),
        ("cuda", "ONNX on onnxruntime, CUDA provider (unverified here)", {"providers": ("cuda",)}),
        ("tensorrt", "ONNX on onnxruntime, TensorRT provider (unverified here)", {"providers": ("trt",)}),
        ("throughput", "ONNX on onnxruntime CPU, 1 thread per request (use --concurrency)",
         {"providers": ("cpu",), "threads": 1}),
    ],
    "openvino": [
        ("", "ONNX on OpenVINO CPU, f32 inference precision", {"precision": "f32"}),
        ("bf16", "ONNX on OpenVINO CPU, bf16 inference precision", {"precision": "bf16"}),
        ("throughput", "ONNX on OpenVINO CPU, f32, THROUGHPUT hint (streams; use --concurrency)",
         {"precision": "f32", "performance": "throughput"}),
        ("bf16-throughput", "ONNX on OpenVINO CPU, bf16, THROUGHPUT hint (use --concurrency)",
         {"precision": "bf16", "performance": "throughput"}),
    ],
    "tensorrt": [("", "TensorRT plan (unverified here)", {})],
    "reference": [("", "ONNX on the ONNX reference evaluator (numpy; slow)", {})],
}
GPU_VARIANTS = {("torch", "cuda"), ("torch", "cuda-fp16"), ("onnxruntime", "cuda"), ("onnxruntime", "tensorrt"),
                ("tensorrt", "")}
# The names earlier versions used.
LEGACY_NAMES = {"onnx": "onnxruntime", "onnx-cpu": "onnxruntime", "onnx-cuda": "onnxruntime-cuda",
                "onnx-trt": "onnxruntime-tensorrt", "onnx-throughput": "onnxruntime-throughput", "plan": "tensorrt"}


def target_name(backend: str, variant: str = "") -> str:
    return f"{backend}-{variant}" if variant else backend


def _runtime_opener(backend: str, **options):
    """Open a model through the runtime's one entry (fcn_deploy.backends.open_runner)."""

    def open_(path, *, threads=None):
        from fcn_deploy.benchmarks import runtime

        # No slow-file hint at load (it would scan the file inside load_ms and warn per
        # target): open_target records it in the report after the load is timed.
        if "threads" in options:  # the variant fixes it (one thread per request)
            return runtime.open_runner(path, backend=backend, log_hint=False, **options)
        return runtime.open_runner(path, backend=backend, threads=threads, log_hint=False, **options)

    return open_


def _register_runtime_targets() -> None:
    from fcn_deploy import backends

    for backend in backends.BACKENDS:
        for variant, description, options in VARIANTS.get(backend, [("", f"{backend} backend", {})]):
            name = target_name(backend, variant)
            register_backend(name, _runtime_opener(backend, **options), description=description,
                             gpu=(backend, variant) in GPU_VARIANTS)
            for alias, canonical in backends.ALIASES.items():
                if canonical == backend:
                    ALIASES.setdefault(target_name(alias, variant), name)
    for old, name in LEGACY_NAMES.items():
        ALIASES[old] = name


_register_runtime_targets()


def backends_help() -> str:
    lines = [f"  {b.name:<26} {b.description}" for b in sorted(_REGISTRY.values(), key=lambda b: b.name)]
    lines.append("  aliases: " + ", ".join(f"{a}={n}" for a, n in sorted(ALIASES.items())))
    return "\n".join(lines)
