"""fcn-bench --ceiling: MAC counting against hand-counted models, the floor arithmetic, the CLI."""

import json

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from fcn_deploy.benchmarks import bench  # noqa: E402
from fcn_deploy.benchmarks.ceiling import ceiling, count_layers, layer_macs, render  # noqa: E402
from fcn_deploy.errors import FcnError  # noqa: E402

# Hand count at 1x3x16x16:
#   c1: Conv 3->8, 3x3, pad 1        -> out 8x16x16 = 2048 elements x (3*3*3)   = 55296
#   c2: Conv 8->8, 3x3, pad 1        -> out 8x16x16 = 2048 elements x (8*3*3)   = 147456
#   c3: Conv 8->8, 3x3, pad 1 (same) -> 147456
#   c4: Conv 8->8, 3x3, stride 2, pad 1, group 2 -> out 8x8x8 = 512 x (4*3*3) = 18432
#   up: ConvTranspose 8->4, 4x4, stride 2, pad 1 -> input 512 elements x (4*4*4) = 32768
EXPECTED = [55296, 147456, 147456, 18432, 32768]


def _model(path, *, quantized_weights=False):
    rng = np.random.default_rng(0)
    inits, nodes = [], []

    def weight(name, shape):
        w = (rng.standard_normal(shape) * 0.1).astype(np.float32)
        if not quantized_weights:
            inits.append(numpy_helper.from_array(w, name))
            return name
        inits.append(numpy_helper.from_array(np.clip(np.round(w / 0.01), -127, 127).astype(np.int8), name + "_q"))
        inits.append(numpy_helper.from_array(np.array(0.01, np.float32), name + "_s"))
        nodes.append(helper.make_node("DequantizeLinear", [name + "_q", name + "_s"], [name]))
        return name

    nodes.append(helper.make_node("Conv", ["input", weight("w1", (8, 3, 3, 3))], ["a"], pads=[1, 1, 1, 1], name="c1"))
    nodes.append(helper.make_node("Relu", ["a"], ["a_r"]))
    nodes.append(helper.make_node("Conv", ["a_r", weight("w2", (8, 8, 3, 3))], ["b"], pads=[1, 1, 1, 1], name="c2"))
    nodes.append(helper.make_node("Conv", ["b", weight("w3", (8, 8, 3, 3))], ["c"], pads=[1, 1, 1, 1], name="c3"))
    nodes.append(helper.make_node("Conv", ["c", weight("w4", (8, 4, 3, 3))], ["d"], pads=[1, 1, 1, 1],
                                  strides=[2, 2], group=2, name="c4"))
    nodes.append(helper.make_node("ConvTranspose", ["d", weight("w5", (8, 4, 4, 4))], ["logits"], pads=[1, 1, 1, 1],
                                  strides=[2, 2], name="up"))
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return _model(tmp_path_factory.mktemp("ceiling") / "m.onnx")


def test_macs_match_the_hand_count(model):
    layers = count_layers(model, (1, 3, 16, 16), threads=1)
    assert [l.name for l in layers] == ["c1", "c2", "c3", "c4", "up"]
    assert [l.macs for l in layers] == EXPECTED
    assert layers[4].w_shape == (8, 4, 4, 4) and layers[4].y_shape == (1, 4, 16, 16)
    # batch and size scale the count
    assert [l.macs for l in count_layers(model, (2, 3, 32, 16), threads=1)] == [4 * m for m in EXPECTED]


def test_weights_behind_dequantize_are_counted(tmp_path):
    layers = count_layers(_model(tmp_path / "q.onnx", quantized_weights=True), (1, 3, 16, 16), threads=1)
    assert [l.macs for l in layers] == EXPECTED


def test_layer_macs_matmul():
    assert layer_macs("MatMul", (2, 5, 7), (7, 3), (2, 5, 3)) == 2 * 5 * 3 * 7


def test_ceiling_arithmetic(model):
    r = ceiling(model, (1, 3, 16, 16), threads=1, iterations=1, reference_ms=10.0)
    assert r["total_gmacs"] == round(sum(EXPECTED) / 1e9, 3)
    rows = {row["name"]: row for row in r["layers"]}
    assert "fp32_ms" not in rows["up"]  # ConvTranspose counted, not timed
    # identical layers are probed once and share their time
    assert rows["c2"]["fp32_ms"] == rows["c3"]["fp32_ms"] and rows["c2"]["int8_ms"] == rows["c3"]["int8_ms"]
    for p in ("fp32", "int8"):
        rates = [row[f"{p}_gmacs"] for row in r["layers"] if f"{p}_gmacs" in row]
        assert len(rates) == 4 and all(v > 0 for v in rates)
        assert r["peak_gmacs_per_s"][p] == max(rates)
        floor = sum(EXPECTED) / (max(rates) * 1e6)
        assert r["floor_ms"][p] == pytest.approx(floor, abs=0.0006)
        assert r["max_speedup"][p] == pytest.approx(10.0 / floor, rel=0.01)
    text = render(r)
    assert "c4" in text and "largest possible speed-up" in text


def test_foreign_and_missing_files(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(FcnError, match="not a readable ONNX"):
        count_layers(bad, (1, 3, 8, 8))
    with pytest.raises(FcnError, match="file not found"):
        count_layers(tmp_path / "none.onnx", (1, 3, 8, 8))
    with pytest.raises(FcnError, match="N x 3 x H x W"):
        count_layers(bad, (1, 1, 8, 8))


def test_cli(model, tmp_path, capsys):
    out = tmp_path / "c.json"
    md = tmp_path / "c.md"
    rc = bench.main(["--ceiling", str(model), "--shape", "1x3x16x16", "--iterations", "1", "--threads", "1",
                     "--reference-ms", "5", "--json", str(out), "--markdown", str(md), "-q"])
    assert rc == 0
    docs = json.loads(out.read_text())
    assert isinstance(docs, list) and len(docs) == 1  # one report per --shape
    doc = docs[0]
    assert doc["schema"] == "fcn-bench-ceiling/1"
    assert {"total_gmacs", "layers", "peak_gmacs_per_s", "floor_ms", "max_speedup", "machine"} <= set(doc)
    assert md.read_text().startswith("# Ceiling of")
    assert "floor" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["--reference-ms", "-3"], "--reference-ms must be a positive"),
    (["--duration", "2"], "unrecognized arguments: --duration 2 (see fcn-bench ceiling --help)"),
    (["--reference-ms", "inf"], "--reference-ms must be a positive"),
    (["--iterations", "0"], "--iterations must be >= 1"),
    (["--threads", "-1"], "--threads: must be >= 1"),
    (["--plot", "x.png"], "unrecognized arguments: --plot x.png"),
])
def test_cli_bad_options(model, argv, message, capsys):
    assert bench.main(["--ceiling", str(model), "-q"] + argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_cli_bad_file(tmp_path, capsys):
    bad = tmp_path / "x.onnx"
    bad.write_bytes(b"\x00garbage")
    assert bench.main(["--ceiling", str(bad), "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:")


def test_first_line_of_library_errors():
    from fcn_deploy.errors import first_line

    assert first_line(RuntimeError("  [ONNXRuntimeError] : 1 : FAIL\n  at graph.cc:12\n")) == "[ONNXRuntimeError] : 1 : FAIL"
    assert first_line(ValueError("")) == "ValueError"  # an empty message: no IndexError
