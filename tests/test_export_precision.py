"""fp16 and int8 QDQ exports of a tiny-trained ResNet-18 FCN-8s, executed on this CPU."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from export_models import trained_model

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from fcn_deploy.errors import FcnError  # noqa: E402
from fcn_deploy.export.inputs import random_rgb  # noqa: E402
from fcn_deploy.export.onnx_export import export_onnx  # noqa: E402
from fcn_deploy.export.precision import (  # noqa: E402
    CalibConfig, calibration_files, check_qdq, convert_fp16, head_nodes, match_nodes, stem_nodes,
    verification_files,
)
from fcn_deploy.export.trt_check import check_trt  # noqa: E402
from fcn_deploy.export.verify import verify_onnx  # noqa: E402


@pytest.fixture(scope="module")
def r18():
    return trained_model("fcn8s", "resnet18", steps=2, hw=(48, 48))


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    """A folder of PNG images (structured random scenes) to calibrate on."""
    from PIL import Image

    d = tmp_path_factory.mktemp("calib")
    for i, img in enumerate(random_rgb(4, 48, 64, seed=3)):
        Image.fromarray(img).save(d / f"img{i}.png")
    return d


def _shape_arithmetic(node, producers) -> bool:
    """An Add on integer shape values (a crop's offset + a reference size), not on a tensor."""
    return any(x not in producers or producers[x].op_type in ("Gather", "Shape", "Constant") for x in node.input)


def _types(model):
    inferred = onnx.shape_inference.infer_shapes(model)
    t = {v.name: v.type.tensor_type.elem_type for v in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output)}
    t.update({i.name: i.data_type for i in model.graph.initializer})
    return t


def test_fp16_graph_is_half_with_float_io_and_fp32_tail(tmp_path, r18, caplog, monkeypatch):
    from fcn_deploy import backends

    monkeypatch.setattr(backends, "cpu_vendor", lambda: "amd")  # x86: where the runtime would warn
    caplog.set_level(logging.INFO, logger="fcn_deploy.backends")
    out = export_onnx(r18, tmp_path / "h.onnx", precision="fp16", output_kind="labels", verify_sizes=[(33, 45)])
    # verification runs the file being exported on purpose: not the runtime's slow-file hint
    assert not [r.getMessage() for r in caplog.records if "slower" in r.getMessage()]
    m = onnx.load(str(out))
    t = _types(m)
    H, F = onnx.TensorProto.FLOAT16, onnx.TensorProto.FLOAT
    convs = [n for n in m.graph.node if n.op_type in ("Conv", "ConvTranspose")]
    assert convs and all(t[n.input[1]] == H and t[n.input[0]] == H for n in convs)
    assert m.graph.input[0].type.tensor_type.elem_type == F
    assert m.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.INT32
    argmax = next(n for n in m.graph.node if n.op_type == "ArgMax")
    assert t[argmax.input[0]] == F  # argmax runs on float32 logits
    assert check_trt(m).ok


def test_fp16_verifies_on_onnxruntime_and_in_true_float16(tmp_path, r18):
    out = export_onnx(r18, tmp_path / "h.onnx", precision="fp16", verify=False)
    rep = verify_onnx(r18, out, sizes=[(41, 57)], batch=2)
    assert rep.precision == "fp16" and rep.passed, rep.format()
    # onnx.reference computes every op in numpy float16: the real fp16 arithmetic check.
    ref = verify_onnx(r18, out, sizes=[(32, 40)], batch=1, engine="reference")
    assert ref.passed, ref.format()
    assert 0 < ref.cases[0].rel_l2 < 1e-2  # float16 changed the numbers, a little


def test_fp16_io_option(tmp_path, r18):
    out = export_onnx(r18, tmp_path / "h16.onnx", precision="fp16", fp16_io=True, verify_sizes=[(32, 40)])
    m = onnx.load(str(out))
    assert m.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    assert m.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    y = ort.InferenceSession(str(out)).run(None, {"input": np.zeros((1, 3, 32, 40), np.float16) + 0.5})[0]
    assert y.dtype == np.float16
    with pytest.raises(FcnError, match="needs precision fp16"):
        export_onnx(r18, tmp_path / "x.onnx", fp16_io=True)


def test_convert_fp16_keeps_listed_nodes_fp32(tmp_path, r18):
    out = export_onnx(r18, tmp_path / "f.onnx", verify=False)
    m = onnx.load(str(out))
    first = next(n for n in m.graph.node if n.op_type == "Conv")
    h = convert_fp16(m, keep_nodes=[first.name])
    t = _types(h)
    conv = next(n for n in h.graph.node if n.name == first.name)
    assert t[conv.input[1]] == onnx.TensorProto.FLOAT and t[conv.output[0]] == onnx.TensorProto.FLOAT
    onnx.checker.check_model(h, full_check=True)


