"""Read what the runtime needs from an ONNX file without the onnx package or protobuf.

An ONNX file is a protobuf ``ModelProto``. This module walks the wire format (varints and
length-delimited fields, over an ``mmap`` so a 500 MB model is not copied) and picks out only:
``metadata_props`` (field 14), the graph's ``input`` (11) / ``output`` (12) value infos with
element type and shape, the names of initializers (5, to drop them from old-style input
lists), ``ir_version`` (1) and ``opset_import`` (8). Used by ``fcn-build`` (TensorRT machines
often have no onnx package) and by the OpenVINO backend; the onnxruntime backend reads the
metadata through its session instead. Anything that does not parse raises :class:`FcnError`.
"""

from __future__ import annotations

import mmap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

from fcn_deploy.errors import FcnError

# TensorProto.DataType -> numpy dtype name.
ONNX_DTYPES = {
    1: "float32", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32", 7: "int64",
    9: "bool", 10: "float16", 11: "float64", 12: "uint32", 13: "uint64", 16: "bfloat16",
}


@dataclass(frozen=True)
class OnnxTensor:
    name: str
    dtype: str
    # ints for fixed dims, strings (dim_param) or None for dynamic ones
    shape: Tuple[object, ...]


@dataclass(frozen=True)
class OnnxHeader:
    ir_version: int
    opsets: Dict[str, int]
    metadata: Dict[str, str]
    inputs: Tuple[OnnxTensor, ...]
    outputs: Tuple[OnnxTensor, ...]
    producer: str = ""
    extra: Dict[str, str] = field(default_factory=dict)


class _Malformed(Exception):
    pass


def _varint(buf, pos: int) -> Tuple[int, int]:
    result = 0
    shift = 0
    n = len(buf)
    while True:
        if pos >= n:
            raise _Malformed("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 70:
            raise _Malformed("varint too long")


def _fields(buf) -> Iterator[Tuple[int, int, object]]:
    """Yield (field number, wire type, value); value is an int or a memoryview slice."""
    pos = 0
    n = len(buf)
    while pos < n:
        key, pos = _varint(buf, pos)
        num, wt = key >> 3, key & 7
        if num == 0:
            raise _Malformed("field number 0")
        if wt == 0:
            val, pos = _varint(buf, pos)
        elif wt == 1:
            if pos + 8 > n:
                raise _Malformed("truncated fixed64")
            val = int.from_bytes(bytes(buf[pos:pos + 8]), "little")
            pos += 8
        elif wt == 2:
            ln, pos = _varint(buf, pos)
            if pos + ln > n:
                raise _Malformed("length-delimited field runs past the end")
            val = buf[pos:pos + ln]
            pos += ln
        elif wt == 5:
            if pos + 4 > n:
                raise _Malformed("truncated fixed32")
            val = int.from_bytes(bytes(buf[pos:pos + 4]), "little")
            pos += 4
        else:
            raise _Malformed(f"unsupported wire type {wt}")
        yield num, wt, val


def _str(v) -> str:
    return bytes(v).decode("utf-8", errors="replace")


def _signed64(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def _value_info(buf) -> OnnxTensor:
    name, dtype, shape = "", "?", ()
    for num, wt, val in _fields(buf):
        if num == 1 and wt == 2:
            name = _str(val)
        elif num == 2 and wt == 2:  # TypeProto
            for tnum, twt, tval in _fields(val):
                if tnum == 1 and twt == 2:  # tensor_type
                    for nnum, nwt, nval in _fields(tval):
                        if nnum == 1 and nwt == 0:
                            dtype = ONNX_DTYPES.get(nval, f"onnx-type-{nval}")
                        elif nnum == 2 and nwt == 2:  # TensorShapeProto
                            dims = []
                            for dnum, dwt, dval in _fields(nval):
                                if dnum == 1 and dwt == 2:
                                    dim: object = None
                                    for knum, kwt, kval in _fields(dval):
                                        if knum == 1 and kwt == 0:
                                            dim = _signed64(kval)
                                        elif knum == 2 and kwt == 2:
                                            dim = _str(kval)
                                    dims.append(dim)
                            shape = tuple(dims)
    return OnnxTensor(name, dtype, shape)


def _initializer_name(buf) -> Optional[str]:
    for num, wt, val in _fields(buf):
        if num == 8 and wt == 2:
            return _str(val)
    return None


def parse_onnx_header(data) -> OnnxHeader:
    """Parse a serialized ModelProto (bytes / memoryview / mmap)."""
    buf = memoryview(data)
    ir_version = 0
    producer = ""
    opsets: Dict[str, int] = {}
    metadata: Dict[str, str] = {}
    inputs: List[OnnxTensor] = []
    outputs: List[OnnxTensor] = []
    inits = set()
    saw_graph = False
    try:
        for num, wt, val in _fields(buf):
            if num == 1 and wt == 0:
                ir_version = val
            elif num == 2 and wt == 2:
                producer = _str(val)
            elif num == 8 and wt == 2:
                domain, version = "", 0
                for onum, owt, oval in _fields(val):
                    if onum == 1 and owt == 2:
                        domain = _str(oval)
                    elif onum == 2 and owt == 0:
                        version = oval
                opsets[domain] = version
            elif num == 14 and wt == 2:
                k, v = "", ""
                for snum, swt, sval in _fields(val):
                    if snum == 1 and swt == 2:
                        k = _str(sval)
                    elif snum == 2 and swt == 2:
                        v = _str(sval)
                metadata[k] = v
            elif num == 7 and wt == 2:
                saw_graph = True
                for gnum, gwt, gval in _fields(val):
                    if gnum == 11 and gwt == 2:
                        inputs.append(_value_info(gval))
                    elif gnum == 12 and gwt == 2:
                        outputs.append(_value_info(gval))
                    elif gnum == 5 and gwt == 2:
                        nm = _initializer_name(gval)
                        if nm is not None:
                            inits.add(nm)
    except _Malformed as e:
        raise FcnError(f"not a valid ONNX model ({e})") from None
    if not saw_graph or ir_version == 0:
        raise FcnError("not a valid ONNX model (no graph or IR version)")
    inputs = [t for t in inputs if t.name not in inits]
    return OnnxHeader(ir_version, opsets, metadata, tuple(inputs), tuple(outputs), producer)


def read_onnx_header(path) -> OnnxHeader:
    """Read :class:`OnnxHeader` from an ONNX file (memory-mapped, nothing else loaded)."""
    path = Path(path)
    if not path.is_file():
        raise FcnError(f"{path}: no such file")
    try:
        with open(path, "rb") as f:
            if path.stat().st_size == 0:
                raise FcnError(f"{path}: empty file, not an ONNX model")
            mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except OSError as e:
        raise FcnError(f"{path}: cannot read ({e})") from None
    error = None
    try:
        header = parse_onnx_header(mm)
    except FcnError as e:
        error = str(e)
    finally:
        try:
            mm.close()
        except BufferError:  # a view still alive: the mapping closes when it is collected
            pass
    if error is not None:
        raise FcnError(f"{path}: {error}")
    return header
