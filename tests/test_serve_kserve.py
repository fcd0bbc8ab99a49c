"""fcn-serve kserve for real: KServe's ModelServer started on 127.0.0.1 (a free port) in a
subprocess, ``fcn-predict --server`` (tritonclient.http) against it on CamVid val images (small
generated images without the data set): the same label maps as local fcn-predict, through the
tensor model and through NAME_ensemble; wrong dtype / shape / name / non-image payloads get a
400 protocol error and the server keeps serving; the /config route; the manifest writer."""

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

# find_spec, not importorskip: importing kserve (fastapi, pandas) costs every pytest worker a
# second at collection; the tests import it where they run a server.
if importlib.util.find_spec("kserve") is None:
    pytest.skip("kserve not installed (pip install -e .[serve])", allow_module_level=True)
httpclient = pytest.importorskip("tritonclient.http")
from tritonclient.utils import InferenceServerException

from fcn_deploy.image import read_label_png
from fcn_deploy.predict import main as predict_main
from fcn_deploy.serve.cli import main as serve_main
from runtime_models import random_image
from serve_models import make_onnx

CAMVID = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "camvid"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model, name, *extra, timeout=90.0):
    port = free_port()
    log = open(Path(model).with_suffix(f".{port}.log"), "wb")
    proc = subprocess.Popen([sys.executable, "-m", "fcn_deploy.serve.cli", "kserve", str(model), "--name", name,
                             "--port", str(port), "--threads", "1", *extra], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {Path(log.name).read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{url}/v2/models/{name}/ready", timeout=2) as r:
                if r.status == 200:
                    return proc, url, port
        except OSError:
            time.sleep(0.3)
    stop_server(proc)
    raise RuntimeError("server did not become ready")


def stop_server(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    d = tmp_path_factory.mktemp("kserve")
    model = d / "seg.onnx"
    make_onnx(model, "fp32", num_classes=11)
    proc, url, port = start_server(model, "seg")
    yield model, url, port, proc
    stop_server(proc)


def _images(tmp_path):
    val = CAMVID / "val"
    files = sorted(val.glob("*.png"))[:5] if val.is_dir() else []
    if files:
        return files
    from PIL import Image

    out = []
    for i, (h, w) in enumerate([(48, 64), (37, 51), (48, 64)]):
        p = tmp_path / f"g{i}.png"
        Image.fromarray(random_image(h, w, seed=i)).save(p)
        out.append(p)
    return out


def test_listens_on_loopback_only(served):
    _, _, port, proc = served
    out = subprocess.run(["ss", "-ltnp"], capture_output=True, text=True).stdout if Path("/usr/bin/ss").exists() or Path("/bin/ss").exists() else ""
    if not out:
        pytest.skip("ss not available")
    lines = [ln for ln in out.splitlines() if f":{port} " in ln]
    assert lines and all("127.0.0.1:" in ln for ln in lines), lines


@pytest.mark.parametrize("remote_name", ["seg", "seg_ensemble"])
def test_predict_server_matches_local(served, tmp_path, remote_name, capsys):
    model, url, _, _ = served
    images = _images(tmp_path)
    local, remote = tmp_path / "local", tmp_path / "remote"
    assert predict_main(["--model", str(model), *map(str, images), "--out", str(local), "--no-progress"]) == 0
    assert predict_main(["--server", url, "--model", remote_name, *map(str, images), "--out", str(remote), "--no-progress", "--overlay"]) == 0
    out = capsys.readouterr().out
    assert f"server on {url}/v2/models/{remote_name}" in out
    for p in images:
        a, b = read_label_png(local / f"{p.stem}.png"), read_label_png(remote / f"{p.stem}.png")
        assert a.shape == b.shape and len(np.unique(a)) > 1
        np.testing.assert_array_equal(a, b)
        assert (remote / f"{p.stem}_overlay.png").is_file()


def test_protocol_errors_and_server_keeps_serving(served):
    _, url, port, proc = served
    c = httpclient.InferenceServerClient(url=f"127.0.0.1:{port}")
    cfg = c.get_model_config("seg")
    assert json.loads(cfg["parameters"]["fcn_deploy.model_info"]["string_value"])["num_classes"] == 11
    assert c.get_model_metadata("seg_ensemble")["inputs"][0]["datatype"] == "BYTES"

    def infer(name, arr, dtype, shape=None, out="logits"):
        inp = httpclient.InferInput(name, list(shape or arr.shape), dtype)
        inp.set_data_from_numpy(arr, binary_data=True)
        model = "seg_ensemble" if name == "IMAGE" else "seg"
        return c.infer(model, [inp], outputs=[httpclient.InferRequestedOutput(out, binary_data=True)])

    x = np.zeros((1, 3, 16, 20), np.float32)
    bad = [
        (lambda: infer("input", x.astype(np.float64), "FP64"), "must be FP32"),
        (lambda: infer("input", np.zeros((1, 4, 16, 20), np.float32), "FP32"), "[N, 3, H, W]"),
        (lambda: infer("input", np.zeros((3, 16, 20), np.float32), "FP32"), "[N, 3, H, W]"),
        (lambda: infer("input", np.zeros((9, 3, 4, 4), np.float32), "FP32"), "1..4 items"),
        (lambda: infer("pixels", x, "FP32"), "takes one input 'input'"),
        (lambda: infer("IMAGE", np.array([[b"\x89PNG but not really"]], dtype=object), "BYTES", out="LABELS"), "not an image"),
        (lambda: infer("IMAGE", np.array([["text"]], dtype=object), "BYTES", out="LABELS"), "not an image"),
        (lambda: infer("IMAGE", np.zeros((1, 1), np.uint8), "UINT8", out="LABELS"), "must be BYTES"),
    ]
    for call, words in bad:
        with pytest.raises(InferenceServerException) as e:
            call()
        assert words in str(e.value) and e.value.status() == "400", str(e.value)
        assert proc.poll() is None
    # A shape that does not match the data sent (raw HTTP: tritonclient checks this itself).
    body = json.dumps({"inputs": [{"name": "input", "shape": [1, 3, 16, 20], "datatype": "FP32",
                                   "parameters": {"binary_data_size": 100}}]}).encode()
    req = urllib.request.Request(f"{url}/v2/models/seg/infer", data=body + b"\0" * 100, method="POST",
                                 headers={"Inference-Header-Content-Length": str(len(body)), "Content-Type": "application/octet-stream"})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=20)
    assert e.value.code == 400 and "does not match shape" in e.value.read().decode()
    # Still serving: a good request right after.
    y = infer("input", x, "FP32").as_numpy("logits")
    assert y.shape == (1, 11, 16, 20) and y.dtype == np.float32
    c.close()


def test_unknown_model_config_404(served):
    _, url, _, _ = served
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(f"{url}/v2/models/nothing/config", timeout=10)
    assert e.value.code == 404


def test_client_errors_are_one_line(served, tmp_path, capsys, caplog):
    model, url, port, _ = served
    img = tmp_path / "a.png"
    from PIL import Image

    Image.fromarray(random_image(20, 24)).save(img)
    assert predict_main(["--server", url, "--model", "nothing", str(img), "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "nothing" in err and len(err.strip().splitlines()) == 1
    dead = f"http://127.0.0.1:{free_port()}"
    assert predict_main(["--server", dead, "--model", "seg", str(img), "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    assert "cannot reach the server" in capsys.readouterr().err
    assert predict_main(["--server", "ftp://x", "--model", "seg", str(img), "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    assert "expected http://HOST:PORT" in capsys.readouterr().err
    assert predict_main(["--server", url, "--model", "seg", "--threads", "2", str(img), "--out", str(tmp_path / "o")]) == 2
    assert "with --server the server runs the model" in capsys.readouterr().err
    assert predict_main(["--server", url, "--model", "seg_ensemble", "--resize", "fit", str(img), "--out", str(tmp_path / "o"),
                         "--no-progress"]) == 1  # the image is skipped with the reason, the run goes on
    assert "sizes them on the server" in caplog.text
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_serve_usage_errors(tmp_path, capsys):
    assert serve_main(["kserve", str(tmp_path / "x.plan")]) == 2
    assert "TensorRT plans with Triton" in capsys.readouterr().err
    m = tmp_path / "m.onnx"
    make_onnx(m)
    assert serve_main(["kserve", str(m), "--workers", "0"]) == 2
    assert serve_main(["kserve", str(m), "--port", "70000"]) == 2


def test_manifest(tmp_path, capsys):
    out = tmp_path / "isvc.yaml"
    assert serve_main(["manifest", "pvc://models/fcn", "--name", "fcn8s", "--out", str(out), "--workers", "2",
                       "--max-replicas", "8"]) == 0
    text = out.read_text()
    yaml = pytest.importorskip("yaml")
    doc = yaml.safe_load(text)
    assert doc["apiVersion"] == "serving.kserve.io/v1beta1" and doc["kind"] == "InferenceService"
    pred = doc["spec"]["predictor"]
    assert pred["minReplicas"] == 1 and pred["maxReplicas"] == 8
    c = pred["containers"][0]
    assert c["name"] == "kserve-container" and c["env"] == [{"name": "STORAGE_URI", "value": "pvc://models/fcn"}]
    assert c["args"][:3] == ["fcn-serve", "kserve", "/mnt/models/model.onnx"] and "0.0.0.0" in c["args"]
    assert c["args"][c["args"].index("--workers") + 1] == "2"
    assert c["readinessProbe"]["httpGet"]["path"] == "/v2/models/fcn8s/ready"
    assert serve_main(["manifest", "models/fcn", "--name", "fcn8s"]) == 2
    assert serve_main(["manifest", "pvc://m", "--name", "FCN_8s"]) == 2
    assert serve_main(["manifest", "pvc://m", "--name", "f", "--memory", "lots"]) == 2


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("FCN_DEPLOY_SLOW"), reason="slow: set FCN_DEPLOY_SLOW=1")
def test_two_workers(tmp_path):
    """--workers 2: KServe spawns two server processes; each reloads the model (pickled state)."""
    model = tmp_path / "w.onnx"
    make_onnx(model)
    proc, url, port = start_server(model, "w", "--workers", "2", timeout=150)
    try:
        c = httpclient.InferenceServerClient(url=f"127.0.0.1:{port}")
        for _ in range(4):
            inp = httpclient.InferInput("input", [1, 3, 8, 8], "FP32")
            inp.set_data_from_numpy(np.zeros((1, 3, 8, 8), np.float32))
            assert c.infer("w", [inp]).as_numpy("logits").shape == (1, 5, 8, 8)
        assert "fcn_deploy.model_info" in c.get_model_config("w")["parameters"]
    finally:
        stop_server(proc)
