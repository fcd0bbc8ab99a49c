"""Parity of an exported ONNX against the PyTorch model it came from (``fcn-verify``).

For each size (odd ones included) the same inputs go through PyTorch (fp32, eval) and an ONNX
execution; batch 1 and batch N are both run. Inputs are random images (smooth blobs + noise,
0..255, through the model's input convention: never zeros) and, when a folder is given, real
images resized to the size. Per size and input kind the report holds:

- ``rel_l2``: ||onnx - torch||_2 / ||torch||_2 of the logits (of the probabilities for a
  ``probs`` ONNX; absent for a ``labels`` ONNX, which is compared on labels only);
- ``max_abs``: max |onnx - torch|;
- ``agreement``: fraction of pixels whose argmax label is the same.

Default tolerances come from the precision written in the ONNX metadata (see
:data:`DEFAULT_TOLERANCES`). ``fcn-verify`` exits 1 and names each miss.

A PyTorch model whose logits do not vary over the pixels (zero score layers: an untrained
model) makes every comparison pass and proves nothing. Such a case is marked ``constant``; the
report is then "NOT VERIFIED: constant output" (:attr:`VerifyReport.verified` is False while
:attr:`VerifyReport.passed` may be True), ``fcn-verify`` exits 1 and ``fcn-export`` says
"parity NOT verified" instead of "parity verified".
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from fcn_deploy.errors import FcnError
from fcn_deploy.modelinfo import ModelInfo

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Tolerances:
    """Pass criteria: relative L2 error at most ``max_rel_l2`` (None: not checked) and pixel-label
    agreement at least ``min_agreement``."""

    max_rel_l2: Optional[float]
    min_agreement: float


DEFAULT_TOLERANCES: Dict[str, Tolerances] = {
    "fp32": Tolerances(max_rel_l2=1e-5, min_agreement=0.9999),
    "fp16": Tolerances(max_rel_l2=None, min_agreement=0.995),
    "int8": Tolerances(max_rel_l2=None, min_agreement=0.98),
}

DEFAULT_SIZES: Tuple[Tuple[int, int], ...] = ((97, 131), (360, 480), (500, 375))
# What export_onnx checks before it renames the file into place.
EXPORT_SIZES: Tuple[Tuple[int, int], ...] = ((97, 131), (375, 500))

# ONNX executions that verify can use (see open_engine).
ENGINES = ("onnxruntime", "reference", "openvino")


@dataclass(frozen=True)
class CaseResult:
    height: int
    width: int
    batch: int
    inputs: str  # "random" | "images"
    rel_l2: Optional[float]
    max_abs: Optional[float]
    agreement: float
    failures: Tuple[str, ...] = ()
    counted: bool = True  # False: reported only (random inputs of an int8 model checked on images)
    constant: bool = False  # the PyTorch logits do not vary over the pixels: this case proves nothing

    @property
    def passed(self) -> bool:
        return not self.failures or not self.counted

    def describe(self) -> str:
        parts = [f"{self.height}x{self.width} batch {self.batch} {self.inputs}:"]
        if self.rel_l2 is not None:
            parts.append(f"rel_l2={self.rel_l2:.3g} max_abs={self.max_abs:.3g}")
        parts.append(f"agreement={100 * self.agreement:.4f}%")
        if self.constant:
            parts.append("NOT VERIFIED (constant PyTorch output)" + (" and FAIL (" + "; ".join(self.failures) + ")"
                                                                   if self.failures and self.counted else ""))
        elif not self.failures:
            parts.append("ok")
        elif self.counted:
            parts.append("FAIL (" + "; ".join(self.failures) + ")")
        else:
            parts.append("below tolerance (" + "; ".join(self.failures) + "), not counted: int8 is judged on real images")
        return " ".join(parts)


@dataclass(frozen=True)
class VerifyReport:
    onnx: str
    precision: str
    output: str
    engine: str
    tolerances: Tolerances
    cases: Tuple[CaseResult, ...]
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.cases)

    @property
    def constant_output(self) -> bool:
        """Some case's PyTorch logits were constant over the pixels (zero score layers?)."""
        return any(c.constant for c in self.cases)

    @property
    def verified(self) -> bool:
        """Passed, and on a model whose output varies: a comparison that means something."""
        return self.passed and bool(self.cases) and not self.constant_output

    @property
    def status(self) -> str:
        """``PASS``, ``FAIL`` or ``NOT VERIFIED: constant output``."""
        if not self.passed:
            return "FAIL"
        return "PASS" if self.verified else f"NOT VERIFIED: {CONSTANT_OUTPUT}"

    @property
    def failures(self) -> List[str]:
        return [c.describe() for c in self.cases if not c.passed]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["passed"] = self.passed
        d["verified"] = self.verified
        d["status"] = self.status
        return d

    def format(self) -> str:
        tol = self.tolerances
        lines = [
            f"{self.onnx}: precision {self.precision}, output {self.output}, engine {self.engine}; "
            f"tolerances: rel_l2 <= {tol.max_rel_l2 if tol.max_rel_l2 is not None else 'n/a'}, "
            f"agreement >= {100 * tol.min_agreement:g}%"
        ]
        lines += ["  " + c.describe() for c in self.cases]
        lines.append(self.status + f" ({len(self.cases)} checks, {self.seconds:.1f} s)")
        return "\n".join(lines)


