"""``fcn-bench``: latency, throughput and memory of one model, or of several side by side.

Single model::

    fcn-bench --onnx fcn8s.onnx --shape 1x3x360x480 --iterations 50 --json out.json
    fcn-bench --torch model.pt --autocast bf16 --threads 2
    fcn-bench --engine fcn8s.plan --shape 1x3x512x512       # TensorRT, unverified here

Comparison (same inputs, one process, iterations interleaved round-robin; ratios to the first)::

    fcn-bench --compare torch:model.pt onnxruntime:fcn8s.onnx onnxruntime:fcn8s-int8.onnx openvino:fcn8s.onnx

Throughput (``--concurrency K``): after each shape's latency loop, every target also runs K
requests in flight from K threads (one Segmenter/runner shared, as a server or fcn-predict on a
folder would) and reports images/s; ``openvino-throughput`` (OpenVINO's THROUGHPUT hint: one
stream per core) and ``onnxruntime-throughput`` (one intra-op thread per request, so K
requests use K cores) are the throughput configurations (target names: the runtime's backend
names, benchmarks/targets.py; the old ``onnx``, ``onnx-throughput``, ``plan`` still work)::

    fcn-bench --compare openvino:m.onnx openvino-throughput:m.onnx onnxruntime:m.onnx onnxruntime-throughput:m.onnx \
        --shape 1x3x360x480 --shape 4x3x360x480 --concurrency 2

Every target's timed loop sees the same pixels (random uint8 images with a fixed seed, or
``--images DIR``), normalised per that model's own convention. Pre- and post-processing are
timed apart from inference, through the runtime's own code (fcn_deploy.image / segmenter).

See docs/benchmarks.md for the JSON keys.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from fcn_deploy._util import atomic_write_text, run_cli
from fcn_deploy.backends.base import Runner
from fcn_deploy.benchmarks import report as rep
from fcn_deploy.benchmarks import runtime
from fcn_deploy.benchmarks.stats import CV_WARN_THRESHOLD
from fcn_deploy.benchmarks.targets import (
    OpenedTarget, TargetSpec, backends_help, error_text, open_target, parse_target, peak_rss_mb,
    unique_labels,
)
from fcn_deploy.errors import FcnError

log = logging.getLogger(__name__)

DEFAULT_SHAPE = (1, 3, 360, 480)
DEFAULT_WARMUP = 3
DEFAULT_ITERATIONS = 20
# Pre/post-processing is timed on this many Segmenter.segment calls per target and shape
# (around a replay of the model's output: no extra inference).
PREPOST_ITERATIONS = 10
# Pause between targets in an interleaved run (not part of any measurement).
DEFAULT_SETTLE_MS = 20.0
# Distinct input batches cycled through the timed loop.
INPUT_POOL = 4


@dataclass(frozen=True)
class BenchConfig:
    shapes: Tuple[Tuple[int, int, int, int], ...] = (DEFAULT_SHAPE,)
    warmup: int = DEFAULT_WARMUP
    iterations: Optional[int] = DEFAULT_ITERATIONS
    duration_s: Optional[float] = None
    threads: Optional[int] = None
    seed: int = 0
    images: Optional[str] = None
    prepost: bool = True
    cv_threshold: float = CV_WARN_THRESHOLD
    # Idle pause between two targets' calls in an interleaved run, so one runtime's spinning
    # worker threads (onnxruntime, OpenMP, TBB) go to sleep before the next target runs.
    settle_ms: float = DEFAULT_SETTLE_MS
    # Requests in flight in the throughput phase (1 = no throughput phase).
    concurrency: int = 1

    def __post_init__(self):
        if not self.shapes:
            raise FcnError("no --shape to benchmark")
        if self.warmup < 0:
            raise FcnError(f"--warmup must be >= 0, got {self.warmup}")
        if self.iterations is not None and self.iterations < 1:
            raise FcnError(f"--iterations must be >= 1, got {self.iterations}")
        if self.duration_s is not None and not self.duration_s > 0:
            raise FcnError(f"--duration must be > 0 seconds, got {self.duration_s}")
        if self.iterations is None and self.duration_s is None:
            raise FcnError("give --iterations or --duration")
        if self.settle_ms < 0:
            raise FcnError(f"--settle-ms must be >= 0, got {self.settle_ms}")
        if self.threads is not None and self.threads < 1:
            raise FcnError(f"--threads must be >= 1, got {self.threads}")
        if self.concurrency < 1:
            raise FcnError(f"--concurrency must be >= 1, got {self.concurrency}")


def parse_shape(text: str) -> Tuple[int, int, int, int]:
    """``NxCxHxW`` (e.g. 1x3x360x480, or 1,3,360,480) -> a tuple; C must be 3.
    :func:`fcn_deploy.shapes.parse_shape`, kept here as an alias."""
    from fcn_deploy.shapes import parse_shape as parse

    return parse(text, what="--shape", channels=3)


# -- inputs ---------------------------------------------------------------------------------------

def pixel_batches(shape, *, seed: int, images: Optional[str] = None, pool: int = INPUT_POOL) -> List[np.ndarray]:
    """``pool`` batches of N x H x W x 3 uint8 RGB pixels: real images resized to H x W, or
    uniform random pixels from a fixed seed (never all zeros)."""
    n, _, h, w = shape
    if images:
        from fcn_deploy.image import resize_rgb

        files = runtime.list_images(images)
        imgs = [resize_rgb(runtime.load_image(f), (h, w)) for f in files[: max(1, n * pool)]]
        count = max(1, min(pool, math.ceil(len(imgs) / n)))
        return [np.stack([imgs[(b * n + i) % len(imgs)] for i in range(n)]) for b in range(count)]
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, size=(n, h, w, 3), dtype=np.uint8) for _ in range(pool)]


def _feeds_for(target: OpenedTarget, batches: List[np.ndarray]) -> List[Dict[str, np.ndarray]]:
    spec = target.runner.inputs()[0]
    if spec.dtype == "uint8":  # a pixels-in model (fcn-export --input uint8): N x H x W x 3 RGB as they are
        return [{spec.name: np.ascontiguousarray(b)} for b in batches]
    dtype = np.dtype(spec.dtype) if spec.dtype in ("float32", "float16") else np.float32
    info = target.info or runtime.default_info()
    return [{spec.name: runtime.preprocess(list(b), info, dtype=dtype)} for b in batches]


# -- the timed loop -------------------------------------------------------------------------------

@dataclass
class Series:
    """Raw per-iteration measurements of one target at one shape."""

    label: str
    shape: Tuple[int, int, int, int]
    latency_ms: List[float] = field(default_factory=list)
    h2d_ms: List[Optional[float]] = field(default_factory=list)
    compute_ms: List[Optional[float]] = field(default_factory=list)
    d2h_ms: List[Optional[float]] = field(default_factory=list)
    pre_ms: List[float] = field(default_factory=list)
    post_ms: List[float] = field(default_factory=list)
    error: Optional[str] = None
    # Images/s with BenchConfig.concurrency requests in flight (None: not measured).
    concurrent_ips: Optional[float] = None
    # The model's outputs of the last timed call: replayed to time post-processing.
    last_output: Optional[Dict[str, np.ndarray]] = None


def _call(target: OpenedTarget, feeds, series: Series, record: bool) -> None:
    t0 = time.perf_counter()
    out = target.runner.infer(feeds)
    dt = (time.perf_counter() - t0) * 1000.0
    if not record:
        return
    series.latency_ms.append(dt)
    timing = getattr(target.runner, "last_timing", None)
    series.h2d_ms.append(getattr(timing, "h2d_ms", None))
    series.compute_ms.append(getattr(timing, "compute_ms", None))
    series.d2h_ms.append(getattr(timing, "d2h_ms", None))
    series.last_output = out


def run_shape(targets: List[OpenedTarget], shape, config: BenchConfig, *, progress=None) -> Dict[str, Series]:
    """Warm up, then time every working target at ``shape``, interleaved round-robin.

    Round r starts at target r mod k (k targets), so no target always runs right after the
    same neighbour. A target that raises is dropped for this shape; its series keeps the error.
    """
    batches = pixel_batches(shape, seed=config.seed, images=config.images)
    series = {target.spec.label: Series(target.spec.label, tuple(shape)) for target in targets}
    active: List[OpenedTarget] = []
    feeds: Dict[str, List[Dict[str, np.ndarray]]] = {}
    for target in targets:
        if target.error:
            series[target.spec.label].error = target.error
            continue
        try:
            feeds[target.spec.label] = _feeds_for(target, batches)
        except Exception as e:
            series[target.spec.label].error = error_text(e)
            continue
        active.append(target)

    def one_round(round_no: int, record: bool) -> None:
        if not active:
            return
        first = round_no % len(active)
        for target in active[first:] + active[:first]:
            if len(active) > 1 and config.settle_ms:
                time.sleep(config.settle_ms / 1000.0)
            measured = series[target.spec.label]
            try:
                pool = feeds[target.spec.label]
                _call(target, pool[round_no % len(pool)], measured, record)
            except Exception as e:  # the others still run
                log.debug("%s failed at %s", target.spec.label, shape, exc_info=True)
                measured.error = error_text(e)
                active.remove(target)

    for round_no in range(config.warmup):
        one_round(round_no, record=False)
        if progress:
            progress(f"warm-up {round_no + 1}/{config.warmup}")
    start = time.perf_counter()
    done = 0
    while active:
        if config.iterations is not None and done >= config.iterations:
            break
        if config.duration_s is not None and done >= 1 and time.perf_counter() - start >= config.duration_s:
            break
        one_round(done, record=True)
        done += 1
        if progress:
            total = config.iterations if config.iterations is not None else None
            progress(f"iteration {done}" + (f"/{total}" if total else f" ({time.perf_counter() - start:.0f}/{config.duration_s:.0f} s)"))
    if config.concurrency > 1:
        for target in active:
            measured = series[target.spec.label]
            try:
                measured.concurrent_ips = concurrent_ips(target, feeds[target.spec.label], config.concurrency,
                                                  calls=max(config.iterations or DEFAULT_ITERATIONS, 2 * config.concurrency))
            except Exception as e:
                log.warning("%s: throughput with %d in flight could not be measured: %s", target.spec.label,
                            config.concurrency, error_text(e))
            if progress:
                progress(f"throughput {target.spec.label}")
    if config.prepost:
        for target in active:
            measured = series[target.spec.label]
            try:
                measured.pre_ms, measured.post_ms = _time_prepost(target, batches[0], measured.last_output)
            except Exception as e:
                log.warning("%s: pre/post-processing could not be timed: %s", target.spec.label, error_text(e))
    for measured in series.values():
        measured.last_output = None
    return series


def concurrent_ips(target: OpenedTarget, feeds: List[Dict[str, np.ndarray]], k: int, *, calls: int) -> float:
    """Images/s of ``target`` with ``k`` requests in flight: ``k`` threads share its runner (the
    runtimes release the GIL), ``calls`` timed calls after ``k`` untimed ones."""
    from concurrent.futures import ThreadPoolExecutor

    n = next(iter(feeds[0].values())).shape[0]

    def work(i: int) -> None:
        target.runner.infer(feeds[i % len(feeds)])

    with ThreadPoolExecutor(max_workers=k) as pool:
        list(pool.map(work, range(k)))
        t0 = time.perf_counter()
        list(pool.map(work, range(calls)))
        dt = time.perf_counter() - t0
    return calls * n / dt


class _Replay(Runner):
    """Stands in for a target's runner while pre/post-processing is timed: same I/O specs,
    returns an output the real model produced at this shape, so ``Segmenter.segment`` runs
    its own pre- and post-processing without paying for another inference."""

    def __init__(self, real, outputs: Dict[str, np.ndarray]):
        super().__init__()
        self._real, self._out = real, outputs
        self.backend, self.device = getattr(real, "backend", "?"), getattr(real, "device", "?")
        self.path = getattr(real, "path", None)

    def inputs(self):
        return self._real.inputs()

    def outputs(self):
        return self._real.outputs()

    def profile(self):
        return self._real.profile()

    def _infer(self, feeds):
        return self._out, None


def _time_prepost(target: OpenedTarget, pixels: np.ndarray, outputs: Optional[Dict[str, np.ndarray]]):
    """Time the runtime's own pre-processing (uint8 images -> input tensor) and
    post-processing (output -> label maps at the image size): ``Segmenter.segment`` on the
    full-size images of the shape, around a replay of this model's real output."""
    if target.info is None:
        raise FcnError("the model carries no ModelInfo, so the Segmenter cannot wrap it")
    if not outputs:
        raise FcnError("no output of this model to post-process")
    seg = runtime.segmenter_for(_Replay(target.runner, outputs), target.info, path=target.spec.path)
    pre, post = [], []
    for _ in range(PREPOST_ITERATIONS):
        seg.segment(list(pixels))
        t = seg.last_timing
        pre.append(t.preprocess_ms)
        post.append(t.postprocess_ms)
    return pre, post


