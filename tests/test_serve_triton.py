"""fcn-serve triton / fcn-serve check: repositories for fp32 (GPU and CPU kinds), fp16 I/O,
int8 QDQ, labels-output ONNX, TensorRT plans + sidecars (one, and several keyed by compute
capability) and the ensemble; each passes the check and parses with Triton's own
model_config_pb2; bad configs give one line naming file and field. Triton itself cannot run
here (it ships as a container), so what Triton would load is pinned by its schema and by the
ONNX Runtime backend's own rules (dims comparison, accelerator keys) that check.py mirrors."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tritonclient")

from fcn_deploy.serve.check import check_repository, model_config_pb2, parse_config_text
from fcn_deploy.serve.cli import main
from serve_models import make_onnx, make_plan


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("serve_models")
    out = {}
    for kind in ("fp32", "fp16io", "int8", "labels"):
        make_onnx(d / f"{kind}.onnx", kind)
        out[kind] = d / f"{kind}.onnx"
    return out


def _cfg(repo, name):
    return parse_config_text((Path(repo) / name / "config.pbtxt").read_text())


def _write(args, capsys=None):
    rc = main(["triton", *map(str, args)])
    return rc


def test_model_config_pb2_is_tritons_own():
    pb2 = model_config_pb2()
    assert pb2.DESCRIPTOR.package == "inference" and "model_config.proto" in pb2.DESCRIPTOR.name
    assert "cc_model_filenames" in pb2.ModelConfig.DESCRIPTOR.fields_by_name
    with pytest.raises(Exception, match="max_batch"):
        parse_config_text('name: "x"\nmax_batch: 4\n')


def test_fp32_gpu_repository(models, tmp_path, capsys):
    repo = tmp_path / "repo"
    assert _write([models["fp32"], "--repo", repo, "--name", "seg", "--warmup", "--dynamic-batching",
                   "--instances", "2", "--max-batch", "8"]) == 0
    assert "checked against Triton's ModelConfig: OK" in capsys.readouterr().out
    cfg = _cfg(repo, "seg")
    pb2 = model_config_pb2()
    assert cfg.platform == "onnxruntime_onnx" and cfg.max_batch_size == 8
    assert cfg.input[0].name == "input" and cfg.input[0].data_type == pb2.TYPE_FP32 and list(cfg.input[0].dims) == [3, -1, -1]
    assert cfg.output[0].name == "logits" and list(cfg.output[0].dims) == [5, -1, -1]
    assert cfg.output[0].label_filename == "labels.txt"
    assert (repo / "seg" / "labels.txt").read_text().splitlines() == [f"class{i}" for i in range(5)]
    assert (repo / "seg" / "1" / "model.onnx").read_bytes() == models["fp32"].read_bytes()
    assert cfg.instance_group[0].kind == pb2.ModelInstanceGroup.KIND_GPU and cfg.instance_group[0].count == 2
    trt = cfg.optimization.execution_accelerators.gpu_execution_accelerator[0]
    assert trt.name == "tensorrt"
    assert trt.parameters["precision_mode"] == "FP32" and trt.parameters["trt_engine_cache_enable"] == "1"
    assert trt.parameters["trt_profile_min_shapes"] == "input:1x3x64x64"
    assert trt.parameters["trt_profile_opt_shapes"] == "input:1x3x360x480"
    assert trt.parameters["trt_profile_max_shapes"] == "input:8x3x1088x1920"
    assert cfg.HasField("dynamic_batching")
    text = (repo / "seg" / "config.pbtxt").read_text()
    assert "only requests whose inputs have the same shape" in text
    w = cfg.model_warmup[0]
    assert w.batch_size == 1 and list(w.inputs["input"].dims) == [3, 360, 480] and w.inputs["input"].random_data
    info = json.loads(cfg.parameters["fcn_deploy.model_info"].string_value)
    assert info["num_classes"] == 5 and info["class_names"][4] == "class4"
    assert check_repository(repo) == []
    assert main(["check", str(repo)]) == 0


def test_cpu_kind_openvino_and_other_precisions(models, tmp_path):
    repo = tmp_path / "repo"
    pb2 = model_config_pb2()
    assert _write([models["fp32"], "--repo", repo, "--name", "cpu", "--kind", "cpu"]) == 0
    cfg = _cfg(repo, "cpu")
    assert cfg.instance_group[0].kind == pb2.ModelInstanceGroup.KIND_CPU
    assert [a.name for a in cfg.optimization.execution_accelerators.cpu_execution_accelerator] == ["openvino"]
    assert not len(cfg.optimization.execution_accelerators.gpu_execution_accelerator)
    assert _write([models["fp32"], "--repo", repo, "--name", "cpu_plain", "--kind", "cpu", "--no-openvino"]) == 0
    assert not _cfg(repo, "cpu_plain").HasField("optimization")
    # fp16 I/O: TYPE_FP16 both ways, TensorRT FP16; int8 QDQ: INT8; labels: TYPE_INT32 [-1, -1], no label file.
    assert _write([models["fp16io"], "--repo", repo, "--name", "half"]) == 0
    cfg = _cfg(repo, "half")
    assert cfg.input[0].data_type == pb2.TYPE_FP16 and cfg.output[0].data_type == pb2.TYPE_FP16
    assert cfg.optimization.execution_accelerators.gpu_execution_accelerator[0].parameters["precision_mode"] == "FP16"
    assert _write([models["int8"], "--repo", repo, "--name", "q"]) == 0
    assert _cfg(repo, "q").optimization.execution_accelerators.gpu_execution_accelerator[0].parameters["precision_mode"] == "INT8"
    assert _write([models["labels"], "--repo", repo, "--name", "lab"]) == 0
    cfg = _cfg(repo, "lab")
    assert cfg.output[0].name == "labels" and cfg.output[0].data_type == pb2.TYPE_INT32 and list(cfg.output[0].dims) == [-1, -1]
    assert cfg.output[0].label_filename == ""
    assert check_repository(repo) == []


def test_plans_with_sidecars(models, tmp_path, monkeypatch, capsys):
    pb2 = model_config_pb2()
    plan = make_plan(tmp_path, monkeypatch, models["fp16io"], "a.plan", cc="8.6")
    side = json.loads(Path(f"{plan}.json").read_text())
    assert side["builder"]["compute_capability"] == "8.6"
    assert side["builder"]["io"]["input"] == {"name": "input", "dtype": "float16", "shape": [-1, 3, -1, -1]}
    repo = tmp_path / "repo"
    assert _write([plan, "--repo", repo, "--name", "eng", "--warmup"]) == 0
    cfg = _cfg(repo, "eng")
    assert cfg.platform == "tensorrt_plan" and cfg.max_batch_size == 4  # the profile's max batch
    assert cfg.input[0].data_type == pb2.TYPE_FP16 and list(cfg.input[0].dims) == [3, -1, -1]
    assert list(cfg.model_warmup[0].inputs["input"].dims) == [3, 64, 80]  # the profile's opt shape
    assert (repo / "eng" / "1" / "model.plan").is_file() and (repo / "eng" / "1" / "model.plan.json").is_file()
    # max_batch_size above the profile is refused, before anything is written.
    assert _write([plan, "--repo", repo, "--name", "big", "--max-batch", "8"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--max-batch 8 is above a.plan's profile (max batch 4" in err
    assert not (repo / "big").exists()
    # Two plans, one per compute capability.
    plan2 = make_plan(tmp_path, monkeypatch, models["fp16io"], "b.plan", cc="9.0")
    assert _write([plan, plan2, "--repo", repo, "--name", "multi"]) == 0
    cfg = _cfg(repo, "multi")
    assert dict(cfg.cc_model_filenames) == {"8.6": "model.sm86.plan", "9.0": "model.sm90.plan"}
    assert sorted(p.name for p in (repo / "multi" / "1").glob("*.plan")) == ["model.sm86.plan", "model.sm90.plan"]
    assert check_repository(repo) == []
    # A sidecar without a compute capability needs --cc.
    plan3 = make_plan(tmp_path, monkeypatch, models["fp16io"], "c.plan", cc=None)
    assert _write([plan, plan3, "--repo", repo, "--name", "m2"]) == 2
    assert "pass --cc c.plan=MAJOR.MINOR" in capsys.readouterr().err
    assert _write([plan, plan3, "--repo", repo, "--name", "m2", "--cc", "c.plan=7.5"]) == 0
    assert dict(_cfg(repo, "m2").cc_model_filenames) == {"7.5": "model.sm75.plan", "8.6": "model.sm86.plan"}
    assert _write([plan, "--repo", repo, "--name", "cpuplan", "--kind", "cpu"]) == 2


def test_ensemble_repository(models, tmp_path):
    repo = tmp_path / "repo"
    pb2 = model_config_pb2()
    assert _write([models["fp32"], "--repo", repo, "--name", "seg", "--ensemble", "--colorized"]) == 0
    assert sorted(p.name for p in repo.iterdir()) == ["seg", "seg_ensemble", "seg_postprocess", "seg_preprocess"]
    ens = _cfg(repo, "seg_ensemble")
    assert ens.platform == "ensemble" and ens.input[0].data_type == pb2.TYPE_STRING
    assert [o.name for o in ens.output] == ["LABELS", "COLORIZED"] and ens.output[0].data_type == pb2.TYPE_UINT8
    assert [s.model_name for s in ens.ensemble_scheduling.step] == ["seg_preprocess", "seg", "seg_postprocess"]
    pre = _cfg(repo, "seg_preprocess")
    assert pre.backend == "python" and [o.name for o in pre.output] == ["input", "IMAGE_HW"]
    assert "from fcn_deploy.serve.pipeline import" in (repo / "seg_preprocess" / "1" / "model.py").read_text()
    assert check_repository(repo) == []
    # A labels model's ensemble feeds int32 labels to postprocess.
    assert _write([models["labels"], "--repo", repo, "--name", "lab", "--ensemble"]) == 0
    assert _cfg(repo, "lab_postprocess").input[0].data_type == pb2.TYPE_INT32
    assert check_repository(repo) == []


def test_existing_folder_needs_force(models, tmp_path, capsys):
    repo = tmp_path / "repo"
    assert _write([models["fp32"], "--repo", repo, "--name", "seg"]) == 0
    before = (repo / "seg" / "config.pbtxt").read_text()
    assert _write([models["fp32"], "--repo", repo, "--name", "seg", "--kind", "cpu"]) == 2
    assert "already exists; pass --force" in capsys.readouterr().err
    assert (repo / "seg" / "config.pbtxt").read_text() == before
    assert _write([models["fp32"], "--repo", repo, "--name", "seg", "--kind", "cpu", "--force"]) == 0
    assert "KIND_CPU" in (repo / "seg" / "config.pbtxt").read_text()
    assert [p.name for p in repo.iterdir()] == ["seg"]  # no staging left behind


# -- bad repositories: one line naming file and field ------------------------------------------

@pytest.fixture
def repo(models, tmp_path, monkeypatch):
    r = tmp_path / "repo"
    assert _write([models["fp32"], "--repo", r, "--name", "seg", "--warmup"]) == 0
    plan = make_plan(tmp_path, monkeypatch, models["fp32"], "p.plan")
    assert _write([plan, "--repo", r, "--name", "eng"]) == 0
    return r


def _edit(path, old, new):
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))


@pytest.mark.parametrize("model,old,new,words", [
    ("seg", "max_batch_size: 4", "max_batch: 4", ['seg/config.pbtxt:', 'no field named "max_batch"']),
    ("seg", "data_type: TYPE_FP32", "data_type: TYPE_FLOAT32", ["seg/config.pbtxt:", "TYPE_FLOAT32", "data_type"]),
    ("eng", "max_batch_size: 4", "max_batch_size: 16", ["eng/config.pbtxt: max_batch_size: 16 is above 1/model.plan's optimization profile (max batch 4"]),
    ("seg", "dims: [ 5, -1, -1 ]", "dims: [ 6, -1, -1 ]", ["seg/config.pbtxt: output[0].dims: [6, -1, -1] does not match 1/model.onnx's 'logits'"]),
    ("seg", "dims: [ 3, -1, -1 ]", "dims: [ 3, -1 ]", ["seg/config.pbtxt: input[0].dims: [3, -1]", "the model has 4 dimensions"]),
    ("seg", 'name: "tensorrt"', 'name: "tensorrtx"', ["gpu_execution_accelerator[0].name: unknown GPU execution accelerator 'tensorrtx'"]),
    ("seg", 'key: "trt_engine_cache_enable"', 'key: "trt_engine_cache"', ["parameters['trt_engine_cache']: unknown parameter"]),
    ("seg", '"input:1x3x64x64"', '"image:1x3x64x64"', ["trt_profile_min_shapes']: names 'image', which is not an input"]),
    ("seg", 'platform: "onnxruntime_onnx"', 'platform: "onnx"', ["seg/config.pbtxt: platform: unknown platform 'onnx'"]),
    ("seg", "data_type: TYPE_FP32\n    dims: [ 3, -1, -1 ]", "data_type: TYPE_FP16\n    dims: [ 3, -1, -1 ]",
     ["input[0].data_type: TYPE_FP16 but 1/model.onnx's 'input' is TYPE_FP32"]),
    ("seg", "dims: [ 3, 360, 480 ]", "dims: [ 4, 360, 480 ]", ["model_warmup[0].inputs['input'].dims: [4, 360, 480] does not fit"]),
])
def test_bad_configs(repo, capsys, model, old, new, words):
    _edit(repo / model / "config.pbtxt", old, new)
    assert main(["check", str(repo)]) == 1
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert 1 <= len(lines) <= 2, err  # a wrong input shape also makes the warmup shape wrong
    assert any(all(w in ln for w in words) for ln in lines), err


def test_missing_files(repo, capsys):
    (repo / "seg" / "1" / "model.onnx").unlink()
    (repo / "seg" / "labels.txt").unlink()
    assert main(["check", str(repo)]) == 1
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 2
    assert "seg/config.pbtxt: (model file): seg/1/model.onnx is missing" in lines[0]
    assert "output[0].label_filename: 'labels.txt' is not in seg/" in lines[1]


def test_plan_sidecar_mismatch(repo, capsys):
    (repo / "eng" / "1" / "model.plan").write_bytes(b"another engine")
    assert main(["check", str(repo)]) == 1
    err = capsys.readouterr().err
    assert "eng/1/model.plan" in err and "belongs to a different plan" in err


def test_missing_version_folder(repo, capsys):
    shutil.rmtree(repo / "seg" / "1")
    assert main(["check", str(repo)]) == 1
    assert "seg/config.pbtxt: (version folder): seg/ has no numeric version folder" in capsys.readouterr().err


def test_broken_ensemble(models, tmp_path, capsys):
    r = tmp_path / "repo"
    assert _write([models["fp32"], "--repo", r, "--name", "seg", "--ensemble"]) == 0
    _edit(r / "seg_ensemble" / "config.pbtxt", 'key: "IMAGE_HW"\n        value: "image_hw"\n      }\n    }',
          'key: "IMAGE_HW"\n        value: "image_size"\n      }\n    }')
    assert main(["check", str(r)]) == 1
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1 and "ensemble_scheduling.step[2].input_map['IMAGE_HW']: ensemble tensor 'image_hw' is neither" in lines[0]
    shutil.rmtree(r / "seg_postprocess")
    assert main(["check", str(r)]) == 1
    assert "step[2].model_name: 'seg_postprocess' is not a model in this repository" in capsys.readouterr().err


def test_usage_errors(models, tmp_path, capsys):
    assert main(["check", str(tmp_path / "nothing")]) == 2
    assert capsys.readouterr().err.startswith("error: ")
    assert _write([tmp_path / "x.onnx", "--repo", tmp_path / "r"]) == 2
    assert _write([models["fp32"], "--repo", tmp_path / "r", "--colorized"]) == 2
    assert _write([models["fp32"], models["fp32"], "--repo", tmp_path / "r"]) == 2
    (tmp_path / "junk.onnx").write_bytes(b"not onnx")
    assert _write([tmp_path / "junk.onnx", "--repo", tmp_path / "r"]) == 2
    err = capsys.readouterr().err
    assert all(ln.startswith("error: ") for ln in err.splitlines()) and len(err.splitlines()) == 4


def test_real_exports(tmp_path):
    """fcn-export's own files (ResNet-18 FCN-8s: fp32 logits, --output labels); fp16 I/O is
    covered by the tiny float16-I/O model above."""
    pytest.importorskip("torch")
    from export_models import trained_model
    from fcn_deploy.export.onnx_export import export_onnx

    r18 = trained_model("fcn8s", "resnet18", steps=2, hw=(48, 48))
    pb2 = model_config_pb2()
    repo = tmp_path / "repo"
    files = {
        "f32": export_onnx(r18, tmp_path / "f32.onnx", verify=False),
        "lab": export_onnx(r18, tmp_path / "lab.onnx", output_kind="labels", verify=False),
    }
    for name, f in files.items():
        assert _write([f, "--repo", repo, "--name", name, "--warmup", "--dynamic-batching"] + (["--ensemble"] if name == "f32" else [])) == 0
    c = _cfg(repo, "f32")
    assert list(c.input[0].dims) == [3, -1, -1] and list(c.output[0].dims) == [3, -1, -1] and c.output[0].name == "logits"
    c = _cfg(repo, "lab")
    assert c.output[0].name == "labels" and c.output[0].data_type == pb2.TYPE_INT32 and list(c.output[0].dims) == [-1, -1]
    assert check_repository(repo) == []


def test_fixed_shape_model(tmp_path, capsys):
    """A static export (batch 1, 32x40): max_batch_size 0 and full dims, as Triton's ONNX Runtime
    backend requires for a model without a -1 batch axis; batching options are refused."""
    from runtime_models import make_tiny_onnx, tiny_info

    m = tmp_path / "static.onnx"
    make_tiny_onnx(m, tiny_info(5), batch=1, hw=(32, 40))
    repo = tmp_path / "repo"
    assert _write([m, "--repo", repo, "--name", "st", "--warmup"]) == 0
    cfg = _cfg(repo, "st")
    assert cfg.max_batch_size == 0 and list(cfg.input[0].dims) == [1, 3, 32, 40] and list(cfg.output[0].dims) == [1, 5, 32, 40]
    trt = cfg.optimization.execution_accelerators.gpu_execution_accelerator[0].parameters
    assert trt["trt_profile_min_shapes"] == trt["trt_profile_max_shapes"] == "input:1x3x32x40"
    assert list(cfg.model_warmup[0].inputs["input"].dims) == [1, 3, 32, 40] and cfg.model_warmup[0].batch_size == 1
    assert check_repository(repo) == []
    for extra, words in ((["--max-batch", "2"], "batch axis is fixed at 1"), (["--dynamic-batching"], "needs a model that batches"),
                         (["--ensemble"], "--ensemble needs a model that batches"), (["--opt", "1x3x64x64"], "is fixed at 32")):
        assert _write([m, "--repo", repo, "--name", "st2", *extra]) == 2
        assert words in capsys.readouterr().err


def test_without_tritonclient_one_line(models, tmp_path, monkeypatch, capsys):
    import importlib.util

    from fcn_deploy.serve import check

    real = importlib.util.find_spec
    monkeypatch.setattr(check, "_PB2", None)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tritonclient" else real(name, *a))
    assert main(["check", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and 'tritonclient is not installed' in err and 'pip install "fcn-deploy[serve]"' in err
