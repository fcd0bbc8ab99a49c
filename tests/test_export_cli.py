"""fcn-export / fcn-verify end to end on checkpoints, and every bad-input path: one line, a
non-zero exit, nothing half-written."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from export_models import trained_model

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from fcn_deploy.export.cli import main as export_main  # noqa: E402
from fcn_deploy.export.verify import main as verify_main  # noqa: E402
from fcn_deploy.training.checkpoint import save_checkpoint  # noqa: E402



@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    d = tmp_path_factory.mktemp("ckpt")
    model, info = trained_model("fcn16s", "resnet18", steps=2, hw=(48, 48))
    save_checkpoint(d / "model.pt", model, info)
    other, _ = trained_model("fcn16s", "resnet18", steps=2, hw=(48, 48), seed=5)
    save_checkpoint(d / "other.pt", other, info)
    return d


def _one_line_error(capsys, *fragments):
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    for f in fragments:
        assert f in err, err
    return err


def test_export_then_verify(tmp_path, ckpt, capsys, caplog):
    out = tmp_path / "m.bin"  # any output name: a warning, and the file verified and written
    assert export_main([str(ckpt / "model.pt"), str(out), "--verify-sizes", "41x59"]) == 0
    text = capsys.readouterr().out
    assert "wrote" in text and " s, parity verified" in text and "TensorRT-ready" in text
    assert sum("does not end in .onnx" in r.getMessage() for r in caplog.records) == 1  # once, not per check
    report = tmp_path / "r.json"
    assert verify_main([str(ckpt / "model.pt"), str(out), "--sizes", "33x47,40x64", "--batch", "3", "--json", str(report)]) == 0
    printed = capsys.readouterr().out
    assert "33x47 batch 3 random" in printed and "PASS" in printed
    data = json.loads(report.read_text())
    assert data["passed"] and data["precision"] == "fp32" and len(data["cases"]) == 4
    assert all(c["rel_l2"] <= 1e-5 and c["agreement"] >= 0.9999 for c in data["cases"])


def test_untrained_checkpoint_is_not_called_verified(tmp_path, capsys):
    from fcn_deploy.training.models import build_model

    from export_models import info_for

    ck = tmp_path / "untrained.pt"
    save_checkpoint(ck, build_model("fcn8s", "resnet18", 3), info_for("fcn8s", "resnet18"))
    out = tmp_path / "u.onnx"
    assert export_main([str(ck), str(out), "--verify-sizes", "33x41"]) == 0
    text = capsys.readouterr().out
    assert "parity NOT verified: constant output" in text and "parity verified" not in text
    assert verify_main([str(ck), str(out), "--sizes", "33x41"]) == 1
    text = capsys.readouterr().out
    assert "NOT VERIFIED: constant output" in text and "not verified: constant output" in text


def test_verify_fails_against_other_weights(tmp_path, ckpt, capsys):
    out = tmp_path / "m.onnx"
    assert export_main([str(ckpt / "model.pt"), str(out), "--no-verify"]) == 0
    capsys.readouterr()
    assert verify_main([str(ckpt / "other.pt"), str(out), "--sizes", "33x47"]) == 1
    text = capsys.readouterr().out
    assert "failed: 33x47 batch 1 random" in text and "rel_l2" in text


def test_labels_static_fixed_batch_from_cli(tmp_path, ckpt, capsys):
    out = tmp_path / "l.onnx"
    assert export_main([str(ckpt / "model.pt"), str(out), "--output", "labels", "--static", "48x64", "--batch", "2"]) == 0
    m = onnx.load(str(out))
    assert [d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim] == [2, 3, 48, 64]
    assert verify_main([str(ckpt / "model.pt"), str(out)]) == 0


def test_not_a_checkpoint(tmp_path, capsys):
    f = tmp_path / "notes.pt"
    f.write_text("hello")
    assert export_main([str(f), str(tmp_path / "m.onnx")]) == 2
    _one_line_error(capsys, "not a readable fcn-deploy checkpoint")
    torch.save({"weights": torch.zeros(3)}, tmp_path / "foreign.pt")
    assert export_main([str(tmp_path / "foreign.pt"), str(tmp_path / "m.onnx")]) == 2
    _one_line_error(capsys, "not an fcn-deploy checkpoint")
    assert export_main([str(tmp_path / "missing.pt"), str(tmp_path / "m.onnx")]) == 2
    _one_line_error(capsys, "checkpoint not found")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["foreign.pt", "notes.pt"]


def test_unknown_arch_in_checkpoint(tmp_path, ckpt, capsys):
    c = torch.load(ckpt / "model.pt", weights_only=True)
    c["model"]["arch"] = "fcn4s"
    torch.save(c, tmp_path / "odd.pt")
    assert export_main([str(tmp_path / "odd.pt"), str(tmp_path / "m.onnx")]) == 2
    _one_line_error(capsys, "unknown arch 'fcn4s'", "fcn8s")
    assert not (tmp_path / "m.onnx").exists()


def test_unwritable_or_missing_output(tmp_path, ckpt, capsys):
    assert export_main([str(ckpt / "model.pt"), str(tmp_path / "no" / "m.onnx")]) == 2
    _one_line_error(capsys, "output folder does not exist")
    assert export_main([str(ckpt / "model.pt"), "/proc/fcn-deploy-cli.onnx", "--no-verify"]) == 2
    _one_line_error(capsys, "/proc")
    assert not os.path.exists("/proc/fcn-deploy-cli.onnx")
    assert list(tmp_path.iterdir()) == []


def test_option_errors(tmp_path, ckpt, capsys):
    base = [str(ckpt / "model.pt"), str(tmp_path / "m.onnx")]
    assert export_main(base + ["--precision", "int8"]) == 2
    _one_line_error(capsys, "--calib-data")
    assert export_main(base + ["--batch", "two"]) == 2
    _one_line_error(capsys, "--batch")
    assert export_main(base + ["--static", "64by96"]) == 2
    _one_line_error(capsys, "HxW")
    assert export_main(base + ["--precision", "int8", "--calib-data", str(tmp_path / "none")]) == 2
    _one_line_error(capsys, "calibration data folder not found")
    assert export_main(["--check-trt", "a.onnx", "b.pt"]) == 2
    _one_line_error(capsys, "unrecognized arguments: b.pt (see fcn-export check-trt --help)")
    assert list(tmp_path.iterdir()) == []


def test_int8_camvid_root_without_train_is_one_error_before_exporting(tmp_path, ckpt, capsys):
    from PIL import Image

    root = tmp_path / "camvid"
    for d in ("val", "valannot"):
        (root / d).mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(root / d / "a.png")
    out = tmp_path / "q.onnx"
    argv = [str(ckpt / "model.pt"), str(out), "--precision", "int8", "--calib-data", str(root), "--calib-format", "camvid"]
    assert export_main(argv) == 2
    _one_line_error(capsys, "CamVid train images folder not found", str(root / "train"))
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["camvid"]
    # a folder with no image directly in it (default format "images"): also one line, early
    assert export_main(argv[:-2]) == 2
    _one_line_error(capsys, "no images")


def test_int8_cpu_target_from_cli(tmp_path, ckpt, capsys):
    from PIL import Image

    calib = tmp_path / "calib"
    calib.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(calib / f"{i}.png")
    out = tmp_path / "q.onnx"
    assert export_main([str(ckpt / "model.pt"), str(out), "--precision", "int8", "--calib-data", str(calib),
                        "--int8-target", "cpu", "--no-verify"]) == 0
    text = capsys.readouterr().out
    assert "int8" in text and "NOT TensorRT-ready" in text and "--int8-target cpu" in text  # uint8: CPU only
    assert "error: node" not in text  # the verdict, not a list of every uint8 Q/DQ
    m = onnx.load(str(out))
    zp = {t.name: t.data_type for t in m.graph.initializer}
    assert {zp[n.input[2]] for n in m.graph.node if n.op_type == "QuantizeLinear"} == {onnx.TensorProto.UINT8}


def test_int8_calibration_options_reach_the_exporter(tmp_path, ckpt, capsys, monkeypatch):
    """--calib-percentile / --quantize-stem / --keep-float (repeatable) end up in the CalibConfig;
    defaults: percentile 99.99, stem and head float, nothing else kept float."""
    import fcn_deploy.export.onnx_export as onnx_export
    from fcn_deploy.errors import FcnError
    from PIL import Image

    calib = tmp_path / "calib"
    calib.mkdir()
    Image.new("RGB", (8, 8)).save(calib / "a.png")
    seen = []

    def fake_export(*args, calib=None, **kw):
        seen.append(calib)
        raise FcnError("stop here")

    monkeypatch.setattr(onnx_export, "export_onnx", fake_export)
    base = [str(ckpt / "model.pt"), str(tmp_path / "q.onnx"), "--precision", "int8", "--calib-data", str(calib)]
    assert export_main(base) == 2
    _one_line_error(capsys, "stop here")
    assert export_main(base + ["--calib-percentile", "99.9", "--quantize-stem", "--keep-float", "/inner/score_fr/Conv",
                               "--keep-float", "*/layer4/*"]) == 2
    _one_line_error(capsys, "stop here")
    default, custom = seen
    assert (default.method, default.percentile, default.quantize_stem, default.quantize_head, default.keep_float) == (
        "percentile", 99.99, False, False, ())
    assert (custom.percentile, custom.quantize_stem, custom.keep_float) == (99.9, True, ("/inner/score_fr/Conv", "*/layer4/*"))
    assert export_main(base + ["--calib-percentile", "0"]) == 2
    _one_line_error(capsys, "percentile must be in (0, 100]")


def test_calib_percentile_without_the_percentile_method_warns(tmp_path, ckpt, capsys, monkeypatch, caplog):
    import logging

    import fcn_deploy.export.onnx_export as onnx_export
    from fcn_deploy.errors import FcnError
    from PIL import Image

    calib = tmp_path / "calib"
    calib.mkdir()
    Image.new("RGB", (8, 8)).save(calib / "a.png")

    def fake_export(*args, **kw):
        raise FcnError("stop here")

    monkeypatch.setattr(onnx_export, "export_onnx", fake_export)
    base = [str(ckpt / "model.pt"), str(tmp_path / "q.onnx"), "--precision", "int8", "--calib-data", str(calib)]
    with caplog.at_level(logging.WARNING):
        export_main(base + ["--calib-method", "minmax", "--calib-percentile", "99.9"])
    assert "--calib-percentile is only used with --calib-method percentile" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        export_main(base + ["--calib-percentile", "99.9"])
    assert "--calib-percentile" not in caplog.text
    capsys.readouterr()


def test_int8_keep_float_matching_nothing_is_one_error(tmp_path, ckpt, capsys):
    from PIL import Image

    calib = tmp_path / "calib"
    calib.mkdir()
    Image.new("RGB", (16, 16), (40, 90, 200)).save(calib / "a.png")
    out = tmp_path / "q.onnx"
    assert export_main([str(ckpt / "model.pt"), str(out), "--precision", "int8", "--calib-data", str(calib),
                        "--keep-float", "*/layer9/*", "--no-verify"]) == 2
    _one_line_error(capsys, "'*/layer9/*' matches no node", "/inner/")
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["calib"]


def test_verify_rejects_foreign_and_truncated_onnx(tmp_path, ckpt, capsys):
    good = tmp_path / "m.onnx"
    assert export_main([str(ckpt / "model.pt"), str(good), "--no-verify"]) == 0
    capsys.readouterr()
    data = good.read_bytes()
    (tmp_path / "cut.onnx").write_bytes(data[: len(data) // 3])
    assert verify_main([str(ckpt / "model.pt"), str(tmp_path / "cut.onnx")]) == 2
    _one_line_error(capsys)
    m = onnx.load(str(good))
    del m.metadata_props[:]
    onnx.save(m, tmp_path / "plain.onnx")
    assert verify_main([str(ckpt / "model.pt"), str(tmp_path / "plain.onnx")]) == 2
    _one_line_error(capsys, "no fcn-deploy metadata")


@pytest.mark.timeout(300)
@pytest.mark.slow
def test_full_vgg16_fcn8s_export_time(tmp_path, capsys):
    """The README target: fcn-export of the full VGG16 FCN-8s (random weights) under 60 s."""
    import time

    from export_models import info_for
    from fcn_deploy.training.models import build_model

    model = build_model("fcn8s", "vgg16", 21)
    save_checkpoint(tmp_path / "vgg.pt", model, info_for("fcn8s", "vgg16", 21))
    t = time.perf_counter()
    assert export_main([str(tmp_path / "vgg.pt"), str(tmp_path / "vgg.onnx")]) == 0
    assert time.perf_counter() - t < 60
