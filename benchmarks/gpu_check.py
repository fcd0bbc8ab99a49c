"""GPU acceptance in one command: ``make gpu-check`` (``python benchmarks/gpu_check.py``).

``make gpu-check`` makes its own virtual environment (``.venv-gpu``) with the ``gpu`` extra:
onnxruntime-gpu (never beside the CPU ``onnxruntime``), TensorRT and pycuda, which builds from
source against the CUDA toolkit (``nvcc`` and ``cuda.h`` must be on the machine), plus torch.
Then, on a machine with an NVIDIA GPU, it prints one ``[PASS]`` / ``[FAIL]`` / ``[NOT RUN]``
line per check:

0. the environment: a GPU that pycuda sees, TensorRT, onnxruntime-gpu's GPU providers without
   the CPU onnxruntime beside it, CUDA-enabled torch;
1. pycuda buffers: a host -> device -> host round trip on a stream, timed with CUDA events;
2. a checkpoint: ``--checkpoint`` or, when none is given and ``demo_out/model.pt`` is absent, a
   small synthetic ResNet-18 FCN-8s trained here (the ``make demo`` recipe; no data set needed);
3. per precision (fp16, int8 QDQ): export (with its PyTorch parity check), ``fcn-build``, and
   the engine scored against the PyTorch source (CUDA) on the validation images: pixel-label
   agreement and mean IU difference against :class:`Thresholds`;
4. onnxruntime's TensorRT EP runs the fp16 ONNX (the pinned onnxruntime-gpu / TensorRT pair
   works together);
5. each engine timed against PyTorch CUDA eager fp32 in one interleaved ``fcn-bench --compare``
   (without TensorRT, PyTorch CUDA alone is timed);
6. the whole run finished within :data:`BUDGET_S` (8 minutes).

A check whose prerequisite is missing is NOT RUN with the reason, and the later checks still
run where they can (without TensorRT the PyTorch CUDA, pycuda-buffer and timing parts do).
Exit 0 when every check passes, 1 when one fails, 2 when nothing could run (no GPU, bad
arguments).

Unverified on hardware (see README, "GPU status"): it has never run on a GPU. Everything here
except the TensorRT/CUDA calls it makes through the runtime is plain code, covered by CPU tests
that run the same pipeline with onnxruntime standing in for TensorRT.
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
from fcn_deploy.errors import FcnError, first_line  # noqa: E402

log = logging.getLogger(__name__)

DEFAULT_CHECKPOINT = Path("demo_out") / "model.pt"
DEFAULT_CAMVID = Path(__file__).resolve().parents[2] / "shared" / "data" / "camvid"
PRECISIONS = ("fp16", "int8")
BUDGET_S = 8 * 60


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
    not_run: bool = False  # a prerequisite was missing: neither PASS nor FAIL

    @property
    def status(self) -> str:
        return "NOT RUN" if self.not_run else ("PASS" if self.passed else "FAIL")

    def line(self) -> str:
        if self.not_run:
            return f"[NOT RUN] {self.name}: {self.measured}"
        s = f"[{self.status}] {self.name}: {self.measured} (expected {self.expected})"
        return s + (f" -- {self.detail}" if self.detail else "")


def not_run(name: str, why: str) -> Check:
    return Check(name, False, why, "", not_run=True)


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
        "CUDA eager. Run `make gpu-check` on a machine with an NVIDIA GPU, its driver and the CUDA toolkit "
        "(it installs the `gpu` extra into .venv-gpu: TensorRT, pycuda built from source, onnxruntime-gpu, torch). "
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
    ran = [c for c in checks if not c.not_run]
    failed = sum(not c.passed for c in ran)
    skipped = len(checks) - len(ran)
    lines.append("")
    lines.append(f"gpu-check: {len(ran) - failed}/{len(ran)} checks passed" + (f", {skipped} not run" if skipped else "")
                 + (" -- FAILED" if failed else (" -- PASS" if ran else " -- NOT RUN")))
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
    from fcn_deploy.cli_kit import add_layout, cli_parser
    from fcn_deploy.datasets import FORMATS

    p = cli_parser(prog="gpu_check.py", description=__doc__.split("\n\n")[0],
                   formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", help=f"trained checkpoint (default: {DEFAULT_CHECKPOINT} from `make demo` when present, "
                                         "else a small synthetic one trained here)")
    p.add_argument("--data", help=f"labelled images (default: {DEFAULT_CAMVID} when present)")
    add_layout(p, dest="fmt", choices=[f for f in FORMATS if f != "synthetic"], help="layout of --data")
    p.add_argument("--split", default="val")
    p.add_argument("--out", default="gpu_check_out", help="where ONNX files, engines and bench.json go")
    p.add_argument("--limit", type=int, default=50, help="images scored per engine (default %(default)s)")
    p.add_argument("--iterations", type=int, default=50)
    p.add_argument("--warmup", type=int, default=10)
    return p


# -- environment, buffers, checkpoint, onnxruntime EP (the checks around the pipeline) ------------

def environment_checks() -> Tuple[List[Check], dict]:
    """One check per prerequisite; ``have`` says which are usable."""
    import importlib.metadata as md

    checks, have = [], {}
    try:
        from fcn_deploy.backends.cuda_buffers import gpu_identity

        name, cc = gpu_identity(0)
        checks.append(Check("an NVIDIA GPU that pycuda sees", True, f"{name} (sm_{cc.replace('.', '')})", "a GPU"))
        have["gpu"] = True
    except Exception as e:
        checks.append(Check("an NVIDIA GPU that pycuda sees", False, f"error: {first_line(e)}", "a GPU"))
        have["gpu"] = False
    try:
        import tensorrt as trt

        checks.append(Check("TensorRT imports", True, f"TensorRT {trt.__version__}", "tensorrt >= 10"))
        have["trt"] = True
    except Exception as e:
        checks.append(Check("TensorRT imports", False, f"error: {first_line(e)}", "tensorrt >= 10"))
        have["trt"] = False
    dists = {d.metadata["Name"].lower() for d in md.distributions() if d.metadata["Name"]}
    try:
        import onnxruntime as ort

        preload = getattr(ort, "preload_dlls", None)  # onnxruntime >= 1.21: CUDA/cuDNN from the nvidia-* wheels
        if preload is not None:
            preload()
        prov = ort.get_available_providers()
        gpu_prov = [p for p in ("TensorrtExecutionProvider", "CUDAExecutionProvider") if p in prov]
        clash = "onnxruntime" in dists and "onnxruntime-gpu" in dists
        checks.append(Check("onnxruntime-gpu offers the TensorRT and CUDA EPs", len(gpu_prov) == 2 and not clash,
                            f"onnxruntime {ort.__version__}: {', '.join(prov)}" + ("; the CPU onnxruntime is installed too" if clash else ""),
                            "TensorrtExecutionProvider and CUDAExecutionProvider, onnxruntime-gpu alone"))
        have["ort_trt"] = "TensorrtExecutionProvider" in gpu_prov
    except Exception as e:
        checks.append(Check("onnxruntime-gpu offers the TensorRT and CUDA EPs", False, f"error: {first_line(e)}", "onnxruntime-gpu"))
        have["ort_trt"] = False
    try:
        import torch

        ok = torch.cuda.is_available()
        checks.append(Check("torch with CUDA", ok, f"torch {torch.__version__}, CUDA {'available' if ok else 'not available'}",
                            "torch.cuda.is_available()"))
        have["torch_cuda"] = ok
    except Exception as e:
        checks.append(Check("torch with CUDA", False, f"error: {first_line(e)}", "torch.cuda.is_available()"))
        have["torch_cuda"] = False
    return checks, have


def buffer_check(nbytes: int = 64 << 20) -> Check:
    """Host -> device -> host through the runner's own pycuda buffers, timed with its events."""
    import numpy as np

    from fcn_deploy.backends.cuda_buffers import CudaDevice, HostDeviceBuffer

    name = "pycuda buffers: host -> device -> host round trip"
    dev = CudaDevice(0)
    try:
        count = nbytes // 4
        with dev.active():
            a, b = HostDeviceBuffer(np.float32), HostDeviceBuffer(np.float32)
            try:
                x = np.random.default_rng(0).standard_normal(count).astype(np.float32)
                np.copyto(a.ensure((count,)), x)
                b.ensure((count,))
                dev.record(0)
                a.to_device(dev.stream, count)
                dev.record(1)
                import pycuda.driver as cuda

                cuda.memcpy_dtod_async(b._device, a._device, nbytes, dev.stream)
                dev.record(2)
                b.to_host(dev.stream, count)
                dev.record(3)
                dev.synchronize()
                same = bool(np.array_equal(b.host_view((count,)), x))
                h2d, d2h = dev.elapsed_ms(0, 1), dev.elapsed_ms(2, 3)
            finally:
                a.free()
                b.free()
    finally:
        dev.close()
    mib = nbytes / 2**20
    return Check(name, same, f"{mib:.0f} MiB {'identical' if same else 'DIFFERENT'}; h2d {h2d:.2f} ms "
                 f"({mib / 1024 / (h2d / 1e3):.1f} GiB/s), d2h {d2h:.2f} ms", "the bytes back unchanged")


