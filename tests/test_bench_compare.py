"""fcn-bench: interleaved --compare on tiny onnxruntime models, reports, error rows, CLI paths."""

import json

import numpy as np
import pytest

from fcn_deploy.benchmarks import bench, report, targets
from fcn_deploy.benchmarks.bench import BenchConfig, Series, run_benchmark
from fcn_deploy.benchmarks.targets import OpenedTarget, TargetSpec, parse_target
from fcn_deploy.errors import FcnError

from test_bench_tiny_models import tiny_onnx

pytest.importorskip("onnxruntime")

# The documented JSON keys (docs/benchmarks.md). Changing them is a breaking change.
TOP = {"schema", "tool_version", "created_utc", "machine", "settings", "reference", "targets",
       "results", "peak_rss_mb", "warnings", "notes"}
MACHINE = {"cpu", "cores", "platform", "python", "numpy", "load_avg"}
SETTINGS = {"warmup", "iterations", "duration_s", "threads", "seed", "inputs", "interleaved",
            "settle_ms", "prepost_iterations", "cv_threshold", "concurrency"}
TARGET = {"label", "backend", "path", "precision", "device", "load_ms", "load_rss_mb", "error"}
RESULT = {"target", "shape", "batch", "height", "width", "error", "iterations", "latency_ms",
          "throughput_ips", "cv_warning", "h2d_ms", "compute_ms", "d2h_ms", "pre_ms", "post_ms",
          "speedup", "paired_speedup", "concurrency", "concurrent_ips"}
SUMMARY = {"count", "min", "mean", "median", "p90", "p95", "p99", "max", "std", "cv"}

FAST = dict(warmup=1, iterations=4, settle_ms=0.0, threads=1)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    small = tiny_onnx(d / "small.onnx", width=4, depth=1, seed=1)
    big = tiny_onnx(d / "big.onnx", width=16, depth=3, seed=2)
    static = tiny_onnx(d / "static.onnx", static_hw=(16, 16), seed=3)
    bad = d / "bad.onnx"
    bad.write_bytes(b"this is not a protobuf")
    return {"small": small, "big": big, "static": static, "bad": bad}


def _spec(backend, path):
    return TargetSpec(backend, str(path), f"{backend}:{path.name}")


def test_json_has_the_documented_keys(models, tmp_path):
    cfg = BenchConfig(shapes=((1, 3, 16, 16), (2, 3, 9, 13)), **FAST)
    rep = run_benchmark([_spec("onnx", models["big"]), _spec("onnx", models["small"])], cfg)
    path = tmp_path / "r.json"
    report.write_json(rep, path)
    doc = json.loads(path.read_text())
    assert set(doc) == TOP
    assert doc["schema"] == "fcn-bench/2"
    assert set(doc["machine"]) == MACHINE
    assert set(doc["settings"]) == SETTINGS
    assert doc["settings"]["interleaved"] is True
    assert len(doc["targets"]) == 2 and all(set(t) == TARGET for t in doc["targets"])
    assert len(doc["results"]) == 4 and all(set(r) == RESULT for r in doc["results"])
    for r in doc["results"]:
        assert r["error"] is None
        assert r["iterations"] == 4
        assert set(r["latency_ms"]) == SUMMARY and r["latency_ms"]["count"] == 4
        assert set(r["pre_ms"]) == SUMMARY and set(r["post_ms"]) == SUMMARY
        assert r["throughput_ips"] > 0
    assert doc["reference"] == "onnx:big.onnx"
    first = [r for r in doc["results"] if r["target"] == "onnx:big.onnx"]
    assert all(r["speedup"] == pytest.approx(1.0) for r in first)
    assert doc["targets"][0]["precision"] == "fp32"


def test_interleaved_round_robin_on_the_same_inputs(models, monkeypatch):
    calls = []

    def recording(path, *, threads=None):
        from fcn_deploy.benchmarks.runtime import open_runner

        r = open_runner(path, backend="onnxruntime", threads=threads, providers=("cpu",))
        real = r.infer

        def infer(feeds):
            calls.append((path, next(iter(feeds.values())).copy()))
            return real(feeds)

        r.infer = infer
        return r

    # Registering a backend is the extension point: it must be usable right away.
    monkeypatch.setitem(targets._REGISTRY, "rec", targets.Backend("rec", "recording ORT", recording, "onnx"))
    a, b = str(models["small"]), str(models["big"])
    cfg = BenchConfig(shapes=((1, 3, 8, 8),), warmup=0, iterations=4, settle_ms=0.0, prepost=False)
    run_benchmark([TargetSpec("rec", a, "A"), TargetSpec("rec", b, "B")], cfg)
    order = [p for p, _ in calls]
    # Round r starts at target r mod 2: A B | B A | A B | B A.
    assert order == [a, b, b, a, a, b, b, a]
    # Both targets saw identical inputs round by round (same pixels, same convention here).
    by_round = [calls[i:i + 2] for i in range(0, 8, 2)]
    for (_, x1), (_, x2) in by_round:
        np.testing.assert_array_equal(x1, x2)
    x = calls[0][1]
    assert x.dtype == np.float32 and x.shape == (1, 3, 8, 8)
    assert np.count_nonzero(x) > 0.9 * x.size and x.std() > 0.1  # random, never zeros


