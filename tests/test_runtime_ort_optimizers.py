"""OrtRunner(disabled_optimizers=...): skipping QDQPropagationTransformer keeps the float MaxPool
after the int8 export's float stem float (onnxruntime otherwise moves a QuantizeLinear in front
of it and runs its slow NCHW uint8 MaxPool). Not the default: see ort.DISABLED_OPTIMIZERS."""

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from fcn_deploy.backends import ort as ort_backend  # noqa: E402


def _stem_then_qdq(path):
    """float Conv -> Relu -> MaxPool -> Q -> DQ -> Conv(int8 weights): the float-stem layout."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w1"),
        numpy_helper.from_array(np.array(0.05, np.float32), "s"),
        numpy_helper.from_array(np.array(0, np.uint8), "z"),
        numpy_helper.from_array(rng.integers(-100, 100, (8, 8, 3, 3)).astype(np.int8), "w2q"),
        numpy_helper.from_array(np.full(8, 0.01, np.float32), "w2s"),
        numpy_helper.from_array(np.zeros(8, np.int8), "w2z"),
    ]
    nodes = [
        helper.make_node("Conv", ["input", "w1"], ["a"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["a"], ["r"]),
        helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("QuantizeLinear", ["p", "s", "z"], ["pq"]),
        helper.make_node("DequantizeLinear", ["pq", "s", "z"], ["pd"]),
        helper.make_node("DequantizeLinear", ["w2q", "w2s", "w2z"], ["w2"], axis=0),
        helper.make_node("Conv", ["pd", "w2"], ["logits"], pads=[1, 1, 1, 1]),
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, None)], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
    return path


def _maxpool_input_is_quantized(model_path, tmp_path, disabled):
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.optimized_model_filepath = str(tmp_path / "opt.onnx")
    ort.InferenceSession(str(model_path), so, providers=["CPUExecutionProvider"], disabled_optimizers=disabled)
    g = onnx.load(str(tmp_path / "opt.onnx")).graph
    producer = {o: n.op_type for n in g.node for o in n.output}
    pools = [n for n in g.node if n.op_type == "MaxPool"]
    assert len(pools) == 1
    return producer.get(pools[0].input[0]) == "QuantizeLinear"


def test_the_transformer_we_disable_is_the_one_that_quantizes_the_maxpool(tmp_path):
    model = _stem_then_qdq(tmp_path / "m.onnx")
    assert _maxpool_input_is_quantized(model, tmp_path, None)
    assert not _maxpool_input_is_quantized(model, tmp_path, ["QDQPropagationTransformer"])


def test_runner_passes_the_disabled_optimizers(tmp_path, monkeypatch):
    model = _stem_then_qdq(tmp_path / "m.onnx")
    seen = []
    real = ort.InferenceSession

    def spy(*args, **kwargs):
        seen.append(kwargs.get("disabled_optimizers"))
        return real(*args, **kwargs)

    monkeypatch.setattr(ort, "InferenceSession", spy)
    x = np.random.default_rng(1).standard_normal((1, 3, 16, 16)).astype(np.float32)
    with ort_backend.OrtRunner(model, providers="cpu", threads=1,
                               disabled_optimizers=("QDQPropagationTransformer",)) as r:
        y = r.infer({"input": x})["logits"]
    with ort_backend.OrtRunner(model, providers="cpu", threads=1) as r:
        y_all = r.infer({"input": x})["logits"]
    with ort_backend.OrtRunner(model, providers="cpu", threads=1, disabled_optimizers="QDQPropagationTransformer"):
        pass
    assert seen == [["QDQPropagationTransformer"], None, ["QDQPropagationTransformer"]]  # default: none; a str is one name
    np.testing.assert_allclose(y, y_all, rtol=0, atol=1e-5)  # same result either way
