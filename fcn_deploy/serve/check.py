"""``fcn-serve check DIR``: a Triton model repository checked offline, against Triton's own
schema and against the model files.

1. Every ``config.pbtxt`` is parsed with Triton's ``ModelConfig`` protobuf: the
   ``model_config_pb2`` module the ``tritonclient`` wheel ships (generated from
   triton-inference-server/common ``protobuf/model_config.proto``), loaded by file path because
   ``tritonclient.grpc/__init__`` imports grpc. A misspelt field or an enum value that does not
   exist fails here exactly as in Triton's own parser.
2. What protobuf cannot check, the way Triton and its backends do at load time:
   platform/backend names; version folders and model files (``default_model_filename``,
   ``cc_model_filenames``, ``label_filename``, ``model.py``); ``dims`` and data types against
   the model file's real inputs/outputs (inputs: a model's fixed axis must match, ``-1``
   accepts any; outputs: exact, as the ONNX Runtime backend compares them); a ``-1`` batch
   axis when ``max_batch_size > 0``; ``max_batch_size`` against a TensorRT plan's profile (from
   its sidecar); the ONNX Runtime backend's execution-accelerator names and TensorRT parameter
   keys (the list its ``onnxruntime.cc`` accepts) and profile shapes; warmup inputs; dynamic
   batching; and ensembles: every step's model exists, its ``input_map`` covers exactly that
   model's inputs, every ensemble tensor is produced before it is used, data types agree,
   ``max_batch_size`` is not above a composing model's.

Each problem is one line ``FILE: FIELD: what is wrong``.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from fcn_deploy.errors import FcnError, first_line
from fcn_deploy.serve import SERVE_INSTALL_HINT

PLATFORM_BACKEND = {"onnxruntime_onnx": "onnxruntime", "tensorrt_plan": "tensorrt", "ensemble": ""}
# Triton platforms/backends this checker knows but does not look into.
OTHER_PLATFORMS = {"pytorch_libtorch", "tensorflow_savedmodel", "tensorflow_graphdef"}
OTHER_BACKENDS = {"pytorch", "tensorflow", "openvino", "fil", "dali", "identity", "repeat", "square", "vllm", "tensorrtllm"}
DEFAULT_FILES = {"onnxruntime": "model.onnx", "tensorrt": "model.plan", "python": "model.py"}
# The TensorRT accelerator parameters Triton's ONNX Runtime backend accepts (src/onnxruntime.cc).
TRT_ACCELERATOR_KEYS = frozenset("""
precision_mode max_workspace_size_bytes trt_max_partition_iterations trt_min_subgraph_size
int8_calibration_table_name int8_use_native_calibration_table trt_dla_enable trt_dla_core
trt_engine_cache_enable trt_engine_cache_path trt_engine_cache_prefix trt_dump_subgraphs
trt_force_sequential_engine_build trt_context_memory_sharing_enable trt_layer_norm_fp32_fallback
trt_timing_cache_enable trt_timing_cache_path trt_force_timing_cache trt_detailed_build_log
trt_build_heuristics_enable trt_sparsity_enable trt_builder_optimization_level trt_auxiliary_streams
trt_tactic_sources trt_extra_plugin_lib_paths trt_profile_min_shapes trt_profile_max_shapes
trt_profile_opt_shapes trt_cuda_graph_enable trt_dump_ep_context_model trt_ep_context_file_path
trt_ep_context_embed_mode""".split())
PRECISION_MODE_VALUES = ("FP32", "FP16", "BF16", "INT8")
GPU_ACCELERATORS = ("tensorrt", "cuda")
CPU_ACCELERATORS = ("openvino",)

_PB2 = None


def model_config_pb2():
    """Triton's ``model_config_pb2`` from the installed ``tritonclient`` wheel, loaded by path."""
    global _PB2
    if _PB2 is not None:
        return _PB2
    spec = importlib.util.find_spec("tritonclient")
    if spec is None or not spec.submodule_search_locations:
        raise FcnError(f"tritonclient is not installed (it ships Triton's model_config_pb2): {SERVE_INSTALL_HINT}")
    path = Path(list(spec.submodule_search_locations)[0]) / "grpc" / "model_config_pb2.py"
    if not path.is_file():
        raise FcnError(f"{path} is missing: this tritonclient does not ship model_config_pb2; {SERVE_INSTALL_HINT}")
    name = "fcn_deploy._triton_model_config_pb2"
    mspec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(mspec)
    try:
        mspec.loader.exec_module(module)
    except ImportError as e:
        raise FcnError(f"cannot load Triton's model_config_pb2 ({first_line(e)}); it needs protobuf >= 6.33.5: {SERVE_INSTALL_HINT}") from None
    except Exception as e:  # protobuf's runtime-version check raises its own VersionError
        raise FcnError(f"cannot load Triton's model_config_pb2 ({first_line(e)}); it needs protobuf >= 6.33.5") from None
    sys.modules[name] = module
    _PB2 = module
    return module


