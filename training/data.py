"""Segmentation datasets for training: normalisation, augmentation and batching (torch).

The readers (layouts ``camvid`` / ``voc`` / ``folders`` / ``synthetic``, file pairing, label
reading, checks, class names, palette, ignore index, median-frequency weights) live in the
torch-free :mod:`fcn_deploy.datasets`, shared with fcn-eval and int8 calibration; their names
are re-exported here (``open_dataset``, ``SegDataset``, ``SyntheticSpec``, ...), so
``fcn_deploy.training.data.open_dataset`` is the same function.

Every dataset yields decoded ``uint8`` arrays (``image`` H x W x 3 RGB, ``label`` H x W class
indices). Images are decoded once and kept in RAM (``cache=True``): CamVid's 367 training
frames are ~250 MB decoded, and decoding PNGs again every epoch would cost more than the
2-core CPU can spare.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from fcn_deploy.datasets import (  # noqa: F401  (re-exported: the readers' public names)
    FOLDERS_IGNORE,
    FORMATS,
    SPLITS,
    SYNTHETIC_CLASSES,
    SYNTHETIC_IGNORE,
    PairDataset,
    SegDataset,
    SyntheticDataset,
    SyntheticSpec,
    camvid,
    folders,
    list_images,
    open_dataset,
    read_image,
    read_label,
    voc,
)
from fcn_deploy.errors import FcnError
from fcn_deploy.image import IMAGE_EXTENSIONS as IMAGE_EXTS  # noqa: F401

log = logging.getLogger(__name__)


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
