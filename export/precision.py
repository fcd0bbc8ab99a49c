"""Precision variants baked into the ONNX graph: fp16 and int8 QDQ.

TensorRT 11 is strongly typed (no builder precision flags), so the precision lives in the
ONNX file itself.

fp16 (:func:`convert_fp16`), written with ``onnx`` alone:
- every float32 initializer / Constant consumed by float16 compute becomes float16;
- every node computes in float16 except the ops in :data:`KEEP_FP32_OPS` (ArgMax, Softmax,
  LogSoftmax: the tail of a ``labels`` / ``probs`` model runs in float32 on float32 logits) and
  nodes named in ``keep_nodes``; Cast nodes are inserted where the two meet;
- graph I/O stays float32 by default (``io="fp16"`` makes the float I/O float16); the
  ``labels`` output stays int32.
Shape-only consumers (Shape, Size) read a tensor of any type and get no Cast.

int8 (:func:`quantize_int8`): onnxruntime's static QDQ quantization calibrated on real images
(see the function's docstring for the TensorRT-oriented choices).
"""

from __future__ import annotations

import contextlib
import io
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from fcn_deploy.datasets import LIST_FORMATS
from fcn_deploy.errors import FcnError, first_line, unknown_name

log = logging.getLogger(__name__)

KEEP_FP32_OPS = frozenset({"ArgMax", "ArgMin", "Softmax", "LogSoftmax"})
# Ops that only read the shape of their input: any dtype, never a Cast.
_SHAPE_ONLY_OPS = frozenset({"Shape", "Size"})
# Ops whose output float type is fixed by an attribute, not by their inputs.
_TYPE_FIXED_OPS = frozenset({"Cast", "CastLike", "ArgMax", "ArgMin", "Shape", "Size", "QuantizeLinear"})

# CPU execution used to verify an fp16 ONNX (see docs/export.md "fp16 on this CPU").
FP16_VERIFY_ENGINE = "onnxruntime"


# ------------------------------------------------------------------------------------------------
# fp16
# ------------------------------------------------------------------------------------------------


