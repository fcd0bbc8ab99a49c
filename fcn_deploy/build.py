"""``fcn-build``: ONNX -> TensorRT engine (``.plan``) plus its JSON sidecar.

::

    fcn-build fcn8s.onnx fcn8s.plan --min 1x3x256x256 --opt 1x3x360x480 --max 4x3x720x960 \\
        [--workspace MB] [--timing-cache FILE] [--version-compatible] [--hardware-compat ampere+] [--fp16]

Precision comes from the ONNX (fp32, fp16 or int8 QDQ from ``fcn-export --precision``) and the
network is parsed STRONGLY_TYPED. ``--fp16`` exists for TensorRT 10.0-10.11 (and, deprecated,
10.12-10.x): it builds a weakly-typed network with ``BuilderFlag.FP16`` from an fp32 (or int8
QDQ) ONNX. TensorRT 11 removed that flag; there ``--fp16`` is an error telling you to export an
fp16 ONNX. What was done is printed and recorded in the sidecar.

Everything before the TensorRT calls (arguments, shapes, min <= opt <= max, the profile
against the ONNX input, metadata, the precision decision, the sidecar) is plain code tested
on CPU. The TensorRT sequence itself (Builder -> create_network -> OnnxParser.parse_from_file
-> builder config: workspace pool limit, one optimization profile, timing cache, flags ->
build_serialized_network) is unverified on hardware (see README, "GPU status"); on the CPU it
runs against strict stand-ins built from the real bindings' names (tests/trt_standin.py) and
every ``trt.*`` name is checked against TensorRT 10.x and 11.x (tests/test_trt_api.py).

TensorRT 11 networks are always strongly typed (``NetworkDefinitionCreationFlag.STRONGLY_TYPED``
is deprecated and ignored there), so the flag is passed on 10.x only.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import logging
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

from fcn_deploy._util import atomic_path, atomic_write_bytes, run_cli, sha256_file
from fcn_deploy.errors import FcnError, unknown_name
from fcn_deploy.modelinfo import ModelInfo
from fcn_deploy.onnx_info import OnnxHeader, OnnxTensor, read_onnx_header
from fcn_deploy.shapes import Profile, parse_shape
from fcn_deploy.sidecar import PlanSidecar, sidecar_path

log = logging.getLogger(__name__)

# --hardware-compat names -> trt.HardwareCompatibilityLevel member names.
HARDWARE_COMPAT = {"none": "NONE", "ampere+": "AMPERE_PLUS", "same-cc": "SAME_COMPUTE_CAPABILITY"}


@dataclass(frozen=True)
class BuildConfig:
    onnx: Path
    plan: Path
    profile: Profile
    workspace_mb: Optional[int] = None
    timing_cache: Optional[Path] = None
    version_compatible: bool = False
    hardware_compat: str = "none"
    fp16: bool = False
    verbose: bool = False


@dataclass(frozen=True)
class PrecisionPlan:
    strongly_typed: bool
    fp16_flag: bool
    precision: str  # what the sidecar records
    message: str  # what fcn-build prints


def _parser() -> argparse.ArgumentParser:
    from fcn_deploy.cli_kit import add_shape, cli_parser

    p = cli_parser(
        prog="fcn-build",
        description="Build a TensorRT engine (.plan) and its JSON sidecar from an fcn-deploy ONNX model.",
    )
    p.add_argument("onnx", help="input model (.onnx exported by fcn-export)")
    p.add_argument("plan", help="output engine (.plan); the sidecar goes to PLAN.json")
    add_shape(p, "--min", required=True, help="smallest input shape, e.g. 1x3x256x256")
    add_shape(p, "--opt", required=True, help="shape TensorRT tunes for, e.g. 1x3x360x480")
    add_shape(p, "--max", required=True, help="largest input shape, e.g. 4x3x720x960")
    p.add_argument("--workspace", type=int, metavar="MB", help="workspace memory pool limit in MiB (default: TensorRT's)")
    p.add_argument("--timing-cache", metavar="FILE", help="load (if present) and save the builder's timing cache here")
    p.add_argument("--version-compatible", action="store_true",
                   help="plan also runs on later TensorRT versions of the same major (may be slower)")
    p.add_argument("--hardware-compat", default="none", metavar="LEVEL",
                   help=f"GPU-architecture compatibility: {', '.join(HARDWARE_COMPAT)} (default none)")
    p.add_argument("--fp16", action="store_true",
                   help="TensorRT 10.x only: let an fp32 ONNX run in fp16 (BuilderFlag.FP16, weakly typed)")
    p.add_argument("--verbose", action="store_true", help="TensorRT's verbose log")
    return p


def config_from_args(args: argparse.Namespace) -> BuildConfig:
    onnx = Path(args.onnx)
    plan = Path(args.plan)
    if onnx.suffix.lower() != ".onnx":
        raise FcnError(f"{onnx}: expected an .onnx file")
    if plan.suffix.lower() not in (".plan", ".engine"):
        raise FcnError(f"{plan}: the output should end in .plan (the runtime picks TensorRT by that suffix)")
    if onnx.resolve() == plan.resolve():
        raise FcnError("input and output are the same file")
    shapes = {k: getattr(args, k) for k in ("min", "opt", "max")}  # tuples from the CLI; strings from older callers
    shapes = {k: parse_shape(v, what=f"--{k}") if isinstance(v, str) else tuple(v) for k, v in shapes.items()}
    profile = Profile(shapes["min"], shapes["opt"], shapes["max"])
    if args.workspace is not None and args.workspace < 1:
        raise FcnError(f"--workspace must be >= 1 MiB, got {args.workspace}")
    hc = str(args.hardware_compat).lower()
    if hc not in HARDWARE_COMPAT:
        raise unknown_name("--hardware-compat level", args.hardware_compat, HARDWARE_COMPAT)
    return BuildConfig(
        onnx=onnx, plan=plan, profile=profile, workspace_mb=args.workspace,
        timing_cache=Path(args.timing_cache) if args.timing_cache else None,
        version_compatible=bool(args.version_compatible), hardware_compat=hc, fp16=bool(args.fp16),
        verbose=bool(args.verbose),
    )


def check_profile_against_input(profile: Profile, tensor: OnnxTensor) -> None:
    """The profile must suit the ONNX input: 4-D, same channel count, fixed dims respected."""
    if len(tensor.shape) != 4:
        raise FcnError(f"ONNX input {tensor.name!r} has shape {tensor.shape}; expected 4-D NCHW")
    if tensor.dtype not in ("float32", "float16"):
        raise FcnError(f"ONNX input {tensor.name!r} is {tensor.dtype}; expected float32 or float16")
    for axis, d in enumerate(tensor.shape):
        if isinstance(d, int) and d > 0:
            lo, hi = profile.min[axis], profile.max[axis]
            if not lo == hi == d:
                what = "channels" if axis == 1 else f"axis {'NCHW'[axis]}"
                raise FcnError(
                    f"ONNX input {tensor.name!r} has {what} fixed at {d}, but the profile spans {lo}..{hi} "
                    f"({profile.describe()}); use {d} there"
                )
    if profile.channels != 3:
        raise FcnError(f"profile has {profile.channels} channels; FCN inputs are RGB/BGR images with 3")


def read_model(onnx: Path) -> Tuple[OnnxHeader, ModelInfo]:
    header = read_onnx_header(onnx)
    info = ModelInfo.from_metadata(header.metadata, source=str(onnx))
    if len(header.inputs) != 1:
        raise FcnError(f"{onnx}: an FCN model has one input, this one has {len(header.inputs)}")
    if header.inputs[0].name != info.input_name:
        raise FcnError(f"{onnx}: metadata names input {info.input_name!r}, the graph's input is {header.inputs[0].name!r}")
    names = [o.name for o in header.outputs]
    if info.output_name not in names:
        raise FcnError(f"{onnx}: metadata names output {info.output_name!r}, the graph has {', '.join(names)}")
    return header, info


def precision_plan(trt_version: Tuple[int, int, int], onnx_precision: str, fp16: bool) -> PrecisionPlan:
    """What the builder does about precision on this TensorRT version (see the module doc)."""
    v = tuple(trt_version)
    vs = ".".join(str(x) for x in v)
    if v < (10, 0, 0):
        raise FcnError(f"TensorRT {vs} is too old: fcn-build needs TensorRT >= 10")
    if not fp16:
        return PrecisionPlan(True, False, onnx_precision,
                             f"strongly typed: precision taken from the ONNX ({onnx_precision})")
    if onnx_precision == "fp16":
        return PrecisionPlan(True, False, "fp16",
                             "strongly typed: the ONNX is already fp16, --fp16 changes nothing")
    if v >= (11, 0, 0):
        raise FcnError(
            f"TensorRT {vs} has no FP16 builder flag (removed in TensorRT 11; networks are strongly typed): "
            "export an fp16 ONNX instead (fcn-export --precision fp16) and build it without --fp16"
        )
    note = ""
    if v >= (10, 12, 0):
        note = " (BuilderFlag.FP16 is deprecated since TensorRT 10.12; prefer an fp16 ONNX)"
    return PrecisionPlan(False, True, f"{onnx_precision}+fp16 (builder flag)",
                         f"weakly typed with BuilderFlag.FP16 on an {onnx_precision} ONNX: TensorRT may pick fp16 "
                         f"kernels layer by layer{note}")


def format_parser_error(err) -> str:
    """One line per ONNX parser error, with the node (index, name, operator) where known."""
    def call(name):
        f = getattr(err, name, None)
        try:
            return f() if callable(f) else f
        except Exception:
            return None

    node = call("node")
    name = call("node_name")
    op = call("node_operator")
    desc = call("desc") or str(err)
    code = call("code")
    where = []
    if node is not None and node >= 0:
        where.append(f"node {node}")
    if name:
        where.append(repr(name))
    if op:
        where.append(f"op {op}")
    code_s = f" [{getattr(code, 'name', code)}]" if code is not None else ""
    return f"{' '.join(where) or 'model'}: {desc}{code_s}"


def gpu_identity() -> Tuple[str, str]:
    """(name, compute capability "8.6") of the first GPU, through pycuda, else nvidia-smi; "unknown"/"" when neither can tell."""
    try:
        from fcn_deploy.backends.cuda_buffers import gpu_identity as _pycuda_identity

        return _pycuda_identity(0)
    except FcnError:
        pass
    exe = shutil.which("nvidia-smi")
    if exe:
        try:
            out = subprocess.run([exe, "--query-gpu=name,compute_cap", "--format=csv,noheader"], capture_output=True, text=True, timeout=10)
            if out.returncode == 0 and out.stdout.strip():
                name, _, cc = out.stdout.strip().splitlines()[0].rpartition(",")
                return (name.strip() or "unknown"), cc.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    return "unknown", ""


def gpu_name() -> str:
    return gpu_identity()[0]


def _io_record(header: OnnxHeader, info: ModelInfo) -> dict:
    """The plan's I/O tensors (those of the ONNX it was parsed from, strongly typed), -1 = dynamic."""
    def rec(t):
        return {"name": t.name, "dtype": t.dtype, "shape": [d if isinstance(d, int) and d > 0 else -1 for d in t.shape]}

    outs = [o for o in header.outputs if o.name == info.output_name] or list(header.outputs[:1])
    return {"input": rec(header.inputs[0]), "output": rec(outs[0])} if outs else {"input": rec(header.inputs[0])}


