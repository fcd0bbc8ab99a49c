"""TensorRT runtime: everything that needs no GPU (profile checks, fit, dtype mapping, sidecar,
I/O validation, messages), plus a GPU-only end-to-end test that skips here."""

import json

import numpy as np
import pytest

from fcn_deploy.backends import tensorrt as trt_backend
from fcn_deploy.errors import FcnError
from fcn_deploy.shapes import Profile, batches, format_shape, parse_shape, profile_from_dims
from fcn_deploy.sidecar import PlanSidecar, read_sidecar, sidecar_path, write_sidecar
from runtime_models import tiny_info

PROFILE = Profile((1, 3, 256, 256), (1, 3, 360, 480), (4, 3, 720, 960))


# -- shapes and profiles -----------------------------------------------------------------------------

def test_parse_shape():
    assert parse_shape("1x3x360x480") == (1, 3, 360, 480)
    assert parse_shape("2,3,64,80") == (2, 3, 64, 80)
    for bad, words in [("1x3x360", "3 dimensions"), ("1x3xHx480", "not NxCxHxW"), ("0x3x4x4", "< 1"), ("", "empty")]:
        with pytest.raises(FcnError, match=words):
            parse_shape(bad, what="--min")


def test_profile_order_is_validated():
    with pytest.raises(FcnError, match="not so on H"):
        Profile((1, 3, 400, 256), (1, 3, 360, 480), (4, 3, 720, 960))
    with pytest.raises(FcnError, match="not so on N, W"):
        Profile((2, 3, 256, 256), (1, 3, 360, 480), (4, 3, 720, 400))
    with pytest.raises(FcnError, match="channel count must be fixed"):
        Profile((1, 1, 256, 256), (1, 3, 360, 480), (4, 3, 720, 960))


def test_outside_profile_names_the_profile():
    PROFILE.check((2, 3, 300, 300))
    with pytest.raises(FcnError) as e:
        PROFILE.check((1, 3, 1000, 500), name="input 'input'")
    msg = str(e.value)
    assert "1x3x1000x500" in msg and "min 1x3x256x256" in msg and "max 4x3x720x960" in msg and "opt 1x3x360x480" in msg
    assert "resize='fit'" in msg
    with pytest.raises(FcnError, match="batches of 1..4"):
        PROFILE.check((5, 3, 300, 300))
    with pytest.raises(FcnError, match="1 channels; the model takes 3"):
        PROFILE.check((1, 1, 300, 300))


def test_fit_into_profile():
    # Too large: one factor, aspect kept.
    h, w = PROFILE.fit_hw(1440, 1920)
    assert (h, w) == (720, 960)
    # Too small on one side: scaled up until both are inside.
    h, w = PROFILE.fit_hw(128, 200)
    assert PROFILE.hw_fits(h, w) and h == 256 and w == 400
    # Inside already: unchanged.
    assert PROFILE.fit_hw(300, 500) == (300, 500)
    # No single factor works (very thin image): each side clamped.
    h, w = PROFILE.fit_hw(100, 5000)
    assert (h, w) == (256, 960)
    for hw in [(1, 1), (10000, 3), (257, 961), (719, 255)]:
        assert PROFILE.hw_fits(*PROFILE.fit_hw(*hw))


def test_profile_from_onnx_dims_and_batches():
    p = profile_from_dims(("batch", 3, "height", "width"))
    assert p.contains((7, 3, 5, 9999)) and p.max_batch > 1000
    s = profile_from_dims((1, 3, 64, 80))
    assert s.min == s.max == (1, 3, 64, 80)
    with pytest.raises(FcnError, match="outside the sizes this model accepts"):
        s.check((1, 3, 64, 81), what="the sizes this model accepts")
    with pytest.raises(FcnError, match="4-D"):
        profile_from_dims((1, 3, 64))
    assert [list(b) for b in batches(5, 2)] == [[0, 1], [2, 3], [4]]
    assert format_shape((1, 3, 1 << 30, 4)) == "1x3xanyx4"


