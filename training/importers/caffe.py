"""Caffe ``.caffemodel`` files of fcn.berkeleyvision.org -> our VGG16 FCNs, read without Caffe.

A ``.caffemodel`` is a binary protobuf ``NetParameter``. Field numbers from BVLC caffe's
``src/caffe/proto/caffe.proto``:

- ``NetParameter``: ``name`` 1, ``layer`` 100 (``LayerParameter``), legacy ``layers`` 2
  (``V1LayerParameter``);
- ``LayerParameter``: ``name`` 1, ``type`` 2 (a string), ``blobs`` 7;
- ``V1LayerParameter``: ``name`` 4, ``type`` 5 (an enum), ``blobs`` 6;
- ``BlobProto``: ``shape`` 7 (``BlobShape``: ``dim`` 1, packed int64), ``data`` 5 (packed
  float), ``double_data`` 8 (packed double), legacy ``num``/``channels``/``height``/``width`` 1-4.

The file is walked by hand (the protobuf wire format: varints and length-delimited fields,
with fcn_deploy.onnx_info's walker), blob data is viewed in place and copied once into a tensor.

Layer names are those of the ``voc-fcn32s``/``16s``/``8s``/``8s-atonce`` and
``pascalcontext-fcn32s/16s/8s`` prototxts (``conv1_1 .. conv5_3``, ``fc6``, ``fc7``,
``score_fr``, ``score_pool4``, ``score_pool3``, ``upscore``/``upscore2``/``upscore16``/
``upscore_pool4``/``upscore8``): the torchfcn layout, so the conversion is torchfcn.py's. The
at-once model's ``scale_pool4``/``scale_pool3`` Scale blobs are constants (0.01, 0.0001) built
into the fcn8s-atonce graph; they are checked and skipped (and they tell FCN-8s at-once from
FCN-8s, whose weights are otherwise alike). Two-headed nets are refused: SIFT Flow
(``*_sem`` + ``*_geo``) and NYUD late fusion (``*color`` + ``*hha`` streams, ``score_fused``),
and so is NYUD's 4-channel ``conv1_1_bgrd``. Input convention: BGR 0-255 minus the Caffe mean.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import numpy as np

from fcn_deploy.errors import FcnError
from fcn_deploy.onnx_info import _fields, _Malformed, _str, _varint
from fcn_deploy.training.importers import Imported, Importer, ImportOptions, register_importer
from fcn_deploy.training.importers.torchfcn import ARCH_TO_CLASS, TRUNK, arch_candidates, convert_flat

ATONCE_SCALES = {"scale_pool4": 0.01, "scale_pool3": 0.0001}
# V1LayerParameter.LayerType values for the layers that carry weights here.
_V1_TYPES = {4: "Convolution", 39: "Deconvolution", 14: "InnerProduct"}
# pascalcontext-fcn*: 59 PASCAL-Context classes + background (60 outputs).
PASCAL_CONTEXT_OUTPUTS = 60


class CaffeLayer:
    __slots__ = ("name", "type", "blobs")

    def __init__(self, name: str, type_: str, blobs: List[np.ndarray]):
        self.name, self.type, self.blobs = name, type_, blobs


def _packed_varints(buf) -> List[int]:
    """A packed repeated int64 field (BlobShape.dim) with onnx_info's varint reader."""
    out, pos = [], 0
    while pos < len(buf):
        v, pos = _varint(buf, pos)
        out.append(v - (1 << 64) if v >= 1 << 63 else v)
    return out


def _blob(buf) -> np.ndarray:
    shape: Optional[List[int]] = None
    legacy = [0, 0, 0, 0]
    chunks: List[np.ndarray] = []
    for num, wt, val in _fields(buf):
        if num == 7 and wt == 2:
            shape = []
            for snum, swt, sval in _fields(val):
                if snum == 1 and swt == 2:
                    shape += _packed_varints(sval)
                elif snum == 1 and swt == 0:
                    shape.append(sval)
        elif num == 5 and wt == 2:
            if len(val) % 4:
                raise _Malformed("float data length is not a multiple of 4")
            chunks.append(np.frombuffer(val, dtype="<f4"))
        elif num == 5 and wt == 5:  # unpacked repeated float
            chunks.append(np.array([val], dtype="<u4").view("<f4"))
        elif num == 8 and wt == 2:
            if len(val) % 8:
                raise _Malformed("double data length is not a multiple of 8")
            chunks.append(np.frombuffer(val, dtype="<f8").astype(np.float32))
        elif 1 <= num <= 4 and wt == 0:
            legacy[num - 1] = val
    data = np.concatenate(chunks) if len(chunks) > 1 else (chunks[0] if chunks else np.zeros(0, np.float32))
    if shape is None:
        shape = [d for d in legacy] if any(legacy) else [data.size]
    if any(d < 0 for d in shape) or int(np.prod(shape, dtype=np.int64)) != data.size:
        raise _Malformed(f"a blob of shape {shape} holds {data.size} values")
    return data.reshape(shape)


