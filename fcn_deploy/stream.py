"""Segment a stream of frames with the decode / pre-process / inference / post-process / encode
stages overlapping: one thread per stage, joined by small bounded queues.

::

    from fcn_deploy import load
    from fcn_deploy.stream import StreamOptions, run_stream
    from fcn_deploy.video import open_sink, open_source

    seg = load("fcn8s.onnx")
    src = open_source("drive.mp4")
    sink = open_sink("drive_seg.mp4", labels=False, fps=src.fps)
    report = run_stream(seg, src, sink, StreamOptions(visualize=("overlay", "mask"), batch=2))
    print(report.summary())

Why threads help: the backend's inference (onnxruntime, OpenVINO, TensorRT) runs with the GIL
released, and so do FFmpeg's decode and encode and most numpy work, so while the model runs on
frame *n*, frame *n+1* is pre-processed and frame *n-1* is post-processed and encoded. Each
stage is one thread and the queues are FIFO, so frames come out in input order.
``pipelined=False`` runs the same stages one frame at a time in the calling thread (the plain
loop the pipeline is measured against).

Frames are batched (``batch``) when consecutive frames run at the same size and the model's
profile allows that batch; the batch is cut short at the end of the stream or a size change.

Damage: a source records what went wrong (a corrupt packet is skipped, a dropped connection or
a truncated file ends the stream) and the frames before it are kept; the sink is closed
properly in every case (a video file is flushed and moved into place, so it plays).
:attr:`StreamReport.lost` says whether frames were lost (fcn-predict's exit 1).
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from fcn_deploy._util import atomic_write_text
from fcn_deploy.errors import FcnError

log = logging.getLogger(__name__)

VISUALIZE_MODES = ("overlay", "mask", "image", "labels")
STAGES = ("decode", "preprocess", "infer", "postprocess", "encode")
STATS_SCHEMA = "fcn-predict-stream-stats/1"
_END = object()


@dataclass(frozen=True)
class StreamOptions:
    """``visualize``: panels side by side, left to right, from overlay / mask / image, or
    ("labels",) alone (class ids, for PNG outputs). ``ignore``: class ids left uncoloured
    (the image shows through the overlay; black in the mask). ``max_frames``: stop after that
    many. ``batch``: frames per model run. ``queue``: depth of each inter-stage queue."""

    visualize: Tuple[str, ...] = ("overlay", "mask")
    alpha: float = 0.5
    ignore: Tuple[int, ...] = ()
    max_frames: Optional[int] = None
    batch: int = 1
    resize: Optional[str] = None
    queue: int = 4
    progress: bool = True
    pipelined: bool = True


def parse_visualize(text: str) -> Tuple[str, ...]:
    modes = tuple(m.strip().lower() for m in str(text).split(",") if m.strip())
    bad = [m for m in modes if m not in VISUALIZE_MODES]
    if not modes or bad:
        raise FcnError(f"--visualize {text!r}: use a comma list of overlay, mask, image (e.g. overlay,mask), or labels")
    if "labels" in modes and len(modes) > 1:
        raise FcnError("--visualize labels (class ids) cannot be combined with other panels")
    return modes


def resolve_classes(names: Sequence[str], class_names: Sequence[str]) -> Tuple[int, ...]:
    """Class names (or ids) -> ids; an unknown name is an error listing the model's classes."""
    out = []
    lower = {n.lower(): i for i, n in enumerate(class_names)}
    for raw in names:
        for name in (x.strip() for x in str(raw).split(",") if x.strip()):
            if name.lower() in lower:
                out.append(lower[name.lower()])
            elif name.isdigit() and int(name) < len(class_names):
                out.append(int(name))
            else:
                raise FcnError(f"--ignore-class {name!r}: the model's classes are {', '.join(class_names)}")
    return tuple(sorted(set(out)))