def _float_tensor_types(model) -> Dict[str, int]:
    """name -> elem_type for every tensor whose type shape inference knows."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    g = inferred.graph
    types = {}
    for vi in list(g.input) + list(g.output) + list(g.value_info):
        types[vi.name] = vi.type.tensor_type.elem_type
    for t in g.initializer:
        types[t.name] = t.data_type
    for n in g.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    types[n.output[0]] = a.t.data_type
    return types


def convert_fp16(model, *, io: str = "fp32", keep_ops: Iterable[str] = KEEP_FP32_OPS,
                 keep_nodes: Sequence[str] = ()):
    """Return a float16 copy of an fp32 ONNX ``model`` (see module docstring).

    ``io``: "fp32" (default) keeps float graph inputs/outputs float32, "fp16" makes them float16.
    ``keep_ops`` / ``keep_nodes``: op types / node names that stay float32.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    if io not in ("fp32", "fp16"):
        raise unknown_name("fp16 I/O type", io, ("fp32", "fp16"))
    FLOAT, HALF = TensorProto.FLOAT, TensorProto.FLOAT16
    src = model
    model = onnx.ModelProto()
    model.CopyFrom(src)
    g = model.graph
    types = _float_tensor_types(model)
    keep_ops, keep_nodes = frozenset(keep_ops), frozenset(keep_nodes)

    def is_float(name: str) -> bool:
        return types.get(name) in (FLOAT, HALF)

    def node_half(n) -> bool:
        return n.op_type not in keep_ops and n.name not in keep_nodes

    # Home precision of each float tensor: the type it is produced in.
    home: Dict[str, int] = {}
    io_type = HALF if io == "fp16" else FLOAT
    graph_inputs = {i.name for i in g.input}
    for i in g.input:
        if types.get(i.name) == FLOAT:
            home[i.name] = io_type
            i.type.tensor_type.elem_type = io_type

    consumers: Dict[str, List] = {}
    for n in g.node:
        for x in n.input:
            consumers.setdefault(x, []).append(n)

    # Initializers: float16 when every float consumer computes in float16.
    for t in g.initializer:
        if t.data_type != FLOAT:
            continue
        users = consumers.get(t.name, [])
        if users and all(node_half(u) or u.op_type in _SHAPE_ONLY_OPS for u in users):
            arr = numpy_helper.to_array(t)
            _warn_range(t.name, arr)
            t.CopyFrom(numpy_helper.from_array(arr.astype(np.float16), t.name))
            home[t.name] = HALF
        else:
            home[t.name] = FLOAT

    new_nodes = []
    casts: Dict[Tuple[str, int], str] = {}

    def cast_to(name: str, to: int) -> str:
        key = (name, to)
        if key not in casts:
            out = f"{name}__to_{'fp16' if to == HALF else 'fp32'}"
            new_nodes.append(helper.make_node("Cast", [name], [out], to=to,
                                              name=f"{name}__cast_{'fp16' if to == HALF else 'fp32'}"))
            casts[key] = out
        return casts[key]

    for n in g.node:
        half = node_half(n)
        want = HALF if half else FLOAT
        if n.op_type == "Constant" and half:
            for a in n.attribute:
                if a.name == "value" and a.t.data_type == FLOAT:
                    arr = numpy_helper.to_array(a.t)
                    _warn_range(n.name or n.output[0], arr)
                    a.t.CopyFrom(numpy_helper.from_array(arr.astype(np.float16), a.t.name))
            home[n.output[0]] = HALF if types.get(n.output[0]) == FLOAT else types.get(n.output[0])
            new_nodes.append(n)
            continue
        if n.op_type not in _SHAPE_ONLY_OPS and n.op_type not in ("Cast",):
            for k, x in enumerate(n.input):
                if x and is_float(x) and x in home and home[x] != want:
                    n.input[k] = cast_to(x, want)
        new_nodes.append(n)
        for y in n.output:
            if not y or types.get(y) not in (FLOAT, HALF):
                continue
            if n.op_type in _TYPE_FIXED_OPS:
                home[y] = types[y]
            else:
                home[y] = want

    # Graph outputs: the requested I/O type.
    tail = []
    for o in g.output:
        if types.get(o.name) not in (FLOAT, HALF):
            continue
        h = home.get(o.name, FLOAT)
        if h != io_type:
            inner = f"{o.name}__{'fp16' if h == HALF else 'fp32'}"
            for n in new_nodes:
                for k, y in enumerate(n.output):
                    if y == o.name:
                        n.output[k] = inner
                for k, x in enumerate(n.input):
                    if x == o.name:
                        n.input[k] = inner
            tail.append(helper.make_node("Cast", [inner], [o.name], to=io_type, name=f"{o.name}__cast_out"))
        o.type.tensor_type.elem_type = io_type

    del g.node[:]
    g.node.extend(_toposort(new_nodes + tail, graph_inputs | {t.name for t in g.initializer}))
    return reinfer_shapes(model, "fp16 conversion")


def reinfer_shapes(model, what: str):
    """Drop the graph's stale value_info and infer shapes again in strict mode, after a graph
    rewrite (``what`` names it in the one-line error when the result is inconsistent)."""
    import onnx

    del model.graph.value_info[:]
    try:
        return onnx.shape_inference.infer_shapes(model, strict_mode=True)
    except Exception as e:
        raise FcnError(f"{what} produced an inconsistent graph: {first_line(e)[:300]}") from None


def _warn_range(name: str, arr: np.ndarray) -> None:
    a = np.abs(arr[np.isfinite(arr)]) if arr.size else arr
    if a.size and float(a.max()) > 65504:
        log.warning("fp16: %s has values up to %.3g, beyond float16's range (65504)", name, float(a.max()))


