"""The embeddable runtime: ``Segmenter`` turns images into label maps on any backend.

::

    import fcn_deploy
    seg = fcn_deploy.load("fcn8s.onnx")              # or "fcn8s.plan" (TensorRT + sidecar)
    res = seg.segment("street.jpg")                   # path, PIL image or HxWx3 uint8 array
    res.labels                                        # HxW class ids at the input's size
    res.save_labels("street.png"); res.save_overlay("street_overlay.png", alpha=0.5)

No torch: numpy, Pillow and the backend's own library (onnxruntime, openvino or tensorrt);
:meth:`Segmenter.load` opens through :func:`fcn_deploy.backends.open_runner` (where torch is
installed that also runs a ``.pt`` checkpoint, on the PyTorch baseline backend).
The model's classes, palette and input normalization come from the ONNX metadata or the
plan's sidecar; a model without them is refused.

Outputs: models exported with ``output="logits"`` or ``"probs"`` (N, C, H, W floats) and with
``"labels"`` (argmax inside the graph: N, H, W or N, 1, H, W integers) are all supported;
per-pixel confidence (softmax maximum) only for the first two.

A list of images is batched: same-size images together (up to the model's batch limit),
different sizes in separate runs; results come back in the input order.

Thread safety: one Segmenter may be shared by threads. It keeps no per-call state except
:attr:`Segmenter.last_timing`, which is per thread; the runners are thread-safe (onnxruntime
sessions natively, OpenVINO through a pool of infer requests, TensorRT through a lock).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from fcn_deploy import image as _img
from fcn_deploy.errors import FcnError
from fcn_deploy.modelinfo import ModelInfo
from fcn_deploy.palette import colorize, overlay
from fcn_deploy.shapes import Profile, batches, format_shape, profile_from_dims

log = logging.getLogger(__name__)

RESIZE_MODES = (None, "fit")
FLOAT_TYPES = ("float32", "float16")
# Metadata of a pixels-in model (fcn-export --input uint8).
UINT8_INPUT_KEY = "fcn_deploy.input_format"
UINT8_NHWC = "uint8_nhwc"
INT_TYPES = ("int32", "int64", "uint8", "int8", "int16", "uint16")


@dataclass(frozen=True)
class SegmentTiming:
    """Where the time of one ``segment`` call (or of the batch an image ran in) went, in ms.

    ``load_ms``: decoding/validating the inputs; ``preprocess_ms``: resize (``fit``) and
    normalization to the model's input; ``infer_ms``: the backend call, wall clock;
    ``postprocess_ms``: argmax / confidence / resize back. ``compute_ms``, ``h2d_ms`` and
    ``d2h_ms`` are what the backend itself measured (transfers only on TensorRT).
    """

    load_ms: float
    preprocess_ms: float
    infer_ms: float
    postprocess_ms: float
    batch: int = 1
    runs: int = 1
    compute_ms: Optional[float] = None
    h2d_ms: Optional[float] = None
    d2h_ms: Optional[float] = None

    @property
    def total_ms(self) -> float:
        return self.load_ms + self.preprocess_ms + self.infer_ms + self.postprocess_ms

    @property
    def overhead_ms(self) -> float:
        """Pre- plus post-processing: the runtime's own cost around inference."""
        return self.preprocess_ms + self.postprocess_ms

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in ("load_ms", "preprocess_ms", "infer_ms", "postprocess_ms", "batch", "runs",
                                            "compute_ms", "h2d_ms", "d2h_ms")}
        d["total_ms"] = self.total_ms
        return d


def _sum_opt(vals):
    vals = [v for v in vals if v is not None]
    return sum(vals) if vals else None


def _combine(timings: Sequence[SegmentTiming], load_ms: float, n: int) -> SegmentTiming:
    return SegmentTiming(
        load_ms=load_ms,
        preprocess_ms=sum(t.preprocess_ms for t in timings),
        infer_ms=sum(t.infer_ms for t in timings),
        postprocess_ms=sum(t.postprocess_ms for t in timings),
        batch=n,
        runs=len(timings),
        compute_ms=_sum_opt(t.compute_ms for t in timings),
        h2d_ms=_sum_opt(t.h2d_ms for t in timings),
        d2h_ms=_sum_opt(t.d2h_ms for t in timings),
    )


