"""Checkpoint -> ONNX with dynamic batch/height/width, metadata, checks and parity.

Stable names (documented in docs/export.md):
- input ``input``: float32 (N, 3, H, W), prepared with the ModelInfo convention;
- output ``logits`` float32 (N, C, H, W) | ``probs`` float32 (N, C, H, W, softmax over C) |
  ``labels`` int32 (N, H, W) (ArgMax over C then Cast to int32: TensorRT computes ArgMax
  indices in int32 and onnxruntime in int64; the Cast makes the output int32 on both);
- dynamic axes ``batch``, ``height``, ``width`` (unless ``batch=N`` / ``static_hw``).

The exporter is torch's TorchScript-based one (``dynamo=False``): it turns the FCN crops into
Shape -> Gather -> Slice with input-dependent ends and folds BatchNorm into Conv in eval
mode; the parity check proves the result at odd sizes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path
from typing import Optional, Sequence, Tuple, Union

from fcn_deploy.errors import FcnError, first_line, unknown_name
from fcn_deploy.modelinfo import INPUT_NAME, OUTPUT_NAMES, ModelInfo

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "int8")
# Graph input: "float" = float32 (N, 3, H, W) normalised by the caller (default); "uint8" = the
# image's pixels, uint8 (N, H, W, 3) RGB, normalised inside the graph (see uint8_input).
INPUT_KINDS = ("float", "uint8")
INPUT_FORMAT_KEY = "fcn_deploy.input_format"
UINT8_NHWC = "uint8_nhwc"
OUTPUT_KINDS = tuple(OUTPUT_NAMES)
OPSET_RANGE = (13, 20)  # QDQ per-channel needs 13; torch's TorchScript exporter stops at 20
# Above this many bytes of tensors the ONNX is saved with external data (protobuf's limit is 2 GiB).
EXTERNAL_DATA_THRESHOLD = 1_800_000_000
# Size of the dummy input traced for a dynamic export.
TRACE_HW = (32, 32)


def _tool_version() -> str:
    import fcn_deploy

    return f"fcn-deploy {fcn_deploy.__version__}"


def _state_sha256(model) -> str:
    """sha256 over an in-memory model's tensors (name, dtype, shape, bytes)."""
    h = hashlib.sha256()
    for k, v in model.state_dict().items():
        t = v.detach().cpu().contiguous()
        h.update(k.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def resolve_source(source):
    """``source`` -> (model in eval mode, ModelInfo, sha256). A checkpoint path (sha256 of the
    file) or a ``(model, ModelInfo)`` pair (sha256 of the model's tensors)."""
    if isinstance(source, (str, os.PathLike)):
        from fcn_deploy._util import sha256_file
        from fcn_deploy.training.checkpoint import model_from_checkpoint

        model, info, _ = model_from_checkpoint(source)
        return model.eval(), info, sha256_file(source)
    if isinstance(source, (tuple, list)) and len(source) == 2 and isinstance(source[1], ModelInfo):
        model, info = source
        model = getattr(model, "module", model)
        if getattr(model, "num_classes", info.num_classes) != info.num_classes:
            raise FcnError(f"model has {model.num_classes} classes, its ModelInfo {info.num_classes}")
        return model.eval(), info, _state_sha256(model)
    raise FcnError("source must be a checkpoint path or a (model, ModelInfo) pair")


def static_dims(onnx_path) -> Tuple[Optional[int], Optional[Tuple[int, int]]]:
    """(static batch or None, static (H, W) or None) of an ONNX file's input."""
    import onnx

    m = onnx.load(str(onnx_path), load_external_data=False)
    dims = m.graph.input[0].type.tensor_type.shape.dim
    vals = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    n = vals[0] if vals else None
    hw = (vals[2], vals[3]) if len(vals) == 4 and vals[2] and vals[3] else None
    return n, hw


class _Head:
    """Wraps the FCN with the requested output (built lazily so torch is imported on use)."""

    @staticmethod
    def build(model, output_kind: str):
        import torch

        class Head(torch.nn.Module):
            def __init__(self, inner):
                super().__init__()
                self.inner = inner

            def forward(self, x):
                y = self.inner(x)
                if output_kind == "labels":
                    return torch.argmax(y, dim=1).to(torch.int32)
                if output_kind == "probs":
                    return torch.softmax(y, dim=1)
                return y

        return Head(model).eval()


def _check_args(opset, precision, output_kind, batch, static_hw):
    if precision not in PRECISIONS:
        raise unknown_name("precision", precision, PRECISIONS)
    if output_kind not in OUTPUT_KINDS:
        raise unknown_name("output", output_kind, OUTPUT_KINDS)
    if not isinstance(opset, int) or not OPSET_RANGE[0] <= opset <= OPSET_RANGE[1]:
        raise FcnError(f"opset must be {OPSET_RANGE[0]}..{OPSET_RANGE[1]}, got {opset}")
    if batch != "dynamic":
        if isinstance(batch, str) and batch.isdigit():
            batch = int(batch)
        if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
            raise FcnError(f"batch must be 'dynamic' or a positive integer, got {batch!r}")
    if static_hw is not None:
        if isinstance(static_hw, str):
            from fcn_deploy.shapes import parse_hw

            static_hw = parse_hw(static_hw, what="static size")
        if len(static_hw) != 2 or min(int(v) for v in static_hw) < 1:
            raise FcnError(f"static size must be (H, W) with positive values, got {static_hw!r}")
        static_hw = (int(static_hw[0]), int(static_hw[1]))
    return batch, static_hw


def _check_output_path(output: Path, *, warn_suffix: bool = True) -> None:
    parent = output.parent if str(output.parent) else Path(".")
    if output.is_dir():
        raise FcnError(f"output is a folder: {output}")
    if not parent.is_dir():
        raise FcnError(f"output folder does not exist: {parent}")
    if not os.access(parent, os.W_OK):
        raise FcnError(f"output folder is not writable: {parent}")
    if warn_suffix and output.suffix.lower() != ".onnx":
        log.warning("output %s does not end in .onnx", output)


# Models whose weights stay under this are exported into memory (one protobuf, no file written and
# read back: a VGG16 FCN is 538 MB); bigger ones go through a file (protobuf's 2 GB limit).
IN_MEMORY_EXPORT_BYTES = 1 << 30


def torch_to_proto(model, work_dir, **options):
    """:func:`torch_to_onnx` returning the ModelProto: in memory when the weights are under
    :data:`IN_MEMORY_EXPORT_BYTES`, else through ``work_dir/raw.onnx``."""
    import io

    import onnx

    weight_bytes = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    if weight_bytes < IN_MEMORY_EXPORT_BYTES:
        buf = io.BytesIO()
        torch_to_onnx(model, buf, **options)
        return onnx.load_from_string(buf.getvalue())
    raw = Path(work_dir) / "raw.onnx"
    torch_to_onnx(model, raw, **options)
    return onnx.load(str(raw))


def torch_to_onnx(model, path, *, opset: int = 17, output_kind: str = "logits", batch="dynamic",
                  static_hw=None) -> None:
    """Run torch's exporter (TorchScript-based, ``dynamo=False``) into ``path`` (a file path or
    a binary file object); no metadata."""
    import torch

    head = _Head.build(model, output_kind)
    out_name = OUTPUT_NAMES[output_kind]
    n = batch if isinstance(batch, int) else 1
    h, w = static_hw if static_hw else TRACE_HW
    dummy = torch.zeros(n, 3, h, w)
    torch.manual_seed(0)
    dummy.uniform_(-1, 1)
    dyn = {}
    if batch == "dynamic":
        dyn[0] = "batch"
    if static_hw is None:
        dyn[2], dyn[3] = "height", "width"
    out_dyn = dict(dyn)
    if output_kind == "labels" and static_hw is None:
        out_dyn = {k - 1 if k > 1 else k: v for k, v in dyn.items()}  # (N, H, W)
    dynamic_axes = {INPUT_NAME: dyn, out_name: out_dyn} if dyn else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's DeprecationWarning, tracer warnings
        with torch.no_grad():
            torch.onnx.export(
                head, (dummy,), path if hasattr(path, "write") else str(path), input_names=[INPUT_NAME], output_names=[out_name],
                opset_version=opset, dynamic_axes=dynamic_axes, do_constant_folding=True, dynamo=False,
            )


def _tensor_bytes(model) -> int:
    import numpy as np
    from onnx import helper

    total = 0
    for t in model.graph.initializer:
        total += int(np.prod(t.dims, dtype=np.int64)) * max(1, np.dtype(helper.tensor_dtype_to_np_dtype(t.data_type)).itemsize)
    return total


def set_metadata(model, info: ModelInfo) -> None:
    """Write ``info`` into ``metadata_props`` (replacing earlier fcn-deploy keys)."""
    from fcn_deploy.modelinfo import METADATA_PREFIX

    keep = [(p.key, p.value) for p in model.metadata_props if not p.key.startswith(METADATA_PREFIX)]
    del model.metadata_props[:]
    for k, v in keep + sorted(info.to_metadata().items()):
        p = model.metadata_props.add()
        p.key, p.value = k, v


def check_onnx_file(path) -> None:
    """``onnx.checker.check_model(full_check=True)`` (includes strict shape inference)."""
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as e:
        raise FcnError(f"ONNX check failed for {path}: {first_line(e)[:300]}") from None


def save_onnx_atomic(model, output, *, check=None, warn_suffix: bool = True) -> Path:
    """Save ``model`` at ``output`` atomically; external data ``<name>.data`` beside it when the
    tensors exceed :data:`EXTERNAL_DATA_THRESHOLD`.

    The file(s) are written in a temporary folder beside ``output`` under their final names,
    ``check(temp_onnx_path)`` runs there (checker, parity), then the data file and last the
    ONNX are renamed into place. On any failure nothing is left behind.
    """
    import onnx

    output = Path(output)
    _check_output_path(output, warn_suffix=warn_suffix)
    parent = output.parent if str(output.parent) else Path(".")
    try:
        tmpdir = Path(tempfile.mkdtemp(prefix="." + output.name + ".", suffix=".tmp", dir=parent))
    except OSError as e:
        raise FcnError(f"cannot write in {parent}: {e.strerror or e}") from None
    try:
        tmp = tmpdir / output.name
        external = _tensor_bytes(model) > EXTERNAL_DATA_THRESHOLD
        data_name = output.name + ".data"
        if external:
            onnx.save_model(model, str(tmp), save_as_external_data=True, all_tensors_to_one_file=True,
                            location=data_name, size_threshold=1024)
        else:
            onnx.save_model(model, str(tmp))
        if check is not None:
            check(tmp)
        if external:
            os.replace(tmpdir / data_name, parent / data_name)
        os.replace(tmp, output)
    except OSError as e:
        raise FcnError(f"cannot write {output}: {e.strerror or e}") from None
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    return output


def uint8_input(model, info: ModelInfo):
    """Return ``model`` (an exported FCN, any precision) taking the image's pixels: input
    ``input`` uint8 (N, H, W, 3) RGB, and the normalisation inside the graph.

    Added in front of the float input: Transpose to NCHW (on uint8, a quarter of the bytes),
    for BGR models a channel flip, Cast to int32, plus each channel's offset into a (3 * 256,)
    table and Gather from it. The table is the runtime's own
    :func:`fcn_deploy.image.normalization_lut` (float64 arithmetic rounded once to the input's
    float type), so the model sees bit-identical inputs to the float path's and gives the same
    outputs. Dynamic or static axes are carried over from the float input.
    """
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from fcn_deploy.image import normalization_lut

    src = model
    model = onnx.ModelProto()
    model.CopyFrom(src)
    g = model.graph
    inits = {t.name for t in g.initializer}
    feeds = [i for i in g.input if i.name not in inits]
    if len(feeds) != 1:
        raise FcnError(f"uint8 input: expected one graph input, found {len(feeds)}")
    old = feeds[0]
    ttype = old.type.tensor_type
    float_type = ttype.elem_type
    if float_type not in (TensorProto.FLOAT, TensorProto.FLOAT16):
        raise FcnError("uint8 input: the graph's input is not float")
    dims = list(ttype.shape.dim)
    if len(dims) != 4 or (dims[1].HasField("dim_value") and dims[1].dim_value != 3):
        raise FcnError("uint8 input: the graph's input is not (N, 3, H, W)")
    name = old.name
    inner = f"{name}__normalized"
    for n in g.node:
        for k, x in enumerate(n.input):
            if x == name:
                n.input[k] = inner
    for o in g.output:
        if o.name == name:
            raise FcnError("uint8 input: the input is also a graph output")
    np_float = np.float16 if float_type == TensorProto.FLOAT16 else np.float32
    lut = normalization_lut(info, np_float)  # (3, 256): row c = model channel c
    prefix = "/uint8_input/"
    consts = [
        numpy_helper.from_array(lut.reshape(-1), prefix + "lut"),
        numpy_helper.from_array(np.arange(3, dtype=np.int32).reshape(1, 3, 1, 1) * 256, prefix + "offsets"),
    ]
    nodes = [helper.make_node("Transpose", [name], [prefix + "nchw"], perm=[0, 3, 1, 2], name=prefix + "Transpose")]
    x = prefix + "nchw"
    if info.channel_order == "BGR":  # model channel c reads the image's channel 2 - c
        consts.append(numpy_helper.from_array(np.array([2, 1, 0], np.int64), prefix + "bgr"))
        nodes.append(helper.make_node("Gather", [x, prefix + "bgr"], [prefix + "bgr_nchw"], axis=1, name=prefix + "ToBGR"))
        x = prefix + "bgr_nchw"
    nodes += [
        helper.make_node("Cast", [x], [prefix + "i32"], to=TensorProto.INT32, name=prefix + "Cast"),
        helper.make_node("Add", [prefix + "i32", prefix + "offsets"], [prefix + "index"], name=prefix + "Offset"),
        helper.make_node("Gather", [prefix + "lut", prefix + "index"], [inner], axis=0, name=prefix + "Normalize"),
    ]
    new_nodes = nodes + list(g.node)
    del g.node[:]
    g.node.extend(new_nodes)
    g.initializer.extend(consts)
    n_dim, c_dim, h_dim, w_dim = (onnx.TensorShapeProto.Dimension(), onnx.TensorShapeProto.Dimension(),
                                  onnx.TensorShapeProto.Dimension(), onnx.TensorShapeProto.Dimension())
    n_dim.CopyFrom(dims[0]); h_dim.CopyFrom(dims[2]); w_dim.CopyFrom(dims[3])  # noqa: E702
    c_dim.dim_value = 3
    ttype.elem_type = TensorProto.UINT8
    del ttype.shape.dim[:]
    ttype.shape.dim.extend([n_dim, h_dim, w_dim, c_dim])
    from fcn_deploy.export.precision import reinfer_shapes

    return reinfer_shapes(model, "uint8 input")


def check_uint8_matches_float(uint8_path, float_path, info: ModelInfo, *, sizes, static_batch=None,
                              static_hw=None) -> None:
    """The uint8-input file gives the float file's outputs on the same images (onnxruntime CPU):
    its pixels in, against the runtime's own float pre-processing (fcn_deploy.image.preprocess)
    into the float file. Labels must be identical and scores equal to float rounding; FcnError
    otherwise. Both run on verify's onnxruntime execution (:func:`verify.open_engine`)."""
    import numpy as np

    from fcn_deploy.export.inputs import random_rgb
    from fcn_deploy.export.verify import open_engine, run_engine
    from fcn_deploy.image import preprocess

    n = static_batch or 2
    with open_engine(uint8_path) as a, open_engine(float_path) as b:
        a_in, a_out = a.inputs()[0].name, a.outputs()[0].name
        ftype = np.float16 if b.inputs()[0].dtype == "float16" else np.float32
        for h, w in ([static_hw] if static_hw else sizes):
            imgs = random_rgb(n, h, w, seed=11)
            ya = a.infer({a_in: np.ascontiguousarray(imgs)})[a_out]  # pixels in, uint8 as they are
            yb = run_engine(b, preprocess(list(imgs), info, dtype=ftype))
            if ya.shape != yb.shape:
                raise FcnError(f"uint8-input graph gives shape {ya.shape}, the float graph {yb.shape}")
            if ya.dtype.kind in "iu":
                same = np.array_equal(ya, yb)
            else:
                scale = float(np.abs(yb).max()) or 1.0
                same = np.array_equal(ya.argmax(1), yb.argmax(1)) and float(np.abs(ya.astype(np.float64) - yb).max()) <= 1e-5 * scale
            if not same:
                raise FcnError(f"uint8-input graph differs from the float graph at {h}x{w} (nothing written)")
    log.info("uint8 input: outputs match the float graph's at %s", ", ".join(f"{h}x{w}" for h, w in ([static_hw] if static_hw else sizes)))


def export_onnx(
    source,
    output,
    *,
    opset: int = 17,
    precision: str = "fp32",
    output_kind: str = "logits",
    batch: Union[str, int] = "dynamic",
    static_hw: Optional[Tuple[int, int]] = None,
    calib=None,
    verify: bool = True,
    verify_sizes: Optional[Sequence[Tuple[int, int]]] = None,
    verify_engine: Optional[str] = None,
    fp16_io: bool = False,
    input_kind: str = "float",
    progress: bool = False,
    reports: Optional[list] = None,
) -> Path:
    """Export ``source`` (checkpoint path or ``(model, ModelInfo)``) to ``output`` (.onnx).

    ``precision``: fp32 | fp16 | int8 (int8 needs ``calib``, a
    :class:`fcn_deploy.export.precision.CalibConfig`). ``output_kind``: logits | labels |
    probs. ``batch``: "dynamic" or a fixed N. ``static_hw``: (H, W) fixes height/width.
    ``verify``: compare with PyTorch before the file is renamed into place (sizes
    ``verify_sizes``, default 97x131 and 375x500, batch 1 and 2; a static export at its size;
    ``verify_engine`` picks the CPU execution, see verify.ENGINES). ``fp16_io``: float16 input
    and output for an fp16 export (default float32 I/O). ``input_kind``: "float" (float32
    (N, 3, H, W), normalised by the caller) or "uint8" (the pixels, uint8 (N, H, W, 3) RGB,
    normalised inside the graph: :func:`uint8_input`; metadata ``input_format`` ``uint8_nhwc``).
    ``reports``: a list the parity check's :class:`~fcn_deploy.export.verify.VerifyReport` is appended to (its ``verified``
    is False for a model with constant output, whose check proves nothing).
    Returns the output path. Raises FcnError on bad input or a failed check.
    """
    import onnx

    t0 = time.perf_counter()
    batch, static_hw = _check_args(opset, precision, output_kind, batch, static_hw)
    output = Path(output)
    _check_output_path(output)
    if fp16_io and precision != "fp16":
        raise FcnError("float16 I/O needs precision fp16")
    if input_kind not in INPUT_KINDS:
        raise unknown_name("input", input_kind, INPUT_KINDS)
    if precision == "int8" and calib is None:
        raise FcnError("int8 export needs calibration images (calib / --calib-data DIR)")
    model, info, sha = resolve_source(source)
    info = info.replace(
        precision=precision, output=output_kind, input_name=INPUT_NAME,
        output_name=OUTPUT_NAMES[output_kind], source_sha256=sha, tool_version=_tool_version(),
    )

    with tempfile.TemporaryDirectory(prefix="fcn-export-") as work:
        log.info("exporting %s/%s (%d classes) to ONNX opset %d", info.arch, info.backbone, info.num_classes, opset)
        proto = torch_to_proto(model, work, opset=opset, output_kind=output_kind, batch=batch, static_hw=static_hw)
        log.info("torch export: %.1f s", time.perf_counter() - t0)

        if precision == "fp16":
            from fcn_deploy.export.precision import convert_fp16

            proto = convert_fp16(proto, io="fp16" if fp16_io else "fp32")
        elif precision == "int8":
            from fcn_deploy.export.precision import quantize_int8

            proto = quantize_int8(proto, info, calib, work_dir=Path(work), progress=progress)
        float_proto = None
        if input_kind == "uint8":
            # Calibration and precision passes run on the float graph; the pixels-in front goes on last.
            float_proto = proto
            proto = uint8_input(proto, info)
        from fcn_deploy.export.trt_check import check_trt

        trt = check_trt(proto)
        if not trt.ok:
            if precision == "int8" and getattr(calib, "target", "tensorrt") == "cpu":
                # Expected: the CPU layout's uint8 zero points are not for TensorRT.
                log.warning("int8 target 'cpu': not for TensorRT (%d readiness issue(s); "
                            "export with the default --int8-target tensorrt for an engine)", len(trt.issues))
            else:
                log.warning("%s", trt.format())
        proto.producer_name = "fcn-deploy"
        proto.producer_version = _tool_version().split()[-1]
        set_metadata(proto, info)
        if precision == "int8":
            # Which Q/DQ layout (runtimes pick a backend by it: fcn_deploy.backends.file_layout).
            # A JSON string like the other non-name values, so older runtimes read the file too.
            import json

            p = proto.metadata_props.add()
            p.key, p.value = "fcn_deploy.int8_target", json.dumps(getattr(calib, "target", "tensorrt"))
        if input_kind == "uint8":
            import json

            p = proto.metadata_props.add()
            p.key, p.value = INPUT_FORMAT_KEY, json.dumps(UINT8_NHWC)
            float_proto.producer_name = proto.producer_name
            set_metadata(float_proto, info)

        sink = reports  # check() has its own local 'reports'

        def check(tmp_path: Path) -> None:
            check_onnx_file(tmp_path)
            if not verify:
                return
            if float_proto is not None:
                # Parity of the float graph with PyTorch, then the uint8 graph against it.
                float_path = tmp_path.parent / ("float-" + tmp_path.name)
                onnx.save_model(float_proto, str(float_path), save_as_external_data=_tensor_bytes(float_proto)
                                > EXTERNAL_DATA_THRESHOLD, location=float_path.name + ".data")
                try:
                    _check_parity(float_path)
                    check_uint8_matches_float(tmp_path, float_path, info, sizes=verify_sizes or [(97, 131)],
                                              static_batch=batch if isinstance(batch, int) else None,
                                              static_hw=static_hw)
                finally:
                    for f in (float_path, float_path.with_name(float_path.name + ".data")):
                        if f.exists():
                            f.unlink()
                return
            _check_parity(tmp_path)

        def _check_parity(tmp_path: Path) -> None:
            from fcn_deploy.export.verify import EXPORT_SIZES, verify_model

            engine = verify_engine or ("onnxruntime" if precision != "fp16" else _fp16_engine())
            static_batch = batch if isinstance(batch, int) else None
            if static_hw:
                plan = [([static_hw], 2)]
            elif verify_sizes:
                plan = [(list(verify_sizes), 2)]
            else:  # batch 1 and 2 at the small odd size, batch 1 at the large one (VGG16 is slow)
                plan = [([EXPORT_SIZES[0]], 2), (list(EXPORT_SIZES[1:]), 1)]
            images = None
            if precision == "int8" and calib is not None and not static_hw:
                # Judge int8 on real images from the calibration folder, at the calibration size.
                from fcn_deploy.export.precision import verification_files

                images, calib_hw = verification_files(calib)
                if not verify_sizes:
                    plan = [([calib_hw], 2)]
            reports = [verify_model(model, info, tmp_path, sizes=sz, batch=b, static_batch=static_batch,
                                    images=images, engine=engine, progress=progress) for sz, b in plan]
            report = dataclasses.replace(
                reports[0], onnx=str(output), cases=tuple(c for r in reports for c in r.cases),
                seconds=sum(r.seconds for r in reports),
            )
            log.info("%s", report.format())
            if sink is not None:
                sink.append(report)
            if report.passed and not report.verified:
                log.warning("parity check of %s proves nothing: %s", output, report.status)
            if not report.passed:
                raise FcnError(
                    f"exported ONNX does not match PyTorch ({precision}): " + "; ".join(report.failures)
                    + " (nothing written; --no-verify skips this check)"
                )

        save_onnx_atomic(proto, output, check=check, warn_suffix=False)  # export_onnx warned at its start
    log.info("wrote %s in %.1f s", output, time.perf_counter() - t0)
    return output


def _fp16_engine() -> str:
    from fcn_deploy.export.precision import FP16_VERIFY_ENGINE

    return FP16_VERIFY_ENGINE
