"""The ONNX reference evaluator as a backend (``reference``): ``onnx.reference.ReferenceEvaluator``
runs every node in plain numpy, float16 arithmetic in float16. Slow, CPU only, never chosen by
``auto``: it is the independent execution ``fcn-verify --engine reference`` checks an export
against. Needs ``onnx`` (``pip install onnx``, part of ``fcn-deploy[export]``), not torch.

Thread safety: the evaluator keeps state while it runs, so calls take turns under a lock.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import numpy as np

from fcn_deploy.backends.base import Loader, OnnxFileRunner, TensorSpec, Timing
from fcn_deploy.errors import FcnError, first_line
from fcn_deploy.onnx_info import read_onnx_header


@dataclass(frozen=True)
class ReferenceModel:
    """What :class:`EvaluatorFromOnnx` opens: the evaluator and the file's header (tensors,
    metadata) as it was when loaded; a runner over it never re-reads the file."""

    evaluator: object
    header: object  # fcn_deploy.onnx_info.OnnxHeader


class EvaluatorFromOnnx(Loader):
    """Loads an ONNX file into a ``ReferenceEvaluator``; calling it returns a new
    :class:`ReferenceModel`."""

    def __init__(self, path):
        super().__init__(path)

    def __call__(self):
        from fcn_deploy.backends import not_installed

        try:
            import onnx
            from onnx.reference import ReferenceEvaluator
        except ImportError:
            raise not_installed("reference", "onnx") from None
        header = read_onnx_header(self.path)  # a missing, empty or foreign file: one line before onnx sees it
        try:
            return ReferenceModel(ReferenceEvaluator(onnx.load(str(self.path))), header)
        except Exception as e:
            raise FcnError(f"{self.path}: the ONNX reference evaluator cannot load this model ({first_line(e)})") from None


class ReferenceRunner(OnnxFileRunner):
    """One ONNX model in ``onnx.reference.ReferenceEvaluator``."""

    backend = "reference"
    device = "onnx.reference (numpy, CPU)"
    loader_class = EvaluatorFromOnnx

    def _bind(self, loader: Loader, model: ReferenceModel) -> None:
        header = model.header
        self._evaluator = model.evaluator
        self._metadata = dict(header.metadata)
        self._inputs = [TensorSpec(t.name, t.dtype, tuple(d if isinstance(d, int) and d > 0 else None for d in t.shape))
                        for t in header.inputs]
        self._outputs = [TensorSpec(t.name, t.dtype, tuple(d if isinstance(d, int) and d > 0 else None for d in t.shape))
                         for t in header.outputs]
        self._lock = threading.Lock()

    def metadata(self) -> Dict[str, str]:
        return dict(self._metadata)

    def _infer(self, feeds: Dict[str, np.ndarray]) -> Tuple[Dict[str, np.ndarray], Optional[Timing]]:
        evaluator = self._evaluator
        if evaluator is None:
            raise FcnError(f"{self.path.name}: the reference runner is closed")
        names = [o.name for o in self._outputs]
        try:
            with self._lock:
                outs = evaluator.run(names, feeds)
        except Exception as e:
            shapes = ", ".join(f"{k} {tuple(v.shape)} {v.dtype}" for k, v in feeds.items())
            raise FcnError(f"the ONNX reference evaluator failed on input {shapes}: {first_line(e)}") from None
        return {n: np.asarray(o) for n, o in zip(names, outs)}, None  # compute = the call (Runner.infer_timed)

    def _close(self) -> None:
        self._evaluator = None


EvaluatorFromOnnx.runner_class = ReferenceRunner
