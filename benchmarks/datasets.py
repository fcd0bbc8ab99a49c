"""Torch-free listing of labelled images for fcn-eval (numpy + Pillow only).

Layouts (the same ones fcn-train reads):

- ``camvid``: ``DIR/<split>/X.png`` with labels ``DIR/<split>annot/X.png`` (uint8 class ids,
  11 = void);
- ``voc``: ``DIR/JPEGImages/X.jpg``, ``DIR/SegmentationClass/X.png`` (palette PNG whose
  indices are the class ids, 255 = border/ignore), ``DIR/ImageSets/Segmentation/<split>.txt``;
  ``DIR`` may also be the ``VOCdevkit`` folder holding one ``VOC20xx``;
- ``folders``: ``DIR/images/`` + ``DIR/masks/`` (same file stems; masks are PNGs of class
  ids), or ``DIR/<split>/images`` + ``DIR/<split>/masks`` when present.

The deployed model is scored on an edge box that may have no torch, so this module does not
use the training data pipeline (which imports torch); it only lists files and reads labels.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np

from fcn_deploy.errors import FcnError, unknown_name

FORMATS = ("camvid", "voc", "folders")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm")
# Label value that marks "not scored" per layout (the metrics skip any id >= num_classes too).
IGNORE = {"camvid": 11, "voc": 255, "folders": 255}


@dataclass(frozen=True)
class Sample:
    image: Path
    label: Path

    @property
    def name(self) -> str:
        return self.image.name


def _images_in(folder: Path) -> List[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _match_labels(images: List[Path], label_dir: Path, what: str) -> List[Sample]:
    by_stem = {}
    for p in _images_in(label_dir):
        by_stem.setdefault(p.stem, p)
    out = []
    for img in images:
        lab = by_stem.get(img.stem)
        if lab is None:
            raise FcnError(f"{img}: no label map for it in {label_dir} ({what})")
        out.append(Sample(img, lab))
    return out


def list_samples(root, fmt: str, split: str = "val") -> List[Sample]:
    """The (image, label) pairs of ``split``, sorted by file name. FcnError when the layout
    is not there or an image lacks its label."""
    root = Path(root)
    if fmt not in FORMATS:
        raise unknown_name("dataset format", fmt, FORMATS)
    if not root.is_dir():
        raise FcnError(f"dataset folder not found: {root}")
    if fmt == "camvid":
        img_dir, lab_dir = root / split, root / f"{split}annot"
        for d in (img_dir, lab_dir):
            if not d.is_dir():
                raise FcnError(f"{root} is not a CamVid layout: missing {d.name}/ (expected {split}/ and {split}annot/)")
        images = _images_in(img_dir)
        samples = _match_labels(images, lab_dir, "CamVid layout")
    elif fmt == "voc":
        base = root
        if not (base / "JPEGImages").is_dir():
            found = sorted(p for p in root.glob("VOC*") if (p / "JPEGImages").is_dir())
            if not found:
                raise FcnError(f"{root} is not a PASCAL VOC layout: no JPEGImages/ (nor VOC20xx/JPEGImages/)")
            base = found[-1]
        lst = base / "ImageSets" / "Segmentation" / f"{split}.txt"
        if not lst.is_file():
            raise FcnError(f"{base}: missing ImageSets/Segmentation/{split}.txt")
        ids = [line.strip().split()[0] for line in lst.read_text().splitlines() if line.strip()]
        samples = []
        for i in ids:
            img = base / "JPEGImages" / f"{i}.jpg"
            lab = base / "SegmentationClass" / f"{i}.png"
            for p in (img, lab):
                if not p.is_file():
                    raise FcnError(f"{lst} lists {i}, but {p} is missing")
            samples.append(Sample(img, lab))
    else:
        base = root / split if (root / split / "images").is_dir() else root
        img_dir, lab_dir = base / "images", base / "masks"
        for d in (img_dir, lab_dir):
            if not d.is_dir():
                raise FcnError(f"{base} is not a folders layout: missing {d.name}/ (expected images/ and masks/)")
        samples = _match_labels(_images_in(img_dir), lab_dir, "folders layout")
    if not samples:
        raise FcnError(f"no images in the {split!r} split of {root} ({fmt} layout)")
    return samples


def read_label(path) -> np.ndarray:
    """A label PNG -> HxW int64 class ids (palette indices for ``P`` images, values for ``L``)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()
            if im.mode not in ("L", "P", "I", "I;16", "I;16B", "I;16L"):
                raise FcnError(f"{path}: label maps must be single-channel PNGs of class ids, got mode {im.mode}")
            return np.asarray(im).astype(np.int64)
    except FcnError:
        raise
    except (OSError, ValueError, SyntaxError) as e:
        raise FcnError(f"{path}: cannot read label map ({e})") from None


def read_pair(sample: Sample) -> Tuple[np.ndarray, np.ndarray]:
    """(HxWx3 uint8 RGB image, HxW int64 labels); FcnError when their sizes differ."""
    from fcn_deploy.image import load_image

    img = load_image(sample.image)
    lab = read_label(sample.label)
    if img.shape[:2] != lab.shape:
        raise FcnError(f"{sample.label}: label is {lab.shape[1]}x{lab.shape[0]} but {sample.image.name} is "
                       f"{img.shape[1]}x{img.shape[0]}")
    return img, lab


def expected_classes(fmt: str) -> Optional[int]:
    return {"camvid": 11, "voc": 21}.get(fmt)
