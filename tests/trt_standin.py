"""Strict stand-ins for ``tensorrt`` (10.x or 11.x) and ``pycuda.driver``, built from the API
manifest of the real packages (tests/data/trt_manifest.json). Not a test file.

What "strict" means here, each point checked by tests/test_trt_standin.py:

- **Names**: every public attribute of a stand-in object or module is looked up in the manifest
  for the stand-in's TensorRT version; anything the real bindings lack there raises
  AttributeError, including names this file defines (``BuilderFlag.FP16`` on 11.x,
  ``Builder.platform_has_fast_fp16`` on 11.x). A class here may define only names the manifest
  has (checked when the module is made).
- **Enums** are sentinel objects of their own type with TensorRT's integer values (the 10.x
  stubs'; 11.x members that 10.x also has keep that value, new ones are numbered after the
  last, which is the one thing not read from the real package). A str or int where an enum
  belongs raises TypeError, as pybind11 does; flags for ``create_network`` are an int bit mask.
- **Setters and arguments** check types (pybind11 rejects a float where an int belongs, None
  where a str belongs).
- **Failures**: every method whose real counterpart reports failure by returning None / False /
  -1 can be told to do so: ``standin.fail.add("create_timing_cache")`` etc.
- **Order** (execution): ``set_input_shape`` before output shapes are read, every I/O tensor's
  address bound to a live device allocation big enough for its shape before
  ``execute_async_v3``, which takes the int handle of a live stream with a CUDA context
  current; copies and the engine run on the stream only when it is synchronized, so a host read
  before ``Stream.synchronize`` sees stale data, and an allocation freed before then is an error.
- **Honest engine**: the stand-in "plan" is the ONNX model plus a JSON header; the engine
  computes its outputs by running that ONNX with onnxruntime on the CPU. The plan records the
  TensorRT version and compute capability it was "built" with, and ``deserialize_cuda_engine``
  returns None when they differ from the runtime's (as TensorRT does), unless version-compatible.
"""

from __future__ import annotations

import json
import threading
import types
import weakref
from typing import Dict, List, Optional, Set

import numpy as np

import trt_api

PLAN_MAGIC = b"FCN-STANDIN-PLAN\n"
CACHE_MAGIC = b"STANDIN-TIMING-CACHE:"


class Violation(AssertionError):
    """A call the real API would reject or that breaks its required order."""


# -- enums ----------------------------------------------------------------------------------------

class EnumValue:
    __slots__ = ("_enum", "name", "value")

    def __init__(self, enum, name, value):
        object.__setattr__(self, "_enum", enum)
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "value", value)

    def __setattr__(self, k, v):
        raise AttributeError(f"{self._enum.__name__}.{self.name} is read-only")

    def __int__(self):
        return self.value

    __index__ = __int__

    def __eq__(self, other):
        return isinstance(other, EnumValue) and other._enum is self._enum and other.value == self.value

    def __hash__(self):
        return hash((self._enum.__name__, self.value))

    def __repr__(self):
        return f"<{self._enum.__name__}.{self.name}: {self.value}>"

    __str__ = lambda self: f"{self._enum.__name__}.{self.name}"  # noqa: E731


class Enum:
    def __init__(self, name: str, values: Dict[str, int]):
        self.__name__ = name
        self._members = {k: EnumValue(self, k, v) for k, v in values.items()}

    def __getattr__(self, k):
        if k.startswith("__"):
            raise AttributeError(k)
        try:
            return self.__dict__["_members"][k]
        except KeyError:
            raise AttributeError(f"type object 'tensorrt.{self.__name__}' has no attribute '{k}'") from None

    def __iter__(self):
        return iter(self._members.values())


def need_enum(value, enum: Enum, what: str):
    if not (isinstance(value, EnumValue) and value._enum is enum):
        raise TypeError(f"{what}: incompatible function arguments; expected tensorrt.{enum.__name__}, got {type(value).__name__} {value!r}")
    return value


def need(value, types_, what: str):
    if isinstance(value, bool) and bool not in (types_ if isinstance(types_, tuple) else (types_,)):
        raise TypeError(f"{what}: expected {types_}, got bool")
    if not isinstance(value, types_):
        raise TypeError(f"{what}: incompatible function arguments; got {type(value).__name__} {value!r}")
    return value


def need_shape(shape, what: str):
    if isinstance(shape, (str, bytes)) or not hasattr(shape, "__iter__"):
        raise TypeError(f"{what}: a shape must be a tuple/list/Dims of ints, got {shape!r}")
    dims = tuple(shape)
    for d in dims:
        need(d, int, what)
    return dims