def make_sidecar(cfg: BuildConfig, header: OnnxHeader, info: ModelInfo, plan: PrecisionPlan, *, trt_version: str,
                 gpu: str, build_seconds: float, onnx_sha256: str, plan_sha256: str, compute_capability: str = "") -> PlanSidecar:
    return PlanSidecar(
        info=info,
        input_name=header.inputs[0].name,
        output_names=(info.output_name,),
        profile=cfg.profile,
        precision=plan.precision,
        tensorrt_version=trt_version,
        gpu=gpu,
        compute_capability=compute_capability,
        build_time=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        build_seconds=round(float(build_seconds), 3),
        onnx_file=cfg.onnx.name,
        onnx_sha256=onnx_sha256,
        plan_sha256=plan_sha256,
        builder={
            "strongly_typed": plan.strongly_typed,
            "fp16_flag": plan.fp16_flag,
            "version_compatible": cfg.version_compatible,
            "hardware_compat": cfg.hardware_compat,
            "workspace_mb": cfg.workspace_mb,
            "timing_cache": str(cfg.timing_cache) if cfg.timing_cache else None,
            # For Triton (fcn-serve triton): cc_model_filenames key and the engine's tensors.
            "compute_capability": compute_capability or None,
            "io": _io_record(header, info),
        },
    )


