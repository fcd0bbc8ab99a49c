"""benchmarks/video_bench.py end to end on a tiny model and a few synthetic frames: both modes
run interleaved on the same video and the report carries what benchmarks/RESULTS.md ("Video") quotes."""

import json

import pytest

pytest.importorskip("av")
pytest.importorskip("onnxruntime")


def test_video_bench_small(tmp_path, capsys):
    from fcn_deploy.benchmarks.video_bench import main
    from runtime_models import make_tiny_onnx, tiny_info

    make_tiny_onnx(tmp_path / "m.onnx", tiny_info(5))
    rc = main(["--model", str(tmp_path / "m.onnx"), "--frames", "6", "--reps", "1", "--threads", "1",
               "--out", str(tmp_path / "work"), "--json", str(tmp_path / "r.json")])
    assert rc == 0
    r = json.loads((tmp_path / "r.json").read_text())
    assert [x["mode"] for x in r["runs"]] == ["sequential", "pipelined"]
    assert all(x["frames"] == 6 and x["fps"] > 0 and 0 < x["model_busy"] <= 1 and x["cpu_s"] > 0 for x in r["runs"])
    assert set(r["runs"][0]["stage_ms"]) == {"decode", "preprocess", "infer", "postprocess", "encode"}
    assert r["speedup"] == pytest.approx(r["pipelined_fps_mean"] / r["sequential_fps_mean"])
    assert str(tmp_path) not in r["command"]  # no absolute paths in committed reports
    assert "pipelined" in capsys.readouterr().out