def _qdq_layout(m):
    inits = {t.name: t for t in m.graph.initializer}
    producers = {o: n for n in m.graph.node for o in n.output}
    return inits, producers


def test_int8_qdq_is_calibrated_runs_on_ort_and_follows_tensorrt_rules(tmp_path, r18, image_dir):
    calib = CalibConfig(data=image_dir, format="images", images=4, method="minmax")
    out = export_onnx(r18, tmp_path / "q.onnx", precision="int8", calib=calib, verify=False)
    m = onnx.load(str(out))
    ops = [n.op_type for n in m.graph.node]
    assert ops.count("QuantizeLinear") > 10 and ops.count("DequantizeLinear") > 10
    assert check_qdq(m) == []
    report = check_trt(m)
    assert report.ok, report.format()
    inits, producers = _qdq_layout(m)
    head = set(head_nodes(m))
    assert sum(n.op_type == "ConvTranspose" for n in m.graph.node if n.name in head) == 3
    assert sum(n.op_type == "Add" for n in m.graph.node if n.name in head) == 2  # the two skip fusions
    stem = stem_nodes(m)  # the stem conv reads the raw image, no Q/DQ on its input; then its MaxPool
    assert [n.op_type for n in m.graph.node if n.name in stem] == ["Conv", "MaxPool"]
    assert "conv1" in stem[0] and "layer" not in stem[0]
    for n in m.graph.node:
        if n.name in stem:  # kept float by default: float weights, raw float input, float MaxPool
            assert producers.get(n.input[0]) is None or producers[n.input[0]].op_type != "DequantizeLinear"
            if n.op_type == "Conv":
                assert n.input[1] in inits and inits[n.input[1]].data_type == onnx.TensorProto.FLOAT
        elif n.op_type == "Conv":
            dq = producers[n.input[1]]
            assert dq.op_type == "DequantizeLinear"  # weights per channel on axis 0, int8
            assert next(a.i for a in dq.attribute if a.name == "axis") == 0
            assert inits[dq.input[0]].data_type == onnx.TensorProto.INT8
            assert producers[n.input[0]].op_type == "DequantizeLinear"  # activations quantized
            if len(n.input) > 2:
                assert inits[n.input[2]].data_type == onnx.TensorProto.FLOAT  # bias stays float
        elif n.op_type == "Add" and n.name not in head and not _shape_arithmetic(n, producers):
            # residual Adds: both inputs quantized (the aligned head's crop offsets add integers on shapes)
            assert all(producers[x].op_type == "DequantizeLinear" for x in n.input)
        elif n.name in head:  # class scores stay float by default
            assert all(producers.get(x) is None or producers[x].op_type != "DequantizeLinear" for x in n.input)
    # Nothing after the last upsampling is quantized: the logits stay float.
    assert producers["logits"].op_type == "Slice"
    rep = verify_onnx(r18, out, sizes=[(48, 64), (41, 57)], images=image_dir)
    assert rep.precision == "int8" and rep.passed, rep.format()
    assert all(0 < c.rel_l2 for c in rep.cases)  # int8 really changed the numbers
    assert {c.counted for c in rep.cases if c.inputs == "random"} == {False}  # judged on real images


def test_int8_with_quantized_head_uses_tensorrt_deconv_axis(tmp_path, r18, image_dir):
    calib = CalibConfig(data=image_dir, format="images", images=2, method="minmax", size=(48, 64), quantize_head=True)
    out = export_onnx(r18, tmp_path / "qh.onnx", precision="int8", calib=calib, verify_sizes=[(48, 64)])
    m = onnx.load(str(out))
    assert check_qdq(m) == [] and check_trt(m).ok
    inits, producers = _qdq_layout(m)
    deconvs = [n for n in m.graph.node if n.op_type == "ConvTranspose"]
    assert len(deconvs) == 3
    for n in deconvs:
        dq = producers[n.input[1]]
        assert dq.op_type == "DequantizeLinear" and next(a.i for a in dq.attribute if a.name == "axis") == 1
        assert producers[n.input[0]].op_type == "DequantizeLinear"
    for n in m.graph.node:
        if n.op_type == "Add" and not _shape_arithmetic(n, producers):  # every tensor Add, skip fusions included: both inputs quantized
            assert all(producers[x].op_type == "DequantizeLinear" for x in n.input)


