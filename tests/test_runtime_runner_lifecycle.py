"""Runner lifecycle and the options of ``open_runner`` (review of the runners work, issue 11):
export verification opens any file name without fcn-deploy metadata or the slow-file hint; a
reload owns what it opens; close and attach release the owned object even when the runner's
own cleanup raises; a runner over a loaded OpenVINO / reference object keeps the metadata it
was loaded with; ``warmup`` runs the model; ``total_ms`` is the template's; options without a
path are refused; Segmenter.load closes the runner it cannot use. All on the tiny 1x1-conv
ONNX (tests/runtime_models.py), in process."""

from __future__ import annotations

import logging
import shutil

import numpy as np
import pytest

from fcn_deploy import backends
from fcn_deploy.backends.base import Runner, Timing
from fcn_deploy.errors import FcnError
from runtime_models import make_tiny_onnx, tiny_info

pytest.importorskip("onnxruntime")
from fcn_deploy.backends.ort import OrtRunner, SessionFromOnnx  # noqa: E402

X = np.random.default_rng(3).normal(size=(1, 3, 5, 6)).astype(np.float32)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("lifecycle")
    make_tiny_onnx(d / "tiny.onnx", tiny_info(4))
    make_tiny_onnx(d / "bare.onnx", tiny_info(4), metadata=False)
    make_tiny_onnx(d / "half.onnx", tiny_info(4, precision="fp16"))
    make_tiny_onnx(d / "seven.onnx", tiny_info(7))
    make_tiny_onnx(d / "mismatch.onnx", tiny_info(4), channels_out=6)
    return d