def parse_config_text(text: str):
    """Parse config.pbtxt text into Triton's ``inference.ModelConfig`` (ParseError on bad input)."""
    from google.protobuf import text_format

    return text_format.Parse(text, model_config_pb2().ModelConfig())


# -- helpers ------------------------------------------------------------------------------------

class _Problems:
    def __init__(self, shown: Path):
        self.shown = shown
        self.items: List[str] = []

    def add(self, field: str, msg: str) -> None:
        self.items.append(f"{self.shown}: {field}: {msg}")


def _type_name(pb2, value: int) -> str:
    return pb2.DataType.Name(value)


def _fmt(dims) -> str:
    return "[" + ", ".join(str(int(d)) for d in dims) + "]"


class _ModelIO:
    """A model file's tensors as the backend reports them: name -> (TYPE_*, full shape)."""

    def __init__(self, inputs: Dict[str, Tuple[str, Tuple[int, ...]]], outputs: Dict[str, Tuple[str, Tuple[int, ...]]],
                 profile=None, source: str = ""):
        self.inputs = inputs
        self.outputs = outputs
        self.profile = profile
        self.source = source


def _io_of_file(path: Path, backend: str) -> _ModelIO:
    from fcn_deploy.serve.model_files import TRITON_TYPES, describe_onnx, plan_io_and_cc, tensor_from_onnx

    def tt(t):
        return TRITON_TYPES.get(t.dtype, f"(unsupported {t.dtype})")

    if backend == "onnxruntime":
        from fcn_deploy.onnx_info import read_onnx_header

        h = read_onnx_header(path)
        ins = {t.name: (tt(tensor_from_onnx(t)), tensor_from_onnx(t).shape) for t in h.inputs}
        outs = {t.name: (tt(tensor_from_onnx(t)), tensor_from_onnx(t).shape) for t in h.outputs}
        return _ModelIO(ins, outs, None, path.name)
    from fcn_deploy.sidecar import read_sidecar

    sc = read_sidecar(path)
    inp, out, _ = plan_io_and_cc(path, sc)
    return _ModelIO({inp.name: (tt(inp), inp.shape)}, {out.name: (tt(out), out.shape)}, sc.profile, path.name)


def _compare_dims(model_shape, dims, max_batch: int, exact: bool) -> Optional[str]:
    full = ([-1] + list(dims)) if max_batch > 0 else list(dims)
    if max_batch > 0 and (not model_shape or model_shape[0] != -1):
        return (f"max_batch_size > 0 needs the model's first axis to be -1 (dynamic batch), "
                f"but the model's shape is {_fmt(model_shape)}")
    if len(model_shape) != len(full):
        return (f"the model has {len(model_shape)} dimensions {_fmt(model_shape)}, the config {len(full)} "
                f"({_fmt(full)}{' with the batch axis' if max_batch > 0 else ''})")
    for i, (md, cd) in enumerate(zip(model_shape, full)):
        if (exact or md != -1) and md != cd:
            return f"axis {i} is {cd} in the config but {md} in the model (model shape {_fmt(model_shape)}, config {_fmt(full)})"
    return None