def _ort_optimized_ops(path, tmp_path):
    """op type -> nodes of the graph onnxruntime's CPU provider actually runs (QDQ fusions applied)."""
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    so.optimized_model_filepath = str(tmp_path / f"{Path(path).stem}.ort-opt.onnx")
    ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    ops = {}
    for n in onnx.load(so.optimized_model_filepath).graph.node:
        ops.setdefault(n.op_type, []).append(n)
    return ops


def _int8_weights(m):
    inits = {t.name: t for t in m.graph.initializer}
    return [onnx.numpy_helper.to_array(inits[n.input[0]]) for n in m.graph.node
            if n.op_type == "DequantizeLinear" and n.input[0] in inits and inits[n.input[0]].data_type == onnx.TensorProto.INT8]


@pytest.mark.timeout(300)
def test_int8_cpu_target_runs_integer_convolutions_in_onnxruntime(tmp_path, r18, image_dir):
    """The TensorRT layout (int8, zero point 0) leaves every Conv followed by a Relu in float on
    onnxruntime x86 (the Relu cannot fold into a zero-point-0 Q); the cpu target (uint8
    asymmetric activations) gets every quantized backbone Conv fused into QLinearConv: all but
    the stem, which stays float by default; with the stem quantized too, all 20 and 7-bit weights."""
    base = dict(data=image_dir, format="images", images=4, method="minmax", size=(48, 64))
    trt = export_onnx(r18, tmp_path / "trt.onnx", precision="int8", calib=CalibConfig(**base), verify=False)
    cpu = export_onnx(r18, tmp_path / "cpu.onnx", precision="int8", calib=CalibConfig(**base, target="cpu"),
                      verify=False)
    backbone = lambda nodes: [n for n in nodes if "backbone" in n.name]  # noqa: E731
    n_convs = len(backbone(n for n in onnx.load(str(cpu)).graph.node if n.op_type == "Conv"))
    stem = [n for n in stem_nodes(onnx.load(str(cpu))) if n.endswith("/Conv")]
    ops_trt, ops_cpu = _ort_optimized_ops(trt, tmp_path), _ort_optimized_ops(cpu, tmp_path)
    float_trt = backbone(ops_trt.get("Conv", []) + ops_trt.get("FusedConv", []))
    assert len(float_trt) >= n_convs // 2  # the conv+relu half of ResNet-18 stays float
    assert [n.name for n in backbone(ops_cpu.get("Conv", []) + ops_cpu.get("FusedConv", []))] == stem
    assert len(backbone(ops_cpu["QLinearConv"])) == n_convs - 1 == 19
    assert "Relu" not in ops_cpu  # folded into the uint8 quantization
    # Number formats: uint8 activations, full 8-bit int8 weights; TensorRT would refuse it.
    m = onnx.load(str(cpu))
    inits = {t.name: t for t in m.graph.initializer}
    q_types = {inits[n.input[2]].data_type for n in m.graph.node if n.op_type == "QuantizeLinear"}
    assert q_types == {onnx.TensorProto.UINT8}
    assert max(int(np.abs(w.astype(np.int32)).max()) for w in _int8_weights(m)) > 100
    assert check_qdq(m) and not check_trt(m).ok
    # Stem quantized: it is fused too, and the weights drop to 7 bits (no 16-bit saturation on AVX2).
    cpu_stem = export_onnx(r18, tmp_path / "cpu_stem.onnx", precision="int8", verify=False,
                           calib=CalibConfig(**base, target="cpu", quantize_stem=True))
    ops = _ort_optimized_ops(cpu_stem, tmp_path)
    assert backbone(ops.get("Conv", []) + ops.get("FusedConv", [])) == []
    assert len(backbone(ops["QLinearConv"])) == n_convs == 20
    assert stem_nodes(onnx.load(str(cpu_stem))) == []  # its input now comes through Q/DQ
    weights = _int8_weights(onnx.load(str(cpu_stem)))
    assert weights and max(int(np.abs(w.astype(np.int32)).max()) for w in weights) <= 64
    rep = verify_onnx(r18, cpu, sizes=[(48, 64)], images=image_dir)
    assert rep.passed and all(0 < c.rel_l2 for c in rep.cases), rep.format()
    with pytest.raises(FcnError, match="unknown int8 target"):
        CalibConfig(**base, target="arm")


