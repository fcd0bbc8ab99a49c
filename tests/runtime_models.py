"""Helpers for the runtime tests (not a test file): tiny hand-built ONNX models whose exact
answer numpy can compute independently, so pre- and post-processing are checked to the pixel
in milliseconds, without torch.

Each model is a 1x1 convolution 3 -> C (random weights and bias) on the normalized input,
followed by nothing (logits), Softmax (probs) or ArgMax (labels).
"""

from __future__ import annotations

import numpy as np

from fcn_deploy.modelinfo import ModelInfo
from fcn_deploy.palette import default_palette


def tiny_info(num_classes=5, *, channel_order="RGB", output="logits", **kw) -> ModelInfo:
    mean = (0.485, 0.456, 0.406) if channel_order == "RGB" else (104.0, 116.7, 122.7)
    std = (0.229, 0.224, 0.225) if channel_order == "RGB" else (1.0, 1.0, 1.0)
    scale = 1 / 255 if channel_order == "RGB" else 1.0
    d = dict(arch="fcn8s", backbone="tiny", num_classes=num_classes,
             class_names=tuple(f"class{i}" for i in range(num_classes)),
             palette=tuple(default_palette(num_classes)), channel_order=channel_order,
             scale=scale, mean=mean, std=std, output=output,
             output_name={"logits": "logits", "probs": "probs", "labels": "labels"}[output])
    d.update(kw)
    return ModelInfo(**d)


def make_tiny_onnx(path, info: ModelInfo = None, *, seed=0, channels_out=None, metadata=True,
                   batch="N", hw=("H", "W"), input_dtype="float32", labels_keep_dim=False,
                   declared_channels=None):
    """Write the tiny model; returns (W, b) so tests can compute the expected answer."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    info = info or tiny_info()
    c = channels_out or info.num_classes
    cdecl = c if declared_channels is None else declared_channels  # what the graph declares
    rng = np.random.default_rng(seed)
    W = rng.normal(size=(c, 3, 1, 1)).astype(np.float32)
    b = rng.normal(size=(c,)).astype(np.float32) * 0.1
    elem = TensorProto.FLOAT16 if input_dtype == "float16" else TensorProto.FLOAT
    nodes = []
    x = "input"
    if input_dtype == "float16":
        nodes.append(helper.make_node("Cast", ["input"], ["x32"], to=TensorProto.FLOAT))
        x = "x32"
    kind = info.output
    out_name = info.output_name
    conv_out = "logits" if kind == "logits" else "scores"
    nodes.append(helper.make_node("Conv", [x, "W", "B"], [conv_out]))
    if kind == "probs":
        nodes.append(helper.make_node("Softmax", [conv_out], [out_name], axis=1))
        out = helper.make_tensor_value_info(out_name, TensorProto.FLOAT, [batch, cdecl, *hw])
    elif kind == "labels":
        nodes.append(helper.make_node("ArgMax", [conv_out], [out_name], axis=1, keepdims=1 if labels_keep_dim else 0))
        shape = [batch, 1, *hw] if labels_keep_dim else [batch, *hw]
        out = helper.make_tensor_value_info(out_name, TensorProto.INT64, shape)
    else:
        out = helper.make_tensor_value_info(out_name, TensorProto.FLOAT, [batch, cdecl, *hw])
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("input", elem, [batch, 3, *hw])], [out],
        [numpy_helper.from_array(W, "W"), numpy_helper.from_array(b, "B")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    if metadata:
        helper.set_model_props(model, info.to_metadata())
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return W, b


def expected_scores(rgb: np.ndarray, info: ModelInfo, W, b) -> np.ndarray:
    """(C, H, W) scores by the documented convention, computed independently of fcn_deploy."""
    img = rgb[..., ::-1] if info.channel_order == "BGR" else rgb
    x = (img.astype(np.float64) * info.scale - np.array(info.mean)) / np.array(info.std)
    s = np.einsum("hwc,kc->khw", x, W[:, :, 0, 0].astype(np.float64)) + b[:, None, None]
    return s


def expected_labels(rgb, info, W, b) -> np.ndarray:
    return expected_scores(rgb, info, W, b).argmax(0)


def random_image(h, w, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)
