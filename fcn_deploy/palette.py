"""Class names and colour palettes (CamVid, PASCAL VOC, generic) and mask colorizing."""

from __future__ import annotations

from typing import List, Sequence, Tuple

import numpy as np

CAMVID_CLASSES = [
    "Sky", "Building", "Pole", "Road", "Pavement", "Tree",
    "SignSymbol", "Fence", "Car", "Pedestrian", "Bicyclist",
]
CAMVID_IGNORE = 11
# SegNet's CamVid colours.
CAMVID_PALETTE = [
    (128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222), (128, 128, 0),
    (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0), (0, 128, 192),
]

VOC_CLASSES = [
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
    "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
]
VOC_IGNORE = 255


def voc_palette(n: int = 256) -> List[Tuple[int, int, int]]:
    """The PASCAL VOC colour map (bit-interleaved), the palette of VOC's label PNGs."""
    out = []
    for i in range(n):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        out.append((r, g, b))
    return out


def default_palette(n: int) -> List[Tuple[int, int, int]]:
    """A distinct colour per class for datasets that bring none (VOC's map, skipping black)."""
    return voc_palette(n + 1)[1 : n + 1]


def colorize(labels: np.ndarray, palette: Sequence[Sequence[int]], ignore_color=(0, 0, 0)) -> np.ndarray:
    """HxW integer labels -> HxWx3 uint8 colours; labels outside the palette get ``ignore_color``."""
    labels = np.asarray(labels)
    lut = np.zeros((256, 3), dtype=np.uint8)
    lut[:] = ignore_color
    pal = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)[:256]
    lut[: len(pal)] = pal
    idx = np.where((labels >= 0) & (labels < 256), labels, 255).astype(np.int64)
    if len(pal) == 256:
        idx = np.where((labels >= 0) & (labels < 256), labels, 0).astype(np.int64)
    return lut[idx]


def overlay(image_rgb: np.ndarray, labels: np.ndarray, palette, alpha: float = 0.5) -> np.ndarray:
    """Blend the colorized mask over an HxWx3 uint8 RGB image (alpha = mask weight)."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be within [0, 1], got {alpha}")
    mask = colorize(labels, palette).astype(np.float32)
    img = np.asarray(image_rgb, dtype=np.float32)
    return np.clip((1 - alpha) * img + alpha * mask + 0.5, 0, 255).astype(np.uint8)
