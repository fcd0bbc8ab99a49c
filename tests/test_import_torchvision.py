"""torchvision FCN import: fcn-import -> fcn-export -> onnxruntime equals torchvision's own model.

The reference outputs come from torchvision's own code (torchvision 0.29.1 / torch 2.14.1 in a
separate venv: tests/reference/make_torchvision_reference.py), since torchvision cannot be
installed beside this project's torch. The committed fixture (tests/data/torchvision_fcn_small*,
2 MB) is a small configuration of torchvision's classes (Bottleneck with expansion 1,
blocks 1/1/1/1, width_per_group 4, replace_stride_with_dilation [False, True, True],
FCNHead(512, 3)) saved with torchvision's ``state_dict()``; the full ``fcn_resnet50`` reference
(135 MB, not committed) is checked by ``test_full_fcn_resnet50`` when FCN_DEPLOY_TV_FULL names
the folder the script's ``full`` mode wrote.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from fcn_deploy.export.cli import main as export_main  # noqa: E402
from fcn_deploy.training.checkpoint import load_checkpoint, model_from_checkpoint  # noqa: E402
from fcn_deploy.training.importers.cli import main as import_main  # noqa: E402

DATA = Path(__file__).parent / "data"
SMALL = DATA / "torchvision_fcn_small.pth"
SMALL_REF = DATA / "torchvision_fcn_small_ref.npz"
MEAN = np.array([0.485, 0.456, 0.406], np.float32).reshape(1, 3, 1, 1)
STD = np.array([0.229, 0.224, 0.225], np.float32).reshape(1, 3, 1, 1)


def normalize(u8):  # the same float32 numpy ops as make_torchvision_reference.normalize
    return ((u8.astype(np.float32) / np.float32(255.0)) - MEAN) / STD


def compare(ours, ref):
    rel = float(np.linalg.norm(ours - ref) / np.linalg.norm(ref))
    agree = float((ours.argmax(1) == ref.argmax(1)).mean())
    return rel, agree


def _import_export(src, tmp_path, *extra):
    ck, onnx_path = tmp_path / "m.pt", tmp_path / "m.onnx"
    assert import_main([str(src), str(ck), *extra]) == 0
    assert export_main([str(ck), str(onnx_path), "--no-verify"]) == 0
    return ck, onnx_path


def _check_against(onnx_path, ref, cases):
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    results = []
    for key, batch in cases:
        u8, want = ref[f"image_{key}"][:batch], ref[f"out_{key}"][:batch]
        (got,) = sess.run(["logits"], {"input": normalize(u8)})
        assert got.shape == want.shape
        rel, agree = compare(got, want)
        results.append((key, batch, rel, agree))
        assert rel <= 1e-5 and agree >= 0.9999, (key, batch, rel, agree)
    return results


def test_small_torchvision_fcn_matches_torchvision(tmp_path, capsys):
    ref = np.load(SMALL_REF)
    ck, onnx_path = _import_export(SMALL, tmp_path)
    printed = capsys.readouterr().out
    assert "recognised: torchvision FCN" in printed and "--from torchvision" in printed
    c = load_checkpoint(ck)
    assert c["model"]["arch"] == "tv-fcn" and c["model"]["backbone"] == "resnet-custom"
    assert c["model"]["build_options"] == {"blocks": [1, 1, 1, 1], "width_per_group": 4, "expansion": 1}
    assert c["import"]["source_format"] == "torchvision" and len(c["import"]["sha256"]) == 64
    assert c["info"]["channel_order"] == "RGB" and c["info"]["extra"]["import_format"] == "torchvision"
    _check_against(onnx_path, ref, [("97x131", 2), ("97x131", 1), ("33x47", 1)])
    # The PyTorch model itself too (float16-stored weights came back exactly).
    model, _, _ = model_from_checkpoint(ck)
    with torch.no_grad():
        y = model(torch.from_numpy(normalize(ref["image_97x131"]))).numpy()
    rel, agree = compare(y, ref["out_97x131"])
    assert rel <= 1e-5 and agree >= 0.9999


def test_a_wrong_layout_would_fail(tmp_path):
    """The parity check has teeth: the same weights with torchvision's stride instead of
    dilation in layer4 (output stride 16) give different logits."""
    ref = np.load(SMALL_REF)
    ck = tmp_path / "m.pt"
    assert import_main([str(SMALL), str(ck)]) == 0
    model, _, _ = model_from_checkpoint(ck)
    for blk in model.backbone.layer4:
        blk.conv2.dilation, blk.conv2.padding = (1, 1), (1, 1)
    model.backbone.layer4[0].conv2.stride = (2, 2)
    model.backbone.layer4[0].downsample[0].stride = (2, 2)
    with torch.no_grad():
        y = model(torch.from_numpy(normalize(ref["image_97x131"]))).numpy()
    rel, _ = compare(y, ref["out_97x131"])
    assert rel > 1e-2


def test_aux_head_dropped_with_a_note(tmp_path, capsys):
    from fcn_deploy.training.models_torchvision import FCNHead

    sd = torch.load(SMALL, weights_only=True)
    aux = FCNHead(256, 3).state_dict()
    sd.update({f"aux_classifier.{k}": v for k, v in aux.items()})
    src = tmp_path / "with_aux.pth"
    torch.save(sd, src)
    assert import_main([str(src), str(tmp_path / "m.pt"), "--classes", str(_names(tmp_path))]) == 0
    err = capsys.readouterr().out
    assert "with aux head" in err and "dropped the auxiliary head" in err
    c = load_checkpoint(tmp_path / "m.pt")
    assert not any(k.startswith("aux") for k in c["state_dict"])
    assert c["info"]["class_names"] == ["sky", "road", "car"]
    assert any("auxiliary" in n for n in c["import"]["notes"])


def _names(tmp_path):
    p = tmp_path / "names.txt"
    p.write_text("# three classes\nsky\nroad\n\ncar\n")
    return p


def test_voc_defaults_for_21_classes(tmp_path):
    """21 classes: torchvision's VOC categories, RGB [0,1], ImageNet mean/std by default."""
    from fcn_deploy.training.registry import build_model

    m = build_model("tv-fcn", "resnet-custom", 21, blocks=[1, 1, 1, 1], width_per_group=4, expansion=1)
    torch.save(m.state_dict(), tmp_path / "v.pth")
    assert import_main([str(tmp_path / "v.pth"), str(tmp_path / "m.pt")]) == 0
    info = load_checkpoint(tmp_path / "m.pt")["info"]
    assert info["class_names"][0] == "__background__" and info["class_names"][-1] == "tvmonitor"
    assert info["mean"] == [0.485, 0.456, 0.406] and info["std"] == [0.229, 0.224, 0.225]
    assert abs(info["scale"] - 1 / 255) < 1e-12 and info["channel_order"] == "RGB"
    # --input-convention overrides by name
    assert import_main([str(tmp_path / "v.pth"), str(tmp_path / "c.pt"), "--input-convention", "caffe"]) == 0
    info = load_checkpoint(tmp_path / "c.pt")["info"]
    assert info["channel_order"] == "BGR" and info["std"] == [1.0, 1.0, 1.0] and info["scale"] == 1.0