def _layer(buf, v1: bool) -> CaffeLayer:
    name, type_, blobs = "", "", []
    name_f, type_f, blobs_f = (4, 5, 6) if v1 else (1, 2, 7)
    for num, wt, val in _fields(buf):
        if num == name_f and wt == 2:
            name = _str(val)
        elif num == type_f:
            type_ = _V1_TYPES.get(val, f"V1-{val}") if (v1 and wt == 0) else (_str(val) if wt == 2 else type_)
        elif num == blobs_f and wt == 2:
            blobs.append(_blob(val))
    return CaffeLayer(name, type_, blobs)


def parse_caffemodel(data, source: str = "caffemodel") -> Tuple[str, List[CaffeLayer]]:
    """(net name, layers) of a binary NetParameter. FcnError (one line) when it does not parse."""
    buf = memoryview(data)
    name, layers = "", []
    try:
        for num, wt, val in _fields(buf):
            if num == 1 and wt == 2:
                name = _str(val)
            elif num == 100 and wt == 2:
                layers.append(_layer(val, v1=False))
            elif num == 2 and wt == 2:
                layers.append(_layer(val, v1=True))
    except _Malformed as e:
        raise FcnError(f"{source}: truncated or damaged caffemodel ({e})") from None
    if not layers:
        raise FcnError(f"{source}: not a caffemodel (no layers in the NetParameter)")
    return name, layers


def _looks_like_netparameter(data) -> bool:
    """Cheap check of the first field: NetParameter's name (1), layers (2) or layer (100)."""
    b = bytes(memoryview(data)[:2])
    # name 1, layers 2, input 3 (length-delimited); input_dim 4, force_backward 5 (varint);
    # state 6, input_shape 8 (length-delimited); layer 100 (0xa2 0x06).
    return b[:1] in (b"\x0a", b"\x12", b"\x1a", b"\x20", b"\x28", b"\x32", b"\x42") or b == b"\xa2\x06"


def _two_heads(names: List[str]) -> Optional[str]:
    if any(n.endswith("_sem") for n in names) and any(n.endswith("_geo") for n in names):
        return "a SIFT Flow two-headed net (semantic *_sem and geometric *_geo heads)"
    if "score_fused" in names or (any(n.endswith("color") for n in names) and any(n.endswith("hha") for n in names)):
        return "an NYUD late-fusion net (two streams, *color and *hha, fused by score_fused)"
    if "conv1_1_bgrd" in names:
        return "an NYUD color-depth net (4-channel input conv1_1_bgrd)"
    return None


