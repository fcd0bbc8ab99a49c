"""Helpers for the export tests (not a test file): small FCNs trained a few SGD steps on random
data, so their score layers are not zero (zero score layers make any comparison pass)."""

from __future__ import annotations

import functools

import numpy as np

from fcn_deploy.modelinfo import ModelInfo
from fcn_deploy.palette import default_palette


def info_for(arch: str, backbone: str, num_classes: int = 3) -> ModelInfo:
    from fcn_deploy.training.models import input_convention

    order, scale, mean, std = input_convention(backbone)
    return ModelInfo(
        arch=arch, backbone=backbone, num_classes=num_classes,
        class_names=tuple(f"class{i}" for i in range(num_classes)),
        palette=tuple(default_palette(num_classes)), channel_order=order, scale=scale, mean=mean, std=std,
    )


@functools.lru_cache(maxsize=4)
def trained_model(arch: str, backbone: str, num_classes: int = 3, *, steps: int = 3, seed: int = 0, hw=(64, 64)):
    """build_model + a few SGD steps on random images/labels; returns (model in eval mode, info).

    Cached (tests share the models and must not change them)."""
    import torch

    from fcn_deploy.export.inputs import normalize, random_rgb
    from fcn_deploy.training.models import build_model

    torch.manual_seed(seed)
    info = info_for(arch, backbone, num_classes)
    model = build_model(arch, backbone, num_classes)
    x = torch.from_numpy(normalize(random_rgb(2, *hw, seed=seed), info))
    y = torch.randint(0, num_classes, (2, *hw))
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.05 if backbone != "vgg16" else 1e-4, momentum=0.9)
    model.train()
    for _ in range(steps):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
    model.eval()
    assert float(model.score_fr.weight.detach().abs().sum()) > 0, "score layer still zero"
    return model, info


def logits_vary(model, info, hw=(48, 64)) -> bool:
    """The model's logits differ across pixels and classes (not a constant map)."""
    import torch

    from fcn_deploy.export.inputs import normalize, random_rgb

    with torch.no_grad():
        y = model(torch.from_numpy(normalize(random_rgb(1, *hw, seed=7), info))).numpy()
    return bool(np.ptp(y) > 1e-4 and len(np.unique(y.argmax(1))) >= 1 and y.std(axis=(2, 3)).min() > 0)
