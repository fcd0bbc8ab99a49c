"""Labelled dataset layouts, read with numpy and Pillow only (no torch).

The one reader of every layout: fcn-train (``fcn_deploy.training.data`` adds batching and
augmentation on top), fcn-eval (with or without torch) and int8 calibration
(:func:`list_images`) all list and decode files here, so they see the same samples and the
same pixels. Images are decoded by :func:`fcn_deploy.image.load_image`, exactly as
fcn-predict decodes them (EXIF orientation applied, 16-bit greys scaled to 8 bits).

Every dataset yields ``uint8`` arrays (``image`` H x W x 3 RGB, ``label`` H x W class indices)
and knows its class names, palette and ignore index.

Layouts (``open_dataset(fmt, root, split)``):

- ``camvid``: ``root/{train,val}/X.png`` with ``root/{train,val}annot/X.png`` (uint8 class index;
  11 classes, 11 = void = ignore).
- ``voc``: PASCAL VOC ``JPEGImages/<id>.jpg``, ``SegmentationClass/<id>.png`` (palette PNGs read
  as indices), ``ImageSets/Segmentation/{train,val}.txt``; 21 classes, 255 = ignore. ``root`` may
  be the ``VOC20xx`` folder or a folder above it (``VOCdevkit/VOC2012`` is searched).
- ``folders``: ``root/images/`` + ``root/masks/`` (mask = single-channel PNG of class indices with
  the image's stem, 255 = ignore). Split: either ``images/{train,val}/`` and
  ``masks/{train,val}/`` sub-folders, or one flat folder split deterministically (files sorted by
  name; every 5th file, i.e. index % 5 == 4, is ``val``). Class names come from
  ``root/classes.txt`` (one per line) when present, otherwise ``class0..classN-1`` with N = the
  largest label seen + 1.
- ``synthetic``: shapes on textured backgrounds, generated deterministically from a seed; no
  files needed (the embedded default).

Image files are those with a suffix in :data:`fcn_deploy.image.IMAGE_EXTENSIONS`.
Bad data (missing mask, size mismatch, unreadable file, label out of range) raises
:class:`FcnError` naming the file.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from fcn_deploy.errors import FcnError, unknown_name
from fcn_deploy.image import IMAGE_EXTENSIONS, load_image
from fcn_deploy.palette import (
    CAMVID_CLASSES,
    CAMVID_IGNORE,
    CAMVID_PALETTE,
    VOC_CLASSES,
    VOC_IGNORE,
    default_palette,
    voc_palette,
)

log = logging.getLogger(__name__)

FORMATS = ("camvid", "voc", "folders", "synthetic")
SPLITS = ("train", "val")
FOLDERS_IGNORE = 255
LABEL_MODES = ("L", "P", "I", "I;16", "I;16B", "I;16L", "1")

# ------------------------------------------------------------------------------------------------
# Decoding
# ------------------------------------------------------------------------------------------------


def read_image(path) -> np.ndarray:
    """RGB uint8 H x W x 3 (writable) decoded by :func:`fcn_deploy.image.load_image`;
    FcnError naming the file when it is missing or cannot be decoded."""
    if not Path(path).is_file():
        raise FcnError(f"image not found: {path}")
    try:
        img = load_image(Path(path))
    except FcnError as e:
        raise FcnError(f"unreadable image {e}") from None
    return img if img.flags.writeable else img.copy()


def read_label(path) -> np.ndarray:
    """Class-index map H x W (palette PNGs read as indices); uint8, or int32 when values exceed
    255. FcnError naming the file when it is missing, unreadable or not single-channel."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            if im.mode not in LABEL_MODES:
                raise FcnError(
                    f"label {path} has mode {im.mode}: expected a single-channel (or palette) PNG of class indices"
                )
            arr = np.array(im)
    except FcnError:
        raise
    except FileNotFoundError:
        raise FcnError(f"mask not found: {path}") from None
    except Exception as e:
        raise FcnError(f"unreadable mask {path}: {type(e).__name__}: {str(e)[:120]}") from None
    if arr.dtype != np.uint8:
        if arr.min() < 0 or arr.max() > 65535:
            raise FcnError(f"label {path} has values outside 0..65535")
        arr = arr.astype(np.int32 if arr.max() > 255 else np.uint8)
    return arr


