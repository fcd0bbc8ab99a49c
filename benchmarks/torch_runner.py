"""The PyTorch runner moved into the runtime's backends (:mod:`fcn_deploy.backends.torch`,
registered as ``torch``); this name is kept for code that imported it from here."""

from fcn_deploy.backends.torch import AUTOCAST, DEVICES, ModelFromCheckpoint, TorchModel, TorchRunner  # noqa: F401

__all__ = ["AUTOCAST", "DEVICES", "ModelFromCheckpoint", "TorchModel", "TorchRunner"]