def build_engine(trt, cfg: BuildConfig, input_name: str, plan: PrecisionPlan, *, echo=print) -> Tuple[bytes, Optional[bytes]]:
    """The TensorRT calls. Returns (serialized plan, serialized timing cache or None).

    Unverified on hardware (no NVIDIA GPU on this project's machines)."""
    from fcn_deploy.backends.tensorrt import parse_version, shared_logger

    logger = shared_logger(trt, verbose=cfg.verbose)
    builder = trt.Builder(logger)
    flags = 0
    if plan.strongly_typed and parse_version(trt.__version__) < (11, 0, 0):
        # TensorRT 11: always strongly typed, the flag deprecated and ignored.
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)  # trt-api: 10
    network = builder.create_network(flags)
    if network is None:
        raise FcnError("TensorRT could not create a network definition (see its log above)")
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(cfg.onnx)):
        n = parser.num_errors
        for i in range(n):
            echo(f"parser error {i + 1}/{n}: {format_parser_error(parser.get_error(i))}")
        raise FcnError(f"TensorRT could not parse {cfg.onnx}: {n} error(s), listed above")
    names = [network.get_input(i).name for i in range(network.num_inputs)]
    if names != [input_name]:
        raise FcnError(f"TensorRT sees inputs {names}; expected just {input_name!r}")

    config = builder.create_builder_config()
    if config is None:
        raise FcnError("TensorRT could not create a builder config (see its log above)")
    if cfg.workspace_mb is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(cfg.workspace_mb) << 20)
    if plan.fp16_flag:
        config.set_flag(trt.BuilderFlag.FP16)  # trt-api: 10 (precision_plan refuses --fp16 on 11)
    if cfg.version_compatible:
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
    if cfg.hardware_compat != "none":
        config.hardware_compatibility_level = getattr(trt.HardwareCompatibilityLevel, HARDWARE_COMPAT[cfg.hardware_compat])
    profile = builder.create_optimization_profile()
    if profile is None:
        raise FcnError("TensorRT could not create an optimization profile (see its log above)")
    profile.set_shape(input_name, cfg.profile.min, cfg.profile.opt, cfg.profile.max)
    if config.add_optimization_profile(profile) < 0:
        raise FcnError(f"TensorRT rejected the optimization profile ({cfg.profile.describe()})")
    cache = None
    if cfg.timing_cache is not None:
        old = cfg.timing_cache.read_bytes() if cfg.timing_cache.is_file() else b""
        cache = config.create_timing_cache(old)  # None when the blob is corrupt
        if cache is None or not config.set_timing_cache(cache, False):
            log.warning("timing cache %s is unreadable or does not match this TensorRT/GPU; starting a new one", cfg.timing_cache)
            cache = config.create_timing_cache(b"")
            if cache is None or not config.set_timing_cache(cache, True):
                raise FcnError("TensorRT could not create an empty timing cache (out of memory?)")
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise FcnError(
            "TensorRT failed to build the engine (its log above says why; common causes: an unsupported "
            "layer, too little workspace (--workspace), a profile too large for GPU memory)"
        )
    cache_bytes = None
    if cfg.timing_cache is not None:
        cache_bytes = bytes(memoryview(config.get_timing_cache().serialize()))
    return bytes(memoryview(serialized)), cache_bytes


