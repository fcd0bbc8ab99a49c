"""Inputs for parity checks and calibration: image files, random images, the ModelInfo convention.

Every array this module returns is NCHW float32 prepared exactly like the runtime does it:
``x = ((rgb[..., ::-1] if BGR else rgb) * scale - mean) / std``. Random images are uniform
0..255 pixels pushed through the same convention, so they cover the value range real images
have (never zeros, which would make any comparison pass).
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Sequence, Tuple

import numpy as np

from fcn_deploy.errors import FcnError
from fcn_deploy.modelinfo import ModelInfo

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".tif", ".tiff", ".webp")


def list_images(folder) -> List[Path]:
    """Image files directly in ``folder`` or below it, sorted. FcnError when there are none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FcnError(f"image folder not found: {folder}")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise FcnError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    return files


def load_rgb(path, size: Tuple[int, int] = None) -> np.ndarray:
    """Read an image as HxWx3 uint8 RGB; resize to ``size`` = (H, W) with bilinear filtering."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            if size is not None and (im.height, im.width) != tuple(size):
                im = im.resize((int(size[1]), int(size[0])), Image.BILINEAR)
            return np.asarray(im, dtype=np.uint8).copy()
    except (OSError, ValueError) as e:
        raise FcnError(f"cannot read image {path}: {e}") from None


def normalize(rgb: np.ndarray, info: ModelInfo) -> np.ndarray:
    """uint8/float RGB images (N, H, W, 3) or (H, W, 3) -> NCHW float32 per ``info``'s convention."""
    x = np.asarray(rgb, dtype=np.float32)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[-1] != 3:
        raise FcnError(f"expected RGB images (N, H, W, 3), got shape {x.shape}")
    if info.channel_order == "BGR":
        x = x[..., ::-1]
    x = (x * np.float32(info.scale) - np.asarray(info.mean, np.float32)) / np.asarray(info.std, np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2), dtype=np.float32)


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
    rgb = np.stack([load_rgb(files[(start + i) % len(files)], (h, w)) for i in range(n)])
    return normalize(rgb, info)


def parse_size(text: str) -> Tuple[int, int]:
    """'360x480' -> (360, 480) (height x width)."""
    try:
        h, w = (int(v) for v in str(text).lower().split("x"))
    except ValueError:
        raise FcnError(f"size must be HxW (e.g. 360x480), got {text!r}") from None
    if h < 1 or w < 1:
        raise FcnError(f"size must be positive, got {text!r}")
    return h, w


def parse_sizes(text: str) -> List[Tuple[int, int]]:
    """'97x131,360x480' -> [(97, 131), (360, 480)]."""
    sizes = [parse_size(s) for s in str(text).split(",") if s.strip()]
    if not sizes:
        raise FcnError("no sizes given")
    return sizes