def run_benchmark(specs: Sequence[TargetSpec], config: BenchConfig, *, progress=None) -> dict:
    """Open every target, time every shape, and return the JSON report (see report.py)."""
    specs = unique_labels(list(specs))
    opened: List[OpenedTarget] = []
    try:
        for s in specs:
            if progress:
                progress(f"loading {s.label}")
            t = open_target(s, threads=config.threads)
            if t.error and len(specs) > 1:  # alone, the CLI reports it as its one error line
                log.warning("%s: %s", s.label, t.error)
            opened.append(t)
        all_series = []
        for shape in config.shapes:
            label = "x".join(map(str, shape))
            cb = (lambda msg, _l=label: progress(f"{_l}: {msg}")) if progress else None
            res = run_shape(opened, shape, config, progress=cb)
            all_series.extend(res[t.spec.label] for t in opened)
        return rep.build_report(opened, all_series, config, peak_rss_mb=peak_rss_mb())
    finally:
        for t in opened:
            t.close()


# -- CLI ------------------------------------------------------------------------------------------

COMMANDS = ("run", "compare", "formats", "ceiling")
# The old mode flags (one mutually exclusive group before the subcommands) still work:
# `fcn-bench --compare A B` is `fcn-bench compare A B`, `fcn-bench --onnx M` is `fcn-bench run --onnx M`.
_LEGACY_MOVES = {"--compare": "compare", "--formats": "formats", "--ceiling": "ceiling"}
_LEGACY_SELECTS = {"--plan": "run", "--engine": "run", "--onnx": "run", "--openvino": "run", "--torch": "run"}