def test_inputs_are_seeded_and_nonzero():
    a = bench.pixel_batches((2, 3, 5, 7), seed=4)
    b = bench.pixel_batches((2, 3, 5, 7), seed=4)
    c = bench.pixel_batches((2, 3, 5, 7), seed=5)
    assert a[0].shape == (2, 5, 7, 3) and a[0].dtype == np.uint8
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0], c[0])
    assert a[0].any()


def test_real_images_as_inputs(models, tmp_path):
    from PIL import Image

    d = tmp_path / "imgs"
    d.mkdir()
    Image.fromarray(np.full((20, 30, 3), 200, np.uint8)).save(d / "a.png")
    batches = bench.pixel_batches((1, 3, 10, 15), seed=0, images=str(d))
    assert batches[0].shape == (1, 10, 15, 3)
    assert int(batches[0][0, 5, 7, 0]) == 200
    rep = run_benchmark([_spec("onnx", models["small"])], BenchConfig(shapes=((1, 3, 10, 15),), images=str(d), **FAST))
    assert rep["results"][0]["error"] is None
    assert "images from" in rep["settings"]["inputs"]


def test_speedup_is_reference_median_over_median():
    cfg = BenchConfig(shapes=((1, 3, 4, 4),))
    opened = [OpenedTarget(spec=TargetSpec("onnx", "a", "ref")), OpenedTarget(spec=TargetSpec("onnx", "b", "fast")),
              OpenedTarget(spec=TargetSpec("onnx", "c", "broken"), error="boom")]
    s_ref = Series("ref", (1, 3, 4, 4), latency_ms=[30.0, 10.0, 20.0, 40.0])
    s_fast = Series("fast", (1, 3, 4, 4), latency_ms=[3.0, 5.0, 10.0, 4.0])
    s_bad = Series("broken", (1, 3, 4, 4), error="boom")
    rep = report.build_report(opened, [s_ref, s_fast, s_bad], cfg)
    rows = {r["target"]: r for r in rep["results"]}
    assert rows["ref"]["speedup"] == pytest.approx(1.0)
    assert rows["fast"]["speedup"] == pytest.approx(25.0 / 4.5)
    assert rows["fast"]["paired_speedup"] == pytest.approx(np.median([10, 2, 2, 10]))
    assert rows["broken"]["speedup"] is None and rows["broken"]["error"] == "boom"
    assert rows["broken"]["latency_ms"] is None and rows["broken"]["iterations"] == 0
    assert rows["fast"]["throughput_ips"] == pytest.approx(4 / 0.022)


def test_bad_model_gets_an_error_row_and_the_others_run(models):
    cfg = BenchConfig(shapes=((1, 3, 16, 16), (1, 3, 8, 8)), **FAST)
    specs = [_spec("onnx", models["small"]), _spec("onnx", models["bad"]), _spec("onnx", models["static"]),
             TargetSpec("onnx", "/nonexistent/x.onnx", "onnx:missing")]
    rep = run_benchmark(specs, cfg)
    tg = {t["label"]: t for t in rep["targets"]}
    assert tg["onnx:bad.onnx"]["error"] and "cannot load" in tg["onnx:bad.onnx"]["error"]
    assert "not found" in tg["onnx:missing"]["error"]
    rows = {(r["target"], tuple(r["shape"])): r for r in rep["results"]}
    assert rows[("onnx:small.onnx", (1, 3, 16, 16))]["latency_ms"]["count"] == 4
    assert rows[("onnx:small.onnx", (1, 3, 8, 8))]["latency_ms"]["count"] == 4
    assert rows[("onnx:bad.onnx", (1, 3, 16, 16))]["error"]
    # A static 16x16 model works at its size and reports the error at the other one only.
    assert rows[("onnx:static.onnx", (1, 3, 16, 16))]["error"] is None
    assert rows[("onnx:static.onnx", (1, 3, 8, 8))]["error"]
    assert rows[("onnx:static.onnx", (1, 3, 8, 8))]["latency_ms"] is None
    text = report.render_text(rep)
    assert "onnx:bad.onnx" in text and "error:" in text


