"""The stand-ins are at least as strict as the real bindings: names from the manifest only,
enum types, TensorRT's flag values, typed setters, failures on demand, call order."""

import numpy as np
import pytest

import trt_standin as ts


@pytest.fixture(params=["10.13.0.35", "11.4.0.106"])
def trt(request):
    return ts.StandinTRT(request.param, cuda=ts.StandinCuda())


def test_misspelt_or_removed_names_raise_attribute_error(trt):
    logger = trt.Logger(trt.Logger.WARNING)
    runtime = trt.Runtime(logger)
    builder = trt.Builder(logger)
    for obj, name in [(trt, "Runtim"), (runtime, "deserialize_engine"), (builder, "build_engine"),
                      (trt.BuilderFlag, "STRICT_TYPES"), (builder, "platform_has_fast_fp16")]:
        with pytest.raises(AttributeError):
            getattr(obj, name)
    if trt.major >= 11:
        for name in ("FP16", "INT8", "BF16"):
            with pytest.raises(AttributeError):
                getattr(trt.BuilderFlag, name)
    else:
        assert int(trt.BuilderFlag.FP16) == 0 and int(trt.BuilderFlag.INT8) == 1


def test_enums_are_types_not_strings_or_ints(trt):
    cfg = trt.Builder(trt.Logger()).create_builder_config()
    for bad in ("VERSION_COMPATIBLE", 13, trt.MemoryPoolType.WORKSPACE):
        with pytest.raises(TypeError):
            cfg.set_flag(bad)
    with pytest.raises(TypeError):
        cfg.set_memory_pool_limit("WORKSPACE", 1 << 20)
    with pytest.raises(TypeError):
        cfg.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, 1.5)
    with pytest.raises(TypeError):
        cfg.hardware_compatibility_level = "AMPERE_PLUS"
    with pytest.raises(AttributeError):
        cfg.made_up_setting = 1
    cfg.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
    assert cfg.flags == 1 << 13 and cfg.get_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
    with pytest.raises(TypeError):
        trt.Builder(trt.Logger()).create_network(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)  # must be 1 << int(flag)
    with pytest.raises(TypeError):
        cfg.set_timing_cache(cfg.create_timing_cache(b""), 0)  # ignore_mismatch is a bool


def test_failures_on_demand(trt):
    cfg = trt.Builder(trt.Logger()).create_builder_config()
    assert cfg.create_timing_cache(b"corrupt") is None
    trt.fail.update({"create_timing_cache", "add_optimization_profile"})
    assert cfg.create_timing_cache(b"") is None
    p = trt.Builder(trt.Logger()).create_optimization_profile()
    p.set_shape("input", (1, 3, 8, 8), (1, 3, 8, 8), (1, 3, 8, 8))
    assert cfg.add_optimization_profile(p) == -1


def test_pycuda_standin_order_and_names():
    cuda = ts.StandinCuda()
    with pytest.raises(ts.Violation, match="no CUDA context"):
        cuda.mem_alloc(16)
    with pytest.raises(AttributeError):
        cuda.mem_alloc_pinned
    ctx = cuda.Device(0).retain_primary_context()
    ctx.push()
    with pytest.raises(TypeError):
        cuda.mem_alloc(16.0)
    with pytest.raises(AttributeError):
        ctx.destroy  # not a pycuda Context method
    s = cuda.Stream()
    a = cuda.mem_alloc(16)
    host = cuda.pagelocked_empty(4, np.float32)
    with pytest.raises(ts.Violation, match="without a stream"):
        cuda.memcpy_htod_async(a, host)
    cuda.memcpy_htod_async(a, host, s)
    a.free()
    with pytest.raises(ts.Violation, match="freed before the stream was synchronized"):
        s.synchronize()
    cuda.Context.pop()
