"""GPU acceptance in one command: ``make gpu-check`` (``python benchmarks/gpu_check.py``).

On a machine with an NVIDIA GPU, CUDA, TensorRT >= 10 and pycuda, for one trained checkpoint:

1. export fp16 and int8 (QDQ, calibrated on the dataset's train images) ONNX files;
2. build a TensorRT engine from each with ``fcn-build`` (fcn_deploy.build);
3. score each engine and the PyTorch source (CUDA) on real images of the split: pixel-label
   agreement and mean IU difference against thresholds (:class:`Thresholds`);
4. time each engine against PyTorch CUDA eager fp32 in one interleaved ``fcn-bench --compare``;

and print PASS/FAIL per check with what was measured and what was expected. Exit 0 when every
check passes, 1 when one fails, 2 when the check cannot run (no GPU, bad arguments).

Unverified on hardware: this project's machines have no GPU. Everything here except the
TensorRT/CUDA calls it makes through the runtime is plain code, covered by CPU tests that run
the same pipeline with onnxruntime standing in for TensorRT.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

if __name__ == "__main__" and __package__ in (None, ""):
    # Run as a script: don't let this folder's modules (datasets.py, report.py...) shadow
    # installed packages; import them as fcn_deploy.benchmarks.*.
    _here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _here]

from fcn_deploy._util import run_cli  # noqa: E402
from fcn_deploy.errors import FcnError  # noqa: E402

log = logging.getLogger(__name__)

DEFAULT_CHECKPOINT = Path("demo_out") / "model.pt"
DEFAULT_CAMVID = Path(__file__).resolve().parents[2] / "shared" / "data" / "camvid"
PRECISIONS = ("fp16", "int8")


@dataclass(frozen=True)
class Thresholds:
    """What PASS means. Agreement is the fraction of pixels whose label equals PyTorch's; the mean
    IU delta is |engine - PyTorch| in fraction units (0.005 = 0.5 points)."""

    fp16_agreement: float = 0.995
    fp16_mean_iu_delta: float = 0.005
    int8_agreement: float = 0.98
    int8_mean_iu_delta: float = 0.01
    min_speedup: float = 1.0  # engine median latency must beat PyTorch CUDA eager

    def for_precision(self, precision: str) -> Tuple[float, float]:
        return (getattr(self, f"{precision}_agreement"), getattr(self, f"{precision}_mean_iu_delta"))


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    measured: str
    expected: str
    detail: str = ""

    def line(self) -> str:
        s = f"[{'PASS' if self.passed else 'FAIL'}] {self.name}: {self.measured} (expected {self.expected})"
        return s + (f" -- {self.detail}" if self.detail else "")


@dataclass(frozen=True)
class GpuCheckConfig:
    checkpoint: Path
    data: Path
    fmt: str = "camvid"
    split: str = "val"
    out: Path = Path("gpu_check_out")
    limit: Optional[int] = 50
    iterations: int = 50
    warmup: int = 10
    calib_images: int = 64
    thresholds: Thresholds = field(default_factory=Thresholds)


# -- environment ----------------------------------------------------------------------------------

def gpu_status() -> Optional[str]:
    """None when an NVIDIA GPU with TensorRT, pycuda and CUDA-enabled torch is usable, else why not."""
    from fcn_deploy.backends.cuda_buffers import gpu_unavailable_reason

    reason = gpu_unavailable_reason()
    if reason:
        return reason
    try:
        import torch

        if not torch.cuda.is_available():
            return "this torch build has no CUDA (the PyTorch reference runs on the GPU)"
    except Exception as e:
        return f"torch is not usable ({type(e).__name__}: {e})"
    return None


def no_gpu_message(reason: str) -> str:
    return (
        "gpu-check: NOT RUN -- this machine has no usable NVIDIA GPU + TensorRT: " + reason + ".\n"
        "It builds fp16 and int8 TensorRT engines from the exported ONNX, checks them against the PyTorch "
        "model on real images (pixel-label agreement, mean IU difference) and times them against PyTorch "
        "CUDA eager. Run it on a machine with an NVIDIA GPU, its driver, CUDA and "
        "`pip install 'fcn-deploy[gpu]'` (tensorrt >= 10, pycuda, onnxruntime-gpu) plus a CUDA build of torch. "
        "Nothing was checked."
    )


# -- the checks (plain functions) ------------------------------------------------------------------

def accuracy_checks(name: str, precision: str, result, thresholds: Thresholds) -> List[Check]:
    """PASS/FAIL of one engine's fcn-eval result (with ``reference``) against the thresholds."""
    ref = result.reference or {}
    min_agree, max_delta = thresholds.for_precision(precision)
    out = []
    agree = ref.get("label_agreement")
    out.append(Check(
        f"{name}: pixel labels agree with PyTorch",
        agree is not None and agree >= min_agree,
        "n/a" if agree is None else f"{100 * agree:.3f}% of {result.pixels} pixels on {result.images} images",
        f">= {100 * min_agree:.1f}%",
    ))
    delta = ref.get("mean_iu_delta")
    ref_miu = (ref.get("metrics") or {}).get("mean_iu")
    out.append(Check(
        f"{name}: mean IU matches PyTorch",
        delta is not None and abs(delta) <= max_delta,
        "n/a" if delta is None else f"{100 * result.mean_iu:.2f} vs {100 * ref_miu:.2f} ({100 * delta:+.2f} points)",
        f"within {100 * max_delta:.1f} points",
    ))
    return out