def test_markdown_report_renders(models, tmp_path):
    cfg = BenchConfig(shapes=((1, 3, 16, 16),), **FAST)
    rep = run_benchmark([_spec("onnx", models["small"]), _spec("onnx", models["bad"])], cfg)
    md = report.render_markdown(rep)
    assert md.startswith("# fcn-bench report")
    assert "## 1x3x16x16 (batch 1)" in md
    lines = md.splitlines()
    header = next(i for i, l in enumerate(lines) if l.startswith("| target | median ms"))
    ncols = lines[header].count("|")
    table = []
    for l in lines[header:]:
        if not l.startswith("|"):
            break
        table.append(l)
    assert all(l.count("|") == ncols for l in table), table  # every row has the header's columns
    assert any("`onnx:small.onnx`" in l for l in table)
    assert any("`onnx:bad.onnx`" in l and "error:" in l for l in table)
    assert rep["machine"]["cpu"] in md


def test_parse_target_and_unknown_backend():
    t = parse_target("onnx:dir/m.onnx")  # an old name: the label keeps it, the backend is the runtime's
    assert (t.backend, t.path, t.label) == ("onnxruntime", "dir/m.onnx", "onnx:dir/m.onnx")
    with pytest.raises(FcnError) as e:
        parse_target("tflite:m.tflite")
    assert "onnxruntime" in str(e.value) and "torch" in str(e.value) and "tensorrt" in str(e.value)
    with pytest.raises(FcnError, match="BACKEND:PATH"):
        parse_target("m.onnx")
    labels = [s.label for s in targets.unique_labels([t, t, t])]
    assert labels == ["onnx:dir/m.onnx", "onnx:dir/m.onnx#2", "onnx:dir/m.onnx#3"]
    # any case, spaces around, as the runtime's canonical_name takes them
    assert parse_target("ORT:m.onnx").backend == "onnxruntime" and parse_target(" OpenVINO-BF16 :m").backend == "openvino-bf16"
    assert targets.canonical_target("Plan") == "tensorrt"


def test_single_model_targets_are_named_as_the_runtime_names_them():
    from fcn_deploy.benchmarks.bench import single_spec

    assert single_spec(plan="m.plan") == TargetSpec("tensorrt", "m.plan", "tensorrt:m.plan")
    assert single_spec(onnx="m.onnx").label == "onnxruntime:m.onnx"
    assert single_spec(onnx="m.onnx", provider="trt").label == "onnxruntime-tensorrt:m.onnx"


def test_target_names_are_the_runtimes_with_the_old_ones_as_aliases():
    from fcn_deploy import backends

    names = targets.backend_names()
    for backend in backends.BACKENDS:  # every runtime backend is a target, named as the runtime names it
        assert backend in names
    assert all(n.split("-")[0] in backends.BACKENDS for n in names)
    old = {"onnx": "onnxruntime", "onnx-cpu": "onnxruntime", "onnx-cuda": "onnxruntime-cuda",
           "onnx-trt": "onnxruntime-tensorrt", "onnx-throughput": "onnxruntime-throughput", "plan": "tensorrt",
           "openvino-bf16": "openvino-bf16", "torch-compile-bf16": "torch-compile-bf16",
           "ort": "onnxruntime", "ov-bf16": "openvino-bf16", "trt": "tensorrt"}
    for alias, name in old.items():
        assert targets.get_backend(alias).name == name, alias
        assert parse_target(f"{alias}:m").backend == name
    assert targets.is_gpu_target("plan") and targets.is_gpu_target("onnx-cuda") and targets.is_gpu_target("torch-cuda-fp16")
    assert not targets.is_gpu_target("onnx") and not targets.is_gpu_target("openvino") and not targets.is_gpu_target("rec")
    assert "aliases:" in targets.backends_help() and "onnx=onnxruntime" in targets.backends_help()


@pytest.mark.parametrize("shape", ["1x3x64", "1x1x64x64", "0x3x8x8", "axbxcxd"])
def test_parse_shape_rejects(shape):
    with pytest.raises(FcnError):
        bench.parse_shape(shape)


def test_parse_shape_accepts():
    assert bench.parse_shape("2x3x97x131") == (2, 3, 97, 131)


# -- CLI ------------------------------------------------------------------------------------------

