"""The Open Inference Protocol client behind ``fcn-predict --server``: ``tritonclient.http``
against Triton or ``fcn-serve kserve``, with the runtime's own pre/post-processing.

::

    from fcn_deploy.serve.client import connect
    seg = connect("http://127.0.0.1:8000", "fcn8s")      # or "fcn8s_ensemble"
    res = seg.segment("street.png")                      # a SegmentationResult, as Segmenter gives
    res.labels

The model's class names, palette and normalization come from the server's model configuration
(``GET /v2/models/NAME/config``, ``parameters["fcn_deploy.model_info"]``, written by
``fcn-serve triton`` and served by ``fcn-serve kserve``). Two ways to call, chosen from the
model's input type:

- the FCN itself (input FP32/FP16): the image is decoded, sized and normalised here by the
  runtime's Segmenter stages, sent as a binary tensor, and the returned scores/labels are
  turned into a label map here (argmax, resize back): the same functions as local prediction;
- an ensemble (input ``IMAGE``, BYTES): the file's bytes are sent as they are and ``LABELS``
  comes back, computed on the server by the same stages.

Server errors (a protocol error response) and connection failures raise :class:`FcnError`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional
from urllib.parse import urlparse

import numpy as np

from fcn_deploy import image as _img
from fcn_deploy.backends.base import TensorSpec
from fcn_deploy.errors import FcnError, first_line
from fcn_deploy.modelinfo import ModelInfo
from fcn_deploy.serve import SERVE_INSTALL_HINT
from fcn_deploy.serve.model_files import NUMPY_OF_V2
from fcn_deploy.serve.pipeline import IMAGE, LABELS, Stages

MODEL_INFO_PARAM = "fcn_deploy.model_info"


def _httpclient():
    try:
        import tritonclient.http as httpclient
        from tritonclient.utils import InferenceServerException
    except ImportError as e:
        raise FcnError(f"tritonclient is not installed ({e}): {SERVE_INSTALL_HINT}") from None
    return httpclient, InferenceServerException


def parse_server_url(url: str):
    """``http://HOST:PORT`` (or ``HOST:PORT``) -> ("HOST:PORT", ssl)."""
    text = str(url).strip()
    if "://" not in text:
        text = "http://" + text
    u = urlparse(text)
    if u.scheme not in ("http", "https") or not u.hostname:
        raise FcnError(f"--server {url!r}: expected http://HOST:PORT")
    if u.path not in ("", "/") or u.query:
        raise FcnError(f"--server {url!r}: give only http://HOST:PORT (no path)")
    try:
        port = u.port or (443 if u.scheme == "https" else 80)
    except ValueError:
        raise FcnError(f"--server {url!r}: bad port") from None
    host = f"[{u.hostname}]" if ":" in u.hostname else u.hostname
    return f"{host}:{port}", u.scheme == "https"