class Counting(SessionFromOnnx):
    """The onnxruntime loader, counting what its runners give back."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.released = []

    def release(self, loaded):
        self.released.append(loaded)


# -- export verification (finding 1, 2) ------------------------------------------------------------

def test_verification_runs_any_file_name_and_files_without_metadata(files, tmp_path):
    from fcn_deploy.export import verify

    out = verify.run_onnx(files / "bare.onnx", X)  # no fcn-deploy metadata: still executed
    assert out.shape == (1, 4, 5, 6)
    other = tmp_path / "out.bin"  # fcn-export writes any name the user gives
    shutil.copy(files / "tiny.onnx", other)
    np.testing.assert_array_equal(verify.run_onnx(other, X), verify.run_onnx(files / "tiny.onnx", X))
    # auto still goes by the suffix; a named backend opens the file
    with pytest.raises(FcnError, match="unknown model file type .bin"):
        backends.open_runner(other)
    with backends.open_runner(other, "onnxruntime") as r:
        assert r.info.num_classes == 4


def test_verification_does_not_print_the_runtime_slow_file_hint(files, caplog, monkeypatch):
    from fcn_deploy.export import verify

    monkeypatch.setattr(backends, "cpu_vendor", lambda: "amd")  # an x86 machine: the hint applies
    caplog.set_level(logging.INFO)
    backends.open_runner(files / "half.onnx", "onnxruntime", providers="cpu").close()
    assert any("runs slower" in r.getMessage() for r in caplog.records)  # the runtime says it
    caplog.clear()
    verify.run_onnx(files / "half.onnx", X)
    backends.open_runner(files / "half.onnx", "onnxruntime", providers="cpu", log_hint=False).close()
    assert not [r.getMessage() for r in caplog.records if "slower" in r.getMessage()]


# -- reload, close (finding 3, 5, 15) --------------------------------------------------------------

def test_a_reload_then_close_releases_both_objects(files):
    loader = Counting(files / "tiny.onnx", providers="cpu")
    first = loader.runner()
    old = first.session
    fresh = loader.runner()  # the documented reload: owned by the new runner
    handed = loader.runner(loader(), owns=True)  # an object opened earlier, handed over
    assert fresh.session is not old
    new, given = fresh.session, handed.session
    first.close(), fresh.close(), handed.close()
    assert loader.released == [old, new, given]
    borrowed = loader.runner(new)  # without owns a runner only borrows
    borrowed.close()
    assert loader.released == [old, new, given]


def test_close_and_attach_release_the_owned_object_when_cleanup_raises(files, monkeypatch):
    loader = Counting(files / "tiny.onnx", providers="cpu")
    runner = loader.runner()
    session = runner.session

    def broken(self):
        raise RuntimeError("cleanup failed")

    monkeypatch.setattr(OrtRunner, "_close", broken)
    with pytest.raises(RuntimeError, match="cleanup failed"):
        runner.close()
    assert loader.released == [session]
    with pytest.raises(RuntimeError):
        runner.close()  # a second close does not release it twice
    assert loader.released == [session]

    def bad_bind(self, loader, loaded):
        raise FcnError("bind failed")

    monkeypatch.setattr(OrtRunner, "_bind", bad_bind)
    with pytest.raises(RuntimeError, match="cleanup failed"):  # _close's error, after the release
        loader.runner()
    assert len(loader.released) == 2 and loader.released[1] is not session


def test_options_without_a_path_are_refused():
    with pytest.raises(TypeError, match="providers without a model path"):
        OrtRunner(providers="cpu")


# -- a loaded object keeps its metadata (finding 4) ------------------------------------------------

@pytest.mark.parametrize("backend", ["reference", "openvino"])
def test_a_runner_over_a_loaded_object_keeps_the_metadata_it_was_loaded_with(backend, files, tmp_path):
    pytest.importorskip({"reference": "onnx", "openvino": "openvino"}[backend])
    path = tmp_path / "m.onnx"
    shutil.copy(files / "tiny.onnx", path)
    loader = backends.open_loader(path, backend)
    loaded = loader()
    shutil.copy(files / "seven.onnx", path)  # the file is replaced
    with loader.runner(loaded) as r:
        assert r.info.num_classes == 4 and r.infer({"input": X})["logits"].shape == (1, 4, 5, 6)
    path.unlink()  # and removed
    with loader.runner(loaded) as r:
        assert r.info.num_classes == 4


# -- the templates (finding 7, 13) ----------------------------------------------------------------

def test_warmup_runs_the_model_at_the_given_size(files, monkeypatch):
    calls = []
    real = OrtRunner._infer
    monkeypatch.setattr(OrtRunner, "_infer", lambda self, feeds: (calls.append(
        {k: (v.shape, v.dtype.name, float(np.abs(v).max())) for k, v in feeds.items()}), real(self, feeds))[1])
    with backends.open_runner(files / "tiny.onnx", "onnxruntime") as r:
        r.warmup(runs=2, hw=(8, 8))
    assert calls == [{"input": ((1, 3, 8, 8), "float32", 0.0)}] * 2


class _Fake(Runner):
    """A runner whose _infer reports what a GPU backend separates, or nothing."""

    backend = "fake"

    def __init__(self, timing):
        super().__init__()
        self.timing = timing

    def _infer(self, feeds):
        return {"y": feeds["x"] + 1}, self.timing


def test_total_ms_is_measured_by_the_template():
    r = _Fake(Timing(h2d_ms=0.5, compute_ms=1.5, d2h_ms=0.25))
    out, t = r.infer_timed({"x": np.zeros(2)})
    assert out["y"].tolist() == [1, 1] and t.total_ms is not None and t.total_ms >= 0
    assert (t.h2d_ms, t.compute_ms, t.d2h_ms) == (0.5, 1.5, 0.25)
    r = _Fake(None)  # a backend that cannot separate: compute is the call
    r.infer({"x": np.zeros(2)})
    assert r.last_timing.compute_ms == r.last_timing.total_ms is not None and r.last_timing.h2d_ms is None


# -- Segmenter.load (finding 14) -------------------------------------------------------------------

def test_segmenter_load_closes_the_runner_it_cannot_use(files, monkeypatch):
    from fcn_deploy.segmenter import Segmenter

    closed = []
    real = OrtRunner._close
    monkeypatch.setattr(OrtRunner, "_close", lambda self: (closed.append(self), real(self)))
    with pytest.raises(FcnError, match="outputs 6 class channels but its metadata lists 4"):
        Segmenter.load(files / "mismatch.onnx", "onnxruntime")
    assert len(closed) == 1 and closed[0].session is None


def test_the_bench_reports_the_slow_file_hint_once_and_not_at_load(files, caplog, monkeypatch):
    """A comparison measures a slow pairing on purpose: no WARNING (and no layout scan) while
    the target loads; the runtime's line once in the report's warnings."""
    from fcn_deploy.benchmarks.bench import BenchConfig, run_benchmark
    from fcn_deploy.benchmarks.targets import TargetSpec, open_target

    monkeypatch.setattr(backends, "cpu_vendor", lambda: "amd")
    scans = []
    real_layout = backends.file_layout
    monkeypatch.setattr(backends, "file_layout", lambda p: (scans.append(p), real_layout(p))[1])
    caplog.set_level(logging.WARNING)
    spec = TargetSpec("onnxruntime", str(files / "half.onnx"), "half")
    target = open_target(spec)
    try:
        assert target.error is None and len(scans) == 1  # the scan: after load_ms, for the report
        assert "runs slower" in target.hint
        assert not [r for r in caplog.records if "slower" in r.getMessage()]
    finally:
        target.close()
    doc = run_benchmark([spec], BenchConfig(shapes=((1, 3, 8, 8),), warmup=0, iterations=1, prepost=False, settle_ms=0))
    assert [w for w in doc["warnings"] if "runs slower" in w] == [f"half: {target.hint}"]
