"""The JSON sidecar of a TensorRT plan: what the plan cannot hold.

A serialized engine keeps tensors and kernels but not the class names, palette, input
normalization or the profile it was built for in a form the runtime can read without a GPU.
``fcn-build`` therefore writes ``MODEL.plan`` and, beside it, ``MODEL.plan.json`` (the plan's
full file name plus ``.json``)::

    {
      "format": "fcn-deploy/plan-sidecar", "format_version": 1,
      "model_info": {... ModelInfo.to_dict() from the ONNX metadata ...},
      "input_name": "input", "output_names": ["logits"],
      "profile": {"min": [1,3,256,256], "opt": [1,3,360,480], "max": [4,3,720,960]},
      "precision": "fp16",              # from the ONNX (or "fp16 (builder flag)" on TRT 10.0-10.11)
      "builder": {"strongly_typed": true, "fp16_flag": false, "version_compatible": false,
                  "hardware_compat": "none", "workspace_mb": 1024, "timing_cache": "..."},
      "tensorrt_version": "10.3.0", "gpu": "NVIDIA Orin", "compute_capability": "8.7",
      "build_time": "2025-...Z",
      "build_seconds": 41.2, "onnx_file": "fcn8s.onnx", "onnx_sha256": "...",
      "plan_sha256": "..."
    }

``compute_capability`` (absent in sidecars written before it was recorded: then only the
TensorRT version is checked) lets the runtime refuse a plan built for another GPU architecture
with one line, before TensorRT tries to deserialize it.

The runtime refuses a plan without its sidecar (never a silent default for class count or
normalization) and a sidecar whose ``plan_sha256`` does not match the plan beside it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Tuple

from fcn_deploy._util import atomic_write_text, sha256_file
from fcn_deploy.errors import FcnError
from fcn_deploy.modelinfo import ModelInfo
from fcn_deploy.shapes import Profile

SIDECAR_FORMAT = "fcn-deploy/plan-sidecar"
FORMAT_VERSION = 1


def sidecar_path(plan_path) -> Path:
    """``fcn8s.plan`` -> ``fcn8s.plan.json`` (the plan's full name plus ``.json``)."""
    return Path(str(plan_path) + ".json")


@dataclass(frozen=True)
class PlanSidecar:
    info: ModelInfo
    input_name: str
    output_names: Tuple[str, ...]
    profile: Profile
    precision: str
    tensorrt_version: str
    gpu: str = "unknown"
    compute_capability: str = ""
    build_time: str = ""
    build_seconds: float = 0.0
    onnx_file: str = ""
    onnx_sha256: str = ""
    plan_sha256: str = ""
    builder: Dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "format": SIDECAR_FORMAT,
            "format_version": FORMAT_VERSION,
            "model_info": self.info.to_dict(),
            "input_name": self.input_name,
            "output_names": list(self.output_names),
            "profile": self.profile.to_dict(),
            "precision": self.precision,
            "builder": dict(self.builder),
            "tensorrt_version": self.tensorrt_version,
            "gpu": self.gpu,
            "compute_capability": self.compute_capability,
            "build_time": self.build_time,
            "build_seconds": self.build_seconds,
            "onnx_file": self.onnx_file,
            "onnx_sha256": self.onnx_sha256,
            "plan_sha256": self.plan_sha256,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def from_dict(cls, d: dict, *, source: str = "sidecar") -> "PlanSidecar":
        if not isinstance(d, dict):
            raise FcnError(f"{source}: not a JSON object")
        if d.get("format") != SIDECAR_FORMAT:
            raise FcnError(f"{source}: not an fcn-deploy plan sidecar (format {d.get('format')!r})")
        if d.get("format_version") != FORMAT_VERSION:
            raise FcnError(f"{source}: sidecar format_version {d.get('format_version')!r} is not supported (expected {FORMAT_VERSION})")
        missing = [k for k in ("model_info", "input_name", "output_names", "profile", "precision", "tensorrt_version") if k not in d]
        if missing:
            raise FcnError(f"{source}: sidecar lacks {', '.join(missing)}")
        try:
            info = ModelInfo.from_dict(d["model_info"])
        except FcnError as e:
            raise FcnError(f"{source}: {e}") from None
        try:
            profile = Profile.from_dict(d["profile"])
        except FcnError as e:
            raise FcnError(f"{source}: {e}") from None
        outs = d["output_names"]
        if not isinstance(outs, list) or not outs or not all(isinstance(o, str) for o in outs):
            raise FcnError(f"{source}: output_names must be a non-empty list of names")
        try:
            return cls(
                info=info,
                input_name=str(d["input_name"]),
                output_names=tuple(outs),
                profile=profile,
                precision=str(d["precision"]),
                tensorrt_version=str(d["tensorrt_version"]),
                gpu=str(d.get("gpu", "unknown")),
                compute_capability=_cc(d.get("compute_capability", ""), source),
                build_time=str(d.get("build_time", "")),
                build_seconds=float(d.get("build_seconds", 0.0)),
                onnx_file=str(d.get("onnx_file", "")),
                onnx_sha256=str(d.get("onnx_sha256", "")),
                plan_sha256=str(d.get("plan_sha256", "")),
                builder=dict(d.get("builder", {})),
            )
        except (TypeError, ValueError) as e:
            raise FcnError(f"{source}: malformed sidecar ({e})") from None


def _cc(value, source: str) -> str:
    """"8.6" or "" (unknown); anything else is a malformed sidecar."""
    text = str(value or "")
    if text and not (text.count(".") == 1 and all(p.isdigit() for p in text.split("."))):
        raise FcnError(f"{source}: compute_capability {value!r} is not MAJOR.MINOR")
    return text


def write_sidecar(plan_path, sidecar: PlanSidecar) -> Path:
    path = sidecar_path(plan_path)
    atomic_write_text(path, sidecar.to_json())
    return path


def read_sidecar(plan_path, *, verify_plan: bool = True) -> PlanSidecar:
    """Read and validate ``plan_path``'s sidecar; FcnError when absent, malformed or stale."""
    plan_path = Path(plan_path)
    path = sidecar_path(plan_path)
    if not path.is_file():
        raise FcnError(
            f"{plan_path} has no sidecar {path.name}: a plan alone lacks the class names, palette "
            "and input normalization; build it with fcn-build, which writes both files"
        )
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise FcnError(f"{path}: not valid JSON ({e})") from None
    sc = PlanSidecar.from_dict(d, source=str(path))
    if verify_plan and sc.plan_sha256 and plan_path.is_file():
        actual = sha256_file(plan_path)
        if actual != sc.plan_sha256:
            raise FcnError(
                f"{path} belongs to a different plan (sha256 {sc.plan_sha256[:12]}..., "
                f"{plan_path.name} is {actual[:12]}...); rebuild with fcn-build"
            )
    return sc