def _default_shape() -> str:
    return "x".join(map(str, DEFAULT_SHAPE))


def _add_common(p, *, shapes: str, runs: bool = True) -> None:
    from fcn_deploy.cli_kit import add_shape, add_threads

    add_shape(p, "--shape", channels=3, action="append", help=shapes)
    p.add_argument("--warmup", type=int, default=DEFAULT_WARMUP, help="warm-up iterations per target and shape")
    if runs:
        iters = p.add_mutually_exclusive_group()
        iters.add_argument("--iterations", type=int, help=f"timed iterations per target and shape (default {DEFAULT_ITERATIONS})")
        iters.add_argument("--duration", type=float, metavar="S", help="time each shape for about S seconds instead")
    add_threads(p, help="CPU threads for the backend (torch.set_num_threads / ORT intra-op / OpenVINO)")
    p.add_argument("--json", metavar="FILE", help="write the machine-readable report")
    p.add_argument("--markdown", metavar="FILE", help="write a Markdown report")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress messages")


def _add_latency(p) -> None:
    """The options of the latency runs (run and compare)."""
    _add_common(p, shapes=f"input shape, repeatable (default {_default_shape()})")
    p.add_argument("--images", metavar="DIR", help="real images (resized to each shape) instead of random pixels")
    p.add_argument("--seed", type=int, default=0, help="seed of the random input pixels")
    p.add_argument("--settle-ms", type=float, default=DEFAULT_SETTLE_MS,
                   help="idle pause between targets in a comparison so spinning worker threads sleep (not timed)")
    p.add_argument("--concurrency", type=int, default=1, metavar="K",
                   help="also measure images/s with K requests in flight from K threads (default 1: latency only)")
    p.add_argument("--no-prepost", action="store_true", help="skip timing pre/post-processing")
    p.add_argument("--plot", metavar="FILE.png", help="plot latency against resolution and img/s against batch (needs matplotlib)")


