"""Backend registry, provider selection, the "auto" rule, the onnxruntime and OpenVINO runners,
and the protobuf-free ONNX header reader."""

import numpy as np
import pytest

from fcn_deploy import backends
from fcn_deploy.backends.openvino import compile_config
from fcn_deploy.backends.ort import OrtRunner, provider_name, resolve_providers
from fcn_deploy.errors import FcnError
from fcn_deploy.onnx_info import parse_onnx_header, read_onnx_header
from fcn_deploy.shapes import Profile
from runtime_models import make_tiny_onnx, tiny_info

CPU_ONLY = ["AzureExecutionProvider", "CPUExecutionProvider"]
GPU_ORT = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny") / "tiny.onnx"
    W, b = make_tiny_onnx(path, tiny_info(5))
    return path


# -- registry --------------------------------------------------------------------------------------

def test_unknown_backend_lists_valid_names():
    with pytest.raises(FcnError) as e:
        backends.canonical_name("tflite")
    assert str(e.value) == "unknown backend 'tflite'; valid: auto, onnxruntime, openvino, reference, tensorrt, torch"
    assert backends.canonical_name("ORT") == "onnxruntime"
    assert backends.canonical_name("ov") == "openvino"
    assert backends.canonical_name("trt") == "tensorrt"
    assert backends.canonical_name("pytorch") == "torch"
    assert backends.backend_names() == ["onnxruntime", "openvino", "reference", "tensorrt", "torch"]


def test_backend_must_suit_the_file():
    with pytest.raises(FcnError, match="runs only on backend 'tensorrt'"):
        backends.choose_backend("m.plan", "onnxruntime")
    with pytest.raises(FcnError, match="fcn-build"):
        backends.choose_backend("m.onnx", "tensorrt")
    with pytest.raises(FcnError, match="unknown model file type .tflite"):
        backends.choose_backend("m.tflite")
    with pytest.raises(FcnError, match="PyTorch checkpoint: it runs only on backend 'torch'"):
        backends.choose_backend("m.pt", "onnxruntime")
    with pytest.raises(FcnError, match="ONNX model: it runs only on backend 'onnxruntime' or 'openvino' or 'reference'"):
        backends.choose_backend("m.onnx", "torch")
    assert backends.choose_backend("m.plan") == "tensorrt"
    assert backends.choose_backend("m.onnx", "openvino") == "openvino"


def test_auto_rule():
    choose = backends.choose_backend
    # GPU provider in onnxruntime wins, whatever the CPU.
    assert choose("m.onnx", ort_installed=True, ort_providers=GPU_ORT, openvino_installed=True, vendor="intel") == "onnxruntime"
    # Intel CPU + openvino installed, no GPU provider: OpenVINO.
    assert choose("m.onnx", ort_installed=True, ort_providers=CPU_ONLY, openvino_installed=True, vendor="intel") == "openvino"
    # AMD / ARM CPU: onnxruntime even with openvino installed.
    assert choose("m.onnx", ort_installed=True, ort_providers=CPU_ONLY, openvino_installed=True, vendor="amd") == "onnxruntime"
    assert choose("m.onnx", ort_installed=True, ort_providers=CPU_ONLY, openvino_installed=True, vendor="arm") == "onnxruntime"
    # Only one installed: that one.
    assert choose("m.onnx", ort_installed=False, openvino_installed=True, vendor="amd") == "openvino"
    assert choose("m.onnx", ort_installed=True, ort_providers=CPU_ONLY, openvino_installed=False, vendor="intel") == "onnxruntime"
    with pytest.raises(FcnError, match="pip install onnxruntime"):
        choose("m.onnx", ort_installed=False, openvino_installed=False, vendor="intel")


