"""fcn-bench --formats (one row per format, a failing one keeps its row) and gpu_check's
pipeline, run on CPU with onnxruntime standing in for TensorRT."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fcn_deploy.benchmarks import formats, gpu_check
from fcn_deploy.benchmarks.bench import BenchConfig
from fcn_deploy.benchmarks.evaluate import EvalResult

from test_bench_tiny_models import tiny_camvid, tiny_checkpoint

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    d = tmp_path_factory.mktemp("formats")
    data = tiny_camvid(d / "camvid", n_val=2, n_train=3, size=(24, 32), seed=3)
    ckpt = tiny_checkpoint(d / "m.pt", classes=11, seed=2)
    cache = d / "cache"
    cache.mkdir()
    calls = []

    def cached_export(checkpoint, out, precision, **kw):
        """The real exporter (parity check off to save time), each precision exported once."""
        calls.append(precision)
        src = cache / f"{precision}-{kw.get('calib_images')}.onnx"
        if not src.exists():
            formats._export(checkpoint, src, precision, **{**kw, "verify": False})
        shutil.copy(src, out)
        return Path(out)

    return {"dir": d, "data": data, "ckpt": ckpt, "export": cached_export, "calls": calls}


FAST = BenchConfig(warmup=1, iterations=3, settle_ms=0.0, prepost=False, threads=1)


def test_formats_table_with_one_failing_format(env, tmp_path):
    # calib_images=0 makes the export stage itself refuse int8; fp32 and fp16 must still run.
    doc = formats.run_formats(env["ckpt"], env["data"], fmt="camvid", split="val",
                              formats=["pytorch", "onnx-fp32", "onnx-fp16", "onnx-int8"], out_dir=tmp_path / "out",
                              config=FAST, calib_images=0, exporter=env["export"])
    rows = {r["format"]: r for r in doc["rows"]}
    assert list(rows) == ["pytorch", "onnx-fp32", "onnx-fp16", "onnx-int8"]
    assert all(set(r) == set(formats.ROW_KEYS) for r in doc["rows"])
    bad = rows["onnx-int8"]
    assert bad["error"].startswith("export failed") and "calibration" in bad["error"]
    assert bad["mean_iu"] is None and bad["median_ms"] is None
    for n in ("pytorch", "onnx-fp32", "onnx-fp16"):
        r = rows[n]
        assert r["error"] is None, r
        assert r["size_mb"] == pytest.approx(Path(r["file"]).stat().st_size / 1e6)
        assert 0 <= r["mean_iu"] <= 1 and r["median_ms"] > 0
    assert rows["pytorch"]["speedup_vs_pytorch"] == pytest.approx(1.0)
    # fp32 ONNX scores what PyTorch scores (same model, same pre/post-processing); fp16 of the
    # same weights within 1 point (its labels differ on a few near-tie pixels at most).
    assert rows["onnx-fp32"]["mean_iu"] == pytest.approx(rows["pytorch"]["mean_iu"], abs=1e-3)
    assert rows["onnx-fp32"]["pixel_acc"] == pytest.approx(rows["pytorch"]["pixel_acc"], abs=1e-3)
    assert rows["onnx-fp16"]["mean_iu"] == pytest.approx(rows["pytorch"]["mean_iu"], abs=0.01)
    assert rows["onnx-fp16"]["pixel_acc"] == pytest.approx(rows["pytorch"]["pixel_acc"], abs=0.01)
    # The mean IU is the mean IU (not the pixel accuracy): a model scoring 11 classes on random labels
    # has a mean IU well below its pixel accuracy.
    assert rows["pytorch"]["mean_iu"] < rows["pytorch"]["pixel_acc"]
    assert rows["onnx-fp16"]["size_mb"] < 0.6 * rows["onnx-fp32"]["size_mb"]
    assert rows["onnx-fp32"]["speedup_vs_pytorch"] == pytest.approx(
        rows["pytorch"]["median_ms"] / rows["onnx-fp32"]["median_ms"])
    # The speed figures come from one interleaved comparison with PyTorch first.
    assert doc["bench"]["reference"] == "pytorch" and doc["bench"]["settings"]["interleaved"]
    text = formats.render_table(doc)
    assert "onnx-int8" in text and "export failed" in text
    md = formats.render_markdown(doc)
    assert "| onnx-fp16 |" in md and "| onnx-int8 |" in md and "export failed" in md
    json.dumps(doc)  # serialisable


def test_formats_int8_layouts_each_get_a_row(env, tmp_path):
    onnx = pytest.importorskip("onnx")
    doc = formats.run_formats(env["ckpt"], env["data"], fmt="camvid", split="val",
                              formats=["pytorch", "onnx-int8", "onnx-int8cpu"], out_dir=tmp_path / "out",
                              config=FAST, calib_images=3, exporter=env["export"])
    rows = {r["format"]: r for r in doc["rows"]}
    assert [rows[n]["error"] for n in rows] == [None, None, None], rows
    assert rows["onnx-int8cpu"]["precision"] == "int8cpu" and rows["onnx-int8"]["precision"] == "int8"
    assert rows["onnx-int8cpu"]["file"] != rows["onnx-int8"]["file"]

    def zero_point_types(path):
        m = onnx.load(path)
        inits = {i.name: i.data_type for i in m.graph.initializer}
        return {inits[n.input[2]] for n in m.graph.node if n.op_type == "QuantizeLinear" and len(n.input) > 2}

    # cpu layout: uint8 activations; TensorRT layout: int8 (zero point 0)
    assert zero_point_types(rows["onnx-int8cpu"]["file"]) == {onnx.TensorProto.UINT8}
    assert zero_point_types(rows["onnx-int8"]["file"]) == {onnx.TensorProto.INT8}
    assert all(rows[n]["median_ms"] > 0 for n in rows)
    # int8 calibrated on the train images scores within 3 points of PyTorch on val.
    for n in ("onnx-int8", "onnx-int8cpu"):
        assert rows[n]["mean_iu"] == pytest.approx(rows["pytorch"]["mean_iu"], abs=0.03), (n, rows[n], rows["pytorch"])
        assert rows[n]["pixel_acc"] == pytest.approx(rows["pytorch"]["pixel_acc"], abs=0.03), (n, rows[n], rows["pytorch"])


def test_formats_unknown_name_lists_valid(env):
    from fcn_deploy.errors import FcnError

    with pytest.raises(FcnError, match="onnx-int8"):
        formats.run_formats(env["ckpt"], env["data"], formats=["tflite"])


def test_formats_cli_bad_input(env, capsys):
    from fcn_deploy.benchmarks import bench

    for argv, expect in (
        (["--formats", str(env["ckpt"])], "the following arguments are required: --data (see fcn-bench formats --help)"),
        (["--formats", "/nope.pt", "--data", str(env["data"])], "checkpoint not found"),
        (["--formats", str(env["ckpt"]), "--data", str(env["data"]), "--shape", "1x3x8x8", "--shape", "1x3x9x9"], "once"),
    ):
        assert bench.main(argv + ["-q"]) == 2
        err = capsys.readouterr().err
        assert expect in err and "Traceback" not in err


# -- gpu_check ------------------------------------------------------------------------------------

def test_gpu_check_without_a_gpu_says_so():
    # No GPU visible (CUDA_VISIBLE_DEVICES empty), whether or not this machine has one.
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_check.py")], capture_output=True,
                         text=True, timeout=120, cwd=REPO, env=env)
    assert out.returncode == 2, out.stderr
    assert "NOT RUN" in out.stderr and "NVIDIA GPU" in out.stderr and "Nothing was checked" in out.stderr
    assert "Traceback" not in out.stderr


def _result(agree, ref_miu, miu, pixels=100):
    return EvalResult(model="m", backend="b", device="d", precision="fp16", data="x", format="camvid", split="val",
                      images=1, pixels=pixels, class_names=["a"], scores={"mean_iu": miu, "pixel_acc": 0.5},
                      hist=None, seconds=0.0,
                      reference={"label_agreement": agree, "mean_iu_delta": miu - ref_miu, "metrics": {"mean_iu": ref_miu}})


def test_accuracy_checks_thresholds():
    t = gpu_check.Thresholds()
    ok = gpu_check.accuracy_checks("fp16 engine", "fp16", _result(0.999, 0.60, 0.598), t)
    assert [c.passed for c in ok] == [True, True]
    bad = gpu_check.accuracy_checks("fp16 engine", "fp16", _result(0.990, 0.60, 0.590), t)
    assert [c.passed for c in bad] == [False, False]
    assert "99.000%" in bad[0].measured and "-1.00 points" in bad[1].measured
    # int8 is allowed more.
    assert [c.passed for c in gpu_check.accuracy_checks("i", "int8", _result(0.990, 0.60, 0.592), t)] == [True, True]
    assert bad[0].line().startswith("[FAIL] fp16 engine: pixel labels agree with PyTorch")


def test_speed_checks_and_summary():
    rep = {"reference": "torch", "results": [
        {"target": "torch", "latency_ms": {"median": 10.0}, "speedup": 1.0, "error": None},
        {"target": "fast", "latency_ms": {"median": 2.0}, "speedup": 5.0, "error": None,
         "h2d_ms": {"median": 0.1}, "compute_ms": {"median": 1.5}, "d2h_ms": {"median": 0.2}},
        {"target": "slow", "latency_ms": {"median": 20.0}, "speedup": 0.5, "error": None},
        {"target": "broken", "latency_ms": None, "speedup": None, "error": "engine mismatch"},
    ]}
    c = gpu_check.speed_checks(rep, ["fast", "slow", "broken"], gpu_check.Thresholds())
    assert [x.passed for x in c] == [True, False, False]
    assert "5.00x" in c[0].measured and "compute 1.50" in c[0].detail
    assert "engine mismatch" in c[2].measured
    s = gpu_check.format_checks(c)
    assert s.strip().endswith("1/3 checks passed -- FAILED")


def test_gpu_check_pipeline_on_cpu(env, tmp_path):
    """The whole gpu_check pipeline with onnxruntime as the 'engine' and PyTorch on CPU."""
    cfg = gpu_check.GpuCheckConfig(checkpoint=env["ckpt"], data=env["data"], out=tmp_path / "gc", limit=2,
                                   iterations=2, warmup=1, calib_images=3)
    built = []

    def build(onnx, plan, shape):
        built.append(shape)
        shutil.copy(onnx, plan)
        return plan

    lines = []
    checks = gpu_check.run_gpu_check(
        cfg, export=lambda c, o, p, g: env["export"](c, o, p, data=g.data, fmt=g.fmt, calib_images=g.calib_images),
        build=build, engine_backend="onnx", engine_eval_backend="onnxruntime", engine_suffix=".standin.onnx",
        torch_backend="torch", reference_device="cpu", say=lines.append)
    names = [c.name for c in checks]
    for p in ("fp16", "int8"):
        assert f"{p}: export to ONNX (with its PyTorch parity check)" in names
        assert f"{p}: TensorRT engine build" in names
        assert f"{p} engine: pixel labels agree with PyTorch" in names
        assert f"{p} engine: mean IU matches PyTorch" in names
    assert built == [(1, 3, 24, 32)] * 2
    by = {c.name: c for c in checks}
    assert all(by[n].passed for n in names if "export" in n or "build" in n)
    # fp16 and calibrated int8 of the same weights agree with PyTorch on (nearly) every pixel and
    # score its mean IU within the thresholds.
    for p in ("fp16", "int8"):
        for what in ("pixel labels agree with PyTorch", "mean IU matches PyTorch"):
            assert by[f"{p} engine: {what}"].passed, by[f"{p} engine: {what}"]
    # The speed checks say what the interleaved comparison measured, and pass exactly when the
    # engine's median beats PyTorch's.
    bench = json.loads((tmp_path / "gc" / "bench.json").read_text())
    res = {r["target"]: r for r in bench["results"]}
    ref_ms = res[bench["reference"]]["latency_ms"]["median"]
    speed = [c for c in checks if "faster than PyTorch" in c.name]
    assert [c.name.split(": faster")[0] for c in speed] == [f"onnx:m-{p}.standin.onnx" for p in ("fp16", "int8")]
    for c in speed:
        r = res[c.name.split(": faster")[0]]
        ms = r["latency_ms"]["median"]
        assert f"median {ms:.2f} ms vs {ref_ms:.2f} ms" in c.measured
        assert c.passed == (ref_ms / ms > 1.0)
    summary = gpu_check.format_checks(checks)
    n_pass = sum(c.passed for c in checks)
    assert summary.strip().endswith(f"{n_pass}/{len(checks)} checks passed" + (" -- PASS" if n_pass == len(checks) else " -- FAILED"))