def _main(argv=None) -> int:
    args = _parser().parse_args(argv)
    cfg = config_from_args(args)
    header, info = read_model(cfg.onnx)
    check_profile_against_input(cfg.profile, header.inputs[0])
    from fcn_deploy.backends.tensorrt import import_tensorrt, parse_version

    trt = import_tensorrt()
    version = str(trt.__version__)
    plan = precision_plan(parse_version(version), info.precision, cfg.fp16)
    print(f"TensorRT {version}: {plan.message}")
    print(f"profile {cfg.profile.describe()}")
    t0 = time.perf_counter()
    engine, cache_bytes = build_engine(trt, cfg, header.inputs[0].name, plan)
    seconds = time.perf_counter() - t0
    gpu, cc = gpu_identity()
    sc = make_sidecar(cfg, header, info, plan, trt_version=version, gpu=gpu, build_seconds=seconds,
                      onnx_sha256=sha256_file(cfg.onnx), plan_sha256=hashlib.sha256(engine).hexdigest(),
                      compute_capability=cc)
    # Both files or neither: the sidecar is renamed first, then the plan (its hash ties them).
    with atomic_path(cfg.plan) as tmp_plan, atomic_path(sidecar_path(cfg.plan)) as tmp_side:
        tmp_plan.write_bytes(engine)
        tmp_side.write_text(sc.to_json(), encoding="utf-8")
    if cache_bytes is not None:
        atomic_write_bytes(cfg.timing_cache, cache_bytes)
        print(f"timing cache: {cfg.timing_cache} ({len(cache_bytes) / 1024:.0f} KiB)")
    sm = " (sm_" + cc.replace(".", "") + ")" if cc else ""
    print(f"built {cfg.plan} ({len(engine) / 2**20:.1f} MiB) in {seconds:.1f} s with TensorRT {version} on {gpu}{sm}; "
          f"precision {plan.precision}; sidecar {sidecar_path(cfg.plan)}")
    return 0


def main(argv=None) -> int:
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