def _parse_profile_shapes(text: str) -> Dict[str, Tuple[int, ...]]:
    out = {}
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        name, sep, dims = part.rpartition(":")
        if not sep or not name:
            raise ValueError(f"{part!r} is not NAME:DxDx...")
        out[name] = tuple(int(d) for d in dims.split("x"))
    if not out:
        raise ValueError("empty")
    return out


# -- one model ----------------------------------------------------------------------------------

class _Checked:
    def __init__(self, name: str, cfg, backend: str):
        self.name = name
        self.cfg = cfg
        self.backend = backend


def _backend_of(cfg, p: _Problems) -> Optional[str]:
    platform, backend = cfg.platform, cfg.backend
    if not platform and not backend:
        p.add("platform", "neither platform nor backend is set (e.g. platform: \"onnxruntime_onnx\")")
        return None
    if platform:
        if platform in PLATFORM_BACKEND:
            implied = PLATFORM_BACKEND[platform]
            if backend and backend != implied:
                p.add("backend", f"{backend!r} does not go with platform {platform!r} (which means backend {implied or 'ensemble'!r})")
            return implied if platform != "ensemble" else "ensemble"
        if platform in OTHER_PLATFORMS:
            return "other"
        p.add("platform", f"unknown platform {platform!r}; valid: {', '.join(sorted(set(PLATFORM_BACKEND) | OTHER_PLATFORMS))}")
        return None
    if backend in ("onnxruntime", "tensorrt", "python"):
        return backend
    if backend in OTHER_BACKENDS:
        return "other"
    p.add("backend", f"unknown backend {backend!r}; valid: {', '.join(sorted({'onnxruntime', 'tensorrt', 'python'} | OTHER_BACKENDS))}")
    return None


def _check_dims_field(pb2, cfg, p: _Problems) -> None:
    if cfg.max_batch_size < 0:
        p.add("max_batch_size", f"must be >= 0, got {cfg.max_batch_size}")
    for kind, items in (("input", cfg.input), ("output", cfg.output)):
        names = set()
        for i, t in enumerate(items):
            where = f"{kind}[{i}]"
            if not t.name:
                p.add(f"{where}.name", "is empty")
            if t.name in names:
                p.add(f"{where}.name", f"{t.name!r} is listed twice")
            names.add(t.name)
            if t.data_type == pb2.TYPE_INVALID:
                p.add(f"{where}.data_type", "is not set (TYPE_INVALID)")
            bad = [d for d in t.dims if d == 0 or d < -1]
            if bad:
                p.add(f"{where}.dims", f"{_fmt(t.dims)}: each dimension is -1 (dynamic) or >= 1")


def _model_files(cfg, vdir: Path, backend: str) -> List[Tuple[str, Path]]:
    files = []
    if backend == "tensorrt" and cfg.cc_model_filenames:
        for cc, fname in sorted(cfg.cc_model_filenames.items()):
            files.append((f"cc_model_filenames[{cc!r}]", vdir / fname))
        if cfg.default_model_filename:
            files.append(("default_model_filename", vdir / cfg.default_model_filename))
        return files
    fname = cfg.default_model_filename or DEFAULT_FILES.get(backend, "")
    if fname:
        files.append(("default_model_filename" if cfg.default_model_filename else "(model file)", vdir / fname))
    return files


def _check_io(pb2, cfg, io: _ModelIO, p: _Problems, fileshown: str) -> None:
    mb = cfg.max_batch_size
    if len(cfg.input) != len(io.inputs):
        p.add("input", f"the config lists {len(cfg.input)} input(s), {fileshown} has {len(io.inputs)} ({', '.join(io.inputs)})")
    for kind, items, real, exact in (("input", cfg.input, io.inputs, False), ("output", cfg.output, io.outputs, True)):
        for i, t in enumerate(items):
            where = f"{kind}[{i}]"
            if t.name not in real:
                p.add(f"{where}.name", f"{t.name!r} is not an {kind} of {fileshown} (it has: {', '.join(real) or 'none'})")
                continue
            rtype, rshape = real[t.name]
            ctype = _type_name(pb2, t.data_type)
            if ctype != rtype:
                p.add(f"{where}.data_type", f"{ctype} but {fileshown}'s {t.name!r} is {rtype}")
            err = _compare_dims(rshape, list(t.dims), mb, exact)
            if err:
                p.add(f"{where}.dims", f"{_fmt(t.dims)} does not match {fileshown}'s {t.name!r}: {err}")


