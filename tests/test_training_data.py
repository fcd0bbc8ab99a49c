"""Dataset readers (CamVid, VOC, folders, synthetic), bad-data errors, augmentation, class weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from fcn_deploy.errors import FcnError
from fcn_deploy.palette import voc_palette
from fcn_deploy.training import data as D
from fcn_deploy.training.models import input_convention


def _rgb(h, w, seed):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _lab(h, w, seed, n, ignore=None):
    lab = np.random.default_rng(seed + 100).integers(0, n, (h, w), dtype=np.uint8)
    if ignore is not None:
        lab[0, :] = ignore
    return lab


def make_camvid(root, n_train=3, n_val=2, h=12, w=16):
    truth = {}
    for split, n in (("train", n_train), ("val", n_val)):
        (root / split).mkdir(parents=True)
        (root / f"{split}annot").mkdir()
        for i in range(n):
            img, lab = _rgb(h, w, i), _lab(h, w, i, 11, ignore=11)
            Image.fromarray(img).save(root / split / f"f{i:03d}.png")
            Image.fromarray(lab, mode="L").save(root / f"{split}annot" / f"f{i:03d}.png")
            truth[split, i] = (img, lab)
    return truth


def make_voc(root, ids=("2007_000001", "2007_000002", "2007_000003"), h=10, w=14):
    base = root / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (base / sub).mkdir(parents=True)
    flat_pal = [v for c in voc_palette(256) for v in c]
    truth = {}
    for k, i in enumerate(ids):
        img = np.full((h, w, 3), 40 * k + 20, np.uint8)  # flat colours survive JPEG almost exactly
        lab = _lab(h, w, k, 21)
        lab[:, 0] = 255  # VOC outline = ignore
        Image.fromarray(img).save(base / "JPEGImages" / f"{i}.jpg", quality=100)
        p = Image.fromarray(lab, mode="P")
        p.putpalette(flat_pal)
        p.save(base / "SegmentationClass" / f"{i}.png")
        truth[i] = (img, lab)
    (base / "ImageSets/Segmentation/train.txt").write_text("\n".join(ids[:2]) + "\n")
    (base / "ImageSets/Segmentation/val.txt").write_text(ids[2] + "\n")
    return truth


def test_camvid_reader(tmp_path):
    truth = make_camvid(tmp_path)
    tr = D.open_dataset("camvid", tmp_path, "train")
    va = D.open_dataset("camvid", tmp_path, "val")
    assert (len(tr), len(va)) == (3, 2)
    assert tr.num_classes == 11 and tr.ignore_index == 11 and tr.class_names[0] == "Sky"
    assert len(tr.palette) == 11
    for i in range(3):
        img, lab = tr.get(i)
        np.testing.assert_array_equal(img, truth["train", i][0])
        np.testing.assert_array_equal(lab, truth["train", i][1])
    # cached: same object on the second read
    assert tr.get(0)[0] is tr.get(0)[0]


def test_voc_reader_palette_pngs_as_indices(tmp_path):
    truth = make_voc(tmp_path)
    # root may be the folder above VOCdevkit
    tr = D.open_dataset("voc", tmp_path, "train")
    va = D.open_dataset("voc", tmp_path / "VOCdevkit" / "VOC2012", "val")
    assert (len(tr), len(va), tr.num_classes, tr.ignore_index) == (2, 1, 21, 255)
    img, lab = va.get(0)
    np.testing.assert_array_equal(lab, truth["2007_000003"][1])
    assert abs(int(img.astype(int).mean()) - int(truth["2007_000003"][0].mean())) <= 2
    assert lab.dtype == np.uint8 and 255 in lab


@pytest.mark.parametrize("layout", ["subfolders", "flat"])
def test_folders_reader(tmp_path, layout):
    n = 10
    truth = {}
    for i in range(n):
        split = "train" if i < 7 else "val"
        sub = ("/" + split) if layout == "subfolders" else ""
        (tmp_path / f"images{sub}").mkdir(parents=True, exist_ok=True)
        (tmp_path / f"masks{sub}").mkdir(parents=True, exist_ok=True)
        img, lab = _rgb(8, 9, i), _lab(8, 9, i, 3)
        lab[0, 0] = 255
        Image.fromarray(img).save(tmp_path / f"images{sub}/im{i}.png")
        Image.fromarray(lab).save(tmp_path / f"masks{sub}/im{i}.png")
        truth[f"im{i}"] = lab
    tr = D.open_dataset("folders", tmp_path, "train")
    va = D.open_dataset("folders", tmp_path, "val")
    names_tr = [p[0].stem for p in tr.pairs]
    names_va = [p[0].stem for p in va.pairs]
    if layout == "subfolders":
        assert names_va == ["im7", "im8", "im9"]
    else:
        # sorted by name, every 5th (index % 5 == 4) is val: im0 im1 im2 im3 [im4] im5 im6 im7 im8 [im9]
        assert names_va == ["im4", "im9"]
    assert sorted(names_tr + names_va) == sorted(truth)
    assert tr.num_classes == 3 and tr.class_names == ("class0", "class1", "class2")
    for i, nm in enumerate(names_va):
        np.testing.assert_array_equal(va.get(i)[1], truth[nm])
    (tmp_path / "classes.txt").write_text("road\ncar\nsky\nextra\n")
    assert D.open_dataset("folders", tmp_path, "train").class_names == ("road", "car", "sky", "extra")


def test_synthetic_is_deterministic_and_labelled():
    spec = D.SyntheticSpec(num_train=4, num_val=2, height=32, width=40, seed=3)
    a = D.open_dataset("synthetic", None, "train", synthetic=spec)
    b = D.open_dataset("synthetic", None, "train", synthetic=spec)
    other = D.open_dataset("synthetic", None, "train", synthetic=D.SyntheticSpec(num_train=4, height=32, width=40, seed=4))
    assert len(a) == 4 and a.num_classes == 5
    for i in range(4):
        ia, la = a.get(i)
        ib, lb = b.get(i)
        assert ia.shape == (32, 40, 3) and la.shape == (32, 40)
        np.testing.assert_array_equal(ia, ib)
        np.testing.assert_array_equal(la, lb)
        assert set(np.unique(la)) <= {0, 1, 2, 3, 4, 255}
        assert (la > 0).any() and (la == 0).any()
    assert not np.array_equal(a.get(0)[0], other.get(0)[0])
    val = D.open_dataset("synthetic", None, "val", synthetic=spec)
    assert not np.array_equal(val.get(0)[0], a.get(0)[0])


# -- bad data ---------------------------------------------------------------------------------


def test_missing_mask_names_the_file(tmp_path):
    make_camvid(tmp_path)
    (tmp_path / "trainannot" / "f001.png").unlink()
    ds = D.open_dataset("camvid", tmp_path, "train")
    with pytest.raises(FcnError, match=r"missing mask .*f001\.png"):
        ds.preload()


def test_size_mismatch_names_the_file(tmp_path):
    make_camvid(tmp_path)
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(tmp_path / "valannot" / "f001.png")
    with pytest.raises(FcnError, match=r"size mismatch .*f001\.png"):
        D.open_dataset("camvid", tmp_path, "val").preload()


def test_label_out_of_range_names_the_file(tmp_path):
    make_camvid(tmp_path)
    lab = np.zeros((12, 16), np.uint8)
    lab[3, 4] = 12  # CamVid: 0..10 and void 11
    Image.fromarray(lab).save(tmp_path / "trainannot" / "f002.png")
    with pytest.raises(FcnError, match=r"label out of range in .*f002\.png: value 12"):
        D.open_dataset("camvid", tmp_path, "train").preload()


def test_unreadable_files_name_the_file(tmp_path):
    make_camvid(tmp_path)
    (tmp_path / "train" / "f000.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(FcnError, match=r"unreadable image .*f000\.png"):
        D.open_dataset("camvid", tmp_path, "train").preload()
    (tmp_path / "valannot" / "f000.png").write_bytes(b"nope")
    with pytest.raises(FcnError, match=r"unreadable mask .*valannot.*f000\.png"):
        D.open_dataset("camvid", tmp_path, "val").preload()


def test_rgb_mask_is_rejected(tmp_path):
    make_camvid(tmp_path)
    Image.fromarray(np.zeros((12, 16, 3), np.uint8)).save(tmp_path / "valannot" / "f000.png")
    with pytest.raises(FcnError, match=r"f000\.png has mode RGB"):
        D.open_dataset("camvid", tmp_path, "val").preload()


def test_layout_errors(tmp_path):
    with pytest.raises(FcnError, match="not found"):
        D.open_dataset("camvid", tmp_path / "nowhere", "train")
    (tmp_path / "train").mkdir()
    with pytest.raises(FcnError, match="trainannot"):
        D.open_dataset("camvid", tmp_path, "train")
    with pytest.raises(FcnError, match="no PASCAL VOC layout"):
        D.open_dataset("voc", tmp_path, "train")
    with pytest.raises(FcnError, match="images folder"):
        D.open_dataset("folders", tmp_path, "train")
    with pytest.raises(FcnError, match="camvid, folders, synthetic, voc"):
        D.open_dataset("cityscapes", tmp_path, "train")


# -- augmentation and weights -----------------------------------------------------------------


class _Arrays(D.SegDataset):
    def __init__(self, pairs, n=4, ignore=255):
        super().__init__(name="arrays", split="train", class_names=[str(i) for i in range(n)],
                         palette=[(0, 0, 0)] * n, ignore_index=ignore)
        self.items = pairs

    def __len__(self):
        return len(self.items)

    def _load(self, i):
        return self.items[i]


def _coded(h, w):
    """Image whose red channel is the column index and label = column % 4: a crop or flip that moves
    image and label apart shows up."""
    cols = np.tile(np.arange(w, dtype=np.uint8), (h, 1))
    img = np.stack([cols, np.zeros_like(cols), np.zeros_like(cols)], -1)
    return img, (cols % 4).astype(np.uint8)


def test_crop_flip_keep_image_and_label_aligned():
    ds = _Arrays([_coded(20, 30) for _ in range(4)])
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
    ds = _Arrays([_coded(6, 8)], ignore=255)
    conv = ("RGB", 1.0, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    aug = D.AugmentConfig(crop=(10, 12), hflip=False, shrink_crop=False)
    x, y = D.make_train_batch(ds, [0], np.random.default_rng(0), aug, conv)
    assert y.shape == (1, 10, 12)
    assert int((y != 255).sum()) == 6 * 8
    assert int((y == 255).sum()) == 10 * 12 - 48


def test_random_scale_changes_source_window():
    ds = _Arrays([_coded(40, 40)])
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


def test_median_frequency_weights_by_hand():
    # image A: 6 px class 0, 2 px class 1; image B: 4 px class 0, 4 px ignore(255)... class 2 in B 0 px
    a = np.array([[0, 0, 0, 0], [0, 0, 1, 1]], np.uint8)
    b = np.array([[0, 0, 2, 2], [255, 255, 255, 255]], np.uint8)
    ds = _Arrays([(np.zeros((2, 4, 3), np.uint8), a), (np.zeros((2, 4, 3), np.uint8), b)], n=4)
    # f0 = 8 / 16 (both images, 8 px each), f1 = 2 / 8, f2 = 2 / 8; class 3 never seen -> weight 1
    w = ds.median_frequency_weights()
    med = np.median([0.5, 0.25, 0.25])
    np.testing.assert_allclose(w, [med / 0.5, med / 0.25, med / 0.25, 1.0], rtol=1e-6)
    assert ds.median_frequency_weights() is w  # cached


def test_eval_batches_group_by_size():
    items = [(np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4), np.uint8))] * 3 + [(np.zeros((5, 4, 3), np.uint8), np.zeros((5, 4), np.uint8))]
    ds = _Arrays(items)
    assert D.eval_batches(ds, 2) == [[0, 1], [2], [3]]


@pytest.mark.camvid
def test_real_camvid_files(camvid_dir):
    tr = D.open_dataset("camvid", camvid_dir, "train", cache=False)
    va = D.open_dataset("camvid", camvid_dir, "val", cache=False)
    assert (len(tr), len(va)) == (367, 101)
    for ds in (tr, va):
        for i in (0, len(ds) - 1):
            img, lab = ds.get(i)
            assert img.shape == (360, 480, 3) and lab.shape == (360, 480)
            assert lab.max() <= 11
    x, y = D.make_train_batch(tr, [0, 1], np.random.default_rng(0), D.AugmentConfig(crop=(288, 384), scale_range=(0.75, 1.25)),
                              input_convention("resnet18"))
    assert x.shape[0] == 2 and x.shape[2] <= 288 and y.max() <= 11
