"""The pipelined stream path against a plain sequential loop, same model, backend and video.

::

    python -m fcn_deploy.benchmarks.video_bench --camvid ../shared/data/camvid --frames 80 --reps 2 \\
        --json benchmarks/results/video-resnet18-fcn8s-360x480-ort.json

1. a 360x480 H.264 video from CamVid val frames (sorted, so consecutive frames of one drive;
   synthetic moving shapes when no CamVid folder is given),
2. a ResNet-18 FCN-8s with random weights (score layers randomised too, so the masks are not
   constant and post-processing and encoding do real work) exported to ONNX,
3. ``fcn-predict``'s stream runner both ways, interleaved (sequential, pipelined, pipelined,
   sequential, ...): ``pipelined=False`` is decode -> ``Segmenter.segment`` -> visualize ->
   encode one frame at a time in one thread; ``pipelined=True`` is the threaded pipeline.
   Both write ``--visualize overlay,mask`` H.264 mp4 files, the same settings.

Reports FPS, per-stage ms per frame, the fraction of the wall time the model was running and
the process's CPU time (all threads) per frame, with the load average before and after each
run. On a shared, loaded machine a process with more runnable threads also gets a larger share
of the CPUs from the scheduler; the CPU time per frame and cores used tell that part apart.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from fcn_deploy._util import atomic_write_text, run_cli
from fcn_deploy.errors import FcnError


def make_video(out: Path, frames: int, camvid=None, hw=(360, 480), fps: int = 30) -> str:
    from fcn_deploy.image import load_image
    from fcn_deploy.video import av_module

    av = av_module()
    if camvid:
        files = sorted((Path(camvid) / "val").glob("*.png"))
        if not files:
            raise FcnError(f"{camvid}/val: no PNG frames")
        source = f"CamVid val frames from {Path(camvid).name}/val (sorted, first {min(frames, len(files))}, looped)"
        get = lambda i: load_image(files[i % len(files)])  # noqa: E731
    else:
        rng = np.random.default_rng(0)
        cols = rng.integers(0, 256, size=(6, 3))
        source = "synthetic moving shapes"

        def get(i):
            a = np.empty((*hw, 3), np.uint8)
            a[:] = cols[0]
            a[: hw[0] // 3] = cols[1]
            a[hw[0] // 2:, (5 * i) % hw[1]:] = cols[2]
            return a
    c = av.open(str(out), "w")
    s = c.add_stream("libx264", rate=fps)
    s.width, s.height, s.pix_fmt = hw[1], hw[0], "yuv420p"
    s.options = {"crf": "18", "preset": "veryfast"}
    for i in range(frames):
        img = get(i)
        if img.shape[:2] != tuple(hw):
            from fcn_deploy.image import resize_rgb

            img = resize_rgb(img, hw)
        for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
            c.mux(p)
    for p in s.encode():
        c.mux(p)
    c.close()
    return source


def make_model(out: Path, seed: int = 0) -> Path:
    import torch

    from fcn_deploy.export.onnx_export import export_onnx
    from fcn_deploy.modelinfo import ModelInfo
    from fcn_deploy.palette import CAMVID_CLASSES, CAMVID_PALETTE
    from fcn_deploy.training.models import build_model, input_convention

    torch.manual_seed(seed)
    model = build_model("fcn8s", "resnet18", len(CAMVID_CLASSES))
    for name, p in model.named_parameters():
        if name.startswith("score") and p.dim() == 4:
            torch.nn.init.normal_(p, std=0.05)  # zero-initialised score layers give a constant mask
    model.eval()
    order, scale, mean, std = input_convention("resnet18")
    info = ModelInfo(arch="fcn8s", backbone="resnet18", num_classes=len(CAMVID_CLASSES), class_names=tuple(CAMVID_CLASSES),
                     palette=tuple(CAMVID_PALETTE), channel_order=order, scale=scale, mean=mean, std=std)
    return export_onnx((model, info), out, verify=False)


def _load() -> list:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:  # pragma: no cover
        return []


def _wait_quiet(limit: float, max_s: float) -> None:
    """Before a pair of runs: wait (at most ``max_s``) until the 1-minute load average is below
    ``limit``, so that pairs land in the machine's quieter moments; the load is recorded anyway."""
    t0 = time.time()
    while time.time() - t0 < max_s:
        if os.getloadavg()[0] < limit:
            return
        time.sleep(5)
    print(f"load still {os.getloadavg()[0]:.1f} after {max_s:.0f} s; running anyway", flush=True)


def _relative_argv(argv):
    """argv without absolute paths (work folders outside the repository keep their last part)."""
    return [Path(x).name if os.path.isabs(x) else x for x in argv]