@pytest.mark.parametrize("cpuinfo, vendor", [
    ("processor\t: 0\nvendor_id\t: GenuineIntel\ncpu family\t: 6\n", "intel"),
    ("processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\n", "amd"),
    ("processor\t: 0\nBogoMIPS\t: 50.00\nCPU implementer\t: 0x41\n", "arm"),
    ("processor\t: 0\nvendor_id\t: HygonGenuine\n", "hygongenuine"),
], ids=["intel", "amd", "arm", "other"])
def test_cpu_vendor_reads_proc_cpuinfo(monkeypatch, cpuinfo, vendor):
    import builtins
    import io

    real_open = builtins.open

    def fake_open(path, *a, **k):
        if str(path) == "/proc/cpuinfo":
            return io.StringIO(cpuinfo)
        return real_open(path, *a, **k)

    monkeypatch.setattr(builtins, "open", fake_open)
    assert backends.cpu_vendor() == vendor


def test_this_machines_vendor():
    # Read here by hand: the vendor_id line of /proc/cpuinfo names the CPU maker.
    try:
        lines = open("/proc/cpuinfo").read().splitlines()
    except OSError:
        pytest.skip("no /proc/cpuinfo")
    ids = {ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("vendor_id")}
    known = {"GenuineIntel": "intel", "AuthenticAMD": "amd"}
    if len(ids) != 1 or next(iter(ids)) not in known:
        pytest.skip(f"vendor_id {ids} is neither Intel nor AMD")
    assert backends.cpu_vendor() == known[next(iter(ids))]


@pytest.mark.parametrize("vendor, providers, openvino, expected", [
    ("intel", CPU_ONLY, True, "openvino"),
    ("amd", CPU_ONLY, True, "onnxruntime"),
    ("intel", GPU_ORT, True, "onnxruntime"),
    ("intel", CPU_ONLY, False, "onnxruntime"),
])
def test_auto_choice_reads_this_machines_facts(monkeypatch, vendor, providers, openvino, expected):
    """Without keyword facts, choose_backend asks cpu_vendor, is_installed and onnxruntime."""
    ort_mod = pytest.importorskip("onnxruntime")
    monkeypatch.setattr(backends, "cpu_vendor", lambda: vendor)
    monkeypatch.setattr(backends, "is_installed", lambda m: m == "onnxruntime" or (m == "openvino" and openvino))
    monkeypatch.setattr(ort_mod, "get_available_providers", lambda: list(providers))
    assert backends.choose_backend("m.onnx") == expected


# -- onnxruntime providers -----------------------------------------------------------------------------

def test_provider_selection_with_only_cpu():
    assert resolve_providers("auto", CPU_ONLY) == [("CPUExecutionProvider", {})]
    assert resolve_providers("cpu", CPU_ONLY) == [("CPUExecutionProvider", {})]
    with pytest.raises(FcnError) as e:
        resolve_providers("cuda", CPU_ONLY)
    assert "'cuda' is not available here; available: cpu" in str(e.value) and "onnxruntime-gpu" in str(e.value)
    with pytest.raises(FcnError, match="unknown onnxruntime provider 'tpu'"):
        resolve_providers(["tpu"], CPU_ONLY)


def test_provider_selection_with_gpu_providers(tmp_path):
    prof = Profile((1, 3, 64, 64), (1, 3, 360, 480), (2, 3, 720, 960))
    got = resolve_providers("auto", GPU_ORT, device_id=1, trt_fp16=True, trt_cache_dir=tmp_path, trt_profile=prof)
    assert [n for n, _ in got] == GPU_ORT
    trt_opts = got[0][1]
    assert trt_opts["trt_fp16_enable"] is True and trt_opts["device_id"] == 1
    assert trt_opts["trt_engine_cache_enable"] is True and trt_opts["trt_engine_cache_path"] == str(tmp_path)
    assert trt_opts["trt_timing_cache_enable"] is True
    assert trt_opts["trt_profile_min_shapes"] == "input:1x3x64x64"
    assert trt_opts["trt_profile_max_shapes"] == "input:2x3x720x960"
    assert got[1] == ("CUDAExecutionProvider", {"device_id": 1})
    # Explicit order is kept, CPU appended as the fallback.
    assert [n for n, _ in resolve_providers(["cuda"], GPU_ORT)] == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert resolve_providers("tensorrt", GPU_ORT, trt_fp16=False)[0][1]["trt_fp16_enable"] is False
    assert provider_name("CUDAExecutionProvider") == "CUDAExecutionProvider"


