"""Comparison panels (fcn_deploy.panels, fcn-eval --panels): layout, colours, legend, the
hatching of disagreeing pixels, upscaling of small images, and the CLI."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from fcn_deploy.errors import FcnError
from fcn_deploy.palette import CAMVID_CLASSES, CAMVID_PALETTE, overlay
from fcn_deploy.panels import PAD, comparison_panel


def _case(h=40, w=60):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    truth = np.zeros((h, w), np.int64)
    truth[:, w // 2:] = 3
    truth[:5] = 11  # void
    pred = np.zeros((h, w), np.uint8)
    pred[:, w // 3:] = 3
    return img, truth, pred


def _tile(panel, j, th, tw, title_h):
    x0 = PAD + j * (tw + PAD)
    return panel[title_h: title_h + th, x0: x0 + tw]


def test_tiles_hold_image_truth_prediction_overlay_upscaled():
    img, truth, pred = _case()
    p = comparison_panel(img, truth, pred, CAMVID_PALETTE, CAMVID_CLASSES, ignore_index=11, min_height=200)
    k = 5  # ceil(200 / 40)
    th, tw = 40 * k, 60 * k
    assert p.shape[1] == 4 * tw + 5 * PAD
    # Find the tiles' top: the first row where the image tile starts (title band above it).
    up = np.repeat(np.repeat(img, k, 0), k, 1)
    title_h = next(y for y in range(p.shape[0] - th) if np.array_equal(p[y, PAD: PAD + tw], up[0]))
    np.testing.assert_array_equal(_tile(p, 0, th, tw, title_h), up)
    gt = _tile(p, 1, th, tw, title_h)
    assert tuple(gt[0, 0]) == (0, 0, 0)  # void row
    assert tuple(gt[-1, 0]) == CAMVID_PALETTE[0] and tuple(gt[-1, -1]) == CAMVID_PALETTE[3]
    pr = _tile(p, 2, th, tw, title_h)
    assert tuple(pr[0, 0]) == CAMVID_PALETTE[0] and tuple(pr[0, -1]) == CAMVID_PALETTE[3]
    ov = _tile(p, 3, th, tw, title_h)
    np.testing.assert_array_equal(ov, np.repeat(np.repeat(overlay(img, pred, CAMVID_PALETTE, 0.5), k, 0), k, 1))
    # The legend below the tiles shows every class colour as a swatch.
    legend = p[title_h + th:]
    for c in CAMVID_PALETTE:
        assert (legend == np.array(c, np.uint8)).all(-1).any(), c


def test_second_model_disagreement_hatched_and_counted():
    img, truth, pred = _case()
    second = pred.copy()
    second[20:30, 0:10] = 8  # 100 pixels differ
    p = comparison_panel(img, truth, pred, CAMVID_PALETTE, CAMVID_CLASSES, second=second, titles=("fp32", "int8"),
                         min_height=40)
    th, tw = 40, 60
    assert p.shape[1] == 5 * tw + 6 * PAD
    title_h = next(y for y in range(p.shape[0] - th) if np.array_equal(p[y, PAD: PAD + tw], img[0]))
    t = _tile(p, 3, th, tw, title_h)
    block = t[20:30, 0:10]
    assert set(map(tuple, block.reshape(-1, 3))) == {(0, 0, 0), (255, 255, 255)}  # hatched
    np.testing.assert_array_equal(t[0:20], _tile(p, 2, th, tw, title_h)[0:20])  # agreeing pixels: same colours


def test_bad_shapes_refused():
    img, truth, pred = _case()
    with pytest.raises(FcnError, match="ground truth"):
        comparison_panel(img, truth[:-1], pred, CAMVID_PALETTE, CAMVID_CLASSES)
    with pytest.raises(FcnError, match="HxWx3 uint8"):
        comparison_panel(img.astype(np.float32), truth, pred, CAMVID_PALETTE, CAMVID_CLASSES)


def test_fcn_eval_panels_cli(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    from fcn_deploy.benchmarks.evaluate import main
    from runtime_models import make_tiny_onnx, tiny_info

    # A folders dataset of 3 small images with masks; two tiny models with different weights.
    root = tmp_path / "data"
    (root / "images" / "val").mkdir(parents=True)
    (root / "masks" / "val").mkdir(parents=True)
    info = tiny_info(5)
    for i in range(3):
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(root / "images" / "val" / f"v{i}.png")
        Image.fromarray(np.random.default_rng(i).integers(0, 5, (24, 32), dtype=np.uint8)).save(root / "masks" / "val" / f"v{i}.png")
    (root / "classes.txt").write_text("\n".join(info.class_names) + "\n")
    make_tiny_onnx(tmp_path / "a.onnx", info, seed=0)
    make_tiny_onnx(tmp_path / "b.onnx", info, seed=1)
    rc = main(["--model", str(tmp_path / "a.onnx"), "--data", str(root), "--format", "folders", "--split", "val",
               "--panels", str(tmp_path / "panels"), "--panels-limit", "2", "--panels-compare", str(tmp_path / "b.onnx"), "-q"])
    out = capsys.readouterr().out
    assert rc == 0, out
    files = sorted((tmp_path / "panels").iterdir())
    assert [f.name for f in files] == ["panel_0000.png", "panel_0001.png"]
    im = np.asarray(Image.open(files[0]))
    assert im.shape[0] >= 360  # 24 px images upscaled to be seen
    assert im.shape[1] > 5 * 32 * 15  # five tiles side by side
    assert "wrote 2 comparison panel(s)" in out
    rc = main(["--model", str(tmp_path / "a.onnx"), "--data", str(root), "--format", "folders",
               "--panels-compare", str(tmp_path / "b.onnx")])
    assert rc == 2 and "needs --panels" in capsys.readouterr().err