def _toposort(nodes, available: set) -> list:
    """Order nodes so every input is produced before use (Casts were appended out of order)."""
    avail = set(available) | {""}
    pending = list(nodes)
    out = []
    while pending:
        rest = []
        for n in pending:
            if all(x in avail for x in n.input):
                out.append(n)
                avail.update(n.output)
            else:
                rest.append(n)
        if len(rest) == len(pending):
            missing = sorted({x for n in rest for x in n.input if x not in avail})
            raise FcnError(f"graph has inputs nobody produces: {', '.join(missing[:5])}")
        pending = rest
    return out


# ------------------------------------------------------------------------------------------------
# int8 QDQ
# ------------------------------------------------------------------------------------------------

# Calibration layouts: those of fcn_deploy.datasets.list_images (the train split is used).
# The calibration data layouts: the dataset registry's listable ones (an image folder or a labelled set).
CALIB_FORMATS = LIST_FORMATS
CALIB_METHODS = ("minmax", "entropy", "percentile")
# Ops whose inputs get Q/DQ. Conv / ConvTranspose: activations per tensor, weights per channel
# (TensorRT: "quantize all inputs of weighted operations"). Add: both inputs of every skip
# fusion, so TensorRT can fuse the Add into the preceding int8 convolution. MaxPool: int8 in
# and out (TensorRT and onnxruntime both run it on int8). Nothing after the last upsampling
# is quantized: the final crop, ArgMax and Softmax stay float.
QUANT_OP_TYPES = ("Conv", "ConvTranspose", "Add", "MaxPool")
# Ops whose outputs get no Q/DQ of their own (the next quantized op quantizes its input).
OUTPUT_FLOAT_OP_TYPES = ("Conv", "ConvTranspose", "Add", "MaxPool")
# Per-channel axis of the weights: output channels. Conv weights are (C_out, C_in/g, kH, kW);
# ConvTranspose weights are (C_in, C_out/g, kH, kW), so their output-channel axis is 1.
WEIGHT_AXIS = {"Conv": 0, "ConvTranspose": 1}
# Calibration defaults, chosen on CamVid (ResNet-18 FCN-8s, 40 held-out train images; see
# docs/export.md "int8 accuracy"): percentile 99.99 matched or beat minmax, entropy, percentile
# 99.9 / 99.999; 32, 64 or 128 images gave the same agreement.
DEFAULT_CALIB_METHOD = "percentile"
DEFAULT_PERCENTILE = 99.99
# Who the int8 Q/DQ layout is for (see quantize_int8):
# - "tensorrt": int8 activations with zero point 0 everywhere (TensorRT's rule); onnxruntime on
#   x86 cannot fuse a DQ -> Conv -> Relu -> Q(zero point 0) group into QLinearConv (a Relu is only
#   absorbed when the Q's zero point is the type's minimum), so most convolutions run in float
#   between Q/DQ: no faster than fp32 there. OpenVINO CPU still runs every Conv in u8.
# - "cpu": uint8 asymmetric activations (post-ReLU tensors use the whole 0..255 range and the
#   Relu folds into the quantization), int8 per-channel weights: onnxruntime fuses every
#   quantized backbone Conv into QLinearConv. Not loadable by TensorRT (uint8 zero points).
#   Weights keep 8 bits while the stem stays float: AVX2 without VNNI sums u8 x s8 pairs in
#   16 bits (VPMADDUBSW), and on CamVid only the stem (raw image x 7x7 weights) saturated;
#   with the stem quantized (quantize_stem) the weights drop to 7 bits (reduce_range), which
#   cannot saturate.
INT8_TARGETS = ("tensorrt", "cpu")


