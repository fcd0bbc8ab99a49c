"""Input shapes and optimization profiles: plain logic shared by fcn-build, the TensorRT
runner and the Segmenter (no GPU needed, so all of it is tested on CPU).

A :class:`Profile` is TensorRT's min/opt/max for the NCHW input. ONNX models with fixed
dimensions get an equivalent profile (min = max on those axes) so the Segmenter applies the
same "outside the profile" / ``resize="fit"`` logic to every backend.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

from fcn_deploy.errors import FcnError

Shape = Tuple[int, int, int, int]

# Bounds used for dynamic axes of ONNX models (no real limit; big enough for any image).
UNBOUNDED = 1 << 30


# The one grammar of sizes and shapes on every command line: ASCII numbers separated by "x" or
# "," ("X" and "*" also; spaces around a separator are ignored), e.g. 288,384 / 288x384 (a size;
# a single 288 = square) and 1x3x288x384 / 1,3,288,384. Lists of sizes: parse_hw_list.
_SEP = r"[xX,*]"
_NUMBERS = re.compile(rf"[0-9]+(?:{_SEP}[0-9]+)*")
_AROUND_SEP = re.compile(r"\s*([xX,*;])\s*")


def _lead(what: str) -> str:
    return f"{what}: " if what else ""


def _ints(text, what: str, expected: str):
    if not isinstance(text, str) or not text.strip():
        raise FcnError(f"{_lead(what)}empty; expected {expected}")
    compact = _AROUND_SEP.sub(r"\1", text.strip())
    if not _NUMBERS.fullmatch(compact):
        raise FcnError(f"{_lead(what)}{text!r} is not {expected}")
    dims = tuple(int(p) for p in re.split(_SEP, compact))
    if max(dims) >= UNBOUNDED:
        raise FcnError(f"{_lead(what)}{text!r} has a number >= {UNBOUNDED} (too large for any image)")
    return dims


def parse_hw(text: str, *, what: str = "size", square: bool = True) -> Tuple[int, int]:
    """A height x width: ``"288,384"`` or ``"288x384"`` -> (288, 384); ``"288"`` -> (288, 288)
    when ``square``. Anything else is one FcnError naming ``what``."""
    expected = "H,W or HxW (e.g. 288,384" + (" or 288 for square)" if square else ")")
    dims = _ints(text, what, expected)
    if len(dims) == 1 and square:
        dims = dims * 2
    if len(dims) != 2:
        raise FcnError(f"{_lead(what)}{text!r} has {len(dims)} numbers; expected {expected}")
    if min(dims) < 1:
        raise FcnError(f"{_lead(what)}{text!r} has a side < 1")
    return dims  # type: ignore[return-value]


def parse_hw_list(text: str, *, what: str = "sizes") -> List[Tuple[int, int]]:
    """Several sizes: ``"97x131,375x500"`` (HxW items, comma-separated) or items separated by
    ``;`` or spaces (``"97,131;375,500"``, ``"97x131 375x500"``) -> [(97, 131), (375, 500)].
    A comma-separated run is either HxW items or one H,W: ``"288,384,97x131"`` is refused
    (put ``;`` between H,W sizes)."""
    expected = "HxW,HxW,... or H,W;H,W (e.g. 97x131,375x500)"
    if not isinstance(text, str) or not text.strip():
        raise FcnError(f"{_lead(what)}empty; expected {expected}")
    items: List[str] = []
    for chunk in re.split(r"[;\s]+", _AROUND_SEP.sub(r"\1", text.strip())):
        if not chunk:
            continue
        parts = chunk.split(",")
        with_x = [p for p in parts if re.search(r"[xX*]", p)]
        if with_x and len(with_x) != len(parts):  # HxW items mixed with bare numbers
            raise FcnError(f"{_lead(what)}{text!r} mixes HxW sizes and bare numbers in {chunk!r}; "
                           f"expected {expected} (put ; between H,W sizes)")
        items.extend(parts if with_x else [chunk])
    if not items:
        raise FcnError(f"{_lead(what)}no sizes in {text!r}; expected {expected}")
    return [parse_hw(i, what=what) for i in items]


def parse_shape(text: str, *, what: str = "shape", channels: Optional[int] = None) -> Shape:
    """``"1x3x360x480"`` or ``"1,3,360,480"`` -> (1, 3, 360, 480); ``channels``: the C it must have."""
    dims = _ints(text, what, "NxCxHxW (e.g. 1x3x360x480)")
    if len(dims) != 4:
        raise FcnError(f"{_lead(what)}{text!r} has {len(dims)} dimensions; expected 4 (NxCxHxW)")
    if any(d < 1 for d in dims):
        raise FcnError(f"{_lead(what)}{text!r} has a dimension < 1")
    if channels is not None and dims[1] != channels:
        raise FcnError(f"{_lead(what)}{text!r}: FCN models take {channels} channels (RGB), got C={dims[1]}")
    return dims  # type: ignore[return-value]


def format_shape(shape: Sequence[int]) -> str:
    return "x".join(str(int(d)) if d < UNBOUNDED else "any" for d in shape)


@dataclass(frozen=True)
class Profile:
    min: Shape
    opt: Shape
    max: Shape

    def __post_init__(self):
        for name in ("min", "opt", "max"):
            v = tuple(int(d) for d in getattr(self, name))
            if len(v) != 4:
                raise FcnError(f"profile {name} must be NxCxHxW, got {v}")
            object.__setattr__(self, name, v)
        bad = [i for i in range(4) if not self.min[i] <= self.opt[i] <= self.max[i]]
        if bad:
            axes = ", ".join("NCHW"[i] for i in bad)
            raise FcnError(
                f"profile needs min <= opt <= max on every axis; not so on {axes}: "
                f"min {format_shape(self.min)}, opt {format_shape(self.opt)}, max {format_shape(self.max)}"
            )
        if not self.min[1] == self.max[1]:
            raise FcnError(f"profile channel count must be fixed, got {self.min[1]}..{self.max[1]}")

    def describe(self) -> str:
        return f"min {format_shape(self.min)}, opt {format_shape(self.opt)}, max {format_shape(self.max)}"

    def to_dict(self) -> dict:
        return {"min": list(self.min), "opt": list(self.opt), "max": list(self.max)}

    @classmethod
    def from_dict(cls, d) -> "Profile":
        try:
            return cls(tuple(d["min"]), tuple(d["opt"]), tuple(d["max"]))
        except (KeyError, TypeError) as e:
            raise FcnError(f"profile is malformed ({e}); expected min/opt/max lists") from None

    @property
    def channels(self) -> int:
        return self.min[1]

    @property
    def max_batch(self) -> int:
        return self.max[0]

    def contains(self, shape: Sequence[int]) -> bool:
        return len(shape) == 4 and all(self.min[i] <= shape[i] <= self.max[i] for i in range(4))

    def hw_fits(self, h: int, w: int) -> bool:
        return self.min[2] <= h <= self.max[2] and self.min[3] <= w <= self.max[3]

    def check(self, shape: Sequence[int], *, name: str = "input", what: str = "the engine's profile",
              rebuild: str = "rebuild with wider --min/--max") -> None:
        """Raise FcnError naming the profile when ``shape`` is outside it."""
        shape = tuple(int(d) for d in shape)
        if len(shape) != 4:
            raise FcnError(f"{name} must be NxCxHxW, got {shape}")
        if shape[1] != self.min[1]:
            raise FcnError(f"{name} has {shape[1]} channels; the model takes {self.min[1]}")
        if not self.contains(shape):
            hint = ""
            if self.min[0] <= shape[0] <= self.max[0]:
                hint = f"; pass resize='fit' (fcn-predict --resize fit) to scale images into it, or {rebuild}"
            else:
                hint = f"; use batches of {self.min[0]}..{self.max[0]} images"
            raise FcnError(f"{name} {format_shape(shape)} is outside {what} ({self.describe()}){hint}")

    def fit_hw(self, h: int, w: int) -> Tuple[int, int]:
        """A size inside the profile for an h x w image: unchanged when it fits; otherwise one
        scale factor (aspect kept) when some factor lands both sides in range, else each side
        clamped on its own."""
        if self.hw_fits(h, w):
            return h, w
        lo = max(self.min[2] / h, self.min[3] / w)
        hi = min(self.max[2] / h, self.max[3] / w)
        if lo <= hi:
            # The factor nearest to 1 within [lo, hi].
            s = min(max(1.0, lo), hi)
            nh = min(max(int(round(h * s)), self.min[2]), self.max[2])
            nw = min(max(int(round(w * s)), self.min[3]), self.max[3])
            return nh, nw
        return min(max(h, self.min[2]), self.max[2]), min(max(w, self.min[3]), self.max[3])


def profile_from_dims(shape: Sequence[object], *, channels: Optional[int] = None) -> Profile:
    """The profile equivalent of an ONNX input shape: fixed ints stay fixed, dynamic axes
    (None / strings / non-positive) span 1..UNBOUNDED."""
    if len(shape) != 4:
        raise FcnError(f"model input must be 4-D NCHW, got shape {tuple(shape)}")
    lo, hi = [], []
    for i, d in enumerate(shape):
        if isinstance(d, int) and d > 0:
            lo.append(d)
            hi.append(d)
        elif i == 1 and channels is not None:
            lo.append(channels)
            hi.append(channels)
        else:
            lo.append(1)
            hi.append(UNBOUNDED)
    return Profile(tuple(lo), tuple(lo), tuple(hi))


def batches(n: int, max_batch: int):
    """Split range(n) into consecutive chunks of at most max_batch."""
    max_batch = max(1, int(max_batch))
    for start in range(0, n, max_batch):
        yield range(start, min(n, start + max_batch))

