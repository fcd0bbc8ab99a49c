"""The TensorRT runner end to end on the CPU, against the strict stand-ins of tensorrt and
pycuda (tests/trt_standin.py): fcn-build writes plan + sidecar, ``fcn_deploy.load(plan)``
segments an image, labels equal the independent numpy answer. Then the review findings, each
with the test that failed before its fix, and the portability guard. Unverified on hardware:
this is the real code against stand-ins, not against TensorRT (README, "GPU status")."""

import json

import numpy as np
import pytest

import fcn_deploy
import trt_standin
from fcn_deploy.build import main as build_main
from fcn_deploy.errors import FcnError
from fcn_deploy.sidecar import sidecar_path
from runtime_models import expected_labels, make_tiny_onnx, random_image, tiny_info

SHAPES = ["--min", "1x3x16x16", "--opt", "1x3x48x64", "--max", "2x3x96x128"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("trt")
    info = tiny_info(5)
    W, b = make_tiny_onnx(d / "tiny.onnx", info)
    return d / "tiny.onnx", info, W, b


def _build(monkeypatch, tiny, tmp_path, version="10.13.0.35", extra=(), **kw):
    onnx, info, W, b = tiny
    trt, cuda = trt_standin.install(monkeypatch, version, **kw)
    plan = tmp_path / "tiny.plan"
    assert build_main([str(onnx), str(plan), *SHAPES, *extra]) == 0
    return trt, cuda, plan


@pytest.mark.parametrize("version", ["10.13.0.35", "11.4.0.106"])
def test_segment_end_to_end_on_the_standin(monkeypatch, tiny, tmp_path, version):
    _, info, W, b = tiny
    trt, cuda, plan = _build(monkeypatch, tiny, tmp_path, version)
    sc = json.loads(sidecar_path(plan).read_text())
    assert sc["tensorrt_version"] == version and sc["gpu"] == "Standin GPU" and sc["compute_capability"] == "8.6"
    img = random_image(40, 56, seed=3)
    with fcn_deploy.load(plan) as seg:
        assert seg.backend == "tensorrt"
        r = seg.segment(img)
        assert r.labels.shape == (40, 56)
        assert (r.labels == expected_labels(img, info, W, b)).mean() > 0.999
        assert r.timing.h2d_ms is not None and r.timing.compute_ms is not None
        r2 = seg.segment(random_image(90, 120, seed=4))  # grows the buffers
        assert r2.labels.shape == (90, 120)
        with pytest.raises(FcnError, match="profile"):
            seg.segment(random_image(300, 300))
    # close(): everything released with the context current, the context popped and detached
    assert cuda.current() is None and cuda.detached == cuda.retained == 1
    assert cuda.released and all(current for _, current in cuda.released)
    # TensorRT objects in dependency order, then the device's events and stream
    assert [w for w, _ in cuda.released] == ["context", "engine", "runtime"] + ["event"] * 4 + ["stream"]
    assert trt.order_violations == []
    assert not cuda._mem, "device memory left allocated after close()"
    assert trt.ignored_loggers == [] and trt.warnings == []


def test_standin_catches_a_host_read_before_synchronize(monkeypatch, tiny, tmp_path):
    """The deferred stream is what makes 'synchronize before host reads' checkable: without
    the synchronize the pinned output holds the stand-in's stale NaNs."""
    trt, cuda, plan = _build(monkeypatch, tiny, tmp_path)
    from fcn_deploy.backends import cuda_buffers

    monkeypatch.setattr(cuda_buffers.CudaDevice, "synchronize", lambda self: None)
    monkeypatch.setattr(cuda_buffers.CudaDevice, "elapsed_ms", lambda self, a, b: 0.0)  # it would raise too
    with fcn_deploy.load(plan) as seg:
        out = seg.runner.infer({"input": np.zeros((1, 3, 16, 16), np.float32)})
        assert np.isnan(out["logits"]).all()


# -- the review findings -------------------------------------------------------------------------

def test_1_engine_outputs_not_in_the_sidecar_are_bound(monkeypatch, tiny, tmp_path):
    """Before: the extra output had no buffer and set_tensor_address got int(None) (TypeError)."""
    trt, cuda, plan = _build(monkeypatch, tiny, tmp_path, extra_outputs=[("aux", "FLOAT", [-1, 5, -1, -1])])
    with fcn_deploy.load(plan) as seg:
        out = seg.runner.infer({"input": np.zeros((1, 3, 16, 16), np.float32)})
        assert set(out) == {"logits"}


def test_2_timing_cache_none_takes_the_fallback(monkeypatch, tiny, tmp_path, caplog):
    """Before: a corrupt cache blob made create_timing_cache return None and set_timing_cache(None) raised."""
    onnx, *_ = tiny
    trt, _ = trt_standin.install(monkeypatch)
    cache = tmp_path / "t.cache"
    cache.write_bytes(b"garbage, not a timing cache")
    plan = tmp_path / "m.plan"
    assert build_main([str(onnx), str(plan), *SHAPES, "--timing-cache", str(cache)]) == 0
    assert "starting a new one" in caplog.text
    assert cache.read_bytes() == trt_standin.CACHE_MAGIC + b"+new"
    trt.fail.add("create_timing_cache")  # even an empty one fails: one clear line
    assert build_main([str(onnx), str(plan), *SHAPES, "--timing-cache", str(cache)]) == 2


@pytest.mark.parametrize("failure", ["deserialize_cuda_engine", "create_execution_context", "portability"])
def test_3_constructor_errors_release_everything(monkeypatch, tiny, tmp_path, failure):
    """Before: stream/events were never destroyed, and the primary context stayed retained."""
    trt, cuda, plan = _build(monkeypatch, tiny, tmp_path)
    if failure == "portability":
        cuda.cc = "9.0"
    else:
        trt.fail.add(failure)
    with pytest.raises(FcnError):
        fcn_deploy.load(plan)
    import gc

    gc.collect()
    assert cuda.current() is None and cuda.detached == cuda.retained == 1
    assert [w for w, _ in cuda.released if w in ("event", "stream")] == ["event"] * 4 + ["stream"]
    assert all(current for _, current in cuda.released) and trt.order_violations == []


def test_4_no_strongly_typed_flag_on_trt11(monkeypatch, tiny, tmp_path):
    """Before: TensorRT 11 got the deprecated STRONGLY_TYPED flag (it warns and ignores it)."""
    trt, _, _ = _build(monkeypatch, tiny, tmp_path, "11.4.0.106")
    assert trt.network._flags == 0 and trt.warnings == []
    trt, _, _ = _build(monkeypatch, tiny, tmp_path, "10.13.0.35")
    assert trt.network._flags == 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)