@dataclass(frozen=True)
class CalibConfig:
    """Where the int8 calibration images come from and how ranges are computed.

    ``data``: dataset folder. ``format``: how its train images are listed, by
    :func:`fcn_deploy.datasets.list_images` (the readers fcn-train uses; label masks are never
    listed): ``images`` (every image file directly in DIR), ``camvid`` (``DIR/train/`` only),
    ``voc`` (``JPEGImages`` named by ``ImageSets/Segmentation/train.txt``) or ``folders``
    (``DIR/images/train/``, or the flat ``DIR/images/`` minus every 5th file).
    ``images``: how many, spread evenly over the sorted list. ``method``: minmax | entropy |
    percentile (default; keeps ``percentile`` % of each tensor's absolute-value histogram,
    default 99.99). ``size``: (H, W) to resize to, None keeps each image's own size.
    ``quantize_head``: also quantize the FCN head (the upsampling ConvTransposes and the skip
    Adds, which carry class scores); by default they stay float, see :func:`head_nodes`.
    ``quantize_stem``: also quantize the stem (the convolution reading the raw image); by
    default it stays float, see :func:`stem_nodes`. ``keep_float``: more nodes to keep float,
    exact node names or :mod:`fnmatch` patterns of the exported graph's node names (each must
    match a node). ``target``: ``tensorrt`` (default) or ``cpu``, the Q/DQ layout (see
    :data:`INT8_TARGETS` and :func:`quantize_int8`).
    """

    data: Path
    format: str = "images"
    images: int = 64
    method: str = DEFAULT_CALIB_METHOD
    percentile: float = DEFAULT_PERCENTILE
    size: Optional[Tuple[int, int]] = None
    quantize_head: bool = False
    target: str = "tensorrt"
    quantize_stem: bool = False
    keep_float: Tuple[str, ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "data", Path(self.data))
        if isinstance(self.keep_float, str):
            object.__setattr__(self, "keep_float", (self.keep_float,))
        object.__setattr__(self, "keep_float", tuple(str(k) for k in self.keep_float))
        if any(not k.strip() for k in self.keep_float):
            raise FcnError("keep_float: empty node name")
        if self.format not in CALIB_FORMATS:
            raise unknown_name("calibration format", self.format, CALIB_FORMATS)
        if self.method not in CALIB_METHODS:
            raise unknown_name("calibration method", self.method, CALIB_METHODS)
        if self.target not in INT8_TARGETS:
            raise unknown_name("int8 target", self.target, INT8_TARGETS)
        if int(self.images) < 1:
            raise FcnError(f"calibration needs at least 1 image, got {self.images}")
        if not 0 < float(self.percentile) <= 100:
            raise FcnError(f"percentile must be in (0, 100], got {self.percentile}")


def calibration_files(cfg: CalibConfig) -> List[Path]:
    """The calibration image files of ``cfg`` (``cfg.images`` of them, evenly spread)."""
    files = _all_files(cfg)
    n = min(int(cfg.images), len(files))
    if n < int(cfg.images):
        log.warning("calibration: asked for %d images, %s has %d", cfg.images, cfg.data, len(files))
    idx = np.unique(np.linspace(0, len(files) - 1, n).round().astype(int))
    return [files[i] for i in idx]


def _all_files(cfg: CalibConfig) -> List[Path]:
    """Every train image of ``cfg``'s layout, sorted as the dataset readers sort them."""
    from fcn_deploy.datasets import list_images

    if not cfg.data.is_dir():
        raise FcnError(f"calibration data folder not found: {cfg.data}")
    return list_images(cfg.data, cfg.format, "train")


def _image_size(path) -> Tuple[int, int]:
    """(H, W) of an image as the runtime decodes it (EXIF orientation applied)."""
    from fcn_deploy.export.inputs import read_rgb

    return tuple(read_rgb(path).shape[:2])


def verification_files(cfg: CalibConfig, n: int = 4):
    """Real images to check an int8 export on: files of the calibration folder that were not used
    for calibration when there are any (else the calibration files), and the calibration size."""
    used = calibration_files(cfg)
    taken = set(used)
    rest = [f for f in _all_files(cfg) if f not in taken] or used
    pick = [rest[i] for i in np.unique(np.linspace(0, len(rest) - 1, min(n, len(rest))).round().astype(int))]
    return pick, tuple(cfg.size) if cfg.size is not None else _image_size(used[0])


