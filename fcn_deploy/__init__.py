"""fcn-deploy: FCN semantic segmentation from training to ONNX / TensorRT.

``import fcn_deploy`` imports only numpy (and Pillow on use): no torch, onnxruntime or
tensorrt. Backends import their libraries lazily, inside their own modules.

The repository's top-level folders are subpackages: ``fcn_deploy.training`` (training/),
``fcn_deploy.export`` (export/) and ``fcn_deploy.benchmarks`` (benchmarks/); those import
torch, the runtime modules here never do.
"""

__version__ = "0.1.0"

from fcn_deploy.errors import FcnError  # noqa: E402
from fcn_deploy.modelinfo import ModelInfo  # noqa: E402

__all__ = ["FcnError", "ModelInfo", "__version__"]


def __getattr__(name):
    # Lazy: the Segmenter pulls in image handling, backends pull in their runtimes.
    if name in ("Segmenter", "SegmentationResult", "load"):
        from fcn_deploy import segmenter

        return getattr(segmenter, name)
    raise AttributeError(f"module 'fcn_deploy' has no attribute {name!r}")
