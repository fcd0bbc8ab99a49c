"""``fcn-export --adopt FOREIGN.onnx OUT.onnx --classes voc|camvid|FILE --input-convention NAME``:
stamp fcn-deploy's metadata onto an ONNX file someone else exported, so the runtime
(``fcn_deploy.load``), ``fcn-build``, ``fcn-eval`` and ``fcn-bench`` accept it.

Meant for, e.g., the ONNX model zoo's ``fcn-resnet50-11`` (input ``input``, outputs ``out`` and
``aux``) and NVIDIA's TensorRT quickstart export of torchvision's FCN (``argmax`` inside: an
integer label map). Checks, each failure one line and nothing written:

- exactly one graph input (initializers aside), float32/float16, rank 4, NCHW with 3 channels
  (an NHWC input is named as such; two inputs are refused);
- the main output: ``--output-name``, else the only output, else the one called ``out``
  (torchvision's name; ``aux`` is the auxiliary head); other outputs and the nodes only they
  need are dropped (said in the summary), so the aux head costs nothing at run time;
- what the output is, from its dtype and shape: float (N, C, H, W) -> ``logits`` (``probs`` when
  a Softmax makes it), integer (N, H, W) or (N, 1, H, W) -> ``labels``; C must equal the
  number of ``--classes`` where the graph fixes it;
- the input convention is never guessed: ``--classes`` and ``--input-convention`` are required,
  and the error says which are missing and what the choices are.

The weights and graph are not changed (only pruned of the extra outputs); the written file is
checked with onnx's checker and run once by the runtime (onnxruntime, one small random image) before
it is renamed into place.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from fcn_deploy.errors import FcnError, first_line

log = logging.getLogger(__name__)

# onnx TensorProto element types
_FLOAT = {1: "float32", 10: "float16"}
_INT = {2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32", 7: "int64", 12: "uint32", 13: "uint64"}


@dataclass
class AdoptReport:
    output: Path
    input_name: str
    input_shape: Tuple[object, ...]
    output_name: str
    output_kind: str
    num_classes: int
    convention: str
    dropped_outputs: List[str] = field(default_factory=list)
    dropped_nodes: int = 0

    def format(self) -> str:
        s = (f"adopted -> {self.output}: input {self.input_name!r} {list(self.input_shape)}, output "
             f"{self.output_name!r} ({self.output_kind}), {self.num_classes} classes, convention {self.convention}")
        if self.dropped_outputs:
            s += f"; dropped output(s) {', '.join(map(repr, self.dropped_outputs))} and {self.dropped_nodes} node(s) only they needed"
        return s


def _dims(vi) -> Tuple[object, ...]:
    t = vi.type.tensor_type
    if not t.HasField("shape"):
        return ()
    out = []
    for d in t.shape.dim:
        out.append(d.dim_value if d.HasField("dim_value") else (d.dim_param or None))
    return tuple(out)


def _load(path: Path):
    import onnx

    if not path.is_file():
        raise FcnError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise FcnError(f"{path}: empty file, not an ONNX model")
    try:
        model = onnx.load(str(path))
    except Exception as e:
        raise FcnError(f"{path}: not a readable ONNX model ({first_line(e)[:200]})") from None
    if not model.HasField("graph") or model.ir_version == 0:
        raise FcnError(f"{path}: not a valid ONNX model (no graph or IR version)")
    return model


def _missing_flags(classes, convention) -> None:
    from fcn_deploy.training.registry import CONVENTIONS

    missing = [f for f, v in (("--classes voc|camvid|FILE", classes), (f"--input-convention {'|'.join(CONVENTIONS)}", convention)) if not v]
    if missing:
        raise FcnError("adopting a foreign ONNX needs " + " and ".join(missing) + ": its class names and input "
                       "normalisation are not in the file and are never guessed (torchvision and the ONNX model zoo "
                       "FCNs: --classes voc --input-convention imagenet)")


def _check_input(model, path: Path):
    inits = {i.name for i in model.graph.initializer}
    ins = [i for i in model.graph.input if i.name not in inits]
    if len(ins) != 1:
        desc = ", ".join(f"{i.name!r} {list(_dims(i))}" for i in ins) or "none"
        raise FcnError(f"{path}: an FCN has one image input; this model has {len(ins)}: {desc}")
    inp = ins[0]
    et = inp.type.tensor_type.elem_type
    shape = _dims(inp)
    if et not in _FLOAT:
        raise FcnError(f"{path}: input {inp.name!r} has element type {et} (onnx TensorProto); expected float32 or float16")
    if len(shape) != 4:
        raise FcnError(f"{path}: input {inp.name!r} has shape {list(shape)}; expected NCHW (rank 4)")
    if shape[1] != 3:
        if shape[3] == 3:
            raise FcnError(f"{path}: input {inp.name!r} {list(shape)} is NHWC; fcn-deploy feeds NCHW (N, 3, H, W)")
        raise FcnError(f"{path}: input {inp.name!r} {list(shape)} does not take 3 channels at axis 1 (NCHW)")
    return inp, shape


def _pick_output(model, path: Path, name: Optional[str]):
    outs = list(model.graph.output)
    names = [o.name for o in outs]
    if name is not None:
        if name not in names:
            raise FcnError(f"{path}: --output-name {name!r}: the model's outputs are {', '.join(map(repr, names))}")
        return next(o for o in outs if o.name == name)
    if len(outs) == 1:
        return outs[0]
    if "out" in names:
        return next(o for o in outs if o.name == "out")
    raise FcnError(f"{path}: {len(outs)} outputs ({', '.join(map(repr, names))}) and none is 'out'; pick the "
                   "segmentation output with --output-name NAME")


def _output_kind(model, out, path: Path) -> Tuple[str, Optional[int]]:
    et = out.type.tensor_type.elem_type
    shape = _dims(out)
    producer = next((n for n in model.graph.node if out.name in n.output), None)
    if et in _FLOAT:
        if len(shape) != 4:
            raise FcnError(f"{path}: output {out.name!r} is float with shape {list(shape)}; expected class scores (N, C, H, W)")
        c = shape[1] if isinstance(shape[1], int) else None
        kind = "probs" if producer is not None and producer.op_type == "Softmax" else "logits"
        return kind, c
    if et in _INT:
        if len(shape) == 3 or (len(shape) == 4 and shape[1] == 1):
            return "labels", None
        raise FcnError(f"{path}: output {out.name!r} is {_INT[et]} with shape {list(shape)}; expected a label map (N, H, W) or (N, 1, H, W)")
    raise FcnError(f"{path}: output {out.name!r} has element type {et}; expected float scores or integer labels")


def _inferred_channels(model, name: str) -> Optional[int]:
    """The class-channel count of output ``name`` by onnx shape inference, where it is fixed."""
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except Exception:
        return None
    for vi in list(inferred.graph.output) + list(inferred.graph.value_info):
        if vi.name == name:
            d = _dims(vi)
            return d[1] if len(d) == 4 and isinstance(d[1], int) else None
    return None


def _prune(model, keep: str) -> Tuple[List[str], int]:
    """Drop every graph output but ``keep`` and the nodes/initializers only they needed."""
    g = model.graph
    dropped = [o.name for o in g.output if o.name != keep]
    if not dropped:
        return [], 0
    needed = {keep}
    live = []
    for node in reversed(list(g.node)):
        if any(o in needed for o in node.output):
            live.append(node)
            needed.update(i for i in node.input if i)
            # subgraphs (If/Loop) read outer names implicitly
            for a in node.attribute:
                for sub in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                    for sn in sub.node:
                        needed.update(i for i in sn.input if i)
    live.reverse()
    n_dropped = len(g.node) - len(live)
    del g.node[:]
    g.node.extend(live)
    keep_outs = [o for o in g.output if o.name == keep]
    del g.output[:]
    g.output.extend(keep_outs)
    gone = {i.name for i in g.initializer if i.name not in needed}
    inits = [i for i in g.initializer if i.name in needed]
    del g.initializer[:]
    g.initializer.extend(inits)
    # old-style graphs list initializers among the inputs too: drop those with them
    ins = [i for i in g.input if i.name not in gone]
    del g.input[:]
    g.input.extend(ins)
    vis = [v for v in g.value_info if v.name in needed]
    del g.value_info[:]
    g.value_info.extend(vis)
    return dropped, n_dropped


def _precision(model, input_dtype: str) -> str:
    if any(n.op_type in ("QuantizeLinear", "DequantizeLinear", "QLinearConv") for n in model.graph.node):
        return "int8"
    return "fp16" if input_dtype == "float16" else "fp32"


def adopt_onnx(foreign, output, *, classes: Optional[str], input_convention: Optional[str],
               output_name: Optional[str] = None) -> AdoptReport:
    """The whole of ``fcn-export --adopt``. FcnError (one line) on anything it cannot take."""
    from fcn_deploy._util import sha256_file
    from fcn_deploy.export.onnx_export import _tool_version, save_onnx_atomic, set_metadata
    from fcn_deploy.modelinfo import METADATA_PREFIX, ModelInfo
    from fcn_deploy.palette import default_palette
    from fcn_deploy.training.importers.cli import read_classes
    from fcn_deploy.training.registry import convention as named_convention

    foreign, output = Path(foreign), Path(output)
    if output.suffix.lower() != ".onnx":
        raise FcnError(f"OUT must name an .onnx file, got {output}")
    _missing_flags(classes, input_convention)
    order, scale, mean, std = named_convention(input_convention)
    names, palette, ignore = read_classes(classes)
    if foreign.exists() and output.exists() and foreign.resolve() == output.resolve():
        raise FcnError("OUT.onnx is the foreign file itself; write the adopted model to a new file")
    model = _load(foreign)
    if any(p.key.startswith(METADATA_PREFIX) for p in model.metadata_props):
        raise FcnError(f"{foreign}: already carries fcn-deploy metadata; use it as it is (or re-export it with fcn-export)")
    inp, in_shape = _check_input(model, foreign)
    out = _pick_output(model, foreign, output_name)
    kind, channels = _output_kind(model, out, foreign)
    n = len(names)
    if channels is None and kind != "labels":
        channels = _inferred_channels(model, out.name)
    if channels is not None and channels != n:
        raise FcnError(f"{foreign}: output {out.name!r} has {channels} class channels, --classes {classes} names {n}")
    dropped, n_nodes = _prune(model, out.name)
    extra: Dict[str, str] = {
        "adopted_from": foreign.name, "input_convention": str(input_convention),
        "producer": f"{model.producer_name} {model.producer_version}".strip(),
    }
    if dropped:
        extra["dropped_outputs"] = ",".join(dropped)
    info = ModelInfo(
        arch="adopted", backbone=foreign.stem, num_classes=n, class_names=tuple(names),
        palette=tuple(palette if palette is not None and len(palette) >= n else default_palette(n)),
        channel_order=order, scale=scale, mean=mean, std=std, ignore_index=ignore,
        precision=_precision(model, _FLOAT[inp.type.tensor_type.elem_type]), output=kind,
        input_name=inp.name, output_name=out.name, source_sha256=sha256_file(foreign),
        tool_version=_tool_version(), extra=extra,
    )
    set_metadata(model, info)

    def check(tmp: Path) -> None:
        # onnx's structural checker (not full_check: a foreign file's own shape annotations are
        # its exporter's business; the runtime probe below is the real test).
        import onnx

        try:
            onnx.checker.check_model(str(tmp))
        except Exception as e:
            raise FcnError(f"{foreign}: the adopted model fails onnx's checker: {first_line(e)[:200]}") from None
        import fcn_deploy

        import numpy as np

        # The runtime accepts it (metadata, I/O) and one small image runs through it: that
        # checks the class channels where the graph leaves them symbolic, and the label range.
        h = in_shape[2] if isinstance(in_shape[2], int) and in_shape[2] > 0 else 64
        w = in_shape[3] if isinstance(in_shape[3], int) and in_shape[3] > 0 else 64
        img = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
        with fcn_deploy.load(tmp, backend="onnxruntime") as seg:
            try:
                seg.segment(img)
            except FcnError as e:
                raise FcnError(f"{foreign}: {str(e).split(': ', 1)[-1]}") from None

    save_onnx_atomic(model, output, check=check)
    rep = AdoptReport(output, inp.name, in_shape, out.name, kind, n, str(input_convention), dropped, n_nodes)
    log.info("%s", rep.format())
    return rep
