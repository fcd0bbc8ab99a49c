"""``fcn-bench --ceiling MODEL.onnx``: how fast can this model possibly run on this CPU?

A latency target ("N times faster than PyTorch") is only reachable if the model's arithmetic
fits in that time at the speed the CPU's kernels actually run. This module measures both sides:

1. the model's multiply-accumulates (MACs) at a given input shape, counted from the tensor
   shapes of one real onnxruntime run (Conv, ConvTranspose, MatMul, Gemm);
2. the throughput (GMAC/s) onnxruntime's CPU kernels reach on each of the model's own
   convolution layers run in isolation, in fp32 (``Conv``) and in int8 (``QLinearConv``,
   uint8 activations x int8 weights (random 7-bit values; the u8 x s8 kernels' speed does not
   depend on the values), the layout ``--int8-target cpu`` produces);
3. the *floor*: total MACs / the best per-layer throughput, i.e. the latency of the whole model
   if every layer ran as fast as the fastest layer does, with zero overhead between layers.

``reference_ms`` (e.g. PyTorch eager's median from a ``--compare`` run) turns the floor into the
largest speed-up direct convolution can give on this machine. Algorithms that do fewer
multiplications than direct convolution (Winograd, FFT) are not bounded by it; the per-layer
throughputs show whether the runtime uses them (a layer above the machine's dense peak would).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from fcn_deploy.errors import FcnError, first_line

log = logging.getLogger(__name__)

WEIGHTED_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")
PRECISIONS = ("fp32", "int8")
SCHEMA = "fcn-bench-ceiling/1"
DEFAULT_ITERATIONS = 3  # timed runs per layer probe
IR_VERSION = 8  # single-layer probe models: an IR version every supported onnxruntime reads
OPSET = 17


@dataclass(frozen=True)
class Layer:
    """One weighted node at a concrete input shape."""

    name: str
    op: str
    x_shape: Tuple[int, ...]
    w_shape: Tuple[int, ...]
    y_shape: Tuple[int, ...]
    attrs: Dict[str, object]
    macs: int


def layer_macs(op: str, x_shape, w_shape, y_shape) -> int:
    """Multiply-accumulates of one node, from its input, weight and output shapes."""
    if op == "Conv":  # W: (Cout, Cin/groups, kh, kw); each output element sums Cin/groups*kh*kw products
        return int(np.prod(y_shape)) * int(np.prod(w_shape[1:]))
    if op == "ConvTranspose":  # W: (Cin, Cout/groups, kh, kw); each input element scatters Cout/groups*kh*kw
        return int(np.prod(x_shape)) * int(np.prod(w_shape[1:]))
    if op in ("MatMul", "Gemm"):  # (.., M, K) x (K, N): M*N*K per batch
        return int(np.prod(y_shape)) * int(x_shape[-1])
    raise ValueError(op)


def _ort_session(model_bytes: bytes, threads: Optional[int], *, optimize: bool = True):
    # The one place outside fcn_deploy.backends that builds an InferenceSession, on purpose:
    # it runs in-memory graphs (the model with every tensor made an output, single-layer
    # probes), not a model file, so there is nothing for open_runner to open or describe.
    import onnxruntime as ort

    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = int(threads)
    so.log_severity_level = 3
    so.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                   else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    return ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])


def _attrs(node) -> Dict[str, object]:
    import onnx

    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def count_layers(model_path, shape: Sequence[int], *, threads: Optional[int] = None) -> List[Layer]:
    """Run ``model_path`` once on a random input of ``shape`` and return its weighted layers.

    The inputs, weights and outputs of every Conv/ConvTranspose/MatMul/Gemm are exposed as
    graph outputs, so the shapes are the ones the model really computes with (crops, dynamic
    axes and Q/DQ weights included).
    """
    import onnx
    from google.protobuf.message import DecodeError

    path = Path(model_path)
    if len(shape) != 4 or shape[1] != 3:
        raise FcnError(f"shape {tuple(shape)}: FCN models take N x 3 x H x W")
    if not path.is_file():
        raise FcnError(f"file not found: {path}")
    try:
        model = onnx.load(str(path))
    except (DecodeError, ValueError, OSError, RuntimeError) as e:
        raise FcnError(f"{path}: not a readable ONNX model ({type(e).__name__})") from None
    graph = model.graph
    inits = {i.name for i in graph.initializer}
    feeds = [i for i in graph.input if i.name not in inits]
    if len(feeds) != 1:
        raise FcnError(f"{path}: expected one image input, found {len(feeds)}")
    nodes = [n for n in graph.node if n.op_type in WEIGHTED_OPS and len(n.input) >= 2]
    if not nodes:
        raise FcnError(f"{path}: no Conv/ConvTranspose/MatMul/Gemm nodes to measure")
    have = {o.name for o in graph.output}
    wanted: List[str] = []
    for n in nodes:
        for t in (n.input[0], n.input[1], n.output[0]):
            if t not in have and t not in wanted:
                wanted.append(t)
    for t in wanted:
        graph.output.append(onnx.ValueInfoProto(name=t))
    try:
        sess = _ort_session(model.SerializeToString(), threads, optimize=False)
    except Exception as e:
        raise FcnError(f"{path}: onnxruntime cannot load it: {first_line(e)[:200]}") from None
    x = np.random.default_rng(0).standard_normal(tuple(shape)).astype(np.float32)
    names = [o.name for o in sess.get_outputs()]
    try:
        values = sess.run(None, {feeds[0].name: x})
    except Exception as e:
        raise FcnError(f"{path}: inference at {tuple(shape)} failed: {first_line(e)[:200]}") from None
    shapes = {k: tuple(v.shape) for k, v in zip(names, values)}
    init_shapes = {i.name: tuple(i.dims) for i in graph.initializer}
    layers = []
    for n in nodes:
        xs = shapes.get(n.input[0]) or init_shapes.get(n.input[0])
        ws = shapes.get(n.input[1]) or init_shapes.get(n.input[1])
        ys = shapes.get(n.output[0])
        if xs is None or ws is None or ys is None:  # every one was a graph output or an initializer
            raise FcnError(f"{path}: no shape for {n.op_type} {n.name or n.output[0]}; cannot count its MACs")
        layers.append(Layer(n.name or n.output[0], n.op_type, xs, ws, ys, _attrs(n),
                            layer_macs(n.op_type, xs, ws, ys)))
    return layers


# -- single-layer probes ------------------------------------------------------------------------

def _conv_probe(layer: Layer, precision: str) -> Tuple[bytes, np.ndarray]:
    """A one-node model computing ``layer`` with random weights, and an input for it."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(1)
    attrs = {k: v for k, v in layer.attrs.items()
             if k in ("strides", "pads", "dilations", "group", "kernel_shape", "auto_pad")}
    cout = layer.w_shape[0]
    if precision == "fp32":
        w = numpy_helper.from_array((rng.standard_normal(layer.w_shape) * 0.01).astype(np.float32), "W")
        b = numpy_helper.from_array(np.zeros(cout, np.float32), "B")
        node = helper.make_node("Conv", ["X", "W", "B"], ["Y"], **attrs)
        inits, xtype = [w, b], TensorProto.FLOAT
        x = rng.standard_normal(layer.x_shape).astype(np.float32)
    else:
        inits = [
            numpy_helper.from_array(np.array(0.02, np.float32), "xs"),
            numpy_helper.from_array(np.array(128, np.uint8), "xz"),
            numpy_helper.from_array(rng.integers(-63, 64, layer.w_shape).astype(np.int8), "W"),
            numpy_helper.from_array(np.full(cout, 0.01, np.float32), "ws"),
            numpy_helper.from_array(np.zeros(cout, np.int8), "wz"),
            numpy_helper.from_array(np.array(0.5, np.float32), "ys"),
            numpy_helper.from_array(np.array(128, np.uint8), "yz"),
            numpy_helper.from_array(np.zeros(cout, np.int32), "B"),
        ]
        node = helper.make_node("QLinearConv", ["X", "xs", "xz", "W", "ws", "wz", "ys", "yz", "B"], ["Y"], **attrs)
        xtype = TensorProto.UINT8
        x = rng.integers(0, 256, layer.x_shape).astype(np.uint8)
    graph = helper.make_graph([node], "probe", [helper.make_tensor_value_info("X", xtype, list(layer.x_shape))],
                              [helper.make_tensor_value_info("Y", xtype, list(layer.y_shape))], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION)
    onnx.checker.check_model(model)
    return model.SerializeToString(), x


