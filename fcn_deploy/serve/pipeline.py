"""Pre- and post-processing for served models: the runtime's own Segmenter stages, applied to
request tensors.

The Triton ensemble's Python models (``preprocess`` / ``postprocess``, see
:mod:`fcn_deploy.serve.python_models`), the KServe server's ``NAME_ensemble`` model and the
``fcn-predict --server`` client all go through :class:`Stages`, which wraps a
:class:`~fcn_deploy.segmenter.Segmenter` built on an :class:`InterfaceRunner`: a runner that
describes a model's tensors (from its file, or from the JSON description ``fcn-serve triton``
writes beside the Python models) but does not run it. So decoding (``fcn_deploy.image``),
sizing (``Segmenter.run_size``), normalization (``Segmenter.preprocess``), argmax / resize
back (``Segmenter.postprocess``) and colours (``fcn_deploy.palette.colorize``) are the very
functions ``fcn-predict`` runs locally, not copies.

Tensors follow the Triton repository's names:

- ``IMAGE``: BYTES, shape ``[N, 1]``, one encoded image (PNG, JPEG, any format Pillow reads) per
  batch item; all items of one request must decode to one size.
- the model's input (``input``): ``[N, 3, H, W]`` float32/float16, normalised;
- ``IMAGE_HW``: INT32 ``[N, 2]``, each item's original height and width;
- the model's output (``logits``/``probs``/``labels``) as the model returns it;
- ``LABELS``: ``[N, H, W]`` class ids at the original size (UINT8 up to 256 classes, else INT32);
- ``COLORIZED``: UINT8 ``[N, H, W, 3]``, the label map in the model's palette (optional).
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from fcn_deploy import image as _img
from fcn_deploy.backends.base import Runner, TensorSpec
from fcn_deploy.errors import FcnError
from fcn_deploy.modelinfo import ModelInfo
from fcn_deploy.palette import colorize
from fcn_deploy.shapes import Profile

IMAGE = "IMAGE"
IMAGE_HW = "IMAGE_HW"
LABELS = "LABELS"
COLORIZED = "COLORIZED"
DESCRIPTION_FILE = "fcn_model.json"


class InterfaceRunner(Runner):
    """A runner that only describes a model (tensors, profile, ModelInfo); it cannot infer.

    Lets the serving code build a :class:`Segmenter` -- and so reuse its checks and stages --
    where the model runs elsewhere (another Triton model, a remote server)."""

    backend = "interface"
    device = "none"

    def __init__(self, info: ModelInfo, input_spec: TensorSpec, output_spec: TensorSpec,
                 profile: Optional[Profile] = None, *, path=None):
        super().__init__()
        self._info = info
        self._in = input_spec
        self._out = output_spec
        self._profile = profile
        self.path = path

    def model_info(self) -> ModelInfo:
        return self._info

    def inputs(self) -> List[TensorSpec]:
        return [self._in]

    def outputs(self) -> List[TensorSpec]:
        return [self._out]

    def profile(self):
        p = self._profile
        return (p.min, p.opt, p.max) if p is not None else None

    def _infer(self, feeds):
        raise FcnError("this model runs elsewhere (a Triton model or a server); the interface runner only describes it")


def _spec(d: dict) -> TensorSpec:
    shape = tuple(None if int(v) < 0 else int(v) for v in d["shape"])
    return TensorSpec(str(d["name"]), str(d["dtype"]), shape)


def decode_image(data, *, what: str = "image") -> np.ndarray:
    """Encoded image bytes (PNG, JPEG, ...) -> HxWx3 uint8 RGB through the runtime's own
    :func:`fcn_deploy.image.pil_to_rgb` (EXIF orientation, every mode). FcnError when not an image."""
    from PIL import Image

    if isinstance(data, np.ndarray):
        data = data.item() if data.size == 1 else data
    if isinstance(data, str):
        data = data.encode("latin-1")
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise FcnError(f"{what}: expected encoded image bytes, got {type(data).__name__}")
    data = bytes(data)
    if not data:
        raise FcnError(f"{what}: empty payload, not an image")
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except Image.DecompressionBombError as e:
        raise FcnError(f"{what}: image too large ({e})") from None
    except Image.UnidentifiedImageError:
        raise FcnError(f"{what}: not an image (or a format Pillow cannot read)") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise FcnError(f"{what}: corrupt or truncated image ({e})") from None
    return _img.pil_to_rgb(img, name=what)


class Stages:
    """The runtime's stages for one model, from its description (:meth:`ServedModel.description`
    or a remote server's metadata)."""

    def __init__(self, info: ModelInfo, input_spec: TensorSpec, output_spec: TensorSpec,
                 profile: Optional[Profile] = None, *, resize: Optional[str] = None):
        from fcn_deploy.segmenter import Segmenter

        self.seg = Segmenter(InterfaceRunner(info, input_spec, output_spec, profile), info)
        self.info = info
        self.resize = resize
        self.input_name = self.seg.input_name
        self.output_name = self.seg.output_name
        self.label_dtype = np.dtype(self.seg.label_dtype)

    @classmethod
    def from_description(cls, d: dict, *, resize: Optional[str] = None) -> "Stages":
        if not isinstance(d, dict) or d.get("format") != "fcn-deploy/served-model":
            raise FcnError("not an fcn-deploy served-model description")
        info = ModelInfo.from_dict(d["model_info"])
        prof = Profile.from_dict(d["profile"]) if d.get("profile") else None
        return cls(info, _spec(d["input"]), _spec(d["output"]), prof, resize=resize)

    @classmethod
    def from_file(cls, path, *, resize: Optional[str] = None) -> "Stages":
        path = Path(path)
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise FcnError(f"{path}: cannot read the model description ({e})") from None
        try:
            return cls.from_description(d, resize=resize)
        except (KeyError, TypeError) as e:
            raise FcnError(f"{path}: malformed model description ({e})") from None
        except FcnError as e:
            raise FcnError(f"{path}: {e}") from None

    # -- pre-processing --------------------------------------------------------------------------
    def run_size(self, images: Sequence[np.ndarray]) -> Tuple[int, int]:
        """The one size a request's images run at (Segmenter.run_size; one size per request)."""
        sizes = {self.seg.run_size(im.shape[0], im.shape[1], resize=self.resize) for im in images}
        if len(sizes) != 1:
            raise FcnError(f"one request's images must share a size; got {sorted(sizes)}: send them in separate requests")
        return sizes.pop()

    def preprocess_images(self, images: Sequence[np.ndarray]) -> Tuple[np.ndarray, np.ndarray]:
        """HxWx3 uint8 RGB images -> (model input [N, 3, h, w], IMAGE_HW [N, 2] int32)."""
        if not images:
            raise FcnError("no images in the request")
        hw = self.run_size(images)
        x = self.seg.preprocess(list(images), hw)[: len(images)]
        sizes = np.array([im.shape[:2] for im in images], dtype=np.int32)
        return x, sizes

    def preprocess_bytes(self, payload: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """IMAGE tensor ([N, 1] or [N] of encoded bytes) -> (model input, IMAGE_HW)."""
        arr = np.asarray(payload, dtype=object)
        if arr.ndim == 2 and arr.shape[1] == 1:
            arr = arr[:, 0]
        if arr.ndim != 1 or arr.shape[0] < 1:
            raise FcnError(f"{IMAGE} must have shape [N, 1] (one encoded image per item), got {list(np.shape(payload))}")
        images = [decode_image(v, what=f"{IMAGE}[{i}]") for i, v in enumerate(arr)]
        return self.preprocess_images(images)

    # -- post-processing -------------------------------------------------------------------------
    def labels(self, outputs: np.ndarray, sizes: np.ndarray) -> np.ndarray:
        """Model output batch + IMAGE_HW -> LABELS [N, H, W] (Segmenter.postprocess per item)."""
        outputs = np.asarray(outputs)
        sizes = np.asarray(sizes)
        if sizes.ndim != 2 or sizes.shape[1] != 2 or not np.issubdtype(sizes.dtype, np.integer):
            raise FcnError(f"{IMAGE_HW} must be an integer [N, 2] tensor, got {sizes.dtype} {list(sizes.shape)}")
        if outputs.ndim < 3 or outputs.shape[0] != sizes.shape[0]:
            raise FcnError(f"{self.output_name} has shape {list(outputs.shape)} for {sizes.shape[0]} image size(s)")
        run_hw = tuple(int(v) for v in outputs.shape[-2:])
        maps = []
        for k in range(sizes.shape[0]):
            H, W = int(sizes[k, 0]), int(sizes[k, 1])
            if H < 1 or W < 1:
                raise FcnError(f"{IMAGE_HW}[{k}] = {H}x{W} is not an image size")
            shape_only = np.broadcast_to(np.zeros((1, 1, 3), np.uint8), (H, W, 3))
            maps.append(self.seg.postprocess(outputs, k, run_hw, shape_only).labels)
        if len({m.shape for m in maps}) != 1:
            raise FcnError(f"one request's images must share a size; got {sorted({m.shape for m in maps})}")
        return np.stack(maps).astype(self.label_dtype, copy=False)

    def colorized(self, labels: np.ndarray) -> np.ndarray:
        """LABELS [N, H, W] -> COLORIZED [N, H, W, 3] in the model's palette."""
        return np.stack([colorize(m, self.info.palette) for m in np.asarray(labels)])

    def postprocess(self, outputs: np.ndarray, sizes: np.ndarray, *, colorized: bool = False) -> Dict[str, np.ndarray]:
        lab = self.labels(outputs, sizes)
        out = {LABELS: lab}
        if colorized:
            out[COLORIZED] = self.colorized(lab)
        return out
