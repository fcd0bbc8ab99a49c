"""Image reading (every mode, EXIF, bad inputs), pre-processing and label/overlay PNG writing."""

import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from fcn_deploy.errors import FcnError
from fcn_deploy.image import (
    load_image, normalization_lut, preprocess, read_label_png, resize_nearest, write_label_png, write_rgb_png,
)
from fcn_deploy.modelinfo import CAFFE_CONVENTION, ModelInfo
from fcn_deploy.palette import CAMVID_CLASSES, CAMVID_PALETTE


def _rgb(h=20, w=30, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def _info(order="RGB"):
    kw = {}
    if order == "BGR":
        kw = dict(channel_order="BGR", scale=CAFFE_CONVENTION[1], mean=CAFFE_CONVENTION[2], std=CAFFE_CONVENTION[3])
    return ModelInfo(arch="fcn8s", backbone="resnet18", num_classes=11, class_names=CAMVID_CLASSES,
                     palette=CAMVID_PALETTE, **kw)


# -- reading ---------------------------------------------------------------------------------------

def test_rgb_png_roundtrip(tmp_path):
    a = _rgb()
    Image.fromarray(a).save(tmp_path / "a.png")
    out = load_image(tmp_path / "a.png")
    assert out.dtype == np.uint8 and out.shape == a.shape and out.flags["C_CONTIGUOUS"]
    assert np.array_equal(out, a)
    assert np.array_equal(load_image(str(tmp_path / "a.png")), a)


def test_grey_L_and_LA_and_RGBA_drop_alpha(tmp_path):
    g = _rgb()[:, :, 0]
    Image.fromarray(g).save(tmp_path / "l.png")
    assert np.array_equal(load_image(tmp_path / "l.png"), np.repeat(g[:, :, None], 3, 2))
    la = Image.merge("LA", [Image.fromarray(g), Image.fromarray(255 - g)])
    la.save(tmp_path / "la.png")
    assert np.array_equal(load_image(tmp_path / "la.png"), np.repeat(g[:, :, None], 3, 2))
    rgb = _rgb(seed=1)
    alpha = np.zeros(rgb.shape[:2], np.uint8)  # fully transparent: colours still kept
    rgba = np.concatenate([rgb, alpha[:, :, None]], 2)
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    assert np.array_equal(load_image(tmp_path / "rgba.png"), rgb)


def test_palette_modes(tmp_path):
    idx = np.random.default_rng(2).integers(0, 4, size=(10, 12)).astype(np.uint8)
    pal = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (10, 20, 30)]
    im = Image.frombytes("P", (12, 10), idx.tobytes())
    im.putpalette([v for c in pal for v in c] + [0] * (768 - 12))
    im.save(tmp_path / "p.png")
    expected = np.array(pal, np.uint8)[idx]
    assert np.array_equal(load_image(tmp_path / "p.png"), expected)
    im.info["transparency"] = 0
    im.save(tmp_path / "pt.png", transparency=0)
    assert np.array_equal(load_image(tmp_path / "pt.png"), expected)


def test_16bit_grey_png_scaled_not_clipped(tmp_path):
    v = np.array([[0, 257, 1000, 32768], [65535, 12345, 255, 256]], dtype=np.uint16)
    Image.fromarray(v).save(tmp_path / "g16.png")
    im = Image.open(tmp_path / "g16.png")
    assert im.mode.startswith("I")  # Pillow opens 16-bit grey as I;16 (or I in older versions)
    out = load_image(tmp_path / "g16.png")
    expected = np.floor(v / 257.0 + 0.5).astype(np.uint8)
    assert np.array_equal(out[:, :, 0], expected) and np.array_equal(out[:, :, 2], expected)
    # A 32-bit "I" image holding 16-bit values is scaled the same way.
    out_i = load_image(Image.fromarray(v.astype(np.int32)))
    assert np.array_equal(out_i[:, :, 1], expected)