def _parser() -> argparse.ArgumentParser:
    from fcn_deploy.cli_kit import add_layout, cli_parser

    p = cli_parser(
        prog="fcn-bench",
        description="Benchmark FCN inference (latency, throughput, memory), alone or side by side.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="the old spellings still work: fcn-bench --onnx M = fcn-bench run --onnx M, "
               "fcn-bench --compare A B = fcn-bench compare A B, --formats / --ceiling likewise",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    run_cmd = sub.add_parser("run", help="one model (latency, throughput, memory)", description="Benchmark one model.")
    src = run_cmd.add_mutually_exclusive_group(required=True)
    src.add_argument("--plan", "--engine", dest="plan", metavar="PLAN", help="TensorRT plan (unverified on this machine)")
    src.add_argument("--onnx", metavar="MODEL", help="ONNX model on onnxruntime")
    src.add_argument("--openvino", metavar="MODEL", help="ONNX model on OpenVINO (CPU)")
    src.add_argument("--torch", metavar="CHECKPOINT", help="PyTorch checkpoint (the baseline)")
    run_cmd.add_argument("--provider", choices=("cpu", "cuda", "trt"), default="cpu", help="onnxruntime provider for --onnx")
    run_cmd.add_argument("--ov-precision", choices=("f32", "bf16"), default="f32", help="OpenVINO inference precision")
    run_cmd.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="device for --torch")
    run_cmd.add_argument("--autocast", choices=("bf16", "fp16"), help="autocast dtype for --torch")
    run_cmd.add_argument("--compile", action="store_true", help="torch.compile the --torch model")
    _add_latency(run_cmd)

    compare_cmd = sub.add_parser("compare", help="several targets in one process, interleaved; ratios to the first",
                       description="Benchmark several targets side by side (same inputs, one process, "
                                   "iterations interleaved round-robin; ratios to the first).",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="backends for BACKEND:PATH:\n" + backends_help())
    compare_cmd.add_argument("targets", nargs="+", metavar="BACKEND:PATH", help="the targets, e.g. torch:model.pt onnx:fcn8s.onnx")
    _add_latency(compare_cmd)

    formats_cmd = sub.add_parser("formats", help="export every precision this machine can run; tabulate size, mean IU, latency",
                       description="Export a checkpoint to every format this machine runs and tabulate size, "
                                   "mean IU on a labelled split and latency.")
    formats_cmd.add_argument("checkpoint", metavar="CHECKPOINT", help="PyTorch checkpoint (.pt)")
    formats_cmd.add_argument("--data", metavar="DIR", required=True, help="dataset to score every format on (mean IU)")
    add_layout(formats_cmd, help="layout of --data")
    formats_cmd.add_argument("--split", default="val", help="dataset split (default val)")
    formats_cmd.add_argument("--limit", type=int, help="evaluate on at most N images")
    formats_cmd.add_argument("--out-dir", metavar="DIR", help="keep the exported files here (default: a temp folder)")
    formats_cmd.add_argument("--seed", type=int, default=0, help="seed of the random input pixels")
    formats_cmd.add_argument("--settle-ms", type=float, default=DEFAULT_SETTLE_MS,
                   help="idle pause between formats so spinning worker threads sleep (not timed)")
    _add_common(formats_cmd, shapes="the one shape to time (default: the dataset's own size)")

    ceiling_cmd = sub.add_parser("ceiling", help="MACs and the fastest latency direct convolution allows on this CPU",
                       description="Count an ONNX model's MACs, time its conv layers alone (fp32 and int8) and print "
                                   "the fastest latency direct convolution allows on this CPU.")
    ceiling_cmd.add_argument("model", metavar="MODEL", help="ONNX model")
    ceiling_cmd.add_argument("--reference-ms", type=float, metavar="MS",
                   help="a measured latency (e.g. PyTorch eager's median) to turn the floor into the largest "
                        "possible speed-up")
    ceiling_cmd.add_argument("--iterations", type=int, help="timed iterations per layer (default 3)")
    _add_common(ceiling_cmd, shapes=f"input shape, repeatable (default {_default_shape()})", runs=False)
    return p