@pytest.mark.timeout(300)
def test_int8_keep_float_patterns(tmp_path, r18, image_dir):
    """--keep-float: named nodes (exact or fnmatch) stay float on top of the head and stem; the
    TensorRT layout rules still hold; a pattern matching nothing is one clear error."""
    calib = CalibConfig(data=image_dir, format="images", images=2, method="minmax", size=(32, 48),
                        keep_float=("*/layer4/*", "/inner/score_fr/Conv"))
    out = export_onnx(r18, tmp_path / "kf.onnx", precision="int8", calib=calib, verify=False)
    m = onnx.load(str(out))
    assert check_qdq(m) == [] and check_trt(m).ok
    inits, producers = _qdq_layout(m)
    kept = match_nodes(m, calib.keep_float)
    kinds = [n.op_type for n in m.graph.node if n.name in kept]
    assert (kinds.count("Conv"), kinds.count("Add")) == (6, 2)  # layer4's 5 convs + 2 Adds, score_fr
    assert kept[-1] == "/inner/score_fr/Conv"
    float_weights = [n.name for n in m.graph.node if n.op_type == "Conv" and n.input[1] in inits
                     and inits[n.input[1]].data_type == onnx.TensorProto.FLOAT]
    assert float_weights == stem_nodes(m)[:1] + [n for n in kept if n.endswith("Conv")]
    for n in m.graph.node:  # Adds kept float: no Q/DQ of their own inputs
        if n.name in kept and n.op_type == "Add":
            assert all(producers.get(x) is None or producers[x].op_type != "DequantizeLinear" for x in n.input)
    with pytest.raises(FcnError, match="matches no node"):
        export_onnx(r18, tmp_path / "bad.onnx", precision="int8", verify=False,
                    calib=CalibConfig(data=image_dir, format="images", images=1, size=(32, 48), keep_float=("*/layer9/*",)))
    assert not (tmp_path / "bad.onnx").exists()
    assert CalibConfig(data=image_dir, keep_float="/inner/score_fr/Conv").keep_float == ("/inner/score_fr/Conv",)
    with pytest.raises(FcnError, match="empty node name"):
        CalibConfig(data=image_dir, keep_float=("",))


@pytest.mark.timeout(300)
def test_int8_entropy_and_percentile_calibration(tmp_path, r18, image_dir):
    for method in ("entropy", "percentile"):
        calib = CalibConfig(data=image_dir, format="images", images=2, method=method, size=(32, 48))
        out = export_onnx(r18, tmp_path / f"{method}.onnx", precision="int8", calib=calib, verify=False)
        assert check_qdq(onnx.load(str(out))) == []


@pytest.mark.camvid
def test_int8_calibrates_on_camvid(tmp_path, r18, camvid_dir):
    calib = CalibConfig(data=camvid_dir, format="camvid", images=3, method="minmax", size=(60, 80))
    files = calibration_files(calib)
    assert len(files) == 3 and all(f.parent.name == "train" for f in files)
    out = export_onnx(r18, tmp_path / "q.onnx", precision="int8", calib=calib, verify=False)
    rep = verify_onnx(r18, out, sizes=[(60, 80)], batch=1, images=camvid_dir / "val")
    assert rep.passed, rep.format()


def _images(names, *folders):
    """Write an 8x8 PNG/JPEG under each of ``names`` in every folder (created)."""
    from PIL import Image

    img = Image.fromarray(random_rgb(1, 8, 8)[0])
    for d in folders:
        d.mkdir(parents=True, exist_ok=True)
        for n in names:
            img.save(d / n)


def test_calibration_folder_layouts(tmp_path):
    _images([f"a{i}.png" for i in range(5)], tmp_path / "cv" / "train", tmp_path / "cv" / "trainannot")
    files = calibration_files(CalibConfig(data=tmp_path / "cv", format="camvid", images=3))
    assert [f.name for f in files] == ["a0.png", "a2.png", "a4.png"]
    check, size = verification_files(CalibConfig(data=tmp_path / "cv", format="camvid", images=3))
    assert {f.name for f in check} == {"a1.png", "a3.png"} and size == (8, 8)  # images not calibrated on
    voc = tmp_path / "voc"
    _images(["x1.jpg", "x2.jpg", "x3.jpg"], voc / "JPEGImages")
    (voc / "ImageSets" / "Segmentation").mkdir(parents=True)
    (voc / "ImageSets" / "Segmentation" / "train.txt").write_text("x1\nx3\n")
    assert [f.name for f in calibration_files(CalibConfig(data=voc, format="voc", images=10))] == ["x1.jpg", "x3.jpg"]
    # folders, flat images/: the train split (every 5th file is val), masks/ never listed
    _images([f"z{i}.png" for i in range(6)], tmp_path / "f" / "images", tmp_path / "f" / "masks")
    got = calibration_files(CalibConfig(data=tmp_path / "f", format="folders", images=9))
    assert [str(f.relative_to(tmp_path)) for f in got] == [f"f/images/z{i}.png" for i in (0, 1, 2, 3, 5)]
    # images: the files directly in DIR, sub-folders (e.g. masks) not entered
    flat = tmp_path / "flat"
    _images(["b.png"], flat, flat / "labels")
    (flat / "notes.txt").write_text("x")
    assert calibration_files(CalibConfig(data=flat, images=9)) == [flat / "b.png"]