class ImageCalibrationReader:
    """onnxruntime ``CalibrationDataReader`` over image files, batch 1, the ModelInfo convention.

    Streams: each ``get_next`` decodes one file, so memory does not grow with the number of
    images. onnxruntime's chunked calibration (``CalibStridedMinMax``) calls ``set_range`` per
    chunk and reads each chunk to its end (``None``); the progress bar counts every image over
    all chunks and is closed by :meth:`close`, not at the end of a chunk.
    """

    def __init__(self, files: Sequence[Path], info, *, input_name: str = "input",
                 size: Optional[Tuple[int, int]] = None, progress: bool = False):
        self.files, self.info, self.input_name = list(files), info, input_name
        if size is None and self.files:
            # One size for all: histogram calibration stacks tensors of every image.
            size = _image_size(self.files[0])
        self.size = size
        self._start, self._end = 0, len(self.files)
        self._it = iter(self.files)
        self._bar = None
        self.served = 0  # images handed to onnxruntime so far (all chunks)
        if progress:
            from tqdm import tqdm

            self._bar = tqdm(total=len(self.files), desc="calibrate", unit="img")

    def get_next(self):
        from fcn_deploy.export.inputs import read_rgb, normalize

        f = next(self._it, None)
        if f is None:
            return None  # end of this chunk; the bar stays open for the next one
        item = {self.input_name: normalize(read_rgb(f, self.size), self.info)}
        self.served += 1
        if self._bar is not None:
            self._bar.update(1)
        return item

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def rewind(self):
        self._it = iter(self.files[self._start:self._end])

    # onnxruntime's chunked calibration ("CalibStridedMinMax"): len() and set_range().
    def __len__(self):
        return len(self.files)

    def set_range(self, start_index: int, end_index: int):
        self._start, self._end = int(start_index), int(end_index)
        self._it = iter(self.files[self._start:self._end])

    # onnxruntime >= 1.16 calls these names too
    def __iter__(self):
        return self

    def __next__(self):
        item = self.get_next()
        if item is None:
            raise StopIteration
        return item


def _fast_histogram_collector(calibrator):
    """A drop-in for onnxruntime's ``HistogramCollector`` whose percentile path (histograms of
    absolute values, grown by equal-width bins as larger values arrive) counts with numpy's
    equal-width fast path instead of passing the edge array to ``np.histogram`` (which sorts
    every tensor: ~4x slower on a 64x180x240 activation). Same edges, same growth rule, same
    min/max bookkeeping as onnxruntime 1.17-1.32's ``collect_absolute_value``; counts can differ
    only for values that fall on a bin edge within float rounding. One array at a time (no
    stacking copy). None when this onnxruntime's calibrator does not look as expected (then its
    own collector runs)."""
    try:
        from onnxruntime.quantization.calibrate import HistogramCalibrater, HistogramCollector
    except ImportError:
        return None
    if not isinstance(calibrator, HistogramCalibrater) or getattr(calibrator, "collector", "missing") is not None:
        return None
    needed = ("method", "symmetric", "num_bins", "num_quantized_bins", "percentile", "scenario")
    if not all(hasattr(calibrator, k) for k in needed):
        return None

    class FastHistogramCollector(HistogramCollector):
        def collect_absolute_value(self, name_to_arr):
            for tensor, data in name_to_arr.items():
                for arr in (data if isinstance(data, list) else [data]):
                    self._add_abs(tensor, np.asarray(arr))

        def _add_abs(self, tensor, arr):
            flat = arr.reshape(-1)
            if flat.size:
                mn, mx = np.nanmin(flat), np.nanmax(flat)
            else:
                mn = mx = np.array(0, dtype=flat.dtype)
            a = np.abs(flat)
            old = self.histogram_dict.get(tensor)
            if old is None:
                hist, edges = np.histogram(a, bins=self.num_bins)
                self.histogram_dict[tensor] = (hist, edges.astype(a.dtype), mn, mx)
                return
            old_hist, edges, old_min, old_max = old
            amax = np.nanmax(a) if a.size else a.dtype.type(0)
            if amax > edges[-1]:
                width = edges[1] - edges[0]
                edges = np.hstack((edges, np.arange(edges[-1] + width, amax + width, width))).astype(a.dtype)
            hist, _ = np.histogram(a, bins=len(edges) - 1, range=(float(edges[0]), float(edges[-1])))
            hist[: len(old_hist)] += old_hist
            self.histogram_dict[tensor] = (hist, edges, min(old_min, mn), max(old_max, mx))

    c = calibrator
    return FastHistogramCollector(method=c.method, symmetric=c.symmetric, num_bins=c.num_bins,
                                  num_quantized_bins=c.num_quantized_bins, percentile=c.percentile,
                                  scenario=c.scenario)