class Dims(tuple):
    """TensorRT's Dims: iterable, indexable, len()."""


# -- strict objects -------------------------------------------------------------------------------

class Strict:
    """Public attributes exist only when the manifest's class has them for this version."""

    _api: str = ""

    def __init__(self, trt):
        object.__setattr__(self, "_trt", trt)

    def _allowed(self, name: str) -> bool:
        return name in self._trt._members(self._api)

    def __getattribute__(self, name):
        if not name.startswith("_"):
            if not object.__getattribute__(self, "_allowed")(name):
                raise AttributeError(f"'tensorrt.{type(self)._api}' object has no attribute '{name}' (TensorRT {object.__getattribute__(self, '_trt').__version__})")
        return object.__getattribute__(self, name)

    def __setattr__(self, name, value):
        if not name.startswith("_"):
            if not self._allowed(name) or not isinstance(getattr(type(self), name, None), property) \
                    or getattr(type(self), name).fset is None:
                raise AttributeError(f"'tensorrt.{type(self)._api}' object attribute '{name}' cannot be set here")
        object.__setattr__(self, name, value)


class HostMemory(bytes):
    """IHostMemory exposes the buffer protocol (a bytes subclass here: bytes' own methods are
    the one thing this stand-in does not hide)."""


class Logger(Strict):
    _api = "Logger"

    def __init__(self, trt, min_severity=None):
        super().__init__(trt)
        sev = trt.Logger.WARNING if min_severity is None else min_severity
        need_enum(sev, trt._Severity, "Logger()")
        self._sev = sev
        trt.loggers.append(self)

    @property
    def min_severity(self):
        return self._sev

    @min_severity.setter
    def min_severity(self, value):
        self._sev = need_enum(value, self._trt._Severity, "Logger.min_severity")


class ITensor(Strict):
    _api = "ITensor"

    def __init__(self, trt, name, dtype, shape):
        super().__init__(trt)
        self._name, self._dtype, self._shape = name, dtype, shape

    @property
    def name(self):
        return self._name


class INetworkDefinition(Strict):
    _api = "INetworkDefinition"

    def __init__(self, trt, flags):
        super().__init__(trt)
        self._flags = flags
        self._inputs: List[ITensor] = []
        self._outputs: List[ITensor] = []
        self._onnx: Optional[bytes] = None

    @property
    def num_inputs(self):
        return len(self._inputs)

    @property
    def num_outputs(self):
        return len(self._outputs)

    def get_input(self, index):
        need(index, int, "get_input")
        return self._inputs[index] if 0 <= index < len(self._inputs) else None

    def get_output(self, index):
        need(index, int, "get_output")
        return self._outputs[index] if 0 <= index < len(self._outputs) else None


class ParserError(Strict):
    _api = "ParserError"

    def __init__(self, trt, node, name, op, desc):
        super().__init__(trt)
        self._v = (node, name, op, desc)

    def node(self):
        return self._v[0]

    def node_name(self):
        return self._v[1]

    def node_operator(self):
        return self._v[2]

    def desc(self):
        return self._v[3]

    def code(self):
        return self._trt.ErrorCode.UNSUPPORTED_NODE


ONNX_DTYPES = {1: "FLOAT", 10: "HALF", 7: "INT64", 6: "INT32", 9: "BOOL", 3: "INT8", 2: "UINT8", 16: "BF16"}


class OnnxParser(Strict):
    _api = "OnnxParser"

    def __init__(self, trt, network, logger):
        super().__init__(trt)
        need(network, INetworkDefinition, "OnnxParser(network)")
        need(logger, Logger, "OnnxParser(logger)")
        trt._logger_used(logger)
        self._network = network
        self._errors = [ParserError(trt, *e) for e in trt.parse_errors]

    def parse_from_file(self, model):
        need(model, str, "parse_from_file")
        if self._errors:
            return False
        import onnx

        m = onnx.load(model)
        net = self._network
        inits = {i.name for i in m.graph.initializer}
        for vi in m.graph.input:
            if vi.name in inits:
                continue
            t = vi.type.tensor_type
            dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim)
            net._inputs.append(ITensor(self._trt, vi.name, ONNX_DTYPES[t.elem_type], dims))
        for vi in m.graph.output:
            t = vi.type.tensor_type
            dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim)
            net._outputs.append(ITensor(self._trt, vi.name, ONNX_DTYPES[t.elem_type], dims))
        net._onnx = m.SerializeToString()
        return True

    @property
    def num_errors(self):
        return len(self._errors)

    def get_error(self, index):
        need(index, int, "get_error")
        return self._errors[index]


