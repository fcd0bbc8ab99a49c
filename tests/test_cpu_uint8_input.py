"""Pixels in (fcn-export --input uint8): uint8 (N, H, W, 3) RGB input with the normalisation inside
the graph; the Segmenter runs it with a view for pre-processing and gives exactly the labels of
today's float path."""

from __future__ import annotations

import json

import numpy as np
import pytest

from runtime_models import make_tiny_onnx, random_image, tiny_info

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import fcn_deploy  # noqa: E402
from fcn_deploy.errors import FcnError  # noqa: E402
from fcn_deploy.export.onnx_export import uint8_input  # noqa: E402

BACKENDS = ["onnxruntime"] + (["openvino"] if fcn_deploy.backends.is_installed("openvino") else [])


def _pixels_version(src, dst, info):
    m = uint8_input(onnx.load(str(src)), info)
    m.metadata_props.add(key="fcn_deploy.input_format", value=json.dumps("uint8_nhwc"))
    onnx.checker.check_model(m, full_check=True)
    onnx.save(m, str(dst))
    return dst


@pytest.mark.parametrize("order", ["RGB", "BGR"])
@pytest.mark.parametrize("kind", ["logits", "labels"])
def test_tiny_pixels_model_gives_the_float_paths_labels(tmp_path, order, kind):
    info = tiny_info(7, channel_order=order, output=kind)
    make_tiny_onnx(tmp_path / "f.onnx", info, seed=3)
    _pixels_version(tmp_path / "f.onnx", tmp_path / "u.onnx", info)
    m = onnx.load(str(tmp_path / "u.onnx"))
    t = m.graph.input[0].type.tensor_type
    assert t.elem_type == onnx.TensorProto.UINT8
    assert [d.dim_param or d.dim_value for d in t.shape.dim] == ["N", "H", "W", 3]
    imgs = [random_image(37, 53, seed=s) for s in range(3)] + [random_image(20, 30, seed=9)]
    for backend in BACKENDS:
        with fcn_deploy.load(tmp_path / "f.onnx", backend=backend) as f, \
                fcn_deploy.load(tmp_path / "u.onnx", backend=backend) as u:
            assert u.pixels_in and not f.pixels_in
            for a, b in zip(f.segment(imgs), u.segment(imgs)):
                assert np.array_equal(a.labels, b.labels), backend
            # BGR frames (OpenCV) and confidence work the same way.
            bgr = imgs[0][..., ::-1].copy()
            assert np.array_equal(f.segment(bgr, channel_order="BGR").labels, u.segment(bgr, channel_order="BGR").labels)
            if kind == "logits":
                ca = f.segment(imgs[0], return_confidence=True).confidence
                cb = u.segment(imgs[0], return_confidence=True).confidence
                assert np.array_equal(ca, cb)
    # The model's input is bit-identical to the runtime's float pre-processing.
    from fcn_deploy.image import preprocess

    s = ort.InferenceSession(str(tmp_path / "u.onnx"))
    g = onnx.load(str(tmp_path / "u.onnx"))
    g.graph.output.insert(0, onnx.helper.make_tensor_value_info("input__normalized", onnx.TensorProto.FLOAT, None))
    s = ort.InferenceSession(g.SerializeToString())
    x = s.run(["input__normalized"], {"input": imgs[0][None]})[0]
    assert np.array_equal(x, preprocess([imgs[0]], info))


def test_preprocessing_is_a_view_and_labels_a_copy(tmp_path):
    info = tiny_info(5, output="labels")
    make_tiny_onnx(tmp_path / "f.onnx", info)
    _pixels_version(tmp_path / "f.onnx", tmp_path / "u.onnx", info)
    img = random_image(24, 32)
    with fcn_deploy.load(tmp_path / "u.onnx", backend="onnxruntime") as u:
        x = u.preprocess([img], (24, 32))
        assert x.shape == (1, 24, 32, 3) and x.dtype == np.uint8 and np.shares_memory(x, img)
        assert u.preprocess([img, img], (24, 32)).shape == (2, 24, 32, 3)
        assert u.profile.min[1] == 3  # the profile stays NCHW
        y, _ = u.infer(x)
        r = u.postprocess(y, 0, (24, 32), img)
        assert r.labels.dtype == np.uint8 and not np.shares_memory(r.labels, y)


def test_unknown_input_format_and_bad_shapes_are_refused(tmp_path):
    info = tiny_info(5)
    make_tiny_onnx(tmp_path / "f.onnx", info)
    m = uint8_input(onnx.load(str(tmp_path / "f.onnx")), info)
    m.metadata_props.add(key="fcn_deploy.input_format", value=json.dumps("uint8_nchw_yuv"))
    onnx.save(m, str(tmp_path / "odd.onnx"))
    with pytest.raises(FcnError, match="input format .*uint8_nchw_yuv.* is not one this runtime knows"):
        fcn_deploy.load(tmp_path / "odd.onnx", backend="onnxruntime")
    with pytest.raises(FcnError, match="not float"):
        uint8_input(m, info)


@pytest.fixture(scope="module")
def r18():
    from export_models import trained_model

    return trained_model("fcn8s", "resnet18", steps=2, hw=(48, 48))


def test_export_option_fp32_and_int8(tmp_path, r18):
    from PIL import Image

    from fcn_deploy.export.inputs import random_rgb
    from fcn_deploy.export.onnx_export import export_onnx
    from fcn_deploy.export.precision import CalibConfig

    # fp32 labels: verified at export (float graph vs PyTorch, then uint8 graph vs float graph).
    u = export_onnx(r18, tmp_path / "u.onnx", output_kind="labels", input_kind="uint8", verify_sizes=[(41, 57)])
    f = export_onnx(r18, tmp_path / "f.onnx", output_kind="labels", verify=False)
    meta = {p.key: p.value for p in onnx.load(str(u)).metadata_props}
    assert json.loads(meta["fcn_deploy.input_format"]) == "uint8_nhwc" and meta["fcn_deploy.output"] == "labels"
    imgs = list(random_rgb(3, 41, 57, seed=4))
    with fcn_deploy.load(u, backend="onnxruntime") as a, fcn_deploy.load(f, backend="onnxruntime") as b:
        for x, y in zip(a.segment(imgs), b.segment(imgs)):
            assert np.array_equal(x.labels, y.labels)
    # int8 (cpu layout): calibrated on the float graph, pixels-in front added after.
    d = tmp_path / "calib"
    d.mkdir()
    for i, img in enumerate(random_rgb(4, 48, 64, seed=3)):
        Image.fromarray(img).save(d / f"i{i}.png")
    cfg = CalibConfig(data=d, format="images", images=4, method="minmax", size=(48, 64), target="cpu")
    qu = export_onnx(r18, tmp_path / "qu.onnx", precision="int8", calib=cfg, input_kind="uint8", verify_sizes=[(48, 64)])
    qf = export_onnx(r18, tmp_path / "qf.onnx", precision="int8", calib=cfg, verify=False)
    assert fcn_deploy.backends.file_layout(qu) == ("int8", "cpu")
    with fcn_deploy.load(qu, backend="onnxruntime") as a, fcn_deploy.load(qf, backend="onnxruntime") as b:
        for x, y in zip(a.segment(imgs), b.segment(imgs)):
            assert np.array_equal(x.labels, y.labels)
    with pytest.raises(FcnError, match="unknown input 'rgb'"):
        export_onnx(r18, tmp_path / "x.onnx", input_kind="rgb")