@contextlib.contextmanager
def _streaming_calibrators():
    """While quantize_static runs: give its histogram calibrator :func:`_fast_histogram_collector`.
    quantize_static builds the calibrator itself (``create_calibrator`` in its module), so the
    hook wraps that one function for the duration of the call and restores it after."""
    import importlib

    try:
        # importlib: the package's attribute "quantize" is the function of that name, not the module.
        q = importlib.import_module("onnxruntime.quantization.quantize")
    except ImportError:
        yield
        return
    real = getattr(q, "create_calibrator", None)
    if real is None:
        yield
        return

    def create(*args, **kwargs):
        cal = real(*args, **kwargs)
        collector = _fast_histogram_collector(cal)
        if collector is not None:
            cal.collector = collector
        return cal

    q.create_calibrator = create
    try:
        yield
    finally:
        q.create_calibrator = real


def quantize_int8(model, info, calib: CalibConfig, *, work_dir, progress: bool = False):
    """Return an int8 QDQ copy of the fp32 ONNX ``model``, calibrated on ``calib``'s images.

    Steps: ``quant_pre_process`` (onnxruntime's ORT-basic optimisation, which folds any
    remaining BatchNormalization into Conv, and shape inference) -> ``quantize_static`` in QDQ
    format with int8 activations and weights, symmetric (zero point 0, as TensorRT requires),
    per-channel weights on the output-channel axis (Conv 0, ConvTranspose 1), Q/DQ on the
    inputs of Conv, ConvTranspose, both inputs of the skip Adds, and MaxPool.
    The result is checked to satisfy TensorRT's Q/DQ rules (see :func:`check_qdq`).

    Nodes kept float (``nodes_to_exclude``): the FCN head unless ``calib.quantize_head``
    (:func:`head_nodes`), the stem unless ``calib.quantize_stem`` (:func:`stem_nodes`), and the
    nodes matching ``calib.keep_float`` (:func:`match_nodes`).

    ``calib.target == "cpu"`` changes only the number formats: uint8 asymmetric activations
    and int8 weights (7-bit, reduce_range, only when the stem is quantized), the layout
    onnxruntime's CPU provider fuses into QLinearConv on x86 (see :data:`INT8_TARGETS`); the
    TensorRT check is skipped.
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if not isinstance(calib, CalibConfig):
        raise FcnError("int8 calibration needs a CalibConfig")
    work_dir = Path(work_dir)
    fp32 = work_dir / "int8_src.onnx"
    pre = work_dir / "int8_pre.onnx"
    out = work_dir / "int8_qdq.onnx"
    onnx.save(model, str(fp32))
    try:
        quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
    except Exception as e:
        raise FcnError(f"int8 pre-processing failed: {type(e).__name__}: {first_line(e)[:300]}") from None
    pre_model = onnx.load(str(pre))
    stem = [] if calib.quantize_stem else stem_nodes(pre_model)
    if not calib.quantize_stem and not stem:
        log.warning("int8: no stem found (no Conv reads the graph input directly); it is quantized like the "
                    "rest%s", ", with 7-bit weights" if calib.target == "cpu" else "")
    exclude = list(dict.fromkeys(
        ([] if calib.quantize_head else head_nodes(pre_model))
        + stem
        + match_nodes(pre_model, calib.keep_float)))
    del pre_model
    # cpu layout: 8-bit weights only while the stem is float (it is the layer whose u8 x s8 pair
    # sums saturate 16 bits on AVX2 without VNNI; see INT8_TARGETS), else 7-bit (reduce_range).
    stem_float = bool(stem)  # every stem node is in exclude
    log.info("int8: %d node(s) kept float: %s", len(exclude), ", ".join(exclude) if len(exclude) <= 8
             else ", ".join(exclude[:8]) + ", ...")
    files = calibration_files(calib)
    log.info("int8: calibrating on %d images from %s (%s, %s)", len(files), calib.data, calib.format, calib.method)
    reader = ImageCalibrationReader(files, info, input_name=model.graph.input[0].name, size=calib.size,
                                    progress=progress)
    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile}[calib.method]
    cpu = calib.target == "cpu"
    extra = {
        # TensorRT: int8 zero point 0. cpu: asymmetric uint8, so a Relu folds into its Q.
        "ActivationSymmetric": not cpu,
        # Biases stay float: TensorRT's DequantizeLinear takes int8 (not int32) input.
        "QuantizeBias": False,
        # TensorRT: quantize the inputs of weighted ops, not their outputs (no Q/DQ between a
        # Conv and its ReLU, none on the upsampled logits).
        "OpTypesToExcludeOutputQuantization": list(OUTPUT_FLOAT_OP_TYPES),
        "WeightSymmetric": True,
        # No "QDQOpTypePerChannelSupportToAxis": onnxruntime's Conv/ConvTranspose quantizer
        # (quantization/operators/conv.py; 1.32 here) ignores it and uses its own default
        # axis (0 Conv, 1 ConvTranspose: WEIGHT_AXIS). check_qdq checks the axis in the file.
        "CalibPercentile": float(calib.percentile),
        # Collect one image at a time: onnxruntime keeps every calibrated tensor of a chunk
        # (and stacks copies of them for the histograms), so peak memory is one image's
        # intermediates whatever the number of images (VGG16 at 360x480: ~1 GB per image).
        "CalibStridedMinMax": 1,
    }
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.WARNING))  # onnxruntime logs each bias copy at INFO on the root logger
    try:
        with contextlib.redirect_stdout(io.StringIO()), _streaming_calibrators():  # ORT prints progress
            quantize_static(
                str(pre), str(out), reader, quant_format=QuantFormat.QDQ, op_types_to_quantize=list(QUANT_OP_TYPES),
                nodes_to_exclude=exclude,
                per_channel=True, reduce_range=cpu and not stem_float, weight_type=QuantType.QInt8,
                activation_type=QuantType.QUInt8 if cpu else QuantType.QInt8,
                calibrate_method=method, extra_options=extra,
            )
    except FcnError:
        raise
    except Exception as e:
        raise FcnError(f"int8 calibration failed: {type(e).__name__}: {first_line(e)[:300]}") from None
    finally:
        root.setLevel(level)
        reader.close()
    if reader.served < len(files):
        raise FcnError(f"int8 calibration read {reader.served} of {len(files)} images")
    q = onnx.load(str(out))
    if cpu:
        return q
    problems = check_qdq(q)
    if problems:
        raise FcnError("int8 model breaks TensorRT's Q/DQ rules: " + "; ".join(problems[:5]))
    return q


def head_nodes(model) -> List[str]:
    """Names of the FCN head nodes: every ConvTranspose, and every Add fed (through Slice /
    Identity) by a ConvTranspose: the skip fusions of upsampled class scores."""
    producers = {o: n for n in model.graph.node for o in n.output}

    def from_deconv(name: str, depth: int = 0) -> bool:
        p = producers.get(name)
        if p is None or depth > 6:
            return False
        if p.op_type == "ConvTranspose":
            return True
        return p.op_type in ("Slice", "Identity", "Cast") and from_deconv(p.input[0], depth + 1)

    return [n.name for n in model.graph.node
            if n.op_type == "ConvTranspose" or (n.op_type == "Add" and any(from_deconv(x) for x in n.input))]


def stem_nodes(model) -> List[str]:
    """Names of the stem: every Conv whose data input is a graph input (the raw normalised
    image), and a MaxPool that follows one directly (through Relu / Clip / Identity).

    Kept float by default: the stem carries most of the int8 error (measured on held-out CamVid
    train images in both int8 layouts; docs/export.md, "int8 accuracy", and benchmarks/RESULTS.md),
    and is a small share of the compute (3 input channels). Its MaxPool stays float with it:
    max-pooling commutes with quantization (same labels), and a uint8 MaxPool between a float Conv
    and the first QLinearConv runs in onnxruntime's slow NCHW uint8 kernel instead of its NHWC one."""
    g = model.graph
    graph_inputs = {i.name for i in g.input} - {t.name for t in g.initializer}
    consumers: Dict[str, list] = {}
    for n in g.node:
        for x in n.input:
            consumers.setdefault(x, []).append(n)
    convs = [n for n in g.node if n.op_type == "Conv" and n.input and n.input[0] in graph_inputs]
    out = [n.name for n in convs]
    for c in convs:
        frontier = [c]
        for _ in range(4):
            nxt = [u for n in frontier for u in consumers.get(n.output[0], [])]
            out.extend(u.name for u in nxt if u.op_type == "MaxPool" and u.name not in out)
            frontier = [u for u in nxt if u.op_type in ("Relu", "Clip", "Identity")]
            if not frontier:
                break
    return out


