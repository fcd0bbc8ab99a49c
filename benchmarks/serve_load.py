"""A bounded load test of ``fcn-serve kserve`` on loopback, beside the same images through the
local runtime.

::

    python benchmarks/serve_load.py --model fcn8s.onnx --images ../shared/data/camvid/val \\
        --clients 4 --requests 200 --sizes 360x480,240x320,480x640 --json report.json

Starts ``fcn-serve kserve MODEL`` on 127.0.0.1 (a free port; or ``--url`` for a server already
running on this machine), then ``--clients`` threads, each with its own ``fcn-predict --server``
client (:class:`fcn_deploy.serve.client.RemoteSegmenter`), send ``--requests`` images in all,
cycling through the images and the ``--sizes`` (so sizes are mixed); each request is one image
end to end (client-side pre/post included, as ``fcn-predict --server`` does). Then the same
images through a local :class:`~fcn_deploy.segmenter.Segmenter` with as many threads. Reports
throughput (images/s) and latency p50/p90/p99 for both, and any errors (the run fails on one).

Bounded: ``--requests`` in all and ``--time-limit`` seconds per phase; it stops by itself and
only talks to 127.0.0.1. No torch. The server runs in its own process; on a 2-core machine the
server's and the local runs' figures are comparable only as ratios measured in the same run.
"""

from __future__ import annotations

import json
import os
import platform
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import List, Optional

import numpy as np

from fcn_deploy._util import atomic_write_text, run_cli
from fcn_deploy.errors import FcnError
from fcn_deploy.image import IMAGE_EXTENSIONS, load_image, resize_rgb


def _percentiles(ms: List[float]) -> dict:
    if not ms:
        return {"count": 0}
    a = np.asarray(ms, dtype=np.float64)
    return {"count": int(a.size), "mean": float(a.mean()), "p50": float(np.percentile(a, 50)),
            "p90": float(np.percentile(a, 90)), "p99": float(np.percentile(a, 99)), "max": float(a.max())}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: Path, name: str, *, threads: Optional[int], workers: int, timeout: float = 120.0):
    port = _free_port()
    cmd = [sys.executable, "-m", "fcn_deploy.serve.cli", "kserve", str(model), "--name", name,
           "--port", str(port), "--workers", str(workers)]
    if threads:
        cmd += ["--threads", str(threads)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            raise FcnError(f"the server exited with status {proc.returncode} before it was ready")
        try:
            with urllib.request.urlopen(f"{url}/v2/models/{name}/ready", timeout=2) as r:
                if r.status == 200:
                    return proc, url
        except OSError:
            time.sleep(0.3)
    stop_server(proc)
    raise FcnError(f"the server did not become ready in {timeout:.0f} s")


def stop_server(proc) -> None:
    if proc is not None and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def load_images(src: str, sizes, limit: int) -> List[np.ndarray]:
    p = Path(src)
    files = sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_EXTENSIONS) if p.is_dir() else [p]
    files = files[:limit]
    if not files:
        raise FcnError(f"{src}: no images")
    out = []
    for i, f in enumerate(files):
        h, w = sizes[i % len(sizes)]
        out.append(resize_rgb(load_image(f), (h, w)))
    return out