def time_layer(layer: Layer, precision: str, *, threads: Optional[int], iterations: int = 3,
               warmup: int = 1) -> float:
    """Median milliseconds of ``layer`` alone in onnxruntime, after ``warmup`` untimed runs."""
    try:
        blob, x = _conv_probe(layer, precision)
        sess = _ort_session(blob, threads)
        for _ in range(max(0, warmup)):
            sess.run(None, {"X": x})
        times = []
        for _ in range(max(1, iterations)):
            t0 = time.perf_counter()
            sess.run(None, {"X": x})
            times.append(time.perf_counter() - t0)
    except Exception as e:
        raise FcnError(f"layer {layer.name}: the {precision} probe failed ({first_line(e)[:200]})") from None
    return float(np.median(times)) * 1000.0


def _probe_key(layer: Layer) -> tuple:
    a = layer.attrs
    return (layer.x_shape, layer.w_shape, tuple(a.get("strides", ())), tuple(a.get("pads", ())),
            tuple(a.get("dilations", ())), a.get("group", 1), a.get("auto_pad", b"NOTSET"))


def ceiling(model_path, shape: Sequence[int], *, threads: Optional[int] = None,
            iterations: int = DEFAULT_ITERATIONS, warmup: int = 1,
            reference_ms: Optional[float] = None, precisions: Sequence[str] = PRECISIONS,
            min_layer_macs: float = 0.0, progress: Optional[Callable[[str], None]] = None) -> dict:
    """Count the model's MACs at ``shape``, time its conv layers alone, derive the floor.

    Layers with fewer than ``min_layer_macs`` MACs, ConvTransposes and matmuls are counted but
    not timed (the FCN heads' upsampling is a fraction of a percent of the work). Identical
    layers (same shapes and attributes) are timed once.
    """
    from fcn_deploy.benchmarks.report import machine_info

    for p in precisions:
        if p not in PRECISIONS:
            raise FcnError(f"unknown precision {p!r}; valid: {', '.join(PRECISIONS)}")
    if progress:
        progress(f"counting MACs at {'x'.join(map(str, shape))}")
    layers = count_layers(model_path, shape, threads=threads)
    total = sum(l.macs for l in layers)
    by_op: Dict[str, int] = {}
    for l in layers:
        by_op[l.op] = by_op.get(l.op, 0) + l.macs
    timed: Dict[tuple, Dict[str, float]] = {}
    rows = []
    todo = [l for l in layers if l.op == "Conv" and l.macs >= min_layer_macs]
    for i, l in enumerate(layers):
        row = {"name": l.name, "op": l.op, "input": list(l.x_shape), "weight": list(l.w_shape),
               "output": list(l.y_shape), "macs": l.macs}
        if l in todo:
            key = _probe_key(l)
            if key not in timed:
                timed[key] = {}
                for p in precisions:
                    if progress:
                        progress(f"layer {todo.index(l) + 1}/{len(todo)} {l.name} ({p})")
                    timed[key][p] = time_layer(l, p, threads=threads, iterations=iterations, warmup=warmup)
            for p in precisions:
                ms = timed[key][p]
                row[f"{p}_ms"] = round(ms, 3)
                row[f"{p}_gmacs"] = round(l.macs / ms / 1e6, 2)
        rows.append(row)
    peak, floor, sum_ms, speedup = {}, {}, {}, {}
    for p in precisions:
        rates = [r[f"{p}_gmacs"] for r in rows if f"{p}_gmacs" in r]
        if not rates:
            continue
        peak[p] = max(rates)
        floor_ms = total / (peak[p] * 1e6)
        floor[p] = round(floor_ms, 3)
        sum_ms[p] = round(sum(r[f"{p}_ms"] for r in rows if f"{p}_ms" in r), 3)
        if reference_ms:
            speedup[p] = round(reference_ms / floor_ms, 2)
    return {
        "schema": SCHEMA,
        "model": str(model_path),
        "shape": list(shape),
        "threads": threads,
        "machine": machine_info(),
        "total_gmacs": round(total / 1e9, 3),
        "gmacs_by_op": {k: round(v / 1e9, 3) for k, v in by_op.items()},
        "layers": rows,
        "peak_gmacs_per_s": peak,
        "floor_ms": floor,
        "sum_layer_ms": sum_ms,
        "reference_ms": reference_ms,
        "max_speedup": speedup,
    }