def match_nodes(model, patterns: Sequence[str]) -> List[str]:
    """Names of the nodes of ``model`` matching ``patterns`` (exact names or :mod:`fnmatch`
    patterns such as ``/inner/backbone/layer1/*``), in graph order. FcnError when a pattern
    matches no node, with a few node names to show how they look."""
    import fnmatch

    names = [n.name for n in model.graph.node if n.name]
    out: List[str] = []
    for pat in patterns:
        hit = [n for n in names if n == pat or fnmatch.fnmatchcase(n, pat)]
        if not hit:
            convs = [n.name for n in model.graph.node if n.op_type in ("Conv", "ConvTranspose")][:3]
            raise FcnError(f"keep-float: {pat!r} matches no node (node names look like {', '.join(convs)})")
        out.extend(h for h in hit if h not in out)
    return out


def check_qdq(model) -> List[str]:
    """TensorRT Q/DQ rules for this project's graphs: int8 with zero point 0 everywhere, weight
    DequantizeLinear per channel on the output-channel axis of its Conv / ConvTranspose."""
    from onnx import TensorProto, numpy_helper

    g = model.graph
    inits = {t.name: t for t in g.initializer}
    consts = {n.output[0]: n for n in g.node if n.op_type == "Constant"}
    consumers: Dict[str, list] = {}
    for n in g.node:
        for x in n.input:
            consumers.setdefault(x, []).append(n)
    problems = []
    for n in g.node:
        if n.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        zp_name = n.input[2] if len(n.input) > 2 else ""
        zp = inits.get(zp_name)
        if zp_name and zp is None and zp_name in consts:
            zp = next(a.t for a in consts[zp_name].attribute if a.name == "value")
        if zp is not None:
            if zp.data_type != TensorProto.INT8:
                problems.append(f"{n.name}: zero point type {TensorProto.DataType.Name(zp.data_type)}, TensorRT needs INT8")
            elif np.any(numpy_helper.to_array(zp) != 0):
                problems.append(f"{n.name}: non-zero zero point")
        if n.op_type == "DequantizeLinear" and n.input[0] in inits:
            w = inits[n.input[0]]
            if w.data_type != TensorProto.INT8:
                problems.append(f"{n.name}: dequantizes {TensorProto.DataType.Name(w.data_type)}, TensorRT needs INT8")
            scale = inits.get(n.input[1])
            per_channel = scale is not None and len(scale.dims) == 1 and scale.dims[0] > 1
            for user in consumers.get(n.output[0], []):
                if user.op_type in WEIGHT_AXIS and len(user.input) > 1 and user.input[1] == n.output[0] and per_channel:
                    axis = next((a.i for a in n.attribute if a.name == "axis"), 1)
                    want = WEIGHT_AXIS[user.op_type]
                    if axis % len(w.dims) != want:
                        problems.append(f"{n.name}: {user.op_type} weights quantized on axis {axis}, TensorRT needs {want}")
    return problems