class Visualizer:
    """Label maps -> the output frame (panels side by side), palette and ignore handled by LUTs."""

    def __init__(self, info, opts: StreamOptions):
        if not 0.0 <= float(opts.alpha) <= 1.0:
            raise FcnError(f"--alpha must be within [0, 1], got {opts.alpha}")
        n = info.num_classes
        pal = np.zeros((max(n, 1), 3), dtype=np.uint8)
        given = np.asarray(info.palette, dtype=np.uint8).reshape(-1, 3)[:n]
        pal[: len(given)] = given
        self.colors = pal.copy()
        a = np.full((max(n, 1),), float(opts.alpha), dtype=np.float32)
        for i in opts.ignore:
            self.colors[i] = 0
            a[i] = 0.0
        self.alpha = a
        self.modes = opts.visualize
        self.labels_only = self.modes == ("labels",)

    def __call__(self, image: np.ndarray, labels: np.ndarray) -> np.ndarray:
        if self.labels_only:
            return labels
        panels = []
        for m in self.modes:
            if m == "image":
                panels.append(image)
            elif m == "mask":
                panels.append(self.colors[labels])
            else:
                a = self.alpha[labels][..., None]
                blend = image.astype(np.float32) * (1.0 - a) + self.colors[labels].astype(np.float32) * a
                panels.append(np.clip(blend + 0.5, 0, 255).astype(np.uint8))
        return panels[0] if len(panels) == 1 else np.concatenate(panels, axis=1)


@dataclass
class StreamReport:
    """What a run did. ``stage_ms``: busy time per frame of each stage (pre-process and
    inference are per batch / batch size); ``model_busy``: fraction of the wall time the
    model was running; ``lost``: frames were lost (corrupt, truncated, dropped, or a failure
    mid-stream)."""

    frames: int = 0
    seconds: float = 0.0
    stage_s: Dict[str, float] = field(default_factory=lambda: {s: 0.0 for s in STAGES})
    batches: int = 0
    class_pixels: Optional[np.ndarray] = None
    frames_with_class: Optional[np.ndarray] = None
    problems: List[str] = field(default_factory=list)
    lost: bool = False
    error: Optional[str] = None
    interrupted: bool = False
    stopped_at_max: bool = False
    pipelined: bool = True

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    @property
    def model_busy(self) -> float:
        return self.stage_s["infer"] / self.seconds if self.seconds > 0 else 0.0

    @property
    def stage_ms(self) -> Dict[str, float]:
        n = max(self.frames, 1)
        return {s: 1e3 * v / n for s, v in self.stage_s.items()}

    @property
    def status(self) -> str:
        if self.error:
            return "failed"
        if self.interrupted:
            return "interrupted"
        if self.lost:
            return "incomplete"
        return "complete"

    def summary(self) -> str:
        ms = self.stage_ms
        return (f"{self.frames} frames in {self.seconds:.1f} s: {self.fps:.2f} FPS mean "
                f"({'pipelined' if self.pipelined else 'sequential'}); per frame "
                + ", ".join(f"{s} {ms[s]:.1f} ms" for s in STAGES)
                + f"; model busy {100 * self.model_busy:.0f}% of the time")

    def stats(self, class_names, *, ignore=(), extra: Optional[dict] = None) -> dict:
        px = self.class_pixels if self.class_pixels is not None else np.zeros(len(class_names), np.int64)
        fw = self.frames_with_class if self.frames_with_class is not None else np.zeros(len(class_names), np.int64)
        total = int(px.sum())
        d = {
            "schema": STATS_SCHEMA,
            "status": self.status,
            "frames": self.frames,
            "pixels": total,
            "classes": [{"id": i, "name": n, "pixels": int(px[i]), "share": (int(px[i]) / total) if total else 0.0,
                         "frames_present": int(fw[i])} for i, n in enumerate(class_names)],
            "pixel_share": {n: (int(px[i]) / total) if total else 0.0 for i, n in enumerate(class_names)},
            "ignored_classes": [class_names[i] for i in ignore],
            "seconds": self.seconds, "fps": self.fps, "model_busy": self.model_busy,
            "stage_ms": self.stage_ms, "batches": self.batches, "pipelined": self.pipelined,
            "problems": list(self.problems), "error": self.error,
        }
        d.update(extra or {})
        return d


