"""``fcn-serve kserve MODEL``: an fcn-deploy ONNX model served over the Open Inference Protocol
(KServe V2, the HTTP/REST protocol Triton speaks) by KServe's Python ``ModelServer``.

Why KServe's ModelServer (``kserve`` on PyPI) rather than Seldon's MLServer: both install here
beside torch 2.13 (CPU) and numpy 2.4, with about the same weight (~80 packages; 69 s against
106 s to install on this machine), but KServe's server takes Python model objects in-process
(``ModelServer().start([model])``) with no settings files or separate inference-pool
processes, speaks the V2 binary tensor extension that ``tritonclient.http`` uses by default,
is what a KServe ``InferenceService`` on Kubernetes runs (the manifest :func:`inference_service_manifest`
writes), and is maintained (0.21, 2026) where MLServer 1.7 pins older FastAPI/Starlette.

Two models, with the Triton repository's names and tensors (one client and one set of tests
cover both servers):

- ``NAME``: the FCN itself. Input = the model's input (``input``, FP32/FP16
  ``[N, 3, H, W]``, normalised), output = the model's output (``logits``/``probs``/``labels``).
- ``NAME_ensemble``: encoded images in (``IMAGE``, BYTES ``[N, 1]``), ``LABELS`` out (and
  ``COLORIZED`` when requested), through :class:`fcn_deploy.serve.pipeline.Stages`, the same
  code as the Triton ensemble's Python models.

``GET /v2/models/NAME/config`` returns the model's configuration the way Triton's does
(``parameters["fcn_deploy.model_info"]`` holds class names, palette and normalization), which
is how ``fcn-predict --server`` learns them from either server.

A request with a wrong data type, shape, tensor name or a payload that is not an image gets a
``400`` with ``{"error": "..."}`` (KServe's ``InvalidInput``), and the server keeps serving.
``--workers N`` runs N server processes (KServe spawns them; each loads the model).

Uses KServe 0.21 internals to listen on ``--host`` (KServe's REST server binds 0.0.0.0 itself)
and to add the ``/config`` route; pinned ``kserve>=0.21,<0.22`` in the ``serve`` extra.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from fcn_deploy.errors import FcnError
from fcn_deploy.serve import SERVE_INSTALL_HINT
from fcn_deploy.serve.model_files import NUMPY_OF_V2, V2_TYPES, describe_onnx
from fcn_deploy.serve.pipeline import COLORIZED, IMAGE, LABELS, Stages

log = logging.getLogger(__name__)

_saved_argv = sys.argv
sys.argv = sys.argv[:1]  # kserve.model_server parses sys.argv when imported
try:
    import kserve
    from kserve.errors import InvalidInput
    from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse
except ImportError as _e:  # pragma: no cover - exercised by the import test without kserve
    raise FcnError(f"KServe is not installed ({_e}): {SERVE_INSTALL_HINT}") from None
finally:
    sys.argv = _saved_argv

_CONFIGS: Dict[str, dict] = {}
_SEGMENTERS: Dict[tuple, object] = {}


def _install_config_route() -> None:
    """``GET /v2/models/{name}/config`` on KServe's FastAPI app (once per process)."""
    from kserve.model_server import app

    if getattr(app.state, "fcn_deploy_config_route", False):
        return

    async def model_config(model_name: str):
        from fastapi.responses import JSONResponse

        if model_name not in _CONFIGS:
            return JSONResponse(status_code=404, content={"error": f"Model with name {model_name} does not exist."})
        return JSONResponse(content=_CONFIGS[model_name])

    app.add_api_route("/v2/models/{model_name}/config", model_config, methods=["GET"])
    app.state.fcn_deploy_config_route = True


def _v2_shape(shape) -> List[int]:
    return [int(d) for d in shape]


