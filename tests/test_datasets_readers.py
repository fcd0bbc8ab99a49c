"""fcn_deploy.datasets (torch-free): layouts, file pairing, decoding, bad data, class weights,
list_images for calibration; the same readers behind fcn-train and fcn-eval."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import fcn_deploy.datasets as DS
from fcn_deploy.errors import FcnError
from fcn_deploy.image import load_image
from fcn_deploy.palette import voc_palette


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
    tr = DS.open_dataset("camvid", tmp_path, "train")
    va = DS.open_dataset("camvid", tmp_path, "val")
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
    tr = DS.open_dataset("voc", tmp_path, "train")
    va = DS.open_dataset("voc", tmp_path / "VOCdevkit" / "VOC2012", "val")
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
    tr = DS.open_dataset("folders", tmp_path, "train")
    va = DS.open_dataset("folders", tmp_path, "val")
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
    assert DS.open_dataset("folders", tmp_path, "train").class_names == ("road", "car", "sky", "extra")


def test_synthetic_is_deterministic_and_labelled():
    spec = DS.SyntheticSpec(num_train=4, num_val=2, height=32, width=40, seed=3)
    a = DS.open_dataset("synthetic", None, "train", synthetic=spec)
    b = DS.open_dataset("synthetic", None, "train", synthetic=spec)
    other = DS.open_dataset("synthetic", None, "train", synthetic=DS.SyntheticSpec(num_train=4, height=32, width=40, seed=4))
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
    val = DS.open_dataset("synthetic", None, "val", synthetic=spec)
    assert not np.array_equal(val.get(0)[0], a.get(0)[0])


# -- bad data ---------------------------------------------------------------------------------


def test_missing_mask_names_the_file(tmp_path):
    make_camvid(tmp_path)
    (tmp_path / "trainannot" / "f001.png").unlink()
    ds = DS.open_dataset("camvid", tmp_path, "train")
    with pytest.raises(FcnError, match=r"missing mask .*f001\.png"):
        ds.preload()


def test_size_mismatch_names_the_file(tmp_path):
    make_camvid(tmp_path)
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(tmp_path / "valannot" / "f001.png")
    with pytest.raises(FcnError, match=r"size mismatch .*f001\.png"):
        DS.open_dataset("camvid", tmp_path, "val").preload()


def test_label_out_of_range_names_the_file(tmp_path):
    make_camvid(tmp_path)
    lab = np.zeros((12, 16), np.uint8)
    lab[3, 4] = 12  # CamVid: 0..10 and void 11
    Image.fromarray(lab).save(tmp_path / "trainannot" / "f002.png")
    with pytest.raises(FcnError, match=r"label out of range in .*f002\.png: value 12"):
        DS.open_dataset("camvid", tmp_path, "train").preload()


def test_unreadable_files_name_the_file(tmp_path):
    make_camvid(tmp_path)
    (tmp_path / "train" / "f000.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(FcnError, match=r"unreadable image .*f000\.png"):
        DS.open_dataset("camvid", tmp_path, "train").preload()
    (tmp_path / "valannot" / "f000.png").write_bytes(b"nope")
    with pytest.raises(FcnError, match=r"unreadable mask .*valannot.*f000\.png"):
        DS.open_dataset("camvid", tmp_path, "val").preload()


def test_rgb_mask_is_rejected(tmp_path):
    make_camvid(tmp_path)
    Image.fromarray(np.zeros((12, 16, 3), np.uint8)).save(tmp_path / "valannot" / "f000.png")
    with pytest.raises(FcnError, match=r"f000\.png has mode RGB"):
        DS.open_dataset("camvid", tmp_path, "val").preload()


def test_layout_errors(tmp_path):
    with pytest.raises(FcnError, match="not found"):
        DS.open_dataset("camvid", tmp_path / "nowhere", "train")
    (tmp_path / "train").mkdir()
    with pytest.raises(FcnError, match="trainannot"):
        DS.open_dataset("camvid", tmp_path, "train")
    with pytest.raises(FcnError, match="no PASCAL VOC layout"):
        DS.open_dataset("voc", tmp_path, "train")
    with pytest.raises(FcnError, match="images folder"):
        DS.open_dataset("folders", tmp_path, "train")
    with pytest.raises(FcnError, match="camvid, folders, synthetic, voc"):
        DS.open_dataset("cityscapes", tmp_path, "train")


# -- decoding: the runtime's load_image everywhere ----------------------------------------------


def test_rgb8_png_pixels_are_unchanged(tmp_path):
    """8-bit RGB PNGs (CamVid) decode to exactly the stored pixels, as with PIL's convert("RGB")."""
    make_camvid(tmp_path, n_train=2, n_val=1, h=13, w=17)
    src = _rgb(13, 17, 7)
    Image.fromarray(src).save(tmp_path / "train" / "f000.png")
    img = DS.read_image(tmp_path / "train" / "f000.png")
    np.testing.assert_array_equal(img, src)
    with Image.open(tmp_path / "train" / "f000.png") as im:
        np.testing.assert_array_equal(img, np.asarray(im.convert("RGB")))
    assert img.dtype == np.uint8 and img.flags.writeable
    np.testing.assert_array_equal(DS.open_dataset("camvid", tmp_path, "train").get(0)[0], src)