def prepare_checkpoint(out: Path, say) -> Tuple[Path, Path, str]:
    """A small synthetic ResNet-18 FCN-8s checkpoint and its ``folders`` data set, trained here."""
    from fcn_deploy.benchmarks.demo import DemoConfig, _synthetic_spec, _train_config, _write_synthetic
    from fcn_deploy.datasets import SyntheticDataset
    from fcn_deploy.training.train import train

    data = out / "data"
    spec = _synthetic_spec(False, 0)
    for split in ("train", "val"):
        _write_synthetic(SyntheticDataset(spec, split), data, split)
    ckpt = out / "model.pt"
    say(f"== training a synthetic checkpoint {ckpt} ({spec.num_train} images of {spec.height}x{spec.width})")
    train(_train_config(DemoConfig(out=out, threads=max(1, min(8, os.cpu_count() or 1))), ckpt, spec))
    return ckpt, data, "folders"


def ort_trt_ep_check(onnx: Path, shape: Tuple[int, int, int, int]) -> Check:
    """onnxruntime's TensorRT EP builds and runs the ONNX (so the pinned pair works together)."""
    import numpy as np

    from fcn_deploy.backends import open_runner
    from fcn_deploy.shapes import Profile

    name = "onnxruntime TensorRT EP runs the fp16 ONNX"
    n, c, h, w = shape
    prof = Profile((1, c, h, w), (n, c, h, w), (n, c, h, w))
    r = open_runner(onnx, "onnxruntime", providers=["tensorrt"], trt_profile=prof,
                    trt_cache_dir=onnx.parent / "ort_trt_cache")
    try:
        x = np.random.default_rng(0).standard_normal((n, c, h, w)).astype(np.float32)
        out = r.infer({r.inputs()[0].name: x})
        ok = r.device == "TensorrtExecutionProvider" and all(np.isfinite(v).all() for v in out.values() if v.dtype.kind == "f")
        return Check(name, ok, f"session on {', '.join(r.providers)}; outputs finite: {ok}", "TensorrtExecutionProvider first, finite outputs")
    finally:
        r.close()