# ------------------------------------------------------------------------------------------------
# ONNX reading and execution
# ------------------------------------------------------------------------------------------------


def read_model_info(onnx_path) -> ModelInfo:
    """The ModelInfo in an ONNX file's metadata; FcnError for a truncated/foreign file."""
    import onnx

    path = Path(onnx_path)
    if not path.is_file():
        raise FcnError(f"ONNX file not found: {path}")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # DecodeError and friends: truncated or not ONNX
        raise FcnError(f"{path} is not a readable ONNX file ({type(e).__name__}); truncated or foreign?") from None
    if not model.graph.node:
        raise FcnError(f"{path} is not a readable ONNX file (no graph); truncated or foreign?")
    props = {p.key: p.value for p in model.metadata_props}
    return ModelInfo.from_metadata(props, source=str(path))


# What each verify engine is on the runtime's registry (fcn_deploy.backends): the backend and
# the options that make it a plain fp32 CPU execution.
ENGINE_BACKENDS: Dict[str, Tuple[str, dict]] = {
    "onnxruntime": ("onnxruntime", {"providers": ("cpu",)}),
    "reference": ("reference", {}),
    "openvino": ("openvino", {"precision": "f32"}),
}


def open_engine(path, engine: str = "onnxruntime"):
    """The runtime Runner that executes ``path`` for verification (onnxruntime CPU, the ONNX
    reference evaluator, or OpenVINO CPU at f32): ``fcn_deploy.backends.open_runner`` with the
    backend named, so any file name is opened (``fcn-export m.pt out.bin``), without reading
    fcn-deploy metadata (the caller has its ModelInfo, or none: a foreign ONNX) and without
    the runtime's slow-file hint (the user is exporting that file on purpose)."""
    if engine not in ENGINE_BACKENDS:
        from fcn_deploy.errors import unknown_name

        raise unknown_name("engine", engine, ENGINES)
    from fcn_deploy.backends import open_runner

    backend, options = ENGINE_BACKENDS[engine]
    return open_runner(path, backend, log_hint=False, read_info=False, **options)


def run_engine(runner, x: np.ndarray) -> np.ndarray:
    """The first output of ``runner`` on ``x`` (as float16 for a float16-input model, else float32)."""
    spec = runner.inputs()[0]
    dtype = np.float16 if spec.dtype == "float16" else np.float32
    out = runner.infer({spec.name: np.ascontiguousarray(x, dtype=dtype)})
    return np.asarray(out[runner.outputs()[0].name])


def run_onnx(path, x: np.ndarray, *, engine: str = "onnxruntime") -> np.ndarray:
    """One-shot ONNX execution on CPU (see :func:`open_engine`)."""
    with open_engine(path, engine) as runner:
        return run_engine(runner, x)


# ------------------------------------------------------------------------------------------------
# Comparison
# ------------------------------------------------------------------------------------------------


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def compare(ref_logits: np.ndarray, out: np.ndarray, output_kind: str) -> Tuple[Optional[float], Optional[float], float]:
    """(rel_l2, max_abs, agreement) of an ONNX output against PyTorch logits (N, C, H, W)."""
    ref_labels = ref_logits.argmax(axis=1)
    if output_kind == "labels":
        if out.shape != ref_labels.shape:
            raise FcnError(f"ONNX labels have shape {out.shape}, expected {ref_labels.shape}")
        return None, None, float((out.astype(np.int64) == ref_labels).mean())
    if out.shape != ref_logits.shape:
        raise FcnError(f"ONNX {output_kind} have shape {out.shape}, expected {ref_logits.shape}")
    ref = _softmax(ref_logits.astype(np.float64)) if output_kind == "probs" else ref_logits.astype(np.float64)
    o = out.astype(np.float64)
    if not np.all(np.isfinite(o)):
        return float("inf"), float("inf"), float((out.argmax(axis=1) == ref_labels).mean())
    diff = o - ref
    denom = float(np.linalg.norm(ref))
    rel = float(np.linalg.norm(diff) / denom) if denom > 0 else float(np.linalg.norm(diff))
    return rel, float(np.abs(diff).max()), float((out.argmax(axis=1) == ref_labels).mean())


