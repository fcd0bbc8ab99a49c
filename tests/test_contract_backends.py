"""Contract tests over the runtime backend registry (fcn_deploy/backends/__init__.py BACKENDS):
every registered runner class honours the base-class protocol (fcn_deploy/backends/base.py);
where its library is installed it is opened on a tiny ONNX and must answer like the protocol
says; where it is not, opening it is one FcnError line with the install hint. A new backend
(one module + one BACKENDS entry) is tested here without a new test.

The TensorRT runner cannot open a plan here (no GPU): it gets the class-level and
missing-library checks; its behaviour on hardware is unverified here (see test_runtime_tensorrt.py).
"""

from __future__ import annotations

import builtins
import inspect

import numpy as np
import pytest

from fcn_deploy import backends
from fcn_deploy.backends.base import Runner, TensorSpec, Timing
from fcn_deploy.errors import FcnError
from runtime_models import expected_scores, make_tiny_onnx, tiny_info

NAMES = backends.backend_names()
# The library each backend imports (default: its own name).
LIBRARY = {"onnxruntime": "onnxruntime", "openvino": "openvino", "tensorrt": "tensorrt"}


def _lib(name):
    return LIBRARY.get(name, name)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = tmp_path_factory.mktemp("contract") / "tiny.onnx"
    W, b = make_tiny_onnx(path, tiny_info(5))
    return path, W, b


def _model_file(name, tiny, tmp_path):
    if backends.SUFFIXES[name] == ".onnx":
        return tiny[0]
    from fcn_deploy.sidecar import write_sidecar
    from test_runtime_tensorrt import _sidecar

    plan = tmp_path / "m.plan"
    plan.write_bytes(b"engine")
    write_sidecar(plan, _sidecar())
    return plan


def test_every_backend_has_a_suffix_and_an_install_hint():
    assert NAMES == sorted(backends.BACKENDS)
    for name in NAMES:
        assert backends.SUFFIXES[name] in (".onnx", ".plan"), name
        assert "pip install" in backends.INSTALL_HINTS[name], name
        assert backends.canonical_name(name) == name


@pytest.mark.parametrize("name", NAMES)
def test_runner_class_contract(name):
    cls = backends.runner_class(name)
    assert issubclass(cls, Runner), f"{cls} is not a backends.base.Runner"
    assert cls.backend == name
    for method in ("inputs", "outputs", "infer", "close", "model_info", "profile"):
        assert callable(getattr(cls, method, None)), f"{cls.__name__} has no {method}()"
    for method in ("inputs", "outputs", "_infer", "model_info"):
        assert getattr(cls, method) is not getattr(Runner, method, None), f"{cls.__name__} does not implement {method}()"
    for method in ("infer", "infer_timed"):  # the template over _infer, the same for every backend
        assert getattr(cls, method) is getattr(Runner, method), f"{cls.__name__} overrides {method}(); implement _infer"
    params = list(inspect.signature(cls.__init__).parameters.values())
    assert params[1].name == "path" and params[1].kind == inspect.Parameter.POSITIONAL_OR_KEYWORD
    assert all(p.kind == inspect.Parameter.KEYWORD_ONLY for p in params[2:]), "options must be keyword-only"


@pytest.mark.parametrize("name", NAMES)
def test_runner_without_its_library_is_one_clear_line(name, tiny, tmp_path, monkeypatch):
    lib = _lib(name)
    real_import = builtins.__import__

    def no_lib(mod, *a, **k):
        if mod == lib or mod.startswith(lib + "."):
            raise ImportError(f"No module named {lib!r}")
        return real_import(mod, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_lib)
    import sys

    for m in [m for m in sys.modules if m == lib or m.startswith(lib + ".")]:
        monkeypatch.delitem(sys.modules, m)
    with pytest.raises(FcnError) as e:
        backends.runner_class(name)(_model_file(name, tiny, tmp_path))
    msg = str(e.value)
    assert "\n" not in msg and "pip install" in msg, msg


@pytest.mark.parametrize("name", NAMES)
def test_runner_behaviour_contract(name, tiny):
    if backends.SUFFIXES[name] != ".onnx":
        pytest.skip(f"{name} needs its own engine file and hardware (unverified on hardware here)")
    pytest.importorskip(_lib(name))
    path, W, b = tiny
    cls = backends.runner_class(name)
    with cls(path) as r:
        assert r.backend == name and isinstance(r.device, str) and r.device != "?"
        ins, outs = r.inputs(), r.outputs()
        assert len(ins) == 1 and isinstance(ins[0], TensorSpec) and ins[0].name == "input"
        assert ins[0].dtype == "float32" and len(ins[0].shape) == 4 and ins[0].shape[1] == 3
        assert [o.name for o in outs] == ["logits"]
        assert r.profile() is None or len(r.profile()) == 3
        assert r.model_info() == tiny_info(5)
        assert r.last_timing is None
        rgb = np.random.default_rng(0).integers(0, 256, (2, 13, 17, 3)).astype(np.uint8)
        info = tiny_info(5)
        x = ((rgb.astype(np.float32) * info.scale - np.array(info.mean, np.float32)) / np.array(info.std, np.float32))
        got = r.infer({"input": np.ascontiguousarray(x.transpose(0, 3, 1, 2))})
        assert set(got) == {"logits"} and isinstance(got["logits"], np.ndarray)
        want = np.stack([expected_scores(im, info, W, b) for im in rgb])
        np.testing.assert_allclose(got["logits"], want, rtol=1e-4, atol=1e-4)
        assert isinstance(r.last_timing, Timing) and r.last_timing.total_ms > 0
        # A second size on the same runner (dynamic H, W).
        assert r.infer({"input": np.zeros((1, 3, 8, 9), np.float32)})["logits"].shape == (1, 5, 8, 9)
    r.close()  # closing twice is harmless