def _check_plan_profile(cfg, io: _ModelIO, p: _Problems, fileshown: str) -> None:
    prof = io.profile
    if prof is None:
        return
    if cfg.max_batch_size > prof.max[0]:
        p.add("max_batch_size", f"{cfg.max_batch_size} is above {fileshown}'s optimization profile (max batch {prof.max[0]}; "
                                f"{prof.describe()}): Triton refuses to load it; lower it or rebuild the plan")


def _check_accelerators(cfg, backend: str, io: Optional[_ModelIO], p: _Problems) -> None:
    eas = cfg.optimization.execution_accelerators
    if not (len(eas.gpu_execution_accelerator) or len(eas.cpu_execution_accelerator)):
        return
    if backend != "onnxruntime":
        p.add("optimization.execution_accelerators", "only the onnxruntime backend reads execution accelerators")
        return
    kinds = {g.kind for g in cfg.instance_group}
    pb2 = model_config_pb2()
    for i, a in enumerate(eas.gpu_execution_accelerator):
        where = f"optimization.execution_accelerators.gpu_execution_accelerator[{i}]"
        if a.name not in GPU_ACCELERATORS:
            p.add(f"{where}.name", f"unknown GPU execution accelerator {a.name!r}; valid: {', '.join(GPU_ACCELERATORS)}")
            continue
        if kinds and kinds <= {pb2.ModelInstanceGroup.KIND_CPU}:
            p.add(f"{where}", "a GPU accelerator with only KIND_CPU instances is never used")
        if a.name != "tensorrt":
            continue
        for key, value in sorted(a.parameters.items()):
            if key not in TRT_ACCELERATOR_KEYS:
                p.add(f"{where}.parameters[{key!r}]", "unknown parameter for the TensorRT accelerator (Triton's ONNX Runtime backend rejects it)")
        if "precision_mode" in a.parameters and a.parameters["precision_mode"] not in PRECISION_MODE_VALUES:
            p.add(f"{where}.parameters['precision_mode']", f"{a.parameters['precision_mode']!r}; valid: {', '.join(PRECISION_MODE_VALUES)}")
        shapes = {}
        for which in ("min", "opt", "max"):
            key = f"trt_profile_{which}_shapes"
            if key not in a.parameters:
                continue
            try:
                shapes[which] = _parse_profile_shapes(a.parameters[key])
            except ValueError as e:
                p.add(f"{where}.parameters[{key!r}]", f"{a.parameters[key]!r} is not NAME:DxDx... ({e})")
        if shapes and len(shapes) != 3:
            p.add(f"{where}.parameters", "trt_profile_min_shapes, trt_profile_opt_shapes and trt_profile_max_shapes go together")
        if io is None or len(shapes) != 3:
            continue
        for which, per in shapes.items():
            for name, dims in per.items():
                key = f"{where}.parameters['trt_profile_{which}_shapes']"
                if name not in io.inputs:
                    p.add(key, f"names {name!r}, which is not an input of {io.source} (it has: {', '.join(io.inputs)})")
                    continue
                rshape = io.inputs[name][1]
                if len(dims) != len(rshape) or any(r != -1 and r != d for r, d in zip(rshape, dims)):
                    p.add(key, f"{name}:{'x'.join(map(str, dims))} does not fit {io.source}'s {name!r} {_fmt(rshape)}")
        for name in shapes.get("min", {}):
            lo, mid, hi = shapes["min"].get(name), shapes.get("opt", {}).get(name), shapes.get("max", {}).get(name)
            if lo and mid and hi and len(lo) == len(mid) == len(hi):
                if not all(a_ <= b_ <= c_ for a_, b_, c_ in zip(lo, mid, hi)):
                    p.add(f"{where}.parameters", f"{name}: profile needs min <= opt <= max on every axis")
                if cfg.max_batch_size > 0 and hi[0] < cfg.max_batch_size:
                    p.add(f"{where}.parameters['trt_profile_max_shapes']",
                          f"batch {hi[0]} is below max_batch_size {cfg.max_batch_size}")
    for i, a in enumerate(eas.cpu_execution_accelerator):
        if a.name not in CPU_ACCELERATORS:
            p.add(f"optimization.execution_accelerators.cpu_execution_accelerator[{i}].name",
                  f"unknown CPU execution accelerator {a.name!r}; valid: {', '.join(CPU_ACCELERATORS)}")


