"""mmseg FCN import: fcn-import -> fcn-export -> onnxruntime equals mmsegmentation's own model.

The references come from mmsegmentation 1.2.2's own code (mmcv-lite 2.1.0, mmengine 0.10.7,
torch 2.14.1, in a separate venv: tests/reference/make_mmseg_reference.py; its docstring says
how mmcv's compiled ops, which the FCN never calls, were stubbed). The committed fixtures are
``fcn_r18b-d8`` (mmseg ``ResNet`` depth 18, 0.x ``meta`` with CLASSES/PALETTE/config) and
``fcn_r50-d8`` (``ResNetV1c`` depth 50, deep stem, 1.x ``meta`` with dataset_meta/cfg) at
reduced width (mmseg's ``base_channels``/``stem_channels``), saved as mmseg's runners save
them. The full-width models (fcn_r18b-d8, fcn_r50b-d8, fcn_r50-d8, 19 classes) are checked by
``test_full_width`` when FCN_DEPLOY_MMSEG_FULL names the folder of the script's ``full`` mode.
"""

from __future__ import annotations

import os
import re
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
MEAN = np.array([123.675, 116.28, 103.53], np.float32).reshape(1, 3, 1, 1)
STD = np.array([58.395, 57.12, 57.375], np.float32).reshape(1, 3, 1, 1)


def normalize(u8):  # make_mmseg_reference.normalize
    return (u8.astype(np.float32) - MEAN) / STD


def compare(ours, ref):
    return float(np.linalg.norm(ours - ref) / np.linalg.norm(ref)), float((ours.argmax(1) == ref.argmax(1)).mean())


def _check(onnx_path, ref, cases):
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    out = []
    for key, batch in cases:
        (got,) = sess.run(["logits"], {"input": normalize(ref[f"image_{key}"][:batch])})
        want = ref[f"out_{key}"][:batch]
        assert got.shape == want.shape
        rel, agree = compare(got, want)
        out.append((key, batch, rel, agree))
        assert rel <= 1e-5 and agree >= 0.9999, (key, batch, rel, agree)
    return out


@pytest.mark.parametrize("name,backbone,style", [("mmseg_fcn_r18b_small", "resnet18", "0.x"),
                                                  ("mmseg_fcn_r50v1c_small", "resnet50v1c", "1.x")])
def test_small_mmseg_fcn_matches_mmseg(tmp_path, capsys, name, backbone, style):
    ref = np.load(DATA / f"{name}_ref.npz")
    ck, onnx_path = tmp_path / "m.pt", tmp_path / "m.onnx"
    assert import_main([str(DATA / f"{name}.pth"), str(ck)]) == 0
    printed = capsys.readouterr().out
    assert "recognised: mmseg checkpoint" in printed and "with meta" in printed
    assert "dropped the auxiliary head" in printed
    c = load_checkpoint(ck)
    assert c["model"]["arch"] == "mmseg-fcn" and c["model"]["backbone"] == backbone
    info = c["info"]
    assert info["class_names"] == ["sky", "road", "car"]  # from meta (0.x CLASSES / 1.x dataset_meta)
    assert info["palette"][:3] == [[0, 0, 0], [37, 91, 151], [74, 182, 46]]
    assert info["mean"] == [123.675, 116.28, 103.53] and info["std"] == [58.395, 57.12, 57.375] and info["scale"] == 1.0
    assert c["import"]["unwrapped"] == ["state_dict"] and "meta" in c["import"]["wrapper_keys"]
    assert export_main([str(ck), str(onnx_path), "--no-verify"]) == 0
    _check(onnx_path, ref, [("97x131", 2), ("97x131", 1), ("33x47", 1)])


def test_wrong_basic_block_dilation_would_fail(tmp_path):
    """The check has teeth: torchvision-style dilated conv2 in mmseg's BasicBlock (mmseg keeps
    conv2 undilated) changes the logits."""
    ref = np.load(DATA / "mmseg_fcn_r18b_small_ref.npz")
    assert import_main([str(DATA / "mmseg_fcn_r18b_small.pth"), str(tmp_path / "m.pt")]) == 0
    model, _, _ = model_from_checkpoint(tmp_path / "m.pt")
    for blk in list(model.backbone.layer3)[1:] + list(model.backbone.layer4):
        d = blk.conv1.dilation
        blk.conv2.dilation, blk.conv2.padding = d, d
    with torch.no_grad():
        y = model(torch.from_numpy(normalize(ref["image_97x131"]))).numpy()
    assert compare(y, ref["out_97x131"])[0] > 1e-3


