"""``fcn-eval``: score a model on a labelled split with the FCN paper's four metrics.

::

    fcn-eval --model fcn8s.onnx --data ../shared/data/camvid --format camvid --split val \\
             --reference model.pt --json eval.json --confusion confusion.png

Labels are read with fcn-train's own dataset readers (:mod:`fcn_deploy.datasets`, torch-free),
so fcn-eval lists, decodes and checks exactly what fcn-train does, with or without torch. The
model must have the dataset's class count (else one error line); pixels labelled with the
dataset's ignore index are not scored.

``--model`` is a checkpoint (.pt, run with PyTorch), an ONNX file (onnxruntime or OpenVINO,
``--backend``) or a TensorRT plan. Deployed models run through the runtime's Segmenter (no
torch involved); a checkpoint runs through the same Segmenter around a PyTorch runner, so
pre/post-processing is identical and only the model differs.

Reports pixel accuracy, mean accuracy, mean IU, frequency-weighted IU and per-class IoU; with
``--reference CHECKPOINT``: the pixel-label agreement between the model and its PyTorch
source on the whole split, and the difference of their mean IU.

``--panels DIR [--panels-limit N] [--panels-compare MODEL2]``: per image (the first N, default 8)
one PNG as in the FCN paper's figures, image | ground truth | prediction | overlay with a legend
of the class colours, and MODEL2's prediction beside with the pixels where it differs hatched
(:mod:`fcn_deploy.panels`); small images are upscaled to at least 360 pixels high.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from fcn_deploy._util import atomic_path, atomic_write_text, run_cli
from fcn_deploy.benchmarks import datasets, runtime
from fcn_deploy.errors import FcnError
from fcn_deploy.metrics import ConfusionMatrix, format_scores

log = logging.getLogger(__name__)

SCHEMA = "fcn-eval/1"
METRIC_KEYS = ("pixel_acc", "mean_acc", "mean_iu", "fw_iu")
JSON_KEYS = ("schema", "created_utc", "model", "backend", "device", "precision", "data", "format", "split",
             "images", "pixels", "class_names", "metrics", "per_class_iu", "confusion", "reference", "seconds")
REFERENCE_KEYS = ("model", "device", "metrics", "label_agreement", "label_agreement_scored", "mean_iu_delta")


@dataclass
class EvalResult:
    model: str
    backend: str
    device: str
    precision: Optional[str]
    data: str
    format: str
    split: str
    images: int
    pixels: int
    class_names: List[str]
    scores: Dict[str, object]
    hist: np.ndarray
    seconds: float
    reference: Optional[Dict[str, object]] = None
    extra: Dict[str, object] = field(default_factory=dict)

    @property
    def mean_iu(self) -> float:
        return float(self.scores["mean_iu"])

    def to_dict(self) -> dict:
        return {
            "schema": SCHEMA,
            "created_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "model": self.model, "backend": self.backend, "device": self.device, "precision": self.precision,
            "data": self.data, "format": self.format, "split": self.split,
            "images": self.images, "pixels": self.pixels, "class_names": list(self.class_names),
            "metrics": {k: _nan_none(self.scores[k]) for k in METRIC_KEYS},
            "per_class_iu": dict(self.scores["per_class_iu"]),
            "confusion": self.hist.astype(int).tolist(),
            "reference": self.reference,
            "seconds": self.seconds,
        }


def _nan_none(v):
    v = float(v)
    return None if np.isnan(v) else v


def _progress(total: int, desc: str, enabled: bool):
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=desc, unit="img", disable=None, file=sys.stderr)


def _open(model, *, backend: str, threads: Optional[int], device: str = "cpu"):
    if not isinstance(model, (str, Path)):
        return model, False  # an already opened Segmenter: the caller keeps ownership
    opts = {"device": device} if Path(model).suffix.lower() in (".pt", ".pth") else {}
    return runtime.open_segmenter(model, backend=backend, threads=threads, **opts), True


def _precision(seg) -> Optional[str]:
    from fcn_deploy.benchmarks.targets import describe_precision

    return describe_precision(seg.runner, seg.info)


def evaluate(
    model,
    data,
    *,
    fmt: str = "camvid",
    split: str = "val",
    reference=None,
    limit: Optional[int] = None,
    backend: str = "auto",
    threads: Optional[int] = None,
    reference_device: str = "cpu",
    progress: bool = True,
    on_image=None,
) -> EvalResult:
    """Score ``model`` (path or opened Segmenter) on ``data``; see the module docstring.

    ``on_image(i, image, truth, pred, seg)``: called per scored image (``--panels`` uses it)."""
    if limit is not None and limit < 1:
        raise FcnError(f"--limit must be >= 1, got {limit}")
    ds = data if hasattr(data, "get") and hasattr(data, "__len__") else datasets.open_samples(data, fmt, split)
    count = len(ds) if limit is None else min(limit, len(ds))
    seg, own = _open(model, backend=backend, threads=threads)
    ref, own_ref = (None, False)
    try:
        if reference is not None:
            ref, own_ref = _open(reference, backend="torch" if isinstance(reference, (str, Path)) else backend,
                                 threads=threads, device=reference_device)
            if ref.info.num_classes != seg.info.num_classes:
                raise FcnError(f"--reference has {ref.info.num_classes} classes, the model {seg.info.num_classes}")
        n = seg.info.num_classes
        ds = _matching_dataset(ds, seg.info, data=data, fmt=fmt, split=split)
        ignore = getattr(ds, "ignore_index", None)
        cm, ref_cm = ConfusionMatrix(n), ConfusionMatrix(n)
        agree = agree_scored = scored = pixels = 0
        bar = _progress(count, "evaluating", progress)
        t0 = time.perf_counter()
        try:
            for i in range(count):
                img, lab = ds.get(i)
                valid = (lab >= 0) & (lab < n)
                if ignore is not None:
                    valid &= lab != ignore
                lab = np.where(valid, lab.astype(np.int32, copy=False), -1)  # -1 (not 255 of a uint8 map): never scored
                pred = seg.segment(img).labels
                if on_image is not None:
                    on_image(i, img, lab, pred, seg)
                cm.update(lab, pred)
                pixels += pred.size
                if ref is not None:
                    rp = ref.segment(img).labels
                    ref_cm.update(lab, rp)
                    same = pred.astype(np.int64) == rp.astype(np.int64)
                    agree += int(same.sum())
                    agree_scored += int((same & valid).sum())
                    scored += int(valid.sum())
                if bar is not None:
                    bar.update(1)
        finally:
            if bar is not None:
                bar.close()
        seconds = time.perf_counter() - t0
        names = list(seg.info.class_names)
        scores = cm.scores(names)
        ref_block = None
        if ref is not None:
            rs = ref_cm.scores(names)
            ref_block = {
                "model": str(reference if isinstance(reference, (str, Path)) else getattr(ref, "path", "?")),
                "device": str(ref.device),
                "metrics": {k: _nan_none(rs[k]) for k in METRIC_KEYS},
                "label_agreement": agree / pixels if pixels else None,
                "label_agreement_scored": agree_scored / scored if scored else None,
                "mean_iu_delta": (_nan_none(scores["mean_iu"] - rs["mean_iu"])),
            }
        return EvalResult(
            model=str(model if isinstance(model, (str, Path)) else getattr(seg, "path", "?")),
            backend=str(seg.backend), device=str(seg.device), precision=_precision(seg),
            data=str(data) if isinstance(data, (str, Path)) else getattr(data, "name", type(data).__name__),
            format=fmt, split=split, images=count, pixels=pixels,
            class_names=names, scores=scores, hist=cm.hist.copy(), seconds=seconds, reference=ref_block,
        )
    finally:
        if own:
            seg.close()
        if own_ref and ref is not None:
            ref.close()


def _matching_dataset(ds, info, *, data, fmt: str, split: str):
    """``ds``, or ``folders`` data reopened with the model's class names when its class count was
    only guessed from the largest label in the masks; FcnError when the class counts differ."""
    n, have = info.num_classes, len(ds.class_names)
    if have == n:
        if tuple(ds.class_names) != tuple(info.class_names) and getattr(ds, "classes_from", None) != "masks":
            log.warning("the dataset names its classes %s, the model %s: the report uses the model's names",
                        ", ".join(ds.class_names), ", ".join(info.class_names))
        return ds
    if getattr(ds, "classes_from", None) == "masks" and have < n and isinstance(data, (str, Path)):
        return datasets.open_samples(data, fmt, split, class_names=info.class_names)
    hint = "; add classes.txt to the dataset" if getattr(ds, "classes_from", None) == "masks" else ""
    raise FcnError(f"class count mismatch: the model has {n} classes, the {fmt} dataset {have} "
                   f"(a model trained on other classes cannot be scored on it){hint}")


# -- output ---------------------------------------------------------------------------------------

def render_text(res: EvalResult) -> str:
    lines = [
        f"{res.model} ({res.backend}, {res.device}, {res.precision or '?'}) on {res.data} "
        f"[{res.format} {res.split}]: {res.images} images, {res.seconds:.1f} s",
        format_scores(res.scores),
        "",
        "per-class IoU:",
    ]
    w = max(len(n) for n in res.class_names)
    for name, v in res.scores["per_class_iu"].items():
        lines.append(f"  {name:<{w}}  {'  n/a' if v is None else f'{100 * v:6.2f}'}")
    if res.reference:
        r = res.reference
        mi = r["metrics"]["mean_iu"]
        lines += [
            "",
            f"reference {r['model']} ({r['device']}): mean IU {100 * mi:.2f}" if mi is not None else f"reference {r['model']}",
            f"label agreement with the reference: {100 * r['label_agreement']:.3f}% of pixels "
            f"({100 * r['label_agreement_scored']:.3f}% of scored pixels)" if r["label_agreement"] is not None else "",
            f"mean IU difference (model - reference): {100 * r['mean_iu_delta']:+.3f} points"
            if r["mean_iu_delta"] is not None else "",
        ]
    return "\n".join(l for l in lines if l is not None)


def write_json(res: EvalResult, path) -> None:
    atomic_write_text(path, json.dumps(res.to_dict(), indent=2) + "\n")


def write_confusion_png(hist: np.ndarray, class_names, path, *, title: str = "") -> str:
    """Row-normalised confusion matrix (true class rows, predicted columns) as a PNG:
    matplotlib when installed, else a plain Pillow heatmap. Returns a note."""
    hist = np.asarray(hist, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        norm = np.nan_to_num(hist / hist.sum(1, keepdims=True))
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        _pil_heatmap(norm, class_names, path)
        return f"wrote {path} (plain heatmap: matplotlib is not installed)"
    n = len(class_names)
    size = max(5.0, 0.45 * n + 2)
    fig = Figure(figsize=(size + 1, size), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n))
    ax.set_yticks(range(n))
    ax.set_xticklabels(class_names, rotation=60, ha="right", fontsize=8)
    ax.set_yticklabels(class_names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if n <= 25:
        for i in range(n):
            for j in range(n):
                if norm[i, j] >= 0.005:
                    ax.text(j, i, f"{100 * norm[i, j]:.0f}", ha="center", va="center", fontsize=6,
                            color="white" if norm[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    ax.set_title(title or "confusion matrix (rows sum to 1)", fontsize=10)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    return f"wrote {path}"


def _pil_heatmap(norm: np.ndarray, class_names, path, cell: int = 24) -> None:
    from PIL import Image, ImageDraw

    n = norm.shape[0]
    margin = 8 + 7 * max((len(c) for c in class_names), default=1)
    img = Image.new("RGB", (margin + n * cell + 4, margin + n * cell + 4), "white")
    draw = ImageDraw.Draw(img)
    for i in range(n):
        draw.text((2, margin + i * cell + cell // 3), str(class_names[i]), fill="black")
        draw.text((margin + i * cell + 2, 2), str(i), fill="black")
        for j in range(n):
            shade = int(255 * (1 - float(norm[i, j])))
            x0, y0 = margin + j * cell, margin + i * cell
            draw.rectangle([x0, y0, x0 + cell - 1, y0 + cell - 1], fill=(shade, shade, 255), outline=(220, 220, 220))
    with atomic_path(path, suffix=".png") as tmp:
        img.save(tmp, format="PNG")


# -- CLI ------------------------------------------------------------------------------------------

def _parser() -> argparse.ArgumentParser:
    from fcn_deploy.cli_kit import add_backend, add_layout, add_threads, cli_parser

    p = cli_parser(prog="fcn-eval", description="Score a model (checkpoint, ONNX or TensorRT plan) on a labelled split.")
    from fcn_deploy.backends import model_file_types

    p.add_argument("--model", required=True, help=f"the model file ({model_file_types()})")
    p.add_argument("--data", required=True, metavar="DIR", help="dataset root")
    add_layout(p, dest="fmt", choices=datasets.FORMATS)
    p.add_argument("--split", default="val", help="split to score (default val)")
    p.add_argument("--reference", metavar="CHECKPOINT", help="PyTorch source checkpoint: report label agreement and mean IU difference")
    add_backend(p, help="runtime backend (auto: by the file's suffix and this machine)")
    add_threads(p)
    p.add_argument("--limit", type=int, help="score only the first N images")
    p.add_argument("--json", metavar="FILE", help="write the results as JSON")
    p.add_argument("--confusion", metavar="FILE.png", help="write the confusion matrix as a PNG")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    panels = p.add_argument_group("comparison panels (image | ground truth | prediction | overlay, with a legend)")
    panels.add_argument("--panels", metavar="DIR", help="write one comparison PNG per image into DIR")
    panels.add_argument("--panels-limit", type=int, default=8, metavar="N", help="panels for the first N images (default 8)")
    panels.add_argument("--panels-compare", metavar="MODEL", help="a second model (e.g. the int8 ONNX) shown beside, disagreeing pixels hatched")
    return p


class PanelWriter:
    """``on_image`` hook of :func:`evaluate` writing comparison panels for the first ``limit``
    images: DIR/panel_0000.png ... (see fcn_deploy.panels)."""

    def __init__(self, out_dir, *, limit: int = 8, compare=None, backend: str = "auto", threads=None,
                 titles=None, min_height: int = 360):
        if limit < 1:
            raise FcnError(f"--panels-limit must be >= 1, got {limit}")
        self.dir = Path(out_dir)
        if self.dir.exists() and not self.dir.is_dir():
            raise FcnError(f"--panels {self.dir} exists and is not a folder")
        self.limit = limit
        self.min_height = min_height
        self.compare, self._own = (None, False)
        if compare is not None:
            if isinstance(compare, (str, Path)) and not Path(compare).exists():
                raise FcnError(f"--panels-compare: model not found: {compare}")
            self.compare, self._own = _open(compare, backend=backend, threads=threads)
        self.titles = titles
        self.written = []

    def __call__(self, i, img, lab, pred, seg) -> None:
        if i >= self.limit:
            return
        from fcn_deploy.panels import write_panel

        self.dir.mkdir(parents=True, exist_ok=True)
        second = None
        titles = self.titles or (_short(seg), _short(self.compare) if self.compare is not None else "")
        if self.compare is not None:
            if self.compare.info.num_classes != seg.info.num_classes:
                raise FcnError(f"--panels-compare has {self.compare.info.num_classes} classes, the model {seg.info.num_classes}")
            second = self.compare.segment(img).labels
        path = self.dir / f"panel_{i:04d}.png"
        write_panel(path, img, lab, pred, seg.info.palette, seg.info.class_names, second=second, titles=titles,
                    min_height=self.min_height)  # unscored pixels (ids outside 0..n-1) show as void
        self.written.append(path)

    def close(self) -> None:
        if self._own and self.compare is not None:
            self.compare.close()


def _short(seg) -> str:
    p = getattr(seg, "path", None)
    prec = None
    try:
        prec = _precision(seg)
    except Exception:
        pass
    name = Path(p).name if p else "model"
    return f"{name}" + (f" [{prec}]" if prec else "")


def _main(argv) -> int:
    args = _parser().parse_args(argv)
    for opt, path in (("--json", args.json), ("--confusion", args.confusion)):
        if path and not Path(path).parent.is_dir():
            raise FcnError(f"{opt}: folder {Path(path).parent} does not exist")
    if args.confusion and not args.confusion.lower().endswith(".png"):
        raise FcnError(f"--confusion {args.confusion!r}: give a .png file name")
    if args.threads is not None and args.threads < 1:
        raise FcnError(f"--threads must be >= 1, got {args.threads}")
    if not Path(args.model).exists():
        raise FcnError(f"model not found: {args.model}")
    if args.reference and not Path(args.reference).exists():
        raise FcnError(f"reference checkpoint not found: {args.reference}")
    if args.reference and Path(args.reference).suffix.lower() not in (".pt", ".pth"):
        raise FcnError(f"--reference must be a PyTorch checkpoint (.pt), got {args.reference}")
    panels = None
    if args.panels:
        panels = PanelWriter(args.panels, limit=args.panels_limit, compare=args.panels_compare, backend=args.backend, threads=args.threads)
    elif args.panels_compare:
        raise FcnError("--panels-compare needs --panels DIR")
    try:
        res = evaluate(args.model, args.data, fmt=args.fmt, split=args.split, reference=args.reference, limit=args.limit,
                       backend=args.backend, threads=args.threads, progress=not args.quiet, on_image=panels)
    finally:
        if panels is not None:
            panels.close()
    print(render_text(res))
    if panels is not None:
        print(f"wrote {len(panels.written)} comparison panel(s) to {args.panels}")
    if args.json:
        write_json(res, args.json)
        print(f"wrote {args.json}")
    if args.confusion:
        print(write_confusion_png(res.hist, res.class_names, args.confusion,
                                  title=f"{Path(res.model).name} on {res.format} {res.split}"))
    return 0


def main(argv=None) -> int:
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
