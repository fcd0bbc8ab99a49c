"""Helpers for the serving tests (not a test file): tiny ONNX models in the layouts fcn-export
writes -- fp32 logits, fp16 with float16 I/O, int8 QDQ, ``--output labels`` (ArgMax then Cast
to int32) -- each a 1x1 convolution whose answer numpy computes independently
(runtime_models.expected_labels), and TensorRT plans + sidecars made by fcn-build against
test_runtime_build's strict stand-in for the tensorrt module."""

from __future__ import annotations

import numpy as np

from runtime_models import tiny_info


def make_onnx(path, kind="fp32", num_classes=5, seed=0):
    """Write a tiny model; returns (info, W, b). kind: fp32 | fp16io | int8 | labels."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    info = tiny_info(num_classes, output="labels" if kind == "labels" else "logits",
                     precision={"fp16io": "fp16", "int8": "int8"}.get(kind, "fp32"))
    rng = np.random.default_rng(seed)
    W = rng.normal(size=(num_classes, 3, 1, 1)).astype(np.float32)
    b = (rng.normal(size=(num_classes,)) * 0.1).astype(np.float32)
    inits = [numpy_helper.from_array(b, "B")]
    nodes = []
    x = "input"
    in_type = TensorProto.FLOAT
    if kind == "fp16io":
        in_type = TensorProto.FLOAT16
        nodes.append(helper.make_node("Cast", ["input"], ["x32"], to=TensorProto.FLOAT))
        x = "x32"
    if kind == "int8":
        # Explicit quantization as TensorRT wants it: Q/DQ on the activation, DQ on int8 weights.
        sw = (np.abs(W).max() / 127.0).astype(np.float32)
        Wq = np.clip(np.round(W / sw), -127, 127).astype(np.int8)
        W = (Wq.astype(np.float32) * sw).astype(np.float32)  # what the graph computes
        inits += [numpy_helper.from_array(Wq, "Wq"), numpy_helper.from_array(np.array(sw, np.float32), "sw"),
                  numpy_helper.from_array(np.array(0, np.int8), "zw"),
                  numpy_helper.from_array(np.array(1 / 32, np.float32), "sx"), numpy_helper.from_array(np.array(0, np.int8), "zx")]
        nodes += [helper.make_node("QuantizeLinear", [x, "sx", "zx"], ["xq"]),
                  helper.make_node("DequantizeLinear", ["xq", "sx", "zx"], ["xdq"]),
                  helper.make_node("DequantizeLinear", ["Wq", "sw", "zw"], ["W"])]
        x = "xdq"
    else:
        inits.append(numpy_helper.from_array(W, "W"))
    if kind == "labels":
        nodes += [helper.make_node("Conv", [x, "W", "B"], ["scores"]),
                  helper.make_node("ArgMax", ["scores"], ["idx"], axis=1, keepdims=0),
                  helper.make_node("Cast", ["idx"], ["labels"], to=TensorProto.INT32)]
        out = helper.make_tensor_value_info("labels", TensorProto.INT32, ["N", "H", "W"])
    elif kind == "fp16io":
        nodes += [helper.make_node("Conv", [x, "W", "B"], ["s32"]),
                  helper.make_node("Cast", ["s32"], ["logits"], to=TensorProto.FLOAT16)]
        out = helper.make_tensor_value_info("logits", TensorProto.FLOAT16, ["N", num_classes, "H", "W"])
    else:
        nodes.append(helper.make_node("Conv", [x, "W", "B"], ["logits"]))
        out = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", num_classes, "H", "W"])
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("input", in_type, ["N", 3, "H", "W"])], [out], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    helper.set_model_props(model, info.to_metadata())
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return info, W, b


def make_plan(tmp_path, monkeypatch, onnx_path, plan_name="m.plan", *, cc="8.6",
              shapes=("--min", "1x3x32x32", "--opt", "1x3x64x80", "--max", "4x3x128x160")):
    """A plan + sidecar written by fcn-build against the strict TensorRT stand-in."""
    import trt_standin

    from fcn_deploy import build

    trt_standin.install(monkeypatch, "10.13.0.35", cc=cc or "8.6")
    # cc=None: a sidecar from a machine whose compute capability could not be read.
    monkeypatch.setattr(build, "gpu_identity", lambda: ("Standin GPU", cc or ""))
    plan = tmp_path / plan_name
    assert build.main([str(onnx_path), str(plan), *shapes]) == 0
    return plan