def _resave(tmp_path, name, mutate):
    ck = torch.load(DATA / f"{name}.pth", weights_only=True)
    mutate(ck)
    p = tmp_path / "changed.pth"
    torch.save(ck, p)
    return p


def _one_line(capsys, *frags):
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    for f in frags:
        assert f in err, err


def _d16(t):  # the fcn-d6_r50-d16 settings
    t = re.sub(r"dilations=\(\s*1,\s*1,\s*2,\s*4,?\s*\)", "dilations=(1, 1, 1, 2)", t)
    return re.sub(r"strides=\(\s*1,\s*2,\s*1,\s*1,?\s*\)", "strides=(1, 2, 2, 1)", t)


@pytest.mark.parametrize("edit,frag", [
    (_d16, "backbone dilations (1,1,1,2), not D8's (1, 1, 2, 4); backbone strides (1,2,2,1)"),
    (lambda t: t.replace("type='ResNetV1c'", "type='ResNetV1d'"), "backbone type ResNetV1d"),
    # the decode head's num_convs=2 (the auxiliary head has num_convs=1)
    (lambda t: t.replace("num_convs=2,", "num_convs=2, dilation=6,", 1), "decode head dilation 6"),
    (lambda t: t.replace("type='FCNHead'),\n    test_cfg", "type='PSPHead'),\n    test_cfg"), "decode head PSPHead"),
])
def test_config_variants_refused_with_the_reason(tmp_path, capsys, edit, frag):
    def mutate(ck):
        ck["meta"]["cfg"] = edit(ck["meta"]["cfg"])
    src = _resave(tmp_path, "mmseg_fcn_r50v1c_small", mutate)
    out = tmp_path / "o.pt"
    assert import_main([str(src), str(out)]) == 2
    _one_line(capsys, "cannot be imported as the D8 FCN", frag)
    assert not out.exists()


def test_meta_class_count_mismatch(tmp_path, capsys):
    def mutate(ck):
        ck["meta"]["CLASSES"] = ("a", "b")
    src = _resave(tmp_path, "mmseg_fcn_r18b_small", mutate)
    assert import_main([str(src), str(tmp_path / "o.pt")]) == 2
    _one_line(capsys, "mmseg meta names 2 classes, the weights have 3")
    assert not (tmp_path / "o.pt").exists()


def test_psp_head_refused(tmp_path, capsys):
    def mutate(ck):
        ck["state_dict"]["decode_head.psp_modules.0.1.conv.weight"] = torch.zeros(8, 64, 1, 1)
    src = _resave(tmp_path, "mmseg_fcn_r18b_small", mutate)
    assert import_main([str(src), str(tmp_path / "o.pt")]) == 2
    _one_line(capsys, "not an FCNHead")


def test_no_config_is_assumed_d8_with_a_note(tmp_path, capsys):
    def mutate(ck):
        del ck["meta"]["config"]
    src = _resave(tmp_path, "mmseg_fcn_r18b_small", mutate)
    assert import_main([str(src), str(tmp_path / "o.pt")]) == 0
    assert "assumed fcn_r*-d8 settings" in capsys.readouterr().out


FULL = os.environ.get("FCN_DEPLOY_MMSEG_FULL")


@pytest.mark.slow
@pytest.mark.skipif(not FULL, reason="set FCN_DEPLOY_MMSEG_FULL to the folder of make_mmseg_reference.py full")
@pytest.mark.parametrize("name", ["mmseg_fcn_r18b-d8", "mmseg_fcn_r50b-d8", "mmseg_fcn_r50-d8"])
def test_full_width(tmp_path, name):
    ref = np.load(Path(FULL) / f"{name}_ref.npz")
    ck, onnx_path = tmp_path / "m.pt", tmp_path / "m.onnx"
    assert import_main([str(Path(FULL) / f"{name}.pth"), str(ck)]) == 0
    assert export_main([str(ck), str(onnx_path), "--no-verify"]) == 0
    for key, batch, rel, agree in _check(onnx_path, ref, [(k, b) for k in ("97x131", "360x480", "500x375") for b in (1, 2)]):
        print(f"{name} {key} batch {batch}: rel_l2 {rel:.2e} agreement {agree * 100:.4f}%")