def _cpu_s() -> float:
    """User + system CPU seconds of this process, all threads (FFmpeg's and onnxruntime's too)."""
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def run(a) -> dict:
    from fcn_deploy.segmenter import Segmenter
    from fcn_deploy.stream import StreamOptions, run_stream
    from fcn_deploy.video import open_sink, open_source

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    vid = out / f"input-{a.frames}.mp4"
    src_desc = make_video(vid, a.frames, a.camvid)
    if a.model:
        onnx = Path(a.model)
        if not onnx.is_file():
            raise FcnError(f"--model: no such file: {onnx}")
    else:
        onnx = out / "resnet18-fcn8s-random.onnx"
        if not onnx.exists():
            make_model(onnx)
    seg = Segmenter.load(onnx, backend=a.backend, threads=a.threads)
    runs = []
    try:
        seg.segment(np.zeros((360, 480, 3), np.uint8))  # warm-up
        order = []
        for r in range(a.reps):
            order += [False, True] if r % 2 == 0 else [True, False]
        for i, pipelined in enumerate(order):
            if a.wait_load and i % 2 == 0:
                _wait_quiet(a.wait_load, a.wait_max)
            opts = StreamOptions(visualize=("overlay", "mask"), batch=a.batch if pipelined else 1, progress=False,
                                 pipelined=pipelined)
            src = open_source(str(vid))
            sink = open_sink(str(out / f"out-{'pipe' if pipelined else 'seq'}-{i}.mp4"), labels=False, fps=src.fps)
            load0 = _load()
            cpu0 = _cpu_s()
            rep = run_stream(seg, src, sink, opts)
            cpu = _cpu_s() - cpu0
            row = {"mode": "pipelined" if pipelined else "sequential", "run": i, "frames": rep.frames,
                   "seconds": rep.seconds, "fps": rep.fps, "model_busy": rep.model_busy, "stage_ms": rep.stage_ms,
                   "cpu_s": cpu, "cpu_ms_per_frame": 1e3 * cpu / max(rep.frames, 1), "cpu_cores_used": cpu / rep.seconds,
                   "batch": opts.batch, "load_before": load0, "load_after": _load(), "problems": rep.problems}
            runs.append(row)
            print(f"run {i}: {row['mode']:<10} {rep.summary()}; process CPU {row['cpu_ms_per_frame']:.0f} ms/frame, "
                  f"{row['cpu_cores_used']:.2f} cores; load {load0} -> {row['load_after']}", flush=True)
    finally:
        seg.close()
    seq = [r["fps"] for r in runs if r["mode"] == "sequential"]
    pipe = [r["fps"] for r in runs if r["mode"] == "pipelined"]
    res = {
        "schema": "fcn-video-bench/1",
        "created_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": "python -m fcn_deploy.benchmarks.video_bench " + " ".join(_relative_argv(sys.argv[1:])),
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "python": platform.python_version()},
        "video": {"source": src_desc, "frames": a.frames, "size": [360, 480], "codec_in": "libx264 crf 18",
                  "out": "overlay,mask side by side, libx264 crf 20 veryfast"},
        "model": onnx.name if a.model else "ResNet-18 FCN-8s, random weights, fp32 ONNX", "backend": seg.backend, "device": seg.device,
        "threads": a.threads, "wait_load": a.wait_load, "runs": runs,
        "sequential_fps_mean": float(np.mean(seq)), "pipelined_fps_mean": float(np.mean(pipe)),
        "speedup": float(np.mean(pipe) / np.mean(seq)),
        "pair_speedups": [p / s for p, s in zip(pipe, seq)],
        "load_avg_start": runs[0]["load_before"], "load_avg_end": runs[-1]["load_after"],
    }
    print(f"pipelined {res['pipelined_fps_mean']:.2f} FPS vs sequential {res['sequential_fps_mean']:.2f} FPS: "
          f"{res['speedup']:.2f}x (pairs: {', '.join(f'{x:.2f}' for x in res['pair_speedups'])})")
    return res


def _parser():
    from fcn_deploy.cli_kit import add_backend, add_threads, cli_parser

    p = cli_parser(prog="python -m fcn_deploy.benchmarks.video_bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--camvid", help="CamVid root (val/ frames make the video); default: synthetic frames")
    p.add_argument("--frames", type=int, default=80)
    p.add_argument("--reps", type=int, default=2, help="pairs of runs (each pair: both modes, order alternating)")
    p.add_argument("--batch", type=int, default=1, help="batch of the pipelined runs")
    p.add_argument("--model", help="an exported .onnx to use instead of the random ResNet-18 FCN-8s")
    add_backend(p, default="onnxruntime", auto=False)
    add_threads(p, default=2)
    p.add_argument("--out", default="video_bench_out", help="work folder (video, model, outputs)")
    p.add_argument("--json", help="write the results here")
    p.add_argument("--wait-load", type=float, default=None, metavar="L",
                   help="before each pair, wait until the 1-minute load average is below L")
    p.add_argument("--wait-max", type=float, default=300.0, metavar="S", help="wait at most S seconds per pair (default 300)")
    return p


def _main(argv) -> int:
    a = _parser().parse_args(argv)
    if a.frames < 2 or a.reps < 1:
        raise FcnError("--frames >= 2 and --reps >= 1")
    if a.camvid and not Path(a.camvid).is_dir():
        raise FcnError(f"--camvid: folder not found: {a.camvid}")
    t0 = time.perf_counter()
    res = run(a)
    if a.json:
        atomic_write_text(a.json, json.dumps(res, indent=2) + "\n")
        print(f"wrote {a.json}")
    print(f"finished in {time.perf_counter() - t0:.0f} s")
    return 0


def main(argv=None) -> int:
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
