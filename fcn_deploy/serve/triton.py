"""``fcn-serve triton``: a Triton Inference Server model repository for fcn-deploy models.

::

    fcn-serve triton fcn8s.onnx --repo models/ [--name fcn8s] [--kind gpu|cpu] [--max-batch 4]
                     [--instances 1] [--dynamic-batching] [--warmup] [--ensemble [--colorized]]
    fcn-serve triton fcn8s.sm86.plan fcn8s.sm90.plan --repo models/     # one plan per GPU type

writes (atomically: staged in a hidden folder, checked, then renamed into place)::

    models/fcn8s/config.pbtxt
    models/fcn8s/labels.txt                 # class names, one per line (label_filename)
    models/fcn8s/1/model.onnx | model.plan  # or model.<cc>.plan per compute capability

and with ``--ensemble`` also ``fcn8s_preprocess`` / ``fcn8s_postprocess`` (Python backend,
``1/model.py`` + ``1/fcn_model.json``) and ``fcn8s_ensemble`` (``platform: "ensemble"``): a
client sends encoded images (``IMAGE``, BYTES) and gets ``LABELS`` (and ``COLORIZED``).

What the config holds, field by field (Triton's ``model_config.proto``; the ONNX Runtime
backend's README for the accelerator keys):

- ``platform``: ``onnxruntime_onnx`` or ``tensorrt_plan``; ``max_batch_size`` with ``dims``
  without the batch axis, ``-1`` for dynamic height/width; data types from the model file
  (``TYPE_FP16`` for fp16 I/O, ``TYPE_INT32`` for ``--output labels`` exports). A model whose
  batch axis is fixed gets ``max_batch_size: 0`` and full dims (Triton's ONNX Runtime backend
  requires a ``-1`` first axis to batch).
- ONNX on ``--kind gpu``: the ``tensorrt`` GPU execution accelerator with ``precision_mode``
  from the model's precision (fp32 -> FP32, fp16 -> FP16, int8 QDQ -> INT8), an engine cache,
  and ``trt_profile_min/opt/max_shapes`` for the model's real input name (fixed axes from the
  model, dynamic ones from ``--min/--opt/--max``). On ``--kind cpu``: the ``openvino`` CPU
  execution accelerator (``--no-openvino`` to leave ONNX Runtime's CPU provider alone).
- ``instance_group``: ``--instances`` instances of ``KIND_GPU`` / ``KIND_CPU``.
- ``dynamic_batching``: Triton batches only requests whose inputs have the same shape, so
  images of different sizes never share a batch (resize on the client, or send one size).
- ``model_warmup`` at the profile's opt shape (plans) or ``--opt`` (ONNX).
- plans: ``max_batch_size`` must not exceed the profile's max batch (a config asking for more
  than the engine allows fails at load time in Triton; refused here); several plans go in
  ``cc_model_filenames`` keyed by the compute capability recorded in their sidecars (or
  ``--cc PLAN=8.6``).
- ``parameters { key: "fcn_deploy.model_info" }``: the model's class names, palette and
  normalization as JSON, which the client (``fcn-predict --server``) reads from the config.

TensorRT plans and the TensorRT accelerator run only on NVIDIA GPUs: those configs are checked
here against Triton's schema and the model files, and are unverified on hardware.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from fcn_deploy.errors import FcnError
from fcn_deploy.serve import pbtxt
from fcn_deploy.serve.model_files import ServedModel, TensorIO, describe_model
from fcn_deploy.serve.pbtxt import Comment, Enum, Map
from fcn_deploy.serve.pipeline import COLORIZED, DESCRIPTION_FILE, IMAGE, IMAGE_HW, LABELS
from fcn_deploy.shapes import Profile, format_shape, parse_shape

log = logging.getLogger(__name__)

MODEL_INFO_PARAM = "fcn_deploy.model_info"
LABELS_FILE = "labels.txt"
PRECISION_MODES = {"fp32": "FP32", "fp16": "FP16", "int8": "INT8", "bf16": "BF16"}
DEFAULT_MIN = (1, 3, 64, 64)
DEFAULT_OPT = (1, 3, 360, 480)
DEFAULT_MAX_HW = (1088, 1920)
DEFAULT_ONNX_MAX_BATCH = 4
DEFAULT_TRT_CACHE = "/tmp/fcn_deploy_trt_cache"
DYNAMIC_BATCHING_NOTE = (
    "Triton's dynamic batcher groups only requests whose inputs have the same shape:\n"
    "images of different sizes run in separate batches (resize on the client to batch them)."
)


@dataclass
class RepoOptions:
    name: Optional[str] = None
    kind: str = "gpu"  # gpu | cpu
    max_batch: Optional[int] = None
    instances: int = 1
    dynamic_batching: bool = False
    max_queue_delay_us: int = 100
    warmup: bool = False
    ensemble: bool = False
    colorized: bool = False
    openvino: bool = True
    min_shape: Optional[Tuple[int, int, int, int]] = None
    opt_shape: Optional[Tuple[int, int, int, int]] = None
    max_shape: Optional[Tuple[int, int, int, int]] = None
    trt_cache: str = DEFAULT_TRT_CACHE
    cc: Dict[str, str] = field(default_factory=dict)  # plan path or name -> compute capability
    force: bool = False


def _valid_name(name: str) -> str:
    if not name or name.startswith(".") or any(c in name for c in "/\\ \t\n") or name in ("..",):
        raise FcnError(f"--name {name!r} is not a valid Triton model name (a folder name without '/', spaces or a leading '.')")
    return name


def _cc_key(cc: str, where: str) -> str:
    try:
        major, minor = str(cc).strip().split(".")
        return f"{int(major)}.{int(minor)}"
    except ValueError:
        raise FcnError(f"{where}: compute capability {cc!r} is not MAJOR.MINOR (e.g. 8.6)") from None


def _dims(shape: Sequence[int], batched: bool) -> List[int]:
    return [int(d) for d in (shape[1:] if batched else shape)]


def _profile_for_onnx(m: ServedModel, opts: RepoOptions, max_batch: int) -> Profile:
    """Min/opt/max for the TensorRT accelerator and warmup: the model's fixed axes, the options
    (or defaults) on dynamic ones."""
    shape = m.input.shape
    mx_default = (max(max_batch, 1), 3) + DEFAULT_MAX_HW
    chosen = []
    for name, given, default in (("min", opts.min_shape, DEFAULT_MIN), ("opt", opts.opt_shape, DEFAULT_OPT),
                                 ("max", opts.max_shape, mx_default)):
        dims = list(given or default)
        for i, d in enumerate(shape):
            if d != -1:
                if given is not None and given[i] != d:
                    raise FcnError(f"--{name} {format_shape(given)}: axis {'NCHW'[i]} of {m.path.name}'s input is fixed at {d}")
                dims[i] = d
        chosen.append(tuple(dims))
    prof = Profile(*chosen)
    if max_batch and prof.max[0] < max_batch:
        raise FcnError(f"--max {format_shape(prof.max)} allows batch {prof.max[0]}, less than max_batch_size {max_batch}")
    return prof


def _trt_accelerator(m: ServedModel, prof: Profile, opts: RepoOptions, name: str) -> dict:
    prec = PRECISION_MODES.get(m.precision)
    if prec is None:
        raise FcnError(f"{m.path}: precision {m.precision!r} has no TensorRT precision_mode")
    inp = m.input.name
    params = Map([
        ("precision_mode", prec),
        ("trt_engine_cache_enable", "1"),
        ("trt_engine_cache_path", f"{opts.trt_cache.rstrip('/')}/{name}"),
        ("trt_profile_min_shapes", f"{inp}:{'x'.join(map(str, prof.min))}"),
        ("trt_profile_opt_shapes", f"{inp}:{'x'.join(map(str, prof.opt))}"),
        ("trt_profile_max_shapes", f"{inp}:{'x'.join(map(str, prof.max))}"),
    ])
    return {"name": "tensorrt", "parameters": params}


def _io_entry(t: TensorIO, batched: bool, *, label_file: bool = False) -> dict:
    d = {"name": t.name, "data_type": Enum(t.triton_type), "dims": _dims(t.shape, batched)}
    if label_file:
        d["label_filename"] = LABELS_FILE
    return d


def _warmup(m: ServedModel, prof: Profile, batched: bool) -> list:
    opt = prof.opt
    return [{
        "name": "opt_shape",
        "batch_size": int(opt[0]) if batched else 1,
        "inputs": Map([(m.input.name, {"data_type": Enum(m.input.triton_type),
                                       "dims": [int(d) for d in (opt[1:] if batched else opt)],
                                       "random_data": True})]),
        "count": 1,
    }]


def _max_batch(models: Sequence[ServedModel], opts: RepoOptions) -> int:
    m = models[0]
    if not m.batch_dynamic:
        if opts.max_batch not in (None, 0):
            raise FcnError(f"{m.path}: its batch axis is fixed at {m.input.shape[0]}, so Triton cannot batch it "
                           "(max_batch_size must be 0); re-export with a dynamic batch axis, or drop --max-batch")
        return 0
    if m.kind == "plan":
        limit = min(p.profile.max[0] for p in models)
        mb = limit if opts.max_batch is None else opts.max_batch
        for p in models:
            if mb > p.profile.max[0]:
                raise FcnError(f"--max-batch {mb} is above {p.path.name}'s profile (max batch {p.profile.max[0]}, "
                               f"{p.profile.describe()}): Triton would refuse to load it; rebuild the plan with a larger --max batch")
            if p.profile.min[0] > 1:
                log.warning("%s: the profile's min batch is %d; Triton requests with fewer images will fail",
                            p.path.name, p.profile.min[0])
        return mb
    mb = DEFAULT_ONNX_MAX_BATCH if opts.max_batch is None else opts.max_batch
    return mb


def model_config(models: Sequence[ServedModel], opts: RepoOptions, name: str, plan_files: Optional[Dict[str, str]] = None) -> dict:
    """The config.pbtxt content (as a pbtxt-writer dict) for one model or several plans."""
    m = models[0]
    max_batch = _max_batch(models, opts)
    if max_batch < 0:
        raise FcnError(f"--max-batch must be >= 0, got {max_batch}")
    batched = max_batch > 0
    if opts.dynamic_batching and not batched:
        raise FcnError("--dynamic-batching needs a model that batches (max_batch_size > 0)")
    scores = m.info.output in ("logits", "probs")
    cfg: dict = {
        "name": name,
        "platform": "tensorrt_plan" if m.kind == "plan" else "onnxruntime_onnx",
        "max_batch_size": max_batch,
        "input": [_io_entry(m.input, batched)],
        "output": [_io_entry(m.output, batched, label_file=scores)],
    }
    if m.kind == "plan":
        if opts.kind != "gpu":
            raise FcnError("a TensorRT plan runs on a GPU only: --kind cpu is not possible with a .plan")
        prof = m.profile
        cfg["instance_group"] = [{"count": opts.instances, "kind": Enum("KIND_GPU")}]
        if plan_files and len(plan_files) > 1:
            cfg["cc_model_filenames"] = Map(sorted(plan_files.items()))
    else:
        prof = _profile_for_onnx(m, opts, max_batch)
        if opts.kind == "gpu":
            cfg["instance_group"] = [{"count": opts.instances, "kind": Enum("KIND_GPU")}]
            cfg["optimization"] = {"execution_accelerators": {"gpu_execution_accelerator": [_trt_accelerator(m, prof, opts, name)]}}
        else:
            cfg["instance_group"] = [{"count": opts.instances, "kind": Enum("KIND_CPU")}]
            if opts.openvino:
                cfg["optimization"] = {"execution_accelerators": {"cpu_execution_accelerator": [{"name": "openvino"}]}}
    if opts.dynamic_batching:
        cfg["_note"] = Comment(DYNAMIC_BATCHING_NOTE)
        cfg["dynamic_batching"] = {"max_queue_delay_microseconds": int(opts.max_queue_delay_us)}
    if opts.warmup:
        cfg["model_warmup"] = _warmup(m, prof, batched)
    cfg["parameters"] = Map([(MODEL_INFO_PARAM, {"string_value": json.dumps(m.info.to_dict(), sort_keys=True)})])
    return cfg


# -- the ensemble -------------------------------------------------------------------------------

def ensemble_configs(m: ServedModel, name: str, max_batch: int, opts: RepoOptions) -> Dict[str, dict]:
    if max_batch < 1:
        raise FcnError(f"{m.path}: --ensemble needs a model that batches (a dynamic batch axis, max_batch_size >= 1)")
    label_type = "TYPE_UINT8" if m.info.num_classes <= 256 else "TYPE_INT32"
    pre, post, ens = f"{name}_preprocess", f"{name}_postprocess", f"{name}_ensemble"
    in_dims = _dims(m.input.shape, True)
    out_dims = _dims(m.output.shape, True)
    kind = Enum("KIND_CPU")
    outputs = [{"name": LABELS, "data_type": Enum(label_type), "dims": [-1, -1]}]
    if opts.colorized:
        outputs.append({"name": COLORIZED, "data_type": Enum("TYPE_UINT8"), "dims": [-1, -1, 3]})
    note = Comment("Python backend: model.py calls fcn_deploy.serve.pipeline (pip install fcn-deploy in the container).")
    pre_cfg = {
        "_note": note, "name": pre, "backend": "python", "max_batch_size": max_batch,
        "input": [{"name": IMAGE, "data_type": Enum("TYPE_STRING"), "dims": [1]}],
        "output": [{"name": m.input.name, "data_type": Enum(m.input.triton_type), "dims": in_dims},
                   {"name": IMAGE_HW, "data_type": Enum("TYPE_INT32"), "dims": [2]}],
        "instance_group": [{"count": opts.instances, "kind": kind}],
    }
    post_cfg = {
        "_note": note, "name": post, "backend": "python", "max_batch_size": max_batch,
        "input": [{"name": m.output.name, "data_type": Enum(m.output.triton_type), "dims": out_dims},
                  {"name": IMAGE_HW, "data_type": Enum("TYPE_INT32"), "dims": [2]}],
        "output": outputs,
        "instance_group": [{"count": opts.instances, "kind": kind}],
    }
    out_map = [(LABELS, LABELS)] + ([(COLORIZED, COLORIZED)] if opts.colorized else [])
    ens_cfg = {
        "name": ens, "platform": "ensemble", "max_batch_size": max_batch,
        "input": [{"name": IMAGE, "data_type": Enum("TYPE_STRING"), "dims": [1]}],
        "output": [dict(o) for o in outputs],
        "ensemble_scheduling": {"step": [
            {"model_name": pre, "model_version": -1,
             "input_map": Map([(IMAGE, IMAGE)]),
             "output_map": Map([(m.input.name, "preprocessed"), (IMAGE_HW, "image_hw")])},
            {"model_name": name, "model_version": -1,
             "input_map": Map([(m.input.name, "preprocessed")]),
             "output_map": Map([(m.output.name, "scores")])},
            {"model_name": post, "model_version": -1,
             "input_map": Map([(m.output.name, "scores"), (IMAGE_HW, "image_hw")]),
             "output_map": Map(out_map)},
        ]},
        "parameters": Map([(MODEL_INFO_PARAM, {"string_value": json.dumps(m.info.to_dict(), sort_keys=True)})]),
    }
    if opts.colorized:
        ens_cfg["output"][1]["_c"] = Comment("COLORIZED: the label map in the model's palette")
    return {pre: pre_cfg, post: post_cfg, ens: ens_cfg}


# -- writing -------------------------------------------------------------------------------------

def _plan_files(models: Sequence[ServedModel], opts: RepoOptions) -> Dict[str, Tuple[str, ServedModel]]:
    """compute capability -> (file name in the version folder, plan), for several plans."""
    out: Dict[str, Tuple[str, ServedModel]] = {}
    for p in models:
        cc = opts.cc.get(str(p.path)) or opts.cc.get(p.path.name) or p.compute_capability
        if not cc:
            raise FcnError(f"{p.path}.json records no compute capability (builder.compute_capability); "
                           f"pass --cc {p.path.name}=MAJOR.MINOR (the GPU it was built on, e.g. 8.6)")
        key = _cc_key(cc, str(p.path))
        if key in out:
            raise FcnError(f"two plans for compute capability {key}: {out[key][1].path.name} and {p.path.name}")
        out[key] = (f"model.sm{key.replace('.', '')}.plan", p)
    return out


def _check_same_model(models: Sequence[ServedModel]) -> None:
    m = models[0]
    for p in models[1:]:
        if p.kind != "plan" or m.kind != "plan":
            raise FcnError("several model files are for TensorRT plans of one model built on different GPUs; "
                           f"got {', '.join(x.path.name for x in models)}")
        for what in ("info", "input", "output"):
            if getattr(p, what) != getattr(m, what):
                raise FcnError(f"{p.path.name} and {m.path.name} differ in their {what.replace('info', 'model metadata')}: "
                               "cc_model_filenames needs the same model built for different GPUs")


def _copy(src: Path, dst: Path) -> None:
    try:
        shutil.copyfile(src, dst)
    except OSError as e:
        raise FcnError(f"cannot copy {src} to {dst}: {e.strerror or type(e).__name__}") from None


def stage_repository(models: Sequence[ServedModel], stage: Path, opts: RepoOptions) -> List[str]:
    """Write the model folders into ``stage``; returns their names."""
    from fcn_deploy.serve.python_models import POSTPROCESS, PREPROCESS

    m = models[0]
    name = _valid_name(opts.name or m.path.stem.split(".")[0])
    _check_same_model(models)
    if opts.instances < 1:
        raise FcnError(f"--instances must be >= 1, got {opts.instances}")
    plan_files = _plan_files(models, opts) if m.kind == "plan" and len(models) > 1 else None
    cfg = model_config(models, opts, name, {k: v[0] for k, v in plan_files.items()} if plan_files else None)
    written = {name: cfg}
    if opts.ensemble:
        written.update(ensemble_configs(m, name, cfg["max_batch_size"], opts))
    for mname in written:
        (stage / mname / "1").mkdir(parents=True)
    for mname, c in written.items():
        (stage / mname / "config.pbtxt").write_text(pbtxt.dumps(c), encoding="utf-8")
    (stage / name / LABELS_FILE).write_text("".join(f"{c}\n" for c in m.info.class_names), encoding="utf-8")
    vdir = stage / name / "1"
    if m.kind == "onnx":
        _copy(m.path, vdir / "model.onnx")
    elif plan_files:
        for fname, p in plan_files.values():
            _copy(p.path, vdir / fname)
            _copy(Path(f"{p.path}.json"), vdir / f"{fname}.json")
    else:
        _copy(m.path, vdir / "model.plan")
        _copy(Path(f"{m.path}.json"), vdir / "model.plan.json")
    if opts.ensemble:
        desc = json.dumps(m.description(), indent=2) + "\n"
        for mname, src in ((f"{name}_preprocess", PREPROCESS), (f"{name}_postprocess", POSTPROCESS)):
            _copy(src, stage / mname / "1" / "model.py")
            (stage / mname / "1" / DESCRIPTION_FILE).write_text(desc, encoding="utf-8")
    return list(written)


def write_repository(paths: Sequence, repo, opts: RepoOptions) -> List[Path]:
    """Describe the models, stage the repository folders, check them with
    :func:`fcn_deploy.serve.check.check_repository`, then move them into ``repo``."""
    from fcn_deploy.serve.check import check_repository

    if not paths:
        raise FcnError("no model files given")
    models = []
    for p in paths:
        p = Path(p)
        models.append(describe_model(p, compute_capability=opts.cc.get(str(p)) or opts.cc.get(p.name)))
    repo = Path(repo)
    if repo.exists() and not repo.is_dir():
        raise FcnError(f"--repo {repo} exists and is not a folder")
    try:
        repo.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise FcnError(f"cannot create --repo {repo}: {e.strerror or type(e).__name__}") from None
    stage = repo / f".fcn-serve.{secrets.token_hex(4)}.tmp"
    try:
        try:
            stage.mkdir()
        except OSError as e:
            raise FcnError(f"cannot write into --repo {repo}: {e.strerror or type(e).__name__}") from None
        try:
            names = stage_repository(models, stage, opts)
        except OSError as e:
            raise FcnError(f"cannot write into --repo {repo}: {e.strerror or type(e).__name__}") from None
        problems = check_repository(stage, display_root=repo)
        if problems:
            raise FcnError(f"the repository fcn-serve wrote does not pass its check (a bug, please report): {problems[0]}")
        existing = [n for n in names if (repo / n).exists()]
        if existing and not opts.force:
            raise FcnError(f"{repo / existing[0]} already exists; pass --force to replace "
                           f"{'it' if len(existing) == 1 else 'them'} ({', '.join(existing)})")
        out = []
        for n in names:
            dst = repo / n
            old = None
            if dst.exists():
                old = repo / f".{n}.{secrets.token_hex(4)}.old"
                os.replace(dst, old)
            os.replace(stage / n, dst)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
            out.append(dst)
        return out
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def parse_cc_options(values: Sequence[str]) -> Dict[str, str]:
    out = {}
    for v in values or ():
        if "=" not in v:
            raise FcnError(f"--cc {v!r}: expected PLAN=MAJOR.MINOR (e.g. fcn8s.plan=8.6)")
        k, cc = v.split("=", 1)
        out[k] = _cc_key(cc, f"--cc {v}")
    return out


def parse_shape_option(text: Optional[str], what: str):
    """An optional shape flag's value (fcn-serve triton now parses with the CLI kit's shape type;
    this stays for code that imports it)."""
    return parse_shape(text, what=what) if text else None
