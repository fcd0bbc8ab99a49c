"""Smoke test of `make demo` (python -m fcn_deploy.benchmarks.demo) with its smallest settings."""

import json

import pytest

from fcn_deploy.benchmarks import demo


@pytest.mark.timeout(300)
# Slow (~35 s quiet, minutes loaded): every stage of `make demo`; each stage has its own default-run tests.
@pytest.mark.slow
def test_demo_quick_runs_every_stage(tmp_path, capsys):
    pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    out = tmp_path / "demo"
    # int8 included: its calibration reads the demo's own folders dataset (a layout regression broke it once).
    rc = demo.main(["--out", str(out), "--quick", "--threads", "2"])
    text = capsys.readouterr().out
    assert rc == 0, text
    for i, stage in enumerate(demo.STAGES, 1):
        assert f"[{i}/{len(demo.STAGES)}] {stage}:" in text
    assert "fcn-deploy demo summary" in text
    for name in ("pixel acc", "mean acc", "mean IU", "fw IU"):
        assert name in text
    summary = json.loads((out / "summary.json").read_text())
    rows = {r["format"]: r for r in summary["formats"]}
    assert {"pytorch-fp32", "onnxruntime-fp32", "onnxruntime-int8"} <= set(rows)
    # The exported fp32 model scores what PyTorch scores and labels every pixel the same way.
    assert rows["onnxruntime-fp32"]["metrics"]["mean_iu"] == pytest.approx(rows["pytorch-fp32"]["metrics"]["mean_iu"], abs=1e-6)
    assert rows["onnxruntime-fp32"]["agreement"] > 0.999
    assert all(v["median_ms"] > 0 for r in rows.values() for v in r["latency"].values())
    for f in ("model.pt", "model.onnx", "bench.json", "bench.md", "confusion.png", "eval-onnxruntime-fp32.json"):
        assert (out / f).is_file(), f
    assert len(list((out / "predictions").glob("*_overlay.png"))) == 2
    assert len(list((out / "panels").glob("panel_*.png"))) == 2  # fp32 | int8 comparison panels
    assert summary["problems"] == []


def test_demo_bad_arguments(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    for argv, expect in ((["--out", str(f)], "not a folder"), (["--camvid", str(tmp_path / "nope")], "not found"),
                         (["--threads", "0"], "--threads")):
        assert demo.main(argv) == 2
        err = capsys.readouterr().err
        assert expect in err and "Traceback" not in err
