"""The ensemble's Python-backend models (the model.py files fcn-serve triton --ensemble writes),
run against a stand-in for Triton's ``triton_python_backend_utils`` (which exists only inside
the tritonserver container), on real CamVid val images when ../shared/data/camvid exists:
preprocess -> the ONNX model -> postprocess gives the same label maps as fcn-predict.

The stand-in follows python_backend's src/resources/triton_python_backend_utils.py and the
pybind definitions in src/pb_stub.cc: ``Tensor(name, numpy_array)`` with ``name()`` /
``as_numpy()``, ``get_input_tensor_by_name(request, name)`` (None when absent),
``get_output_config_by_name(config, name)``, ``InferenceResponse(output_tensors=..., error=...)``
and ``TritonError(message, code)``; anything else is an AttributeError, so a misspelt call in
model.py fails here (test_stand_in_is_strict)."""

import importlib.util
import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tritonclient")

from fcn_deploy.image import read_label_png
from fcn_deploy.predict import main as predict_main
from fcn_deploy.segmenter import Segmenter
from fcn_deploy.serve.cli import main as serve_main
from runtime_models import random_image
from serve_models import make_onnx

CAMVID = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "camvid"


def _stand_in():
    m = types.ModuleType("triton_python_backend_utils")

    class TritonError:
        UNKNOWN, INTERNAL, NOT_FOUND, INVALID_ARG, UNAVAILABLE, UNSUPPORTED, ALREADY_EXISTS, CANCELLED = range(8)

        def __init__(self, message, code=1):
            if not isinstance(message, str):
                raise TypeError("TritonError(message: str, code)")
            self._message, self._code = message, code

        def message(self):
            return self._message

        def code(self):
            return self._code

    class Tensor:
        def __init__(self, name, array):
            if not isinstance(name, str) or not isinstance(array, np.ndarray):
                raise TypeError("Tensor(name: str, numpy_array)")
            if array.dtype.kind not in "biuf" and array.dtype != object:
                raise TypeError(f"unsupported dtype {array.dtype}")
            self._name, self._array = name, array

        def name(self):
            return self._name

        def as_numpy(self):
            return self._array

    class InferenceResponse:
        def __init__(self, output_tensors=(), error=None, parameters=None):
            if not all(isinstance(t, Tensor) for t in output_tensors):
                raise TypeError("output_tensors must be pb_utils.Tensor objects")
            if error is not None and not isinstance(error, TritonError):
                raise TypeError("error must be a pb_utils.TritonError")
            self._outputs, self._error = list(output_tensors), error

        def output_tensors(self):
            return self._outputs

        def has_error(self):
            return self._error is not None

        def error(self):
            return self._error

    def get_input_tensor_by_name(inference_request, name):
        for t in inference_request.inputs():
            if t.name() == name:
                return t
        return None

    def get_output_config_by_name(model_config, name):
        for o in model_config.get("output", []):
            if o["name"] == name:
                return o
        return None

    m.TritonError, m.Tensor, m.InferenceResponse = TritonError, Tensor, InferenceResponse
    m.get_input_tensor_by_name, m.get_output_config_by_name = get_input_tensor_by_name, get_output_config_by_name
    return m


class Request:
    def __init__(self, tensors):
        self._tensors = tensors

    def inputs(self):
        return list(self._tensors)


@pytest.fixture
def pb_utils(monkeypatch):
    m = _stand_in()
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", m)
    return m