def single_spec(*, plan: Optional[str] = None, onnx: Optional[str] = None, openvino: Optional[str] = None,
                torch: Optional[str] = None, provider: str = "cpu", ov_precision: str = "f32", device: str = "cpu",
                autocast: Optional[str] = None, compile: bool = False) -> TargetSpec:
    """The target of ``fcn-bench run``'s flags (exactly one of plan / onnx / openvino / torch)."""
    if plan:
        return TargetSpec("tensorrt", plan, f"tensorrt:{plan}")
    if onnx:
        name = {"cpu": "onnxruntime", "cuda": "onnxruntime-cuda", "trt": "onnxruntime-tensorrt"}[provider]
        return TargetSpec(name, onnx, f"{name}:{onnx}")
    if openvino:
        name = "openvino" if ov_precision == "f32" else "openvino-bf16"
        return TargetSpec(name, openvino, f"{name}:{openvino}")
    if not torch:
        raise FcnError("give one of --plan, --onnx, --openvino, --torch")
    name = "torch"
    if device == "cuda":
        name = "torch-cuda-fp16" if autocast == "fp16" else "torch-cuda"
        if autocast == "bf16" or compile:
            raise FcnError("--device cuda supports --autocast fp16 only (no bf16/--compile variant registered)")
    elif compile:
        name = "torch-compile-bf16" if autocast == "bf16" else "torch-compile"
        if autocast == "fp16":
            raise FcnError("--compile with --autocast fp16 is not a registered variant; use bf16")
    elif autocast:
        name = f"torch-{autocast}"
    return TargetSpec(name, torch, f"{name}:{torch}")


