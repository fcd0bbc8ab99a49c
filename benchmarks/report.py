"""fcn-bench reports: the JSON document (stable keys), a console table, Markdown and a PNG plot.

JSON layout (``schema`` = "fcn-bench/2"; every key below is always present, values may be null)::

    schema, tool_version, created_utc, machine{cpu, cores, platform, python, numpy, load_avg},
    settings{warmup, iterations, duration_s, threads, seed, inputs, interleaved, settle_ms,
             prepost_iterations, cv_threshold, concurrency},
    reference,                       # label the speedups refer to (the first target)
    targets[]{label, backend, path, precision, device, load_ms, load_rss_mb, error},
    results[]{target, shape, batch, height, width, error, iterations, latency_ms, throughput_ips,
              cv_warning, h2d_ms, compute_ms, d2h_ms, pre_ms, post_ms, speedup, paired_speedup,
              concurrency, concurrent_ips},
    peak_rss_mb, warnings[], notes[]

``latency_ms``, ``h2d_ms``, ``compute_ms``, ``d2h_ms``, ``pre_ms``, ``post_ms`` are summaries
{count, min, mean, median, p90, p95, p99, max, std, cv} in milliseconds, or null when not
measured. ``speedup`` = reference median / this median (>1: faster than the reference);
``paired_speedup`` = median over interleaved rounds of reference_i / this_i.
``concurrent_ips``: images/s with ``concurrency`` requests in flight (``--concurrency``), null
when not measured; ``throughput_ips`` is batch / median latency, one request at a time.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
from typing import Dict, List, Optional

import numpy as np

from fcn_deploy._util import atomic_path, atomic_write_text
from fcn_deploy.benchmarks.stats import cv_warning, paired_speedup, speedup, summarize, summarize_optional, throughput

# /2: targets[].backend is the runtime's backend name (onnxruntime, tensorrt, ...; the target
# names of fcn_deploy.backends); /1 reports said onnx, plan, ... there (the bench's old names).
SCHEMA = "fcn-bench/2"
TOP_KEYS = ("schema", "tool_version", "created_utc", "machine", "settings", "reference", "targets",
            "results", "peak_rss_mb", "warnings", "notes")
MACHINE_KEYS = ("cpu", "cores", "platform", "python", "numpy", "load_avg")
SETTINGS_KEYS = ("warmup", "iterations", "duration_s", "threads", "seed", "inputs", "interleaved",
                 "settle_ms", "prepost_iterations", "cv_threshold", "concurrency")
TARGET_KEYS = ("label", "backend", "path", "precision", "device", "load_ms", "load_rss_mb", "error")
RESULT_KEYS = ("target", "shape", "batch", "height", "width", "error", "iterations", "latency_ms",
               "throughput_ips", "cv_warning", "h2d_ms", "compute_ms", "d2h_ms", "pre_ms", "post_ms",
               "speedup", "paired_speedup", "concurrency", "concurrent_ips")

MEMORY_NOTE = (
    "peak_rss_mb is the process's resident-set high-water mark (getrusage ru_maxrss) over the "
    "whole run, so with several targets it covers all of them; load_rss_mb is the RSS growth "
    "while one target was loaded (model weights, runtime arenas). Device (GPU) memory is not included."
)


def cpu_name() -> str:
    """CPU model name as lscpu shows it (from /proc/cpuinfo), else platform.processor()."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def machine_info() -> Dict[str, object]:
    try:
        load = [round(v, 2) for v in os.getloadavg()]
    except (OSError, AttributeError):
        load = None
    return {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "load_avg": load,
    }


def _tool_version() -> str:
    try:
        import fcn_deploy

        return fcn_deploy.__version__
    except Exception:
        return "?"