def speed_checks(report: dict, engine_labels: Sequence[str], thresholds: Thresholds) -> List[Check]:
    """PASS/FAIL of each engine's speedup over the reference (first target) of a --compare report."""
    rows = {r["target"]: r for r in report["results"]}
    ref = rows.get(report["reference"]) or {}
    ref_ms = (ref.get("latency_ms") or {}).get("median")
    out = []
    for label in engine_labels:
        r = rows.get(label)
        if r is None or r["latency_ms"] is None:
            err = (r or {}).get("error") or "no measurement"
            out.append(Check(f"{label}: faster than PyTorch CUDA eager", False, f"error: {err}", f"speedup > {thresholds.min_speedup:g}x"))
            continue
        sp = r["speedup"]
        ms = r["latency_ms"]["median"]
        measured = f"median {ms:.2f} ms" + (f" vs {ref_ms:.2f} ms = {sp:.2f}x" if sp is not None and ref_ms else "")
        detail = ""
        if r.get("h2d_ms") and r.get("compute_ms") and r.get("d2h_ms"):
            detail = (f"h2d {r['h2d_ms']['median']:.2f} / compute {r['compute_ms']['median']:.2f} / "
                      f"d2h {r['d2h_ms']['median']:.2f} ms")
        out.append(Check(f"{label}: faster than PyTorch CUDA eager", sp is not None and sp > thresholds.min_speedup,
                         measured, f"speedup > {thresholds.min_speedup:g}x", detail))
    return out


def format_checks(checks: Sequence[Check]) -> str:
    lines = [c.line() for c in checks]
    failed = sum(not c.passed for c in checks)
    lines.append("")
    lines.append(f"gpu-check: {len(checks) - failed}/{len(checks)} checks passed" + (" -- FAILED" if failed else " -- PASS"))
    return "\n".join(lines)


# -- the pipeline ---------------------------------------------------------------------------------

def export_precision(checkpoint: Path, out: Path, precision: str, cfg: GpuCheckConfig) -> Path:
    from fcn_deploy.benchmarks.formats import _export

    return _export(checkpoint, out, precision, data=cfg.data, fmt=cfg.fmt, calib_images=cfg.calib_images, verify=True)


def build_plan(onnx: Path, plan: Path, shape: Tuple[int, int, int, int]) -> Path:
    """fcn-build with a profile around ``shape`` (min 1/4 of its H and W, max twice them)."""
    from fcn_deploy.build import main as build_main

    n, c, h, w = shape
    mn = f"1x{c}x{max(32, h // 4)}x{max(32, w // 4)}"
    opt = f"{n}x{c}x{h}x{w}"
    mx = f"{n}x{c}x{2 * h}x{2 * w}"
    rc = build_main([str(onnx), str(plan), "--min", mn, "--opt", opt, "--max", mx])
    if rc != 0:
        raise FcnError(f"fcn-build failed for {onnx} (exit {rc}; its message is above)")
    return plan