def run_phase(make_worker, images, requests: int, clients: int, time_limit: float):
    """``clients`` threads share a counter up to ``requests``; returns (latencies ms, errors, wall s)."""
    lock = threading.Lock()
    state = {"next": 0}
    lat: List[float] = []
    errors: List[str] = []
    deadline = time.monotonic() + time_limit

    def loop(k):
        try:
            work = make_worker()
        except Exception as e:  # noqa: BLE001 - reported, fails the run
            with lock:
                errors.append(f"client {k}: {e}")
            return
        try:
            while time.monotonic() < deadline:
                with lock:
                    i = state["next"]
                    if i >= requests:
                        return
                    state["next"] = i + 1
                im = images[i % len(images)]
                t0 = time.perf_counter()
                try:
                    res = work.segment(im)
                    if res.labels.shape != im.shape[:2]:
                        raise FcnError(f"label map {res.labels.shape} for an image {im.shape[:2]}")
                except Exception as e:  # noqa: BLE001
                    with lock:
                        errors.append(f"request {i}: {e}")
                    continue
                dt = (time.perf_counter() - t0) * 1e3
                with lock:
                    lat.append(dt)
        finally:
            close = getattr(work, "close", None)
            if close is not None and getattr(work, "_shared", False) is False:
                close()

    t0 = time.perf_counter()
    threads = [threading.Thread(target=loop, args=(k,), daemon=True) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(time_limit + 60)
    return lat, errors, time.perf_counter() - t0


class _Shared:
    """The one local Segmenter, shared by the threads (it is thread-safe)."""

    _shared = True

    def __init__(self, seg):
        self.seg = seg

    def segment(self, im):
        return self.seg.segment(im)


def _parser():
    from fcn_deploy.cli_kit import cli_parser, hw_list_type

    p = cli_parser(prog="serve_load", description="Bounded loopback load test of fcn-serve kserve beside the local runtime.")
    p.add_argument("--model", required=True, help=".onnx model to serve (and to run locally)")
    p.add_argument("--images", required=True, help="image folder (e.g. ../shared/data/camvid/val) or one image")
    p.add_argument("--url", default=None, help="a server already running on this machine (default: start one on 127.0.0.1)")
    p.add_argument("--name", default="seg", help="model name on the server (default seg)")
    p.add_argument("--mode", choices=["tensor", "ensemble"], default="tensor",
                   help="tensor: client-side pre/post (fcn-predict --server --model NAME); ensemble: PNG bytes to NAME_ensemble")
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--requests", type=int, default=200)
    p.add_argument("--sizes", type=hw_list_type(), default=[(360, 480), (240, 320), (480, 640)], metavar="HxW,...",
                   help="sizes the images are resized to, cycled (mixed sizes; default 360x480,240x320,480x640)")
    p.add_argument("--max-images", type=int, default=20, help="distinct images used (default 20)")
    p.add_argument("--threads", type=int, default=None, help="onnxruntime threads, server and local alike")
    p.add_argument("--workers", type=int, default=1, help="server processes (default 1)")
    p.add_argument("--time-limit", type=float, default=600.0, help="seconds per phase at most (default 600)")
    p.add_argument("--skip-local", action="store_true", help="no local-runtime phase")
    p.add_argument("--json", default=None, help="write the report here")
    return p


def _main(argv=None) -> int:
    args = _parser().parse_args(argv)
    if args.clients < 1 or args.requests < 1 or args.time_limit <= 0:
        raise FcnError("--clients, --requests and --time-limit must be positive")
    sizes = list(args.sizes)
    images = load_images(args.images, sizes, args.max_images)
    from fcn_deploy.serve.client import connect

    proc = None
    url = args.url
    try:
        if url is None:
            proc, url = start_server(Path(args.model), args.name, threads=args.threads, workers=args.workers)
        remote_name = args.name + ("_ensemble" if args.mode == "ensemble" else "")
        connect(url, remote_name).close()  # fail early on a wrong name
        # One warm-up request per size, not timed.
        warm = connect(url, remote_name)
        for im in images[:len(sizes)]:
            warm.segment(im)
        warm.close()
        lat, errors, wall = run_phase(lambda: connect(url, remote_name), images, args.requests, args.clients, args.time_limit)
    finally:
        stop_server(proc)
    report = {
        "schema": "fcn-serve-load/1",
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                    "load_avg_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None},
        "settings": {"model": Path(args.model).name, "mode": args.mode, "clients": args.clients, "requests": args.requests,
                     "sizes": [f"{h}x{w}" for h, w in sizes], "images": len(images), "threads": args.threads,
                     "workers": args.workers, "server": "fcn-serve kserve" if args.url is None else args.url},
        "server": {"latency_ms": _percentiles(lat), "throughput_ips": len(lat) / wall if wall > 0 else 0.0,
                   "wall_s": wall, "errors": errors[:20], "error_count": len(errors)},
    }
    if not args.skip_local:
        from fcn_deploy.segmenter import Segmenter

        opts = {"threads": args.threads} if args.threads else {}
        seg = Segmenter.load(args.model, backend="onnxruntime", **opts)
        try:
            for hw in sizes:
                seg.segment(np.zeros((*hw, 3), np.uint8))
            shared = _Shared(seg)
            llat, lerr, lwall = run_phase(lambda: shared, images, args.requests, args.clients, args.time_limit)
        finally:
            seg.close()
        report["local"] = {"latency_ms": _percentiles(llat), "throughput_ips": len(llat) / lwall if lwall > 0 else 0.0,
                           "wall_s": lwall, "errors": lerr[:20], "error_count": len(lerr)}
    report["machine"]["load_avg_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    text = json.dumps(report, indent=2) + "\n"
    if args.json:
        atomic_write_text(args.json, text)
    for phase in ("server", "local"):
        if phase in report:
            r = report[phase]
            la = r["latency_ms"]
            print(f"{phase:6s}: {la.get('count', 0)} ok, {r['error_count']} errors, {r['throughput_ips']:.2f} img/s, "
                  f"p50 {la.get('p50', float('nan')):.1f} ms, p99 {la.get('p99', float('nan')):.1f} ms")
    return 1 if report["server"]["error_count"] or report.get("local", {}).get("error_count") else 0


def main(argv=None) -> int:
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
