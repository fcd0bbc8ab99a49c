"""The runtime needs no torch (and no onnx package): segmentation and fcn-predict run in a
subprocess where importing torch or onnx fails, and neither ends up in sys.modules."""

import json
import subprocess
import sys

import numpy as np
from PIL import Image

from runtime_models import expected_scores, make_tiny_onnx, random_image, tiny_info

BLOCKER = """
import sys
BLOCKED = {blocked!r}
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in BLOCKED:
            raise ImportError('blocked ' + name)
sys.meta_path.insert(0, Block())
"""


def _run(code, blocked):
    out = subprocess.run([sys.executable, "-c", BLOCKER.format(blocked=blocked) + code],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def _setup(tmp_path):
    info = tiny_info(5, channel_order="BGR")
    W, b = make_tiny_onnx(tmp_path / "m.onnx", info)
    rgb = random_image(33, 45, 4)
    Image.fromarray(rgb).save(tmp_path / "img.png")
    np.save(tmp_path / "expected.npy", expected_scores(rgb, info, W, b).argmax(0))
    return rgb


def test_onnxruntime_segmentation_and_predict_without_torch(tmp_path):
    _setup(tmp_path)
    code = f"""
import json, numpy as np
import fcn_deploy
from fcn_deploy.predict import main
d = {str(tmp_path)!r}
seg = fcn_deploy.load(d + '/m.onnx')
r = seg.segment(d + '/img.png', return_confidence=True)
agree = float((r.labels == np.load(d + '/expected.npy')).mean())
rc = main(['--model', d + '/m.onnx', d + '/img.png', '--out', d + '/out', '--overlay', '--no-progress'])
print(json.dumps({{'backend': seg.backend, 'agree': agree, 'rc': rc,
    'loaded': sorted(k for k in sys.modules if k.split('.')[0] in ('torch', 'onnx', 'tensorrt', 'openvino'))}}))
"""
    res = _run(code, ["torch", "onnx", "torchvision"])
    assert res["backend"] == "onnxruntime" and res["rc"] == 0
    assert res["agree"] > 0.995
    assert res["loaded"] == []
    labels = np.asarray(Image.open(tmp_path / "out" / "img.png"))
    assert (labels == np.load(tmp_path / "expected.npy")).mean() > 0.995
    assert (tmp_path / "out" / "img_overlay.png").is_file()


def test_openvino_only_without_torch_or_onnxruntime(tmp_path):
    _setup(tmp_path)
    code = f"""
import json, numpy as np
import fcn_deploy
d = {str(tmp_path)!r}
seg = fcn_deploy.load(d + '/m.onnx')   # auto: onnxruntime is missing, so OpenVINO
r = seg.segment(d + '/img.png')
print(json.dumps({{'backend': seg.backend, 'agree': float((r.labels == np.load(d + '/expected.npy')).mean()),
    'loaded': sorted(k for k in sys.modules if k.split('.')[0] in ('torch', 'onnx', 'onnxruntime'))}}))
"""
    import pytest

    pytest.importorskip("openvino")
    res = _run(code, ["torch", "onnx", "onnxruntime"])
    assert res["backend"] == "openvino" and res["agree"] > 0.995 and res["loaded"] == []