@register_importer
class CaffeImporter(Importer):
    name = "caffe"
    suffixes = (".caffemodel",)
    description = "fcn.berkeleyvision.org .caffemodel (voc-fcn32s/16s/8s/8s-atonce, pascalcontext-fcn*), read without Caffe"

    def detect(self, state) -> Optional[str]:
        if not isinstance(state, (bytes, bytearray, memoryview)) or not _looks_like_netparameter(state):
            return None
        try:
            name, layers = parse_caffemodel(state)
        except FcnError:
            # starts like a NetParameter but does not parse: claim it, so convert() says why
            return "a Caffe NetParameter by its first bytes, but it does not parse"
        with_blobs = [l for l in layers if l.blobs]
        if not with_blobs:
            return None
        return f"Caffe NetParameter {name!r}: {len(layers)} layers, {len(with_blobs)} with weights"

    def convert(self, state, options: ImportOptions) -> Imported:
        src = getattr(options, "source_path", "") or "caffemodel"
        if not isinstance(state, (bytes, bytearray, memoryview)):
            raise FcnError(f"{src}: a caffemodel is read as raw bytes; use --from caffe with a .caffemodel file")
        net, layers = parse_caffemodel(state, src)
        names = [l.name for l in layers]
        two = _two_heads(names)
        if two:
            raise FcnError(f"{src}: {two}; fcn-deploy imports single-head FCNs only")
        flat: Dict[str, object] = {}
        scales: Dict[str, float] = {}
        skipped: List[str] = []
        import torch

        for l in layers:
            if not l.blobs:
                continue
            if l.name in ATONCE_SCALES:
                if l.type != "Scale" or len(l.blobs) != 1:
                    raise FcnError(f"{src}: layer {l.name} is a {l.type} with {len(l.blobs)} blobs; expected one Scale blob")
                vals = l.blobs[0].ravel()
                want = ATONCE_SCALES[l.name]
                if vals.size == 0 or not np.allclose(vals, want, rtol=1e-6, atol=0):
                    raise FcnError(f"{src}: {l.name} scales by {float(vals.ravel()[0]) if vals.size else 'nothing'}, "
                                   f"not the at-once constant {want}; this graph is not supported")
                scales[l.name] = want
                continue
            if l.type not in ("Convolution", "Deconvolution"):
                skipped.append(f"{l.name} ({l.type})")
                continue
            w = l.blobs[0]
            if w.ndim != 4:
                if w.size and l.type == "Convolution" and w.ndim == 2 and l.name in ("fc6", "fc7"):
                    raise FcnError(f"{src}: {l.name} is a fully connected layer here, not the FCN's convolution; "
                                   "cast the classifier into convolutions first (net surgery)")
                raise FcnError(f"{src}: layer {l.name} has a weight of shape {list(w.shape)}; expected 4-d")
            flat[f"{l.name}.weight"] = torch.from_numpy(np.ascontiguousarray(w, dtype=np.float32).copy())
            if len(l.blobs) > 1:
                flat[f"{l.name}.bias"] = torch.from_numpy(np.ascontiguousarray(l.blobs[1], dtype=np.float32).ravel().copy())
            if len(l.blobs) > 2:
                raise FcnError(f"{src}: layer {l.name} has {len(l.blobs)} blobs; expected weight and bias")
        if skipped:
            raise FcnError(f"{src}: layers with weights that an FCN has not: {', '.join(skipped[:4])}")
        present = {k.rsplit(".", 1)[0] for k in flat}
        missing_trunk = [t for t in TRUNK if t not in present]
        if missing_trunk:
            raise FcnError(f"{src}: not a VGG16 FCN caffemodel (no {', '.join(missing_trunk[:3])}"
                           f"{', ...' if len(missing_trunk) > 3 else ''}; layers with weights: "
                           f"{', '.join(sorted(present)[:6])}{', ...' if len(present) > 6 else ''})")
        cands = arch_candidates(present)
        if not cands:
            heads = sorted(p for p in present if p not in TRUNK)
            raise FcnError(f"{src}: VGG16 trunk with an unknown head ({', '.join(heads) or 'none'})")
        if "fcn8s" in cands:
            if len(scales) == 2:
                arch = "fcn8s-atonce"
            elif scales:
                raise FcnError(f"{src}: has {', '.join(scales)} but not both at-once Scale layers")
            else:
                arch = "fcn8s"
        else:
            if scales:
                raise FcnError(f"{src}: {', '.join(scales)} in a {'/'.join(ARCH_TO_CLASS[c] for c in cands)} net")
            arch = cands[0]
        if options.arch is not None and options.arch != arch:
            raise FcnError(f"--arch {options.arch}, but this caffemodel is a {arch}"
                           + (" (it has the at-once Scale layers)" if scales else ""))
        imp = convert_flat(flat, arch, src)
        imp.notes.append(f"Caffe net {net!r} -> {arch}/vgg16 ({len(flat)} tensors)")
        if scales:
            imp.notes.append("skipped the at-once Scale blobs scale_pool4 (0.01) and scale_pool3 (0.0001): built into fcn8s-atonce")
        if imp.num_classes == PASCAL_CONTEXT_OUTPUTS:
            imp.notes.append("60 outputs: a PASCAL-Context model (59 classes + background); name them with --classes FILE")
        return imp