def _png_rgb16(path, arr16):
    h, w, _ = arr16.shape
    raw = b"".join(b"\x00" + arr16[r].astype(">u2").tobytes() for r in range(h))

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    path.write_bytes(png)


def test_16bit_rgb_png_reduced_to_8_bits(tmp_path):
    a = np.random.default_rng(3).integers(0, 65536, size=(6, 7, 3)).astype(np.uint16)
    _png_rgb16(tmp_path / "c16.png", a)
    out = load_image(tmp_path / "c16.png")
    assert out.shape == (6, 7, 3) and out.dtype == np.uint8
    assert np.abs(out.astype(int) - a.astype(int) / 257.0).max() <= 1.0


def test_float_cmyk_and_1bit_modes():
    f = np.linspace(0, 1, 24, dtype=np.float32).reshape(4, 6)
    out = load_image(Image.fromarray(f))
    assert np.array_equal(out[:, :, 0], np.floor(f * 255 + 0.5).astype(np.uint8))
    cmyk = Image.new("CMYK", (5, 4), (0, 255, 0, 0))  # full magenta
    assert np.array_equal(load_image(cmyk)[0, 0], [255, 0, 255])
    one = Image.new("1", (3, 2), 1)
    assert np.array_equal(load_image(one), np.full((2, 3, 3), 255, np.uint8))


def test_exif_orientation_applied(tmp_path):
    a = _rgb(10, 16)
    im = Image.fromarray(a)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    im.save(tmp_path / "o.png", exif=exif.tobytes())
    out = load_image(tmp_path / "o.png")
    assert out.shape == (16, 10, 3)
    assert np.array_equal(out, np.rot90(a, k=-1))


def test_numpy_rgb_bgr_and_grey():
    a = _rgb()
    assert np.array_equal(load_image(a), a)
    assert np.array_equal(load_image(a, channel_order="BGR"), a[:, :, ::-1])
    g = a[:, :, 1].copy()
    assert np.array_equal(load_image(g), np.repeat(g[:, :, None], 3, 2))
    # A non-contiguous view is fine too.
    assert np.array_equal(load_image(a[::2, ::3]), a[::2, ::3])


@pytest.mark.parametrize("arr, words", [
    (np.zeros((4, 5, 3), np.float32), "float32"),
    (np.zeros((4, 5, 3), np.int64), "int64"),
    (np.zeros((4, 5, 4), np.uint8), "shape (4, 5, 4)"),
    (np.zeros((4, 5, 1), np.uint8), "shape (4, 5, 1)"),
    (np.zeros((2, 4, 5, 3), np.uint8), "shape (2, 4, 5, 3)"),
    (np.zeros((7,), np.uint8), "shape (7,)"),
    (np.zeros((0, 5, 3), np.uint8), "empty"),
])
def test_bad_arrays_refused(arr, words):
    with pytest.raises(FcnError, match=words.replace("(", r"\(").replace(")", r"\)")):
        load_image(arr)


def test_bad_channel_order_and_types():
    with pytest.raises(FcnError, match="channel_order"):
        load_image(_rgb(), channel_order="RBG")
    with pytest.raises(FcnError, match="cannot read an image from a int"):
        load_image(123)


def test_unreadable_files(tmp_path):
    with pytest.raises(FcnError, match="no such file"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(FcnError, match="is a folder"):
        load_image(tmp_path)
    (tmp_path / "text.jpg").write_text("this is not a jpeg")
    with pytest.raises(FcnError, match="not an image"):
        load_image(tmp_path / "text.jpg")
    Image.fromarray(_rgb(64, 64)).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(FcnError, match="cut.png: corrupt or truncated"):
        load_image(tmp_path / "cut.png")
    Image.fromarray(_rgb(64, 64)).save(tmp_path / "full.jpg", quality=90)
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[:200])
    with pytest.raises(FcnError, match="cut.jpg"):
        load_image(tmp_path / "cut.jpg")


# -- pre-processing ----------------------------------------------------------------------------------