def build_report(opened, series, config, *, peak_rss_mb: Optional[float] = None) -> dict:
    """Assemble the JSON report from opened targets and their per-shape series."""
    from fcn_deploy.benchmarks.bench import PREPOST_ITERATIONS

    targets = [
        {
            "label": t.spec.label, "backend": t.spec.backend, "path": t.spec.path,
            "precision": t.precision, "device": t.device, "load_ms": t.load_ms,
            "load_rss_mb": t.load_rss_mb, "error": t.error,
        }
        for t in opened
    ]
    reference = targets[0]["label"] if targets else None
    warnings: List[str] = [f"{t.spec.label}: {t.hint}" for t in opened if getattr(t, "hint", None)]
    results = []
    by_shape: Dict[tuple, Dict[str, object]] = {}
    for s in series:
        by_shape.setdefault(tuple(s.shape), {})[s.label] = s
    for s in series:
        n, _, h, w = s.shape
        row = {k: None for k in RESULT_KEYS}
        row.update(target=s.label, shape=list(s.shape), batch=n, height=h, width=w,
                   iterations=len(s.latency_ms), cv_warning=False, concurrency=getattr(config, "concurrency", 1),
                   concurrent_ips=getattr(s, "concurrent_ips", None))
        if s.latency_ms:
            lat = summarize(s.latency_ms)
            row["latency_ms"] = lat.to_dict()
            row["throughput_ips"] = throughput(s.latency_ms, n)
            msg = cv_warning(lat, label=f"{s.label} at {'x'.join(map(str, s.shape))}", threshold=config.cv_threshold)
            if msg:
                row["cv_warning"] = True
                warnings.append(msg)
            for key, vals in (("h2d_ms", s.h2d_ms), ("compute_ms", s.compute_ms), ("d2h_ms", s.d2h_ms),
                              ("pre_ms", s.pre_ms), ("post_ms", s.post_ms)):
                summ = summarize_optional(vals)
                row[key] = summ.to_dict() if summ else None
            ref = by_shape[tuple(s.shape)].get(reference) if len(targets) > 1 else None
            if ref is not None and ref.latency_ms:
                row["speedup"] = speedup(float(np.median(ref.latency_ms)), lat.median)
                row["paired_speedup"] = paired_speedup(ref.latency_ms, s.latency_ms)
        row["error"] = s.error
        if s.error and not s.latency_ms:
            row["iterations"] = 0
        results.append(row)
    if len(targets) > 1:
        for shape, d in by_shape.items():
            ref = d.get(reference)
            if ref is None or not ref.latency_ms:
                warnings.append(f"reference {reference} has no result at {'x'.join(map(str, shape))}: no speedups there")
    settings = {
        "warmup": config.warmup,
        "iterations": config.iterations,
        "duration_s": config.duration_s,
        "threads": config.threads,
        "seed": config.seed,
        "inputs": f"images from {config.images}" if config.images else f"random uint8 pixels (seed {config.seed})",
        "interleaved": len(targets) > 1,
        "settle_ms": config.settle_ms if len(targets) > 1 else 0.0,
        "prepost_iterations": PREPOST_ITERATIONS if config.prepost else 0,
        "cv_threshold": config.cv_threshold,
        "concurrency": getattr(config, "concurrency", 1),
    }
    notes = [MEMORY_NOTE]
    from fcn_deploy.benchmarks.targets import is_gpu_target

    if any(is_gpu_target(t["backend"]) for t in targets):
        notes.append("GPU timings use CUDA events after synchronisation; this code path is unverified on hardware.")
    return {
        "schema": SCHEMA,
        "tool_version": _tool_version(),
        "created_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": machine_info(),
        "settings": settings,
        "reference": reference,
        "targets": targets,
        "results": results,
        "peak_rss_mb": peak_rss_mb,
        "warnings": warnings,
        "notes": notes,
    }


# -- rendering ------------------------------------------------------------------------------------

def _f(v, fmt="{:.2f}") -> str:
    return "-" if v is None else fmt.format(v)


def _ms(d: Optional[dict], key: str = "median") -> str:
    if not d:
        return "-"
    v = d[key]
    return f"{v:.1f}" if v >= 100 else f"{v:.2f}"


def _speed(v: Optional[float]) -> str:
    return "-" if v is None else f"{v:.2f}x"


def _table_rows(report: dict, shape) -> List[List[str]]:
    rows = []
    for r in report["results"]:
        if r["shape"] != list(shape):
            continue
        if r["latency_ms"] is None:
            rows.append([r["target"], f"error: {r['error'] or 'no measurement'}"] + [""] * 11)
            continue
        lat = r["latency_ms"]
        transfers = "-"
        if r["h2d_ms"] or r["d2h_ms"]:
            transfers = f"{_ms(r['h2d_ms'])}/{_ms(r['compute_ms'])}/{_ms(r['d2h_ms'])}"
        rows.append([
            r["target"], _ms(lat), _ms(lat, "p90"), _ms(lat, "p99"), _ms(lat, "mean"), _ms(lat, "min"),
            f"{100 * lat['cv']:.1f}%" + (" !" if r["cv_warning"] else ""),
            _f(r["throughput_ips"], "{:.2f}"), _speed(r["speedup"]), _speed(r["paired_speedup"]),
            _ms(r["pre_ms"]), _ms(r["post_ms"]), transfers + (f" (error later: {r['error']})" if r["error"] else ""),
        ] + ([_f(r["concurrent_ips"], "{:.2f}")] if _concurrency(report) > 1 else []))
    return rows