class _Base(kserve.Model):
    """Shared loading: one Segmenter per process, rebuilt after KServe pickles the model into a
    worker process (``--workers``)."""

    def __init__(self, name: str, path: str, backend: str, threads: Optional[int], max_batch: int):
        super().__init__(name)
        self.path = str(path)
        self.backend_name = backend
        self.threads = threads
        self.max_batch = int(max_batch)
        self.seg = None
        self.stages = None
        self.load()

    def load(self) -> bool:
        key = (self.path, self.backend_name, self.threads)
        if key not in _SEGMENTERS:  # NAME and NAME_ensemble share one loaded model per process
            from fcn_deploy.segmenter import Segmenter

            opts = {"threads": self.threads} if self.threads else {}
            _SEGMENTERS[key] = Segmenter.load(self.path, backend=self.backend_name, **opts)
        self.seg = _SEGMENTERS[key]
        m = describe_onnx(self.path)
        self.served = m
        self.stages = Stages(m.info, self.seg.runner.inputs()[0], next(o for o in self.seg.runner.outputs() if o.name == self.seg.output_name))
        _CONFIGS[self.name] = self.config()
        _install_config_route()
        _patch_binary_requests()
        self.ready = True
        return True

    def __getstate__(self):
        state = dict(self.__dict__)
        state["seg"] = None
        state["stages"] = None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.load()

    def _batch_ok(self, n: int, what: str) -> None:
        if not 1 <= n <= self.max_batch:
            raise InvalidInput(f"{what}: batch of {n}; this server takes 1..{self.max_batch} items per request")

    async def _run(self, fn, *args):
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, fn, *args)

    def config(self) -> dict:  # pragma: no cover - overridden
        raise NotImplementedError


class TensorModel(_Base):
    """``NAME``: the model's own input tensor in, its output out."""

    def config(self) -> dict:
        m = self.served
        return {
            "name": self.name, "platform": "onnxruntime_onnx", "max_batch_size": self.max_batch,
            "input": [{"name": m.input.name, "data_type": m.input.triton_type, "dims": _v2_shape(m.input.shape[1:])}],
            "output": [{"name": m.output.name, "data_type": m.output.triton_type, "dims": _v2_shape(m.output.shape[1:])}],
            "parameters": {"fcn_deploy.model_info": {"string_value": json.dumps(m.info.to_dict(), sort_keys=True)}},
        }

    def get_input_types(self) -> List[Dict]:
        t = self.served.input
        return [{"name": t.name, "datatype": t.v2_type, "shape": _v2_shape(t.shape)}]

    def get_output_types(self) -> List[Dict]:
        t = self.served.output
        return [{"name": t.name, "datatype": t.v2_type, "shape": _v2_shape(t.shape)}]

    def _tensor(self, payload: InferRequest) -> np.ndarray:
        t = self.served.input
        by_name = {i.name: i for i in payload.inputs}
        if t.name not in by_name or len(by_name) != 1:
            raise InvalidInput(f"model {self.name} takes one input {t.name!r} ({t.v2_type} {_v2_shape(t.shape)}); "
                               f"the request has {', '.join(map(repr, by_name)) or 'none'}")
        inp = by_name[t.name]
        if inp.datatype != t.v2_type:
            raise InvalidInput(f"input {t.name!r} must be {t.v2_type}, got {inp.datatype}")
        shape = [int(d) for d in inp.shape]
        if len(shape) != 4 or shape[1] != 3 or min(shape) < 1:
            raise InvalidInput(f"input {t.name!r} must have shape [N, 3, H, W], got {shape}")
        self._batch_ok(shape[0], f"input {t.name!r}")
        for i, d in enumerate(t.shape):
            if d != -1 and shape[i] != d:
                raise InvalidInput(f"input {t.name!r}: axis {i} must be {d}, got shape {shape}")
        try:
            x = inp.as_numpy()
        except (ValueError, TypeError, InvalidInput) as e:
            raise InvalidInput(f"input {t.name!r}: data does not match shape {shape} and {inp.datatype} ({e})") from None
        if x.dtype != np.dtype(t.dtype) or list(x.shape) != shape:
            raise InvalidInput(f"input {t.name!r}: data does not match shape {shape} and {inp.datatype}")
        return np.ascontiguousarray(x)

    def _infer(self, x: np.ndarray) -> np.ndarray:
        y, _ = self.seg.infer(x)
        return y

    async def predict(self, payload: InferRequest, headers: Dict[str, str] = None, response_headers: Dict[str, str] = None):
        x = self._tensor(payload)
        try:
            y = await self._run(self._infer, x)
        except FcnError as e:
            raise InvalidInput(f"model {self.name}: {e}") from None
        out = self.served.output
        dtype = V2_TYPES.get(str(y.dtype), out.v2_type)
        return InferResponse(response_id=payload.id, model_name=self.name,
                             infer_outputs=[InferOutput(out.name, list(y.shape), dtype, data=y)],
                             use_binary_outputs=payload.use_binary_outputs, requested_outputs=payload.request_outputs)