def render(report: dict) -> str:
    """Markdown: the layer table, then the summary lines."""
    precs = [p for p in PRECISIONS if p in report["peak_gmacs_per_s"]]
    shape = "x".join(map(str, report["shape"]))
    out = [f"# Ceiling of `{report['model']}` at {shape}", "",
           f"- machine: {report['machine']['cpu']}, {report['machine']['cores']} cores, "
           f"{report['threads'] or 'default'} threads, load average {report['machine']['load_avg']}",
           f"- work: {report['total_gmacs']:.2f} GMAC ("
           + ", ".join(f"{k} {v:.2f}" for k, v in report["gmacs_by_op"].items()) + ")", "",
           "| layer | op | input | weight | GMAC | " + " | ".join(f"{p} ms | {p} GMAC/s" for p in precs) + " |",
           "| --- | --- | --- | --- | ---: | " + " | ".join("---: | ---:" for _ in precs) + " |"]
    for r in report["layers"]:
        cells = [r["name"], r["op"], "x".join(map(str, r["input"])), "x".join(map(str, r["weight"])),
                 f"{r['macs'] / 1e9:.3f}"]
        for p in precs:
            cells += [f"{r[p + '_ms']:.1f}" if p + "_ms" in r else "-",
                      f"{r[p + '_gmacs']:.1f}" if p + "_gmacs" in r else "-"]
        out.append("| " + " | ".join(cells) + " |")
    out.append("")
    for p in precs:
        line = (f"- {p}: best layer {report['peak_gmacs_per_s'][p]:.1f} GMAC/s; floor (all "
                f"{report['total_gmacs']:.1f} GMAC at that rate) **{report['floor_ms'][p]:.0f} ms**; "
                f"the timed layers alone sum to {report['sum_layer_ms'][p]:.0f} ms")
        if report["reference_ms"]:
            line += (f"; against the reference {report['reference_ms']:.0f} ms the largest possible "
                     f"speed-up is **{report['max_speedup'][p]:.2f}x**")
        out.append(line)
    out += ["", "The floor is direct convolution at the best rate onnxruntime's CPU kernels (fp32 `Conv`, "
            "int8 `QLinearConv`) reach on any of this model's layers; a target above the largest possible "
            "speed-up needs faster kernels, fewer multiplications (e.g. Winograd) or a faster CPU, not a "
            "better schedule."]
    return "\n".join(out) + "\n"
