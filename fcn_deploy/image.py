"""Images in and out of the runtime: read anything, pre-process per the model, write PNGs.

Reading (:func:`load_image`) accepts a path, a PIL image or a numpy array and always returns an
``HxWx3`` ``uint8`` RGB array:

- paths and PIL images: EXIF orientation applied; modes converted to RGB as follows
  ``L``/``1``/``P``/``CMYK``/``YCbCr``: PIL's conversion; ``LA``/``RGBA``/``PA``/palette with
  transparency: alpha dropped (the colours the camera saw are kept; nothing is composited);
  ``I;16*`` (16-bit grey PNG/TIFF) and ``I`` (32-bit int, how older Pillow opens 16-bit PNGs):
  0..65535 scaled to 0..255 (``v / 257``); ``F`` (float): 0..1 scaled by 255 when its maximum
  is <= 1, else clipped to 0..255. 16-bit RGB PNGs are reduced to 8 bits by Pillow itself.
- numpy: ``HxWx3`` ``uint8`` (RGB unless ``channel_order="BGR"``, e.g. OpenCV frames) or
  ``HxW`` ``uint8`` grey. Anything else is refused with a message saying what is accepted.

Unreadable, corrupt or non-image files raise :class:`FcnError` (one line, with the path).

Pre-processing (:func:`preprocess`) follows :class:`ModelInfo`'s convention
``x = ((rgb[..., ::-1] if BGR else rgb) * scale - mean) / std`` to NCHW, through one 256-entry
lookup table per channel (exact for uint8 input and fast), in float32 or float16.

Writing: :func:`write_label_png` stores a label map as a palette (``P``) PNG: pixel values are
the class ids, the palette makes it viewable; more than 256 classes use a 16-bit grey PNG.
:func:`write_rgb_png` writes overlays. Both write atomically (temp file + rename).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence, Tuple, Union

import numpy as np

from fcn_deploy._util import atomic_path
from fcn_deploy.errors import FcnError

ImageLike = Union[str, Path, "np.ndarray", "object"]

# Extensions fcn-predict picks up when given a folder.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".gif")


def _pil():
    from PIL import Image, ImageOps

    return Image, ImageOps


def _describe(src) -> str:
    if isinstance(src, (str, Path)):
        return str(src)
    return type(src).__name__


def load_image(src, *, channel_order: str = "RGB") -> np.ndarray:
    """Read ``src`` (path, PIL image or numpy array) into a contiguous HxWx3 uint8 RGB array.

    ``channel_order`` says how a 3-channel numpy array is ordered ("RGB" or "BGR"); it is
    ignored for paths and PIL images, which are decoded to RGB.
    """
    if channel_order not in ("RGB", "BGR"):
        raise FcnError(f"channel_order must be 'RGB' or 'BGR', got {channel_order!r}")
    if isinstance(src, np.ndarray):
        return _from_array(src, channel_order)
    Image, _ = _pil()
    if isinstance(src, (str, Path)):
        return pil_to_rgb(_open(Path(src)), name=str(src))
    if isinstance(src, Image.Image):
        return pil_to_rgb(src, name="PIL image")
    raise FcnError(
        f"cannot read an image from a {type(src).__name__}; "
        "pass a file path, a PIL image or a numpy HxWx3 uint8 array"
    )


def _open(path: Path):
    Image, _ = _pil()
    if not path.exists():
        raise FcnError(f"{path}: no such file")
    if path.is_dir():
        raise FcnError(f"{path}: is a folder, not an image")
    try:
        img = Image.open(path)
        img.load()  # decode now so truncated/corrupt data fails here
    except Image.DecompressionBombError as e:
        raise FcnError(f"{path}: image too large ({e})") from None
    except Image.UnidentifiedImageError:
        raise FcnError(f"{path}: not an image file (or a format Pillow cannot read)") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise FcnError(f"{path}: corrupt or truncated image ({e})") from None
    return img


def pil_to_rgb(img, *, name: str = "image") -> np.ndarray:
    """A PIL image of any common mode -> HxWx3 uint8 RGB (EXIF orientation applied)."""
    Image, ImageOps = _pil()
    try:
        img = ImageOps.exif_transpose(img)
    except Exception:  # broken EXIF must not stop a prediction
        pass
    mode = img.mode
    try:
        if mode == "RGB":
            out = np.asarray(img)
        elif mode.startswith("I;16") or mode == "I":
            a = np.asarray(img).astype(np.float64)
            a = np.clip(a, 0, 65535) / 257.0
            out = _grey_to_rgb(np.floor(a + 0.5).astype(np.uint8))
        elif mode == "F":
            a = np.asarray(img).astype(np.float64)
            a = np.nan_to_num(a, nan=0.0, posinf=255.0, neginf=0.0)
            if a.size and a.max() <= 1.0:
                a = a * 255.0
            out = _grey_to_rgb(np.floor(np.clip(a, 0, 255) + 0.5).astype(np.uint8))
        elif mode == "P" and "transparency" in img.info:
            out = np.asarray(img.convert("RGBA").convert("RGB"))
        else:
            # L, 1, LA, La, P, PA, RGBA, RGBa, RGBX, CMYK, YCbCr, LAB, HSV...: alpha is dropped.
            out = np.asarray(img.convert("RGB"))
    except (ValueError, OSError) as e:
        raise FcnError(f"{name}: cannot convert image mode {mode!r} to RGB ({e})") from None
    if out.ndim != 3 or out.shape[2] != 3 or out.dtype != np.uint8:
        raise FcnError(f"{name}: unexpected decoded image {out.shape} {out.dtype}")
    if out.shape[0] == 0 or out.shape[1] == 0:
        raise FcnError(f"{name}: empty image")
    return np.ascontiguousarray(out)


def _grey_to_rgb(a: np.ndarray) -> np.ndarray:
    return np.repeat(a[:, :, None], 3, axis=2)


def _from_array(a: np.ndarray, channel_order: str) -> np.ndarray:
    accepted = "numpy images must be HxWx3 uint8 (RGB, or BGR with channel_order='BGR') or HxW uint8 grey"
    if a.dtype != np.uint8:
        hint = ""
        if np.issubdtype(a.dtype, np.floating):
            hint = "; a float image in 0..1 converts with (x * 255).round().astype(np.uint8)"
        raise FcnError(f"got a {a.dtype} array; {accepted}{hint}")
    if a.ndim == 2:
        out = _grey_to_rgb(a)
    elif a.ndim == 3 and a.shape[2] == 3:
        out = a[:, :, ::-1] if channel_order == "BGR" else a
    else:
        raise FcnError(f"got an array of shape {a.shape}; {accepted}")
    if out.shape[0] == 0 or out.shape[1] == 0:
        raise FcnError(f"got an empty image of shape {a.shape}")
    return np.ascontiguousarray(out)


# ------------------------------------------------------------------------------------------------
# Pre-processing
# ------------------------------------------------------------------------------------------------

def normalization_lut(info, dtype=np.float32) -> np.ndarray:
    """(3, 256) table: row c maps a uint8 value of the model's input channel c to its input value.

    Row c reads source RGB channel ``c`` (RGB models) or ``2 - c`` (BGR models); see
    :func:`source_channels`.
    """
    v = np.arange(256, dtype=np.float64)
    lut = np.empty((3, 256), dtype=np.float64)
    for c in range(3):
        lut[c] = (v * float(info.scale) - float(info.mean[c])) / float(info.std[c])
    return lut.astype(np.float32).astype(dtype)


def source_channels(info) -> Sequence[int]:
    return (2, 1, 0) if info.channel_order == "BGR" else (0, 1, 2)


def _batch_hw(images: Sequence[np.ndarray]) -> Tuple[int, int]:
    """The common H, W of a batch of same-size HxWx3 uint8 images (FcnError otherwise)."""
    if len(images) == 0:
        raise FcnError("no images to pre-process")
    h, w = images[0].shape[:2]
    for im in images:
        if im.shape != (h, w, 3) or im.dtype != np.uint8:
            raise FcnError(f"a batch needs same-size HxWx3 uint8 images; got {im.shape} {im.dtype} with {(h, w, 3)}")
    return h, w


def preprocess(images: Sequence[np.ndarray], info, *, dtype=np.float32, lut: Optional[np.ndarray] = None) -> np.ndarray:
    """Same-size HxWx3 uint8 RGB images -> (N, 3, H, W) model input per ``info``'s convention."""
    h, w = _batch_hw(images)
    if lut is None:
        lut = normalization_lut(info, dtype)
    out = np.empty((len(images), 3, h, w), dtype=lut.dtype)
    src = source_channels(info)
    for n, im in enumerate(images):
        for c in range(3):
            np.take(lut[c], im[:, :, src[c]], out=out[n, c])
    return out


