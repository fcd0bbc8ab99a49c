"""What a deployed model says about itself: classes, palette, input convention, precision.

The export stage writes a :class:`ModelInfo` into the ONNX ``metadata_props`` (every value a
string; lists as JSON) and the engine builder copies it into the plan's JSON sidecar. The
runtime reads it back, so a user never passes class count or normalization by hand, and a
file without it is refused rather than run with silent defaults.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from fcn_deploy.errors import FcnError

# Stable tensor names, documented in the README.
INPUT_NAME = "input"
OUTPUT_NAMES = {"logits": "logits", "labels": "labels", "probs": "probs"}

# Input conventions: (channel order, scale, mean, std), applied as ((x[..., order] * scale) - mean) / std.
CAFFE_CONVENTION = ("BGR", 1.0, (104.00699, 116.66877, 122.67892), (1.0, 1.0, 1.0))
IMAGENET_CONVENTION = ("RGB", 1.0 / 255.0, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))

METADATA_PREFIX = "fcn_deploy."


@dataclass(frozen=True)
class ModelInfo:
    arch: str
    backbone: str
    num_classes: int
    class_names: Tuple[str, ...]
    palette: Tuple[Tuple[int, int, int], ...]
    channel_order: str = "RGB"
    scale: float = 1.0 / 255.0
    mean: Tuple[float, float, float] = IMAGENET_CONVENTION[2]
    std: Tuple[float, float, float] = IMAGENET_CONVENTION[3]
    ignore_index: Optional[int] = None
    # Filled by the export stage.
    precision: str = "fp32"
    output: str = "logits"  # logits | labels | probs
    input_name: str = INPUT_NAME
    output_name: str = "logits"
    source_sha256: str = ""
    tool_version: str = ""
    extra: Dict[str, str] = field(default_factory=dict)

    def __post_init__(self):
        if self.num_classes < 1:
            raise FcnError(f"num_classes must be >= 1, got {self.num_classes}")
        if len(self.class_names) != self.num_classes:
            raise FcnError(f"{len(self.class_names)} class names for {self.num_classes} classes")
        if len(self.palette) < self.num_classes:
            raise FcnError(f"palette has {len(self.palette)} colours for {self.num_classes} classes")
        if self.channel_order not in ("RGB", "BGR"):
            raise FcnError(f"channel_order must be RGB or BGR, got {self.channel_order!r}")
        if self.output not in OUTPUT_NAMES:
            raise FcnError(f"output must be one of {sorted(OUTPUT_NAMES)}, got {self.output!r}")
        # Normalise sequences to tuples so instances stay hashable and comparable.
        object.__setattr__(self, "class_names", tuple(str(c) for c in self.class_names))
        object.__setattr__(self, "palette", tuple(tuple(int(v) for v in c) for c in self.palette))
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))

    # -- plain dict (checkpoint, sidecar) ---------------------------------------------------------
    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["class_names"] = list(self.class_names)
        d["palette"] = [list(c) for c in self.palette]
        d["mean"] = list(self.mean)
        d["std"] = list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ModelInfo":
        if not isinstance(d, dict):
            raise FcnError("model info is not a mapping")
        names = {f.name for f in dataclasses.fields(cls)}
        missing = [k for k in ("arch", "backbone", "num_classes", "class_names", "palette") if k not in d]
        if missing:
            raise FcnError(f"model info lacks {', '.join(missing)}")
        try:
            return cls(**{k: v for k, v in d.items() if k in names})
        except (TypeError, ValueError) as e:
            raise FcnError(f"model info is malformed: {e}") from None

    def replace(self, **kw) -> "ModelInfo":
        return dataclasses.replace(self, **kw)

    # -- ONNX metadata_props (str -> str) ---------------------------------------------------------
    def to_metadata(self) -> Dict[str, str]:
        out = {}
        for k, v in self.to_dict().items():
            out[METADATA_PREFIX + k] = v if isinstance(v, str) else json.dumps(v)
        return out

    @classmethod
    def from_metadata(cls, props: Dict[str, str], source: str = "model") -> "ModelInfo":
        d = {}
        for k, v in props.items():
            if not k.startswith(METADATA_PREFIX):
                continue
            key = k[len(METADATA_PREFIX):]
            if key in ("arch", "backbone", "channel_order", "precision", "output", "input_name",
                        "output_name", "source_sha256", "tool_version"):
                d[key] = v
            else:
                try:
                    d[key] = json.loads(v)
                except json.JSONDecodeError:
                    raise FcnError(f"{source}: metadata {k} is not valid JSON") from None
        if not d:
            raise FcnError(
                f"{source} carries no fcn-deploy metadata (class names, palette, normalization); "
                "export it with fcn-export"
            )
        return cls.from_dict(d)