class IOptimizationProfile(Strict):
    _api = "IOptimizationProfile"

    def __init__(self, trt):
        super().__init__(trt)
        self._shapes = {}
        self._valid = True

    def set_shape(self, input, min, opt, max):  # noqa: A002 - TensorRT's parameter names
        need(input, str, "set_shape(input)")
        shapes = [need_shape(s, "set_shape") for s in (min, opt, max)]
        ok = len({len(s) for s in shapes}) == 1 and all(a <= b <= c and a > 0 for a, b, c in zip(*shapes))
        if not ok:
            self._valid = False  # TensorRT logs an error; add_optimization_profile then returns -1
        self._shapes[input] = tuple(Dims(s) for s in shapes)


class ITimingCache(Strict):
    _api = "ITimingCache"

    def __init__(self, trt, data: bytes):
        super().__init__(trt)
        self._data = data

    def serialize(self):
        return HostMemory(CACHE_MAGIC + self._data + b"+new")


class IBuilderConfig(Strict):
    _api = "IBuilderConfig"

    def __init__(self, trt):
        super().__init__(trt)
        self._flags = 0
        self._pools = {}
        self._profiles = []
        self._cache = None
        self._hc = trt.HardwareCompatibilityLevel.NONE

    def set_memory_pool_limit(self, pool, pool_size):
        need_enum(pool, self._trt.MemoryPoolType, "set_memory_pool_limit(pool)")
        need(pool_size, int, "set_memory_pool_limit(pool_size)")
        self._pools[pool.name] = pool_size

    def set_flag(self, flag):
        need_enum(flag, self._trt.BuilderFlag, "set_flag")
        self._flags |= 1 << flag.value

    def get_flag(self, flag):
        need_enum(flag, self._trt.BuilderFlag, "get_flag")
        return bool(self._flags >> flag.value & 1)

    @property
    def flags(self):
        return self._flags

    @property
    def hardware_compatibility_level(self):
        return self._hc

    @hardware_compatibility_level.setter
    def hardware_compatibility_level(self, value):
        self._hc = need_enum(value, self._trt.HardwareCompatibilityLevel, "hardware_compatibility_level")

    def add_optimization_profile(self, profile):
        need(profile, IOptimizationProfile, "add_optimization_profile")
        if "add_optimization_profile" in self._trt.fail or not profile._valid or not profile._shapes:
            return -1
        self._profiles.append(profile)
        return len(self._profiles) - 1

    def create_timing_cache(self, serialized_timing_cache):
        data = bytes(memoryview(serialized_timing_cache))  # TypeError when not a buffer
        if "create_timing_cache" in self._trt.fail or (data and not data.startswith(CACHE_MAGIC)):
            return None  # a corrupt blob: TensorRT returns None (trtexec checks it)
        return ITimingCache(self._trt, data)

    def set_timing_cache(self, cache, ignore_mismatch):
        need(cache, ITimingCache, "set_timing_cache(cache)")
        need(ignore_mismatch, bool, "set_timing_cache(ignore_mismatch)")
        if "set_timing_cache" in self._trt.fail and not ignore_mismatch:
            return False
        self._cache = cache
        return True

    def get_timing_cache(self):
        return self._cache


class Builder(Strict):
    _api = "Builder"

    def __init__(self, trt, logger):
        super().__init__(trt)
        need(logger, Logger, "Builder(logger)")
        trt._logger_used(logger)
        trt.builder = self

    def create_network(self, flags=0):
        need(flags, int, "create_network(flags)")
        trt = self._trt
        known = sum(1 << m.value for m in trt.NetworkDefinitionCreationFlag)
        if flags & ~known:
            raise Violation(f"create_network: unknown flag bits {flags:#x}")
        if "create_network" in trt.fail:
            return None
        st = 1 << trt._STRONGLY_TYPED_BIT
        if trt.major >= 11 and flags & st:
            trt.warnings.append("NetworkDefinitionCreationFlag.STRONGLY_TYPED is deprecated and ignored")
        trt.network = INetworkDefinition(trt, flags)
        return trt.network

    def create_builder_config(self):
        if "create_builder_config" in self._trt.fail:
            return None
        self._trt.config = IBuilderConfig(self._trt)
        return self._trt.config

    def create_optimization_profile(self):
        if "create_optimization_profile" in self._trt.fail:
            return None
        return IOptimizationProfile(self._trt)

    def build_serialized_network(self, network, config):
        trt = self._trt
        need(network, INetworkDefinition, "build_serialized_network(network)")
        need(config, IBuilderConfig, "build_serialized_network(config)")
        if network._onnx is None:
            raise Violation("build_serialized_network before the network was parsed")
        if not config._profiles:
            raise Violation("a network with dynamic inputs needs an optimization profile")
        for t in network._inputs:
            if t.name not in config._profiles[0]._shapes:
                raise Violation(f"the optimization profile lacks input {t.name}")
        strongly = trt.major >= 11 or bool(network._flags >> trt._STRONGLY_TYPED_BIT & 1)
        if trt.major < 11 and strongly and config._flags & (1 << trt.BuilderFlag.FP16.value):
            raise Violation("BuilderFlag.FP16 on a strongly typed network")
        if "build_serialized_network" in trt.fail:
            return None
        profile = config._profiles[0]._shapes[network._inputs[0].name]
        header = {
            "version": trt.__version__, "cc": trt.cuda_cc if trt.cuda_cc else None,
            "version_compatible": bool(config._flags >> trt.BuilderFlag.VERSION_COMPATIBLE.value & 1),
            "hardware_compat": config._hc.name, "flags": config._flags,
            "inputs": [[t.name, t._dtype, list(t._shape)] for t in network._inputs],
            "outputs": [[t.name, t._dtype, list(t._shape)] for t in network._outputs],
            "profile": [list(s) for s in profile],
        }
        return HostMemory(PLAN_MAGIC + json.dumps(header).encode() + b"\n" + network._onnx)


