"""fcn_deploy.benchmarks imports torch only for the PyTorch baseline, lazily (design: benchmarks/)."""

import json
import pkgutil
import subprocess
import sys


def test_benchmark_modules_import_without_torch():
    import fcn_deploy.benchmarks as b

    mods = sorted(f"fcn_deploy.benchmarks.{m.name}" for m in pkgutil.iter_modules(b.__path__))
    assert {"fcn_deploy.benchmarks.bench", "fcn_deploy.benchmarks.evaluate", "fcn_deploy.benchmarks.torch_runner",
            "fcn_deploy.benchmarks.gpu_check", "fcn_deploy.benchmarks.demo"} <= set(mods)
    code = (
        "import sys, json, importlib\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('torch', 'tensorrt', 'pycuda'):\n"
        "            raise ImportError('blocked ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        f"for m in {mods!r}: importlib.import_module(m)\n"
        "from fcn_deploy.benchmarks.bench import main\n"
        "rc = main(['--torch', 'x.pt', '-q'])\n"  # a missing file: one line, no torch needed to say so
        "print(json.dumps([rc, sorted(k for k in sys.modules if k.split('.')[0] in ('torch', 'tensorrt', 'pycuda'))]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    rc, loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert rc == 2 and loaded == []


def test_torch_target_without_torch_is_a_clear_error_row(tmp_path):
    ckpt = tmp_path / "m.pt"
    ckpt.write_bytes(b"not really")
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'torch':\n"
        "            raise ImportError('blocked ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "from fcn_deploy.benchmarks.targets import TargetSpec, open_target\n"
        f"t = open_target(TargetSpec('torch', {str(ckpt)!r}, 'torch:m.pt'))\n"
        "print(t.error)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "needs torch" in out.stdout
