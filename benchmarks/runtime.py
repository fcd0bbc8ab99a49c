"""The benchmarks' bridge to the torch-free runtime (fcn_deploy.image, fcn_deploy.segmenter,
fcn_deploy.backends).

Everything the harness needs from the runtime goes through here, so fcn-bench and fcn-eval
time and score exactly the code a deployed application runs: the same pre-processing
(``fcn_deploy.image.preprocess``), the same backends (Runner subclasses) and the same
post-processing (logits -> labels at the image size).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np

from fcn_deploy.errors import FcnError
from fcn_deploy.modelinfo import ModelInfo

log = logging.getLogger(__name__)


def default_info() -> ModelInfo:
    """Convention for a model that carries none (ImageNet mean/std, RGB): inputs only."""
    from fcn_deploy.palette import default_palette

    return ModelInfo(arch="?", backbone="?", num_classes=1, class_names=("0",), palette=tuple(default_palette(1)))


def list_images(folder) -> List[Path]:
    from fcn_deploy.image import IMAGE_EXTENSIONS

    folder = Path(folder)
    if not folder.is_dir():
        raise FcnError(f"image folder not found: {folder}")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise FcnError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {folder}")
    return files


def load_image(path) -> np.ndarray:
    from fcn_deploy.image import load_image as _load

    return _load(path)


def preprocess(images: Sequence[np.ndarray], info: ModelInfo, *, dtype=np.float32) -> np.ndarray:
    """Same-size HxWx3 uint8 RGB images -> NCHW model input (the runtime's own code)."""
    from fcn_deploy.image import preprocess as _pre

    return _pre(images, info, dtype=dtype)


def to_labels(output: np.ndarray, info: ModelInfo) -> np.ndarray:
    """Model output (N,C,H,W logits/probs, or N,H,W / N,1,H,W labels) -> N,H,W int labels."""
    out = np.asarray(output)
    kind = getattr(info, "output", "logits")
    if kind == "labels" or out.ndim == 3 or (out.ndim == 4 and out.shape[1] == 1 and info.num_classes > 1):
        return out.reshape(out.shape[0], out.shape[-2], out.shape[-1]).astype(np.int64, copy=False)
    if out.ndim != 4:
        raise FcnError(f"unexpected model output shape {out.shape}")
    return out.argmax(axis=1)


def postprocess(output: np.ndarray, info: ModelInfo, size: Tuple[int, int]) -> np.ndarray:
    """Model output -> per-pixel class ids at ``size`` (H, W) for each image in the batch."""
    from fcn_deploy.image import resize_nearest

    labels = to_labels(output, info)
    return np.stack([resize_nearest(lab, size) for lab in labels])


def open_runner(path, *, backend: str, threads: Optional[int] = None, **options):
    """Open a deployed model (ONNX / IR / plan) on ``backend`` ("onnxruntime", "openvino",
    "tensorrt") with the runtime's own Runner classes (fcn_deploy.backends).

    Returns the Runner with ``.info`` set to the model's ModelInfo (from the ONNX metadata or
    the plan's sidecar).
    """
    from fcn_deploy.backends import runner_class

    if threads is not None and backend != "tensorrt":  # a GPU engine has no CPU thread knob
        options["threads"] = threads
    runner = runner_class(backend)(path, **options)
    try:
        if getattr(runner, "info", None) is None:
            getter = getattr(runner, "model_info", None)
            runner.info = getter() if callable(getter) else None
    except Exception:
        runner.close()
        raise
    return runner
