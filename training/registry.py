"""The model registry: every architecture fcn-deploy can build, train, export and import into.

A model family is one module that registers its architectures with :func:`register_arch`
(as timm registers models); :data:`FAMILIES` lists those modules so the registry can import
them on first use. Adding a family = one module + one entry in FAMILIES + one test.

A registered builder is called as ``builder(backbone, num_classes, **options)`` and returns an
``nn.Module`` whose ``forward(x)`` gives logits (N, C, H, W) at the input's H and W, and which
carries ``arch``, ``backbone_name``, ``num_classes`` and ``build_options`` (a dict of the
keyword options needed to rebuild it; stored in checkpoints).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

from fcn_deploy.errors import FcnError, unknown_name

# Modules that register architectures when imported. Keep in sync with the family modules.
FAMILIES: Tuple[str, ...] = (
    "fcn_deploy.training.models",
    "fcn_deploy.training.models_seed",
)


@dataclass(frozen=True)
class ArchSpec:
    name: str
    backbones: Tuple[str, ...]
    builder: Callable
    family: str
    description: str = ""
    # Default input convention for a freshly trained model: "caffe" or "imagenet".
    convention: str = "imagenet"
    options: Tuple[str, ...] = field(default=())  # keyword options the builder takes


_ARCHS: Dict[str, ArchSpec] = {}
_loaded = False


def register_arch(name: str, *, backbones, family: str, description: str = "",
                  convention: str = "imagenet", options=()):
    """Decorator: ``@register_arch("fcn8s", backbones=("resnet18",), family="fcn")`` on a
    ``builder(backbone, num_classes, **options)``. Registering a name twice is an error."""

    def deco(builder: Callable) -> Callable:
        if name in _ARCHS and _ARCHS[name].builder is not builder:
            raise FcnError(f"architecture {name!r} is registered twice ({_ARCHS[name].family} and {family})")
        _ARCHS[name] = ArchSpec(name, tuple(backbones), builder, family, description, convention, tuple(options))
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


def build_model(arch: str, backbone: str, num_classes: int, **options):
    """``build_model("fcn8s", "resnet18", 11)``; unknown names list the valid ones."""
    spec = get_arch(arch)
    if backbone not in spec.backbones:
        raise unknown_name(f"backbone for {arch}", backbone, spec.backbones)
    if num_classes < 1:
        raise FcnError(f"num_classes must be >= 1, got {num_classes}")
    bad = [k for k in options if k not in spec.options]
    if bad:
        raise FcnError(f"arch {arch!r} does not take option(s) {', '.join(bad)}; it takes: {', '.join(spec.options) or 'none'}")
    return spec.builder(backbone, num_classes, **options)


def describe() -> str:
    """The table ``fcn-train --list-archs`` prints."""
    _ensure_loaded()
    rows = [f"{'arch':<16} {'family':<14} backbones"]
    for name in sorted(_ARCHS):
        s = _ARCHS[name]
        rows.append(f"{name:<16} {s.family:<14} {', '.join(s.backbones)}" + (f"  -- {s.description}" if s.description else ""))
    return "\n".join(rows)