@pytest.mark.parametrize("order", ["RGB", "BGR"])
def test_preprocess_follows_the_documented_convention(order):
    info = _info(order)
    a, b = _rgb(9, 11, 4), _rgb(9, 11, 5)
    x = preprocess([a, b], info)
    assert x.shape == (2, 3, 9, 11) and x.dtype == np.float32 and x.flags["C_CONTIGUOUS"]
    for n, img in enumerate((a, b)):
        src = img[..., ::-1] if order == "BGR" else img
        ref = ((src.astype(np.float64) * info.scale - np.array(info.mean)) / np.array(info.std)).transpose(2, 0, 1)
        assert np.abs(x[n] - ref).max() < 1e-4 * max(1.0, np.abs(ref).max())
    x16 = preprocess([a], info, dtype=np.float16)
    assert x16.dtype == np.float16
    assert np.array_equal(x16[0], x[0].astype(np.float16))


def test_preprocess_rejects_mixed_sizes():
    info = _info()
    with pytest.raises(FcnError, match="same-size"):
        preprocess([_rgb(4, 5), _rgb(4, 6)], info)
    with pytest.raises(FcnError, match="no images"):
        preprocess([], info)


def test_lut_rows_are_the_model_channels():
    info = _info("BGR")
    lut = normalization_lut(info)
    assert lut.shape == (3, 256)
    assert lut[0, 0] == pytest.approx(-info.mean[0])
    assert lut[2, 255] == pytest.approx(255 - info.mean[2], rel=1e-6)


def test_resize_nearest_by_pixel_centres():
    lab = np.arange(6).reshape(2, 3)
    up = resize_nearest(lab, (4, 6))
    assert np.array_equal(up, np.repeat(np.repeat(lab, 2, 0), 2, 1))
    assert np.array_equal(resize_nearest(up, (2, 3)), lab)


# -- writing ---------------------------------------------------------------------------------------

def test_label_png_is_palette_and_preserves_ids(tmp_path):
    lab = np.random.default_rng(6).integers(0, 11, size=(13, 17)).astype(np.uint8)
    write_label_png(tmp_path / "l.png", lab, CAMVID_PALETTE)
    im = Image.open(tmp_path / "l.png")
    assert im.mode == "P"
    assert np.array_equal(np.asarray(im), lab)
    pal = np.array(im.getpalette()[: 3 * 11]).reshape(11, 3)
    assert np.array_equal(pal, np.array(CAMVID_PALETTE))
    # Viewed as colours, every pixel shows its class colour.
    assert np.array_equal(np.asarray(im.convert("RGB")), np.array(CAMVID_PALETTE, np.uint8)[lab])
    assert [p.name for p in tmp_path.iterdir()] == ["l.png"]  # no temp file left behind


def test_label_png_grey_and_16bit(tmp_path):
    lab = np.array([[0, 3], [7, 10]], np.uint8)
    write_label_png(tmp_path / "g.png", lab, CAMVID_PALETTE, with_palette=False)
    assert Image.open(tmp_path / "g.png").mode == "L"
    assert np.array_equal(read_label_png(tmp_path / "g.png"), lab)
    big = np.array([[0, 300], [1000, 65535]], np.int32)
    write_label_png(tmp_path / "b.png", big, CAMVID_PALETTE)
    assert np.array_equal(read_label_png(tmp_path / "b.png").astype(np.int64), big)
    with pytest.raises(FcnError, match="HxW"):
        write_label_png(tmp_path / "x.png", np.zeros((2, 2, 2), np.uint8), CAMVID_PALETTE)


def test_writes_are_atomic_and_checked(tmp_path):
    with pytest.raises(FcnError, match="does not exist"):
        write_rgb_png(tmp_path / "missing" / "o.png", _rgb())
    with pytest.raises(FcnError, match="HxWx3 uint8"):
        write_rgb_png(tmp_path / "o.png", _rgb().astype(np.float32))
    assert list(tmp_path.iterdir()) == []
    write_rgb_png(tmp_path / "o.png", _rgb())
    assert np.array_equal(np.asarray(Image.open(tmp_path / "o.png")), _rgb())
