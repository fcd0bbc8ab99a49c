"""Importers: checkpoints made elsewhere -> an fcn-deploy checkpoint (``fcn-import``).

One module per source format, each registering an :class:`Importer` with
:func:`register_importer`; :data:`SOURCES` lists those modules. ``fcn-import`` only dispatches:
``--from auto`` asks each importer's ``detect`` and uses the one that recognises the file.

Importer contract (a subclass of :class:`Importer`):
- ``name``: the ``--from`` value ("torchvision", "torchfcn", "caffe", "mmseg", "pochih", ...).
- ``suffixes``: file suffixes it reads raw (e.g. (".caffemodel",)); empty for torch files.
- ``detect(state) -> Optional[str]``: ``state`` is the loaded, unwrapped object (a dict of
  tensors for torch files after ``module.``/``state_dict``/``model`` unwrapping, or the raw
  bytes for raw formats); returns a one-line description of what it recognised, or None.
- ``convert(state, options: ImportOptions) -> Imported``: the fcn-deploy arch/backbone, the
  state_dict for ``registry.build_model`` and the source's default ModelInfo fields; raises
  FcnError with one line on anything it cannot take.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from fcn_deploy.errors import FcnError, unknown_name

SOURCES: Tuple[str, ...] = (
    "fcn_deploy.training.importers.torchfcn",
    "fcn_deploy.training.importers.caffe",
    "fcn_deploy.training.importers.pochih",
)


@dataclass(frozen=True)
class ImportOptions:
    arch: Optional[str] = None          # --arch: needed where keys cannot tell (FCN8s vs FCN8sAtOnce)
    num_classes: Optional[int] = None   # --num-classes: checked against the weights


@dataclass
class Imported:
    arch: str
    backbone: str
    num_classes: int
    state_dict: Dict[str, Any]
    build_options: Dict[str, Any] = field(default_factory=dict)
    # Defaults for ModelInfo (class_names, palette, channel_order, scale, mean, std, ignore_index).
    info_defaults: Dict[str, Any] = field(default_factory=dict)
    notes: List[str] = field(default_factory=list)  # what was dropped or assumed, said to the user


class Importer:
    name: str = ""
    suffixes: Tuple[str, ...] = ()

    def detect(self, state) -> Optional[str]:
        raise NotImplementedError

    def convert(self, state, options: ImportOptions) -> Imported:
        raise NotImplementedError


_IMPORTERS: Dict[str, Importer] = {}
_loaded = False


def register_importer(cls):
    """Class decorator: registers one instance under ``cls.name``."""
    if not cls.name:
        raise FcnError(f"importer {cls.__name__} has no name")
    _IMPORTERS[cls.name] = cls()
    return cls


def _ensure_loaded() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        for mod in SOURCES:
            importlib.import_module(mod)


def importer_names() -> List[str]:
    _ensure_loaded()
    return sorted(_IMPORTERS)


def get_importer(name: str) -> Importer:
    _ensure_loaded()
    if name not in _IMPORTERS:
        raise unknown_name("source format", name, _IMPORTERS)
    return _IMPORTERS[name]
