"""The resume state of ``fcn-train``: everything ``--resume`` needs to continue a run exactly,
in one dataclass whose :meth:`ResumeState.save` and :meth:`ResumeState.load` sit side by side.

It is stored in ``<out>.last.pt``, an ordinary checkpoint (training/checkpoint.py): the weights
are its ``state_dict``, the rest its ``train`` entry (a plain dict, so
``torch.load(weights_only=True)`` reads it; the write is atomic)::

    {"config": {...},            # the TrainConfig of the run that wrote it (its fingerprint)
     "optimizer": {...}, "scaler": {...} | None,
     "epoch": 3, "step": 141, "elapsed_s": 812.4,
     "history": [{"epoch", "loss", "lr", "seconds", "images", "partial", ["val", "val_seconds"]}, ...],
     "best": {...},              # the best validation's metrics (model.pt's)
     "finished": False, "stopped_by_budget": False,
     "class_weights": tensor | None, "world_size": 1}

No RNG state is stored: the image order, the augmentation and torch's RNG are functions of
(seed, epoch) (see train.py), so a resumed run ends with the weights of an uninterrupted one.
A resume whose configuration differs in anything that would change the run (:data:`RESUME_KEYS`)
is refused with one line naming the first difference.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch

from fcn_deploy.errors import FcnError
from fcn_deploy.modelinfo import ModelInfo
from fcn_deploy.training.checkpoint import load_checkpoint, save_checkpoint

# A resume must agree with the stored run on these: they decide the data, the model and the steps.
RESUME_KEYS = ("format", "arch", "backbone", "seed", "batch_size", "crop", "scale_range", "learnable_upsampling",
               "optimizer", "class_weights", "head_alignment", "holdout")
# Entries a resume state cannot do without.
_REQUIRED = ("optimizer", "epoch", "step", "elapsed_s")


def config_fingerprint(cfg) -> Dict[str, Any]:
    """A TrainConfig as plain data (tuples as lists), as the checkpoint stores it."""
    values = dataclasses.asdict(cfg)
    values["crop"] = list(cfg.crop) if cfg.crop else None
    values["scale_range"] = list(cfg.scale_range)
    return values


@dataclass
class ResumeState:
    """Where a run stands after a finished epoch. The loop updates it in place."""

    config: Dict[str, Any]  # config_fingerprint() of the run (the current one once loaded)
    optimizer: Optional[Dict[str, Any]] = None  # optimizer.state_dict(), filled by save / load
    scaler: Optional[Dict[str, Any]] = None  # GradScaler.state_dict() (fp16 on CUDA), else None
    epoch: int = 0  # epochs finished
    step: int = 0  # optimizer steps taken
    elapsed_s: float = 0.0  # training wall time so far (the --time-budget clock)
    history: List[Dict[str, Any]] = field(default_factory=list)  # one record per epoch
    best: Dict[str, Any] = field(default_factory=dict)  # metrics of the best validation so far
    finished: bool = False
    stopped_by_budget: bool = False
    class_weights: Optional[torch.Tensor] = None  # the loss's class weights (median-freq), or None
    world_size: int = 1
    # The weights, as loaded (the checkpoint's state_dict); save() takes them from the live model.
    model: Optional[Dict[str, torch.Tensor]] = field(default=None, repr=False, compare=False)

    def to_dict(self) -> Dict[str, Any]:
        """The checkpoint's ``train`` entry (everything but the weights)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "model"}
        out["elapsed_s"] = float(self.elapsed_s)
        out["class_weights"] = self.class_weights.clone() if self.class_weights is not None else None
        return out

    def save(self, path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scaler, info: ModelInfo,
             metrics: Dict[str, Any]) -> None:
        """Write ``model``'s weights and this state (with ``optimizer``'s and ``scaler``'s) to
        ``path``, atomically."""
        self.optimizer = optimizer.state_dict()
        self.scaler = scaler.state_dict() if scaler is not None else None
        save_checkpoint(path, model, info, metrics=metrics, train_state=self.to_dict())

    @classmethod
    def load(cls, path, cfg, world_size: int = 1) -> "ResumeState":
        """The state in ``path`` for continuing with ``cfg``; one FcnError line when there is
        none, it is damaged, or ``cfg`` differs from the stored run in a :data:`RESUME_KEYS` entry."""
        path = Path(path)
        if not path.is_file():
            raise FcnError(f"nothing to resume: {path} does not exist")
        ckpt = load_checkpoint(path)  # weights_only=True
        stored = ckpt.get("train")
        if not isinstance(stored, dict):
            raise FcnError(f"{path} holds no resume state")
        missing = [k for k in _REQUIRED if k not in stored]
        if missing:
            raise FcnError(f"{path} is a damaged resume state (no '{missing[0]}')")
        old = dict(stored.get("config", {}))
        if cfg.backbone != "vgg16":
            old.setdefault("head_alignment", "legacy")  # a run from before the aligned ResNet head
        now = config_fingerprint(cfg)
        diff = [k for k in RESUME_KEYS if k in old and old[k] != now[k]]
        if diff:
            key = diff[0]
            raise FcnError(f"cannot resume {path}: {key} was {old[key]!r}, now {now[key]!r}")
        weights = stored.get("class_weights")
        return cls(
            config=now, optimizer=stored["optimizer"], scaler=stored.get("scaler"),
            epoch=int(stored["epoch"]), step=int(stored["step"]), elapsed_s=float(stored["elapsed_s"]),
            history=list(stored.get("history", [])), best=dict(stored.get("best", {})),
            finished=bool(stored.get("finished", False)), stopped_by_budget=bool(stored.get("stopped_by_budget", False)),
            class_weights=weights.float() if weights is not None else None, world_size=world_size,
            model=ckpt["state_dict"],
        )

    def restore(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scaler) -> None:
        """Put the loaded weights, optimizer and scaler state into the live objects."""
        getattr(model, "module", model).load_state_dict(self.model)
        optimizer.load_state_dict(self.optimizer)
        if scaler is not None and self.scaler:
            scaler.load_state_dict(self.scaler)

    def last_val(self) -> Dict[str, Any]:
        """The last validation's metrics ({} before the first)."""
        return next((dict(rec["val"]) for rec in reversed(self.history) if rec.get("val")), {})