def run_gpu_check(
    cfg: GpuCheckConfig,
    *,
    export: Callable[[Path, Path, str, GpuCheckConfig], Path] = export_precision,
    build: Callable[[Path, Path, Tuple[int, int, int, int]], Path] = build_plan,
    engine_backend: str = "plan",
    engine_eval_backend: str = "tensorrt",
    engine_suffix: str = ".plan",
    torch_backend: str = "torch-cuda",
    reference_device: str = "cuda",
    say: Callable[[str], None] = print,
) -> List[Check]:
    """Run every check; any stage's failure becomes a FAIL line and the later checks of that
    precision are skipped (reported as FAIL with the reason). The keyword arguments let a CPU
    test run the same pipeline with onnxruntime in place of TensorRT."""
    from fcn_deploy.benchmarks.bench import BenchConfig, run_benchmark
    from fcn_deploy.benchmarks.evaluate import evaluate
    from fcn_deploy.benchmarks.formats import _shape_of_split
    from fcn_deploy.benchmarks.targets import TargetSpec, error_text

    checks: List[Check] = []
    cfg.out.mkdir(parents=True, exist_ok=True)
    shape = _shape_of_split(cfg.data, cfg.fmt, cfg.split)
    engines = {}
    for p in PRECISIONS:
        onnx = cfg.out / f"{cfg.checkpoint.stem}-{p}.onnx"
        plan = cfg.out / f"{cfg.checkpoint.stem}-{p}{engine_suffix}"
        say(f"== {p}: export {onnx}")
        try:
            export(cfg.checkpoint, onnx, p, cfg)
            checks.append(Check(f"{p}: export to ONNX (with its PyTorch parity check)", True, str(onnx), "a verified ONNX file"))
        except Exception as e:
            checks.append(Check(f"{p}: export to ONNX (with its PyTorch parity check)", False, error_text(e), "a verified ONNX file"))
            continue
        say(f"== {p}: build {plan}")
        try:
            build(onnx, plan, shape)
            checks.append(Check(f"{p}: TensorRT engine build", True, str(plan), "an engine file"))
        except Exception as e:
            checks.append(Check(f"{p}: TensorRT engine build", False, error_text(e), "an engine file"))
            continue
        say(f"== {p}: score {plan.name} and PyTorch ({reference_device}) on {cfg.data} [{cfg.fmt} {cfg.split}]")
        try:
            res = evaluate(plan, cfg.data, fmt=cfg.fmt, split=cfg.split, reference=cfg.checkpoint,
                           reference_device=reference_device, limit=cfg.limit, backend=engine_eval_backend,
                           progress=False)
            checks.extend(accuracy_checks(f"{p} engine", p, res, cfg.thresholds))
        except Exception as e:
            checks.append(Check(f"{p} engine: accuracy against PyTorch", False, error_text(e), "a scored split"))
            continue
        engines[p] = plan
    if engines:
        say(f"== timing {', '.join(engines)} against PyTorch ({torch_backend}) at {'x'.join(map(str, shape))}")
        specs = [TargetSpec(torch_backend, str(cfg.checkpoint), f"{torch_backend}:{cfg.checkpoint.name}")]
        labels = []
        for p, plan in engines.items():
            label = f"{engine_backend}:{plan.name}"
            specs.append(TargetSpec(engine_backend, str(plan), label))
            labels.append(label)
        report = run_benchmark(specs, BenchConfig(shapes=(shape,), warmup=cfg.warmup, iterations=cfg.iterations))
        ref_row = next((r for r in report["results"] if r["target"] == report["reference"]), None)
        if ref_row is None or ref_row["latency_ms"] is None:
            err = (ref_row or {}).get("error") or "no measurement"
            checks.append(Check(f"PyTorch {torch_backend} reference timing", False, f"error: {err}", "a measurement"))
        checks.extend(speed_checks(report, labels, cfg.thresholds))
        from fcn_deploy.benchmarks import report as rep

        rep.write_json(report, cfg.out / "bench.json")
        say(rep.render_text(report))
    return checks


# -- CLI ------------------------------------------------------------------------------------------

def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gpu_check.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT), help="trained checkpoint (default: %(default)s, from `make demo`)")
    p.add_argument("--data", help=f"labelled images (default: {DEFAULT_CAMVID} when present)")
    p.add_argument("--format", dest="fmt", default="camvid", choices=("camvid", "voc", "folders"))
    p.add_argument("--split", default="val")
    p.add_argument("--out", default="gpu_check_out", help="where ONNX files, engines and bench.json go")
    p.add_argument("--limit", type=int, default=50, help="images scored per engine (default %(default)s)")
    p.add_argument("--iterations", type=int, default=50)
    p.add_argument("--warmup", type=int, default=10)
    return p


def _main(argv) -> int:
    a = _parser().parse_args(argv)
    reason = gpu_status()
    if reason:
        print(no_gpu_message(reason), file=sys.stderr)
        return 2
    ckpt = Path(a.checkpoint)
    if not ckpt.is_file():
        raise FcnError(f"checkpoint not found: {ckpt} (run `make demo` first, or pass --checkpoint)")
    data = Path(a.data) if a.data else DEFAULT_CAMVID
    if not data.is_dir():
        raise FcnError(f"dataset not found: {data} (pass --data DIR)")
    cfg = GpuCheckConfig(checkpoint=ckpt, data=data, fmt=a.fmt, split=a.split, out=Path(a.out), limit=a.limit,
                         iterations=a.iterations, warmup=a.warmup)
    checks = run_gpu_check(cfg)
    print()
    print(format_checks(checks))
    return 0 if checks and all(c.passed for c in checks) else 1


def main(argv=None) -> int:
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
