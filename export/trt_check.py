"""TensorRT-readiness check on the CPU (``fcn-export --check-trt FILE.onnx``).

Every node of an ONNX graph is checked against the TensorRT ONNX parser's operator table
(onnx-tensorrt ``docs/operators.md``; the table below is the TensorRT 10.15 one, which covers
opsets 9..24; TensorRT 10.0 covers 9..20). TensorRT 11.x is checked against the same entries:
its own table was not available when this was written, so 11.x readiness is derived, not read.
Nothing here needs TensorRT; the real proof is ``fcn-build`` on a GPU machine.

Checked per node: the op exists in the default ONNX domain and is supported; its data input
type is among the supported types; the documented restrictions of the ops this project can
emit (Q/DQ int8 with zero point 0 and TensorRT's per-channel weight axes, Resize modes,
MaxPool/AveragePool rank and dilations, Dropout in inference mode, Cast targets, constant
Slice/Squeeze/Unsqueeze axes, TopK ``sorted`` and K, ArgMax ``select_last_index``).
Dynamic crops (Shape -> Gather -> Unsqueeze -> Slice ends) are reported as supported: the
parser turns them into shape tensors when the engine has a dynamic-shape profile.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from fcn_deploy.errors import FcnError

# Supported data types per op (subset of the TensorRT 10.15 ONNX operator table: the ops an
# FCN export can contain plus the common ones a foreign model is likely to use).
_F = ("FLOAT", "FLOAT16", "BFLOAT16")
_FI = _F + ("INT32", "INT64")
_FIB = _FI + ("BOOL",)
SUPPORTED: Dict[str, Tuple[str, ...]] = {
    "Abs": _FI, "Add": _FI, "And": ("BOOL",), "ArgMax": _FI, "ArgMin": _FI, "AveragePool": _F,
    "BatchNormalization": _F, "Cast": _FIB + ("UINT8",), "CastLike": _FIB + ("UINT8",), "Ceil": _F,
    "Clip": _F, "Concat": _FIB, "Constant": _FIB + ("FLOAT8E4M3FN", "INT4"),
    "ConstantOfShape": _FIB, "Conv": _F, "ConvTranspose": _F, "CumSum": _F,
    "DepthToSpace": _FI, "DequantizeLinear": ("INT8", "FLOAT8E4M3FN", "INT4"), "Div": _FI,
    "Dropout": _F, "Einsum": _F, "Elu": _F, "Equal": _FI, "Erf": _F, "Exp": _F, "Expand": _FIB,
    "Flatten": _FIB, "Floor": _F, "Gather": _FIB, "GatherElements": _FIB, "GatherND": _FIB,
    "Gelu": _FI + ("INT8",), "Gemm": _F, "GlobalAveragePool": _F, "GlobalMaxPool": _F, "Greater": _FI,
    "GreaterOrEqual": _FI, "GroupNormalization": _F, "HardSigmoid": _F, "HardSwish": _F,
    "Identity": _FIB, "InstanceNormalization": _F, "LayerNormalization": _F, "LeakyRelu": _F,
    "Less": _FI, "LessOrEqual": _FI, "Log": _F, "LogSoftmax": _F, "LRN": _F, "MatMul": _F,
    "Max": _FI, "MaxPool": _F, "Mean": _FI, "Min": _FI, "Mod": _FI, "Mul": _FI, "Neg": _FI,
    "Not": ("BOOL",), "Or": ("BOOL",), "Pad": _FI, "Pow": _FI, "PRelu": _F,
    "QuantizeLinear": _F, "Range": _FI, "Reciprocal": _F, "ReduceMax": _FI, "ReduceMean": _FI,
    "ReduceMin": _FI, "ReduceProd": _FI, "ReduceSum": _FI, "ReduceSumSquare": _FI, "Relu": _FI,
    "Reshape": _FIB, "Resize": _F, "Round": _F, "Selu": _F, "Shape": _FIB, "Sigmoid": _F,
    "Sign": _FI, "Sin": _F, "Size": _FIB, "Slice": _FIB, "Softmax": _F, "Softplus": _F,
    "SpaceToDepth": _FI, "Split": _FIB, "Sqrt": _F, "Squeeze": _FIB, "Sub": _FI, "Sum": _FI,
    "Tanh": _F, "Tile": _FIB, "TopK": _FI, "Transpose": _FIB, "Unsqueeze": _FIB, "Upsample": _F,
    "Where": _FIB, "Xor": ("BOOL",),
}
# Listed as "N" (not supported) in the table.
UNSUPPORTED = frozenset({
    "AffineGrid", "Bernoulli", "BitShift", "BitwiseAnd", "BitwiseNot", "BitwiseOr", "BitwiseXor",
    "CenterCropPad", "Col2Im", "Compress", "ConcatFromSequence", "ConvInteger", "DFT", "Det",
    "DynamicQuantizeLinear", "ImageDecoder", "MatMulInteger", "MaxRoiPool", "MaxUnpool", "MelWeightMatrix",
    "Multinomial", "NegativeLogLikelihoodLoss", "Optional", "OptionalGetElement", "OptionalHasElement",
    "QLinearConv", "QLinearMatMul", "RegexFullMatch", "SequenceAt", "SequenceConstruct", "SequenceEmpty",
    "SequenceErase", "SequenceInsert", "SequenceLength", "SequenceMap", "SoftmaxCrossEntropyLoss",
    "SplitToSequence", "StringConcat", "StringNormalizer", "StringSplit", "TfIdfVectorizer", "Unique",
})
OPSET_RANGE_10_0 = (9, 20)
OPSET_RANGE_LATEST = (9, 24)
RESIZE_COORD_MODES = ("half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric", "align_corners")
RESIZE_MODES = ("nearest", "linear")
RESIZE_NEAREST_MODES = ("floor", "ceil", "round_prefer_floor", "round_prefer_ceil")
CAST_TARGETS = ("FLOAT", "FLOAT16", "BFLOAT16", "INT32", "INT64", "UINT8", "BOOL")
WEIGHT_AXIS = {"Conv": 0, "ConvTranspose": 1}


@dataclass(frozen=True)
class TrtIssue:
    node: str
    op: str
    message: str
    severity: str = "error"  # error: the parser refuses it; warning: works on some versions / slow

    def __str__(self) -> str:
        return f"{self.severity}: node {self.node!r} ({self.op}): {self.message}"


@dataclass(frozen=True)
class TrtReport:
    path: str
    opset: int
    nodes: int
    ops: Tuple[Tuple[str, int], ...]
    dynamic_crops: int
    issues: Tuple[TrtIssue, ...] = ()

    @property
    def ok(self) -> bool:
        return not any(i.severity == "error" for i in self.issues)

    def format(self) -> str:
        ops = ", ".join(f"{k} x{v}" for k, v in self.ops)
        lines = [f"{self.path}: opset {self.opset}, {self.nodes} nodes ({ops})"]
        if self.dynamic_crops:
            lines.append(f"  {self.dynamic_crops} dynamic crop(s) Shape -> Slice: supported with a dynamic-shape profile")
        lines += ["  " + str(i) for i in self.issues]
        verdict = "TensorRT-ready (10.x; 11.x by the same table)" if self.ok else "NOT TensorRT-ready"
        n_err = sum(i.severity == "error" for i in self.issues)
        n_warn = len(self.issues) - n_err
        lines.append(f"{verdict}: {n_err} error(s), {n_warn} warning(s)")
        return "\n".join(lines)


def load_onnx_checked(path):
    """onnx.load with one-line errors for missing, truncated or foreign files."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise FcnError(f"ONNX file not found: {path}")
    try:
        m = onnx.load(str(path), load_external_data=False)
    except Exception as e:
        raise FcnError(f"{path} is not a readable ONNX file ({type(e).__name__}); truncated or foreign?") from None
    if not m.graph.node or not m.opset_import:
        raise FcnError(f"{path} is not a readable ONNX file (empty graph); truncated or foreign?")
    return m


