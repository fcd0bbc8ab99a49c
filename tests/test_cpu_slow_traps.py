"""No slow traps: every precision file the export writes, opened with backend="auto" on an x86 CPU,
either is not a pairing known to be slower than the fp32 file, or the runtime says so in one
line with the fix (or, with OpenVINO installed, runs it there instead)."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from export_models import trained_model

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

import fcn_deploy  # noqa: E402
from fcn_deploy import backends  # noqa: E402
from fcn_deploy.export.inputs import random_rgb  # noqa: E402
from fcn_deploy.export.onnx_export import export_onnx  # noqa: E402
from fcn_deploy.export.precision import CalibConfig  # noqa: E402

INT8_HINT = ("this int8 file uses the TensorRT layout; onnxruntime CPU runs it slower than fp32: use OpenVINO "
             "(backend='openvino', pip install openvino) or export with --int8-target cpu")
FP16_HINT = ("this fp16 file runs slower than the fp32 file on onnxruntime CPU (no float16 kernels: float32 "
             "between casts): use the fp32 file, or OpenVINO (backend='openvino', pip install openvino)")
X86 = backends.cpu_vendor() in backends.X86_VENDORS


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """One file per precision / int8 layout the export writes, from a tiny-trained ResNet-18 FCN-8s."""
    from PIL import Image

    d = tmp_path_factory.mktemp("traps")
    calib_dir = d / "calib"
    calib_dir.mkdir()
    for i, img in enumerate(random_rgb(4, 48, 64, seed=3)):
        Image.fromarray(img).save(calib_dir / f"img{i}.png")
    src = trained_model("fcn8s", "resnet18", steps=2, hw=(48, 48))
    calib = dict(data=calib_dir, format="images", images=4, method="minmax", size=(48, 64))
    out = {
        "fp32": export_onnx(src, d / "fp32.onnx", verify=False),
        "fp16": export_onnx(src, d / "fp16.onnx", precision="fp16", verify=False),
        "int8-tensorrt": export_onnx(src, d / "int8trt.onnx", precision="int8", calib=CalibConfig(**calib), verify=False),
        "int8-cpu": export_onnx(src, d / "int8cpu.onnx", precision="int8", calib=CalibConfig(**calib, target="cpu"),
                                verify=False),
    }
    return out


SLOW = {"fp32": None, "fp16": FP16_HINT, "int8-tensorrt": INT8_HINT, "int8-cpu": None}


def _hint_lines(caplog, name):
    return [r for r in caplog.records if r.name == "fcn_deploy.backends" and name in r.getMessage()]


def test_export_records_the_int8_target(files):
    for kind, layout in (("int8-tensorrt", "tensorrt"), ("int8-cpu", "cpu")):
        meta = {p.key: p.value for p in onnx.load(str(files[kind])).metadata_props}
        assert json.loads(meta["fcn_deploy.int8_target"]) == layout
        assert backends.file_layout(files[kind]) == ("int8", layout)
    assert "fcn_deploy.int8_target" not in {p.key for p in onnx.load(str(files["fp32"])).metadata_props}
    assert backends.file_layout(files["fp32"]) == ("fp32", None)
    assert backends.file_layout(files["fp16"]) == ("fp16", None)
    # A runtime that does not know the key still reads the file's ModelInfo.
    assert fcn_deploy.modelinfo.ModelInfo.from_metadata(
        {p.key: p.value for p in onnx.load(str(files["int8-cpu"])).metadata_props}).precision == "int8"


def test_old_int8_files_are_detected_from_the_graph(files, tmp_path):
    for kind, layout in (("int8-tensorrt", "tensorrt"), ("int8-cpu", "cpu")):
        m = onnx.load(str(files[kind]))
        keep = [(p.key, p.value) for p in m.metadata_props if p.key != "fcn_deploy.int8_target"]
        del m.metadata_props[:]
        for k, v in keep:
            m.metadata_props.add(key=k, value=v)
        old = tmp_path / f"old-{kind}.onnx"
        onnx.save(m, str(old))
        assert backends.file_layout(old) == ("int8", layout)


def test_hint_text_exactly_for_the_slow_pairings(files):
    for kind, path in files.items():
        layout = backends.file_layout(path)
        for vendor in ("amd", "intel"):
            hint = backends.ort_cpu_hint(path, layout=layout, vendor=vendor)
            assert hint == (f"{path.name}: {SLOW[kind]}" if SLOW[kind] else None), kind
        assert backends.ort_cpu_hint(path, layout=layout, vendor="arm") is None  # ARM: int8 QDQ fuses there


@pytest.mark.skipif(not X86, reason="the slow pairings are x86 facts")
@pytest.mark.parametrize("kind", list(SLOW))
def test_auto_without_openvino_warns_once_for_slow_files(files, kind, caplog, monkeypatch):
    real = backends.is_installed
    monkeypatch.setattr(backends, "is_installed", lambda m: False if m == "openvino" else real(m))
    with caplog.at_level(logging.INFO, logger="fcn_deploy.backends"):
        seg = fcn_deploy.load(files[kind])
    try:
        assert seg.backend == "onnxruntime"
        lines = _hint_lines(caplog, files[kind].name)
        if SLOW[kind]:
            assert [(r.levelno, r.getMessage()) for r in lines] == [(logging.WARNING, f"{files[kind].name}: {SLOW[kind]}")]
        else:
            assert lines == []
        labels = seg.segment(random_rgb(1, 40, 56, seed=1)[0]).labels
        assert labels.shape == (40, 56)
    finally:
        seg.close()


@pytest.mark.skipif(not X86, reason="the slow pairings are x86 facts")
@pytest.mark.parametrize("kind", list(SLOW))
def test_auto_with_openvino_runs_slow_files_there(files, kind, caplog):
    pytest.importorskip("openvino")
    with caplog.at_level(logging.INFO, logger="fcn_deploy.backends"):
        seg = fcn_deploy.load(files[kind])
    try:
        lines = _hint_lines(caplog, files[kind].name)
        expected = "openvino" if SLOW[kind] or backends.cpu_vendor() == "intel" else "onnxruntime"
        assert seg.backend == expected
        if SLOW[kind]:
            assert len(lines) == 1 and lines[0].levelno == logging.INFO
            assert "slower than fp32, so backend 'auto' runs it on OpenVINO" in lines[0].getMessage()
        else:
            assert lines == []
    finally:
        seg.close()


@pytest.mark.skipif(not X86, reason="the slow pairings are x86 facts")
def test_explicit_onnxruntime_and_ort_only_options_keep_onnxruntime_with_the_warning(files, caplog):
    for kwargs in ({"backend": "onnxruntime"}, {"providers": ("cpu",)}):
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="fcn_deploy.backends"):
            seg = fcn_deploy.load(files["int8-tensorrt"], **kwargs)
        seg.close()
        assert seg.backend == "onnxruntime"
        assert [r.getMessage() for r in _hint_lines(caplog, "int8trt.onnx")] == [f"int8trt.onnx: {INT8_HINT}"]


def test_choose_backend_rule_with_given_facts():
    choose = backends.choose_backend
    cpu = ["CPUExecutionProvider"]
    gpu = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    trt_int8 = ("int8", "tensorrt")
    kw = dict(ort_installed=True, ort_providers=cpu, vendor="amd")
    assert choose("m.onnx", openvino_installed=True, layout=trt_int8, **kw) == "openvino"
    assert choose("m.onnx", openvino_installed=True, layout=("fp16", None), **kw) == "openvino"
    assert choose("m.onnx", openvino_installed=True, layout=("int8", "cpu"), **kw) == "onnxruntime"
    assert choose("m.onnx", openvino_installed=True, layout=("fp32", None), **kw) == "onnxruntime"
    assert choose("m.onnx", openvino_installed=False, layout=trt_int8, **kw) == "onnxruntime"
    # onnxruntime-only options: no switch (openvino would refuse them).
    assert choose("m.onnx", openvino_installed=True, layout=trt_int8, options=("providers",), **kw) == "onnxruntime"
    assert choose("m.onnx", openvino_installed=True, layout=trt_int8, options=("threads",), **kw) == "openvino"
    # A GPU provider: TensorRT/CUDA run these files natively, nothing to say.
    assert choose("m.onnx", ort_installed=True, ort_providers=gpu, openvino_installed=True, vendor="amd",
                  layout=trt_int8) == "onnxruntime"
    # ARM: onnxruntime fuses int8 QDQ there.
    assert choose("m.onnx", ort_installed=True, ort_providers=cpu, openvino_installed=True, vendor="arm",
                  layout=trt_int8) == "onnxruntime"


def test_fcn_predict_prints_the_hint(files, tmp_path, capsys, monkeypatch):
    if not X86:
        pytest.skip("the slow pairings are x86 facts")
    from PIL import Image

    from fcn_deploy.predict import main

    img = tmp_path / "a.png"
    Image.fromarray(random_rgb(1, 40, 56, seed=2)[0]).save(img)
    real = backends.is_installed
    monkeypatch.setattr(backends, "is_installed", lambda m: False if m == "openvino" else real(m))
    root = logging.getLogger()
    handler = logging.StreamHandler()  # what run_cli's basicConfig installs when nothing else has
    root.addHandler(handler)
    try:
        rc = main(["--model", str(files["int8-tensorrt"]), str(img), "--out", str(tmp_path / "o"), "--no-progress"])
    finally:
        root.removeHandler(handler)
    err = capsys.readouterr().err
    assert rc == 0
    assert err.count(INT8_HINT) == 1
    assert np.asarray(Image.open(tmp_path / "o" / "a.png")).shape == (40, 56)
