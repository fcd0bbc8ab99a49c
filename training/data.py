"""Segmentation datasets, augmentation and batching for training.

Every dataset yields decoded ``uint8`` arrays (``image`` H x W x 3 RGB, ``label`` H x W class
indices) and knows its class names, palette and ignore index. Images are decoded once and kept
in RAM (``cache=True``): CamVid's 367 training frames are ~250 MB decoded, and decoding PNGs
again every epoch would cost more than the 2-core CPU can spare.

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

Bad data (missing mask, size mismatch, unreadable file, label out of range) raises
:class:`FcnError` naming the file.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from fcn_deploy.errors import FcnError, unknown_name
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
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
FOLDERS_IGNORE = 255


# ------------------------------------------------------------------------------------------------
# Decoding
# ------------------------------------------------------------------------------------------------


def read_image(path) -> np.ndarray:
    """RGB uint8 H x W x 3; FcnError naming the file when it cannot be decoded."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    except FileNotFoundError:
        raise FcnError(f"image not found: {path}") from None
    except Exception as e:
        raise FcnError(f"unreadable image {path}: {type(e).__name__}: {str(e)[:120]}") from None


def read_label(path) -> np.ndarray:
    """Class-index map H x W (palette PNGs read as indices); FcnError naming the file otherwise."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            if im.mode not in ("L", "P", "I", "I;16", "1"):
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

    def preload(self, progress: bool = False) -> None:
        """Decode and check every sample now (fails early on bad data)."""
        it = range(len(self))
        if progress:
            from tqdm import tqdm

            it = tqdm(it, desc=f"loading {self.name}/{self.split}", leave=False)
        for i in it:
            self.get(i)

    def class_histogram(self) -> Tuple[np.ndarray, np.ndarray]:
        """(pixels per class, pixels of the images containing each class)."""
        n = self.num_classes
        counts = np.zeros(n, dtype=np.int64)
        present = np.zeros(n, dtype=np.int64)
        for i in range(len(self)):
            lab = self.get(i)[1]
            h = np.bincount(lab[lab < n].ravel().astype(np.int64), minlength=n)[:n]
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
        img = read_image(ip)
        lab = read_label(lp)
        return img, lab


def _need_dir(p: Path, what: str) -> Path:
    if not p.is_dir():
        raise FcnError(f"{what} not found: {p}")
    return p


def _images_in(folder: Path) -> List[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS)


def camvid(root, split: str, *, cache: bool = True) -> PairDataset:
    root = Path(root)
    _need_dir(root, "CamVid folder")
    imgs = _need_dir(root / split, f"CamVid {split} images folder")
    anns = root / f"{split}annot"
    _need_dir(anns, f"CamVid {split} labels folder")
    files = _images_in(imgs)
    if not files:
        raise FcnError(f"no images in {imgs}")
    pairs = [(p, anns / (p.stem + ".png")) for p in files]
    return PairDataset(pairs, name="camvid", split=split, class_names=CAMVID_CLASSES, palette=CAMVID_PALETTE,
                       ignore_index=CAMVID_IGNORE, cache=cache)


def _voc_root(root: Path) -> Path:
    for cand in (root, root / "VOC2012", root / "VOCdevkit" / "VOC2012", root / "VOC2011",
                 root / "VOCdevkit" / "VOC2011"):
        if (cand / "JPEGImages").is_dir():
            return cand
    raise FcnError(f"no PASCAL VOC layout under {root} (expected JPEGImages/, SegmentationClass/, ImageSets/Segmentation/)")


def voc(root, split: str, *, cache: bool = True) -> PairDataset:
    root = Path(root)
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
    return PairDataset(pairs, name="voc", split=split, class_names=VOC_CLASSES, palette=voc_palette(21),
                       ignore_index=VOC_IGNORE, cache=cache)


def _mask_for(masks: Path, img: Path) -> Path:
    return masks / (img.stem + ".png")


def folders(root, split: str, *, cache: bool = True, class_names: Optional[Sequence[str]] = None) -> PairDataset:
    root = Path(root)
    _need_dir(root, "dataset folder")
    images = _need_dir(root / "images", "images folder")
    masks = _need_dir(root / "masks", "masks folder")
    if (images / "train").is_dir() or (images / "val").is_dir():
        img_dir = _need_dir(images / split, f"images/{split} folder")
        mask_dir = _need_dir(masks / split, f"masks/{split} folder")
        files = _images_in(img_dir)
    else:
        img_dir, mask_dir = images, masks
        all_files = _images_in(images)
        files = [p for k, p in enumerate(all_files) if (k % 5 == 4) == (split == "val")]
    if not files:
        raise FcnError(f"no {split} images in {img_dir}")
    pairs = [(p, _mask_for(mask_dir, p)) for p in files]
    names = class_names
    if names is None:
        ct = root / "classes.txt"
        if ct.is_file():
            names = [line.strip() for line in ct.read_text().splitlines() if line.strip()]
            if not names:
                raise FcnError(f"{ct} lists no classes")
    if names is None:
        names = [f"class{i}" for i in range(_max_label(root, mask_dir, masks) + 1)]
    return PairDataset(pairs, name="folders", split=split, class_names=names, palette=default_palette(len(names)),
                       ignore_index=FOLDERS_IGNORE, cache=cache)


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


def open_dataset(fmt: str, root, split: str, *, cache: bool = True,
                 synthetic: Optional[SyntheticSpec] = None) -> SegDataset:
    """The dataset registry. ``root`` is ignored for ``synthetic`` (``synthetic`` gives its spec)."""
    if fmt not in FORMATS:
        raise unknown_name("dataset format", fmt, FORMATS)
    if split not in SPLITS:
        raise unknown_name("split", split, SPLITS)
    if fmt == "synthetic":
        return SyntheticDataset(synthetic or SyntheticSpec(), split, cache=cache)
    if root is None:
        raise FcnError(f"--data is required for format {fmt}")
    if not Path(root).exists():
        raise FcnError(f"data folder not found: {root}")
    return {"camvid": camvid, "voc": voc, "folders": folders}[fmt](root, split, cache=cache)


# ------------------------------------------------------------------------------------------------
# Normalisation and batching
# ------------------------------------------------------------------------------------------------


def normalize(images_u8: torch.Tensor, convention) -> torch.Tensor:
    """(N, H, W, 3) uint8 RGB (or (N, 3, H, W) float 0-255) -> NCHW float32 per the model's input
    convention ``(channel_order, scale, mean, std)``."""
    order, scale, mean, std = convention
    x = images_u8
    if x.dtype == torch.uint8:
        x = x.permute(0, 3, 1, 2).float()
    if order == "BGR":
        x = x.flip(1)
    m = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    return ((x * scale - m) / s).contiguous()


@dataclass(frozen=True)
class AugmentConfig:
    """Training augmentation. One random scale per batch (so a batch stays one tensor), then per
    image a random crop of ``crop`` (H, W) (padded with the ignore label where the scaled image is
    smaller) and a horizontal flip with probability 0.5. With ``shrink_crop`` the batch's crop
    shrinks to the scaled image size when that is smaller, so low-scale batches cost less."""

    crop: Optional[Tuple[int, int]] = None
    scale_range: Tuple[float, float] = (1.0, 1.0)
    hflip: bool = True
    shrink_crop: bool = True


PAD_RGB = (124, 116, 104)  # ImageNet mean in 0-255: padding that normalises to ~0


def make_train_batch(ds: SegDataset, indices: Sequence[int], rng: np.random.Generator, aug: AugmentConfig,
                     convention) -> Tuple[torch.Tensor, torch.Tensor]:
    """Augmented batch: (N, 3, h, w) float32 normalised, (N, h, w) int64 labels."""
    lo, hi = aug.scale_range
    s = float(rng.uniform(lo, hi)) if hi > lo else float(lo)
    samples = [ds.get(int(i)) for i in indices]
    min_h = min(a.shape[0] for a, _ in samples)
    min_w = min(a.shape[1] for a, _ in samples)
    if aug.crop is not None:
        ch, cw = aug.crop
        if aug.shrink_crop:
            ch, cw = min(ch, max(8, int(round(min_h * s)))), min(cw, max(8, int(round(min_w * s))))
    else:
        if any(a.shape[:2] != samples[0][0].shape[:2] for a, _ in samples):
            raise FcnError("images differ in size: set a crop size to batch them")
        ch, cw = int(round(min_h * s)), int(round(min_w * s))
    # Source window that maps onto the crop after scaling.
    sh, sw = max(1, int(round(ch / s))), max(1, int(round(cw / s)))
    imgs = np.empty((len(samples), sh, sw, 3), dtype=np.uint8)
    labs = np.empty((len(samples), sh, sw), dtype=np.int64)
    for k, (img, lab) in enumerate(samples):
        h, w = lab.shape
        ph, pw = max(0, sh - h), max(0, sw - w)
        if ph or pw:
            # Pad at a random side split; image with the mean colour, label with ignore.
            t, l_ = int(rng.integers(0, ph + 1)), int(rng.integers(0, pw + 1))
            img = np.pad(img, ((t, ph - t), (l_, pw - l_), (0, 0)), mode="constant")
            if ph or pw:
                img[:t] = PAD_RGB
                img[t + h:] = PAD_RGB
                img[:, :l_] = PAD_RGB
                img[:, l_ + w:] = PAD_RGB
            lab = np.pad(lab, ((t, ph - t), (l_, pw - l_)), mode="constant", constant_values=ds.ignore_index)
            h, w = lab.shape
        y0 = int(rng.integers(0, h - sh + 1))
        x0 = int(rng.integers(0, w - sw + 1))
        im = img[y0:y0 + sh, x0:x0 + sw]
        lb = lab[y0:y0 + sh, x0:x0 + sw]
        if aug.hflip and rng.random() < 0.5:
            im, lb = im[:, ::-1], lb[:, ::-1]
        imgs[k] = im
        labs[k] = lb
    x = torch.from_numpy(imgs).permute(0, 3, 1, 2).float()
    y = torch.from_numpy(labs)
    if (sh, sw) != (ch, cw):
        x = F.interpolate(x, size=(ch, cw), mode="bilinear", align_corners=False)
        y = F.interpolate(y[:, None].float(), size=(ch, cw), mode="nearest")[:, 0].long()
    return normalize(x, convention), y


def make_eval_batch(ds: SegDataset, indices: Sequence[int], convention) -> Tuple[torch.Tensor, torch.Tensor]:
    samples = [ds.get(int(i)) for i in indices]
    x = torch.from_numpy(np.stack([a for a, _ in samples]))
    y = torch.from_numpy(np.stack([b for _, b in samples]).astype(np.int64))
    return normalize(x, convention), y


def eval_batches(ds: SegDataset, batch_size: int, indices: Optional[Sequence[int]] = None) -> List[List[int]]:
    """Group consecutive samples of equal size into batches of at most ``batch_size``."""
    idx = list(range(len(ds))) if indices is None else list(indices)
    out: List[List[int]] = []
    cur: List[int] = []
    cur_shape = None
    for i in idx:
        shp = ds.get(i)[1].shape
        if cur and (shp != cur_shape or len(cur) >= batch_size):
            out.append(cur)
            cur = []
        cur.append(i)
        cur_shape = shp
    if cur:
        out.append(cur)
    return out


class BatchDataset(torch.utils.data.Dataset):
    """Batch ``b`` of an epoch, augmented with an RNG seeded by (seed, epoch, rank, b), so the
    batches are identical whatever the number of loader workers and after a resume."""

    def __init__(self, ds: SegDataset, batches: List[List[int]], *, seed: int, epoch: int, rank: int,
                 aug: AugmentConfig, convention):
        self.ds, self.batches, self.seed, self.epoch, self.rank = ds, batches, seed, epoch, rank
        self.aug, self.convention = aug, convention

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, b: int):
        rng = np.random.default_rng([self.seed, self.epoch, self.rank, b])
        return make_train_batch(self.ds, self.batches[b], rng, self.aug, self.convention)