BIG_TENSOR_BYTES = 1 << 20


def _without_big_tensors(model):
    """A copy of ``model`` whose large initializers keep name, type and shape but no data: the
    check reads values only of small tensors (zero points, axes, K), and shape inference of a
    VGG16 (500+ MB) would otherwise serialise every weight."""
    import onnx

    light = onnx.ModelProto()
    for f in ("ir_version", "producer_name", "producer_version", "domain", "model_version", "doc_string"):
        setattr(light, f, getattr(model, f))
    light.opset_import.extend(model.opset_import)
    light.metadata_props.extend(model.metadata_props)
    g, lg = model.graph, light.graph
    lg.name = g.name
    lg.node.extend(g.node)
    lg.input.extend(g.input)
    lg.output.extend(g.output)
    lg.value_info.extend(g.value_info)
    for t in g.initializer:
        if len(t.raw_data) > BIG_TENSOR_BYTES or t.data_location == onnx.TensorProto.EXTERNAL:
            stub = lg.initializer.add()
            stub.name, stub.data_type = t.name, t.data_type
            stub.dims.extend(t.dims)
        else:
            lg.initializer.add().CopyFrom(t)
    return light


def _attr(node, name, default=None):
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def check_trt(model_or_path) -> TrtReport:
    """Check an ONNX model (path or ModelProto) against the TensorRT ONNX parser's table."""
    import onnx
    from onnx import TensorProto, numpy_helper

    if isinstance(model_or_path, (str, Path)):
        path = str(model_or_path)
        model = load_onnx_checked(model_or_path)
    else:
        path, model = "<model>", model_or_path
    model = _without_big_tensors(model)
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except Exception:
        inferred = model
    g = inferred.graph
    dtype: Dict[str, int] = {}
    for vi in list(g.input) + list(g.output) + list(g.value_info):
        dtype[vi.name] = vi.type.tensor_type.elem_type
    inits = {t.name: t for t in g.initializer}
    for t in g.initializer:
        dtype[t.name] = t.data_type
    producers = {}
    consts = {}
    for n in g.node:
        for o in n.output:
            producers[o] = n
        if n.op_type == "Constant":
            v = _attr(n, "value")
            if v is not None:
                consts[n.output[0]] = v
                dtype[n.output[0]] = v.data_type
    consumers: Dict[str, list] = collections.defaultdict(list)
    for n in g.node:
        for x in n.input:
            consumers[x].append(n)
    graph_outputs = {o.name for o in g.output}

    def tname(t: Optional[int]) -> str:
        return TensorProto.DataType.Name(t) if t else "unknown"

    def const_value(name):
        if name in inits:
            return numpy_helper.to_array(inits[name])
        if name in consts:
            return numpy_helper.to_array(consts[name])
        return None

    def is_const(name) -> bool:
        return name in inits or name in consts

    def depends_on_shape(name, depth=0) -> bool:
        p = producers.get(name)
        if p is None or depth > 12:
            return False
        if p.op_type == "Shape":
            return True
        return any(depends_on_shape(x, depth + 1) for x in p.input if x)

    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    issues: List[TrtIssue] = []
    if not OPSET_RANGE_LATEST[0] <= opset <= OPSET_RANGE_LATEST[1]:
        issues.append(TrtIssue("<model>", "opset", f"opset {opset} outside TensorRT 10.x's {OPSET_RANGE_LATEST[0]}..{OPSET_RANGE_LATEST[1]}"))
    elif opset > OPSET_RANGE_10_0[1]:
        issues.append(TrtIssue("<model>", "opset", f"opset {opset} needs a TensorRT newer than 10.0 (10.0 reads {OPSET_RANGE_10_0[0]}..{OPSET_RANGE_10_0[1]})", "warning"))

    dynamic_crops = 0
    for idx, n in enumerate(g.node):
        name = n.name or f"#{idx}"
        op = n.op_type
        err = lambda msg, sev="error": issues.append(TrtIssue(name, op, msg, sev))  # noqa: E731
        if n.domain not in ("", "ai.onnx"):
            err(f"custom domain {n.domain!r}: needs a TensorRT plugin")
            continue
        if op in UNSUPPORTED:
            err("not supported by the TensorRT ONNX parser")
            continue
        if op not in SUPPORTED:
            err("not in the TensorRT ONNX operator table this check knows")
            continue
        # Data input type.
        data_in = n.input[0] if n.input else ""
        if op not in ("Constant", "Shape", "Size") and data_in and dtype.get(data_in):
            t = tname(dtype[data_in])
            if t not in SUPPORTED[op]:
                err(f"input {data_in!r} is {t}; TensorRT supports {', '.join(SUPPORTED[op])}")
        # Restrictions.
        if op == "DequantizeLinear":
            zp = n.input[2] if len(n.input) > 2 and n.input[2] else ""
            if zp:
                z = const_value(zp)
                if z is None:
                    err("x_zero_point must be a constant zero")
                elif z.any():
                    err("x_zero_point must be zero")
                elif dtype.get(zp) != TensorProto.INT8 and dtype.get(zp) is not None and tname(dtype[zp]) not in ("FLOAT8E4M3FN", "INT4"):
                    err(f"zero point is {tname(dtype[zp])}; TensorRT quantizes to INT8")
            if data_in in inits:
                scale = inits.get(n.input[1]) if len(n.input) > 1 else None
                per_channel = scale is not None and len(scale.dims) == 1 and scale.dims[0] > 1
                if per_channel:
                    axis = _attr(n, "axis", 1)
                    rank = len(inits[data_in].dims)
                    for user in consumers.get(n.output[0], []):
                        if user.op_type in WEIGHT_AXIS and len(user.input) > 1 and user.input[1] == n.output[0]:
                            want = WEIGHT_AXIS[user.op_type]
                            if axis % rank != want:
                                err(f"{user.op_type} weights quantized per channel on axis {axis}; TensorRT needs the output-channel axis {want}")
        elif op == "QuantizeLinear":
            zp = n.input[2] if len(n.input) > 2 and n.input[2] else ""
            if not zp:
                out_t = _attr(n, "output_dtype", 0)
                if out_t != TensorProto.INT8:
                    err("no y_zero_point: the output defaults to UINT8; TensorRT needs INT8 with zero point 0")
            else:
                z = const_value(zp)
                if z is None:
                    err("y_zero_point must be a constant zero")
                elif z.any():
                    err("y_zero_point must be zero")
                elif dtype.get(zp) not in (TensorProto.INT8, None) and tname(dtype[zp]) not in ("FLOAT8E4M3FN", "INT4"):
                    err(f"zero point is {tname(dtype[zp])}; TensorRT quantizes to INT8 (UINT8 is not a quantized type there)")
        elif op == "Resize":
            mode = _attr(n, "mode", b"nearest")
            mode = mode.decode() if isinstance(mode, bytes) else mode
            ct = _attr(n, "coordinate_transformation_mode", b"half_pixel")
            ct = ct.decode() if isinstance(ct, bytes) else ct
            nm = _attr(n, "nearest_mode", b"round_prefer_floor")
            nm = nm.decode() if isinstance(nm, bytes) else nm
            if mode not in RESIZE_MODES:
                err(f"mode {mode!r}; TensorRT supports {', '.join(RESIZE_MODES)}")
            if ct not in RESIZE_COORD_MODES:
                err(f"coordinate_transformation_mode {ct!r}; TensorRT supports {', '.join(RESIZE_COORD_MODES)}")
            if mode == "nearest" and nm not in RESIZE_NEAREST_MODES:
                err(f"nearest_mode {nm!r} unsupported")
            if _attr(n, "antialias", 0):
                err("antialias is not supported")
            pol = _attr(n, "keep_aspect_ratio_policy", b"stretch")
            if (pol.decode() if isinstance(pol, bytes) else pol) != "stretch":
                err("keep_aspect_ratio_policy must be 'stretch'")
        elif op in ("MaxPool", "AveragePool"):
            ks = _attr(n, "kernel_shape", [])
            if len(ks) not in (2, 3):
                err(f"{len(ks)}D pooling; TensorRT pools 2D or 3D only")
            dil = _attr(n, "dilations", [])
            if dil and any(d != 1 for d in dil):
                err("dilations must be empty or all ones")
            if op == "MaxPool" and len(n.output) > 1 and n.output[1]:
                err("the Indices output is not supported")
        elif op in ("Conv", "ConvTranspose"):
            ks = _attr(n, "kernel_shape", None)
            w = n.input[1] if len(n.input) > 1 else ""
            rank = len(inits[w].dims) if w in inits else (len(ks) + 2 if ks else None)
            if rank is not None and rank not in (4, 5):
                err(f"{rank - 2}D {op}; TensorRT's table lists 2D and 3D", "warning")
            wsrc = producers.get(w)
            if not (w in inits or (wsrc is not None and wsrc.op_type in ("DequantizeLinear", "Constant", "Identity"))):
                err("weights are computed at run time; TensorRT needs build-time constant weights", "warning")
        elif op == "Dropout":
            tr = n.input[2] if len(n.input) > 2 and n.input[2] else ""
            if tr:
                v = const_value(tr)
                if v is None or bool(v):
                    err("is_training must be an initializer that is False")
        elif op in ("Cast", "CastLike"):
            to = _attr(n, "to", None)
            if op == "Cast" and to is not None and tname(to) not in CAST_TARGETS:
                err(f"Cast to {tname(to)}; TensorRT casts to {', '.join(CAST_TARGETS)}")
        elif op == "Slice":
            if len(n.input) > 3 and n.input[3] and not is_const(n.input[3]):
                err("axes must be a constant (TensorRT 8.x requires an initializer)", "warning")
            if any(depends_on_shape(x) for x in n.input[1:3] if x):
                dynamic_crops += 1
        elif op in ("Squeeze", "Unsqueeze"):
            if len(n.input) > 1 and n.input[1] and not is_const(n.input[1]):
                err("axes must be resolvable to a constant")
        elif op == "TopK":
            if _attr(n, "sorted", 1) != 1:
                err("sorted must be 1")
            k = const_value(n.input[1]) if len(n.input) > 1 else None
            if k is None:
                err("K must be a build-time constant", "warning")
            elif int(k.reshape(-1)[0]) >= 3840:
                err("K must be less than 3840")
        elif op in ("ArgMax", "ArgMin"):
            if _attr(n, "select_last_index", 0):
                err("select_last_index=1 is not documented as supported", "warning")
            for o in n.output:
                if o in graph_outputs:
                    err("ArgMax indices are a graph output: TensorRT computes them in INT32, ONNX declares INT64; "
                        "Cast to INT32 in the graph (fcn-export --output labels does)", "warning")
    ops = tuple(sorted(collections.Counter(n.op_type for n in g.node).items()))
    return TrtReport(path=path, opset=opset, nodes=len(g.node), ops=ops, dynamic_crops=dynamic_crops,
                     issues=tuple(issues))
