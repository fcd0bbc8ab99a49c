"""Helpers for the export tests (not a test file): small FCNs trained a few SGD steps on smooth
random images whose target is their quantised brightness, from small random score layers, so
their label maps vary over the image (zero score layers, or a constant label map, make the
label-agreement half of any comparison pass)."""

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

    ``steps=0``: random score layers only (centred, see _center_scores), no SGD step.
    Cached (tests share the models and must not change them)."""
    import torch

    from fcn_deploy.export.inputs import normalize, random_rgb
    from fcn_deploy.training.models import build_model

    torch.manual_seed(seed)
    info = info_for(arch, backbone, num_classes)
    model = build_model(arch, backbone, num_classes)
    x = torch.from_numpy(normalize(random_rgb(2, *hw, seed=seed), info))
    # Target: brightness quantised into num_classes bins (per-image quantiles: every class occurs).
    bright = x.mean(1)
    edges = torch.quantile(bright.flatten(1), torch.linspace(0, 1, num_classes + 1)[1:-1], dim=1)  # (C-1, N)
    y = (bright[None] > edges[:, :, None, None]).sum(0)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, mod in model.named_modules():
            if name.startswith("score") and isinstance(mod, torch.nn.Conv2d):
                mod.weight.normal_(0, 0.05 if backbone != "vgg16" else 0.002, generator=gen)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.05 if backbone != "vgg16" else 1e-4, momentum=0.9)
    model.train()
    for _ in range(steps):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
    model.eval()
    # Centred over the training images and one held-out image of another size (the one
    # logits_vary probes), so the label map varies on inputs the model was not fitted to.
    probe = torch.from_numpy(normalize(random_rgb(1, 48, 64, seed=7), info))
    _center_scores(model, [x[:1] if backbone == "vgg16" else x, probe])
    assert float(model.score_fr.weight.detach().abs().sum()) > 0, "score layer still zero"
    return model, info


def _center_scores(model, xs) -> None:
    """Set each score layer's bias so its output has mean zero per class over the inputs ``xs``
    (eval mode; the means of each input averaged): a few steps from scratch leave one class ahead
    at every pixel (the score layers see a large common feature component), and a constant label
    map proves nothing. Centred, the label map follows the per-pixel features."""
    import torch

    convs = {n: m for n, m in model.named_modules() if n.startswith("score") and isinstance(m, torch.nn.Conv2d)}
    seen = {n: [] for n in convs}
    hooks = [m.register_forward_hook(lambda mod, inp, out, n=n: seen[n].append(out.mean((0, 2, 3))))
             for n, m in convs.items()]
    try:
        with torch.no_grad():
            for x in xs:
                model(x)
            for n, m in convs.items():
                m.bias -= torch.stack(seen[n]).mean(0)
    finally:
        for h in hooks:
            h.remove()
    # The final crop (VGG16: pad 100, then offsets) sees a part of each score map whose mean is
    # not zero: centre the logits themselves through score_fr's bias (a constant passes the
    # bilinear upsampling unchanged inside the map).
    with torch.no_grad():
        for _ in range(2):
            model.score_fr.bias -= torch.stack([model(x).mean((0, 2, 3)) for x in xs]).mean(0)


def logits_vary(model, info, hw=(48, 64)) -> bool:
    """The model's logits differ across pixels and classes and its label map holds at least two
    labels (a constant label map makes every label-agreement check pass)."""
    import torch

    from fcn_deploy.export.inputs import normalize, random_rgb

    with torch.no_grad():
        y = model(torch.from_numpy(normalize(random_rgb(1, *hw, seed=7), info))).numpy()
    return bool(np.ptp(y) > 1e-4 and len(np.unique(y.argmax(1))) >= 2 and y.std(axis=(2, 3)).min() > 0)
