"""``fcn-bench formats CHECKPOINT --data DIR`` (old spelling ``--formats CHECKPOINT``): one table across every format this machine runs.

For a checkpoint, export each precision (fp32, fp16, int8 QDQ calibrated on the dataset's
train images) with the export stage, then for each format: file size, the split's mean IU
(fcn-eval), median latency from one interleaved ``--compare`` run with PyTorch eager fp32
first, and the speedup over it. A format that fails (export, parity check, load, run) keeps
its row with the reason; the others still run.

Rows (``FORMATS``; OpenVINO rows only when openvino is installed)::

    pytorch        the checkpoint, PyTorch eager fp32 (the reference)
    onnx-fp32      fp32 ONNX on onnxruntime (CPU)
    onnx-fp16      fp16 ONNX on onnxruntime (CPU)
    onnx-int8      int8 QDQ ONNX on onnxruntime (CPU), TensorRT layout (the default export)
    onnx-int8cpu   int8 QDQ ONNX on onnxruntime (CPU), cpu layout (``--int8-target cpu``)
    openvino-fp32  the fp32 ONNX on OpenVINO (CPU, f32)
    openvino-int8  the int8 QDQ ONNX (TensorRT layout) on OpenVINO (CPU)
    openvino-int8cpu  the cpu-layout int8 QDQ ONNX on OpenVINO (CPU)

The precision ``int8cpu`` stands for an int8 export with ``--int8-target cpu``.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from fcn_deploy.benchmarks.targets import TargetSpec, error_text
from fcn_deploy.errors import FcnError, unknown_name

log = logging.getLogger(__name__)

SCHEMA = "fcn-bench-formats/1"
ROW_KEYS = ("format", "backend", "precision", "file", "size_mb", "export_s", "mean_iu", "pixel_acc",
            "median_ms", "speedup_vs_pytorch", "error")


@dataclass(frozen=True)
class Format:
    name: str
    bench_backend: str  # a targets.py backend name
    precision: Optional[str]  # export precision (int8cpu = int8, cpu layout), None = the checkpoint itself
    eval_backend: str  # evaluate(..., backend=)
    needs: Optional[str] = None  # python module that must be importable


FORMATS: Tuple[Format, ...] = (
    Format("pytorch", "torch", None, "torch"),
    Format("onnx-fp32", "onnx", "fp32", "onnxruntime", "onnxruntime"),
    Format("onnx-fp16", "onnx", "fp16", "onnxruntime", "onnxruntime"),
    Format("onnx-int8", "onnx", "int8", "onnxruntime", "onnxruntime"),
    Format("onnx-int8cpu", "onnx", "int8cpu", "onnxruntime", "onnxruntime"),
    Format("openvino-fp32", "openvino", "fp32", "openvino", "openvino"),
    Format("openvino-int8", "openvino", "int8", "openvino", "openvino"),
    Format("openvino-int8cpu", "openvino", "int8cpu", "openvino", "openvino"),
)
FORMAT_NAMES = tuple(f.name for f in FORMATS)


def _installed(module: Optional[str]) -> bool:
    if module is None:
        return True
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def default_formats() -> List[str]:
    return [f.name for f in FORMATS if _installed(f.needs) or not f.name.startswith("openvino")]


def _export(checkpoint, out: Path, precision: str, *, data, fmt: str, calib_images: int, verify: bool) -> Path:
    from fcn_deploy.export.onnx_export import export_onnx

    calib = None
    if precision in ("int8", "int8cpu"):
        from fcn_deploy.export.precision import CalibConfig

        if fmt == "synthetic":
            raise FcnError("int8 calibration needs image files; the synthetic dataset has none")
        calib = CalibConfig(data=Path(data), format=fmt, images=calib_images,
                            target="cpu" if precision == "int8cpu" else "tensorrt")
        precision = "int8"
    return export_onnx(checkpoint, out, precision=precision, calib=calib, verify=verify)


def run_formats(
    checkpoint,
    data,
    *,
    fmt: str = "camvid",
    split: str = "val",
    formats: Optional[Sequence[str]] = None,
    out_dir=None,
    limit: Optional[int] = None,
    shape: Optional[Tuple[int, int, int, int]] = None,
    config=None,
    calib_images: int = 32,
    verify: bool = True,
    progress: Optional[Callable[[str], None]] = None,
    exporter: Callable = _export,
) -> dict:
    """Export, score and time every format; returns {"schema", "checkpoint", "data", ..., "rows", "bench"}.

    ``exporter(checkpoint, out, precision, data=, fmt=, calib_images=, verify=)`` is the
    export step (the export stage's ``export_onnx`` by default).
    """
    from fcn_deploy.benchmarks.bench import BenchConfig, run_benchmark
    from fcn_deploy.benchmarks.evaluate import evaluate

    say = progress or (lambda m: None)
    names = list(formats) if formats else default_formats()
    by_name = {f.name: f for f in FORMATS}
    for n in names:
        if n not in by_name:
            raise unknown_name("format", n, FORMAT_NAMES)
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise FcnError(f"checkpoint not found: {checkpoint}")
    tmp = None
    if out_dir is None:
        tmp = tempfile.mkdtemp(prefix="fcn-formats-")
        out = Path(tmp)
    else:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
    try:
        rows: Dict[str, dict] = {}
        files: Dict[str, Path] = {}
        exported: Dict[str, object] = {}  # precision -> Path or error text
        for n in names:
            f = by_name[n]
            row = {k: None for k in ROW_KEYS}
            row.update(format=n, backend=f.bench_backend, precision=f.precision or "fp32")
            rows[n] = row
            if not _installed(f.needs):
                row["error"] = f"{f.needs} is not installed"
                continue
            if f.precision is None:
                files[n] = checkpoint
            else:
                if f.precision not in exported:
                    path = out / f"{checkpoint.stem}-{f.precision}.onnx"
                    say(f"exporting {f.precision} -> {path}")
                    t0 = time.perf_counter()
                    try:
                        exported[f.precision] = Path(exporter(checkpoint, path, f.precision, data=data, fmt=fmt,
                                                              calib_images=calib_images, verify=verify))
                        row["export_s"] = time.perf_counter() - t0
                    except Exception as e:
                        log.debug("export %s failed", f.precision, exc_info=True)
                        exported[f.precision] = f"export failed: {error_text(e)}"
                result = exported[f.precision]
                if isinstance(result, str):
                    row["error"] = result
                    continue
                files[n] = result
            row["file"] = str(files[n])
            row["size_mb"] = files[n].stat().st_size / 1e6
        # Accuracy on the split.
        for n, path in files.items():
            say(f"evaluating {n} on {fmt} {split}")
            try:
                res = evaluate(path, data, fmt=fmt, split=split, limit=limit, backend=by_name[n].eval_backend,
                               threads=getattr(config, "threads", None), progress=False)
                rows[n]["mean_iu"] = res.mean_iu
                rows[n]["pixel_acc"] = float(res.scores["pixel_acc"])
            except Exception as e:
                log.debug("evaluating %s failed", n, exc_info=True)
                rows[n]["error"] = f"evaluation failed: {error_text(e)}"
        # Speed: one interleaved comparison, PyTorch first when present.
        runnable = [n for n in names if n in files and rows[n]["error"] is None]
        runnable.sort(key=lambda n: n != "pytorch")
        bench = None
        if runnable:
            if shape is None:
                shape = _shape_of_split(data, fmt, split)
            cfg = config or BenchConfig()
            from dataclasses import replace

            cfg = replace(cfg, shapes=(tuple(shape),))
            specs = [TargetSpec(by_name[n].bench_backend, str(files[n]), n) for n in runnable]
            say(f"timing {len(specs)} formats at {'x'.join(map(str, shape))}")
            bench = run_benchmark(specs, cfg, progress=progress)
            for r in bench["results"]:
                row = rows[r["target"]]
                if r["latency_ms"]:
                    row["median_ms"] = r["latency_ms"]["median"]
                    if "pytorch" in runnable:
                        row["speedup_vs_pytorch"] = r["speedup"]
                if r["error"] and not row["error"]:
                    row["error"] = f"benchmark failed: {r['error']}"
        return {
            "schema": SCHEMA,
            "checkpoint": str(checkpoint),
            "data": str(data),
            "format": fmt,
            "split": split,
            "limit": limit,
            "out_dir": None if tmp else str(out),
            "rows": [rows[n] for n in names],
            "bench": bench,
        }
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


def _shape_of_split(data, fmt: str, split: str) -> Tuple[int, int, int, int]:
    """Batch 1 at the size of the split's first image."""
    from fcn_deploy.benchmarks.datasets import open_samples

    ds = open_samples(data, fmt, split)
    img, _ = ds.get(0)
    return (1, 3, int(img.shape[0]), int(img.shape[1]))


def render_table(doc: dict) -> str:
    head = ["format", "size MB", "mean IU", "median ms", "vs PyTorch", "note"]
    rows = [head]
    for r in doc["rows"]:
        rows.append([
            r["format"],
            "-" if r["size_mb"] is None else f"{r['size_mb']:.1f}",
            "-" if r["mean_iu"] is None else f"{100 * r['mean_iu']:.2f}",
            "-" if r["median_ms"] is None else f"{r['median_ms']:.1f}",
            "-" if r["speedup_vs_pytorch"] is None else f"{r['speedup_vs_pytorch']:.2f}x",
            r["error"] or "",
        ])
    w = [max(len(x[i]) for x in rows) for i in range(len(head) - 1)]
    lines = [f"{doc['checkpoint']} on {doc['data']} [{doc['format']} {doc['split']}"
             + (f", first {doc['limit']} images" if doc["limit"] else "") + "]"]
    for x in rows:
        lines.append("  ".join(c.ljust(w[i]) if i == 0 else c.rjust(w[i]) for i, c in enumerate(x[:-1])) + ("  " + x[-1] if x[-1] else ""))
    if doc.get("bench"):
        b = doc["bench"]
        lines.append(f"latency: batch 1, {b['settings']['iterations'] or b['settings']['duration_s']} "
                     f"{'iterations' if b['settings']['iterations'] else 's'} interleaved, on {b['machine']['cpu']} "
                     f"({b['machine']['cores']} cores)")
        lines += [f"warning: {w_}" for w_ in b["warnings"]]
    return "\n".join(lines)


def render_markdown(doc: dict) -> str:
    out = ["# fcn-bench --formats", "", f"- checkpoint: `{doc['checkpoint']}`",
           f"- data: `{doc['data']}` ({doc['format']} {doc['split']}" + (f", first {doc['limit']} images" if doc["limit"] else "") + ")"]
    if doc.get("bench"):
        m = doc["bench"]["machine"]
        out.append(f"- machine: {m['cpu']}, {m['cores']} cores; {doc['bench']['created_utc']}")
    out += ["", "| format | size MB | mean IU | median ms | vs PyTorch | note |", "| --- | ---: | ---: | ---: | ---: | --- |"]
    for r in doc["rows"]:
        out.append("| " + " | ".join([
            r["format"],
            "-" if r["size_mb"] is None else f"{r['size_mb']:.1f}",
            "-" if r["mean_iu"] is None else f"{100 * r['mean_iu']:.2f}",
            "-" if r["median_ms"] is None else f"{r['median_ms']:.1f}",
            "-" if r["speedup_vs_pytorch"] is None else f"{r['speedup_vs_pytorch']:.2f}x",
            (r["error"] or "").replace("|", "/"),
        ]) + " |")
    return "\n".join(out) + "\n"
