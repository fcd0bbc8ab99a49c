"""The checkpoint format: one ``.pt`` that rebuilds and deploys the model on its own.

Layout (a plain dict, loadable with ``torch.load(weights_only=True)``)::

    {
      "format": "fcn-deploy/checkpoint", "format_version": 1,
      "model": {"arch": "fcn8s", "backbone": "resnet18", "num_classes": 11,
                "build_options": {"learnable_upsampling": False, "head_alignment": "aligned"}},   # model.build_options
      "info": ModelInfo.to_dict(),      # class names, palette, input convention, ignore index
      "state_dict": {...},               # the FCN's tensors
      "metrics": {...},                  # validation metrics of these weights (may be empty)
      "train": {...} | None,             # resume state (optimizer, epoch, step, history, ...)
      "import": {...},                   # only in fcn-import's output: source file, sha256,
                                         # source format, notes (see training/importers/cli.py)
    }

``model.build_options`` holds the keyword options of the registry builder
(``registry.build_model(arch, backbone, num_classes, **build_options)``). Checkpoints written
before the registry carry ``learnable_upsampling`` directly in ``model``; they still load.

Writes are atomic (temp file + rename). A file that is not ours, truncated or corrupt gets one
:class:`FcnError` line, never a traceback.
"""

from __future__ import annotations

import os
import zipfile
from typing import Any, Dict, Optional, Tuple

import torch

from fcn_deploy._util import atomic_path
from fcn_deploy.errors import FcnError, first_line
from fcn_deploy.modelinfo import ModelInfo

CHECKPOINT_FORMAT = "fcn-deploy/checkpoint"
FORMAT_VERSION = 1


def save_checkpoint(
    path,
    model: torch.nn.Module,
    info: ModelInfo,
    *,
    metrics: Optional[Dict[str, Any]] = None,
    train_state: Optional[Dict[str, Any]] = None,
    provenance: Optional[Dict[str, Any]] = None,
) -> None:
    """Write ``model`` + ``info`` atomically. ``provenance`` (fcn-import) lands under "import"."""
    model = getattr(model, "module", model)  # unwrap DDP
    ckpt = {
        "format": CHECKPOINT_FORMAT,
        "format_version": FORMAT_VERSION,
        "model": {
            "arch": model.arch,
            "backbone": model.backbone_name,
            "num_classes": model.num_classes,
            "build_options": dict(getattr(model, "build_options", None) or {}),  # the builder's keyword options
        },
        "info": info.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "metrics": dict(metrics or {}),
        "train": train_state,
    }
    if provenance is not None:
        ckpt["import"] = dict(provenance)
    with atomic_path(path) as tmp:
        torch.save(ckpt, tmp)


def _unreadable_reason(path, e: Exception) -> str:
    """Why ``torch.load`` failed, in words: torch's own messages (``KeyError: 105`` for a text
    file, miniz internals for a truncated zip) say nothing to a user, so look at the file."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as oe:
        return oe.strerror or type(oe).__name__
    refused = "Weights only load failed" in str(e)
    if size == 0:
        return "empty file"
    if head.startswith(b"PK\x03\x04"):  # torch.save's zip format
        if not zipfile.is_zipfile(path):
            return "truncated or damaged file: its zip directory is missing"
        try:
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
        except (zipfile.BadZipFile, OSError, RuntimeError):
            return "damaged zip archive"
        if not any(n.endswith("/data.pkl") for n in names):
            return "a zip archive, but not a torch checkpoint file"
    elif head[:1] != b"\x80":  # neither zip nor pickle (protocol >= 2): text, image, random bytes
        return "not a torch checkpoint file"
    if refused:
        return "holds Python objects that the safe loader (weights_only=True) refuses; not saved by fcn-deploy"
    if isinstance(e, EOFError) or any(w in str(e).lower() for w in ("truncated", "unexpected eof")):
        return "truncated file"
    return f"damaged torch file: {type(e).__name__}"


def load_checkpoint(path) -> Dict[str, Any]:
    """Read and validate a checkpoint (weights_only=True). FcnError on anything else."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FcnError(f"checkpoint not found: {path}") from None
    except IsADirectoryError:
        raise FcnError(f"checkpoint path is a folder: {path}") from None
    except Exception as e:
        raise FcnError(f"{path} is not a readable fcn-deploy checkpoint ({_unreadable_reason(path, e)})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise FcnError(f"{path} is not an fcn-deploy checkpoint (no 'format: {CHECKPOINT_FORMAT}' entry)")
    if ckpt.get("format_version", 0) > FORMAT_VERSION:
        raise FcnError(f"{path} has checkpoint format {ckpt.get('format_version')}, newer than this fcn-deploy reads ({FORMAT_VERSION})")
    for key in ("model", "info", "state_dict"):
        if not isinstance(ckpt.get(key), dict):
            raise FcnError(f"{path} is a damaged fcn-deploy checkpoint (no '{key}')")
    return ckpt


def build_options_of(model_entry: Dict[str, Any], src: str = "checkpoint") -> Dict[str, Any]:
    """The builder options a checkpoint's ``model`` entry records: ``build_options``, or for
    checkpoints from before the registry, their top-level ``learnable_upsampling``."""
    opts = model_entry.get("build_options")
    if opts is None:
        return {"learnable_upsampling": bool(model_entry["learnable_upsampling"])} if "learnable_upsampling" in model_entry else {}
    if not isinstance(opts, dict) or not all(isinstance(k, str) for k in opts):
        raise FcnError(f"{src} is a damaged fcn-deploy checkpoint (build_options is not a mapping)")
    return dict(opts)


def model_from_checkpoint(path_or_ckpt, *, eval_mode: bool = True) -> Tuple[torch.nn.Module, ModelInfo, Dict[str, Any]]:
    """Rebuild the FCN from a checkpoint path (or an already loaded dict)."""
    from fcn_deploy.training.models import checkpoint_build_options
    from fcn_deploy.training.registry import build_model

    ckpt = path_or_ckpt if isinstance(path_or_ckpt, dict) else load_checkpoint(path_or_ckpt)
    src = "checkpoint" if isinstance(path_or_ckpt, dict) else str(path_or_ckpt)
    m = ckpt["model"]
    # A ResNet FCN checkpoint without head_alignment predates the aligned head: legacy head.
    options = checkpoint_build_options(m.get("arch", "?"), m.get("backbone", "?"), build_options_of(m, src))
    model = build_model(m.get("arch", "?"), m.get("backbone", "?"), int(m.get("num_classes", 0)), **options)
    try:
        model.load_state_dict(ckpt["state_dict"], strict=True)
    except RuntimeError as e:
        raise FcnError(f"{src}: weights do not fit {m.get('arch')}/{m.get('backbone')}: {first_line(e)[:200]}") from None
    info = ModelInfo.from_dict(ckpt["info"])
    if info.num_classes != model.num_classes:
        raise FcnError(f"{src}: info says {info.num_classes} classes, model has {model.num_classes}")
    if eval_mode:
        model.eval()
    return model, info, ckpt