# -- runtime --------------------------------------------------------------------------------------

class Runtime(Strict):
    _api = "Runtime"

    def __init__(self, trt, logger):
        super().__init__(trt)
        need(logger, Logger, "Runtime(logger)")
        trt._logger_used(logger)
        self._host_code = False
        self._engines = weakref.WeakSet()
        trt.runtimes += 1
        weakref.finalize(self, _released, trt, "runtime", self._engines)

    @property
    def engine_host_code_allowed(self):
        return self._host_code

    @engine_host_code_allowed.setter
    def engine_host_code_allowed(self, value):
        self._host_code = need(value, bool, "engine_host_code_allowed")

    def deserialize_cuda_engine(self, serialized_engine):
        trt = self._trt
        data = bytes(memoryview(serialized_engine))
        trt.cuda.require_context("deserialize_cuda_engine")
        if "deserialize_cuda_engine" in trt.fail or not data.startswith(PLAN_MAGIC):
            return None
        head, _, onnx_bytes = data[len(PLAN_MAGIC):].partition(b"\n")
        h = json.loads(head)
        if h["version_compatible"]:
            if not self._host_code:
                return None
        elif h["version"] != trt.__version__:
            return None
        if h["cc"] and h["hardware_compat"] == "NONE" and h["cc"] != trt.cuda.cc:
            return None
        engine = ICudaEngine(trt, h, onnx_bytes)
        self._engines.add(engine)
        return engine


class ICudaEngine(Strict):
    _api = "ICudaEngine"

    def __init__(self, trt, header, onnx_bytes):
        super().__init__(trt)
        self._h = header
        self._onnx = onnx_bytes
        self._io = [(n, True, d, s) for n, d, s in header["inputs"]] + [(n, False, d, s) for n, d, s in header["outputs"]]
        self._io += [(n, False, d, s) for n, d, s in trt.extra_outputs]
        self._session = None
        self._contexts = weakref.WeakSet()
        trt.engines += 1
        weakref.finalize(self, _released, trt, "engine", self._contexts)

    @property
    def num_io_tensors(self):
        return len(self._io)

    def _find(self, name):
        need(name, str, "tensor name")
        for t in self._io:
            if t[0] == name:
                return t
        return None

    def get_tensor_name(self, index):
        need(index, int, "get_tensor_name")
        return self._io[index][0]

    def get_tensor_mode(self, name):
        t = self._find(name)
        m = self._trt.TensorIOMode
        return m.NONE if t is None else (m.INPUT if t[1] else m.OUTPUT)

    def get_tensor_dtype(self, name):
        t = self._find(name)
        return getattr(self._trt.DataType, t[2])

    def get_tensor_shape(self, name):
        t = self._find(name)
        return Dims(t[3]) if t else Dims(())

    def get_tensor_profile_shape(self, name, profile_index):
        need(profile_index, int, "get_tensor_profile_shape(profile_index)")
        t = self._find(name)
        if t is None or not t[1] or profile_index != 0:
            raise Violation(f"get_tensor_profile_shape({name!r}, {profile_index}): not an input of profile 0")
        return [Dims(s) for s in self._h["profile"]]

    def create_execution_context(self):
        self._trt.cuda.require_context("create_execution_context")
        if "create_execution_context" in self._trt.fail:
            return None
        ctx = IExecutionContext(self._trt, self)
        self._contexts.add(ctx)
        return ctx

    def _run(self, feeds):
        """The honest engine: the plan's ONNX run by onnxruntime on the CPU."""
        if self._session is None:
            import onnxruntime as ort

            self._session = ort.InferenceSession(self._onnx, providers=["CPUExecutionProvider"])
        names = [o.name for o in self._session.get_outputs()]
        outs = dict(zip(names, self._session.run(names, feeds)))
        for n, _, _ in self._trt.extra_outputs:
            outs[n] = np.zeros_like(outs[names[0]])
        return outs