def test_camvid_calibration_needs_train_and_never_lists_annotations(tmp_path):
    """A CamVid root without train/ (only val/ + valannot/) was calibrated on valannot/*.png
    label masks; now it is one clear error, and no layout ever lists an *annot* file."""
    root = tmp_path / "camvid"
    _images([f"s{i}.png" for i in range(3)], root / "val", root / "valannot", root / "testannot")
    with pytest.raises(FcnError) as e:
        calibration_files(CalibConfig(data=root, format="camvid"))
    msg = str(e.value)
    assert "\n" not in msg and "train" in msg and str(root / "train") in msg
    with pytest.raises(FcnError, match="train"):
        verification_files(CalibConfig(data=root, format="camvid"))
    _images([f"t{i}.png" for i in range(4)], root / "train", root / "trainannot")
    files = calibration_files(CalibConfig(data=root, format="camvid", images=64))
    check, _ = verification_files(CalibConfig(data=root, format="camvid", images=2))
    assert [f.parent.name for f in files + check] == ["train"] * 6
    for fmt in ("images", "folders", "voc"):  # other layouts on a CamVid root: an error, never masks
        with pytest.raises(FcnError):
            calibration_files(CalibConfig(data=root, format=fmt))


def test_calibration_decodes_like_the_runtime(tmp_path):
    """Calibration tensors are the runtime's: EXIF orientation applied, 16-bit greys scaled,
    fcn_deploy.image.preprocess bit for bit."""
    from PIL import Image

    from fcn_deploy.export.precision import ImageCalibrationReader
    from fcn_deploy.image import load_image, preprocess, resize_rgb
    from fcn_deploy.modelinfo import IMAGENET_CONVENTION, ModelInfo

    co, scale, mean, std = IMAGENET_CONVENTION
    info = ModelInfo(arch="fcn8s", backbone="resnet18", num_classes=2, class_names=("a", "b"),
                     palette=((0, 0, 0), (9, 9, 9)), channel_order=co, scale=scale, mean=mean, std=std)
    rgb = random_rgb(1, 6, 10, seed=4)[0]
    rotated = Image.fromarray(rgb)
    exif = rotated.getexif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    rotated.save(tmp_path / "a_exif.jpg", exif=exif, quality=95)
    grey16 = (np.arange(6 * 10, dtype=np.uint16).reshape(6, 10) * 1000)
    Image.fromarray(grey16).save(tmp_path / "b_grey16.png")
    reader = ImageCalibrationReader(sorted(tmp_path.iterdir()), info, size=None)
    assert reader.size == (10, 6)  # the EXIF-rotated size, not the stored 6x10
    first = reader.get_next()["input"]
    assert first.shape == (1, 3, 10, 6)
    assert np.array_equal(first, preprocess([load_image(tmp_path / "a_exif.jpg")], info))
    second = reader.get_next()["input"]
    want = resize_rgb(load_image(tmp_path / "b_grey16.png"), (10, 6))
    assert want.max() > 200  # 16-bit values scaled, not clipped to white
    assert np.array_equal(second, preprocess([want], info))
    assert reader.get_next() is None


def test_calibration_errors(tmp_path):
    with pytest.raises(FcnError, match="unknown calibration format"):
        CalibConfig(data=tmp_path, format="coco")
    with pytest.raises(FcnError, match="unknown calibration method"):
        CalibConfig(data=tmp_path, method="mse")
    with pytest.raises(FcnError, match="at least 1 image"):
        CalibConfig(data=tmp_path, images=0)
    with pytest.raises(FcnError, match="not found"):
        calibration_files(CalibConfig(data=tmp_path / "missing"))
    with pytest.raises(FcnError, match="no images"):
        calibration_files(CalibConfig(data=tmp_path))
    with pytest.raises(FcnError, match="no PASCAL VOC layout"):
        calibration_files(CalibConfig(data=tmp_path, format="voc"))