@pytest.mark.parametrize("failure, words", [("infer_shapes", "cannot infer shapes"),
                                            ("set_tensor_address", "refused the device address"),
                                            ("set_input_shape", "refused input shape"),
                                            ("execute_async_v3", "execute_async_v3 failed")])
def test_5_infer_shapes_and_set_tensor_address_are_checked(monkeypatch, tiny, tmp_path, failure, words):
    """Before: neither result was looked at (execution ran on unset shapes / unbound tensors)."""
    trt, _, plan = _build(monkeypatch, tiny, tmp_path)
    with fcn_deploy.load(plan) as seg:
        trt.fail.add(failure)
        with pytest.raises(FcnError, match=words):
            seg.segment(random_image(20, 20))
        if failure != "execute_async_v3":
            assert ("execute_async_v3",) not in trt.calls


@pytest.mark.parametrize("failure", ["create_network", "create_builder_config", "create_optimization_profile",
                                     "add_optimization_profile", "build_serialized_network"])
def test_builder_failure_returns_are_one_line_and_write_nothing(monkeypatch, tiny, tmp_path, capsys, failure):
    onnx, *_ = tiny
    trt, _ = trt_standin.install(monkeypatch)
    trt.fail.add(failure)
    plan = tmp_path / "m.plan"
    assert build_main([str(onnx), str(plan), *SHAPES]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: TensorRT")
    assert list(tmp_path.iterdir()) == []


def test_6_one_logger_per_process(monkeypatch, tiny, tmp_path):
    """Before: builder and runner each made a Logger; TensorRT keeps the first and ignores the rest."""
    trt, _, plan = _build(monkeypatch, tiny, tmp_path, extra=["--verbose"])
    with fcn_deploy.load(plan):
        pass
    with fcn_deploy.load(plan):
        pass
    assert len(trt.loggers) == 1 and trt.ignored_loggers == []
    assert trt.loggers[0].min_severity == trt.Logger.VERBOSE


def test_7_ort_tensorrt_ep_profile_uses_the_model_input_name(tmp_path, monkeypatch):
    """Before: trt_profile_*_shapes said 'input:...' whatever the model's input was called."""
    from fcn_deploy.backends import ort as ort_backend
    from fcn_deploy.shapes import Profile

    seen = {}

    def fake_resolve(*a, **kw):
        seen.update(kw)
        raise FcnError("stop here")

    onnx = tmp_path / "named.onnx"
    _make_named_input_onnx(onnx, "images")
    monkeypatch.setattr(ort_backend, "resolve_providers", fake_resolve)
    with pytest.raises(FcnError, match="stop here"):
        ort_backend.OrtRunner(onnx, providers="auto", trt_profile=Profile((1, 3, 8, 8), (1, 3, 8, 8), (1, 3, 16, 16)))
    assert seen["input_name"] == "images"


def _make_named_input_onnx(path, name):
    import onnx
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("Relu", [name], ["y"])], "g",
                          [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", 3, "H", "W"])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, "H", "W"])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, str(path))


def test_8_new_datatypes_have_no_numpy_type(monkeypatch, tiny, tmp_path):
    """Before: E8M0 (TensorRT 11) was 'unknown TensorRT data type'."""
    trt, _, plan = _build(monkeypatch, tiny, tmp_path, "11.4.0.106", extra_outputs=[("scales", "E8M0", [-1, 5, -1, -1])])
    with pytest.raises(FcnError, match="TensorRT type E8M0 has no numpy equivalent"):
        fcn_deploy.load(plan)


# -- portability guard -----------------------------------------------------------------------------

def test_plan_from_another_tensorrt_or_gpu_is_one_line(monkeypatch, tiny, tmp_path, capsys):
    trt, cuda, plan = _build(monkeypatch, tiny, tmp_path, "10.13.0.35")
    trt.__version__ = "10.14.1.48"
    with pytest.raises(FcnError) as e:
        fcn_deploy.load(plan)
    assert str(e.value) == (f"{plan}: built with TensorRT 10.13.0.35 on GPU Standin GPU (sm_86); this machine has "
                            "TensorRT 10.14.1.48 on GPU Standin GPU (sm_86): rebuild with fcn-build")
    trt.__version__ = "10.13.0.35"
    cuda.cc, cuda.gpu_name = "8.9", "NVIDIA L4"
    with pytest.raises(FcnError, match=r"on GPU Standin GPU \(sm_86\); this machine has TensorRT 10.13.0.35 on GPU NVIDIA L4 \(sm_89\)"):
        fcn_deploy.load(plan)
    # fcn-predict prints it as one error line
    from fcn_deploy.predict import main as predict_main
    from PIL import Image

    Image.fromarray(random_image(20, 20)).save(tmp_path / "a.png")
    assert predict_main(["--model", str(plan), str(tmp_path / "a.png"), "--out", str(tmp_path / "out")]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "rebuild with fcn-build" in err[0]


def test_version_compatible_and_hardware_compat_plans_are_let_through(monkeypatch, tiny, tmp_path):
    trt, cuda, plan = _build(monkeypatch, tiny, tmp_path, "10.13.0.35", extra=["--version-compatible", "--hardware-compat", "ampere+"])
    trt.__version__ = "10.14.1.48"  # later TensorRT
    cuda.cc = "9.0"  # another Ampere-or-later GPU
    with fcn_deploy.load(plan) as seg:
        assert seg.segment(random_image(20, 20)).labels.shape == (20, 20)
    trt.__version__ = "10.12.0.1"  # earlier TensorRT: refused
    with pytest.raises(FcnError, match="rebuild with fcn-build"):
        fcn_deploy.load(plan)
    trt.__version__ = "10.14.1.48"
    cuda.cc = "7.5"  # Turing: not ampere+
    with pytest.raises(FcnError, match=r"sm_75.*rebuild"):
        fcn_deploy.load(plan)


def test_sidecar_without_compute_capability_checks_the_version_only(monkeypatch, tiny, tmp_path):
    trt, cuda, plan = _build(monkeypatch, tiny, tmp_path)
    side = sidecar_path(plan)
    d = json.loads(side.read_text())
    del d["compute_capability"]
    side.write_text(json.dumps(d))
    cuda.cc = "8.9"  # the stand-in runtime itself refuses (like TensorRT): the deserialize message
    with pytest.raises(FcnError, match="could not deserialize"):
        fcn_deploy.load(plan)
    d["compute_capability"] = "eight"
    side.write_text(json.dumps(d))
    with pytest.raises(FcnError, match="compute_capability 'eight' is not MAJOR.MINOR"):
        fcn_deploy.load(plan)


def test_one_engine_shared_by_two_runners_on_the_standin(monkeypatch, tiny, tmp_path):
    """EngineFromPlan opens the engine once; two runners over it take turns on its context and
    keep their own buffers; closing a runner frees only its buffers, releasing the engine frees
    the rest in TensorRT's order (unverified on hardware: the stand-ins)."""
    _, info, W, b = tiny
    trt, cuda, plan = _build(monkeypatch, tiny, tmp_path)
    from fcn_deploy import backends
    from fcn_deploy.backends.tensorrt import EngineFromPlan

    loader = backends.open_loader(plan, "auto", device_id=0)
    assert isinstance(loader, EngineFromPlan)
    engine = loader()
    a, b_ = loader.runner(engine), loader.runner(engine)
    img = random_image(24, 32, seed=5)
    from fcn_deploy.image import preprocess

    x = preprocess([img], info)
    ya, yb = a.infer({"input": x})["logits"], b_.infer({"input": x})["logits"]
    np.testing.assert_array_equal(ya, yb)
    assert (ya[0].argmax(0) == expected_labels(img, info, W, b)).mean() > 0.999
    a.close()
    assert cuda._mem, "closing one runner must not free the shared engine's memory"
    np.testing.assert_array_equal(b_.infer({"input": x})["logits"], ya)
    b_.close()
    assert not cuda._mem and [w for w, _ in cuda.released] == []  # buffers gone, the engine still open
    loader.release(engine)
    assert [w for w, _ in cuda.released] == ["context", "engine", "runtime"] + ["event"] * 4 + ["stream"]
    with pytest.raises(FcnError, match="closed"):
        b_.infer({"input": x})


def test_engine_released_before_its_borrowing_runner(monkeypatch, tiny, tmp_path):
    """Releasing the engine first: the runner over it says "closed" (one FcnError line), and
    the runner's device buffers are freed with the engine's context (none left once it is
    closed; the stand-in frees only with a context current). Unverified on hardware."""
    _, info, W, b = tiny
    trt, cuda, plan = _build(monkeypatch, tiny, tmp_path)
    from fcn_deploy import backends

    loader = backends.open_loader(plan, "tensorrt")
    engine = loader()
    runner = loader.runner(engine)
    x = np.zeros((1, 3, 16, 16), np.float32)
    runner.infer({"input": x})
    assert cuda._mem  # the runner's input and output buffers
    loader.release(engine)
    assert not cuda._mem and not trt.order_violations
    with pytest.raises(FcnError, match="closed") as e:
        runner.infer({"input": x})
    assert "\n" not in str(e.value)
    runner.close()
    assert not cuda._mem


def test_reload_then_close_releases_both_engines(monkeypatch, tiny, tmp_path):
    """The documented reload (``loader.runner()`` owns what it opens): closing the old and the
    new runner releases both engines and their CUDA contexts (stand-ins; unverified on hardware)."""
    trt, cuda, plan = _build(monkeypatch, tiny, tmp_path)
    from fcn_deploy import backends

    loader = backends.open_loader(plan, "tensorrt")
    old = loader.runner()
    new = loader.runner()
    handed = loader.runner(loader(), owns=True)
    engines = [old._engine, new._engine, handed._engine]
    assert len({id(e) for e in engines}) == 3
    for r in (old, new, handed):
        r.infer({"input": np.zeros((1, 3, 16, 16), np.float32)})
        r.close()
    assert all(e.closed for e in engines) and not cuda._mem
    assert [w for w, _ in cuda.released].count("engine") == 3


def test_warmup_runs_at_the_profile_minimum(monkeypatch, tiny, tmp_path):
    trt, cuda, plan = _build(monkeypatch, tiny, tmp_path)
    from fcn_deploy.backends.tensorrt import TrtRunner

    calls = []
    real = TrtRunner._infer
    monkeypatch.setattr(TrtRunner, "_infer", lambda self, feeds: (calls.append(
        {k: v.shape for k, v in feeds.items()}), real(self, feeds))[1])
    with fcn_deploy.backends.open_runner(plan) as r:
        r.warmup(runs=2, hw=(8, 8))
    assert calls == [{"input": (1, 3, 16, 16)}] * 2
