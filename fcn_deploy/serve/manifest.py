"""A KServe ``InferenceService`` manifest that runs ``fcn-serve kserve`` on Kubernetes.

The predictor is a custom container (an image with ``pip install "fcn-deploy[serve,ort]"``);
its ``STORAGE_URI`` environment variable makes KServe's storage initializer download the model
to ``/mnt/models`` before the server starts. Replicas scale between ``minReplicas`` and
``maxReplicas``; the readiness probe is the V2 ``/v2/models/NAME/ready`` endpoint. Written as
plain YAML text (no YAML library needed); unverified on a cluster here (none on this project's
machines): ``kubectl apply --dry-run=server -f`` on a cluster with KServe checks it.
"""

from __future__ import annotations

import json
import re

from fcn_deploy.errors import FcnError

_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|Ki|Mi|Gi|Ti|k|M|G|T)?$")


def _q(s) -> str:
    return json.dumps(str(s))  # a JSON string is a valid YAML scalar


def inference_service_manifest(name: str, model_uri: str, *, model_file: str = "model.onnx",
                               image: str = "fcn-deploy-serve:latest", min_replicas: int = 1, max_replicas: int = 4,
                               cpu: str = "2", memory: str = "4Gi", workers: int = 1, port: int = 8080) -> str:
    if not _NAME.match(name) or len(name) > 63:
        raise FcnError(f"--name {name!r}: an InferenceService name is a DNS label (lower-case letters, digits, '-', at most 63)")
    if "://" not in model_uri:
        raise FcnError(f"model URI {model_uri!r} needs a scheme KServe's storage initializer knows (pvc://, s3://, gs://, https://)")
    if "/" in model_file or not model_file.endswith(".onnx"):
        raise FcnError(f"--model-file {model_file!r}: the .onnx file name inside the storage URI")
    if not 0 <= min_replicas <= max_replicas or max_replicas < 1:
        raise FcnError(f"replicas: need 0 <= min ({min_replicas}) <= max ({max_replicas}) and max >= 1")
    for what, v in (("--cpu", cpu), ("--memory", memory)):
        if not _QUANTITY.match(str(v)):
            raise FcnError(f"{what} {v!r} is not a Kubernetes quantity (e.g. 2, 500m, 4Gi)")
    if workers < 1:
        raise FcnError(f"--workers must be >= 1, got {workers}")
    args = ["fcn-serve", "kserve", f"/mnt/models/{model_file}", "--name", name, "--host", "0.0.0.0",
            "--port", str(port), "--workers", str(workers)]
    lines = [
        "apiVersion: serving.kserve.io/v1beta1",
        "kind: InferenceService",
        "metadata:",
        f"  name: {_q(name)}",
        "spec:",
        "  predictor:",
        f"    minReplicas: {int(min_replicas)}",
        f"    maxReplicas: {int(max_replicas)}",
        "    containers:",
        "      - name: kserve-container",
        f"        image: {_q(image)}",
        f"        args: [{', '.join(_q(a) for a in args)}]",
        "        env:",
        "          - name: STORAGE_URI",
        f"            value: {_q(model_uri)}",
        "        ports:",
        f"          - containerPort: {int(port)}",
        "            protocol: TCP",
        "        readinessProbe:",
        "          httpGet:",
        f"            path: {_q(f'/v2/models/{name}/ready')}",
        f"            port: {int(port)}",
        "        resources:",
        f"          requests: {{cpu: {_q(cpu)}, memory: {_q(memory)}}}",
        f"          limits: {{cpu: {_q(cpu)}, memory: {_q(memory)}}}",
    ]
    return "\n".join(lines) + "\n"
