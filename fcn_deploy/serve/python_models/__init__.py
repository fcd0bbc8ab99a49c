"""The ``model.py`` files ``fcn-serve triton --ensemble`` copies into the Triton repository's
``NAME_preprocess/1/`` and ``NAME_postprocess/1/`` (Triton's Python backend).

They are thin shells: the Python backend's ``triton_python_backend_utils`` module exists only
inside the tritonserver container (it cannot be installed here), so each file only moves
tensors between Triton's request/response objects and :mod:`fcn_deploy.serve.pipeline`, whose
pure functions -- the runtime's own Segmenter stages -- are what the tests run. The container
needs ``pip install fcn-deploy`` (numpy + Pillow, no backend) for the import to work.
"""

from pathlib import Path

# Named *.model.py: files to copy, not modules of this package (pkgutil skips dotted names,
# so importing every fcn_deploy module never imports triton_python_backend_utils).
PREPROCESS = Path(__file__).with_name("preprocess.model.py")
POSTPROCESS = Path(__file__).with_name("postprocess.model.py")