# ------------------------------------------------------------------------------------------------
# Datasets
# ------------------------------------------------------------------------------------------------


class SegDataset:
    """A list of (image, label) pairs with class names, palette and ignore index.

    ``get(i)`` returns the decoded ``(image uint8 HxWx3 RGB, label HxW)`` after checking the pair
    (same size, labels in ``[0, num_classes)`` or ``ignore_index``). With ``cache`` the checked
    arrays stay in memory.
    """

    def __init__(self, *, name: str, split: str, class_names: Sequence[str], palette, ignore_index: int,
                 cache: bool = True):
        self.name = name
        self.split = split
        self.class_names = tuple(class_names)
        self.palette = tuple(tuple(int(v) for v in c) for c in palette)[: len(self.class_names)]
        self.ignore_index = int(ignore_index)
        self.cache = cache
        self._cache: Dict[int, Tuple[np.ndarray, np.ndarray]] = {}
        self._class_weights: Optional[np.ndarray] = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def describe(self, i: int) -> str:
        """A name for sample ``i`` (file path) used in error messages."""
        return f"{self.name}[{i}]"

    def _load(self, i: int) -> Tuple[np.ndarray, np.ndarray]:  # pragma: no cover - abstract
        raise NotImplementedError

    def get(self, i: int) -> Tuple[np.ndarray, np.ndarray]:
        if i in self._cache:
            return self._cache[i]
        img, lab = self._load(i)
        self._check(i, img, lab)
        if self.cache:
            self._cache[i] = (img, lab)
        return img, lab

    def _check(self, i: int, img: np.ndarray, lab: np.ndarray) -> None:
        if img.shape[:2] != lab.shape[:2]:
            raise FcnError(
                f"size mismatch for {self.describe(i)}: image {img.shape[1]}x{img.shape[0]}, "
                f"mask {lab.shape[1]}x{lab.shape[0]} (WxH)"
            )
        bad = (lab >= self.num_classes) & (lab != self.ignore_index)
        if bad.any():
            v = int(lab[bad].flat[0])
            raise FcnError(
                f"label out of range in {self.describe(i)}: value {v} (valid 0..{self.num_classes - 1} "
                f"and ignore {self.ignore_index})"
            )

    def scored(self, lab: np.ndarray) -> np.ndarray:
        """Boolean mask of the pixels that carry a class (not the ignore index, within range)."""
        return (lab != self.ignore_index) & (lab >= 0) & (lab < self.num_classes)

    def preload(self, progress: bool = False) -> None:
        """Decode and check every sample now (fails early on bad data)."""
        it = range(len(self))
        if progress:
            from tqdm import tqdm

            it = tqdm(it, desc=f"loading {self.name}/{self.split}", leave=False)
        for i in it:
            self.get(i)

    def class_histogram(self) -> Tuple[np.ndarray, np.ndarray]:
        """(pixels per class, pixels of the images containing each class); ignore pixels excluded."""
        n = self.num_classes
        counts = np.zeros(n, dtype=np.int64)
        present = np.zeros(n, dtype=np.int64)
        for i in range(len(self)):
            lab = self.get(i)[1]
            h = np.bincount(lab[self.scored(lab)].ravel().astype(np.int64), minlength=n)[:n]
            counts += h
            present += (h > 0) * lab.size
        return counts, present

    def median_frequency_weights(self) -> np.ndarray:
        """Median-frequency balancing (Eigen & Fergus): w_c = median(f) / f_c, with f_c = pixels of c
        / pixels of the images where c appears. Classes never seen get weight 1. Cached."""
        if self._class_weights is None:
            counts, present = self.class_histogram()
            seen = counts > 0
            if not seen.any():
                raise FcnError(f"{self.name}/{self.split}: no labelled pixels, cannot compute class weights")
            freq = np.where(seen, counts / np.maximum(present, 1), 0.0)
            med = np.median(freq[seen])
            self._class_weights = np.where(seen, med / np.where(seen, freq, 1.0), 1.0).astype(np.float32)
        return self._class_weights