def test_resnet50_layout_names_equal_torchvision():
    """fcn_resnet50's parameter count (torchvision's FCN_ResNet50_Weights meta: 35,322,218 with
    the aux head, which is not built here) and its key names."""
    from fcn_deploy.training.registry import build_model

    m = build_model("tv-fcn", "resnet50", 21)
    n = sum(p.numel() for p in m.parameters())
    assert n == 35_322_218 - (1024 * 256 * 9 + 2 * 256 + 256 * 21 + 21)
    keys = set(m.state_dict())
    assert {"backbone.layer3.5.conv3.weight", "backbone.layer4.2.bn3.running_var", "classifier.4.bias",
            "backbone.layer1.0.downsample.1.weight"} <= keys
    assert m.backbone.layer3[0].conv2.dilation == (1, 1) and m.backbone.layer3[1].conv2.dilation == (2, 2)
    assert m.backbone.layer4[0].conv2.dilation == (2, 2) and m.backbone.layer4[2].conv2.dilation == (4, 4)
    assert build_model("tv-fcn", "resnet101", 2).backbone.layer3[22].conv2.dilation == (2, 2)


def test_bilinear_head_shift_is_what_the_docstring_says():
    """align_corners=False from a stride-8 map whose pixel j sits on input pixel 8j samples
    feature coordinate (i - 3.5) / 8 at output pixel i (H = 8h): a 3.5-pixel shift."""
    import torch.nn.functional as F

    h = 12
    ramp = torch.arange(h, dtype=torch.float32).view(1, 1, h, 1).expand(1, 1, h, 4)
    up = F.interpolate(ramp, size=(8 * h, 4), mode="bilinear", align_corners=False)[0, 0, :, 0].numpy()
    i = np.arange(8, 8 * h - 8)
    np.testing.assert_allclose(up[i], (i - 3.5) / 8, atol=1e-6)


FULL = os.environ.get("FCN_DEPLOY_TV_FULL")


@pytest.mark.slow
@pytest.mark.skipif(not FULL, reason="set FCN_DEPLOY_TV_FULL to the folder of make_torchvision_reference.py full")
def test_full_fcn_resnet50(tmp_path, capsys):
    src = Path(FULL) / "torchvision_fcn_resnet50.pth"
    ref = np.load(Path(FULL) / "torchvision_fcn_resnet50_ref.npz")
    ck, onnx_path = _import_export(src, tmp_path)
    err = capsys.readouterr().out
    assert "dropped the auxiliary head" in err and "resnet50 backbone, 21 classes, with aux head" in err
    results = _check_against(onnx_path, ref, [(k, b) for k in ("97x131", "360x480", "500x375") for b in (1, 2)])
    for key, batch, rel, agree in results:
        print(f"fcn_resnet50 {key} batch {batch}: rel_l2 {rel:.2e} agreement {agree * 100:.4f}%")