def write_stats(path, report: StreamReport, class_names, *, ignore=(), extra=None) -> None:
    atomic_write_text(path, json.dumps(report.stats(class_names, ignore=ignore, extra=extra), indent=2) + "\n")


def _progress(total, enabled: bool):
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, unit="frame", disable=None, smoothing=0.1)


class _Stop(Exception):
    pass


def run_stream(seg, source, sink, opts: StreamOptions = StreamOptions()) -> StreamReport:
    """Segment every frame of ``source`` into ``sink``; never raises for stream damage or a
    failing stage after the first frame: it is in the report (``error``, ``problems``) and
    the sink is closed with the frames done so far. Raises FcnError when nothing was done."""
    if opts.batch < 1:
        raise FcnError(f"--batch must be >= 1, got {opts.batch}")
    if opts.batch > seg.profile.max_batch:
        raise FcnError(f"--batch {opts.batch}: the model accepts batches of {seg.profile.min[0]}..{seg.profile.max[0]}"
                       + (" (a static batch; re-export with a dynamic batch)" if seg.profile.max[0] == 1 else ""))
    if opts.max_frames is not None and opts.max_frames < 1:
        raise FcnError(f"--max-frames must be >= 1, got {opts.max_frames}")
    vis = Visualizer(seg.info, opts)
    rep = StreamReport(pipelined=opts.pipelined)
    n = seg.info.num_classes
    rep.class_pixels = np.zeros(n, np.int64)
    rep.frames_with_class = np.zeros(n, np.int64)
    total = source.total
    if opts.max_frames is not None:
        total = min(total, opts.max_frames) if total is not None else opts.max_frames
    bar = _progress(total, opts.progress)
    t0 = time.perf_counter()
    try:
        if opts.pipelined:
            _pipelined(seg, source, sink, opts, vis, rep, bar)
        else:
            _sequential(seg, source, sink, opts, vis, rep, bar)
    except KeyboardInterrupt:
        rep.interrupted = True
    finally:
        rep.seconds = time.perf_counter() - t0
        if bar is not None:
            bar.close()
        rep.problems = list(source.problems) + rep.problems
        rep.lost = rep.lost or source.lost
        try:
            source.close()
        finally:
            if rep.frames == 0 and not rep.interrupted:
                sink.abort()
            else:
                sink.close()
    if rep.frames == 0 and rep.error:
        raise FcnError(rep.error)
    if rep.frames == 0 and not rep.interrupted and not rep.problems:
        raise FcnError(f"{source.description}: no frames")
    if rep.frames == 0 and rep.problems and not rep.interrupted:
        raise FcnError(rep.problems[-1])
    return rep


def _count(rep: StreamReport, labels: np.ndarray) -> None:
    c = np.bincount(labels.ravel().astype(np.int64), minlength=len(rep.class_pixels))
    rep.class_pixels += c[: len(rep.class_pixels)]
    rep.frames_with_class += c[: len(rep.class_pixels)] > 0


def _frames(source, opts):
    """(index, name, rgb) from the source, stopping before frame ``max_frames`` is read."""
    it = source.frames()
    k = 0
    try:
        while opts.max_frames is None or k < opts.max_frames:
            try:
                name, rgb = next(it)
            except StopIteration:
                return
            yield k, name, rgb
            k += 1
    finally:
        it.close()


