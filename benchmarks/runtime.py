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


def with_threads(path, backend: str, threads: Optional[int], options: dict) -> dict:
    """``options`` plus ``threads`` when the backend that will run ``path`` has a CPU thread
    knob (a TensorRT plan has none: the bench's ``--threads`` does not apply to it)."""
    if threads is None:
        return dict(options)
    from fcn_deploy import backends

    # An explicit backend needs no layout scan here (only auto's choice depends on the layout).
    layout = None if backends.canonical_name(backend) == "auto" else (None, None)
    name = backends.choose_backend(path, backend, options=tuple(options) + ("threads",), log_hint=False, layout=layout)
    if "threads" not in backends.runner_options(backends.runner_class(name)):
        return dict(options)
    return {**options, "threads": threads}


def open_segmenter(path, *, backend: str = "auto", threads: Optional[int] = None, **options):
    """A Segmenter for a checkpoint (.pt, on the torch backend) or a deployed model (.onnx,
    .plan): :meth:`Segmenter.load`, with the bench's ``threads`` where the backend takes it."""
    from fcn_deploy.segmenter import Segmenter

    return Segmenter.load(path, backend, **with_threads(path, backend, threads, options))


def open_runner(path, *, backend: str = "auto", threads: Optional[int] = None, log_hint: bool = True, **options):
    """:func:`fcn_deploy.backends.open_runner`, with the bench's ``threads`` where the backend
    takes it; the Runner's ``.info`` is the model's ModelInfo. ``log_hint``: see
    :func:`fcn_deploy.backends.open_loader`."""
    from fcn_deploy.backends import open_runner as _open

    return _open(path, backend, log_hint=log_hint, **with_threads(path, backend, threads, options))