def _concurrency(report: dict) -> int:
    return int(report["settings"].get("concurrency") or 1)


def _header(report: dict) -> List[str]:
    k = _concurrency(report)
    return HEADER + ([f"img/s, {k} in flight"] if k > 1 else [])


HEADER = ["target", "median ms", "p90", "p99", "mean", "min", "CV", "img/s", "speedup", "paired",
          "pre ms", "post ms", "h2d/compute/d2h ms"]


def _shapes(report: dict) -> List[tuple]:
    seen = []
    for r in report["results"]:
        if tuple(r["shape"]) not in seen:
            seen.append(tuple(r["shape"]))
    return seen


def _settings_line(report: dict) -> str:
    s = report["settings"]
    runs = f"{s['iterations']} iterations" if s["iterations"] else f"~{s['duration_s']:g} s"
    inter = ", interleaved round-robin" if s["interleaved"] else ""
    threads = f", {s['threads']} threads" if s["threads"] else ""
    return f"{s['warmup']} warm-up, {runs}{inter}{threads}; inputs: {s['inputs']}"


def render_text(report: dict) -> str:
    """The console table: one block per shape."""
    m = report["machine"]
    lines = [f"fcn-bench on {m['cpu']} ({m['cores']} cores), load {m['load_avg']}", _settings_line(report)]
    if report["reference"] and len(report["targets"]) > 1:
        lines.append(f"speedup = median of {report['reference']} / median of the row (>1 = faster); "
                     "paired = median of per-round ratios")
    for shape in _shapes(report):
        lines.append("")
        lines.append(f"shape {'x'.join(map(str, shape))} (batch {shape[0]})")
        header = _header(report)
        rows = [header] + _table_rows(report, shape)
        widths = [max(len(r[i]) for r in rows if len(r) > i and not r[i].startswith("error:")) for i in range(len(header))]
        for r in rows:
            if len(r) > 1 and r[1].startswith("error:"):
                lines.append(f"{r[0]:<{widths[0]}}  {r[1]}")
            else:
                lines.append("  ".join(c.ljust(widths[i]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(r)).rstrip())
    if report["peak_rss_mb"] is not None:
        lines.append("")
        lines.append(f"peak RSS of the process: {report['peak_rss_mb']:.0f} MiB")
    for w in report["warnings"]:
        lines.append(f"warning: {w}")
    return "\n".join(lines)


def render_markdown(report: dict) -> str:
    m = report["machine"]
    out = [
        "# fcn-bench report",
        "",
        f"- machine: {m['cpu']}, {m['cores']} cores, {m['platform']}, load average {m['load_avg']}",
        f"- date (UTC): {report['created_utc']}, fcn-deploy {report['tool_version']}",
        f"- settings: {_settings_line(report)}",
    ]
    if report["reference"] and len(report["targets"]) > 1:
        out.append(f"- speedup: median latency of `{report['reference']}` divided by the row's (>1 = faster); "
                   "paired: median of the per-round ratios of the interleaved run")
    out += ["", "## Targets", "", "| target | backend | precision | device | load ms | load RSS MiB | error |",
            "| --- | --- | --- | --- | ---: | ---: | --- |"]
    for t in report["targets"]:
        out.append(f"| `{t['label']}` | {t['backend']} | {t['precision'] or '-'} | {t['device'] or '-'} | "
                   f"{_f(t['load_ms'], '{:.0f}')} | {_f(t['load_rss_mb'], '{:.0f}')} | {t['error'] or ''} |")
    for shape in _shapes(report):
        header = _header(report)
        out += ["", f"## {'x'.join(map(str, shape))} (batch {shape[0]})", "",
                "| " + " | ".join(header) + " |", "| --- |" + " ---: |" * (len(header) - 1)]
        for r in _table_rows(report, shape):
            if r[1].startswith("error:"):
                out.append(f"| `{r[0]}` | {r[1].replace('|', '/')} |" + " |" * (len(header) - 2))
            else:
                out.append("| `" + r[0] + "` | " + " | ".join(c.replace("|", "/") for c in r[1:]) + " |")
    out += ["", "## Memory", ""]
    if report["peak_rss_mb"] is not None:
        out.append(f"Peak RSS of the process: {report['peak_rss_mb']:.0f} MiB.")
    out += [f"- {n}" for n in report["notes"]]
    if report["warnings"]:
        out += ["", "## Warnings", ""] + [f"- {w}" for w in report["warnings"]]
    return "\n".join(out) + "\n"


def write_json(report: dict, path) -> None:
    atomic_write_text(path, json.dumps(report, indent=2, sort_keys=False) + "\n")


def write_markdown(report: dict, path) -> None:
    atomic_write_text(path, render_markdown(report))


def write_plot(report: dict, path) -> str:
    """The scaling curves, as a PNG: left, median latency (with p90 whiskers) against pixels per
    image, one line per target and batch; right (when the run has several batch sizes at one
    resolution), images/s against batch per target: batch / median latency, and the
    ``--concurrency`` figure where measured. Returns a one-line note saying what was written, or
    why nothing was."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return "note: matplotlib is not installed, so no plot was written (pip install 'fcn-deploy[plot]')"
    lines: Dict[tuple, list] = {}
    by_hw: Dict[tuple, Dict[str, list]] = {}
    for r in report["results"]:
        if r["latency_ms"] is None:
            continue
        lines.setdefault((r["target"], r["batch"]), []).append(
            (r["height"] * r["width"], f"{r['height']}x{r['width']}", r["latency_ms"]["median"], r["latency_ms"]["p90"]))
        by_hw.setdefault((r["height"], r["width"]), {}).setdefault(r["target"], []).append(
            (r["batch"], r["throughput_ips"], r.get("concurrent_ips")))
    if not lines:
        return "note: no measurements, so no plot was written"
    # The resolution with the most batch sizes gets the img/s panel (needs at least two).
    hw, curves = max(by_hw.items(), key=lambda kv: max(len(v) for v in kv[1].values()))
    batch_panel = max(len(v) for v in curves.values()) >= 2
    fig = Figure(figsize=(13 if batch_panel else 8, 5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 2 if batch_panel else 1, 1)
    ticks = {}
    for (label, batch), pts in lines.items():
        if batch_panel and batch > 1 and len(pts) < 2:
            continue  # a lone batched point: the img/s panel shows it
        pts.sort()
        xs = [p[0] / 1e6 for p in pts]
        ys = [p[2] for p in pts]
        err = [max(0.0, p[3] - p[2]) for p in pts]
        name = label if batch == 1 else f"{label} (batch {batch})"
        ax.errorbar(xs, ys, yerr=[[0] * len(err), err], marker="o", capsize=3, label=name)
        for p in pts:
            ticks[p[0] / 1e6] = p[1]
    ax.set_xlabel("input resolution H x W (axis: pixels per image)")
    ax.set_ylabel("latency, median ms (whisker: p90)")
    ax.set_yscale("log")
    if len(ticks) > 1:
        ax.set_xscale("log")
        ax.minorticks_off()
    ax.set_xticks(sorted(ticks))
    ax.set_xticklabels([ticks[k] for k in sorted(ticks)], rotation=30)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("latency against resolution")
    if batch_panel:
        bx = fig.add_subplot(1, 2, 2)
        batches_seen = set()
        for label, pts in curves.items():
            pts.sort()
            batches_seen.update(p[0] for p in pts)
            line = bx.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=f"{label}")[0]
            conc = [(p[0], p[2]) for p in pts if p[2]]
            if conc:
                k = report["settings"].get("concurrency")
                bx.plot([c[0] for c in conc], [c[1] for c in conc], marker="s", linestyle="--", color=line.get_color(),
                        label=f"{label}, {k} in flight")
        bx.set_xscale("log", base=2)
        bx.set_xticks(sorted(batches_seen))
        bx.set_xticklabels([str(b) for b in sorted(batches_seen)])
        bx.minorticks_off()
        bx.set_xlabel(f"batch (images per request) at {hw[0]}x{hw[1]}")
        bx.set_ylabel("images per second")
        bx.set_yscale("log")
        bx.grid(True, which="both", alpha=0.3)
        bx.legend(fontsize=8)
        bx.set_title("throughput against batch")
    load = report["machine"].get("load_avg")
    fig.suptitle(f"fcn-bench on {report['machine']['cpu']} ({report['machine']['cores']} cores), load {load}, "
                 f"{report['created_utc']}", fontsize=10)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    return f"wrote {path}"