def _sequential(seg, source, sink, opts, vis, rep, bar) -> None:
    """The plain loop: decode, segment, visualize, encode, one frame at a time."""
    it = _frames(source, opts)
    while True:
        t = time.perf_counter()
        try:
            k, name, rgb = next(it)
        except StopIteration:
            rep.stage_s["decode"] += time.perf_counter() - t
            break
        t1 = time.perf_counter()
        rep.stage_s["decode"] += t1 - t
        try:
            res = seg.segment(rgb, resize=opts.resize)
        except FcnError as e:
            rep.error = f"frame {k}: {e}"
            rep.lost = True
            return
        tm = seg.last_timing
        rep.stage_s["preprocess"] += tm.preprocess_ms / 1e3
        rep.stage_s["infer"] += tm.infer_ms / 1e3
        t2 = time.perf_counter()
        out = vis(rgb, res.labels)
        _count(rep, res.labels)
        t3 = time.perf_counter()
        rep.stage_s["postprocess"] += tm.postprocess_ms / 1e3 + (t3 - t2)
        try:
            sink.write(k, name, out)
        except FcnError as e:
            rep.error = str(e)
            rep.lost = True
            return
        rep.stage_s["encode"] += time.perf_counter() - t3
        rep.batches += 1
        rep.frames += 1
        if bar is not None:
            bar.update(1)
    if opts.max_frames is not None and rep.frames >= opts.max_frames:
        rep.stopped_at_max = True


class _Failure:
    def __init__(self, msg: str):
        self.msg = msg


def _pipelined(seg, source, sink, opts, vis, rep, bar) -> None:
    stop = threading.Event()
    depth = max(1, int(opts.queue))
    q_dec: "queue.Queue" = queue.Queue(maxsize=depth * opts.batch)
    q_pre: "queue.Queue" = queue.Queue(maxsize=depth)
    q_inf: "queue.Queue" = queue.Queue(maxsize=depth)
    q_post: "queue.Queue" = queue.Queue(maxsize=depth * opts.batch)
    busy = rep.stage_s

    def put(q, item):
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return
            except queue.Full:
                continue
        raise _Stop

    def get(q):
        while True:
            try:
                return q.get(timeout=0.1)
            except queue.Empty:
                if stop.is_set():
                    raise _Stop from None

    def stage(fn, name):
        def body():
            try:
                fn()
            except _Stop:
                pass
            except FcnError as e:
                _fail(name, str(e))
            except Exception as e:  # a bug or a library failure: keep what was done, say what happened
                log.debug("stage %s failed", name, exc_info=True)
                _fail(name, f"{type(e).__name__}: {e}")
        return threading.Thread(target=body, name=f"fcn-{name}", daemon=True)

    fail_q = {"decode": q_dec, "preprocess": q_pre, "infer": q_inf, "postprocess": q_post}

    def _fail(name, msg):
        try:
            put(fail_q[name], _Failure(msg))
        except _Stop:
            pass

    def decode():
        it = _frames(source, opts)
        while True:
            t = time.perf_counter()
            try:
                item = next(it)
            except StopIteration:
                busy["decode"] += time.perf_counter() - t
                break
            busy["decode"] += time.perf_counter() - t
            put(q_dec, item)
        put(q_dec, _END)

    def preprocess():
        pending: List[tuple] = []
        pending_hw = None

        def flush():
            nonlocal pending, pending_hw
            if pending:
                t = time.perf_counter()
                x = seg.preprocess([p[2] for p in pending], pending_hw)
                busy["preprocess"] += time.perf_counter() - t
                put(q_pre, (pending, pending_hw, x))
            pending, pending_hw = [], None

        while True:
            item = get(q_dec)
            if item is _END or isinstance(item, _Failure):
                flush()
                put(q_pre, item)
                return
            k, name, rgb = item
            try:
                hw = seg.run_size(rgb.shape[0], rgb.shape[1], resize=opts.resize)
            except FcnError as e:
                flush()
                raise FcnError(f"frame {k}: {e}") from None
            if pending and hw != pending_hw:
                flush()
            pending.append(item)
            pending_hw = hw
            if len(pending) >= opts.batch:
                flush()

    def infer():
        while True:
            item = get(q_pre)
            if item is _END or isinstance(item, _Failure):
                put(q_inf, item)
                return
            group, hw, x = item
            t = time.perf_counter()
            try:
                y, _ = seg.infer(x)
            except FcnError as e:
                raise FcnError(f"frame {group[0][0]}: {e}") from None
            busy["infer"] += time.perf_counter() - t
            rep.batches += 1
            put(q_inf, (group, hw, y))

    def postprocess():
        while True:
            item = get(q_inf)
            if item is _END or isinstance(item, _Failure):
                put(q_post, item)
                return
            group, hw, y = item
            for j, (k, name, rgb) in enumerate(group):
                t = time.perf_counter()
                res = seg.postprocess(y, j, hw, rgb)
                out = vis(rgb, res.labels)
                _count(rep, res.labels)
                busy["postprocess"] += time.perf_counter() - t
                put(q_post, (k, name, out))

    t_start = time.perf_counter()
    threads = [stage(decode, "decode"), stage(preprocess, "preprocess"), stage(infer, "infer"),
               stage(postprocess, "postprocess")]
    for th in threads:
        th.start()
    expect = 0
    try:
        while True:
            item = get(q_post)
            if item is _END:
                break
            if isinstance(item, _Failure):
                rep.error = item.msg
                rep.lost = True
                break
            k, name, out = item
            if k != expect:  # cannot happen with FIFO stages; a guard, not a reorder buffer
                raise RuntimeError(f"frame {k} arrived, expected {expect}")
            t = time.perf_counter()
            try:
                sink.write(k, name, out)
            except FcnError as e:
                rep.error = str(e)
                rep.lost = True
                break
            busy["encode"] += time.perf_counter() - t
            expect += 1
            rep.frames += 1
            if bar is not None:
                bar.update(1)
                if rep.frames % 10 == 0:
                    bar.set_postfix_str(f"model busy {100 * busy['infer'] / max(1e-9, time.perf_counter() - t_start):.0f}%")
    finally:
        stop.set()
        for th in threads:
            th.join(timeout=30)
    if opts.max_frames is not None and rep.frames >= opts.max_frames:
        rep.stopped_at_max = True