def check_outputs(json_path: Optional[str] = None, markdown: Optional[str] = None, plot: Optional[str] = None) -> None:
    """The report files can be written (their folders exist; the plot is a .png)."""
    for opt, path in (("--json", json_path), ("--markdown", markdown), ("--plot", plot)):
        if path:
            parent = Path(path).parent
            if not parent.is_dir():
                raise FcnError(f"{opt}: folder {parent} does not exist")
    if plot and not plot.lower().endswith(".png"):
        raise FcnError(f"--plot {plot!r}: give a .png file name")


def _progress(quiet: bool):
    if quiet:
        return None
    tty = sys.stderr.isatty()

    def cb(msg: str) -> None:
        if tty:
            sys.stderr.write("\r\033[K" + msg)
            sys.stderr.flush()
        elif msg.startswith("loading") or ": warm-up 1/" in msg:
            print(msg, file=sys.stderr)

    return cb


def _iterations(iterations: Optional[int], duration: Optional[float]) -> Optional[int]:
    return None if duration is not None else (DEFAULT_ITERATIONS if iterations is None else iterations)


def _cmd_ceiling(args) -> int:
    from fcn_deploy.benchmarks import ceiling as ce

    if args.reference_ms is not None and not (math.isfinite(args.reference_ms) and args.reference_ms > 0):
        raise FcnError("--reference-ms must be a positive number of milliseconds")
    if args.iterations is not None and args.iterations < 1:
        raise FcnError("--iterations must be >= 1")
    if args.warmup < 0:
        raise FcnError("--warmup must be >= 0")
    reports = run_ceilings(args.model, tuple(args.shape or [DEFAULT_SHAPE]), threads=args.threads,
                           iterations=args.iterations or ce.DEFAULT_ITERATIONS, warmup=args.warmup,
                           reference_ms=args.reference_ms, progress=_progress(args.quiet))
    if args.json:
        import json

        atomic_write_text(args.json, json.dumps(reports, indent=2) + "\n")
        print(f"wrote {args.json}")
    if args.markdown:
        atomic_write_text(args.markdown, "\n".join(ce.render(r) for r in reports))
        print(f"wrote {args.markdown}")
    return 0


def run_ceilings(model: str, shapes: Sequence[Tuple[int, int, int, int]], *, threads: Optional[int], iterations: int,
                 warmup: int, reference_ms: Optional[float], progress=None) -> List[dict]:
    """One ceiling report per shape (printed as each finishes)."""
    from fcn_deploy.benchmarks import ceiling as ce

    reports = []
    for shape in shapes:
        r = ce.ceiling(model, shape, threads=threads, iterations=iterations, warmup=warmup,
                       reference_ms=reference_ms, progress=progress)
        if progress and sys.stderr.isatty():
            sys.stderr.write("\r\033[K")
        print(ce.render(r))
        reports.append(r)
    return reports