class RemoteSegmenter:
    """Segments images through a V2 inference server; quacks like :class:`Segmenter` for
    ``fcn-predict`` (``segment``, ``info``, ``num_classes``, ``backend``, ``device``,
    ``last_timing``, ``close``)."""

    backend = "server"

    def __init__(self, url: str, model: str, *, timeout: float = 120.0, concurrency: int = 1):
        httpclient, self._Exc = _httpclient()
        self._http = httpclient
        hostport, ssl = parse_server_url(url)
        self.url = url
        self.model = model
        self.device = f"{'https' if ssl else 'http'}://{hostport}/v2/models/{model}"
        try:
            self.client = httpclient.InferenceServerClient(url=hostport, ssl=ssl, connection_timeout=timeout,
                                                           network_timeout=timeout, concurrency=concurrency)
            meta = self.client.get_model_metadata(model)
            config = self.client.get_model_config(model)
        except self._Exc as e:
            raise FcnError(f"{url}: model {model!r}: {first_line(e)}") from None
        except Exception as e:  # connection refused, DNS, timeouts (gevent/socket errors)
            raise FcnError(f"{url}: cannot reach the server ({type(e).__name__}: {first_line(e)})") from None
        self.info = self._model_info(config)
        self._last = None
        ins, outs = meta.get("inputs") or [], meta.get("outputs") or []
        if len(ins) != 1:
            raise FcnError(f"{url}: model {model!r} has {len(ins)} inputs; an fcn-deploy model has one")
        self.input_name = ins[0]["name"]
        self.input_type = ins[0]["datatype"]
        if self.input_type == "BYTES":
            self.mode = "image"
            if not any(o["name"] == LABELS for o in outs):
                raise FcnError(f"{url}: model {model!r} takes BYTES but has no {LABELS} output")
            self.output_name = LABELS
            self.stages = None
        else:
            self.mode = "tensor"
            if self.input_type not in ("FP32", "FP16"):
                raise FcnError(f"{url}: model {model!r} takes {self.input_type}; expected FP32/FP16 or BYTES (an ensemble)")
            by_name = {o["name"]: o for o in outs}
            out = by_name.get(self.info.output_name) or (outs[0] if len(outs) == 1 else None)
            if out is None:
                raise FcnError(f"{url}: model {model!r} has outputs {', '.join(by_name)}, not {self.info.output_name!r}")
            self.output_name = out["name"]
            spec_in = TensorSpec(self.input_name, NUMPY_OF_V2[self.input_type], tuple(None if d < 0 else d for d in ins[0]["shape"]))
            spec_out = TensorSpec(self.output_name, NUMPY_OF_V2.get(out["datatype"], "float32"),
                                  tuple(None if d < 0 else d for d in out["shape"]))
            self.stages = Stages(self.info, spec_in, spec_out)

    def _model_info(self, config: dict) -> ModelInfo:
        params = config.get("parameters") or {}
        raw = params.get(MODEL_INFO_PARAM)
        if isinstance(raw, dict):
            raw = raw.get("string_value")
        if not raw:
            raise FcnError(f"{self.url}: model {self.model!r} carries no {MODEL_INFO_PARAM} parameter (class names, palette, "
                           "normalization); serve a repository written by fcn-serve triton, or fcn-serve kserve")
        try:
            return ModelInfo.from_dict(json.loads(raw))
        except (ValueError, FcnError) as e:
            raise FcnError(f"{self.url}: model {self.model!r}: {MODEL_INFO_PARAM} is malformed ({first_line(e)})") from None

    @property
    def num_classes(self) -> int:
        return self.info.num_classes

    @property
    def last_timing(self):
        return self._last

    def _infer(self, inputs, outputs):
        try:
            return self.client.infer(self.model, inputs, outputs=outputs)
        except self._Exc as e:
            raise FcnError(f"server: {first_line(e)}") from None
        except Exception as e:
            raise FcnError(f"server {self.url}: {type(e).__name__}: {first_line(e)}") from None

    def segment(self, src, *, resize: Optional[str] = None):
        """One image (path, PIL image or HxWx3 uint8 array) -> SegmentationResult."""
        from fcn_deploy.segmenter import SegmentationResult, SegmentTiming

        http = self._http
        t0 = time.perf_counter()
        rgb = _img.load_image(src)
        t1 = time.perf_counter()
        if self.mode == "image":
            if resize is not None:
                raise FcnError(f"--resize {resize}: model {self.model!r} takes encoded images and sizes them on the server; "
                               "use the tensor model (without _ensemble) to fit images on the client")
            if isinstance(src, (str, Path)):
                data = Path(src).read_bytes()
            else:
                import io

                from PIL import Image

                buf = io.BytesIO()
                Image.fromarray(rgb).save(buf, format="PNG")
                data = buf.getvalue()
            arr = np.array([[data]], dtype=object)
            inp = http.InferInput(IMAGE, [1, 1], "BYTES")
            inp.set_data_from_numpy(arr, binary_data=True)
            t2 = time.perf_counter()
            res = self._infer([inp], [http.InferRequestedOutput(LABELS, binary_data=True)])
            t3 = time.perf_counter()
            lab = res.as_numpy(LABELS)
            if lab is None or lab.ndim != 3 or lab.shape[0] != 1:
                raise FcnError(f"server returned {LABELS} of shape {None if lab is None else list(lab.shape)}; expected [1, H, W]")
            labels = lab[0]
            if labels.shape != rgb.shape[:2]:
                # The server decoded the file; EXIF orientation is applied on both sides.
                raise FcnError(f"server returned a {labels.shape[0]}x{labels.shape[1]} label map for a {rgb.shape[0]}x{rgb.shape[1]} image")
            t4 = time.perf_counter()
        else:
            st = self.stages
            st.resize = resize
            x, hw = st.preprocess_images([rgb])
            inp = http.InferInput(self.input_name, list(x.shape), self.input_type)
            inp.set_data_from_numpy(np.ascontiguousarray(x), binary_data=True)
            t2 = time.perf_counter()
            res = self._infer([inp], [http.InferRequestedOutput(self.output_name, binary_data=True)])
            t3 = time.perf_counter()
            y = res.as_numpy(self.output_name)
            if y is None:
                raise FcnError(f"server returned no {self.output_name!r}")
            labels = st.labels(y, hw)[0]
            t4 = time.perf_counter()
        timing = SegmentTiming(load_ms=(t1 - t0) * 1e3, preprocess_ms=(t2 - t1) * 1e3, infer_ms=(t3 - t2) * 1e3,
                               postprocess_ms=(t4 - t3) * 1e3)
        self._last = timing
        return SegmentationResult(labels, rgb, self.info, None, timing)

    def close(self) -> None:
        try:
            self.client.close()
        except Exception:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def connect(url: str, model: str, **kw) -> RemoteSegmenter:
    """A :class:`RemoteSegmenter` for ``model`` on the server at ``url``."""
    return RemoteSegmenter(url, model, **kw)
