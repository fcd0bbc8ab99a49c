"""benchmarks/serve_load.py itself, small: a real server on 127.0.0.1, 2 clients, a few
requests of mixed sizes, both phases reported, no errors; and a wrong model name fails."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

# find_spec, not importorskip: importing kserve (fastapi, pandas) costs every pytest worker a
# second at collection; the tests import it where they run a server.
if importlib.util.find_spec("kserve") is None:
    pytest.skip("kserve not installed (pip install -e .[serve])", allow_module_level=True)
pytest.importorskip("tritonclient.http")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import serve_load  # noqa: E402

from runtime_models import random_image
from serve_models import make_onnx


def test_load_script_small(tmp_path, capsys):
    from PIL import Image

    model = tmp_path / "m.onnx"
    make_onnx(model)
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for i in range(3):
        Image.fromarray(random_image(30, 40, seed=i)).save(imgs / f"{i}.png")
    out = tmp_path / "r.json"
    rc = serve_load.main(["--model", str(model), "--images", str(imgs), "--clients", "2", "--requests", "8",
                          "--sizes", "32x40,24x32", "--threads", "1", "--json", str(out), "--mode", "ensemble"])
    assert rc == 0, capsys.readouterr()
    r = json.loads(out.read_text())
    assert r["schema"] == "fcn-serve-load/1" and r["settings"]["sizes"] == ["32x40", "24x32"]
    for phase in ("server", "local"):
        assert r[phase]["latency_ms"]["count"] == 8 and r[phase]["error_count"] == 0
        assert r[phase]["throughput_ips"] > 0 and r[phase]["latency_ms"]["p99"] >= r[phase]["latency_ms"]["p50"] > 0
    text = capsys.readouterr().out
    assert "server:" in text and "local :" in text


def test_load_script_bad_name(tmp_path, capsys):
    model = tmp_path / "m.onnx"
    make_onnx(model)
    from PIL import Image

    Image.fromarray(random_image(20, 20)).save(tmp_path / "a.png")
    rc = serve_load.main(["--model", str(model), "--images", str(tmp_path / "a.png"), "--requests", "2",
                          "--url", "http://127.0.0.1:9", "--skip-local"])
    assert rc == 2 and capsys.readouterr().err.startswith("error: ")