class IExecutionContext(Strict):
    _api = "IExecutionContext"

    def __init__(self, trt, engine):
        super().__init__(trt)
        self._engine = engine
        self._shapes = {}
        self._addr = {}
        trt.contexts += 1
        weakref.finalize(self, _released, trt, "context", None)

    def set_input_shape(self, name, shape):
        dims = need_shape(shape, "set_input_shape")
        t = self._engine._find(name)
        if t is None or not t[1]:
            return False
        mn, _, mx = self._engine._h["profile"]
        if "set_input_shape" in self._trt.fail or len(dims) != len(mn) or not all(a <= d <= b for a, d, b in zip(mn, dims, mx)):
            return False
        self._shapes[name] = dims
        self._trt.calls.append(("set_input_shape", name, dims))
        return True

    def infer_shapes(self):
        if "infer_shapes" in self._trt.fail:
            return [n for n, is_in, _, _ in self._engine._io if is_in]
        return [n for n, is_in, _, _ in self._engine._io if is_in and n not in self._shapes]

    def _out_shape(self, name):
        """The tiny models' outputs keep the input's N, H, W: (N, C, H, W) scores or (N, H, W) labels."""
        x = self._shapes[self._engine._io[0][0]]
        s = self._engine._find(name)[3]
        return (x[0], s[1], x[2], x[3]) if len(s) == 4 else (x[0], x[2], x[3])

    def get_tensor_shape(self, name):
        t = self._engine._find(name)
        if t is None:
            return Dims(())
        if t[1]:
            return Dims(self._shapes.get(name, t[3]))
        if any(n not in self._shapes for n, is_in, _, _ in self._engine._io if is_in):
            raise Violation(f"get_tensor_shape({name!r}) before set_input_shape: TensorRT returns -1 dims here")
        return Dims(self._out_shape(name))

    def set_tensor_address(self, name, memory):
        need(name, str, "set_tensor_address(name)")
        need(memory, int, "set_tensor_address(memory)")
        if "set_tensor_address" in self._trt.fail or self._engine._find(name) is None:
            return False
        self._addr[name] = memory
        return True

    def execute_async_v3(self, stream_handle):
        trt, cuda = self._trt, self._trt.cuda
        need(stream_handle, int, "execute_async_v3(stream_handle)")
        cuda.require_context("execute_async_v3")
        stream = cuda.stream_by_handle(stream_handle)
        shapes = {}
        for n, is_in, d, _ in self._engine._io:
            if is_in and n not in self._shapes:
                raise Violation(f"execute_async_v3 before set_input_shape({n!r})")
            if n not in self._addr:
                raise Violation(f"execute_async_v3 with no address bound for tensor {n!r}")
            shape = self._shapes[n] if is_in else self._out_shape(n)
            nbytes = int(np.prod(shape)) * np.dtype(trt_api_numpy(d)).itemsize
            cuda.check_alloc(self._addr[n], nbytes, f"tensor {n!r}")
            shapes[n] = (shape, np.dtype(trt_api_numpy(d)))
        if "execute_async_v3" in trt.fail:
            return False
        addr = dict(self._addr)
        engine = self._engine

        def run():
            feeds = {}
            for n, is_in, _, _ in engine._io:
                if is_in:
                    shape, dt = shapes[n]
                    feeds[n] = cuda.read(addr[n], shape, dt)
            outs = engine._run(feeds)
            for n, is_in, _, _ in engine._io:
                if not is_in:
                    shape, dt = shapes[n]
                    cuda.write(addr[n], np.ascontiguousarray(outs[n], dtype=dt).reshape(shape))

        stream._queue.append(("execute_async_v3", run, [addr[n] for n in addr]))
        trt.calls.append(("execute_async_v3",))
        return True


def _released(trt, what, dependents):
    """Finalizer: TensorRT objects go with a CUDA context current, each after what it made
    (contexts before their engine, engines before their runtime)."""
    if dependents is not None and len(dependents):
        trt.order_violations.append(f"{what} released while {len(dependents)} object(s) made from it are alive")
    trt.cuda.released.append((what, trt.cuda.current() is not None))


