"""Contract tests over the runtime backend registry (fcn_deploy/backends/__init__.py BACKENDS):
every registered runner -- onnxruntime, OpenVINO, TensorRT, the PyTorch baseline and the ONNX
reference evaluator -- honours the base-class protocol (fcn_deploy/backends/base.py: a Loader
that opens the library object, a Runner over it) and is opened the one way,
``backends.open_runner``. Where its library is installed it is opened on a tiny model and must
answer like the protocol says; where it is not, opening it is one FcnError line with the
install hint. A new backend (one module + one BACKENDS entry) is tested here without a new test.

The TensorRT runner cannot open a plan here (no GPU): it gets the class-level and
missing-library checks here and runs end to end on the strict stand-ins in test_trt_runner.py;
its behaviour on hardware is unverified here.
"""

from __future__ import annotations

import builtins
import inspect

import numpy as np
import pytest

from fcn_deploy import backends
from fcn_deploy.backends.base import Loader, Runner, TensorSpec, Timing
from fcn_deploy.errors import FcnError
from runtime_models import expected_scores, make_tiny_onnx, tiny_info

NAMES = backends.backend_names()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = tmp_path_factory.mktemp("contract") / "tiny.onnx"
    W, b = make_tiny_onnx(path, tiny_info(5))
    return path, W, b


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    pytest.importorskip("torch")
    from test_bench_tiny_models import tiny_checkpoint

    return tiny_checkpoint(tmp_path_factory.mktemp("contract") / "tiny.pt", classes=5, seed=1)


def _plan(tmp_path):
    from fcn_deploy.sidecar import write_sidecar
    from test_runtime_tensorrt import _sidecar

    plan = tmp_path / "m.plan"
    plan.write_bytes(b"engine")
    write_sidecar(plan, _sidecar())
    return plan


def _model_file(name, tiny, tmp_path):
    suffix = backends.SUFFIXES[name][0]
    if suffix == ".onnx":
        return tiny[0]
    if suffix == ".plan":
        return _plan(tmp_path)
    path = tmp_path / f"m{suffix}"  # never read: the library is missing
    path.write_bytes(b"not read")
    return path


def test_every_backend_has_suffixes_a_library_and_an_install_hint():
    assert NAMES == sorted(backends.BACKENDS)
    for name in NAMES:
        assert backends.SUFFIXES[name] and all(s.startswith(".") for s in backends.SUFFIXES[name]), name
        assert backends.LIBRARIES[name], name
        assert "pip install" in backends.INSTALL_HINTS[name], name
        assert backends.canonical_name(name) == name
    for alias, name in backends.ALIASES.items():
        assert backends.canonical_name(alias) == name


@pytest.mark.parametrize("name", NAMES)
def test_runner_class_contract(name):
    cls = backends.runner_class(name)
    assert issubclass(cls, Runner), f"{cls} is not a backends.base.Runner"
    assert cls.backend == name
    loader = cls.loader_class
    assert loader is not None and issubclass(loader, Loader), f"{cls.__name__} has no Loader"
    assert loader.runner_class is cls, f"{loader.__name__}.runner_class is not {cls.__name__}"
    for method in ("_bind", "inputs", "outputs", "_infer", "model_info"):
        assert getattr(cls, method) is not getattr(Runner, method, None), f"{cls.__name__} does not implement {method}()"
    for method in ("__init__", "infer", "infer_timed", "close", "warmup"):  # the templates, one for every backend
        assert getattr(cls, method) is getattr(Runner, method), f"{cls.__name__} overrides {method}()"
    assert loader.__call__ is not Loader.__call__
    params = list(inspect.signature(loader.__init__).parameters.values())
    assert params[1].name == "path" and params[1].kind == inspect.Parameter.POSITIONAL_OR_KEYWORD
    assert all(p.kind == inspect.Parameter.KEYWORD_ONLY for p in params[2:]), "options must be keyword-only"
    assert backends.runner_options(cls) == [p.name for p in params[2:]]


@pytest.mark.parametrize("name", NAMES)
def test_runner_without_its_library_is_one_clear_line(name, tiny, tmp_path, monkeypatch):
    lib = backends.LIBRARIES[name]
    real_import = builtins.__import__

    def no_lib(mod, *a, **k):
        if mod == lib or mod.startswith(lib + "."):
            raise ImportError(f"No module named {lib!r}")
        return real_import(mod, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_lib)  # an import statement asks this even when loaded
    with pytest.raises(FcnError) as e:
        backends.open_runner(_model_file(name, tiny, tmp_path), name)
    msg = str(e.value)
    assert "\n" not in msg and msg.endswith(backends.INSTALL_HINTS[name]) and "not installed" in msg, msg