def test_16bit_and_exif_images_decode_like_fcn_predict(tmp_path):
    root = tmp_path / "f"
    for sub in ("images/train", "masks/train", "images/val", "masks/val"):
        (root / sub).mkdir(parents=True)
    grey16 = np.full((6, 8), 32896, np.uint16)  # 32896 / 257 = 128
    grey16[0, 0] = 65535
    Image.fromarray(grey16).save(root / "images/train/a.png")
    Image.fromarray(np.zeros((6, 8), np.uint8)).save(root / "masks/train/a.png")
    rgb = _rgb(6, 8, 1)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    Image.fromarray(rgb).save(root / "images/train/b.png", exif=exif.tobytes())
    Image.fromarray(np.zeros((8, 6), np.uint8)).save(root / "masks/train/b.png")  # mask drawn on the upright image
    ds = DS.open_dataset("folders", root, "train", class_names=["bg"])
    a, b = ds.get(0)[0], ds.get(1)[0]
    np.testing.assert_array_equal(a, load_image(root / "images/train/a.png"))
    assert a[1, 1].tolist() == [128, 128, 128] and a[0, 0].tolist() == [255, 255, 255]  # scaled, not clipped
    np.testing.assert_array_equal(b, load_image(root / "images/train/b.png"))
    np.testing.assert_array_equal(b, np.rot90(rgb, k=-1))


def test_only_image_suffixes_are_listed(tmp_path):
    make_camvid(tmp_path, n_train=2, n_val=1)
    (tmp_path / "train" / "notes.txt").write_text("not an image")
    (tmp_path / "train" / "sub").mkdir()
    Image.fromarray(_rgb(12, 16, 9)).save(tmp_path / "train" / "g.PPM")
    Image.fromarray(_lab(12, 16, 9, 11)).save(tmp_path / "trainannot" / "g.png")
    ds = DS.open_dataset("camvid", tmp_path, "train")
    assert [p[0].name for p in ds.pairs] == ["f000.png", "f001.png", "g.PPM"]
    np.testing.assert_array_equal(ds.get(2)[0], _rgb(12, 16, 9))


# -- list_images (int8 calibration) ---------------------------------------------------------------


def test_list_images_camvid_is_the_split_folder_only(tmp_path):
    make_camvid(tmp_path, n_train=3, n_val=2)
    files = DS.list_images(tmp_path, "camvid", "train")
    assert [f.relative_to(tmp_path).as_posix() for f in files] == ["train/f000.png", "train/f001.png", "train/f002.png"]
    assert [f.parent.name for f in DS.list_images(tmp_path, "camvid", "val")] == ["val", "val"]
    # A CamVid root without train/ is an error, never a listing of the *annot label folders.
    import shutil

    shutil.rmtree(tmp_path / "train")
    with pytest.raises(FcnError, match=r"CamVid train images folder not found: .*train"):
        DS.list_images(tmp_path, "camvid", "train")