def _check_scheduling(pb2, cfg, backend: str, p: _Problems) -> None:
    if cfg.HasField("dynamic_batching"):
        if cfg.max_batch_size == 0:
            p.add("dynamic_batching", "needs max_batch_size > 0 (a model that batches)")
        for i, b in enumerate(cfg.dynamic_batching.preferred_batch_size):
            if b < 1 or b > cfg.max_batch_size:
                p.add(f"dynamic_batching.preferred_batch_size[{i}]", f"{b} is outside 1..max_batch_size ({cfg.max_batch_size})")
    for i, g in enumerate(cfg.instance_group):
        if backend == "tensorrt" and g.kind == pb2.ModelInstanceGroup.KIND_CPU:
            p.add(f"instance_group[{i}].kind", "KIND_CPU: a TensorRT plan runs on a GPU only")
        if g.count < 0:
            p.add(f"instance_group[{i}].count", f"must be >= 1, got {g.count}")
    if backend == "ensemble" and len(cfg.instance_group):
        p.add("instance_group", "an ensemble has no instances of its own (Triton refuses instance_group on it)")


def _check_warmup(pb2, cfg, io: Optional[_ModelIO], mdir: Path, p: _Problems) -> None:
    inputs = {t.name: t for t in cfg.input}
    for i, w in enumerate(cfg.model_warmup):
        where = f"model_warmup[{i}]"
        limit = max(cfg.max_batch_size, 1)
        if not 1 <= w.batch_size <= limit:
            p.add(f"{where}.batch_size", f"{w.batch_size} is outside 1..{limit}")
        missing = [n for n in inputs if n not in w.inputs]
        if missing:
            p.add(f"{where}.inputs", f"lacks the model input(s) {', '.join(missing)}")
        for name, wi in sorted(w.inputs.items()):
            key = f"{where}.inputs[{name!r}]"
            if name not in inputs:
                p.add(key, f"{name!r} is not an input of the config (inputs: {', '.join(inputs)})")
                continue
            t = inputs[name]
            if wi.data_type != t.data_type:
                p.add(f"{key}.data_type", f"{_type_name(pb2, wi.data_type)} but input {name!r} is {_type_name(pb2, t.data_type)}")
            if len(wi.dims) != len(t.dims) or any(c != -1 and c != d for c, d in zip(t.dims, wi.dims)):
                p.add(f"{key}.dims", f"{_fmt(wi.dims)} does not fit input {name!r} dims {_fmt(t.dims)}")
            src = wi.WhichOneof("input_data_type")
            if src is None:
                p.add(key, "sets none of zero_data, random_data, input_data_file")
            elif src == "input_data_file" and not (mdir / "warmup" / wi.input_data_file).is_file():
                p.add(f"{key}.input_data_file", f"{wi.input_data_file!r} is not in {mdir.name}/warmup/")
            if io is not None and io.profile is not None and len(wi.dims) == 3:
                shape = (w.batch_size if cfg.max_batch_size > 0 else 1, *wi.dims)
                if not io.profile.contains(shape):
                    p.add(f"{key}.dims", f"warmup shape {'x'.join(map(str, shape))} is outside {io.source}'s profile ({io.profile.describe()})")


