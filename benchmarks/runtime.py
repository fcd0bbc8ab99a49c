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
from typing import List, Optional, Sequence

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


def segmenter_for(runner, info: ModelInfo, path=None):
    """Wrap an opened runner (any backend, the PyTorch one included) in the runtime's
    Segmenter, so its pre/post-processing and batching are the deployed ones."""
    from fcn_deploy.segmenter import Segmenter

    return Segmenter(runner, info, path=path)


def open_segmenter(path, *, backend: str = "auto", threads: Optional[int] = None, **options):
    """A Segmenter for a checkpoint (.pt, through PyTorch) or a deployed model (.onnx, .plan,
    through the runtime's backends). Returns (segmenter, description)."""
    path = Path(path)
    if not path.exists():
        raise FcnError(f"model not found: {path}")
    if path.suffix.lower() in (".pt", ".pth"):
        if backend not in ("auto", "torch"):
            raise FcnError(f"{path} is a PyTorch checkpoint: it runs on backend 'torch', not {backend!r}")
        from fcn_deploy.benchmarks.torch_runner import TorchRunner

        runner = TorchRunner(path, threads=threads, **options)
        return segmenter_for(runner, runner.info, path=path)
    from fcn_deploy.segmenter import Segmenter

    if threads is not None and path.suffix.lower() not in (".plan", ".engine"):
        options["threads"] = threads
    return Segmenter.load(path, backend=backend, **options)


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