class PairDataset(SegDataset):
    """Datasets backed by (image path, label path) pairs."""

    def __init__(self, pairs: Sequence[Tuple[Path, Path]], **kw):
        super().__init__(**kw)
        self.pairs = list(pairs)

    def __len__(self) -> int:
        return len(self.pairs)

    def describe(self, i: int) -> str:
        return f"{self.pairs[i][0]} / {self.pairs[i][1]}"

    def _load(self, i: int):
        ip, lp = self.pairs[i]
        if not lp.is_file():
            raise FcnError(f"missing mask for {ip}: expected {lp}")
        return read_image(ip), read_label(lp)


# -- file discovery (shared by the readers and list_images) --------------------------------------


def _need_dir(p: Path, what: str) -> Path:
    if not p.is_dir():
        raise FcnError(f"{what} not found: {p}")
    return p


def images_in(folder) -> List[Path]:
    """Image files directly in ``folder`` (suffix in IMAGE_EXTENSIONS), sorted by name."""
    return sorted(p for p in Path(folder).iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def _camvid_images(root: Path, split: str, *, with_labels: bool) -> List[Path]:
    _need_dir(root, "CamVid folder")
    imgs = _need_dir(root / split, f"CamVid {split} images folder")
    if with_labels:
        _need_dir(root / f"{split}annot", f"CamVid {split} labels folder")
    files = images_in(imgs)
    if not files:
        raise FcnError(f"no images in {imgs}")
    return files


def _voc_root(root: Path) -> Path:
    for cand in (root, root / "VOC2012", root / "VOCdevkit" / "VOC2012", root / "VOC2011",
                 root / "VOCdevkit" / "VOC2011"):
        if (cand / "JPEGImages").is_dir():
            return cand
    raise FcnError(f"no PASCAL VOC layout under {root} (expected JPEGImages/, SegmentationClass/, ImageSets/Segmentation/)")


def _voc_pairs(root: Path, split: str) -> List[Tuple[Path, Path]]:
    _need_dir(root, "VOC folder")
    base = _voc_root(root)
    lst = base / "ImageSets" / "Segmentation" / f"{split}.txt"
    if not lst.is_file():
        raise FcnError(f"VOC split list not found: {lst}")
    ids = [line.strip().split()[0] for line in lst.read_text().splitlines() if line.strip()]
    if not ids:
        raise FcnError(f"VOC split list is empty: {lst}")
    pairs = []
    for i in ids:
        img = base / "JPEGImages" / f"{i}.jpg"
        if not img.is_file():
            alt = [p for p in (base / "JPEGImages").glob(f"{i}.*")]
            img = alt[0] if alt else img
        pairs.append((img, base / "SegmentationClass" / f"{i}.png"))
    return pairs


def _folders_images(root: Path, split: str) -> Tuple[List[Path], Path]:
    """(images of ``split``, the folder they are in); split sub-folders or the flat 1-in-5 rule."""
    _need_dir(root, "dataset folder")
    images = _need_dir(root / "images", "images folder")
    if (images / "train").is_dir() or (images / "val").is_dir():
        img_dir = _need_dir(images / split, f"images/{split} folder")
        files = images_in(img_dir)
    else:
        img_dir = images
        files = [p for k, p in enumerate(images_in(images)) if (k % 5 == 4) == (split == "val")]
    if not files:
        raise FcnError(f"no {split} images in {img_dir}")
    return files, img_dir


# -- readers ----------------------------------------------------------------------------------------


def camvid(root, split: str, *, cache: bool = True) -> PairDataset:
    root = Path(root)
    anns = root / f"{split}annot"
    pairs = [(p, anns / (p.stem + ".png")) for p in _camvid_images(root, split, with_labels=True)]
    return PairDataset(pairs, name="camvid", split=split, class_names=CAMVID_CLASSES, palette=CAMVID_PALETTE,
                       ignore_index=CAMVID_IGNORE, cache=cache)


def voc(root, split: str, *, cache: bool = True) -> PairDataset:
    return PairDataset(_voc_pairs(Path(root), split), name="voc", split=split, class_names=VOC_CLASSES,
                       palette=voc_palette(21), ignore_index=VOC_IGNORE, cache=cache)


def folders(root, split: str, *, cache: bool = True, class_names: Optional[Sequence[str]] = None) -> PairDataset:
    """``folders`` layout. ``class_names`` (when given) wins over ``classes.txt``; without either
    the class count is inferred from the masks (``classes_from`` tells which: "given",
    "classes.txt" or "masks")."""
    root = Path(root)
    files, img_dir = _folders_images(root, split)
    masks = _need_dir(root / "masks", "masks folder")
    mask_dir = masks if img_dir == root / "images" else _need_dir(masks / split, f"masks/{split} folder")
    pairs = [(p, mask_dir / (p.stem + ".png")) for p in files]
    names, source = class_names, "given"
    if names is None:
        ct = root / "classes.txt"
        if ct.is_file():
            names, source = [line.strip() for line in ct.read_text().splitlines() if line.strip()], "classes.txt"
            if not names:
                raise FcnError(f"{ct} lists no classes")
    if names is None:
        names, source = [f"class{i}" for i in range(_max_label(root, mask_dir, masks) + 1)], "masks"
    ds = PairDataset(pairs, name="folders", split=split, class_names=names, palette=default_palette(len(names)),
                     ignore_index=FOLDERS_IGNORE, cache=cache)
    ds.classes_from = source
    return ds


def _max_label(root: Path, *dirs: Path) -> int:
    """Largest non-ignore label across all masks (both splits, so train and val agree)."""
    top = -1
    for p in sorted(set(q for d in dirs for q in d.rglob("*.png"))):
        lab = read_label(p)
        v = lab[lab != FOLDERS_IGNORE]
        if v.size:
            top = max(top, int(v.max()))
    if top < 0:
        raise FcnError(f"no labelled pixels in the masks under {root}; add classes.txt")
    return top


# -- synthetic ------------------------------------------------------------------------------------

SYNTHETIC_CLASSES = ("background", "disc", "box", "triangle", "ring")
SYNTHETIC_IGNORE = 255


@dataclass(frozen=True)
class SyntheticSpec:
    num_train: int = 64
    num_val: int = 16
    height: int = 64
    width: int = 64
    seed: int = 0


class SyntheticDataset(SegDataset):
    """Shapes (disc, box, triangle, ring) on a textured background, each class with its own hue
    range and texture, plus a 1-pixel ignore border around each shape (as VOC outlines objects).
    Sample ``i`` of a split depends only on (seed, split, i)."""

    def __init__(self, spec: SyntheticSpec, split: str, *, cache: bool = True):
        super().__init__(name="synthetic", split=split, class_names=SYNTHETIC_CLASSES,
                         palette=default_palette(len(SYNTHETIC_CLASSES)), ignore_index=SYNTHETIC_IGNORE, cache=cache)
        if spec.height < 16 or spec.width < 16:
            raise FcnError(f"synthetic images must be at least 16x16, got {spec.width}x{spec.height}")
        self.spec = spec
        self.n = spec.num_train if split == "train" else spec.num_val
        self._split_id = 0 if split == "train" else 1

    def __len__(self) -> int:
        return self.n

    def _load(self, i: int):
        s = self.spec
        rng = np.random.default_rng([s.seed, self._split_id, i])
        h, w = s.height, s.width
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        # Background: low-frequency colour gradient + stripes + noise.
        base = rng.uniform(40, 200, 3)
        ang = rng.uniform(0, np.pi)
        period = rng.uniform(4, 12)
        stripes = 25 * np.sin((xx * np.cos(ang) + yy * np.sin(ang)) * 2 * np.pi / period)
        img = base[None, None, :] + stripes[..., None] + rng.normal(0, 12, (h, w, 3))
        lab = np.zeros((h, w), dtype=np.uint8)
        hues = {1: (230, 60, 60), 2: (60, 200, 70), 3: (70, 90, 230), 4: (230, 210, 50)}
        for _ in range(rng.integers(1, 4)):
            c = int(rng.integers(1, len(SYNTHETIC_CLASSES)))
            r = rng.uniform(0.12, 0.28) * min(h, w)
            cy, cx = rng.uniform(r, h - r), rng.uniform(r, w - r)
            dy, dx = yy - cy, xx - cx
            if c == 1:
                inside = dy * dy + dx * dx <= r * r
            elif c == 2:
                inside = (np.abs(dy) <= r * 0.8) & (np.abs(dx) <= r)
            elif c == 3:
                inside = (dy <= r * 0.7) & (dy >= -r) & (np.abs(dx) <= (dy + r) * 0.6)
            else:
                d2 = dy * dy + dx * dx
                inside = (d2 <= r * r) & (d2 >= (0.55 * r) ** 2)
            colour = np.asarray(hues[c], np.float32) + rng.normal(0, 20, 3)
            tex = rng.normal(0, 15, (h, w, 1)) + 10 * np.sin(xx * (0.5 + c * 0.3))[..., None]
            img = np.where(inside[..., None], colour[None, None, :] + tex, img)
            # ignore band on the edge of the shape
            edge = inside & ~(
                np.roll(inside, 1, 0) & np.roll(inside, -1, 0) & np.roll(inside, 1, 1) & np.roll(inside, -1, 1)
            )
            lab[inside] = c
            lab[edge] = SYNTHETIC_IGNORE
        return np.clip(img, 0, 255).astype(np.uint8), lab


def _check_names(fmt: str, split: str, formats=FORMATS) -> None:
    if fmt not in formats:
        raise unknown_name("dataset format", fmt, formats)
    if split not in SPLITS:
        raise unknown_name("split", split, SPLITS)


def open_dataset(fmt: str, root, split: str, *, cache: bool = True,
                 synthetic: Optional[SyntheticSpec] = None,
                 class_names: Optional[Sequence[str]] = None) -> SegDataset:
    """The dataset registry. ``root`` is ignored for ``synthetic`` (``synthetic`` gives its spec).
    ``class_names`` only applies to ``folders`` (see :func:`folders`)."""
    _check_names(fmt, split)
    if fmt == "synthetic":
        return SyntheticDataset(synthetic or SyntheticSpec(), split, cache=cache)
    if root is None:
        raise FcnError(f"--data is required for format {fmt}")
    if not Path(root).exists():
        raise FcnError(f"data folder not found: {root}")
    if fmt == "folders":
        return folders(root, split, cache=cache, class_names=class_names)
    return {"camvid": camvid, "voc": voc}[fmt](root, split, cache=cache)


# ------------------------------------------------------------------------------------------------
# Image lists (int8 calibration and other label-free uses)
# ------------------------------------------------------------------------------------------------

LIST_FORMATS = ("camvid", "voc", "folders", "images")


def list_images(root, fmt: str, split: str = "train") -> List[Path]:
    """The image files (never label masks) of ``split`` in ``root``, in the layout ``fmt``, in the
    order the dataset readers use:

    - ``camvid``: ``root/<split>/*`` only (``root/<split>`` must exist: a CamVid root without
      ``train/`` is an error, the ``*annot/`` folders are never listed);
    - ``voc``: the ``JPEGImages`` files named by ``ImageSets/Segmentation/<split>.txt``;
    - ``folders``: ``root/images/<split>/`` or the flat ``root/images/`` with the 1-in-5 rule
      (``masks/`` is neither needed nor read);
    - ``images``: every image file directly in ``root`` (``split`` is not used).

    Labels are not read and no image is decoded. FcnError (naming the folder or file) when the
    layout is missing, empty, or a listed VOC image does not exist.
    """
    if fmt == "synthetic":
        raise FcnError("the synthetic dataset has no image files; write it to a folder first or use random inputs")
    _check_names(fmt, split, LIST_FORMATS)
    root = Path(root)
    if not root.is_dir():
        raise FcnError(f"data folder not found: {root}")
    if fmt == "camvid":
        return _camvid_images(root, split, with_labels=False)
    if fmt == "voc":
        files = [img for img, _ in _voc_pairs(root, split)]
        missing = [f for f in files if not f.is_file()]
        if missing:
            raise FcnError(f"image not found: {missing[0]} (listed in the VOC {split} split; {len(missing)} missing)")
        return files
    if fmt == "folders":
        return _folders_images(root, split)[0]
    files = images_in(root)
    if not files:
        raise FcnError(f"no images ({' '.join(IMAGE_EXTENSIONS)}) in {root}")
    return files