def _failures(rel, agreement, tol: Tolerances) -> Tuple[str, ...]:
    f = []
    if tol.max_rel_l2 is not None and rel is not None and not rel <= tol.max_rel_l2:
        f.append(f"rel_l2 {rel:.3g} > {tol.max_rel_l2:g}")
    if not agreement >= tol.min_agreement:
        f.append(f"agreement {100 * agreement:.4f}% < {100 * tol.min_agreement:g}%")
    return tuple(f)


def _torch_logits(model, x: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return model(torch.from_numpy(x)).float().numpy()


CONSTANT_OUTPUT = "constant output (the PyTorch logits do not vary over the pixels: zero score layers, an untrained model?)"


def logits_constant(logits: np.ndarray) -> bool:
    """True when every class channel of ``logits`` (N, C, H, W) is the same number at every
    pixel of every image: zero score layers give this, and then any ONNX that outputs the
    same constant passes every comparison."""
    x = np.asarray(logits, dtype=np.float64)
    spread = np.ptp(x.reshape(x.shape[0], x.shape[1], -1).transpose(1, 0, 2).reshape(x.shape[1], -1), axis=1)
    return bool(np.all(spread <= 1e-7 * max(1.0, float(np.abs(x).max()))))


def verify_model(
    model,
    info: ModelInfo,
    onnx_path,
    *,
    sizes: Sequence[Tuple[int, int]] = DEFAULT_SIZES,
    batch: int = 2,
    images=None,
    tolerances: Optional[Tolerances] = None,
    engine: str = "onnxruntime",
    seed: int = 0,
    static_batch: Optional[int] = None,
    progress: bool = False,
) -> VerifyReport:
    """Compare an in-memory PyTorch ``model`` with ``onnx_path`` (see module docstring).

    ``info`` is the ModelInfo read from the ONNX (its precision and output select the
    comparison). ``images``: a folder (the image files directly in it) or a list of image files. ``static_batch``: the ONNX
    accepts only that batch size. For an int8 ONNX checked on real images, the random-input
    cases are reported but not counted (int8 is calibrated for, and judged on, real images).
    """
    t0 = time.perf_counter()
    model = getattr(model, "module", model).eval()
    precision = info.precision
    if tolerances is None:
        if precision not in DEFAULT_TOLERANCES:
            raise FcnError(f"no default tolerances for precision {precision!r}; valid: {', '.join(DEFAULT_TOLERANCES)}")
        tolerances = DEFAULT_TOLERANCES[precision]
    if batch < 1:
        raise FcnError(f"batch must be >= 1, got {batch}")
    files = None
    if images is not None:
        from fcn_deploy.datasets import list_images

        files = list(images) if isinstance(images, (list, tuple)) else list_images(images, "images")
        if not files:
            raise FcnError("no images to verify on")
    # int8 is calibrated for real images: with real images given, random inputs are reported
    # but do not decide pass/fail.
    random_counts = not (precision == "int8" and files)
    from fcn_deploy.export.inputs import image_batch, normalize, random_rgb

    runner = open_engine(onnx_path, engine)
    try:
        batches = [static_batch] if static_batch else sorted({1, int(batch)})
        kinds = ["random"] + (["images"] if files else [])
        jobs = [(h, w, k) for (h, w) in sizes for k in kinds]
        cases: List[CaseResult] = []
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(jobs), desc="verify", unit="size")
        for i, (h, w, kind) in enumerate(jobs):
            nmax = max(batches)
            if kind == "random":
                x = normalize(random_rgb(nmax, h, w, seed=seed + i), info)
            else:
                x = image_batch(files, nmax, h, w, info, start=i)
            ref = _torch_logits(model, x)
            constant = logits_constant(ref)
            if constant:
                log.warning("%dx%d %s: %s: this check proves nothing", h, w, kind, CONSTANT_OUTPUT)
            for n in batches:
                out = run_engine(runner, x[:n])
                rel, mx, agree = compare(ref[:n], out, info.output)
                cases.append(CaseResult(h, w, n, kind, rel, mx, agree, _failures(rel, agree, tolerances),
                                        counted=kind != "random" or random_counts, constant=constant))
                log.debug(cases[-1].describe())
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
    finally:
        runner.close()
    return VerifyReport(
        onnx=str(onnx_path), precision=precision, output=info.output, engine=engine,
        tolerances=tolerances, cases=tuple(cases), seconds=time.perf_counter() - t0,
    )