def trt_api_numpy(name):
    return {"FLOAT": "float32", "HALF": "float16", "INT32": "int32", "INT64": "int64", "INT8": "int8",
            "UINT8": "uint8", "BOOL": "bool"}[name]


CLASSES = (Logger, ITensor, INetworkDefinition, ParserError, OnnxParser, IOptimizationProfile, ITimingCache,
           IBuilderConfig, Builder, Runtime, ICudaEngine, IExecutionContext)
SEVERITY = {"INTERNAL_ERROR": 0, "ERROR": 1, "WARNING": 2, "INFO": 3, "VERBOSE": 4}  # nvinfer1::ILogger::Severity


class StandinTRT(types.ModuleType):
    """``tensorrt`` of one version. ``fail``: names of methods that return their failure value."""

    def __init__(self, version: str = "10.13.0.35", *, cuda: "StandinCuda", parse_errors=(), extra_outputs=()):
        super().__init__("tensorrt")
        self.__version__ = version
        self.major = int(version.split(".")[0])
        self._key = "11" if self.major >= 11 else "10"
        self._api_v = trt_api.Api("trt", self._key)
        self.cuda = cuda
        self.cuda_cc = cuda.cc
        self.fail: Set[str] = set()
        self.parse_errors = list(parse_errors)
        self.extra_outputs = list(extra_outputs)
        self.loggers, self.calls, self.warnings, self.order_violations = [], [], [], []
        self.runtimes = self.engines = self.contexts = 0
        self.first_logger = None
        self.ignored_loggers = []
        values10 = trt_api.manifest()["tensorrt"]["10"]["classes"]
        for cname in ("BuilderFlag", "DataType", "NetworkDefinitionCreationFlag", "MemoryPoolType",
                      "HardwareCompatibilityLevel", "TensorIOMode", "ErrorCode"):
            c = self._api_v.classes[cname]
            v10 = values10[cname]["values"]
            names = list(c["values"]) if "values" in c else list(c["members"])
            vals, nxt = {}, max(v10.values()) + 1
            for n in names:
                if n in v10:
                    vals[n] = v10[n]
                else:
                    vals[n], nxt = nxt, nxt + 1
            object.__setattr__(self, cname, Enum(cname, vals))
        self._STRONGLY_TYPED_BIT = self.NetworkDefinitionCreationFlag.STRONGLY_TYPED.value
        self._Severity = Enum("ILogger.Severity", SEVERITY)
        module = self
        for cls in CLASSES:
            for name, val in vars(cls).items():
                if not name.startswith("_") and name not in trt_api.Api("trt", "10").members(cls._api) | self._api_v.members(cls._api):
                    raise Violation(f"stand-in {cls.__name__}.{name} is not a TensorRT API name")

        class _LoggerClass:
            """``trt.Logger``: a constructor with the severities as class attributes."""

            def __call__(self, min_severity=None):
                return Logger(module, min_severity)

            def __getattr__(self, k):
                if k in SEVERITY and k in module._members("Logger"):
                    return module._Severity._members[k]
                raise AttributeError(f"type object 'tensorrt.Logger' has no attribute '{k}'")

        self.Logger = _LoggerClass()
        self.Builder = lambda logger: Builder(module, logger)
        self.OnnxParser = lambda network, logger: OnnxParser(module, network, logger)
        self.Runtime = lambda logger: Runtime(module, logger)

    def _members(self, cls: str) -> Set[str]:
        return self._api_v.members(cls)

    def __getattribute__(self, name):
        if not name.startswith("_") and name not in STANDIN_STATE:
            if name not in object.__getattribute__(self, "_api_v").module:
                raise AttributeError(f"module 'tensorrt' ({object.__getattribute__(self, '__version__')}) has no attribute '{name}'")
        return object.__getattribute__(self, name)

    def _logger_used(self, logger):
        if self.first_logger is None:
            self.first_logger = logger
        elif logger is not self.first_logger:
            self.ignored_loggers.append(logger)  # TensorRT keeps the first logger and ignores this one


STANDIN_STATE = {"cuda", "cuda_cc", "fail", "parse_errors", "extra_outputs", "loggers", "runtimes", "engines", "order_violations",
                 "contexts", "calls", "warnings", "first_logger", "ignored_loggers", "major", "builder", "network", "config"}


# -- pycuda.driver ----------------------------------------------------------------------------------

