"""Helpers for the torchfcn / Caffe / pochih import tests (not a test file).

``load_torchfcn()`` loads torchfcn's own model classes from the installed ``torchfcn`` package
(1.9.7, ``pip install --no-deps torchfcn==1.9.7``): only ``torchfcn/models/fcn32s.py``,
``fcn16s.py`` and ``fcn8s.py`` are executed, because the package's ``__init__`` imports its
datasets/trainer/VGG helpers, which need torchvision (not importable beside this torch), scipy,
scikit-image and pytz. Those three files import ``fcn`` (wkentaro's data-download package, only
used by their ``download()`` classmethods); where it is not installed an empty module stands in,
so any use of it raises AttributeError (test_import_torchfcn checks that ``download`` fails).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import types
from pathlib import Path

import numpy as np

SIZES_FAST = ((97, 131),)
SIZES_ALL = ((97, 131), (360, 480), (500, 375))


def torchfcn_missing_reason():
    if os.environ.get("FCN_DEPLOY_NO_TORCHFCN"):  # to run the suite as a fresh clone without torchfcn would
        return "FCN_DEPLOY_NO_TORCHFCN is set"
    spec = importlib.util.find_spec("torchfcn")
    if spec is None or not spec.submodule_search_locations:
        return "torchfcn not installed (pip install --no-deps torchfcn==1.9.7; its deps need torchvision)"
    return None


_TFCN = None


def load_torchfcn():
    """A namespace with torchfcn's FCN32s, FCN16s, FCN8s, FCN8sAtOnce (its own code)."""
    global _TFCN
    if _TFCN is not None:
        return _TFCN
    spec = importlib.util.find_spec("torchfcn")
    models_dir = Path(list(spec.submodule_search_locations)[0]) / "models"
    if importlib.util.find_spec("fcn") is None and "fcn" not in sys.modules:
        sys.modules["fcn"] = types.ModuleType("fcn")  # empty: any attribute use raises
    pkg = types.ModuleType("_torchfcn_models")
    pkg.__path__ = [str(models_dir)]
    sys.modules["_torchfcn_models"] = pkg
    fcn32s = importlib.import_module("_torchfcn_models.fcn32s")
    fcn16s = importlib.import_module("_torchfcn_models.fcn16s")
    fcn8s = importlib.import_module("_torchfcn_models.fcn8s")
    _TFCN = types.SimpleNamespace(FCN32s=fcn32s.FCN32s, FCN16s=fcn16s.FCN16s, FCN8s=fcn8s.FCN8s,
                                  FCN8sAtOnce=fcn8s.FCN8sAtOnce, path=str(models_dir))
    return _TFCN


def randomize_(module, seed: int = 0):
    """Random, non-zero weights of sensible scale in every float parameter and buffer
    (He-scaled convolutions, small biases, BN stats in a valid range)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in list(module.named_parameters()) + list(module.named_buffers()):
            if not t.dtype.is_floating_point:
                continue
            if t.ndim == 4:
                fan_in = t.shape[1] * t.shape[2] * t.shape[3]
                if "upscore" in name or "deconv" in name:
                    fan_in = t.shape[0] * t.shape[2] * t.shape[3] / 4
                t.copy_(torch.randn(t.shape, generator=g) * float(np.sqrt(2.0 / fan_in)))
            elif name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif name.endswith("running_mean"):
                t.copy_(torch.randn(t.shape, generator=g) * 0.1)
            elif name.endswith("weight"):  # BN gamma
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            else:
                t.copy_(torch.randn(t.shape, generator=g) * 0.1)
    return module


def caffe_input(n: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    """A float32 NCHW input as the Caffe/torchfcn convention makes it (BGR 0-255 minus mean)."""
    rng = np.random.default_rng(seed)
    u8 = rng.integers(0, 256, size=(n, 3, h, w)).astype(np.float32)
    mean = np.array([104.00699, 116.66877, 122.67892], np.float32).reshape(1, 3, 1, 1)
    return u8 - mean


def compare(ours: np.ndarray, ref: np.ndarray):
    """(relative L2, label agreement)."""
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    rel = float(np.linalg.norm(ours - ref) / np.linalg.norm(ref))
    agree = float((ours.argmax(1) == ref.argmax(1)).mean())
    return rel, agree


def ort_logits(onnx_path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (y,) = sess.run(["logits"], {"input": x})
    return y


def check_onnx_against(onnx_path, reference_fn, sizes, batches=(1, 2), seed=0, input_fn=caffe_input):
    """ONNX logits vs ``reference_fn(x)`` at every size x batch; returns the rows; asserts the
    issue's bar (relative L2 <= 1e-5, label agreement >= 99.99 %)."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    return _check_against(lambda x: sess.run(["logits"], {"input": x})[0], reference_fn, sizes, batches, seed, input_fn)


def check_torch_against(model, reference_fn, sizes, batches=(1,), seed=0, input_fn=caffe_input):
    """The same bar as :func:`check_onnx_against` for an imported PyTorch model (the default
    run's check of a full-size VGG16 import: the ONNX leg is the exporter's, tested on its own).
    Batch 1 by default: batching is the exported graph's question (its dynamic axis), checked
    by check_onnx_against; in eval mode a PyTorch FCN computes each image of a batch on its own."""
    return _check_against(torch_fn(model), reference_fn, sizes, batches, seed, input_fn)


def torch_fn(model):
    """A PyTorch model as a function of a float32 NCHW array (no grad) -> numpy logits: the
    reference side of every parity check, and the imported side of check_torch_against."""
    import torch

    def fn(x):
        with torch.no_grad():
            return model(torch.from_numpy(x)).numpy()

    return fn


def _check_against(run, reference_fn, sizes, batches, seed, input_fn):
    rows = []
    for h, w in sizes:
        x2 = input_fn(max(batches), h, w, seed=seed + h)
        ref2 = reference_fn(x2)
        for b in batches:
            got = run(x2[:b])
            rel, agree = compare(got, ref2[:b])
            rows.append((f"{h}x{w}", b, rel, agree))
            assert np.ptp(ref2[:b]) > 0 and len(np.unique(ref2[:b].argmax(1))) > 1, "reference is degenerate"
            assert rel <= 1e-5 and agree >= 0.9999, (h, w, b, rel, agree)
    return rows
