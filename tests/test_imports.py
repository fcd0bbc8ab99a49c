"""The runtime must import without torch: edge devices have none."""

import json
import pkgutil
import subprocess
import sys

import fcn_deploy


def _runtime_modules():
    skip = ("fcn_deploy.training", "fcn_deploy.export", "fcn_deploy.benchmarks")
    for m in pkgutil.walk_packages(fcn_deploy.__path__, "fcn_deploy."):
        if not m.name.startswith(skip):
            yield m.name


def test_runtime_imports_without_torch():
    mods = sorted(_runtime_modules())
    assert "fcn_deploy.metrics" in mods
    code = (
        "import sys, json, importlib\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('torch', 'tensorrt', 'onnxruntime', 'openvino', 'pycuda'):\n"
        "            raise ImportError('blocked ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        f"mods = {mods!r}\n"
        "for m in mods: importlib.import_module(m)\n"
        "print(json.dumps(sorted(k for k in sys.modules if k.split('.')[0] in ('torch','tensorrt','onnxruntime','openvino','pycuda'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_plain_import_holds_no_torch():
    out = subprocess.run(
        [sys.executable, "-c", "import fcn_deploy, sys; print('torch' in sys.modules)"],
        capture_output=True, text=True,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