# -- TensorRT helpers --------------------------------------------------------------------------------

def test_dtype_mapping():
    assert trt_backend.numpy_dtype("FLOAT") == np.float32
    assert trt_backend.numpy_dtype("DataType.HALF") == np.float16
    assert trt_backend.numpy_dtype("INT32") == np.int32
    assert trt_backend.numpy_dtype("INT64") == np.int64
    with pytest.raises(FcnError, match="no numpy equivalent"):
        trt_backend.numpy_dtype("BF16")
    # Finding (8): TensorRT 11's E8M0 and any type a later release adds get the same clear line
    # (before: "unknown TensorRT data type").
    for name in ("E8M0", "DataType.FP4", "COMPLEX"):
        with pytest.raises(FcnError, match="no numpy equivalent"):
            trt_backend.numpy_dtype(name)


def test_version_parsing():
    assert trt_backend.parse_version("10.3.0.26") == (10, 3, 0)
    assert trt_backend.parse_version("11.1") == (11, 1, 0)
    trt_backend.require_trt10("10.0.1")
    with pytest.raises(FcnError, match=">= 10"):
        trt_backend.require_trt10("8.6.1")


def _sidecar(**kw):
    d = dict(info=tiny_info(5), input_name="input", output_names=("logits",), profile=PROFILE,
             precision="fp16", tensorrt_version="10.3.0", gpu="NVIDIA Orin")
    d.update(kw)
    return PlanSidecar(**d)


def test_validate_io_against_sidecar():
    sc = _sidecar()
    assert trt_backend.validate_io([("input", True, "float32"), ("logits", False, "float32")], sc) == ("input", ["logits"])
    with pytest.raises(FcnError, match="sidecar says 'input'"):
        trt_backend.validate_io([("images", True, "float32"), ("logits", False, "float32")], sc)
    with pytest.raises(FcnError, match="lacks output"):
        trt_backend.validate_io([("input", True, "float32"), ("labels", False, "int32")], sc)
    with pytest.raises(FcnError, match="2 inputs"):
        trt_backend.validate_io([("input", True, "float32"), ("x", True, "float32"), ("logits", False, "float32")], sc)


def test_deserialize_failure_message():
    msg = trt_backend.deserialize_failure("m.plan", _sidecar(compute_capability="8.7"), "10.8.0", "NVIDIA RTX 4090", "8.9")
    assert "built with TensorRT 10.3.0 on GPU NVIDIA Orin (sm_87)" in msg
    assert "this machine has TensorRT 10.8.0 on GPU NVIDIA RTX 4090 (sm_89)" in msg
    assert "version" in msg and "rebuild with fcn-build" in msg


# -- sidecar ---------------------------------------------------------------------------------------

def test_sidecar_path_and_roundtrip(tmp_path):
    plan = tmp_path / "m.plan"
    assert sidecar_path(plan) == tmp_path / "m.plan.json"
    plan.write_bytes(b"engine bytes")
    import hashlib

    sc = _sidecar(plan_sha256=hashlib.sha256(b"engine bytes").hexdigest(), builder={"strongly_typed": True})
    write_sidecar(plan, sc)
    back = read_sidecar(plan)
    assert back == sc
    assert back.info.class_names == sc.info.class_names and back.profile == PROFILE


def test_plan_without_sidecar_is_refused(tmp_path):
    plan = tmp_path / "m.plan"
    plan.write_bytes(b"x")
    with pytest.raises(FcnError, match="has no sidecar m.plan.json.*fcn-build"):
        read_sidecar(plan)
    # The runner checks the sidecar before it needs TensorRT, so this fails the same way here.
    with pytest.raises(FcnError, match="has no sidecar"):
        trt_backend.TrtRunner(plan)
    import fcn_deploy

    with pytest.raises(FcnError, match="has no sidecar"):
        fcn_deploy.load(plan)