class ImageModel(_Base):
    """``NAME_ensemble``: encoded images in, label maps out (the Triton ensemble's contract)."""

    def config(self) -> dict:
        lab = "TYPE_UINT8" if self.served.info.num_classes <= 256 else "TYPE_INT32"
        return {
            "name": self.name, "platform": "ensemble", "max_batch_size": self.max_batch,
            "input": [{"name": IMAGE, "data_type": "TYPE_STRING", "dims": [1]}],
            "output": [{"name": LABELS, "data_type": lab, "dims": [-1, -1]},
                       {"name": COLORIZED, "data_type": "TYPE_UINT8", "dims": [-1, -1, 3]}],
            "parameters": {"fcn_deploy.model_info": {"string_value": json.dumps(self.served.info.to_dict(), sort_keys=True)}},
        }

    def get_input_types(self) -> List[Dict]:
        return [{"name": IMAGE, "datatype": "BYTES", "shape": [-1, 1]}]

    def get_output_types(self) -> List[Dict]:
        lab = V2_TYPES[str(self.stages.label_dtype)]
        return [{"name": LABELS, "datatype": lab, "shape": [-1, -1, -1]},
                {"name": COLORIZED, "datatype": "UINT8", "shape": [-1, -1, -1, 3]}]

    def _images(self, payload: InferRequest) -> np.ndarray:
        by_name = {i.name: i for i in payload.inputs}
        if IMAGE not in by_name or len(by_name) != 1:
            raise InvalidInput(f"model {self.name} takes one input {IMAGE!r} (BYTES [N, 1], encoded images); "
                               f"the request has {', '.join(map(repr, by_name)) or 'none'}")
        inp = by_name[IMAGE]
        if inp.datatype != "BYTES":
            raise InvalidInput(f"input {IMAGE!r} must be BYTES (encoded PNG/JPEG), got {inp.datatype}")
        shape = [int(d) for d in inp.shape]
        if not (len(shape) == 2 and shape[1] == 1 or len(shape) == 1) or shape[0] < 1:
            raise InvalidInput(f"input {IMAGE!r} must have shape [N, 1], got {shape}")
        self._batch_ok(shape[0], f"input {IMAGE!r}")
        try:
            return inp.as_numpy()
        except (ValueError, TypeError, InvalidInput) as e:
            raise InvalidInput(f"input {IMAGE!r}: data does not match shape {shape} ({e})") from None

    def _segment(self, images: np.ndarray, want_colors: bool):
        x, hw = self.stages.preprocess_bytes(images)
        y, _ = self.seg.infer(x.astype(self.seg.input_dtype, copy=False))
        return self.stages.postprocess(y, hw, colorized=want_colors)

    async def predict(self, payload: InferRequest, headers: Dict[str, str] = None, response_headers: Dict[str, str] = None):
        images = self._images(payload)
        wanted = [o.name for o in payload.request_outputs] if payload.request_outputs else [LABELS]
        unknown = [n for n in wanted if n not in (LABELS, COLORIZED)]
        if unknown:
            raise InvalidInput(f"model {self.name} has outputs {LABELS} and {COLORIZED}, not {', '.join(unknown)}")
        try:
            out = await self._run(self._segment, images, COLORIZED in wanted)
        except FcnError as e:
            raise InvalidInput(f"model {self.name}: {e}") from None
        outputs = [InferOutput(n, list(out[n].shape), V2_TYPES[str(out[n].dtype)], data=out[n]) for n in wanted]
        return InferResponse(response_id=payload.id, model_name=self.name, infer_outputs=outputs,
                             use_binary_outputs=payload.use_binary_outputs, requested_outputs=payload.request_outputs)


