"""Training batches on top of the shared readers: augmentation, normalisation, eval batching.

The readers themselves (layouts, bad data, class weights) are tested torch-free in
test_datasets_readers.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import fcn_deploy.datasets as DS
from fcn_deploy.training import data as D
from fcn_deploy.training.models import input_convention

from test_datasets_readers import ArraysDataset


# -- augmentation ------------------------------------------------------------------------------


def _coded(h, w):
    """Image whose red channel is the column index and label = column % 4: a crop or flip that moves
    image and label apart shows up."""
    cols = np.tile(np.arange(w, dtype=np.uint8), (h, 1))
    img = np.stack([cols, np.zeros_like(cols), np.zeros_like(cols)], -1)
    return img, (cols % 4).astype(np.uint8)


def test_crop_flip_keep_image_and_label_aligned():
    ds = ArraysDataset([_coded(20, 30) for _ in range(4)])
    conv = ("RGB", 1.0, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))  # identity normalisation
    aug = D.AugmentConfig(crop=(10, 12), hflip=True)
    flips = 0
    for seed in range(6):
        x, y = D.make_train_batch(ds, [0, 1, 2, 3], np.random.default_rng(seed), aug, conv)
        assert x.shape == (4, 3, 10, 12) and y.shape == (4, 10, 12) and y.dtype == torch.int64
        red = x[:, 0].round().long()
        assert torch.equal(red % 4, y)
        d = red[:, :, 1] - red[:, :, 0]
        assert set(d.unique().tolist()) <= {1, -1}
        flips += int((d == -1).sum() > 0)
    assert flips > 0  # some flipped


def test_crop_larger_than_image_pads_with_ignore():
    ds = ArraysDataset([_coded(6, 8)], ignore=255)
    conv = ("RGB", 1.0, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    aug = D.AugmentConfig(crop=(10, 12), hflip=False, shrink_crop=False)
    x, y = D.make_train_batch(ds, [0], np.random.default_rng(0), aug, conv)
    assert y.shape == (1, 10, 12)
    assert int((y != 255).sum()) == 6 * 8
    assert int((y == 255).sum()) == 10 * 12 - 48


def test_random_scale_changes_source_window():
    ds = ArraysDataset([_coded(40, 40)])
    conv = ("RGB", 1.0, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    x, y = D.make_train_batch(ds, [0], np.random.default_rng(0), D.AugmentConfig(crop=(16, 16), scale_range=(2.0, 2.0), hflip=False), conv)
    # scale 2: a 16-pixel crop covers 8 source columns, each repeated twice (nearest on labels)
    assert y.shape == (1, 16, 16)
    assert len(torch.unique(y[0, 0])) <= 4 and torch.equal(y[0, 0, 0::2], y[0, 0, 1::2])
    # shrink_crop: at scale 0.5 a 40x40 image gives a 20x20 batch even if the crop asks 32x32
    x, y = D.make_train_batch(ds, [0], np.random.default_rng(0), D.AugmentConfig(crop=(32, 32), scale_range=(0.5, 0.5)), conv)
    assert y.shape == (1, 20, 20)


def test_normalize_follows_convention():
    img = torch.tensor([[[[10, 20, 30]]]], dtype=torch.uint8)  # 1x1x1x3 RGB
    caffe = D.normalize(img, input_convention("vgg16"))
    np.testing.assert_allclose(caffe[0, :, 0, 0].numpy(), [30 - 104.00699, 20 - 116.66877, 10 - 122.67892], rtol=1e-6)
    imnet = D.normalize(img, input_convention("resnet18"))
    np.testing.assert_allclose(imnet[0, :, 0, 0].numpy(),
                               [(10 / 255 - 0.485) / 0.229, (20 / 255 - 0.456) / 0.224, (30 / 255 - 0.406) / 0.225], rtol=1e-5)


def test_eval_batches_group_by_size():
    items = [(np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4), np.uint8))] * 3 + [(np.zeros((5, 4, 3), np.uint8), np.zeros((5, 4), np.uint8))]
    ds = ArraysDataset(items)
    assert D.eval_batches(ds, 2) == [[0, 1], [2], [3]]


def test_readers_are_the_shared_ones():
    """fcn-train reads through fcn_deploy.datasets (the same functions fcn-eval uses)."""
    assert D.open_dataset is DS.open_dataset and D.read_image is DS.read_image
    assert D.SegDataset is DS.SegDataset and D.SyntheticSpec is DS.SyntheticSpec
    assert D.FORMATS == ("camvid", "voc", "folders", "synthetic")


@pytest.mark.camvid
def test_real_camvid_batch(camvid_dir):
    tr = D.open_dataset("camvid", camvid_dir, "train", cache=False)
    x, y = D.make_train_batch(tr, [0, 1], np.random.default_rng(0), D.AugmentConfig(crop=(288, 384), scale_range=(0.75, 1.25)),
                              input_convention("resnet18"))
    assert x.shape[0] == 2 and x.shape[2] <= 288 and y.max() <= 11
