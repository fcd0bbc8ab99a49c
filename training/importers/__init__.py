"""Importers: checkpoints made elsewhere -> an fcn-deploy checkpoint (``fcn-import``).

One module per source format, each registering an :class:`Importer` with
:func:`register_importer`; :data:`SOURCES` lists those modules. ``fcn-import`` only dispatches:
``--from auto`` asks each importer's ``detect`` and uses the one that recognises the file.

Importer contract (a subclass of :class:`Importer`):
- ``name``: the ``--from`` value ("torchvision", "torchfcn", "caffe", "mmseg", "pochih", ...).
- ``suffixes``: file suffixes it reads raw (e.g. (".caffemodel",)); empty for torch files.
- ``detect(state) -> Optional[str]``: ``state`` is the loaded, unwrapped object (a
  :class:`SourceState`, i.e. a dict of tensors, for torch files after ``module.``/
  ``state_dict``/``model``/``model_state_dict`` unwrapping, or the raw bytes for raw formats);
  returns a one-line description of what it recognised, or None. Must not raise on foreign input.
- ``convert(state, options: ImportOptions) -> Imported``: the fcn-deploy arch/backbone, the
  state_dict for ``registry.build_model`` and the source's default ModelInfo fields; raises
  FcnError with one line on anything it cannot take.
- ``prefixes`` (optional): key prefixes of the layout (``("backbone.", "classifier.")``); used
  only to explain an unrecognised file ("looks partly like torchvision; unexpected keys ...").

The wrapper around the weights: what the file held beside the state_dict (torchfcn's trainer
dict ``{'model_state_dict', 'arch', 'optim_state_dict', ...}``, mmseg's ``{'state_dict',
'meta'}``) is kept, without its tensors' optimizer state, as ``state.wrapper`` (a dict; the
outermost wrapper's keys win) and again as ``options.wrapper``. ``state.unwrapped`` lists what
was taken off (``["state_dict", "module."]``).

The CLI then builds ``registry.build_model(arch, backbone, num_classes, **build_options)``,
loads ``state_dict`` strictly (any missing/unexpected key is an error naming it), checks
``--num-classes`` against the weights and applies ``--classes/--palette/--input-convention``
over ``info_defaults``; importers need not repeat those checks.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from fcn_deploy.errors import FcnError, unknown_name

# Modules that register importers when imported (one per source format).
SOURCES: Tuple[str, ...] = (
    "fcn_deploy.training.importers.torchvision",
    "fcn_deploy.training.importers.mmseg",
    "fcn_deploy.training.importers.torchfcn",
    "fcn_deploy.training.importers.caffe",
    "fcn_deploy.training.importers.pochih",
)


class SourceState(dict):
    """The unwrapped weights (name -> tensor) of a torch file, plus what wrapped them."""

    def __init__(self, tensors=(), *, wrapper: Optional[Dict[str, Any]] = None, unwrapped=()):
        super().__init__(tensors)
        self.wrapper: Dict[str, Any] = dict(wrapper or {})
        self.unwrapped: List[str] = list(unwrapped)


@dataclass(frozen=True)
class ImportOptions:
    arch: Optional[str] = None          # --arch: needed where keys cannot tell (FCN8s vs FCN8sAtOnce)
    num_classes: Optional[int] = None   # --num-classes: checked against the weights
    # What wrapped the state_dict in the file (see the module docstring), e.g. {'arch': 'FCN8s'}.
    wrapper: Dict[str, Any] = field(default_factory=dict)
    source_path: str = ""


@dataclass
class Imported:
    arch: str
    backbone: str
    num_classes: int
    state_dict: Dict[str, Any]
    build_options: Dict[str, Any] = field(default_factory=dict)
    # Defaults for ModelInfo: "class_names" (list, len == num_classes, else generic names with a
    # note), "palette" (list of (R, G, B)), "ignore_index", "channel_order" ("RGB"/"BGR"),
    # "scale", "mean", "std" (mean and std required unless the user passes --input-convention),
    # "convention" (its CONVENTIONS name, recorded in info.extra), "extra" (str -> str).
    info_defaults: Dict[str, Any] = field(default_factory=dict)
    notes: List[str] = field(default_factory=list)  # what was dropped or assumed, said to the user


class Importer:
    name: str = ""
    suffixes: Tuple[str, ...] = ()
    prefixes: Tuple[str, ...] = ()
    description: str = ""  # one line for `fcn-import --help`

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


def all_importers() -> List[Importer]:
    _ensure_loaded()
    return [_IMPORTERS[k] for k in sorted(_IMPORTERS)]


def importer_names() -> List[str]:
    _ensure_loaded()
    return sorted(_IMPORTERS)


def get_importer(name: str) -> Importer:
    _ensure_loaded()
    if name not in _IMPORTERS:
        raise unknown_name("source format", name, _IMPORTERS)
    return _IMPORTERS[name]