def test_bad_sidecars(tmp_path):
    plan = tmp_path / "m.plan"
    plan.write_bytes(b"engine")
    side = sidecar_path(plan)
    side.write_text("{not json")
    with pytest.raises(FcnError, match="not valid JSON"):
        read_sidecar(plan)
    good = _sidecar().to_dict()
    for mutate, words in [
        (lambda d: d.update(format="other"), "not an fcn-deploy plan sidecar"),
        (lambda d: d.update(format_version=9), "format_version 9"),
        (lambda d: d.pop("model_info"), "lacks model_info"),
        (lambda d: d["model_info"].pop("num_classes"), "lacks num_classes"),
        (lambda d: d.update(profile={"min": [1, 3, 9, 9], "opt": [1, 3, 8, 8], "max": [1, 3, 9, 9]}), "min <= opt <= max"),
        (lambda d: d.update(output_names=[]), "output_names"),
        (lambda d: d.update(plan_sha256="0" * 64), "belongs to a different plan"),
    ]:
        d = json.loads(json.dumps(good))
        mutate(d)
        side.write_text(json.dumps(d))
        with pytest.raises(FcnError, match=words):
            read_sidecar(plan)


def test_tensorrt_missing_is_one_clear_line(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def fake_import(name, *a, **kw):
        if name == "tensorrt" or name.startswith("tensorrt."):
            raise ImportError("No module named 'tensorrt'")
        return real_import(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(FcnError) as e:
        trt_backend.import_tensorrt()
    assert str(e.value) == "TensorRT is not installed: pip install tensorrt on a machine with an NVIDIA GPU"
    # A plan with a valid sidecar gets that line from the runner too.
    plan = tmp_path / "m.plan"
    plan.write_bytes(b"engine")
    write_sidecar(plan, _sidecar())
    with pytest.raises(FcnError, match="TensorRT is not installed"):
        trt_backend.TrtRunner(plan)


@pytest.mark.gpu
def test_plan_matches_onnxruntime_on_gpu(tmp_path):
    """End to end on an NVIDIA GPU: fcn-build a tiny exported ONNX, segment with the plan and
    with onnxruntime, labels agree. Skipped on machines without TensorRT + CUDA."""
    import fcn_deploy
    from fcn_deploy.build import main as build_main
    from runtime_models import make_tiny_onnx, random_image

    onnx_path = tmp_path / "tiny.onnx"
    make_tiny_onnx(onnx_path, tiny_info(5))
    plan = tmp_path / "tiny.plan"
    assert build_main([str(onnx_path), str(plan), "--min", "1x3x16x16", "--opt", "1x3x64x80", "--max", "2x3x128x128"]) == 0
    img = random_image(64, 80)
    with fcn_deploy.load(plan) as seg_trt, fcn_deploy.load(onnx_path, backend="onnxruntime", providers="cpu") as seg_ort:
        a = seg_trt.segment(img)
        b = seg_ort.segment(img)
        assert (a.labels == b.labels).mean() > 0.999
        assert a.timing.h2d_ms is not None and a.timing.compute_ms is not None
        with pytest.raises(FcnError, match="profile"):
            seg_trt.segment(random_image(300, 300))
        assert seg_trt.segment(random_image(300, 300), resize="fit").labels.shape == (300, 300)


def test_gpu_probe_says_what_is_missing(monkeypatch):
    import sys
    import types

    from fcn_deploy.backends.cuda_buffers import gpu_unavailable_reason

    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import fails
    assert gpu_unavailable_reason().startswith("TensorRT is not installed")
    monkeypatch.setitem(sys.modules, "tensorrt", types.ModuleType("tensorrt"))
    monkeypatch.setitem(sys.modules, "pycuda", None)
    monkeypatch.setitem(sys.modules, "pycuda.driver", None)
    assert gpu_unavailable_reason().startswith("pycuda/CUDA is not usable")