def _cmd_formats(args) -> int:
    import json

    from fcn_deploy.benchmarks import formats

    if args.limit is not None and args.limit < 1:
        raise FcnError(f"--limit must be >= 1, got {args.limit}")
    if not Path(args.checkpoint).is_file():
        raise FcnError(f"checkpoint not found: {args.checkpoint}")
    if Path(args.checkpoint).suffix.lower() not in (".pt", ".pth"):
        raise FcnError(f"formats takes a PyTorch checkpoint (.pt), got {args.checkpoint}")
    if args.shape and len(args.shape) > 1:
        raise FcnError("formats times one shape; give --shape once")
    config = BenchConfig(warmup=args.warmup, iterations=_iterations(args.iterations, args.duration), duration_s=args.duration,
                         threads=args.threads, seed=args.seed, prepost=False, settle_ms=args.settle_ms)
    progress = None if args.quiet else (
        lambda m: print(m, file=sys.stderr) if not m.split(": ", 1)[-1].startswith(("iteration", "warm-up")) else None)
    doc = formats.run_formats(args.checkpoint, args.data, fmt=args.layout, split=args.split, out_dir=args.out_dir, limit=args.limit,
                              shape=args.shape[0] if args.shape else None, config=config, progress=progress)
    print(formats.render_table(doc))
    if args.json:
        atomic_write_text(args.json, json.dumps(doc, indent=2) + "\n")
        print(f"wrote {args.json}")
    if args.markdown:
        atomic_write_text(args.markdown, formats.render_markdown(doc))
        print(f"wrote {args.markdown}")
    return 0 if any(r["error"] is None for r in doc["rows"]) else 1


def _cmd_latency(args) -> int:
    """``run`` (one target) and ``compare`` (several)."""
    if args.images and not Path(args.images).is_dir():
        raise FcnError(f"--images: folder not found: {args.images}")
    config = BenchConfig(
        shapes=tuple(args.shape or [DEFAULT_SHAPE]), warmup=args.warmup, iterations=_iterations(args.iterations, args.duration),
        duration_s=args.duration, threads=args.threads, seed=args.seed, images=args.images, prepost=not args.no_prepost,
        settle_ms=args.settle_ms, concurrency=args.concurrency,
    )
    compare = args.command == "compare"
    if compare:
        specs = [parse_target(t) for t in args.targets]
    else:
        specs = [single_spec(plan=args.plan, onnx=args.onnx, openvino=args.openvino, torch=args.torch, provider=args.provider,
                             ov_precision=args.ov_precision, device=args.device, autocast=args.autocast, compile=args.compile)]
        # A single model that cannot be opened is a plain CLI error (one line, exit 2).
        if not Path(specs[0].path).exists():
            raise FcnError(f"file not found: {specs[0].path}")
    return run_and_report(specs, config, compare=compare, json_path=args.json, markdown=args.markdown, plot=args.plot,
                          quiet=args.quiet)


def run_and_report(specs: Sequence[TargetSpec], config: BenchConfig, *, compare: bool, json_path: Optional[str] = None,
                   markdown: Optional[str] = None, plot: Optional[str] = None, quiet: bool = False) -> int:
    """Benchmark ``specs``, print the table and write the reports asked for; the exit status."""
    progress = _progress(quiet)
    report = run_benchmark(specs, config, progress=progress)
    if progress and sys.stderr.isatty():
        sys.stderr.write("\r\033[K")
    if not compare and report["targets"][0]["error"]:
        raise FcnError(f"{specs[0].label}: {report['targets'][0]['error']}")
    print(rep.render_text(report))
    if json_path:
        rep.write_json(report, json_path)
        print(f"wrote {json_path}")
    if markdown:
        rep.write_markdown(report, markdown)
        print(f"wrote {markdown}")
    if plot:
        print(rep.write_plot(report, plot))
    if not any(r["error"] is None for r in report["results"]):
        print("error: no target produced a measurement", file=sys.stderr)
        return 1
    return 0


def parse_args(argv):
    """fcn-bench's arguments, the old mode flags (--compare, --onnx ...) rewritten to subcommands."""
    from fcn_deploy.cli_kit import legacy_argv

    argv = legacy_argv(argv, COMMANDS, moves=_LEGACY_MOVES, selects=_LEGACY_SELECTS, nargs_plus=("--compare",))
    return _parser().parse_args(argv)


def _main(argv) -> int:
    args = parse_args(argv)
    check_outputs(args.json, args.markdown, getattr(args, "plot", None))
    return {"run": _cmd_latency, "compare": _cmd_latency, "formats": _cmd_formats, "ceiling": _cmd_ceiling}[args.command](args)


def main(argv=None) -> int:
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