def test_list_images_voc_follows_the_split_list(tmp_path):
    make_voc(tmp_path)
    base = tmp_path / "VOCdevkit" / "VOC2012"
    assert [f.name for f in DS.list_images(tmp_path, "voc", "train")] == ["2007_000001.jpg", "2007_000002.jpg"]
    assert [f.name for f in DS.list_images(base, "voc", "val")] == ["2007_000003.jpg"]
    (base / "JPEGImages" / "2007_000002.jpg").unlink()
    with pytest.raises(FcnError, match=r"image not found: .*2007_000002"):
        DS.list_images(tmp_path, "voc", "train")


@pytest.mark.parametrize("layout", ["subfolders", "flat"])
def test_list_images_folders_needs_no_masks(tmp_path, layout):
    for i in range(6):
        sub = ("/train" if i < 4 else "/val") if layout == "subfolders" else ""
        (tmp_path / f"images{sub}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(_rgb(4, 4, i)).save(tmp_path / f"images{sub}/im{i}.png")
    train = [f.name for f in DS.list_images(tmp_path, "folders", "train")]
    val = [f.name for f in DS.list_images(tmp_path, "folders", "val")]
    if layout == "subfolders":
        assert (train, val) == (["im0.png", "im1.png", "im2.png", "im3.png"], ["im4.png", "im5.png"])
    else:
        assert (train, val) == (["im0.png", "im1.png", "im2.png", "im3.png", "im5.png"], ["im4.png"])
    # the readers agree on the split (once masks exist)
    for f in (tmp_path / "images").rglob("*.png"):
        m = tmp_path / "masks" / f.parent.relative_to(tmp_path / "images") / f.name
        m.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.zeros((4, 4), np.uint8)).save(m)
    ds = DS.open_dataset("folders", tmp_path, "train", class_names=["bg"])
    assert [p[0].name for p in ds.pairs] == train


def test_list_images_plain_folder_and_errors(tmp_path):
    for n in ("b.jpg", "a.png"):
        Image.fromarray(_rgb(4, 4, 0)).save(tmp_path / n)
    (tmp_path / "x.txt").write_text("")
    assert [f.name for f in DS.list_images(tmp_path, "images")] == ["a.png", "b.jpg"]
    with pytest.raises(FcnError, match="no images"):
        DS.list_images(_empty(tmp_path), "images")
    with pytest.raises(FcnError, match="synthetic dataset has no image files"):
        DS.list_images(tmp_path, "synthetic")
    with pytest.raises(FcnError, match="unknown dataset format 'coco'"):
        DS.list_images(tmp_path, "coco")
    with pytest.raises(FcnError, match="unknown split 'test'"):
        DS.list_images(tmp_path, "camvid", "test")
    with pytest.raises(FcnError, match="data folder not found"):
        DS.list_images(tmp_path / "nowhere", "camvid")


def _empty(tmp_path):
    d = tmp_path / "empty"
    d.mkdir()
    return d


