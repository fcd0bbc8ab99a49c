"""TensorRT-readiness check: hand-built graphs with one problem each, and our own exports."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from fcn_deploy.errors import FcnError  # noqa: E402
from fcn_deploy.export.cli import main as export_main  # noqa: E402
from fcn_deploy.export.trt_check import check_trt  # noqa: E402


def _model(nodes, inits=(), out_type=TensorProto.FLOAT, out_shape=("N", 4, "H", "W"), opset=17, out="y"):
    g = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, "H", "W"])],
        [helper.make_tensor_value_info(out, out_type, list(out_shape))],
        initializer=list(inits),
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def _w(name, shape, dtype=np.float32, value=None):
    arr = np.full(shape, value, dtype) if value is not None else np.random.default_rng(0).normal(size=shape).astype(dtype)
    return numpy_helper.from_array(arr, name)


def _errors(model):
    return [i for i in check_trt(model).issues if i.severity == "error"]


def test_clean_graph_passes():
    m = _model([helper.make_node("Conv", ["x", "W"], ["c"], name="conv"), helper.make_node("Relu", ["c"], ["y"], name="relu")],
               [_w("W", (4, 4, 3, 3))])
    r = check_trt(m)
    assert r.ok and r.issues == () and dict(r.ops) == {"Conv": 1, "Relu": 1}


def test_made_up_op_and_custom_domain_are_flagged_with_node_names():
    m = _model([helper.make_node("FancyUpsample", ["x"], ["a"], name="my_fancy"),
                helper.make_node("Relu", ["a"], ["y"], name="ok_relu")])
    errs = _errors(m)
    assert [(e.node, e.op) for e in errs] == [("my_fancy", "FancyUpsample")]
    m2 = _model([helper.make_node("FusedConv", ["x"], ["y"], name="ms", domain="com.microsoft")])
    m2.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    assert "plugin" in _errors(m2)[0].message
    m3 = _model([helper.make_node("QLinearConv", ["x"], ["y"], name="qlc")])
    assert "not supported" in _errors(m3)[0].message
    assert not check_trt(m).ok and "NOT TensorRT-ready" in check_trt(m).format()


def test_qdq_rules():
    def qdq(zp_dtype=np.int8, zp_value=0, axis=1, op="ConvTranspose", q_zp=True):
        inits = [_w("s", (), value=0.1), _w("zp", (), zp_dtype, zp_value),
                 _w("Wq", (4, 4, 2, 2), np.int8, 3), _w("ws", (4,), value=0.01), _w("wz", (4,), np.int8, 0)]
        nodes = [
            helper.make_node("QuantizeLinear", ["x", "s", "zp"] if q_zp else ["x", "s"], ["xq"], name="q_in"),
            helper.make_node("DequantizeLinear", ["xq", "s", "zp"] if q_zp else ["xq", "s"], ["xd"], name="dq_in"),
            helper.make_node("DequantizeLinear", ["Wq", "ws", "wz"], ["W"], name="dq_w", axis=axis),
            helper.make_node(op, ["xd", "W"], ["y"], name="up"),
        ]
        return _model(nodes, inits)

    assert check_trt(qdq()).ok  # ConvTranspose weights per channel on axis 1
    errs = _errors(qdq(axis=0))
    assert errs and errs[0].node == "dq_w" and "output-channel axis 1" in errs[0].message
    assert check_trt(qdq(op="Conv", axis=0)).ok
    assert _errors(qdq(zp_value=3))[0].message.endswith("must be zero")
    assert any("UINT8" in e.message for e in _errors(qdq(zp_dtype=np.uint8)))
    assert any("defaults to UINT8" in e.message for e in _errors(qdq(q_zp=False)))


def test_resize_pool_cast_and_argmax_rules():
    scales = numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "sc")
    bad_resize = _model([helper.make_node("Resize", ["x", "", "sc"], ["y"], name="rs", mode="cubic")], [scales])
    assert "mode 'cubic'" in _errors(bad_resize)[0].message
    ok_resize = _model([helper.make_node("Resize", ["x", "", "sc"], ["y"], name="rs", mode="linear",
                                         coordinate_transformation_mode="half_pixel")], [scales])
    assert check_trt(ok_resize).ok
    pool = _model([helper.make_node("MaxPool", ["x"], ["y", "idx"], name="mp", kernel_shape=[2, 2])])
    assert "Indices" in _errors(pool)[0].message
    cast = _model([helper.make_node("Cast", ["x"], ["y"], name="c8", to=TensorProto.INT8)], out_type=TensorProto.INT8)
    assert "Cast to INT8" in _errors(cast)[0].message
    am = _model([helper.make_node("ArgMax", ["x"], ["y"], name="am", axis=1, keepdims=0)],
                out_type=TensorProto.INT64, out_shape=("N", "H", "W"))
    r = check_trt(am)
    assert r.ok and r.issues[0].severity == "warning" and "INT32" in r.issues[0].message


def test_dynamic_crop_is_reported_as_supported():
    c = lambda n, v: numpy_helper.from_array(np.array(v, np.int64), n)  # noqa: E731
    nodes = [
        helper.make_node("Shape", ["x"], ["shp"], name="shape"),
        helper.make_node("Gather", ["shp", "i2"], ["h"], name="gather", axis=0),
        helper.make_node("Unsqueeze", ["h", "ax0"], ["hh"], name="unsq"),
        helper.make_node("Slice", ["x", "st", "hh", "ax2"], ["y"], name="crop"),
    ]
    r = check_trt(_model(nodes, [c("i2", 2), c("ax0", [0]), c("st", [1]), c("ax2", [2])]))
    assert r.ok and r.dynamic_crops == 1


def test_opset_range():
    m = _model([helper.make_node("Relu", ["x"], ["y"], name="r")], opset=8)
    assert "opset 8" in _errors(m)[0].message


def test_cli_check_trt_exit_codes(tmp_path, capsys):
    good = _model([helper.make_node("Relu", ["x"], ["y"], name="r")])
    bad = _model([helper.make_node("FancyOp", ["x"], ["y"], name="fancy_node")])
    onnx.save(good, tmp_path / "good.onnx")
    onnx.save(bad, tmp_path / "bad.onnx")
    assert export_main(["--check-trt", str(tmp_path / "good.onnx")]) == 0
    assert "TensorRT-ready" in capsys.readouterr().out
    assert export_main(["--check-trt", str(tmp_path / "bad.onnx")]) == 1
    assert "fancy_node" in capsys.readouterr().out
    data = (tmp_path / "good.onnx").read_bytes()
    (tmp_path / "cut.onnx").write_bytes(data[: len(data) // 2])
    (tmp_path / "pic.onnx").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    for name in ("cut.onnx", "pic.onnx", "missing.onnx"):
        assert export_main(["--check-trt", str(tmp_path / name)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1, err
    with pytest.raises(FcnError):
        check_trt(tmp_path / "cut.onnx")
