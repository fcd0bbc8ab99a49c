"""The model registry: every architecture fcn-deploy can build, train, export and import into.

A model family is one module that registers its architectures with :func:`register_arch`
(as timm registers models); :data:`FAMILIES` lists those modules so the registry can import
them on first use. Adding a family = one module + one entry in FAMILIES + one test.

A registered builder is called as ``builder(backbone, num_classes, **options)`` and returns an
``nn.Module`` whose ``forward(x)`` gives logits (N, C, H, W) at the input's H and W, and which
carries ``arch``, ``backbone_name``, ``num_classes`` and ``build_options`` (a dict of the
keyword options needed to rebuild it; stored in checkpoints).

Input conventions have names (:data:`CONVENTIONS`: ``imagenet``, ``caffe``, ``mmseg``,
``pochih``); an arch's default is one name, or a mapping backbone -> name (the FCN family:
``caffe`` for the faithful VGG16, ``imagenet`` for ResNets). ``fcn-import --input-convention``
takes the same names.

This module imports no torch (so ``fcn-train --list-archs`` style listings and the convention
table are cheap); family modules are imported on first use.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, Union

from fcn_deploy.errors import FcnError, unknown_name
from fcn_deploy.modelinfo import CAFFE_CONVENTION, IMAGENET_CONVENTION

# Modules that register architectures when imported. Keep in sync with the family modules.
FAMILIES: Tuple[str, ...] = (
    "fcn_deploy.training.models",
    "fcn_deploy.training.models_torchvision",
    "fcn_deploy.training.models_mmseg",
    "fcn_deploy.training.models_seed",
)

# Named input conventions: (channel order, scale, mean, std), applied as
# ((x[..., order] * scale) - mean) / std, as fcn_deploy.modelinfo.ModelInfo stores them.
CONVENTIONS: Dict[str, Tuple[str, float, Tuple[float, float, float], Tuple[float, float, float]]] = {
    # torchvision's transforms: RGB in [0, 1], ImageNet mean/std.
    "imagenet": IMAGENET_CONVENTION,
    # The Caffe FCNs and torchfcn: BGR 0-255 minus the Caffe mean, no std.
    "caffe": CAFFE_CONVENTION,
    # mmseg's data_preprocessor / img_norm_cfg: RGB (to_rgb=True) 0-255, mean/std in 0-255 units.
    "mmseg": ("RGB", 1.0, (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)),
    # pochih/FCN-pytorch's loaders: BGR, /255, minus (103.939, 116.779, 123.68)/255, no std.
    "pochih": ("BGR", 1.0 / 255.0, (103.939 / 255.0, 116.779 / 255.0, 123.68 / 255.0), (1.0, 1.0, 1.0)),
}


def convention(name: str):
    """A named input convention: ``(channel_order, scale, mean, std)``."""
    if name not in CONVENTIONS:
        raise unknown_name("input convention", name, CONVENTIONS)
    return CONVENTIONS[name]


@dataclass(frozen=True)
class ArchSpec:
    name: str
    backbones: Tuple[str, ...]
    builder: Callable
    family: str
    description: str = ""
    # Default input convention for a freshly trained model: a CONVENTIONS name, or a mapping
    # backbone -> name.
    convention: Union[str, Mapping[str, str]] = "imagenet"
    options: Tuple[str, ...] = field(default=())  # keyword options the builder takes


_ARCHS: Dict[str, ArchSpec] = {}
_loaded = False


def register_arch(name: str, *, backbones, family: str, description: str = "",
                  convention: Union[str, Mapping[str, str]] = "imagenet", options=()):
    """Decorator: ``@register_arch("fcn8s", backbones=("resnet18",), family="fcn")`` on a
    ``builder(backbone, num_classes, **options)``. Registering a name twice is an error."""

    def deco(builder: Callable) -> Callable:
        if name in _ARCHS and _ARCHS[name].builder is not builder:
            raise FcnError(f"architecture {name!r} is registered twice ({_ARCHS[name].family} and {family})")
        conv = convention if isinstance(convention, str) else dict(convention)
        for c in ([conv] if isinstance(conv, str) else conv.values()):
            if c not in CONVENTIONS:
                raise unknown_name(f"input convention of {name}", c, CONVENTIONS)
        _ARCHS[name] = ArchSpec(name, tuple(backbones), builder, family, description, conv, tuple(options))
        return builder

    return deco


def _ensure_loaded() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        for mod in FAMILIES:
            importlib.import_module(mod)


def arch_names() -> List[str]:
    _ensure_loaded()
    return sorted(_ARCHS)


def get_arch(name: str) -> ArchSpec:
    _ensure_loaded()
    if name not in _ARCHS:
        raise unknown_name("arch", name, _ARCHS)
    return _ARCHS[name]


def backbone_names(arch: Optional[str] = None) -> List[str]:
    """Backbones of one arch, or of every arch."""
    _ensure_loaded()
    specs = [get_arch(arch)] if arch else list(_ARCHS.values())
    return sorted({b for s in specs for b in s.backbones})


def check_arch(arch: str, backbone: str) -> ArchSpec:
    """The spec of ``arch``, after checking ``backbone`` is one of its backbones."""
    spec = get_arch(arch)
    if backbone not in spec.backbones:
        raise unknown_name(f"backbone for {arch}", backbone, spec.backbones)
    return spec


def default_convention_name(arch: str, backbone: str) -> str:
    spec = check_arch(arch, backbone)
    c = spec.convention
    return c if isinstance(c, str) else c.get(backbone, "imagenet")


def default_convention(arch: str, backbone: str):
    """``(channel_order, scale, mean, std)`` a freshly trained ``arch``/``backbone`` uses."""
    return convention(default_convention_name(arch, backbone))


def build_model(arch: str, backbone: str, num_classes: int, **options):
    """``build_model("fcn8s", "resnet18", 11)``; unknown names list the valid ones."""
    spec = check_arch(arch, backbone)
    if num_classes < 1:
        raise FcnError(f"num_classes must be >= 1, got {num_classes}")
    bad = [k for k in options if k not in spec.options]
    if bad:
        raise FcnError(f"arch {arch!r} does not take option(s) {', '.join(bad)}; it takes: {', '.join(spec.options) or 'none'}")
    model = spec.builder(backbone, num_classes, **options)
    if not isinstance(getattr(model, "build_options", None), dict):
        model.build_options = dict(options)
    return model


def describe() -> str:
    """The table ``fcn-train --list-archs`` prints."""
    _ensure_loaded()
    rows = [f"{'arch':<20} {'family':<12} backbones"]
    for name in sorted(_ARCHS):
        s = _ARCHS[name]
        rows.append(f"{name:<20} {s.family:<12} {', '.join(s.backbones)}" + (f"  -- {s.description}" if s.description else ""))
    return "\n".join(rows)