def _from_bytes_keeping_binary(cls, req_bytes: bytes, json_length: int, model_name: str):
    """A V2 REST request with binary tensors (the binary tensor data extension: a JSON header of
    ``Inference-Header-Content-Length`` bytes, then each input's ``binary_data_size`` bytes in
    order) decoded into KServe's ``InferRequest`` with the binary data kept as it is.

    KServe 0.21's own ``InferRequest.from_bytes`` turns every binary input back into a JSON list
    (``set_data_from_numpy(..., binary_data=False)``): a 360x480 float image becomes a Python
    list of 518,400 floats, and BYTES that are not UTF-8 (a PNG, a JPEG) fail with a 500. This
    decoder, written from the extension's spec, keeps ``_raw_data``, which ``InferInput.as_numpy``
    reads directly (``np.frombuffer``; BYTES through its 4-byte length prefixes)."""
    from kserve.protocol.infer_type import InferInput as _In, RequestedOutput

    try:
        header = json.loads(bytes(req_bytes[:json_length]))
    except (ValueError, UnicodeDecodeError) as e:
        raise InvalidInput(f"Unrecognized request format: {e}") from None
    if not isinstance(header, dict) or not isinstance(header.get("inputs"), list):
        raise InvalidInput("the request's JSON header has no 'inputs' list")
    pos, end = int(json_length), len(req_bytes)
    inputs = []
    for i, d in enumerate(header["inputs"]):
        if not isinstance(d, dict) or not all(k in d for k in ("name", "shape", "datatype")):
            raise InvalidInput(f"inputs[{i}] needs name, shape and datatype")
        if not isinstance(d["shape"], list) or not all(isinstance(v, int) and v >= 0 for v in d["shape"]):
            raise InvalidInput(f"inputs[{i}].shape must be a list of non-negative integers, got {d['shape']!r}")
        params = d.get("parameters") or {}
        if not isinstance(params, dict):
            raise InvalidInput(f"inputs[{i}].parameters must be an object")
        inp = _In(name=str(d["name"]), shape=list(d["shape"]), datatype=str(d["datatype"]), parameters=params)
        if d.get("data") is not None:
            if inp.datatype == "FP16":
                raise InvalidInput(f"input {inp.name!r}: FP16 data must be sent in binary")
            inp.data = d["data"]
        elif "binary_data_size" in params:
            n = params["binary_data_size"]
            if not isinstance(n, int) or n < 0 or pos + n > end:
                raise InvalidInput(f"input {inp.name!r}: binary_data_size {n!r} runs past the end of the request")
            inp._raw_data = bytes(req_bytes[pos:pos + n])
            pos += n
        else:
            raise InvalidInput(f"input {inp.name!r} has neither data nor binary_data_size")
        inputs.append(inp)
    if pos != end:
        raise InvalidInput(f"{end - pos} byte(s) of binary data belong to no input")
    outs = header.get("outputs")
    requested = None
    if isinstance(outs, list):
        requested = [RequestedOutput(name=str(o.get("name")), parameters=o.get("parameters")) for o in outs if isinstance(o, dict)]
    return cls(model_name=model_name, infer_inputs=inputs, request_id=header.get("id"),
               parameters=header.get("parameters"), request_outputs=requested)


def _patch_binary_requests() -> None:
    InferRequest.from_bytes = classmethod(_from_bytes_keeping_binary)


from kserve.protocol.rest.server import RESTServer as _RESTServer

_HOST = {"host": "127.0.0.1"}


class _HostRESTServer(_RESTServer):
    """KServe 0.21's REST server with the listening address of ``--host`` (its own hard-codes
    0.0.0.0). Module level so that KServe can pickle it into ``--workers`` processes."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.config.host = _HOST["host"]


def _bind_host(host: str) -> None:
    import kserve.model_server as ms
    import kserve.protocol.rest.multiprocess.server as mp

    _HOST["host"] = host
    ms.RESTServer = _HostRESTServer
    mp.RESTServer = _HostRESTServer


def serve(path, *, name: Optional[str] = None, host: str = "127.0.0.1", port: int = 8080, workers: int = 1,
          backend: str = "onnxruntime", threads: Optional[int] = None, max_batch: int = 4) -> int:
    """Load the model and serve it until stopped (SIGINT/SIGTERM)."""
    path = Path(path)
    if path.suffix.lower() != ".onnx":
        raise FcnError(f"{path}: fcn-serve kserve serves .onnx models (onnxruntime/OpenVINO on the CPU); "
                       "serve TensorRT plans with Triton (fcn-serve triton)")
    if workers < 1:
        raise FcnError(f"--workers must be >= 1, got {workers}")
    if not 0 < port < 65536:
        raise FcnError(f"--port must be within 1..65535, got {port}")
    if max_batch < 1:
        raise FcnError(f"--max-batch must be >= 1, got {max_batch}")
    m = describe_onnx(path)
    name = name or path.stem
    if not m.batch_dynamic and max_batch > m.input.shape[0]:
        max_batch = m.input.shape[0]
    models = [TensorModel(name, str(path), backend, threads, max_batch),
              ImageModel(f"{name}_ensemble", str(path), backend, threads, max_batch)]
    log.info("serving %s as %s and %s_ensemble on http://%s:%d (%d worker(s))", path, name, name, host, port, workers)
    _bind_host(host)
    server = kserve.ModelServer(http_port=port, workers=workers, enable_grpc=False, enable_latency_logging=False)
    server.start(models)
    return 0
