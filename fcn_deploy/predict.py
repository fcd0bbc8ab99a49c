"""``fcn-predict``: label maps (and overlays) for images and folders of images.

::

    fcn-predict --model fcn8s.onnx street.jpg more_images/ --out preds/ [--overlay] [--alpha 0.5]
                [--labels-only] [--backend NAME] [--resize fit]

``--backend``: ``auto`` or a name of the runtime's backend registry (``fcn_deploy.backends``;
``fcn-predict --help`` lists them), so any model file a backend runs can be given.

For every input image ``X.ext`` it writes ``OUT/X.png``: a palette PNG whose pixel values are
the class ids (viewable in any image viewer thanks to the palette). With ``--overlay`` also
``OUT/X_overlay.png`` (the colorized mask over the image, ``--alpha`` = mask weight).
``--labels-only`` writes the class ids as plain 8-bit grey PNGs without a palette (for tools
such as OpenCV that expand palettes into colours). Images found in a folder keep their
sub-folder path under ``OUT``. Every file is written atomically. Two inputs that would write
the same output file (``a.png`` and ``a.jpg``; with ``--overlay`` also ``a.png`` and
``a_overlay.png``) are refused before anything is written: nothing is overwritten silently.
``OUT`` is created only once the model has loaded.

An image that cannot be read, segmented or written (bad file, full disk...) is reported and
skipped; the others are processed.

Streams (one video file, URL, camera or image sequence as INPUT, a video or ``%d`` pattern as
``--out``, or any of ``--visualize --ignore-class --max-frames --stats --batch --codec --crf --fps
--sequential``) go to :mod:`fcn_deploy.stream` (pipelined decode / inference / encode)::

    fcn-predict --model fcn8s.onnx drive.mp4 --out drive_seg.mp4 [--visualize overlay,mask]
Exit status: 0 all written, 1 some images failed, 2 usage or model errors.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import List, Tuple

from fcn_deploy._util import run_cli
from fcn_deploy.errors import FcnError
from fcn_deploy.image import IMAGE_EXTENSIONS

log = logging.getLogger(__name__)


def _parser() -> argparse.ArgumentParser:
    from fcn_deploy.cli_kit import add_backend, add_threads, cli_parser

    from fcn_deploy.backends import model_file_types

    p = cli_parser(prog="fcn-predict", description=f"Segment images with an FCN model ({model_file_types()}).")
    p.add_argument("--model", required=True, help="model file: .onnx (onnxruntime/OpenVINO) or .plan (TensorRT, with its .plan.json)")
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="image files and/or folders (searched recursively); or one video file, URL, camera or image sequence")
    p.add_argument("--out", required=True, help="output folder (created if missing); for streams also a video file or a pattern")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--overlay", action="store_true", help="also write NAME_overlay.png (mask blended over the image)")
    g.add_argument("--labels-only", action="store_true", help="write plain grey class-id PNGs without a palette")
    p.add_argument("--alpha", type=float, default=0.5, help="overlay mask weight in [0, 1] (default 0.5)")
    add_backend(p)
    p.add_argument("--resize", choices=["fit"], default=None,
                   help="fit: scale images outside the model's accepted sizes into them (and labels back)")
    add_threads(p, help="CPU threads for onnxruntime/OpenVINO")
    p.add_argument("--mode", choices=("auto", "latency", "throughput"), default="auto",
                   help="auto (default): throughput for several images, latency for one; throughput: one "
                   "request per CPU core in flight (OpenVINO THROUGHPUT hint, onnxruntime 1 thread per request)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--server", metavar="http://HOST:PORT", default=None,
                   help="segment on a Triton / fcn-serve kserve server (V2 protocol); --model is then the model's name there")
    from fcn_deploy.stream import add_stream_arguments  # video / camera / sequence options

    add_stream_arguments(p)
    return p


def output_names(stem: Path, *, overlay: bool = False) -> List[Path]:
    """The files (relative to OUT) written for an image with output stem ``stem``."""
    return [Path(f"{stem}.png")] + ([Path(f"{stem}_overlay.png")] if overlay else [])


def collect_inputs(inputs: List[str], *, overlay: bool = False) -> List[Tuple[Path, Path]]:
    """(image path, output stem relative to OUT) for every input; folders are searched
    recursively for image extensions. Missing paths are usage errors, and so are two images
    that would write the same output file (``a.png``/``a.jpg``, or with ``overlay`` ``a.png``
    and ``a_overlay.png``, whose overlay and label map are both ``a_overlay.png``): nothing is
    ever overwritten silently."""
    out: List[Tuple[Path, Path]] = []
    for raw in inputs:
        p = Path(raw)
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS)
            if not found:
                log.warning("%s: no images (%s) in this folder", p, " ".join(IMAGE_EXTENSIONS))
            out.extend((f, f.relative_to(p).with_suffix("")) for f in found)
        elif p.exists():
            out.append((p, Path(p.stem)))
        else:
            raise FcnError(f"{p}: no such file or folder")
    seen = {}
    owner = {}  # output file -> the image that writes it
    unique = []
    for src, stem in out:
        if stem in seen and seen[stem].resolve() == src.resolve():
            continue  # the same file named twice
        names = output_names(stem, overlay=overlay)
        for name in names:
            if name in owner:
                raise FcnError(f"{owner[name]} and {src} would both write {name}; "
                               "rename one or pass them in separate runs with different --out folders")
        for name in names:
            owner[name] = src
        seen[stem] = src
        unique.append((src, stem))
    return unique


def _first_existing(p: Path) -> Path:
    for q in [p, *p.parents]:
        if q.exists():
            return q
    return Path(".")


def _reason(e: OSError) -> str:
    return f"{e.strerror or type(e).__name__}" + (f": {e.filename}" if e.filename else "")


def _throughput_setup(args, n_images: int, options: dict) -> int:
    """How many images run at once, adding the backend's throughput options to ``options``:
    with several images (``--mode auto``) or ``--mode throughput``, one request per CPU core is
    kept in flight: OpenVINO compiles with its THROUGHPUT hint (one stream per core), onnxruntime
    runs each request on one thread (unless --threads says otherwise). A single image, ``--mode
    latency`` or a TensorRT plan: one at a time, all threads on it."""
    import os

    from fcn_deploy import backends

    if args.mode == "latency" or (args.mode == "auto" and n_images < 2):
        return 1
    cores = os.cpu_count() or 1
    name = backends.choose_backend(args.model, args.backend, options=tuple(options), log_hint=False)
    if name == "openvino":
        options["performance"] = "throughput"
    elif name == "onnxruntime":
        options.setdefault("threads", 1)
    else:
        return 1
    workers = max(1, min(cores, n_images))
    log.info("throughput mode: %d images in flight (%s%s)", workers, name,
             ", THROUGHPUT hint" if name == "openvino" else f", {options['threads']} thread(s) per image")
    return workers


def _main(argv=None) -> int:
    args = _parser().parse_args(argv)
    from fcn_deploy import stream  # video files, URLs, cameras, image sequences: fcn_deploy/stream.py

    if stream.wants_stream(args):
        if args.server:
            raise FcnError("--server segments image files and folders; video, camera and sequence inputs run on a local --model")
        return stream.predict_stream(args)
    if not 0.0 <= args.alpha <= 1.0:
        raise FcnError(f"--alpha must be within [0, 1], got {args.alpha}")
    items = collect_inputs(args.inputs, overlay=args.overlay)
    if not items:
        raise FcnError("no images found in the given inputs")
    out_dir = Path(args.out)
    if out_dir.exists() and not out_dir.is_dir():
        raise FcnError(f"--out {out_dir} exists and is not a folder")
    base = _first_existing(out_dir)
    if not base.is_dir():
        raise FcnError(f"cannot create --out {out_dir}: {base} is not a folder")

    from fcn_deploy.segmenter import Segmenter

    options = {}
    if args.threads is not None:
        options["threads"] = args.threads
    if args.server:  # serving: fcn_deploy/serve/client.py (pip install "fcn-deploy[serve]")
        from fcn_deploy.serve.client import connect

        if args.backend != "auto" or args.threads is not None:
            raise FcnError("--backend and --threads pick a local backend; with --server the server runs the model")
        workers = 1  # the server batches and schedules; one request at a time from here
        seg = connect(args.server, args.model)
    else:
        workers = _throughput_setup(args, len(items), options)
        seg = Segmenter.load(args.model, backend=args.backend, **options)
    # Created only now, so that a bad --model leaves no empty folder behind.
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        seg.close()
        raise FcnError(f"cannot create --out {out_dir}: {e.strerror or type(e).__name__}") from None
    print(f"{args.model}: {seg.info.arch}/{seg.info.backbone}, {seg.num_classes} classes, {seg.backend} on {seg.device}")

    try:
        from tqdm import tqdm
    except ImportError:  # tqdm is optional at runtime
        tqdm = None
    bar = tqdm(total=len(items), unit="img", disable=None if not args.no_progress else True) if tqdm else None
    failed = []
    written = 0
    infer_ms = overhead_ms = 0.0

    def one(item):
        src, stem = item
        try:
            res = seg.segment(src, resize=args.resize)
            dest = out_dir / stem.parent
            dest.mkdir(parents=True, exist_ok=True)
            res.save_labels(out_dir / f"{stem}.png", with_palette=not args.labels_only)
            if args.overlay:
                res.save_overlay(out_dir / f"{stem}_overlay.png", alpha=args.alpha)
            return src, None, seg.last_timing  # last_timing is per thread
        except (FcnError, OSError) as e:  # OSError: e.g. disk full, a file where a sub-folder goes
            msg = _reason(e) if isinstance(e, OSError) else str(e)
            return src, msg if msg.startswith(str(src)) else f"{src}: {msg}", None

    try:
        if workers > 1:
            from concurrent.futures import ThreadPoolExecutor

            pool = ThreadPoolExecutor(max_workers=workers)
            results = pool.map(one, items)
        else:
            pool, results = None, map(one, items)
        try:
            for src, msg, t in results:
                if bar is not None:
                    bar.update(1)
                if msg is not None:
                    failed.append(src)
                    log.error("skipped %s", msg)
                    continue
                written += 1
                if t is not None:
                    infer_ms += t.infer_ms
                    overhead_ms += t.overhead_ms
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
            if bar is not None:
                bar.close()
    finally:
        seg.close()
    print(f"wrote {written} label map(s){' and overlays' if args.overlay else ''} to {out_dir}"
          + (f"; inference {infer_ms / max(written, 1):.1f} ms/img, pre+post {overhead_ms / max(written, 1):.1f} ms/img" if written else ""))
    if failed:
        print(f"{len(failed)} of {len(items)} image(s) failed: {', '.join(str(f) for f in failed)}", file=sys.stderr)
        return 1
    return 0


def main(argv=None) -> int:
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