def _open(name, tiny, checkpoint_fixture):
    lib = backends.LIBRARIES[name]
    if backends.SUFFIXES[name][0] == ".plan":
        pytest.skip(f"{name} needs its own engine file and hardware (unverified on hardware here)")
    pytest.importorskip(lib)
    path = checkpoint_fixture() if name == "torch" else tiny[0]
    # A file type only this backend runs (a checkpoint) must reach it under "auto" too.
    only_here = [n for n in NAMES if path.suffix in backends.SUFFIXES[n]] == [name]
    return path, backends.open_runner(path, "auto" if only_here else name)


def _expected(runner, x, rgb, tiny):
    if runner.backend != "torch":
        info = tiny_info(5)
        return np.stack([expected_scores(im, info, tiny[1], tiny[2]) for im in rgb])
    import torch

    # The module the runner loaded, called directly (test_bench_torch.py checks the load itself
    # against an independent rebuild from the checkpoint).
    with torch.no_grad():
        return runner._model(torch.from_numpy(x)).numpy()


@pytest.mark.parametrize("name", NAMES)
def test_runner_behaviour_contract(name, tiny, request):
    path, r = _open(name, tiny, lambda: request.getfixturevalue("checkpoint"))
    with r:
        assert r.backend == name and isinstance(r.device, str) and r.device != "?"
        assert r.path == path and r.loader.path == path
        ins, outs = r.inputs(), r.outputs()
        assert len(ins) == 1 and isinstance(ins[0], TensorSpec) and ins[0].name == "input"
        assert ins[0].dtype == "float32" and len(ins[0].shape) == 4 and ins[0].shape[1] == 3
        assert [o.name for o in outs] == ["logits"]
        assert r.profile() is None or len(r.profile()) == 3
        info = r.model_info()
        assert r.info == info and info.num_classes == 5 and (name == "torch" or info == tiny_info(5))
        assert r.last_timing is None
        rgb = np.random.default_rng(0).integers(0, 256, (2, 13, 17, 3)).astype(np.uint8)
        x = ((rgb.astype(np.float32) * info.scale - np.array(info.mean, np.float32)) / np.array(info.std, np.float32))
        x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
        got = r.infer({"input": x})
        assert set(got) == {"logits"} and isinstance(got["logits"], np.ndarray)
        np.testing.assert_allclose(got["logits"], _expected(r, x, rgb, tiny), rtol=1e-4, atol=1e-4)
        assert isinstance(r.last_timing, Timing) and r.last_timing.total_ms > 0
        out, timing = r.infer_timed({"input": np.zeros((1, 3, 8, 9), np.float32)})  # a second size (dynamic H, W)
        assert out["logits"].shape == (1, 5, 8, 9) and isinstance(timing, Timing)
        r.warmup(hw=(8, 8))
    r.close()  # closing twice is harmless
    with pytest.raises(FcnError, match="closed"):
        r.infer({"input": x})


def test_torch_errors_are_one_line_and_an_explicit_torch_opens_any_suffix(checkpoint, tmp_path):
    """The model's own RuntimeError becomes one FcnError line, like the other backends'; a
    named backend opens a file whose suffix is no other backend's (auto goes by the suffix),
    and so does the bench's ``torch:`` target."""
    from fcn_deploy.benchmarks.targets import open_target, parse_target

    other = tmp_path / "model.bin"
    other.write_bytes(checkpoint.read_bytes())
    with pytest.raises(FcnError, match="unknown model file type .bin"):
        backends.open_runner(other)
    with backends.open_runner(other, "torch") as r:
        assert r.infer({"input": np.zeros((1, 3, 8, 8), np.float32)})["logits"].shape == (1, 5, 8, 8)
        with pytest.raises(FcnError) as e:
            r.infer({"input": np.zeros((1, 3, 0, 5), np.float32)})
    assert str(e.value).startswith("PyTorch failed on input (1, 3, 0, 5): ") and "\n" not in str(e.value)
    target = open_target(parse_target(f"TORCH:{other}"))
    try:
        assert target.error is None and target.runner.backend == "torch"
    finally:
        target.close()
