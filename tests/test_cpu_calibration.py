"""int8 calibration that scales: a progress bar over every image, one image's tensors in memory
at a time, and a histogram collector that gives onnxruntime's own ranges faster."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

from export_models import info_for  # noqa: E402
from fcn_deploy.export import precision as P  # noqa: E402
from fcn_deploy.export.inputs import random_rgb  # noqa: E402


@pytest.fixture()
def images(tmp_path):
    from PIL import Image

    for i, img in enumerate(random_rgb(6, 24, 32, seed=5)):
        Image.fromarray(img).save(tmp_path / f"im{i}.png")
    return sorted(tmp_path.glob("*.png"))


def test_progress_bar_counts_every_image_across_chunks(images):
    r = P.ImageCalibrationReader(images, info_for("fcn8s", "resnet18"), size=(24, 32), progress=True)
    bar = r._bar
    for start in range(0, len(images), 2):  # what onnxruntime's CalibStridedMinMax loop does
        r.set_range(start, start + 2)
        while r.get_next() is not None:
            pass
        assert bar.n == start + 2 and r._bar is bar  # still open between chunks
    assert r.served == len(images)
    r.close()
    assert r._bar is None


def _ort_collector(**kw):
    from onnxruntime.quantization.calibrate import HistogramCollector

    return HistogramCollector(**kw)


class _Cal:  # the attributes _fast_histogram_collector reads, as onnxruntime's calibrator has them
    pass


def test_fast_collector_matches_onnxruntime(monkeypatch):
    from onnxruntime.quantization.calibrate import PercentileCalibrater

    kw = dict(method="percentile", symmetric=True, num_bins=2048, num_quantized_bins=128, percentile=99.99,
              scenario="same")
    cal = PercentileCalibrater.__new__(PercentileCalibrater)
    for k, v in kw.items():
        setattr(cal, k, v)
    cal.collector = None
    fast = P._fast_histogram_collector(cal)
    assert fast is not None and type(fast).__name__ == "FastHistogramCollector"
    ref = _ort_collector(**kw)
    rng = np.random.default_rng(0)
    # Later arrays reach beyond the first one's range, so the edges grow as in onnxruntime.
    batches = [{"a": [(rng.standard_normal((1, 8, 30, 40)) * s).astype(np.float32)],
                "b": [rng.random((1, 4, 16, 16)).astype(np.float32) * s]} for s in (1.0, 3.0, 0.5, 7.0)]
    for b in batches:
        ref.collect_absolute_value(b)
        fast.collect_absolute_value(b)
    for name in ("a", "b"):
        rh, re_, rmin, rmax = ref.histogram_dict[name]
        fh, fe, fmin, fmax = fast.histogram_dict[name]
        assert np.array_equal(re_, fe) and rmin == fmin and rmax == fmax
        assert fh.sum() == rh.sum()
        # onnxruntime's grown edges are float32 (the added ones spaced by a rounded width), ours
        # equal-width: a value may land one bin over, never further. Cumulative counts bracket.
        rc, fc = np.cumsum(rh), np.cumsum(fh)
        assert np.all(fc >= np.concatenate([[0], rc[:-1]])) and np.all(fc <= np.concatenate([rc[1:], rc[-1:]]))
    monkeypatch.setattr("builtins.print", lambda *a, **k: None)
    r_ref, r_fast = ref.compute_collection_result(), fast.compute_collection_result()
    for name in ("a", "b"):
        edges = ref.histogram_dict[name][1]
        width = float(edges[1] - edges[0])
        assert abs(float(r_ref[name][1]) - float(r_fast[name][1])) <= 1.01 * width  # at most one bin apart
        assert float(r_fast[name][1]) > 0
    # Not a histogram calibrator (minmax): onnxruntime's own code runs.
    from onnxruntime.quantization.calibrate import MinMaxCalibrater

    assert P._fast_histogram_collector(MinMaxCalibrater.__new__(MinMaxCalibrater)) is None


def test_quantize_uses_the_fast_collector_one_image_per_chunk(tmp_path, images, monkeypatch):
    """A real int8 export: the hook is in place during quantize_static (and removed after), every
    image passes through the bar, and onnxruntime gets one image per chunk."""
    from export_models import trained_model
    from fcn_deploy.export.onnx_export import export_onnx

    import importlib

    q = importlib.import_module("onnxruntime.quantization.quantize")

    real_create = q.create_calibrator
    seen = {"collectors": [], "ranges": []}
    real_set_range = P.ImageCalibrationReader.set_range

    def spy_range(self, start_index, end_index):
        seen["ranges"].append(end_index - start_index)
        return real_set_range(self, start_index, end_index)

    monkeypatch.setattr(P.ImageCalibrationReader, "set_range", spy_range)
    real_fast = P._fast_histogram_collector

    def spy_fast(cal):
        c = real_fast(cal)
        seen["collectors"].append(type(c).__name__)
        return c

    monkeypatch.setattr(P, "_fast_histogram_collector", spy_fast)
    src = trained_model("fcn8s", "resnet18", steps=2, hw=(48, 48))
    cfg = P.CalibConfig(data=images[0].parent, format="images", images=6, size=(24, 32))
    out = export_onnx(src, tmp_path / "q.onnx", precision="int8", calib=cfg, verify=False)
    assert onnx.load(str(out)).graph.node
    assert seen["collectors"] == ["FastHistogramCollector"]
    assert seen["ranges"] == [1] * 6
    assert q.create_calibrator is real_create
