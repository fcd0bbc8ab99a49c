"""Every ``trt.*`` / ``pycuda.*`` name the GPU code uses exists in the versions it claims
(TensorRT 10.x and 11.x, pycuda), per tests/data/trt_manifest.json (from the real packages by
tools/trt_api_manifest.py). A failure names file:line."""

from pathlib import Path

import pytest

import trt_api

ROOT = Path(__file__).resolve().parents[1]
GPU_MODULES = ["fcn_deploy/backends/tensorrt.py", "fcn_deploy/backends/cuda_buffers.py", "fcn_deploy/build.py",
               "benchmarks/gpu_check.py"]


def test_gpu_code_uses_only_real_api_names():
    report = trt_api.check_files([ROOT / p for p in GPU_MODULES], ROOT)
    assert not report.findings, "\n".join(map(str, report.findings))
    # The type tracking reaches the calls that matter (a checker that sees nothing passes anything).
    for pair in [("tensorrt.IExecutionContext", "execute_async_v3"), ("tensorrt.IExecutionContext", "set_input_shape"),
                 ("tensorrt.IExecutionContext", "infer_shapes"), ("tensorrt.IExecutionContext", "set_tensor_address"),
                 ("tensorrt.ICudaEngine", "get_tensor_profile_shape"), ("tensorrt.Runtime", "deserialize_cuda_engine"),
                 ("tensorrt.Runtime", "engine_host_code_allowed"), ("tensorrt.IBuilderConfig", "create_timing_cache"),
                 ("tensorrt.Builder", "build_serialized_network"), ("tensorrt.OnnxParser", "parse_from_file"),
                 ("tensorrt.BuilderFlag", "VERSION_COMPATIBLE"), ("pycuda.driver", "memcpy_htod_async"),
                 ("pycuda.driver.Device", "retain_primary_context"), ("pycuda.driver.Context", "pop"),
                 ("pycuda.driver.Event", "record"), ("pycuda.driver.Event", "time_since"),
                 ("pycuda.driver.Stream", "synchronize"), ("pycuda.driver", "memcpy_dtod_async")]:
        assert pair in report.checked, pair


BAD = '''
import tensorrt as trt
import pycuda.driver as cuda

def run(plan):
    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    engine = runtime.deserialize_cuda_engine(plan)
    ctx = engine.create_execution_context()
    shape = ctx.get_binding_shape(0)
    ctx.execute_async_v2([0, 0], 0)
    cuda.mem_alloc_pinned(16)
    return trt.BuilderFlag.FP16
'''


def test_checker_fails_on_wrong_names_with_file_and_line():
    r = trt_api.check_source(BAD, "bad.py")
    got = {str(f) for f in r.findings}
    assert got == {
        "bad.py:11: pycuda.driver.mem_alloc_pinned does not exist in pycuda 2026",
        "bad.py:12: tensorrt.BuilderFlag.FP16 does not exist in TensorRT 11",
        "bad.py:9: tensorrt.IExecutionContext.get_binding_shape does not exist in TensorRT 10",
        "bad.py:9: tensorrt.IExecutionContext.get_binding_shape does not exist in TensorRT 11",
        "bad.py:10: tensorrt.IExecutionContext.execute_async_v2 does not exist in TensorRT 10",
        "bad.py:10: tensorrt.IExecutionContext.execute_async_v2 does not exist in TensorRT 11",
    }


def test_version_pragma_narrows_the_claim():
    src = "import tensorrt as trt\nx = trt.BuilderFlag.FP16  # trt-api: 10\ny = trt.BuilderFlag.INT8\n"
    r = trt_api.check_source(src, "p.py")
    assert [str(f) for f in r.findings] == ["p.py:3: tensorrt.BuilderFlag.INT8 does not exist in TensorRT 11"]


def test_checker_follows_module_providers_and_self_attributes():
    src = '''
def import_tensorrt():
    import tensorrt as trt
    return trt

class R:
    def __init__(self):
        trt = import_tensorrt()
        self.rt = trt.Runtime(None)
        self.engine = self.rt.deserialize_cuda_engine(b"")

    def go(self):
        return self.engine.get_binding_index("x")
'''
    r = trt_api.check_source(src, "r.py")
    assert {str(f) for f in r.findings} == {
        "r.py:13: tensorrt.ICudaEngine.get_binding_index does not exist in TensorRT 10",
        "r.py:13: tensorrt.ICudaEngine.get_binding_index does not exist in TensorRT 11",
    }


def test_manifest_holds_the_facts_the_issue_lists():
    m = trt_api.manifest()
    t10, t11 = trt_api.Api("trt", "10"), trt_api.Api("trt", "11")
    assert m["tensorrt"]["11"]["version"] == "11.4.0.106" and m["tensorrt"]["10"]["version"].startswith("10.13")
    assert {"FP16", "INT8", "BF16"} <= t10.members("BuilderFlag") and not {"FP16", "INT8", "BF16"} & t11.members("BuilderFlag")
    assert "int8_calibrator" in t10.members("IBuilderConfig") and "int8_calibrator" not in t11.members("IBuilderConfig")
    assert "platform_has_fast_fp16" in t10.members("Builder") and "platform_has_fast_fp16" not in t11.members("Builder")
    assert "E8M0" in t11.members("DataType") and "STRONGLY_TYPED" in t11.members("NetworkDefinitionCreationFlag")
    for v in (t10, t11):
        assert {"execute_async_v3", "set_input_shape", "infer_shapes", "set_tensor_address"} <= v.members("IExecutionContext")
        assert not {"execute_async_v2", "get_binding_shape", "set_binding_shape"} & v.members("IExecutionContext")
    assert m["tensorrt"]["10"]["classes"]["BuilderFlag"]["values"]["VERSION_COMPATIBLE"] == 13
    cuda = trt_api.Api("cuda", "2026")
    assert {"retain_primary_context", "compute_capability", "name"} <= cuda.members("Device")
    assert {"memcpy_htod_async", "memcpy_dtoh_async", "pagelocked_empty", "mem_alloc", "Error"} <= cuda.module


@pytest.mark.parametrize("path", GPU_MODULES)
def test_gpu_modules_point_to_the_one_gpu_status_section(path):
    text = (ROOT / path).read_text(encoding="utf-8")
    assert "unverified on hardware" in text.lower() and 'README, "GPU status"' in text
