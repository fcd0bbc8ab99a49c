"""Comparison panels as in the FCN paper's figures: image | ground truth | prediction | overlay,
with a legend of the class colours; optionally a second model's prediction beside the first
(e.g. fp32 vs int8) with the pixels where the two disagree hatched black and white.

::

    from fcn_deploy.panels import comparison_panel
    rgb = comparison_panel(image, truth, pred, info.palette, info.class_names,
                           second=pred_int8, titles=("fp32", "int8"), ignore_index=11)

Small images are upscaled by an integer factor (nearest neighbour for label maps, so class
edges stay sharp) until a tile is at least ``min_height`` pixels high. Pure numpy + Pillow.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple

import numpy as np

from fcn_deploy.errors import FcnError

VOID_COLOR = (0, 0, 0)
PAD = 8


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)  # Pillow >= 10.1 with FreeType: a scalable font
    except TypeError:  # pragma: no cover - older Pillow: the fixed bitmap font
        return ImageFont.load_default()


def _colors(labels: np.ndarray, palette, ignore_index: Optional[int]) -> np.ndarray:
    pal = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)
    n = len(pal)
    lab = np.asarray(labels).astype(np.int64)
    valid = (lab >= 0) & (lab < n)
    if ignore_index is not None:
        valid &= lab != ignore_index
    out = np.empty(lab.shape + (3,), np.uint8)
    out[:] = VOID_COLOR
    out[valid] = pal[lab[valid]]
    return out


def _has_void(truth: np.ndarray, n: int, ignore_index: Optional[int]) -> bool:
    t = np.asarray(truth).astype(np.int64)
    bad = (t < 0) | (t >= n)
    if ignore_index is not None:
        bad |= t == ignore_index
    return bool(bad.any())


def _hatch(rgb: np.ndarray, mask: np.ndarray, cell: int) -> np.ndarray:
    """Paint ``mask`` pixels in a black/white checkerboard of ``cell``-pixel squares."""
    h, w = mask.shape
    yy, xx = np.mgrid[0:h, 0:w]
    board = (((yy // cell) + (xx // cell)) % 2).astype(bool)
    out = rgb.copy()
    out[mask & board] = (255, 255, 255)
    out[mask & ~board] = (0, 0, 0)
    return out


def _up(a: np.ndarray, k: int) -> np.ndarray:
    return a if k == 1 else np.repeat(np.repeat(a, k, axis=0), k, axis=1)


def comparison_panel(
    image: np.ndarray,
    truth: Optional[np.ndarray],
    pred: np.ndarray,
    palette: Sequence[Sequence[int]],
    class_names: Sequence[str],
    *,
    second: Optional[np.ndarray] = None,
    titles: Tuple[str, str] = ("prediction", "second model"),
    ignore_index: Optional[int] = None,
    alpha: float = 0.5,
    min_height: int = 360,
    caption: str = "",
) -> np.ndarray:
    """One HxWx3 uint8 panel: image | ground truth | prediction [| second] | overlay + legend.

    ``truth`` may be None (no ground truth tile). Ignored/void ground truth pixels are black.
    ``second``: another model's labels; its tile hatches the pixels where it differs from
    ``pred`` and its title gives the share of such pixels.
    """
    from PIL import Image, ImageDraw

    from fcn_deploy.palette import overlay

    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise FcnError(f"panel image must be HxWx3 uint8, got {image.shape} {image.dtype}")
    h, w = image.shape[:2]
    for name, a in (("ground truth", truth), ("prediction", pred), ("second prediction", second)):
        if a is not None and tuple(np.asarray(a).shape) != (h, w):
            raise FcnError(f"{name} is {np.asarray(a).shape}, the image {h}x{w}")
    k = max(1, math.ceil(min_height / h)) if h < min_height else 1
    tiles = [("image", _up(image, k))]
    if truth is not None:
        tiles.append(("ground truth", _up(_colors(truth, palette, ignore_index), k)))
    tiles.append((titles[0], _up(_colors(pred, palette, None), k)))
    if second is not None:
        diff = np.asarray(second).astype(np.int64) != np.asarray(pred).astype(np.int64)
        tile = _hatch(_up(_colors(second, palette, None), k), _up(diff, k), cell=max(2, k // 4))
        tiles.append((f"{titles[1]} ({100 * diff.mean():.2f}% differ, hatched)", tile))
    tiles.append((f"overlay ({titles[0]})", _up(overlay(image, np.asarray(pred), palette, alpha), k)))

    th, tw = h * k, w * k
    fsize = max(12, min(22, th // 20))
    font = _font(fsize)
    title_h = fsize + 2 * PAD
    width = len(tiles) * tw + (len(tiles) + 1) * PAD

    # Legend: swatch + name per class, wrapped into rows.
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    sw = fsize
    items = []
    for i, name in enumerate(class_names):
        tb = probe.textbbox((0, 0), str(name), font=font)
        items.append((i, str(name), sw + 6 + (tb[2] - tb[0]) + 3 * PAD))
    if truth is not None and _has_void(truth, len(class_names), ignore_index):
        tb = probe.textbbox((0, 0), "void / not scored", font=font)
        items.append((None, "void / not scored", sw + 6 + (tb[2] - tb[0]) + 3 * PAD))
    rows, cur, x = [], [], PAD
    for it in items:
        if cur and x + it[2] > width - PAD:
            rows.append(cur)
            cur, x = [], PAD
        cur.append(it)
        x += it[2]
    if cur:
        rows.append(cur)
    row_h = fsize + PAD
    cap_h = (fsize + PAD) if caption else 0
    height = title_h + th + PAD + len(rows) * row_h + PAD + cap_h

    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    d = ImageDraw.Draw(canvas)
    pal = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)
    for j, (title, tile) in enumerate(tiles):
        x0 = PAD + j * (tw + PAD)
        d.text((x0, PAD), title, fill=(0, 0, 0), font=font)
        canvas.paste(Image.fromarray(np.ascontiguousarray(tile)), (x0, title_h))
    y = title_h + th + PAD
    for row in rows:
        x = PAD
        for i, name, wd in row:
            color = tuple(int(v) for v in (pal[i] if i is not None and i < len(pal) else VOID_COLOR))
            d.rectangle([x, y, x + sw, y + sw], fill=color, outline=(90, 90, 90))
            d.text((x + sw + 6, y), name, fill=(0, 0, 0), font=font)
            x += wd
        y += row_h
    if caption:
        d.text((PAD, y), caption, fill=(60, 60, 60), font=font)
    return np.asarray(canvas)


def write_panel(path, *args, **kwargs) -> None:
    """:func:`comparison_panel` written atomically as PNG."""
    from fcn_deploy.image import write_rgb_png

    write_rgb_png(path, comparison_panel(*args, **kwargs))
