"""The one runner protocol every backend implements.

A runner wraps one loaded model on one backend::

    with OrtRunner("fcn8s.onnx", providers=["cpu"]) as r:
        out = r.infer({"input": x})          # dict of numpy arrays in, dict out
        print(r.last_timing)                  # Timing of that call

``infer`` takes NCHW float32 (or what the model's input dtype is) and returns numpy arrays
on the host. Runners record their own timing: ``compute_ms`` always; ``h2d_ms``/``d2h_ms``
where the backend can separate transfers (TensorRT), else None.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np


@dataclass
class Timing:
    total_ms: float
    compute_ms: Optional[float] = None
    h2d_ms: Optional[float] = None
    d2h_ms: Optional[float] = None


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str  # numpy dtype name, e.g. "float32"
    # Dimensions with None (or a string) for dynamic axes.
    shape: Tuple[object, ...]


class Runner:
    """Base class: subclasses set ``backend`` and implement ``_infer``, ``inputs``, ``outputs``."""

    backend: str = "?"
    # What device/provider actually runs the model (e.g. "CPUExecutionProvider"), for logs.
    device: str = "?"

    def __init__(self):
        self.last_timing: Optional[Timing] = None

    # Specs of the model's inputs and outputs.
    def inputs(self) -> List[TensorSpec]:
        raise NotImplementedError

    def outputs(self) -> List[TensorSpec]:
        raise NotImplementedError

    # Allowed input shape range (min, opt, max) for engines with profiles; None = any size.
    def profile(self) -> Optional[Tuple[Tuple[int, ...], Tuple[int, ...], Tuple[int, ...]]]:
        return None

    # Inference: subclasses implement ``_infer`` (outputs and the call's Timing); ``infer`` and
    # ``infer_timed`` are the template every caller uses.
    def _infer(self, feeds: Dict[str, np.ndarray]) -> Tuple[Dict[str, np.ndarray], Timing]:
        raise NotImplementedError

    def infer_timed(self, feeds: Dict[str, np.ndarray]) -> Tuple[Dict[str, np.ndarray], Timing]:
        """Outputs and this call's Timing together (thread-safe, unlike ``last_timing``)."""
        return self._infer(feeds)

    def infer(self, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """Outputs only; this call's Timing is left in ``last_timing``."""
        out, self.last_timing = self._infer(feeds)
        return out

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


class OnnxFileRunner(Runner):
    """A runner over an ONNX file (onnxruntime, OpenVINO): its tensor specs are known once loaded
    (``self._inputs``/``self._outputs``, set by the subclass) and its ModelInfo comes from the
    file's metadata (``self.metadata()``, implemented by the subclass)."""

    path: object
    _inputs: List[TensorSpec]
    _outputs: List[TensorSpec]

    def metadata(self) -> Dict[str, str]:
        raise NotImplementedError

    def model_info(self):
        from fcn_deploy.modelinfo import ModelInfo

        return ModelInfo.from_metadata(self.metadata(), source=str(self.path))

    def inputs(self) -> List[TensorSpec]:
        return list(self._inputs)

    def outputs(self) -> List[TensorSpec]:
        return list(self._outputs)