# ------------------------------------------------------------------------------------------------
# fcn-predict's stream mode
# ------------------------------------------------------------------------------------------------

STREAM_OPTIONS = ("visualize", "ignore_class", "max_frames", "stats", "batch", "codec", "crf", "fps", "sequential")


def add_stream_arguments(p) -> None:
    """fcn-predict's stream options (video files, URLs, cameras, image sequences)."""
    g = p.add_argument_group("streams (a video file, URL, camera or image sequence as INPUT, or a video as --out)")
    g.add_argument("--visualize", default=None, metavar="MODES",
                   help="comma list of overlay, mask, image, side by side in the order given (default overlay,mask); or labels (class-id PNGs)")
    g.add_argument("--ignore-class", action="append", default=[], metavar="NAME",
                   help="class left uncoloured in overlay and mask (repeatable, or a comma list)")
    g.add_argument("--max-frames", type=int, default=None, metavar="N", help="stop after N frames")
    g.add_argument("--stats", default=None, metavar="FILE.json", help="per-class pixel share over the stream, as JSON")
    g.add_argument("--batch", type=int, default=None, metavar="N", help="frames per model run (default 1; the model's profile must allow it)")
    g.add_argument("--codec", default=None, help="video encoder (default: libx264 for mp4/mkv/mov/avi, libvpx-vp9 for webm; ffv1 is lossless)")
    g.add_argument("--crf", type=int, default=None, help="encoder quality (x264: 0 best .. 51 worst; default 20)")
    g.add_argument("--fps", type=float, default=None, help="output frame rate (default: the input's, else 30)")
    g.add_argument("--timeout", type=float, default=10.0, help="seconds to wait when opening or reading a network stream (default 10)")
    g.add_argument("--sequential", action="store_true", help="no pipelining: one frame at a time through every stage (for comparison)")