def test_ort_runner_reports_what_it_runs_on(tiny):
    with OrtRunner(tiny, providers="auto", threads=1) as r:
        assert r.device == "CPUExecutionProvider" and r.providers == ["CPUExecutionProvider"]
        assert r.inputs()[0].name == "input" and r.inputs()[0].dtype == "float32"
        assert r.inputs()[0].shape == ("N", 3, "H", "W")
        assert r.outputs()[0].name == "logits"
        x = np.random.default_rng(0).normal(size=(2, 3, 7, 9)).astype(np.float32)
        out = r.infer({"input": x})
        assert out["logits"].shape == (2, 5, 7, 9)
        assert r.last_timing.compute_ms > 0
        assert r.model_info() == tiny_info(5)
    with pytest.raises(FcnError, match="threads must be >= 0"):
        OrtRunner(tiny, threads=-1)


def test_ort_runner_bad_files(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model at all")
    with pytest.raises(FcnError, match="onnxruntime cannot load this model"):
        OrtRunner(bad)
    with pytest.raises(FcnError, match="no such file"):
        OrtRunner(tmp_path / "missing.onnx")


# -- OpenVINO ----------------------------------------------------------------------------------------

def test_openvino_config():
    assert compile_config("bf16", "throughput", 2) == {
        "INFERENCE_PRECISION_HINT": "bf16", "PERFORMANCE_HINT": "THROUGHPUT", "INFERENCE_NUM_THREADS": 2}
    assert compile_config(None, "latency", None) == {"PERFORMANCE_HINT": "LATENCY"}
    with pytest.raises(FcnError, match="valid: f32, bf16"):
        compile_config("int4", "latency", None)
    with pytest.raises(FcnError, match="valid: latency, throughput"):
        compile_config("f32", "fast", None)


def test_openvino_matches_onnxruntime(tiny):
    pytest.importorskip("openvino")
    from fcn_deploy.backends.openvino import OpenVinoRunner

    x = np.random.default_rng(1).normal(size=(2, 3, 13, 17)).astype(np.float32)
    with OpenVinoRunner(tiny, precision="f32", performance="latency", threads=1) as ov, OrtRunner(tiny) as ort:
        a = ov.infer({"input": x})["logits"]
        b = ort.infer({"input": x})["logits"]
        assert a.shape == b.shape == (2, 5, 13, 17)
        assert np.abs(a - b).max() < 1e-4
        assert ov.precision == "f32" and ov.performance == "LATENCY"
        assert ov.model_info() == ort.model_info()
        # A different size on the same compiled (dynamic) model.
        y = ov.infer({"input": x[:1, :, :5, :6]})["logits"]
        assert y.shape == (1, 5, 5, 6)


# -- ONNX header without onnx ----------------------------------------------------------------------

def test_onnx_header_matches_the_onnx_package(tiny, tmp_path):
    import onnx

    h = read_onnx_header(tiny)
    m = onnx.load(str(tiny))
    assert h.metadata == {p.key: p.value for p in m.metadata_props}
    assert [i.name for i in h.inputs] == [i.name for i in m.graph.input]
    assert h.inputs[0].shape == ("N", 3, "H", "W") and h.inputs[0].dtype == "float32"
    assert h.outputs[0].name == "logits" and h.outputs[0].shape == ("N", 5, "H", "W")
    assert h.opsets[""] == 17 and h.ir_version == m.ir_version
    # Initializers listed as graph inputs (old exporters) are not model inputs.
    m.graph.input.append(onnx.helper.make_tensor_value_info("W", onnx.TensorProto.FLOAT, [5, 3, 1, 1]))
    assert [i.name for i in parse_onnx_header(m.SerializeToString()).inputs] == ["input"]


def test_onnx_header_refuses_garbage(tmp_path):
    for data in (b"\x00\x01\x02garbage", b"\x08\x07"):
        p = tmp_path / "x.onnx"
        p.write_bytes(data)
        with pytest.raises(FcnError, match="x.onnx: not a valid ONNX model"):
            read_onnx_header(p)
    (tmp_path / "e.onnx").write_bytes(b"")
    with pytest.raises(FcnError, match="empty file"):
        read_onnx_header(tmp_path / "e.onnx")