@dataclass(frozen=True, eq=False)
class SegmentationResult:
    """One image's segmentation.

    ``labels``: HxW class ids (uint8 up to 256 classes, else int32) at the input image's size;
    ``image``: the input as HxWx3 uint8 RGB; ``confidence``: HxW float32 in (0, 1] or None;
    ``timing``: :class:`SegmentTiming` of the batch the image ran in.
    """

    labels: np.ndarray
    image: np.ndarray
    info: ModelInfo
    confidence: Optional[np.ndarray] = None
    timing: Optional[SegmentTiming] = None
    resized_from: Optional[Tuple[int, int]] = field(default=None, repr=False)

    @property
    def shape(self) -> Tuple[int, int]:
        return tuple(self.labels.shape)  # type: ignore[return-value]

    @property
    def class_names(self) -> Tuple[str, ...]:
        return self.info.class_names

    def colorized(self) -> np.ndarray:
        """HxWx3 uint8: each pixel in its class's palette colour."""
        return colorize(self.labels, self.info.palette)

    def overlay(self, alpha: float = 0.5) -> np.ndarray:
        """HxWx3 uint8: the colorized mask blended over the input (alpha = mask weight)."""
        if not 0.0 <= float(alpha) <= 1.0:
            raise FcnError(f"alpha must be within [0, 1], got {alpha}")
        return overlay(self.image, self.labels, self.info.palette, float(alpha))

    def class_counts(self) -> Dict[str, int]:
        """Pixels per class name, for every class of the model (zeros included), in class order."""
        counts = np.bincount(self.labels.ravel().astype(np.int64), minlength=self.info.num_classes)
        return {name: int(counts[i]) for i, name in enumerate(self.info.class_names)}

    def save_labels(self, path, *, with_palette: bool = True) -> None:
        """Palette PNG of the class ids (``with_palette=False``: plain grey ids)."""
        _img.write_label_png(path, self.labels, self.info.palette, with_palette=with_palette)

    def save_overlay(self, path, alpha: float = 0.5) -> None:
        _img.write_rgb_png(path, self.overlay(alpha))

    def save_colorized(self, path) -> None:
        _img.write_rgb_png(path, self.colorized())


