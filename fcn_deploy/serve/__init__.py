"""Serving fcn-deploy models at scale: NVIDIA Triton model repositories, checked offline against
Triton's own ModelConfig schema, and the same Open Inference Protocol (KServe V2) served and
called on the CPU.

- :mod:`fcn_deploy.serve.triton`: ``fcn-serve triton`` writes a Triton model repository
  (``config.pbtxt`` + ``1/model.onnx|model.plan``, labels file, optional Python-backend
  pre/post-processing ensemble).
- :mod:`fcn_deploy.serve.check`: ``fcn-serve check`` parses every ``config.pbtxt`` with
  Triton's ``model_config_pb2`` (shipped by ``tritonclient``) and checks what protobuf cannot.
- :mod:`fcn_deploy.serve.pipeline`: the ensemble's pre/post-processing logic, built on the
  runtime's own Segmenter stages (what the Python-backend ``model.py`` files call).
- :mod:`fcn_deploy.serve.kserve_server`: ``fcn-serve kserve`` serves a model through KServe's
  ``ModelServer`` with the same model names and tensors as the Triton repository.
- :mod:`fcn_deploy.serve.client`: the ``tritonclient.http`` client behind
  ``fcn-predict --server``.

Importing this package imports nothing beyond the runtime core; ``tritonclient``, ``protobuf``
and ``kserve`` (``pip install "fcn-deploy[serve]"``) are imported where they are used.
"""

SERVE_INSTALL_HINT = 'pip install "fcn-deploy[serve]"'