def run_without_torch(body: str, *, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``body`` in a fresh interpreter where ``import torch`` fails (an edge box); the script
    fails if any torch module got loaded anyway. Also used by test_bench_eval.py."""
    prelude = "import sys\nsys.modules['torch'] = None  # import torch -> ImportError\n"
    check = ("\nassert sys.modules.get('torch') is None and not any(m.startswith('torch.') for m in sys.modules)\n"
             "sys.exit(globals().get('rc', 0))\n")
    return subprocess.run([sys.executable, "-c", prelude + body + check], capture_output=True, text=True,
                          timeout=timeout)


def test_readers_work_without_torch(tmp_path):
    """What fcn-eval and calibration use on an edge box: no torch import anywhere."""
    make_camvid(tmp_path, n_train=1, n_val=2)
    out = run_without_torch(
        "import fcn_deploy.datasets as DS\n"
        f"ds = DS.open_dataset('camvid', {str(tmp_path)!r}, 'val')\n"
        "ds.preload()\n"
        "syn = DS.open_dataset('synthetic', None, 'train', synthetic=DS.SyntheticSpec(num_train=2, height=16, width=16))\n"
        "w = syn.median_frequency_weights()\n"
        f"files = DS.list_images({str(tmp_path)!r}, 'camvid', 'train')\n"
        "print(len(ds), ds.get(1)[0].shape, len(w), len(files))\n",
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["2", "(12,", "16,", "3)", "5", "1"]
    assert run_without_torch("import torch\n").returncode != 0  # the block itself works


# -- class weights --------------------------------------------------------------------------------


class ArraysDataset(DS.SegDataset):
    """In-memory (image, label) pairs (also used by test_training_data.py)."""

    def __init__(self, pairs, n=4, ignore=255):
        super().__init__(name="arrays", split="train", class_names=[str(i) for i in range(n)],
                         palette=[(0, 0, 0)] * n, ignore_index=ignore)
        self.items = pairs

    def __len__(self):
        return len(self.items)

    def _load(self, i):
        return self.items[i]


def test_median_frequency_weights_by_hand():
    # image A: 6 px class 0, 2 px class 1; image B: 4 px class 0, 4 px ignore(255)... class 2 in B 0 px
    a = np.array([[0, 0, 0, 0], [0, 0, 1, 1]], np.uint8)
    b = np.array([[0, 0, 2, 2], [255, 255, 255, 255]], np.uint8)
    ds = ArraysDataset([(np.zeros((2, 4, 3), np.uint8), a), (np.zeros((2, 4, 3), np.uint8), b)], n=4)
    # f0 = 8 / 16 (both images, 8 px each), f1 = 2 / 8, f2 = 2 / 8; class 3 never seen -> weight 1
    w = ds.median_frequency_weights()
    med = np.median([0.5, 0.25, 0.25])
    np.testing.assert_allclose(w, [med / 0.5, med / 0.25, med / 0.25, 1.0], rtol=1e-6)
    assert ds.median_frequency_weights() is w  # cached


def test_ignore_index_inside_the_class_range_is_not_counted():
    """300 classes (e.g. from classes.txt) and ignore 255: 255 is ignored, not class 255."""
    lab = np.array([[0, 0, 255, 255], [299, 255, 255, 255]], np.int32)
    ds = ArraysDataset([(np.zeros((2, 4, 3), np.uint8), lab)], n=300, ignore=255)
    counts, _ = ds.class_histogram()
    assert counts[0] == 2 and counts[299] == 1 and counts[255] == 0 and counts.sum() == 3
    assert ds.median_frequency_weights()[255] == 1.0  # never seen
    assert ds.scored(lab).sum() == 3


@pytest.mark.camvid
def test_real_camvid_files(camvid_dir):
    tr = DS.open_dataset("camvid", camvid_dir, "train", cache=False)
    va = DS.open_dataset("camvid", camvid_dir, "val", cache=False)
    assert (len(tr), len(va)) == (367, 101)
    for ds in (tr, va):
        for i in (0, len(ds) - 1):
            img, lab = ds.get(i)
            assert img.shape == (360, 480, 3) and lab.shape == (360, 480)
            assert lab.max() <= 11
            # CamVid frames are 8-bit RGB PNGs: the shared decoder gives the pixels PIL's plain
            # convert("RGB") gave before the readers moved (a running training depends on it).
            with Image.open(ds.pairs[i][0]) as im:
                np.testing.assert_array_equal(img, np.asarray(im.convert("RGB")))
    files = DS.list_images(camvid_dir, "camvid", "train")
    assert len(files) == 367 and all(f.parent.name == "train" for f in files)
