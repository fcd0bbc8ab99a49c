"""Reference outputs of torchvision's OWN segmentation FCN, for the tv-fcn import tests.

Not run by CI or pytest: it needs torchvision, which cannot be installed beside this project's
CPU torch build. Run it with a separate environment outside the repository::

    python3 -m venv /tmp/tvenv
    /tmp/tvenv/bin/pip install torch==2.14.1 torchvision==0.29.1 numpy
    # the small committed fixture (tests/data/torchvision_fcn_small.*):
    /tmp/tvenv/bin/python tests/reference/make_torchvision_reference.py small tests/data
    # the full fcn_resnet50 (random weights, 135 MB state_dict; not committed):
    /tmp/tvenv/bin/python tests/reference/make_torchvision_reference.py full /tmp/tvfull

Both modes build the model with torchvision's own classes, give every parameter and BN buffer
random non-zero values (rounded to float16 precision, so the small fixture can store them as
float16 without changing the model the outputs came from), save torchvision's ``state_dict()``
with ``torch.save`` (the file a torchvision user has), and save the inputs and torchvision's
``model(x)["out"]`` as ``.npz``.

- ``small``: torchvision's ``Bottleneck`` with ``expansion = 1`` (a subclass; the Bottleneck
  code is torchvision's), ``ResNet(block, [1, 1, 1, 1], width_per_group=4,
  replace_stride_with_dilation=[False, True, True])``, ``IntermediateLayerGetter`` on layer4,
  ``FCN(backbone, FCNHead(512, 3))``: the same code paths as fcn_resnet50 (dilation schedule,
  downsample, FCNHead, bilinear resize) at < 2 MB. Sizes 97x131 (batch 2) and 33x47 (batch 1).
- ``full``: ``fcn_resnet50(weights=None, weights_backbone=None, num_classes=21,
  aux_loss=True)`` (aux head included, as in torchvision's pretrained file). Sizes 97x131,
  360x480, 500x375, batch 2 (batch 1 = the first image: eval-mode outputs are per image).

Inputs are uint8 images; the float input is ``(u8 / 255 - mean) / std`` (ImageNet) computed in
float32 numpy by ``normalize`` below, and the tests compute it with the same code.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

MEAN = np.array([0.485, 0.456, 0.406], np.float32).reshape(1, 3, 1, 1)
STD = np.array([0.229, 0.224, 0.225], np.float32).reshape(1, 3, 1, 1)


def normalize(u8: np.ndarray) -> np.ndarray:
    """uint8 NCHW -> float32 NCHW, ImageNet convention (the tests use the same function)."""
    return ((u8.astype(np.float32) / np.float32(255.0)) - MEAN) / STD


def images(shape_list, seed):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, size=s, dtype=np.uint8) for s in shape_list]


def randomize(model, seed: int) -> None:
    """Random non-zero weights and BN statistics, rounded to float16 precision."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in list(model.named_parameters()) + list(model.named_buffers()):
            if not t.is_floating_point():
                continue
            if name.endswith("running_var"):
                v = torch.rand(t.shape, generator=g) + 0.5
            elif name.endswith("running_mean") or (name.endswith("bias")):
                v = torch.randn(t.shape, generator=g) * 0.1
            elif t.ndim == 1:  # BN weight
                v = torch.rand(t.shape, generator=g) * 0.5 + 0.5
            else:  # conv weight: He-scaled so activations stay O(1) through the net
                fan_in = t[0].numel()
                v = torch.randn(t.shape, generator=g) * (2.0 / fan_in) ** 0.5
            t.copy_(v.half().float())


def small_model():
    from torchvision.models._utils import IntermediateLayerGetter
    from torchvision.models.resnet import Bottleneck, ResNet
    from torchvision.models.segmentation.fcn import FCN, FCNHead

    class NarrowBottleneck(Bottleneck):
        expansion = 1

    resnet = ResNet(NarrowBottleneck, [1, 1, 1, 1], width_per_group=4, replace_stride_with_dilation=[False, True, True])
    backbone = IntermediateLayerGetter(resnet, return_layers={"layer4": "out"})
    return FCN(backbone, FCNHead(512, 3), None)


def full_model():
    from torchvision.models.segmentation import fcn_resnet50

    return fcn_resnet50(weights=None, weights_backbone=None, num_classes=21, aux_loss=True)


def run(model, sizes, seed):
    import torch

    model.eval()
    out = {}
    for k, shape in enumerate(sizes):
        (u8,) = images([shape], seed + k)
        with torch.no_grad():
            y = model(torch.from_numpy(normalize(u8)))["out"].numpy()
        h, w = shape[2:]
        out[f"image_{h}x{w}"] = u8
        out[f"out_{h}x{w}"] = y.astype(np.float32)
    return out


def main(argv=None) -> int:
    import torch
    import torchvision

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("mode", choices=("small", "full"))
    p.add_argument("out_dir")
    a = p.parse_args(argv)
    out = Path(a.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    if a.mode == "small":
        model, sizes, stem, half = small_model(), [(2, 3, 97, 131), (1, 3, 33, 47)], "torchvision_fcn_small", True
    else:
        model, sizes, stem, half = full_model(), [(2, 3, 97, 131), (2, 3, 360, 480), (2, 3, 500, 375)], "torchvision_fcn_resnet50", False
    randomize(model, seed=1)
    sd = model.state_dict()
    if half:  # exact: every float value was rounded to float16 precision by randomize()
        sd = {k: (v.half() if v.is_floating_point() else v) for k, v in sd.items()}
    torch.save(sd, out / f"{stem}.pth")
    ref = run(model, sizes, seed=10)
    ref["versions"] = np.array([f"torch {torch.__version__}", f"torchvision {torchvision.__version__}"])
    np.savez_compressed(out / f"{stem}_ref.npz", **ref)
    for f in sorted(out.glob(stem + "*")):
        print(f"{f}: {f.stat().st_size / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