def pixels_batch(images: Sequence[np.ndarray]) -> np.ndarray:
    """Same-size HxWx3 uint8 RGB images -> the (N, H, W, 3) uint8 input of a pixels-in model
    (``fcn-export --input uint8``, normalisation inside the graph): a view of a single
    contiguous image, one stacking copy for a batch."""
    h, w = _batch_hw(images)
    if len(images) == 1:
        return np.ascontiguousarray(images[0])[None]
    return np.stack(images)


# ------------------------------------------------------------------------------------------------
# Resizing helpers (resize="fit") -- numpy/PIL only
# ------------------------------------------------------------------------------------------------

def resize_rgb(img: np.ndarray, hw) -> np.ndarray:
    """Bilinear resize of an HxWx3 uint8 image to ``hw`` = (H, W)."""
    Image, _ = _pil()
    h, w = int(hw[0]), int(hw[1])
    if img.shape[:2] == (h, w):
        return img
    return np.asarray(Image.fromarray(img).resize((w, h), Image.BILINEAR))


def resize_scores(scores: np.ndarray, hw) -> np.ndarray:
    """Bilinear resize of (C, h, w) float scores to (C, H, W) float32."""
    Image, _ = _pil()
    h, w = int(hw[0]), int(hw[1])
    if scores.shape[1:] == (h, w):
        return scores
    out = np.empty((scores.shape[0], h, w), dtype=np.float32)
    for c in range(scores.shape[0]):
        out[c] = np.asarray(Image.fromarray(np.ascontiguousarray(scores[c], dtype=np.float32)).resize((w, h), Image.BILINEAR))
    return out