class StandinCuda(types.ModuleType):
    """``pycuda.driver``: one device, a per-thread context stack, device memory as bytes."""

    def __init__(self, *, name="Standin GPU", cc="8.6", devices=1):
        super().__init__("pycuda.driver")
        self._api_v = trt_api.Api("cuda", "2026")
        self.gpu_name, self.cc, self.devices = name, cc, devices
        self.fail: Set[str] = set()
        self._tls = threading.local()
        self._next = 0x10000
        self._mem: Dict[int, bytearray] = {}
        self._streams = weakref.WeakValueDictionary()  # handle -> live Stream
        self.released: List[tuple] = []  # (what, context current at release?)
        self.detached = 0
        self.retained = 0
        cuda = self

        class Error(Exception):
            pass

        self.Error = Error

        class Strict_:
            _api = ""

            def __getattribute__(self, k):
                if not k.startswith("_") and k not in cuda._api_v.members(type(self)._api):
                    raise AttributeError(f"'pycuda._driver.{type(self)._api}' object has no attribute '{k}'")
                return object.__getattribute__(self, k)

        class Context(Strict_):
            _api = "Context"

            def push(self):
                cuda._stack().append(self)

            @staticmethod
            def pop():
                st = cuda._stack()
                if not st:
                    raise Error("cuCtxPopCurrent failed: invalid context")
                st.pop()

            def detach(self):
                cuda.detached += 1

        class _ContextClass:
            def __getattr__(self, k):
                if k == "pop" and "pop" in cuda._api_v.members("Context"):
                    return Context.pop
                raise AttributeError(f"type object 'Context' has no attribute '{k}'")

        class Device(Strict_):
            _api = "Device"

            def __init__(self, ordinal):
                need(ordinal, int, "Device(ordinal)")
                if not 0 <= ordinal < cuda.devices:
                    raise Error("cuDeviceGet failed: invalid device ordinal")

            def name(self):
                return cuda.gpu_name

            def compute_capability(self):
                return tuple(int(x) for x in cuda.cc.split("."))

            def retain_primary_context(self):
                if "retain_primary_context" in cuda.fail:
                    raise Error("cuDevicePrimaryCtxRetain failed: out of memory")
                cuda.retained += 1
                return Context()

        class _DeviceClass:
            def __call__(self, ordinal):
                return Device(ordinal)

            def __getattr__(self, k):
                if k == "count":
                    return lambda: cuda.devices
                raise AttributeError(f"type object 'Device' has no attribute '{k}'")

        class Stream(Strict_):
            _api = "Stream"

            def __init__(self, flags=0):
                ctx = cuda.require_context("Stream()")
                self._queue = []
                self._handle = cuda._alloc_id()
                cuda._streams[self._handle] = self
                weakref.finalize(self, cuda._release, "stream", ctx)

            @property
            def handle(self):
                return self._handle

            def synchronize(self):
                cuda.require_context("Stream.synchronize")
                q, self._queue = self._queue, []
                for what, fn, addrs in q:
                    for a in addrs:
                        if a not in cuda._mem:
                            raise Violation(f"{what}: device memory {a:#x} freed before the stream was synchronized")
                    fn()

        class Event(Strict_):
            _api = "Event"

            def __init__(self, flags=0):
                ctx = cuda.require_context("Event()")
                self._t = None
                weakref.finalize(self, cuda._release, "event", ctx)

            def record(self, stream=None):
                need(stream, Stream, "Event.record(stream)")
                stream._queue.append(("record", lambda: setattr(self, "_t", float(len(cuda.released) + 1)), []))
                return self

            def time_since(self, event):
                need(event, Event, "time_since")
                if self._t is None or event._t is None:
                    raise Error("cuEventElapsedTime failed: the events have not completed (synchronize first)")
                return 0.0

        class DeviceAllocation(Strict_):
            _api = "DeviceAllocation"

            def __init__(self, addr):
                self._addr = addr

            def __int__(self):
                return self._addr

            __index__ = __int__

            def free(self):
                cuda.require_context("DeviceAllocation.free")
                cuda._mem.pop(self._addr, None)

        self.Context = _ContextClass()
        self.Device = _DeviceClass()
        self.Stream = Stream
        self.Event = Event
        self._Alloc = DeviceAllocation

    def __getattribute__(self, name):
        if not name.startswith("_") and name not in CUDA_STATE:
            if name not in object.__getattribute__(self, "_api_v").module:
                raise AttributeError(f"module 'pycuda.driver' has no attribute '{name}'")
        return object.__getattribute__(self, name)

    # driver API
    def init(self, flags=0):
        if "init" in self.fail:
            raise self.Error("cuInit failed: no CUDA-capable device is detected")

    def mem_alloc(self, bytes):  # noqa: A002 - pycuda's parameter name
        need(bytes, int, "mem_alloc")
        self.require_context("mem_alloc")
        if "mem_alloc" in self.fail:
            raise self.Error("cuMemAlloc failed: out of memory")
        addr = self._alloc_id(bytes)
        self._mem[addr] = bytearray(bytes)
        return self._Alloc(addr)

    def pagelocked_empty(self, shape, dtype, order="C", mem_flags=0):
        self.require_context("pagelocked_empty")
        a = np.empty(shape, dtype)
        if a.dtype.kind == "f":
            a.fill(np.nan)  # stale: a host read before synchronize shows it
        else:
            a.fill(-7)
        return a

    def memcpy_htod_async(self, dest, src, stream=None):
        addr = int(dest)
        self._copy_check(src, stream, "memcpy_htod_async")
        src_ref = src  # pinned memory is read when the copy runs, not when it is queued

        def run():
            buf = self._mem[addr]
            b = np.ascontiguousarray(src_ref).tobytes()
            if len(b) > len(buf):
                raise Violation("memcpy_htod_async: source larger than the allocation")
            buf[:len(b)] = b
        stream._queue.append(("memcpy_htod_async", run, [addr]))

    def memcpy_dtoh_async(self, dest, src, stream=None):
        addr = int(src)
        self._copy_check(dest, stream, "memcpy_dtoh_async")

        def run():
            buf = self._mem[addr]
            n = dest.nbytes
            if n > len(buf):
                raise Violation("memcpy_dtoh_async: destination larger than the allocation")
            dest.reshape(-1).view(np.uint8)[:] = np.frombuffer(bytes(buf[:n]), np.uint8)
        stream._queue.append(("memcpy_dtoh_async", run, [addr]))

    # helpers for the TensorRT stand-in and the tests
    def _copy_check(self, host, stream, what):
        self.require_context(what)
        if not isinstance(host, np.ndarray):
            raise TypeError(f"{what}: host side must be a numpy array")
        if not isinstance(stream, self.Stream):
            raise Violation(f"{what} without a stream runs synchronously: the runner must pass its stream")

    def _stack(self):
        if not hasattr(self._tls, "stack"):
            self._tls.stack = []
        return self._tls.stack

    def require_context(self, what):
        st = self._stack()
        if not st:
            raise Violation(f"{what} with no CUDA context current")
        return st[-1]

    def current(self):
        st = self._stack()
        return st[-1] if st else None

    def _alloc_id(self, size=256):
        addr = self._next
        self._next += max(256, (size + 255) // 256 * 256) + 256
        return addr

    def _release(self, what, ctx):
        self.released.append((what, self.current() is ctx))

    def stream_by_handle(self, handle):
        s = self._streams.get(handle)
        if s is None:
            raise Violation(f"execute_async_v3 on {handle:#x}, which is not a live stream handle")
        return s

    def check_alloc(self, addr, nbytes, what):
        buf = self._mem.get(addr)
        if buf is None:
            raise Violation(f"{what}: address {addr:#x} is not a live device allocation")
        if len(buf) < nbytes:
            raise Violation(f"{what}: allocation of {len(buf)} bytes, {nbytes} needed")

    def read(self, addr, shape, dtype):
        n = int(np.prod(shape)) * np.dtype(dtype).itemsize
        return np.frombuffer(bytes(self._mem[addr][:n]), dtype).reshape(shape).copy()

    def write(self, addr, arr):
        b = arr.tobytes()
        self._mem[addr][:len(b)] = b


CUDA_STATE = {"gpu_name", "cc", "devices", "fail", "released", "detached", "retained", "require_context", "current",
              "stream_by_handle", "check_alloc", "read", "write"}


def install(monkeypatch, version="10.13.0.35", **kw):
    """Put the stand-ins in sys.modules (``tensorrt``, ``pycuda``, ``pycuda.driver``); returns (trt, cuda)."""
    import sys

    import fcn_deploy.backends.tensorrt as trt_backend

    cuda_kw = {k: kw.pop(k) for k in ("name", "cc", "devices") if k in kw}
    cuda = StandinCuda(**cuda_kw)
    trt = StandinTRT(version, cuda=cuda, **kw)
    pkg = types.ModuleType("pycuda")
    pkg.driver = cuda
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setitem(sys.modules, "pycuda", pkg)
    monkeypatch.setitem(sys.modules, "pycuda.driver", cuda)
    monkeypatch.setattr(trt_backend, "_LOGGER", None, raising=False)  # a fresh process for each test
    return trt, cuda
