"""``fcn_deploy.backends.open_runner``, the one way a model file is opened: ``auto`` resolved,
options checked against the backend (one FcnError line), ``model_info`` read with the runner
closed when that fails, ``.pt`` routed to torch (and a clear line without torch), a loader's
object shared by two runners and reloaded, and every stage (Segmenter.load, the bench's
runtime bridge, fcn-verify's engine) going through it."""

from __future__ import annotations

import numpy as np
import pytest

from fcn_deploy import backends
from fcn_deploy.backends.ort import OrtRunner, SessionFromOnnx
from fcn_deploy.errors import FcnError
from runtime_models import make_tiny_onnx, tiny_info

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("open")
    make_tiny_onnx(d / "tiny.onnx", tiny_info(4))
    make_tiny_onnx(d / "bare.onnx", tiny_info(4), metadata=False)
    return d / "tiny.onnx", d / "bare.onnx"


def test_auto_resolves_like_choose_backend_and_reads_the_info(tiny):
    with backends.open_runner(tiny[0]) as r:
        assert r.backend == backends.choose_backend(tiny[0], log_hint=False)
        assert r.info == tiny_info(4) and r.info is r.info  # read once
    with backends.open_runner(tiny[0], "ORT", providers=["cpu"], threads=1) as r:
        assert isinstance(r, OrtRunner) and r.device == "CPUExecutionProvider" and r.threads == 1


def test_an_option_the_backend_does_not_take_is_one_line(tiny):
    with pytest.raises(FcnError) as e:
        backends.open_runner(tiny[0], "onnxruntime", precision="bf16")
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith("backend 'onnxruntime' does not take option(s) precision; it takes: providers, threads, device_id")
    with pytest.raises(FcnError, match="no such file"):
        backends.open_runner(tiny[0].with_name("missing.onnx"))


def test_the_runner_is_closed_when_model_info_fails(tiny, monkeypatch):
    closed = []
    real = OrtRunner._close
    monkeypatch.setattr(OrtRunner, "_close", lambda self: (closed.append(self), real(self)))
    with pytest.raises(FcnError) as e:
        backends.open_runner(tiny[1], "onnxruntime")
    assert "\n" not in str(e.value) and "bare.onnx" in str(e.value)
    assert len(closed) == 1 and closed[0].session is None


def test_checkpoints_route_to_torch_and_say_so_without_it(monkeypatch, tmp_path):
    ckpt = tmp_path / "m.pth"
    ckpt.write_bytes(b"x")
    real = backends.is_installed
    monkeypatch.setattr(backends, "is_installed", lambda m: real(m) if m != "torch" else True)
    assert backends.choose_backend(ckpt) == "torch" and backends.choose_backend("m.pt", "pytorch") == "torch"
    monkeypatch.setattr(backends, "is_installed", lambda m: real(m) if m != "torch" else False)
    with pytest.raises(FcnError) as e:
        backends.open_runner(ckpt)
    msg = str(e.value)
    assert "\n" not in msg and "PyTorch checkpoint" in msg and backends.INSTALL_HINTS["torch"] in msg
    with pytest.raises(FcnError, match="runs only on backend 'torch', not 'openvino'"):
        backends.open_runner(ckpt, "openvino")


def test_one_loaded_session_shared_by_two_runners_and_reloaded(tiny):
    loader = backends.open_loader(tiny[0], "onnxruntime", providers="cpu")
    assert isinstance(loader, SessionFromOnnx)
    session = loader()
    a, b = loader.runner(session), loader.runner(session)
    assert a.session is b.session is session and a.info == b.info == tiny_info(4)
    x = np.random.default_rng(1).normal(size=(1, 3, 6, 7)).astype(np.float32)
    want = a.infer({"input": x})["logits"]
    a.warmup(hw=(8, 8))
    a.close()  # a shared object stays open for the other runner
    with pytest.raises(FcnError, match="closed"):
        a.infer({"input": x})
    np.testing.assert_array_equal(b.infer({"input": x})["logits"], want)
    fresh = loader()  # calling the loader again is a reload
    assert fresh is not session
    with loader.runner(fresh) as c:
        np.testing.assert_array_equal(c.infer({"input": x})["logits"], want)
    b.close()


def test_a_runner_that_opened_its_object_gives_it_back(tiny):
    released = []

    class Counting(SessionFromOnnx):
        def release(self, loaded):
            released.append(loaded)

    owned = Counting(tiny[0], providers="cpu").runner()
    session = owned.session
    shared = Counting(tiny[0], providers="cpu").runner(session)
    shared.close()
    assert released == []
    owned.close()
    owned.close()
    assert released == [session]


def test_every_stage_opens_through_open_runner(tiny, monkeypatch):
    from fcn_deploy.benchmarks import runtime
    from fcn_deploy.export import verify
    from fcn_deploy.segmenter import Segmenter

    calls = []
    real = backends.open_runner

    def spy(path, backend="auto", **options):
        calls.append((backend, options))
        return real(path, backend, **options)

    monkeypatch.setattr(backends, "open_runner", spy)
    Segmenter.load(tiny[0], "onnxruntime", threads=1).close()
    runtime.open_segmenter(tiny[0], backend="onnxruntime", threads=2).close()
    runtime.open_runner(tiny[0], backend="onnxruntime", threads=3).close()
    assert verify.run_onnx(tiny[0], np.zeros((1, 3, 4, 4), np.float32)).shape == (1, 4, 4, 4)
    assert calls == [("onnxruntime", {"threads": 1}), ("onnxruntime", {"threads": 2}),
                     ("onnxruntime", {"log_hint": True, "threads": 3}),
                     ("onnxruntime", {"log_hint": False, "read_info": False, "providers": ("cpu",)})]


def test_the_bench_drops_threads_where_the_backend_has_none(tmp_path):
    from fcn_deploy.benchmarks.runtime import with_threads

    assert with_threads("m.plan", "auto", 4, {}) == {}
    assert with_threads("m.plan", "tensorrt", None, {"device_id": 0}) == {"device_id": 0}
    assert with_threads("m.onnx", "openvino", 4, {"precision": "f32"}) == {"precision": "f32", "threads": 4}
