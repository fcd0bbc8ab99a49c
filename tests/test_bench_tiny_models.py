"""Tiny models and datasets for the benchmark tests (imported by the other test_bench_* files).

- ``tiny_onnx``: a two-conv ONNX segmenter (input "input" N,3,H,W -> "logits" N,C,H,W) with
  fcn-deploy metadata, built with onnx.helper in milliseconds;
- ``tiny_checkpoint``: a real fcn-deploy checkpoint (FCN-8s ResNet-18, score layers randomised
  so its predictions are not all class 0);
- ``tiny_camvid``: a CamVid-layout folder (train/ trainannot/ val/ valannot/) with small images.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fcn_deploy.modelinfo import ModelInfo
from fcn_deploy.palette import CAMVID_CLASSES, CAMVID_PALETTE, default_palette


def tiny_info(classes: int = 3, **kw) -> ModelInfo:
    if classes == len(CAMVID_CLASSES):
        names, pal = tuple(CAMVID_CLASSES), tuple(CAMVID_PALETTE)
    else:
        names, pal = tuple(f"c{i}" for i in range(classes)), tuple(default_palette(classes))
    return ModelInfo(arch="tiny", backbone="conv", num_classes=classes, class_names=names, palette=pal, **kw)


def tiny_onnx(path, *, classes: int = 3, width: int = 4, depth: int = 1, seed: int = 0,
              static_hw=None, info: ModelInfo = None) -> Path:
    """Conv3x3(3->width)+ReLU, (depth-1) x Conv3x3(width->width)+ReLU, Conv1x1(width->classes)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    h, w = static_hw if static_hw else ("height", "width")
    inp = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, h, w])
    out = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes, h, w])
    nodes, inits = [], []
    prev, cin = "input", 3
    for i in range(depth):
        wname = f"w{i}"
        inits.append(numpy_helper.from_array(rng.normal(0, 0.5, (width, cin, 3, 3)).astype(np.float32), wname))
        inits.append(numpy_helper.from_array(rng.normal(0, 0.1, (width,)).astype(np.float32), f"b{i}"))
        nodes.append(helper.make_node("Conv", [prev, wname, f"b{i}"], [f"c{i}"], pads=[1, 1, 1, 1]))
        nodes.append(helper.make_node("Relu", [f"c{i}"], [f"r{i}"]))
        prev, cin = f"r{i}", width
    inits.append(numpy_helper.from_array(rng.normal(0, 1.0, (classes, cin, 1, 1)).astype(np.float32), "wout"))
    inits.append(numpy_helper.from_array(rng.normal(0, 0.1, (classes,)).astype(np.float32), "bout"))
    nodes.append(helper.make_node("Conv", [prev, "wout", "bout"], ["logits"]))
    graph = helper.make_graph(nodes, "tiny", [inp], [out], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="fcn-deploy-tests")
    model.ir_version = 8
    info = info or tiny_info(classes)
    for k, v in info.to_metadata().items():
        model.metadata_props.add(key=k, value=v)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return Path(path)


def tiny_checkpoint(path, *, classes: int = 3, seed: int = 0) -> Path:
    import torch

    from fcn_deploy.training.checkpoint import save_checkpoint
    from fcn_deploy.training.models import build_model

    torch.manual_seed(seed)
    model = build_model("fcn8s", "resnet18", classes)
    with torch.no_grad():
        for name, mod in model.named_modules():
            if name.startswith("score") and isinstance(mod, torch.nn.Conv2d):
                mod.weight.normal_(0, 0.05)
                mod.bias.normal_(0, 0.5)
    info = tiny_info(classes).replace(arch="fcn8s", backbone="resnet18")
    save_checkpoint(path, model, info)
    return Path(path)


def tiny_camvid(root, *, n_val: int = 3, n_train: int = 1, size=(24, 32), seed: int = 0, sizes=None) -> Path:
    """CamVid layout with random RGB images and labels 0..11 (11 = void)."""
    from PIL import Image

    root = Path(root)
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("val", n_val)):
        (root / split).mkdir(parents=True, exist_ok=True)
        (root / f"{split}annot").mkdir(parents=True, exist_ok=True)
        for i in range(n):
            h, w = sizes[i % len(sizes)] if sizes else size
            img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            lab = rng.integers(0, 12, (h, w), dtype=np.uint8)
            Image.fromarray(img).save(root / split / f"img{i:03d}.png")
            Image.fromarray(lab).save(root / f"{split}annot" / f"img{i:03d}.png")
    return root


# -- checks of the helpers themselves -------------------------------------------------------------

def test_tiny_onnx_runs_and_carries_metadata(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    p = tiny_onnx(tmp_path / "m.onnx", classes=5)
    s = ort.InferenceSession(str(p), providers=["CPUExecutionProvider"])
    y = s.run(None, {"input": np.ones((2, 3, 7, 9), np.float32)})[0]
    assert y.shape == (2, 5, 7, 9)
    meta = s.get_modelmeta().custom_metadata_map
    assert ModelInfo.from_metadata(meta).num_classes == 5


def test_tiny_camvid_layout(tmp_path):
    root = tiny_camvid(tmp_path / "cv", n_val=2)
    assert sorted(p.name for p in (root / "val").iterdir()) == ["img000.png", "img001.png"]
    assert (root / "valannot" / "img001.png").is_file()