def _one_error_line(err: str) -> str:
    lines = [l for l in err.strip().splitlines() if l.startswith("error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def test_cli_compare_writes_outputs(models, tmp_path, capsys):
    js, md, png = tmp_path / "r.json", tmp_path / "r.md", tmp_path / "r.png"
    rc = bench.main(["--compare", f"onnx:{models['big']}", f"onnx:{models['small']}", f"onnx:{models['bad']}",
                     "--shape", "1x3x16x16", "--warmup", "1", "--iterations", "3", "--settle-ms", "0",
                     "--json", str(js), "--markdown", str(md), "--plot", str(png), "-q"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "speedup" in out and "error:" in out
    assert json.loads(js.read_text())["results"][1]["speedup"] > 0
    assert md.read_text().startswith("# fcn-bench report")
    pytest.importorskip("matplotlib")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_plot_without_matplotlib(models, tmp_path, capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    monkeypatch.setitem(sys.modules, "matplotlib.backends.backend_agg", None)
    png = tmp_path / "p.png"
    rc = bench.main(["--onnx", str(models["small"]), "--shape", "1x3x8x8", "--warmup", "0", "--iterations", "2",
                     "--plot", str(png), "-q"])
    assert rc == 0
    assert "matplotlib is not installed" in capsys.readouterr().out
    assert not png.exists()


@pytest.mark.parametrize("argv, expect", [
    (["--onnx", "/nonexistent.onnx"], "not found"),
    (["--compare", "tflite:x.tflite"], "unknown backend"),
    (["--compare", "noseparator"], "BACKEND:PATH"),
    (["--onnx", "MODEL", "--shape", "1x3x64"], "NxCxHxW"),
    (["--onnx", "MODEL", "--iterations", "0"], "--iterations"),
    (["--onnx", "MODEL", "--json", "/nonexistent/dir/r.json"], "does not exist"),
    (["--onnx", "MODEL", "--plot", "r.svg"], ".png"),
    (["--onnx", "MODEL", "--images", "/nonexistent/imgs"], "not found"),
    (["--onnx", "BAD"], "cannot load"),
])
def test_cli_bad_input_is_one_line(models, capsys, argv, expect):
    argv = [str(models["small"]) if a == "MODEL" else str(models["bad"]) if a == "BAD" else a for a in argv]
    rc = bench.main(argv + ["-q", "--warmup", "0"])
    assert rc == 2
    assert expect in _one_error_line(capsys.readouterr().err)


def test_cli_all_targets_failing_exits_nonzero(models, capsys):
    rc = bench.main(["--compare", f"onnx:{models['bad']}", "onnx:/nonexistent.onnx", "--shape", "1x3x8x8", "-q"])
    cap = capsys.readouterr()
    assert rc == 1
    assert "no target produced a measurement" in cap.err


def test_duration_mode_stops_on_time(models):
    import time

    cfg = BenchConfig(shapes=((1, 3, 8, 8),), warmup=0, iterations=None, duration_s=0.3, settle_ms=0.0, prepost=False)
    t0 = time.perf_counter()
    rep = run_benchmark([_spec("onnx", models["small"])], cfg)
    assert time.perf_counter() - t0 < 10
    n = rep["results"][0]["iterations"]
    assert n >= 2  # a tiny model runs many times in 0.3 s
    assert sum([rep["results"][0]["latency_ms"]["mean"]] * n) <= 1000 * 0.3 + rep["results"][0]["latency_ms"]["max"] + 50
    assert rep["settings"]["duration_s"] == 0.3 and rep["settings"]["iterations"] is None


def test_bench_config_rejects_bad_values():
    for kw in (dict(warmup=-1), dict(iterations=0), dict(duration_s=0.0, iterations=None),
               dict(iterations=None, duration_s=None), dict(threads=0), dict(settle_ms=-1), dict(shapes=())):
        with pytest.raises(FcnError):
            BenchConfig(**kw)


def test_prepost_is_timed_through_the_segmenter_without_extra_inference(models, monkeypatch):
    from fcn_deploy import segmenter

    calls = {"infer": 0, "segment": 0}

    def counting(path, *, threads=None):
        from fcn_deploy.benchmarks.runtime import open_runner

        r = open_runner(path, backend="onnxruntime", threads=threads, providers=("cpu",))
        real = r.infer

        def infer(feeds):
            calls["infer"] += 1
            return real(feeds)

        r.infer = infer
        return r

    real_segment = segmenter.Segmenter.segment

    def segment(self, *a, **k):
        calls["segment"] += 1
        return real_segment(self, *a, **k)

    monkeypatch.setattr(segmenter.Segmenter, "segment", segment)
    monkeypatch.setitem(targets._REGISTRY, "count", targets.Backend("count", "counting ORT", counting, "onnx"))
    cfg = BenchConfig(shapes=((2, 3, 12, 20),), warmup=1, iterations=3, settle_ms=0.0)
    rep = run_benchmark([TargetSpec("count", str(models["small"]), "A")], cfg)
    row = rep["results"][0]
    assert calls["infer"] == 1 + 3  # warm-up + timed; pre/post replays the output
    assert calls["segment"] == bench.PREPOST_ITERATIONS
    assert row["pre_ms"]["count"] == bench.PREPOST_ITERATIONS and row["post_ms"]["count"] == bench.PREPOST_ITERATIONS
    assert row["pre_ms"]["min"] > 0 and row["post_ms"]["min"] > 0