def _guard(name: str, fn, *a, **kw) -> Check:
    try:
        return fn(*a, **kw)
    except Exception as e:
        return Check(name, False, f"error: {first_line(e)}", "no error")


def _main(argv) -> int:
    import time

    a = _parser().parse_args(argv)
    t0 = time.perf_counter()
    checks, have = environment_checks()
    if not have["gpu"]:
        for c in checks:
            print(c.line())
        for n in ("pycuda buffers", "export, build, accuracy and timing per precision", "onnxruntime TensorRT EP"):
            print(not_run(n, "no usable NVIDIA GPU").line())
        print(no_gpu_message(checks[0].measured), file=sys.stderr)
        return 2
    checks.append(_guard("pycuda buffers: host -> device -> host round trip", buffer_check))
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt = Path(a.checkpoint) if a.checkpoint else DEFAULT_CHECKPOINT
    data, fmt = (Path(a.data) if a.data else (DEFAULT_CAMVID if DEFAULT_CAMVID.is_dir() else None)), a.fmt
    if a.checkpoint and not ckpt.is_file():
        raise FcnError(f"checkpoint not found: {ckpt}")
    if not ckpt.is_file() or data is None:
        try:
            ckpt, data, fmt = prepare_checkpoint(out / "synthetic", print)
            checks.append(Check("a checkpoint to check (synthetic, trained here)", True, str(ckpt), "a checkpoint"))
        except Exception as e:
            checks.append(Check("a checkpoint to check (synthetic, trained here)", False, f"error: {first_line(e)}", "a checkpoint"))
            ckpt = None
    if ckpt is not None and not data.is_dir():
        raise FcnError(f"dataset not found: {data} (pass --data DIR)")
    if ckpt is None or not have["torch_cuda"]:
        checks.append(not_run("export, build, accuracy and timing per precision",
                              "no checkpoint" if ckpt is None else "torch has no CUDA (the PyTorch reference runs on the GPU)"))
    elif not have["trt"]:
        checks.append(not_run("TensorRT engines (export, fcn-build, accuracy, timing)", "TensorRT is not installed"))
        checks.append(_guard("PyTorch CUDA eager timing", torch_timing_check, ckpt, data, fmt, a.split, a))
    else:
        cfg = GpuCheckConfig(checkpoint=ckpt, data=data, fmt=fmt, split=a.split, out=out, limit=a.limit,
                             iterations=a.iterations, warmup=a.warmup)
        checks.extend(run_gpu_check(cfg))
    fp16 = out / f"{ckpt.stem}-fp16.onnx" if ckpt is not None else None
    if fp16 is not None and fp16.is_file() and have["ort_trt"]:
        from fcn_deploy.benchmarks.formats import _shape_of_split

        checks.append(_guard("onnxruntime TensorRT EP runs the fp16 ONNX", ort_trt_ep_check, fp16, _shape_of_split(data, fmt, a.split)))
    else:
        checks.append(not_run("onnxruntime TensorRT EP runs the fp16 ONNX",
                              "no TensorRT EP in onnxruntime" if not have["ort_trt"] else "no fp16 ONNX was exported"))
    took = time.perf_counter() - t0
    checks.append(Check("gpu-check finished in time", took <= BUDGET_S, f"{took:.0f} s", f"<= {BUDGET_S} s"))
    print()
    print(format_checks(checks))
    return 0 if all(c.passed for c in checks if not c.not_run) else 1


def torch_timing_check(ckpt: Path, data: Path, fmt: str, split: str, a) -> Check:
    from fcn_deploy.benchmarks.bench import BenchConfig, run_benchmark
    from fcn_deploy.benchmarks.formats import _shape_of_split
    from fcn_deploy.benchmarks.targets import TargetSpec

    shape = _shape_of_split(data, fmt, split)
    rep = run_benchmark([TargetSpec("torch-cuda", str(ckpt), f"torch-cuda:{ckpt.name}")],
                        BenchConfig(shapes=(shape,), warmup=a.warmup, iterations=a.iterations))
    row = rep["results"][0]
    if row["latency_ms"] is None:
        return Check("PyTorch CUDA eager timing", False, f"error: {row.get('error')}", "a measurement")
    return Check("PyTorch CUDA eager timing", True, f"median {row['latency_ms']['median']:.2f} ms at {'x'.join(map(str, shape))}",
                 "a measurement")


def main(argv=None) -> int:
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
