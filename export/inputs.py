"""Inputs for parity checks and calibration: image files, random images, the ModelInfo convention.

Nothing here reads a dataset layout or decodes an image on its own: files are listed by
:func:`fcn_deploy.datasets.list_images`, decoded by :func:`fcn_deploy.image.load_image`
(EXIF orientation, 16-bit scaling; exactly as fcn-predict), resized by
:func:`fcn_deploy.image.resize_rgb` and pre-processed by :func:`fcn_deploy.image.preprocess`,
so export calibrates and verifies on the very arrays the runtime would feed:
``x = ((rgb[..., ::-1] if BGR else rgb) * scale - mean) / std``, NCHW float32. Random images are
uniform 0..255 pixels pushed through the same convention, so they cover the value range real
images have (never zeros, which would make any comparison pass).
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np

from fcn_deploy.errors import FcnError
from fcn_deploy.modelinfo import ModelInfo


def read_rgb(path, size: Optional[Tuple[int, int]] = None) -> np.ndarray:
    """An image file as HxWx3 uint8 RGB, decoded like the runtime, bilinear-resized to
    ``size`` = (H, W) when given."""
    from fcn_deploy.image import load_image, resize_rgb

    img = load_image(Path(path))
    return img if size is None else resize_rgb(img, size)


def normalize(rgb: np.ndarray, info: ModelInfo) -> np.ndarray:
    """uint8 RGB images (N, H, W, 3) or (H, W, 3) -> NCHW float32 per ``info``'s convention,
    through the runtime's :func:`fcn_deploy.image.preprocess`."""
    from fcn_deploy.image import preprocess

    x = np.asarray(rgb)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[-1] != 3 or x.dtype != np.uint8:
        raise FcnError(f"expected uint8 RGB images (N, H, W, 3), got {x.dtype} {x.shape}")
    return preprocess(list(x), info, dtype=np.float32)


def random_rgb(n: int, h: int, w: int, *, seed: int = 0) -> np.ndarray:
    """``n`` random HxWx3 uint8 images: smooth blobs plus noise, so segmentation models see
    structure (not only white noise). Deterministic for a given seed."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, h, w, 3), np.uint8)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    for i in range(n):
        img = np.zeros((h, w, 3), np.float32)
        for _ in range(4):
            cy, cx = rng.uniform(0, h), rng.uniform(0, w)
            r = rng.uniform(0.1, 0.6) * max(h, w)
            color = rng.uniform(0, 255, 3)
            mask = np.exp(-(((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r)))[..., None]
            img = img * (1 - mask) + color * mask
        img += rng.normal(0, 25, (h, w, 3))
        out[i] = np.clip(img, 0, 255).astype(np.uint8)
    return out


def image_batch(files: Sequence[Path], n: int, h: int, w: int, info: ModelInfo, *, start: int = 0) -> np.ndarray:
    """``n`` images from ``files`` (cycling), resized to HxW and normalised -> NCHW float32."""
    if not files:
        raise FcnError("no images given")
    return normalize(np.stack([read_rgb(files[(start + i) % len(files)], (h, w)) for i in range(n)]), info)


def parse_size(text: str) -> Tuple[int, int]:
    """'360x480' / '360,480' / '360' -> (360, 480) / (360, 360): :func:`fcn_deploy.shapes.parse_hw`
    (kept as an alias for code that imports it from here)."""
    from fcn_deploy.shapes import parse_hw

    return parse_hw(text)


def parse_sizes(text: str) -> List[Tuple[int, int]]:
    """'97x131,360x480' -> [(97, 131), (360, 480)]: :func:`fcn_deploy.shapes.parse_hw_list` (an alias)."""
    from fcn_deploy.shapes import parse_hw_list

    return parse_hw_list(text)
