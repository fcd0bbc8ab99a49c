"""fcn-bench --concurrency: images/s with K requests in flight, and the throughput targets;
fcn-predict's throughput mode on a folder gives the same files as latency mode."""

from __future__ import annotations

import numpy as np
import pytest

from runtime_models import make_tiny_onnx, random_image, tiny_info

pytest.importorskip("onnxruntime")

from fcn_deploy.benchmarks.bench import BenchConfig, run_benchmark  # noqa: E402
from fcn_deploy.benchmarks.report import render_markdown, render_text  # noqa: E402
from fcn_deploy.benchmarks.targets import TargetSpec, backend_names  # noqa: E402
from fcn_deploy.errors import FcnError  # noqa: E402


def test_concurrency_measures_images_per_second(tmp_path):
    path = tmp_path / "m.onnx"
    make_tiny_onnx(path, tiny_info(4))
    specs = [TargetSpec("onnx", str(path), "onnx:m"), TargetSpec("onnx-throughput", str(path), "onnx-throughput:m")]
    if "openvino-throughput" in backend_names():
        pytest.importorskip("openvino")
        specs.append(TargetSpec("openvino-throughput", str(path), "openvino-throughput:m"))
    cfg = BenchConfig(shapes=((1, 3, 24, 32), (4, 3, 24, 32)), warmup=1, iterations=3, prepost=False,
                      settle_ms=0, concurrency=2)
    rep = run_benchmark(specs, cfg)
    assert rep["settings"]["concurrency"] == 2
    assert len(rep["results"]) == 2 * len(specs)
    for r in rep["results"]:
        assert r["error"] is None and r["concurrency"] == 2
        assert r["concurrent_ips"] > 0 and r["throughput_ips"] > 0
    assert "img/s, 2 in flight" in render_text(rep) and "img/s, 2 in flight" in render_markdown(rep)
    one = run_benchmark(specs[:1], BenchConfig(shapes=((1, 3, 24, 32),), warmup=0, iterations=2, prepost=False))
    assert one["results"][0]["concurrent_ips"] is None and "in flight" not in render_text(one)
    with pytest.raises(FcnError, match="--concurrency must be >= 1"):
        BenchConfig(concurrency=0)


def test_predict_throughput_mode_writes_the_same_labels(tmp_path, caplog):
    import logging

    from PIL import Image

    from fcn_deploy.image import read_label_png
    from fcn_deploy.predict import main

    model = tmp_path / "m.onnx"
    make_tiny_onnx(model, tiny_info(5))
    src = tmp_path / "imgs"
    src.mkdir()
    for i in range(5):
        Image.fromarray(random_image(20 + i, 30, seed=i)).save(src / f"i{i}.png")
    (src / "broken.png").write_bytes(b"not a png")
    with caplog.at_level(logging.INFO):
        rc_t = main(["--model", str(model), str(src), "--out", str(tmp_path / "t"), "--no-progress",
                     "--backend", "onnxruntime"])
    assert any("throughput mode: " in r.getMessage() for r in caplog.records)
    rc_l = main(["--model", str(model), str(src), "--out", str(tmp_path / "l"), "--no-progress", "--mode", "latency",
                 "--backend", "onnxruntime"])
    assert rc_t == rc_l == 1  # the broken file is reported and skipped in both
    for i in range(5):
        a = read_label_png(tmp_path / "t" / f"i{i}.png")
        b = read_label_png(tmp_path / "l" / f"i{i}.png")
        assert a.shape == (20 + i, 30) and np.array_equal(a, b)


def test_plot_has_the_batch_panel_when_there_are_batches(tmp_path):
    pytest.importorskip("matplotlib")
    from PIL import Image

    from fcn_deploy.benchmarks.report import write_plot

    path = tmp_path / "m.onnx"
    make_tiny_onnx(path, tiny_info(4))
    spec = [TargetSpec("onnx", str(path), "onnx:m")]
    rep = run_benchmark(spec, BenchConfig(shapes=((1, 3, 16, 16), (1, 3, 24, 32), (4, 3, 24, 32)), warmup=0,
                                          iterations=2, prepost=False, concurrency=2))
    assert write_plot(rep, tmp_path / "two.png") == f"wrote {tmp_path / 'two.png'}"
    assert Image.open(tmp_path / "two.png").size == (1300, 500)  # latency panel + img/s-vs-batch panel
    rep1 = run_benchmark(spec, BenchConfig(shapes=((1, 3, 16, 16), (1, 3, 24, 32)), warmup=0, iterations=2,
                                           prepost=False))
    write_plot(rep1, tmp_path / "one.png")
    assert Image.open(tmp_path / "one.png").size == (800, 500)


def test_pixels_in_model_is_benchmarked_with_its_pixels(tmp_path):
    import json as _json

    onnx = pytest.importorskip("onnx")
    from fcn_deploy.export.onnx_export import uint8_input

    info = tiny_info(4, output="labels")
    make_tiny_onnx(tmp_path / "f.onnx", info)
    m = uint8_input(onnx.load(str(tmp_path / "f.onnx")), info)
    m.metadata_props.add(key="fcn_deploy.input_format", value=_json.dumps("uint8_nhwc"))
    onnx.save(m, str(tmp_path / "u.onnx"))
    specs = [TargetSpec("onnx", str(tmp_path / n), f"onnx:{n}") for n in ("f.onnx", "u.onnx")]
    rep = run_benchmark(specs, BenchConfig(shapes=((2, 3, 24, 32),), warmup=0, iterations=2, settle_ms=0))
    for r in rep["results"]:
        assert r["error"] is None and r["pre_ms"] is not None and r["post_ms"] is not None