def _load_model_py(path: Path, config_path: Path):
    from fcn_deploy.serve.check import config_as_dict

    spec = importlib.util.spec_from_file_location(f"tpm_{path.parent.parent.name}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    model = mod.TritonPythonModel()
    model.initialize({"model_config": json.dumps(config_as_dict(config_path)), "model_repository": str(path.parent.parent),
                      "model_version": "1", "model_name": path.parent.parent.name, "model_instance_kind": "CPU",
                      "model_instance_device_id": "0"})
    return model


def _images(tmp_path):
    val = CAMVID / "val"
    if val.is_dir():
        files = sorted(val.glob("*.png"))[:4]
        if files:
            return files
    from PIL import Image

    out = []
    for i, (h, w) in enumerate([(40, 56), (33, 47)]):
        p = tmp_path / f"gen{i}.png"
        Image.fromarray(random_image(h, w, seed=i)).save(p)
        out.append(p)
    return out


@pytest.mark.parametrize("kind", ["fp32", "labels", "fp16io"])
def test_ensemble_python_models_match_fcn_predict(pb_utils, tmp_path, kind):
    model = tmp_path / f"{kind}.onnx"
    make_onnx(model, kind)
    repo = tmp_path / "repo"
    assert serve_main(["triton", str(model), "--repo", str(repo), "--name", "seg", "--ensemble", "--colorized"]) == 0
    pre = _load_model_py(repo / "seg_preprocess" / "1" / "model.py", repo / "seg_preprocess" / "config.pbtxt")
    post = _load_model_py(repo / "seg_postprocess" / "1" / "model.py", repo / "seg_postprocess" / "config.pbtxt")
    assert post.colorized
    images = _images(tmp_path)
    out = tmp_path / "local"
    assert predict_main(["--model", str(model), *map(str, images), "--out", str(out), "--no-progress"]) == 0
    seg = Segmenter.load(model, backend="onnxruntime")  # stands for the ensemble's middle step
    try:
        for path in images:
            req = Request([pb_utils.Tensor("IMAGE", np.array([[path.read_bytes()]], dtype=object))])
            (r1,) = pre.execute([req])
            assert not r1.has_error()
            tensors = {t.name(): t.as_numpy() for t in r1.output_tensors()}
            x, hw = tensors["input"], tensors["IMAGE_HW"]
            assert x.dtype == seg.input_dtype and hw.dtype == np.int32
            y, _ = seg.infer(x)
            (r2,) = post.execute([Request([pb_utils.Tensor(seg.output_name, y), pb_utils.Tensor("IMAGE_HW", hw)])])
            assert not r2.has_error()
            got = {t.name(): t.as_numpy() for t in r2.output_tensors()}
            want = read_label_png(out / f"{path.stem}.png")
            assert got["LABELS"].shape == (1, *want.shape) and got["LABELS"].dtype == np.uint8
            np.testing.assert_array_equal(got["LABELS"][0], want)
            from fcn_deploy.palette import colorize

            np.testing.assert_array_equal(got["COLORIZED"][0], colorize(want, seg.info.palette))
    finally:
        seg.close()


def test_bad_requests_get_error_responses(pb_utils, tmp_path):
    model = tmp_path / "m.onnx"
    make_onnx(model)
    repo = tmp_path / "repo"
    assert serve_main(["triton", str(model), "--repo", str(repo), "--name", "seg", "--ensemble"]) == 0
    pre = _load_model_py(repo / "seg_preprocess" / "1" / "model.py", repo / "seg_preprocess" / "config.pbtxt")
    post = _load_model_py(repo / "seg_postprocess" / "1" / "model.py", repo / "seg_postprocess" / "config.pbtxt")
    assert not post.colorized
    from PIL import Image
    import io

    def png(h, w):
        buf = io.BytesIO()
        Image.fromarray(random_image(h, w)).save(buf, format="PNG")
        return buf.getvalue()

    bad = [
        Request([pb_utils.Tensor("IMAGE", np.array([[b"not an image"]], dtype=object))]),
        Request([pb_utils.Tensor("IMAGE", np.array([[png(20, 30)], [png(21, 30)]], dtype=object))]),  # two sizes
        Request([pb_utils.Tensor("OTHER", np.array([[png(20, 30)]], dtype=object))]),
        Request([pb_utils.Tensor("IMAGE", np.array([[png(20, 30)[:40]]], dtype=object))]),  # truncated
    ]
    good = Request([pb_utils.Tensor("IMAGE", np.array([[png(20, 30)], [png(20, 30)]], dtype=object))])
    responses = pre.execute(bad + [good])
    assert len(responses) == 5
    msgs = [r.error().message() for r in responses[:4]]
    assert "not an image" in msgs[0] and "must share a size" in msgs[1] and "no IMAGE input" in msgs[2]
    assert "corrupt or truncated" in msgs[3] or "not an image" in msgs[3]
    assert all(r.error().code() == pb_utils.TritonError.INVALID_ARG for r in responses[:4])
    assert not responses[4].has_error()
    x = {t.name(): t.as_numpy() for t in responses[4].output_tensors()}["input"]
    assert x.shape == (2, 3, 20, 30)
    # Post-processing refuses a logits tensor of the wrong class count and bad sizes.
    (r,) = post.execute([Request([pb_utils.Tensor("logits", np.zeros((1, 3, 4, 4), np.float32)),
                                  pb_utils.Tensor("IMAGE_HW", np.array([[4, 4]], np.int32))])])
    assert r.has_error() and "class channels" in r.error().message()
    (r,) = post.execute([Request([pb_utils.Tensor("logits", np.zeros((1, 5, 4, 4), np.float32)),
                                  pb_utils.Tensor("IMAGE_HW", np.array([[0, 4]], np.int32))])])
    assert r.has_error() and "is not an image size" in r.error().message()


def test_stand_in_is_strict(pb_utils, tmp_path):
    """A misspelt pb_utils call in a model.py fails against the stand-in, as in Triton."""
    with pytest.raises(AttributeError):
        pb_utils.get_input_tensor(Request([]), "IMAGE")  # the real name is get_input_tensor_by_name
    with pytest.raises(TypeError):
        pb_utils.Tensor("x", [1, 2, 3])
    with pytest.raises(TypeError):
        pb_utils.InferenceResponse(outputs=[])
    model = tmp_path / "m.onnx"
    make_onnx(model)
    repo = tmp_path / "repo"
    assert serve_main(["triton", str(model), "--repo", str(repo), "--name", "seg", "--ensemble"]) == 0
    py = repo / "seg_preprocess" / "1" / "model.py"
    py.write_text(py.read_text().replace("get_input_tensor_by_name", "get_input_tensor"))
    pre = _load_model_py(py, repo / "seg_preprocess" / "config.pbtxt")
    with pytest.raises(AttributeError):
        pre.execute([Request([pb_utils.Tensor("IMAGE", np.array([[b"x"]], dtype=object))])])