def verify_onnx(
    source,
    onnx_path,
    *,
    sizes: Sequence[Tuple[int, int]] = DEFAULT_SIZES,
    batch: int = 2,
    images=None,
    tolerances: Optional[Tolerances] = None,
    engine: str = "onnxruntime",
    seed: int = 0,
    progress: bool = False,
) -> VerifyReport:
    """PyTorch vs ONNX parity. ``source``: a checkpoint path or a ``(model, ModelInfo)`` pair.

    Precision and output kind are read from the ONNX metadata; a static ONNX is checked at its
    own size and batch only. Returns a :class:`VerifyReport` (``.passed``, ``.format()``).
    """
    from fcn_deploy.export.onnx_export import resolve_source, static_dims

    onnx_info = read_model_info(onnx_path)
    model, info, sha = resolve_source(source)
    if info.num_classes != onnx_info.num_classes:
        raise FcnError(f"{onnx_path} has {onnx_info.num_classes} classes, the checkpoint {info.num_classes}")
    if onnx_info.source_sha256 and sha and onnx_info.source_sha256 != sha:
        log.warning("%s was exported from a different checkpoint (sha256 %s..., this one %s...)",
                    onnx_path, onnx_info.source_sha256[:12], sha[:12])
    n_static, hw_static = static_dims(onnx_path)
    if hw_static is not None:
        sizes = [hw_static]
    return verify_model(
        model, onnx_info, onnx_path, sizes=sizes, batch=batch, images=images, tolerances=tolerances,
        engine=engine, seed=seed, static_batch=n_static, progress=progress,
    )


# ------------------------------------------------------------------------------------------------
# CLI
# ------------------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    from fcn_deploy.cli_kit import add_backend, cli_parser, hw_list_type

    p = cli_parser(
        prog="fcn-verify",
        description="Check an exported ONNX against the PyTorch checkpoint it came from "
        "(relative L2 error, max abs error, pixel-label agreement per size).",
    )
    p.add_argument("checkpoint", help="fcn-deploy checkpoint (.pt)")
    p.add_argument("onnx", help="ONNX file written by fcn-export")
    p.add_argument("--images", metavar="DIR", help="also compare on the images directly in DIR (resized to each size)")
    p.add_argument("--sizes", type=hw_list_type(), default=list(DEFAULT_SIZES), metavar="HxW,...",
                   help="comma-separated HxW sizes (default: " + ",".join(f"{h}x{w}" for h, w in DEFAULT_SIZES) + ")")
    p.add_argument("--batch", type=int, default=2, help="batch size besides 1 (default: %(default)s)")
    # "engine" is a TensorRT plan elsewhere: the executor is --backend here (--engine kept as the old spelling).
    add_backend(p, names=ENGINES, auto=False, default="onnxruntime", aliases=("--engine",), dest="engine",
                help="CPU execution of the ONNX (old spelling --engine)")
    p.add_argument("--max-rel-l2", type=float, help="override the relative-L2 tolerance")
    p.add_argument("--min-agreement", type=float, help="override the label-agreement tolerance (0..1)")
    p.add_argument("--json", metavar="FILE", help="write the report as JSON")
    p.add_argument("--seed", type=int, default=0)
    return p


def _main(argv=None) -> int:
    from fcn_deploy._util import atomic_write_text

    args = _parser().parse_args(argv)
    sizes = args.sizes
    tol = None
    if args.max_rel_l2 is not None or args.min_agreement is not None:
        base = DEFAULT_TOLERANCES.get(read_model_info(args.onnx).precision, DEFAULT_TOLERANCES["fp32"])
        tol = Tolerances(
            max_rel_l2=args.max_rel_l2 if args.max_rel_l2 is not None else base.max_rel_l2,
            min_agreement=args.min_agreement if args.min_agreement is not None else base.min_agreement,
        )
    report = verify_onnx(
        args.checkpoint, args.onnx, sizes=sizes, batch=args.batch, images=args.images,
        tolerances=tol, engine=args.engine, seed=args.seed, progress=True,
    )
    print(report.format())
    if args.json:
        atomic_write_text(args.json, json.dumps(report.to_dict(), indent=2) + "\n")
    if not report.passed:
        for f in report.failures:
            print(f"failed: {f}")
        return 1
    if not report.verified:
        print(f"not verified: {CONSTANT_OUTPUT}")
        return 1
    return 0


def main(argv=None) -> int:
    from fcn_deploy._util import run_cli

    return run_cli(_main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
