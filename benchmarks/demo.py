"""``make demo``: the whole pipeline on a small default, in a few minutes on 2 CPU cores.

::

    python -m fcn_deploy.benchmarks.demo --out demo_out [--camvid DIR] [--quick] [--no-int8]

Stages (each prints what it does and how long it took):

1. data     synthetic shapes written as a ``folders`` dataset (or CamVid when ``--camvid`` is given)
2. train    ResNet-18 FCN-8s from scratch (the ``synthetic-resnet18-fcn8s`` recipe; on CamVid the
            ``camvid-resnet18-fcn8s`` recipe cut to a couple of minutes)
3. export   fp32 ONNX, and int8 QDQ calibrated on training images
4. verify   each ONNX against PyTorch (rel. L2 of the logits, label agreement)
5. predict  a few validation images: colorized masks and overlays
6. bench    PyTorch vs onnxruntime fp32/int8 vs OpenVINO, interleaved, on the same inputs
7. eval     the four metrics per format, label agreement with PyTorch, and comparison panels
            (image | ground truth | fp32 | int8 | overlay, legend) in ``panels/``

and ends with one table. Everything lands in ``--out``; nothing outside it is touched.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional

import numpy as np

from fcn_deploy._util import atomic_write_text, run_cli
from fcn_deploy.errors import FcnError

log = logging.getLogger(__name__)

STAGES = ("data", "train", "export", "verify", "predict", "bench", "eval")
BENCH_SHAPE = (1, 3, 360, 480)  # CamVid's frame size: the figure that matters for a road camera


@dataclass(frozen=True)
class DemoConfig:
    out: Path
    camvid: Optional[Path] = None
    quick: bool = False  # the smallest settings that still run every stage (smoke test)
    int8: bool = True
    train_minutes: float = 2.0  # CamVid only: training time budget
    eval_limit: Optional[int] = None  # None: all synthetic val images / 30 CamVid val images
    threads: int = 2
    seed: int = 0


class _Stages:
    def __init__(self, say):
        self.say = say
        self.t0 = time.perf_counter()
        self.i = 0
        self.times: Dict[str, float] = {}

    def start(self, name: str, what: str) -> float:
        self.i += 1
        self.say(f"\n==> [{self.i}/{len(STAGES)}] {name}: {what}")
        return time.perf_counter()

    def done(self, name: str, t: float, note: str = "") -> None:
        dt = time.perf_counter() - t
        self.times[name] = dt
        self.say(f"    {name} done in {dt:.1f} s" + (f" -- {note}" if note else ""))


def _write_synthetic(ds, root: Path, split: str) -> None:
    """A training-package SegDataset -> ``root/images/<split>/*.png`` + ``root/masks/<split>/*.png``."""
    from fcn_deploy.image import write_label_png, write_rgb_png

    (root / "images" / split).mkdir(parents=True, exist_ok=True)
    (root / "masks" / split).mkdir(parents=True, exist_ok=True)
    for i in range(len(ds)):
        img, lab = ds.get(i)
        write_rgb_png(root / "images" / split / f"{split}_{i:04d}.png", img)
        write_label_png(root / "masks" / split / f"{split}_{i:04d}.png", lab, ds.palette, with_palette=True)
    atomic_write_text(root / "classes.txt", "\n".join(ds.class_names) + "\n")


def _synthetic_spec(quick: bool, seed: int):
    from fcn_deploy.datasets import SyntheticSpec

    if quick:
        return SyntheticSpec(num_train=8, num_val=2, height=48, width=64, seed=seed)
    return SyntheticSpec(num_train=64, num_val=16, height=64, width=64, seed=seed)


def _train_config(cfg: DemoConfig, model_path: Path, spec):
    from fcn_deploy.training.recipes import recipe_config

    if cfg.camvid:
        over = dict(out=str(model_path), data=str(cfg.camvid), time_budget_min=cfg.train_minutes, val_every=10_000,
                    threads=cfg.threads, seed=cfg.seed)
        if cfg.quick:
            over.update(time_budget_min=min(cfg.train_minutes, 0.5), crop=(96, 128))
        return recipe_config("camvid-resnet18-fcn8s", **over)
    over = dict(out=str(model_path), synthetic=spec, threads=cfg.threads, seed=cfg.seed)
    if cfg.quick:
        over.update(epochs=1, batch_size=4, crop=(48, 48), val_every=1, val_batch_size=2)
    return recipe_config("synthetic-resnet18-fcn8s", **over)


def run_demo(cfg: DemoConfig, *, say=print) -> dict:
    """Run every stage; returns the summary (also written to ``out/summary.json``)."""
    import torch

    from fcn_deploy.benchmarks import report as rep
    from fcn_deploy.benchmarks.bench import BenchConfig, run_benchmark
    from fcn_deploy.benchmarks.evaluate import evaluate, write_confusion_png, write_json
    from fcn_deploy.benchmarks.targets import TargetSpec

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(cfg.threads)
    st = _Stages(say)
    summary: dict = {"out": str(out), "dataset": None, "stages": {}, "formats": [], "problems": [], "notes": []}

    # 1. data -------------------------------------------------------------------------------------
    spec = None
    if cfg.camvid:
        t = st.start("data", f"CamVid from {cfg.camvid}")
        data, fmt = Path(cfg.camvid), "camvid"
        if not (data / "train").is_dir() or not (data / "valannot").is_dir():
            raise FcnError(f"{data} is not a CamVid folder (train/ trainannot/ val/ valannot/)")
        calib_dir, calib_fmt = data, "camvid"
        eval_limit = cfg.eval_limit or (4 if cfg.quick else 30)
    else:
        from fcn_deploy.datasets import SyntheticDataset

        spec = _synthetic_spec(cfg.quick, cfg.seed)
        t = st.start("data", f"synthetic shapes ({spec.num_train} train / {spec.num_val} val images, "
                             f"{spec.height}x{spec.width}) written to {out / 'data'}")
        data, fmt = out / "data", "folders"
        for split in ("train", "val"):
            _write_synthetic(SyntheticDataset(spec, split), data, split)
        calib_dir, calib_fmt = data, "folders"  # images/train/ under the folders root
        eval_limit = cfg.eval_limit
    from fcn_deploy.benchmarks.datasets import open_samples

    val = open_samples(data, fmt, "val")
    first_img, _ = val.get(0)
    val_hw = tuple(int(v) for v in first_img.shape[:2])
    summary["dataset"] = {"format": fmt, "path": str(data), "val_images": len(val), "size": list(val_hw)}
    st.done("data", t, f"{len(val)} val images of {val_hw[0]}x{val_hw[1]}")

    # 2. train ------------------------------------------------------------------------------------
    from fcn_deploy.training.train import train

    model_pt = out / "model.pt"
    tc = _train_config(cfg, model_pt, spec)
    budget = (f"{tc.time_budget_min:g} min budget" if tc.time_budget_min
              else f"{tc.epochs} epoch{'s' if tc.epochs != 1 else ''}")
    t = st.start("train", f"{tc.arch} / {tc.backbone} from scratch on {fmt}, {budget}, batch {tc.batch_size}, "
                          f"{cfg.threads} threads -> {model_pt}")
    res = train(tc)
    bm = res.best_metrics
    st.done("train", t, f"{res.epochs_done} epoch(s); best val mean IU {100 * bm.get('mean_iu', float('nan')):.2f}")
    summary["train"] = {"epochs": res.epochs_done, "seconds": res.elapsed_s,
                        "best_val": {k: bm.get(k) for k in ("pixel_acc", "mean_acc", "mean_iu", "fw_iu")}}

    # 3. export -----------------------------------------------------------------------------------
    from fcn_deploy.export.onnx_export import export_onnx

    onnx_files: Dict[str, Path] = {}
    t = st.start("export", "fp32 ONNX" + (" and int8 QDQ ONNX (calibrated on training images)" if cfg.int8 else ""))
    try:
        onnx_files["fp32"] = export_onnx(model_pt, out / "model.onnx", verify=False)
        say(f"    wrote {onnx_files['fp32']} ({onnx_files['fp32'].stat().st_size / 1e6:.1f} MB)")
    except FcnError as e:
        raise FcnError(f"fp32 export failed: {e}") from None
    if cfg.int8:
        from fcn_deploy.export.precision import CalibConfig

        try:
            calib = CalibConfig(data=calib_dir, format=calib_fmt, images=4 if cfg.quick else 32)
            onnx_files["int8"] = export_onnx(model_pt, out / "model-int8.onnx", precision="int8", calib=calib, verify=False)
            say(f"    wrote {onnx_files['int8']} ({onnx_files['int8'].stat().st_size / 1e6:.1f} MB)")
        except Exception as e:
            summary["problems"].append(f"int8 export failed: {e}")
            say(f"    int8 export failed, continuing without it: {e}")
    st.done("export", t)

    # 4. verify -----------------------------------------------------------------------------------
    from fcn_deploy.export.verify import verify_onnx

    t = st.start("verify", "each ONNX against PyTorch on random and real images at "
                           + ", ".join(f"{h}x{w}" for h, w in ([(97, 131)] if cfg.quick else [(97, 131), val_hw])))
    verified = {}
    val_dir = data / "val" if fmt == "camvid" else data / "images" / "val"
    sizes = [(97, 131)] if cfg.quick else [(97, 131), val_hw]
    for prec, path in onnx_files.items():
        r = verify_onnx(model_pt, path, sizes=sizes, batch=1 if cfg.quick else 2, images=val_dir)
        verified[prec] = bool(r.passed)
        for line in r.format().splitlines():
            say(f"    {line}")
        if not r.passed:
            if prec == "fp32":
                summary["problems"].append(f"fp32 ONNX does not match PyTorch: {'; '.join(r.failures)}")
            else:  # lossy by design; a barely trained model (--quick) has near-ties that flip
                fails = list(r.failures)
                summary["notes"].append(
                    f"{prec} ONNX is outside its parity tolerance in {len(fails)} of {len(r.cases)} verify cases "
                    f"(first: {fails[0] if fails else '?'}); its agreement on the val images is in the table")
    st.done("verify", t, ", ".join(f"{p} {'PASS' if ok else 'FAIL'}" for p, ok in verified.items()))

    # 5. predict ----------------------------------------------------------------------------------
    from fcn_deploy.segmenter import Segmenter

    pred_dir = out / "predictions"
    pred_dir.mkdir(exist_ok=True)
    n_pred = min(2 if cfg.quick else 4, len(val))
    t = st.start("predict", f"{n_pred} val images through the runtime (onnxruntime, fp32) -> {pred_dir}")
    written = []
    with Segmenter.load(onnx_files["fp32"], backend="onnxruntime", threads=cfg.threads) as seg:
        for i in range(n_pred):
            img, _ = val.get(i)
            r = seg.segment(img)
            stem = f"val_{i:02d}"
            r.save_colorized(pred_dir / f"{stem}_mask.png")
            r.save_overlay(pred_dir / f"{stem}_overlay.png", alpha=0.5)
            written += [pred_dir / f"{stem}_mask.png", pred_dir / f"{stem}_overlay.png"]
            counts = {k: v for k, v in r.class_counts().items() if v}
            top = ", ".join(f"{k} {100 * v / r.labels.size:.0f}%" for k, v in sorted(counts.items(), key=lambda kv: -kv[1])[:3])
            say(f"    {stem}: {top}")
    st.done("predict", t, f"{len(written)} PNGs")

    # 6. bench ------------------------------------------------------------------------------------
    shapes = [(1, 3) + val_hw]
    if not cfg.quick and tuple(val_hw) != BENCH_SHAPE[2:]:
        shapes.append(BENCH_SHAPE)
    specs = [TargetSpec("torch", str(model_pt), "pytorch-fp32")]
    specs.append(TargetSpec("onnx", str(onnx_files["fp32"]), "onnxruntime-fp32"))
    if "int8" in onnx_files:
        specs.append(TargetSpec("onnx", str(onnx_files["int8"]), "onnxruntime-int8"))
    if importlib.util.find_spec("openvino") is not None:
        specs.append(TargetSpec("openvino", str(onnx_files["fp32"]), "openvino-fp32"))
    iters = 3 if cfg.quick else 8
    t = st.start("bench", f"{len(specs)} targets interleaved, {iters} iterations at "
                          + ", ".join("x".join(map(str, s)) for s in shapes))
    report = run_benchmark(specs, BenchConfig(shapes=tuple(shapes), warmup=1, iterations=iters,
                                              threads=cfg.threads, settle_ms=0.0 if cfg.quick else 20.0))
    rep.write_json(report, out / "bench.json")
    rep.write_markdown(report, out / "bench.md")
    plot_note = rep.write_plot(report, out / "bench.png")
    for line in rep.render_text(report).splitlines():
        say(f"    {line}")
    st.done("bench", t, plot_note)

    # 7. eval -------------------------------------------------------------------------------------
    lim = f"first {eval_limit}" if eval_limit and eval_limit < len(val) else f"all {len(val)}"
    t = st.start("eval", f"{lim} val images per format; deployed formats also against PyTorch")
    from fcn_deploy.benchmarks.runtime import open_segmenter

    evals = {}
    torch_seg = open_segmenter(model_pt, threads=cfg.threads)  # opened once: the score and the reference
    try:
        evals["pytorch-fp32"] = evaluate(torch_seg, data, fmt=fmt, split="val", limit=eval_limit, progress=False)
        for label, spec_ in (("onnxruntime-fp32", ("fp32", "onnxruntime")), ("onnxruntime-int8", ("int8", "onnxruntime")),
                             ("openvino-fp32", ("fp32", "openvino"))):
            prec, backend = spec_
            if prec not in onnx_files or label not in [s.label for s in specs]:
                continue
            panels = _panel_writer(cfg, out, onnx_files) if label == "onnxruntime-fp32" else None
            try:
                evals[label] = evaluate(onnx_files[prec], data, fmt=fmt, split="val", limit=eval_limit, backend=backend,
                                        reference=torch_seg, threads=cfg.threads, progress=False, on_image=panels)
            except Exception as e:
                summary["problems"].append(f"eval of {label} failed: {e}")
            finally:
                if panels is not None:
                    panels.close()
                    say(f"    wrote {len(panels.written)} comparison panels (image | truth | fp32 | int8 | overlay) "
                        f"to {out / 'panels'}")
    finally:
        torch_seg.close()
    for label, r in evals.items():
        write_json(r, out / f"eval-{label}.json")
        say(f"    {label:<18} {_fmt_scores(r.scores)}")
    write_confusion_png(evals["pytorch-fp32"].hist, evals["pytorch-fp32"].class_names, out / "confusion.png",
                        title=f"PyTorch fp32 on {fmt} val")
    st.done("eval", t)

    # summary -------------------------------------------------------------------------------------
    rows = []
    for s in specs:
        r = evals.get(s.label)
        size_mb = Path(s.path).stat().st_size / 1e6
        bench_rows = {tuple(x["shape"]): x for x in report["results"] if x["target"] == s.label}
        row = {"format": s.label, "file": s.path, "size_mb": size_mb,
               "metrics": {k: (float(r.scores[k]) if r else None) for k in ("pixel_acc", "mean_acc", "mean_iu", "fw_iu")},
               "agreement": (r.reference or {}).get("label_agreement") if r else None,
               "latency": {"x".join(map(str, k)): {"median_ms": (v["latency_ms"] or {}).get("median"), "speedup": v["speedup"],
                                                   "error": v["error"]} for k, v in bench_rows.items()}}
        rows.append(row)
    summary["formats"] = rows
    summary["stages"] = st.times
    summary["bench_machine"] = report["machine"]
    summary["eval_images"] = evals["pytorch-fp32"].images
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    say("\n" + render_summary(summary))
    return summary


def _panel_writer(cfg: DemoConfig, out: Path, onnx_files):
    """Comparison panels for the first val images: fp32 beside int8 (disagreements hatched),
    upscaled to at least 360 px high so small synthetic images can be seen."""
    from fcn_deploy.benchmarks.evaluate import PanelWriter

    compare = onnx_files.get("int8")
    return PanelWriter(out / "panels", limit=2 if cfg.quick else 4, compare=compare, backend="onnxruntime",
                       threads=cfg.threads, titles=("fp32", "int8") if compare else ("fp32", ""), min_height=360)


def _fmt_scores(s) -> str:
    return (f"pixel acc {100 * s['pixel_acc']:.2f}  mean acc {100 * s['mean_acc']:.2f}  "
            f"mean IU {100 * s['mean_iu']:.2f}  fw IU {100 * s['fw_iu']:.2f}")


def _pct(v) -> str:
    return "-" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{100 * v:.2f}"


def render_summary(summary: dict) -> str:
    d = summary["dataset"]
    shapes = []
    for r in summary["formats"]:
        for k in r["latency"]:
            if k not in shapes:
                shapes.append(k)
    head = ["format", "size MB", "pixel acc", "mean acc", "mean IU", "fw IU", "agree %"]
    for k in shapes:
        head += [f"ms @{k.split('x', 2)[2]}", "speedup"]
    rows = [head]
    for r in summary["formats"]:
        m = r["metrics"]
        row = [r["format"], f"{r['size_mb']:.1f}", _pct(m["pixel_acc"]), _pct(m["mean_acc"]), _pct(m["mean_iu"]),
               _pct(m["fw_iu"]), "ref" if r["format"] == "pytorch-fp32" else _pct(r["agreement"])]
        for k in shapes:
            lat = r["latency"].get(k) or {}
            row += ["-" if lat.get("median_ms") is None else f"{lat['median_ms']:.1f}",
                    "-" if lat.get("speedup") is None else f"{lat['speedup']:.2f}x"]
        rows.append(row)
    w = [max(len(x[i]) for x in rows) for i in range(len(head))]
    m = summary.get("bench_machine") or {}
    lines = [
        "=" * 78,
        f"fcn-deploy demo summary ({d['format']} val, {summary.get('eval_images')} images of {d['size'][0]}x{d['size'][1]}; "
        f"latency: batch 1 on {m.get('cpu', '?')}, {m.get('cores', '?')} cores)",
        "",
    ]
    for x in rows:
        lines.append("  ".join(c.ljust(w[i]) if i == 0 else c.rjust(w[i]) for i, c in enumerate(x)))
    lines += [
        "",
        "metrics in percent (the FCN paper's four); agree % = pixels labelled as PyTorch labels them;",
        "speedup = PyTorch fp32 median latency / the row's (interleaved run, same inputs).",
        f"stage times: " + ", ".join(f"{k} {v:.0f} s" for k, v in summary["stages"].items()),
        f"outputs in {summary['out']}: model.pt, model.onnx" + (", model-int8.onnx" if any(r['format'].endswith('int8') for r in summary['formats']) else "")
        + ", predictions/, panels/, bench.{json,md,png}, eval-*.json, confusion.png, summary.json",
    ]
    for p in summary.get("notes", []):
        lines.append(f"note: {p}")
    for p in summary["problems"]:
        lines.append(f"problem: {p}")
    lines.append("=" * 78)
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    from fcn_deploy.cli_kit import cli_parser

    p = cli_parser(prog="python -m fcn_deploy.benchmarks.demo",
                   description="Train, export, verify, predict, bench and evaluate an FCN in a few minutes.")
    p.add_argument("--out", default="demo_out", help="output folder (default: %(default)s)")
    p.add_argument("--camvid", metavar="DIR", help="use CamVid (train/ trainannot/ val/ valannot/) instead of synthetic shapes")
    p.add_argument("--quick", action="store_true", help="smallest settings (seconds per stage): a smoke test")
    p.add_argument("--no-int8", action="store_true", help="skip the int8 export")
    p.add_argument("--train-minutes", type=float, default=2.0, help="CamVid training budget in minutes (default %(default)s)")
    p.add_argument("--eval-limit", type=int, help="score at most N val images per format")
    p.add_argument("--threads", type=int, default=2, help="CPU threads (default %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    return p


def _main(argv) -> int:
    a = _parser().parse_args(argv)
    if a.camvid and not Path(a.camvid).is_dir():
        raise FcnError(f"--camvid: folder not found: {a.camvid}")
    if a.threads < 1:
        raise FcnError(f"--threads must be >= 1, got {a.threads}")
    if a.eval_limit is not None and a.eval_limit < 1:
        raise FcnError(f"--eval-limit must be >= 1, got {a.eval_limit}")
    if not a.train_minutes > 0:
        raise FcnError(f"--train-minutes must be > 0, got {a.train_minutes}")
    out = Path(a.out)
    if out.exists() and not out.is_dir():
        raise FcnError(f"--out {out} exists and is not a folder")
    if not out.parent.is_dir() and str(out.parent) not in ("", "."):
        raise FcnError(f"--out: parent folder {out.parent} does not exist")
    cfg = DemoConfig(out=out, camvid=Path(a.camvid) if a.camvid else None, quick=a.quick, int8=not a.no_int8,
                     train_minutes=a.train_minutes, eval_limit=a.eval_limit, threads=a.threads, seed=a.seed)
    # The stages print their own progress; the runtime's per-load INFO lines are noise here.
    for name in ("fcn_deploy.backends", "fcn_deploy.segmenter"):
        logging.getLogger(name).setLevel(logging.WARNING)
    t0 = time.perf_counter()
    summary = run_demo(cfg)
    print(f"demo finished in {time.perf_counter() - t0:.0f} s")
    return 1 if summary["problems"] else 0


def main(argv=None) -> int:
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