def _check_python(cfg, mdir: Path, versions: List[Path], p: _Problems) -> None:
    from fcn_deploy.serve.pipeline import DESCRIPTION_FILE, Stages

    for v in versions:
        desc = v / DESCRIPTION_FILE
        if desc.is_file():
            try:
                st = Stages.from_file(desc)
            except FcnError as e:
                p.add(f"{v.name}/{DESCRIPTION_FILE}", str(e))
                continue
            names = {t.name for t in cfg.input} | {t.name for t in cfg.output}
            if st.input_name not in names and st.output_name not in names:
                p.add(f"{v.name}/{DESCRIPTION_FILE}", f"describes a model with tensors {st.input_name!r}/{st.output_name!r}, "
                                                     "which this Python model neither produces nor takes")


def _check_one(mdir: Path, shown: Path, pb2, checked: Dict[str, _Checked], problems: List[str]) -> None:
    from google.protobuf import text_format

    cfg_path = mdir / "config.pbtxt"
    p = _Problems(shown / "config.pbtxt")
    if not cfg_path.is_file():
        problems.append(f"{shown}: no config.pbtxt")
        return
    try:
        text = cfg_path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        problems.append(f"{shown / 'config.pbtxt'}: cannot read ({first_line(e)})")
        return
    try:
        cfg = text_format.Parse(text, pb2.ModelConfig())
    except text_format.ParseError as e:
        problems.append(f"{shown / 'config.pbtxt'}:{first_line(e)}")
        return
    if cfg.name and cfg.name != mdir.name:
        p.add("name", f"{cfg.name!r} differs from its folder name {mdir.name!r} (Triton requires them equal)")
    backend = _backend_of(cfg, p)
    _check_dims_field(pb2, cfg, p)
    versions = sorted((v for v in mdir.iterdir() if v.is_dir() and v.name.isdigit()), key=lambda v: int(v.name))
    if not versions:  # ensembles too: Triton's own QA gives them an empty 1/
        p.add("(version folder)", f"{mdir.name}/ has no numeric version folder such as 1/ (an ensemble's may be empty)")
    io = None
    if backend in ("onnxruntime", "tensorrt", "python"):
        for v in versions:
            for field, f in _model_files(cfg, v, backend):
                if not f.is_file():
                    p.add(field, f"{mdir.name}/{v.name}/{f.name} is missing")
                    continue
                if backend == "python":
                    continue
                try:
                    this_io = _io_of_file(f, backend)
                except FcnError as e:
                    p.add(field, f"{mdir.name}/{v.name}/{f.name}: {e}")
                    continue
                if io is None:
                    io = this_io
                _check_io(pb2, cfg, this_io, p, f"{v.name}/{f.name}")
                if backend == "tensorrt":
                    _check_plan_profile(cfg, this_io, p, f"{v.name}/{f.name}")
    for i, t in enumerate(cfg.output):
        if t.label_filename and not (mdir / t.label_filename).is_file():
            p.add(f"output[{i}].label_filename", f"{t.label_filename!r} is not in {mdir.name}/")
    if backend is not None:
        _check_accelerators(cfg, backend, io, p)
        _check_scheduling(pb2, cfg, backend, p)
    _check_warmup(pb2, cfg, io, mdir, p)
    if backend == "python":
        _check_python(cfg, mdir, versions, p)
    if backend == "ensemble" and not cfg.HasField("ensemble_scheduling"):
        p.add("ensemble_scheduling", "platform \"ensemble\" needs ensemble_scheduling with its steps")
    if cfg.HasField("ensemble_scheduling") and backend != "ensemble":
        p.add("ensemble_scheduling", "only a platform \"ensemble\" model has ensemble_scheduling")
    problems.extend(p.items)
    checked[mdir.name] = _Checked(mdir.name, cfg, backend or "?")