class Segmenter:
    """A loaded FCN on one backend. Build with :meth:`load` (or wrap a runner you opened)."""

    def __init__(self, runner, info: ModelInfo, *, path=None):
        self.runner = runner
        self.info = info
        self.path = Path(path) if path is not None else getattr(runner, "path", None)
        self._local = threading.local()
        ins = runner.inputs()
        if len(ins) != 1:
            raise FcnError(f"{self.path}: an FCN model has one input, this one has {len(ins)}")
        spec = ins[0]
        # Pixels in (fcn-export --input uint8): uint8 (N, H, W, 3) RGB, normalised inside the graph,
        # so pre-processing is a view of the image (a stack for a batch).
        self.pixels_in = spec.dtype == "uint8"
        if self.pixels_in:
            if len(spec.shape) != 4 or (isinstance(spec.shape[3], int) and spec.shape[3] != 3):
                raise FcnError(f"{self.path}: uint8 input {spec.name!r} has shape {spec.shape}; expected (N, H, W, 3)")
            meta = runner.metadata() if callable(getattr(runner, "metadata", None)) else {}
            fmt = meta.get(UINT8_INPUT_KEY)
            if fmt is not None and fmt.strip('"') != UINT8_NHWC:
                raise FcnError(f"{self.path}: input format {fmt} is not one this runtime knows ({UINT8_NHWC})")
            nchw = (spec.shape[0], 3, spec.shape[1], spec.shape[2])
        else:
            if spec.dtype not in FLOAT_TYPES:
                raise FcnError(f"{self.path}: input {spec.name!r} is {spec.dtype}; expected float32 or float16 "
                               "(or uint8 pixels, N x H x W x 3)")
            if len(spec.shape) != 4:
                raise FcnError(f"{self.path}: input {spec.name!r} has shape {spec.shape}; expected NCHW")
            if isinstance(spec.shape[1], int) and spec.shape[1] != 3:
                raise FcnError(f"{self.path}: input {spec.name!r} takes {spec.shape[1]} channels; images have 3")
            nchw = spec.shape
        self.input_name = spec.name
        self.input_dtype = np.dtype(spec.dtype)
        prof = runner.profile()
        self.profile: Profile = Profile(*prof) if prof is not None else profile_from_dims(nchw, channels=3)
        outs = runner.outputs()
        by_name = {o.name: o for o in outs}
        if info.output_name in by_name:
            out = by_name[info.output_name]
        elif len(outs) == 1:
            out = outs[0]
        else:
            raise FcnError(f"{self.path}: metadata names output {info.output_name!r}, the model has {', '.join(by_name)}")
        self.output_name = out.name
        self.output_kind = info.output
        if self.output_kind == "labels":
            if out.dtype not in INT_TYPES:
                raise FcnError(f"{self.path}: metadata says the output is labels but {out.name!r} is {out.dtype}")
        else:
            if out.dtype not in FLOAT_TYPES:
                raise FcnError(f"{self.path}: metadata says the output is {self.output_kind} but {out.name!r} is {out.dtype}")
            if len(out.shape) == 4 and isinstance(out.shape[1], int):
                self._check_classes(out.shape[1])
        self._lut = None if self.pixels_in else _img.normalization_lut(info, self.input_dtype)
        self.label_dtype = np.uint8 if info.num_classes <= 256 else np.int32

    # -- construction ----------------------------------------------------------------------------
    @classmethod
    def load(cls, path, backend: str = "auto", **options) -> "Segmenter":
        """Open ``path`` (``.onnx``, ``.plan``, or a ``.pt`` checkpoint where torch is installed)
        with :func:`fcn_deploy.backends.open_runner` on ``backend`` ("auto", "onnxruntime",
        "openvino", "tensorrt", "torch", "reference"). ``options`` go to the backend: onnxruntime
        ``providers``, ``threads``, ``trt_fp16``, ``trt_cache_dir``, ``device_id``; openvino
        ``precision``, ``performance``, ``threads``; tensorrt ``device_id``; torch ``device``,
        ``autocast``, ``compile``, ``threads``."""
        from fcn_deploy.backends import open_runner

        runner = open_runner(path, backend, **options)
        try:
            seg = cls(runner, runner.info, path=path)
        except BaseException:
            runner.close()
            raise
        info = seg.info
        log.info("loaded %s (%s %s, %d classes) on %s", Path(path).name, info.arch, info.backbone, info.num_classes,
                 runner.device)
        return seg

    def _check_classes(self, channels: int) -> None:
        if channels != self.info.num_classes:
            raise FcnError(
                f"{self.path}: the model outputs {channels} class channels but its metadata lists "
                f"{self.info.num_classes} classes; re-export it so both agree"
            )

    # -- properties ----------------------------------------------------------------------------
    @property
    def backend(self) -> str:
        return self.runner.backend

    @property
    def device(self) -> str:
        return self.runner.device

    @property
    def num_classes(self) -> int:
        return self.info.num_classes

    @property
    def class_names(self) -> Tuple[str, ...]:
        return self.info.class_names

    @property
    def last_timing(self) -> Optional[SegmentTiming]:
        """Timing of this thread's last :meth:`segment` call (all its batches summed)."""
        return getattr(self._local, "timing", None)

    def close(self) -> None:
        self.runner.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __repr__(self) -> str:
        return (f"Segmenter({self.path}, backend={self.backend}, device={self.device}, "
                f"{self.info.num_classes} classes, output={self.output_kind})")

    # -- segmentation --------------------------------------------------------------------------
    def segment(
        self,
        images,
        *,
        resize: Optional[str] = None,
        return_confidence: bool = False,
        channel_order: str = "RGB",
    ) -> Union[SegmentationResult, List[SegmentationResult]]:
        """Segment one image or a list of images.

        ``images``: a path, a PIL image, an HxWx3 uint8 array (``channel_order`` "RGB" or
        "BGR") or a list of them; a list returns a list. ``resize``: None (a size outside what
        the model accepts is an error naming its profile) or "fit" (scale into the profile and
        the label map back to the input size). ``return_confidence``: also the per-pixel
        softmax maximum (logits/probs models only).
        """
        if resize not in RESIZE_MODES:
            raise FcnError(f"resize must be None or 'fit', got {resize!r}")
        if return_confidence and self.output_kind == "labels":
            raise FcnError("this model outputs labels only (argmax in the graph): no confidence; export it with output logits for that")
        single = not isinstance(images, (list, tuple))
        items = [images] if single else list(images)
        if not items:
            raise FcnError("no images given")
        if isinstance(images, np.ndarray) and images.ndim == 4:
            raise FcnError("got a 4-D array; pass a list of HxWx3 images for a batch")
        t0 = time.perf_counter()
        rgbs = []
        for i, item in enumerate(items):
            try:
                rgbs.append(_img.load_image(item, channel_order=channel_order))
            except FcnError as e:
                raise FcnError(str(e) if single else f"image {i}: {e}") from None
        load_ms = (time.perf_counter() - t0) * 1e3

        # Size each image will run at, and grouping by that size.
        run_hw = []
        for i, im in enumerate(rgbs):
            try:
                run_hw.append(self.run_size(im.shape[0], im.shape[1], resize=resize))
            except FcnError as e:
                raise FcnError(str(e) if single else f"image {i}: {e}") from None
        groups: Dict[Tuple[int, int], List[int]] = {}
        for i, hw in enumerate(run_hw):
            groups.setdefault(hw, []).append(i)

        results: List[Optional[SegmentationResult]] = [None] * len(rgbs)
        chunk_timings = []
        for hw, idxs in groups.items():
            for chunk in batches(len(idxs), self.profile.max_batch):
                members = [idxs[j] for j in chunk]
                res, timing = self._run(hw, [rgbs[i] for i in members], return_confidence)
                chunk_timings.append(timing)
                for i, r in zip(members, res):
                    results[i] = r
        self._local.timing = _combine(chunk_timings, load_ms, len(rgbs))
        return results[0] if single else results  # type: ignore[return-value]

    def run_size(self, h: int, w: int, *, resize: Optional[str] = None) -> Tuple[int, int]:
        """The size an HxW image runs at: its own when the model accepts it, the profile-fitted
        size with ``resize="fit"``, else an error naming the accepted sizes."""
        if self.profile.hw_fits(h, w):
            return (h, w)
        if resize == "fit":
            return self.profile.fit_hw(h, w)
        self.profile.check((max(self.profile.min[0], 1), 3, h, w), name="image", **self._profile_words())
        return (h, w)

    def _profile_words(self) -> dict:
        if self.backend == "tensorrt":
            return {"what": "the engine's profile", "rebuild": "rebuild the plan with wider fcn-build --min/--max"}
        return {"what": "the sizes this model accepts", "rebuild": "re-export it with dynamic height/width"}

    # -- the three stages, public so serving and video pipelines reuse them ----------------------
    def preprocess(self, images: Sequence[np.ndarray], hw: Tuple[int, int]) -> np.ndarray:
        """HxWx3 uint8 RGB images -> the model's input batch at ``hw`` (resized if needed,
        normalised with the model's own convention, padded to the profile's minimum batch)."""
        resized = [_img.resize_rgb(im, hw) for im in images]
        pad = max(0, self.profile.min[0] - len(resized))  # engines whose profile starts above batch 1
        if self.pixels_in:
            return _img.pixels_batch(resized + [resized[-1]] * pad)
        return _img.preprocess(resized + [resized[-1]] * pad, self.info, lut=self._lut)

    def infer(self, x: np.ndarray):
        """Run the backend on one input batch; returns (output array, the runner's Timing or None)."""
        outs, timing = self.runner.infer_timed({self.input_name: x})
        if self.output_name not in outs:
            raise FcnError(f"backend returned {', '.join(outs)} but not {self.output_name!r}")
        return np.asarray(outs[self.output_name]), timing

    def postprocess(self, outputs: np.ndarray, index: int, hw: Tuple[int, int], image: np.ndarray,
                    *, confidence: bool = False) -> SegmentationResult:
        """Item ``index`` of a model output batch run at ``hw`` -> a result at ``image``'s size
        (argmax for logits/probs, range-checked labels, nearest/bilinear resize back)."""
        image_h, image_w = image.shape[:2]
        run_h, run_w = hw
        resized = (run_h, run_w) != (image_h, image_w)
        conf = None
        if self.output_kind == "labels":
            if outputs.ndim == 4 and outputs.shape[1] == 1:
                outputs = outputs[:, 0]
            if outputs.ndim != 3 or outputs.shape[1:] != (run_h, run_w):
                raise FcnError(f"model returned labels of shape {outputs.shape} for a {run_h}x{run_w} input; "
                               f"expected (N, {run_h}, {run_w})")
            item = outputs[index]
            if item.size and (item.min() < 0 or item.max() >= self.info.num_classes):
                raise FcnError(f"model returned label {int(item.max())} outside 0..{self.info.num_classes - 1}")
            if resized:
                item = _img.resize_nearest(item, (image_h, image_w))
            labels = item.astype(self.label_dtype)
        else:
            if outputs.ndim != 4:
                raise FcnError(f"model returned {self.output_kind} of shape {outputs.shape}; expected (N, C, H, W)")
            self._check_classes(outputs.shape[1])
            if outputs.shape[2:] != (run_h, run_w):
                raise FcnError(f"model returned {self.output_kind} of spatial size {outputs.shape[2]}x{outputs.shape[3]} "
                               f"for a {run_h}x{run_w} input")
            scores = outputs[index]
            if resized:
                scores = _img.resize_scores(scores, (image_h, image_w))
            labels = scores.argmax(axis=0).astype(self.label_dtype)
            if confidence:
                scores32 = scores.astype(np.float32, copy=False)
                top = scores32.max(axis=0)
                if self.output_kind == "probs":
                    conf = top
                else:
                    conf = (1.0 / np.exp(scores32 - top[None]).sum(axis=0)).astype(np.float32)
        return SegmentationResult(labels, image, self.info, conf, None, (run_h, run_w) if resized else None)

    def _run(self, hw, images: List[np.ndarray], want_conf: bool):
        t0 = time.perf_counter()
        n = len(images)
        x = self.preprocess(images, hw)
        t1 = time.perf_counter()
        outputs, backend_timing = self.infer(x)
        t2 = time.perf_counter()
        results = []
        for index, image in enumerate(images):
            results.append(self.postprocess(outputs, index, hw, image, confidence=want_conf))
        t3 = time.perf_counter()
        timing = SegmentTiming(
            load_ms=0.0,
            preprocess_ms=(t1 - t0) * 1e3,
            infer_ms=(t2 - t1) * 1e3,
            postprocess_ms=(t3 - t2) * 1e3,
            batch=n,
            compute_ms=getattr(backend_timing, "compute_ms", None),
            h2d_ms=getattr(backend_timing, "h2d_ms", None),
            d2h_ms=getattr(backend_timing, "d2h_ms", None),
        )
        return [SegmentationResult(r.labels, r.image, r.info, r.confidence, timing, r.resized_from) for r in results], timing



def load(path, backend: str = "auto", **options) -> Segmenter:
    """``fcn_deploy.load("fcn8s.onnx")``: same as :meth:`Segmenter.load`."""
    return Segmenter.load(path, backend, **options)