def resize_nearest(labels: np.ndarray, hw) -> np.ndarray:
    """Nearest-neighbour resize of an (h, w) map to (H, W), by pixel centres."""
    H, W = int(hw[0]), int(hw[1])
    h, w = labels.shape
    if (h, w) == (H, W):
        return labels
    rows = np.minimum(((np.arange(H) + 0.5) * h / H).astype(np.int64), h - 1)
    cols = np.minimum(((np.arange(W) + 0.5) * w / W).astype(np.int64), w - 1)
    return labels[rows[:, None], cols[None, :]]


# ------------------------------------------------------------------------------------------------
# Writing
# ------------------------------------------------------------------------------------------------

def label_image(labels: np.ndarray, palette, *, with_palette: bool = True):
    """HxW class ids -> a PIL image: palette ``P`` (<= 256 classes), grey ``L`` without
    palette, or 16-bit grey ``I;16`` when ids exceed 255."""
    Image, _ = _pil()
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise FcnError(f"label map must be HxW, got shape {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() > 65535):
        raise FcnError("label values must be within 0..65535 to be stored as PNG")
    h, w = labels.shape
    if labels.size and labels.max() > 255:
        return Image.frombytes("I;16", (w, h), labels.astype("<u2").tobytes())
    data = np.ascontiguousarray(labels, dtype=np.uint8).tobytes()
    if not with_palette:
        return Image.frombytes("L", (w, h), data)
    im = Image.frombytes("P", (w, h), data)
    flat = [int(v) for c in list(palette)[:256] for v in c]
    im.putpalette(flat + [0] * (768 - len(flat)))
    return im


def write_label_png(path, labels: np.ndarray, palette, *, with_palette: bool = True) -> None:
    """Write a label map atomically as PNG (see :func:`label_image`)."""
    im = label_image(labels, palette, with_palette=with_palette)
    with atomic_path(path, suffix=".png") as tmp:
        im.save(tmp, format="PNG")


def write_rgb_png(path, rgb: np.ndarray) -> None:
    """Write an HxWx3 uint8 RGB array atomically as PNG."""
    Image, _ = _pil()
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise FcnError(f"expected HxWx3 uint8, got {rgb.shape} {rgb.dtype}")
    with atomic_path(path, suffix=".png") as tmp:
        Image.fromarray(np.ascontiguousarray(rgb)).save(tmp, format="PNG")


def read_label_png(path) -> np.ndarray:
    """Read a label PNG written by :func:`write_label_png` back into class ids (HxW)."""
    Image, _ = _pil()
    try:
        im = Image.open(path)
        im.load()
    except Exception as e:
        raise FcnError(f"{path}: cannot read label PNG ({e})") from None
    if im.mode not in ("P", "L", "I;16", "I"):
        raise FcnError(f"{path}: mode {im.mode} is not a label map")
    return np.asarray(im)