def wants_stream(args) -> bool:
    """Stream mode: one INPUT that only a stream run can read, a video/pattern --out, or a
    stream-only option."""
    from fcn_deploy import video

    if len(args.inputs) == 1 and video.is_stream_name(args.inputs[0]):
        return True
    try:
        if video.output_kind(args.out) in ("video", "pattern"):
            return True
    except FcnError:
        return True  # let the stream path say what is wrong with --out
    return any(bool(getattr(args, k, None)) for k in STREAM_OPTIONS)


def predict_stream(args) -> int:
    """fcn-predict INPUT --out OUTPUT for streams. Exit 0: every frame written (or the
    --max-frames asked for, or a live stream that ended); 1: frames were lost (corrupt,
    truncated, dropped, a failure mid-stream; the frames before are kept); 2: nothing done."""
    from fcn_deploy import video

    if len(args.inputs) != 1:
        raise FcnError(f"a stream run takes one INPUT (a video, URL, camera, pattern or folder), got {len(args.inputs)}")
    if args.overlay or args.labels_only:
        raise FcnError("--overlay / --labels-only are for image folders; for streams use --visualize overlay|mask|overlay,mask|labels")
    if not 0.0 <= args.alpha <= 1.0:
        raise FcnError(f"--alpha must be within [0, 1], got {args.alpha}")
    modes = parse_visualize(args.visualize or "overlay,mask")
    if args.stats:
        from fcn_deploy._util import check_writable

        try:
            check_writable(args.stats)  # before hours of video, not after
        except FcnError as e:
            raise FcnError(f"--stats: {e}") from None
    if args.max_frames is not None and args.max_frames < 1:
        raise FcnError(f"--max-frames must be >= 1, got {args.max_frames}")
    if args.batch is not None and args.batch < 1:
        raise FcnError(f"--batch must be >= 1, got {args.batch}")
    if args.fps is not None and not args.fps > 0:
        raise FcnError(f"--fps must be > 0, got {args.fps}")
    out_kind = video.output_kind(args.out)
    if out_kind == "video":
        video.av_module()  # the missing-PyAV line before the model loads
        video.pick_codec(__import__("pathlib").Path(args.out).suffix.lower(), args.codec)

    from fcn_deploy.segmenter import Segmenter

    options = {} if args.threads is None else {"threads": args.threads}
    seg = Segmenter.load(args.model, backend=args.backend, **options)
    try:
        ignore = resolve_classes(args.ignore_class, seg.info.class_names)
        opts = StreamOptions(visualize=modes, alpha=args.alpha, ignore=ignore, max_frames=args.max_frames,
                             batch=1 if args.batch is None else args.batch, resize=args.resize, progress=not args.no_progress,
                             pipelined=not args.sequential)
        source = video.open_source(args.inputs[0], timeout=args.timeout)
        try:
            from fractions import Fraction

            fps = Fraction(args.fps).limit_denominator(1001) if args.fps else source.fps
            sink = video.open_sink(args.out, labels=modes == ("labels",), palette=seg.info.palette, fps=fps,
                                   codec=args.codec, crf=args.crf)
        except BaseException:
            source.close()
            raise
        print(f"{args.model}: {seg.info.arch}/{seg.info.backbone}, {seg.num_classes} classes, {seg.backend} on {seg.device}; "
              f"{source.description} -> {sink.description}" + (f" ({sink.codec})" if sink.codec else ""))
        rep = run_stream(seg, source, sink, opts)
    finally:
        seg.close()
    for p in rep.problems:
        log.warning("%s", p)
    if rep.error:
        log.error("stopped at frame %d: %s", rep.frames, rep.error)
    if args.stats:
        write_stats(args.stats, rep, seg.info.class_names, ignore=ignore,
                    extra={"input": args.inputs[0], "output": args.out, "model": args.model})
    print(f"wrote {rep.frames} frame(s) to {args.out}" + (" (interrupted)" if rep.interrupted else "") + f"; {rep.summary()}")
    if rep.interrupted:
        return 130
    return 1 if rep.lost else 0
