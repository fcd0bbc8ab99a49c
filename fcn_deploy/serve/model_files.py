"""What a served model file offers: its real input/output tensors, data types, profile and
class metadata, read from the ONNX file itself or from a TensorRT plan's JSON sidecar.

Nothing here loads a backend: ONNX files are read with :mod:`fcn_deploy.onnx_info` (no onnx
package), plans through their sidecar (no TensorRT). Shapes use ``-1`` for dynamic axes, the
way Triton and the ONNX Runtime backend report them.

A plan's I/O tensors are those of the ONNX it was built from (fcn-build parses it strongly
typed). Recent ``fcn-build`` records them in the sidecar (``builder.io``) together with the
GPU's compute capability (``builder.compute_capability``); for older sidecars the ONNX named
in the sidecar is read when it sits beside the plan with the recorded sha256.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

from fcn_deploy._util import sha256_file
from fcn_deploy.errors import FcnError
from fcn_deploy.modelinfo import ModelInfo
from fcn_deploy.onnx_info import OnnxTensor, read_onnx_header
from fcn_deploy.shapes import Profile

# numpy dtype name -> Triton model-config DataType and the KServe V2 / HTTP datatype.
TRITON_TYPES = {
    "bool": "TYPE_BOOL", "uint8": "TYPE_UINT8", "uint16": "TYPE_UINT16", "uint32": "TYPE_UINT32",
    "uint64": "TYPE_UINT64", "int8": "TYPE_INT8", "int16": "TYPE_INT16", "int32": "TYPE_INT32",
    "int64": "TYPE_INT64", "float16": "TYPE_FP16", "float32": "TYPE_FP32", "float64": "TYPE_FP64",
    "bytes": "TYPE_STRING", "bfloat16": "TYPE_BF16",
}
V2_TYPES = {k: v[len("TYPE_"):] if v != "TYPE_STRING" else "BYTES" for k, v in TRITON_TYPES.items()}
NUMPY_OF_TRITON = {v: k for k, v in TRITON_TYPES.items()}
NUMPY_OF_V2 = {v: k for k, v in V2_TYPES.items()}


@dataclass(frozen=True)
class TensorIO:
    """One tensor: name, numpy dtype name, full shape (batch included), -1 = dynamic."""

    name: str
    dtype: str
    shape: Tuple[int, ...]

    @property
    def triton_type(self) -> str:
        if self.dtype not in TRITON_TYPES:
            raise FcnError(f"tensor {self.name!r} has data type {self.dtype}, which Triton does not serve")
        return TRITON_TYPES[self.dtype]

    @property
    def v2_type(self) -> str:
        return V2_TYPES[self.dtype]

    def to_dict(self) -> dict:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}

    @classmethod
    def from_dict(cls, d, *, source: str = "model") -> "TensorIO":
        try:
            return cls(str(d["name"]), str(d["dtype"]), tuple(int(v) for v in d["shape"]))
        except (KeyError, TypeError, ValueError) as e:
            raise FcnError(f"{source}: malformed tensor description ({e})") from None


def _dims(shape) -> Tuple[int, ...]:
    return tuple(int(d) if isinstance(d, int) and d > 0 else -1 for d in shape)


def tensor_from_onnx(t: OnnxTensor) -> TensorIO:
    return TensorIO(t.name, t.dtype, _dims(t.shape))


@dataclass(frozen=True)
class ServedModel:
    """A model file as a server sees it."""

    path: Path
    kind: str  # "onnx" | "plan"
    info: ModelInfo
    input: TensorIO
    output: TensorIO
    profile: Optional[Profile] = None  # a plan's optimization profile; None for ONNX
    compute_capability: Optional[str] = None  # plans: "8.6"

    @property
    def precision(self) -> str:
        return self.info.precision

    @property
    def batch_dynamic(self) -> bool:
        return self.input.shape[0] == -1

    def description(self) -> dict:
        """What the ensemble's Python models need to rebuild the runtime's stages (JSON-able)."""
        return {
            "format": "fcn-deploy/served-model", "format_version": 1,
            "model_info": self.info.to_dict(),
            "input": self.input.to_dict(), "output": self.output.to_dict(),
            "profile": self.profile.to_dict() if self.profile is not None else None,
            "source": self.path.name,
        }


def _pick_output(outputs, info: ModelInfo, source: str):
    by_name = {o.name: o for o in outputs}
    if info.output_name in by_name:
        return by_name[info.output_name]
    if len(outputs) == 1:
        return outputs[0]
    raise FcnError(f"{source}: metadata names output {info.output_name!r}, the model has {', '.join(by_name) or 'none'}")


def describe_onnx(path) -> ServedModel:
    path = Path(path)
    header = read_onnx_header(path)
    info = ModelInfo.from_metadata(header.metadata, source=str(path))
    if len(header.inputs) != 1:
        raise FcnError(f"{path}: an FCN model has one input, this one has {len(header.inputs)}")
    inp = tensor_from_onnx(header.inputs[0])
    out = tensor_from_onnx(_pick_output(list(header.outputs), info, str(path)))
    _check_io(path, inp, out, info)
    return ServedModel(path, "onnx", info, inp, out)


def _check_io(path, inp: TensorIO, out: TensorIO, info: ModelInfo) -> None:
    if len(inp.shape) != 4:
        raise FcnError(f"{path}: input {inp.name!r} has shape {list(inp.shape)}; expected NCHW")
    if inp.dtype not in ("float32", "float16"):
        raise FcnError(f"{path}: input {inp.name!r} is {inp.dtype}; expected float32 or float16")
    if out.dtype not in TRITON_TYPES:
        raise FcnError(f"{path}: output {out.name!r} has data type {out.dtype}, which Triton does not serve")
    if (inp.shape[0] == -1) != (out.shape[0] == -1 if out.shape else False):
        raise FcnError(f"{path}: input and output disagree on a dynamic batch axis ({list(inp.shape)} vs {list(out.shape)})")


def _sidecar_json(plan: Path) -> dict:
    from fcn_deploy.sidecar import sidecar_path

    try:
        return json.loads(sidecar_path(plan).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:  # read_sidecar already accepted it; only a race lands here
        raise FcnError(f"{sidecar_path(plan)}: cannot read ({e})") from None


def plan_io_and_cc(plan: Path, sc) -> Tuple[TensorIO, TensorIO, Optional[str]]:
    """(input, output, compute capability) of a plan from its sidecar (or the ONNX beside it)."""
    raw = _sidecar_json(plan)
    builder = raw.get("builder") if isinstance(raw.get("builder"), dict) else {}
    cc = builder.get("compute_capability") or raw.get("compute_capability")
    cc = str(cc) if cc not in (None, "") else None
    io = builder.get("io")
    src = f"{plan}.json"
    if isinstance(io, dict) and "input" in io and "output" in io:
        return TensorIO.from_dict(io["input"], source=src), TensorIO.from_dict(io["output"], source=src), cc
    onnx = plan.parent / sc.onnx_file if sc.onnx_file else None
    if onnx is not None and onnx.is_file() and (not sc.onnx_sha256 or sha256_file(onnx) == sc.onnx_sha256):
        m = describe_onnx(onnx)
        return m.input, m.output, cc
    raise FcnError(
        f"{src}: records no builder.io (a sidecar from an older fcn-build) and the ONNX it was built "
        f"from ({sc.onnx_file or 'unnamed'}) is not beside the plan; the plan's tensor data types are "
        "unknown: rebuild it with fcn-build, or put that ONNX beside it"
    )


def describe_plan(path, *, compute_capability: Optional[str] = None) -> ServedModel:
    from fcn_deploy.sidecar import read_sidecar

    path = Path(path)
    if not path.is_file():
        raise FcnError(f"{path}: no such file")
    sc = read_sidecar(path)
    inp, out, cc = plan_io_and_cc(path, sc)
    if inp.name != sc.input_name:
        raise FcnError(f"{path}.json: builder.io names input {inp.name!r} but input_name is {sc.input_name!r}")
    info = sc.info
    _check_io(path, inp, out, info)
    return ServedModel(path, "plan", info, inp, out, sc.profile, compute_capability or cc)


def describe_model(path, *, compute_capability: Optional[str] = None) -> ServedModel:
    """Describe an ``.onnx`` or ``.plan`` file (FcnError for anything else)."""
    path = Path(path)
    if not path.exists():
        raise FcnError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return describe_onnx(path)
    if suffix in (".plan", ".engine", ".trt"):
        return describe_plan(path, compute_capability=compute_capability)
    raise FcnError(f"{path}: not a model file fcn-serve knows (.onnx, or a TensorRT .plan with its .plan.json)")