def _check_ensemble(e: _Checked, shown: Path, checked: Dict[str, _Checked], pb2, problems: List[str]) -> None:
    p = _Problems(shown / "config.pbtxt")
    cfg = e.cfg
    tensors: Dict[str, Optional[int]] = {t.name: t.data_type for t in cfg.input}
    produced: Dict[str, str] = {}
    steps = list(cfg.ensemble_scheduling.step)
    if not steps:
        p.add("ensemble_scheduling.step", "has no steps")
    # What each step produces (any order: Triton runs steps as their inputs become ready).
    for i, s in enumerate(steps):
        m = checked.get(s.model_name)
        for key, val in s.output_map.items():
            if val in produced or val in tensors:
                p.add(f"ensemble_scheduling.step[{i}].output_map[{key!r}]", f"ensemble tensor {val!r} is produced twice")
            produced[val] = s.model_name
            dtype = None
            if m is not None:
                dtype = next((t.data_type for t in m.cfg.output if t.name == key), None)
            tensors[val] = dtype
    for i, s in enumerate(steps):
        where = f"ensemble_scheduling.step[{i}]"
        m = checked.get(s.model_name)
        if m is None or s.model_name == e.name:
            p.add(f"{where}.model_name", f"{s.model_name!r} is not a model in this repository")
            continue
        inputs = {t.name: t.data_type for t in m.cfg.input}
        outputs = {t.name for t in m.cfg.output}
        for key, val in s.input_map.items():
            if key not in inputs:
                p.add(f"{where}.input_map[{key!r}]", f"{key!r} is not an input of {s.model_name} (it takes: {', '.join(inputs)})")
                continue
            if val not in tensors:
                p.add(f"{where}.input_map[{key!r}]", f"ensemble tensor {val!r} is neither an ensemble input nor any step's output")
            elif tensors[val] is not None and tensors[val] != inputs[key]:
                p.add(f"{where}.input_map[{key!r}]", f"{val!r} is {_type_name(pb2, tensors[val])} but {s.model_name}'s {key!r} "
                                                     f"takes {_type_name(pb2, inputs[key])}")
        missing = [k for k in inputs if k not in s.input_map]
        if missing:
            p.add(f"{where}.input_map", f"does not feed {s.model_name}'s input(s) {', '.join(missing)}")
        for key in s.output_map:
            if key not in outputs:
                p.add(f"{where}.output_map[{key!r}]", f"{key!r} is not an output of {s.model_name} (it has: {', '.join(sorted(outputs))})")
        if cfg.max_batch_size > m.cfg.max_batch_size:
            p.add("max_batch_size", f"{cfg.max_batch_size} is above composing model {s.model_name}'s ({m.cfg.max_batch_size})")
    for i, t in enumerate(cfg.output):
        if t.name not in produced:
            p.add(f"output[{i}].name", f"ensemble output {t.name!r} is produced by no step's output_map")
        elif tensors.get(t.name) is not None and tensors[t.name] != t.data_type:
            p.add(f"output[{i}].data_type", f"{_type_name(pb2, t.data_type)} but {produced[t.name]} produces "
                                            f"{_type_name(pb2, tensors[t.name])}")
    problems.extend(p.items)


def check_repository(root, *, display_root=None) -> List[str]:
    """Every problem of the repository at ``root`` (empty list: it passes), one line each."""
    root = Path(root)
    shown_root = Path(display_root) if display_root is not None else root
    if not root.is_dir():
        raise FcnError(f"{root}: no such folder")
    pb2 = model_config_pb2()
    problems: List[str] = []
    checked: Dict[str, _Checked] = {}
    dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not dirs:
        raise FcnError(f"{root}: no model folders (a Triton repository holds NAME/config.pbtxt and NAME/1/...)")
    for d in dirs:
        _check_one(d, shown_root / d.name, pb2, checked, problems)
    for name, c in checked.items():
        if c.backend == "ensemble":
            _check_ensemble(c, shown_root / name, checked, pb2, problems)
    return problems


def config_as_dict(path) -> dict:
    """A config.pbtxt as the dict Triton's HTTP ``/config`` endpoint returns (protobuf JSON names)."""
    from google.protobuf import json_format, text_format

    cfg = text_format.Parse(Path(path).read_text(encoding="utf-8"), model_config_pb2().ModelConfig())
    return json.loads(json_format.MessageToJson(cfg, preserving_proto_field_name=True))
