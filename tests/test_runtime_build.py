"""fcn-build: argument and shape validation, the profile against the ONNX input, metadata,
the precision decision per TensorRT version, the sidecar, and the builder call sequence
against the strict stand-in of the ``tensorrt`` module (tests/trt_standin.py: names, enum
types and values from the real bindings; it raises on calls in the wrong order or with wrong
arguments, so these tests fail if the sequence is wrong). The real TensorRT build is
unverified on hardware (README, "GPU status")."""

import hashlib
import sys

import pytest

import trt_standin

from fcn_deploy.build import format_parser_error, main, precision_plan
from fcn_deploy.errors import FcnError
from fcn_deploy.modelinfo import ModelInfo
from fcn_deploy.onnx_info import read_onnx_header
from fcn_deploy.sidecar import read_sidecar, sidecar_path
from runtime_models import make_tiny_onnx, tiny_info

SHAPES = ["--min", "1x3x32x32", "--opt", "1x3x64x80", "--max", "4x3x128x160"]


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory):
    d = tmp_path_factory.mktemp("build")
    info = tiny_info(5)
    make_tiny_onnx(d / "tiny.onnx", info)
    return d / "tiny.onnx", info


# -- the strict stand-in of the tensorrt module (tests/trt_standin.py, from the real API manifest) --

@pytest.fixture
def fake_trt(monkeypatch):
    def install(version="10.13.0.35", *, parse_errors=(), build_ok=True):
        trt, _cuda = trt_standin.install(monkeypatch, version, parse_errors=parse_errors)
        if not build_ok:
            trt.fail.add("build_serialized_network")
        return trt

    return install


def _outputs(plan):
    return [p for p in (plan, sidecar_path(plan)) if p.exists()]


# -- the builder sequence ----------------------------------------------------------------------------

def test_build_strongly_typed_with_all_options(onnx_model, tmp_path, fake_trt, capsys):
    path, info = onnx_model
    trt = fake_trt("10.8.0.43")
    plan = tmp_path / "m.plan"
    cache = tmp_path / "timing.cache"
    rc = main([str(path), str(plan), *SHAPES, "--workspace", "512", "--timing-cache", str(cache),
               "--version-compatible", "--hardware-compat", "ampere+"])
    assert rc == 0
    assert trt.network._flags == 1 << 1  # STRONGLY_TYPED is member 1 of NetworkDefinitionCreationFlag
    assert trt.config.flags == 1 << 13  # BuilderFlag.VERSION_COMPATIBLE
    assert trt.config._pools == {"WORKSPACE": 512 << 20}
    assert trt.config.hardware_compatibility_level == trt.HardwareCompatibilityLevel.AMPERE_PLUS
    assert trt.config._profiles[0]._shapes == {"input": ((1, 3, 32, 32), (1, 3, 64, 80), (4, 3, 128, 160))}
    assert plan.read_bytes().startswith(trt_standin.PLAN_MAGIC)
    assert cache.read_bytes() == trt_standin.CACHE_MAGIC + b"+new"
    sc = read_sidecar(plan)
    assert sc.info == ModelInfo.from_metadata(read_onnx_header(path).metadata) == info
    assert sc.profile.opt == (1, 3, 64, 80) and sc.input_name == "input" and sc.output_names == ("logits",)
    assert sc.tensorrt_version == "10.8.0.43" and sc.precision == "fp32"
    assert sc.builder["strongly_typed"] is True and sc.builder["fp16_flag"] is False
    assert sc.builder["version_compatible"] is True and sc.builder["hardware_compat"] == "ampere+"
    assert sc.onnx_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert sc.plan_sha256 == hashlib.sha256(plan.read_bytes()).hexdigest()
    out = capsys.readouterr().out
    assert "strongly typed" in out and "built" in out and "TensorRT 10.8.0.43" in out and "MiB" in out
    # A second build reuses the saved timing cache.
    assert main([str(path), str(plan), *SHAPES, "--timing-cache", str(cache)]) == 0
    assert cache.read_bytes() == trt_standin.CACHE_MAGIC * 2 + b"+new+new"


def test_fp16_flag_on_trt10(onnx_model, tmp_path, fake_trt, capsys):
    path, _ = onnx_model
    trt = fake_trt("10.3.0")
    plan = tmp_path / "m.plan"
    assert main([str(path), str(plan), *SHAPES, "--fp16"]) == 0
    assert trt.network._flags == 0 and trt.config.flags == 1 << 0  # BuilderFlag.FP16 is 0
    sc = read_sidecar(plan)
    assert sc.precision == "fp32+fp16 (builder flag)" and sc.builder["fp16_flag"] is True
    assert "weakly typed with BuilderFlag.FP16" in capsys.readouterr().out


def test_fp16_flag_refused_on_trt11(onnx_model, tmp_path, fake_trt, capsys):
    path, _ = onnx_model
    fake_trt("11.1.0")
    plan = tmp_path / "m.plan"
    assert main([str(path), str(plan), *SHAPES, "--fp16"]) == 2
    assert "no FP16 builder flag" in capsys.readouterr().err
    assert _outputs(plan) == []
    # Without --fp16 TensorRT 11 builds strongly typed.
    assert main([str(path), str(plan), *SHAPES]) == 0


def test_parser_errors_listed_with_their_nodes(onnx_model, tmp_path, fake_trt, capsys):
    path, _ = onnx_model
    fake_trt(parse_errors=[(3, "/upscore8/ConvTranspose", "ConvTranspose", "unsupported kernel"),
                           (7, "ArgMax_260", "ArgMax", "no implementation")])
    plan = tmp_path / "m.plan"
    assert main([str(path), str(plan), *SHAPES]) == 2
    cap = capsys.readouterr()
    assert "parser error 1/2: node 3 '/upscore8/ConvTranspose' op ConvTranspose: unsupported kernel [UNSUPPORTED_NODE]" in cap.out
    assert "parser error 2/2: node 7 'ArgMax_260' op ArgMax" in cap.out
    assert "could not parse" in cap.err and _outputs(plan) == []


def test_failed_build_writes_nothing(onnx_model, tmp_path, fake_trt, capsys):
    path, _ = onnx_model
    fake_trt(build_ok=False)
    plan = tmp_path / "m.plan"
    assert main([str(path), str(plan), *SHAPES, "--timing-cache", str(tmp_path / "t.cache")]) == 2
    assert "failed to build the engine" in capsys.readouterr().err
    assert _outputs(plan) == [] and not (tmp_path / "t.cache").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_old_tensorrt_refused(onnx_model, tmp_path, fake_trt, capsys):
    path, _ = onnx_model
    fake_trt("8.6.1")
    assert main([str(path), str(tmp_path / "m.plan"), *SHAPES]) == 2
    assert "needs TensorRT >= 10" in capsys.readouterr().err


# -- everything before TensorRT ------------------------------------------------------------------------

def test_tensorrt_missing_one_line(onnx_model, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import fails, as on this machine
    path, _ = onnx_model
    assert main([str(path), str(tmp_path / "m.plan"), *SHAPES]) == 2
    err = capsys.readouterr().err
    assert err == "error: TensorRT is not installed: pip install tensorrt on a machine with an NVIDIA GPU\n"


@pytest.mark.parametrize("args, words", [
    (["--min", "1x3x32", "--opt", "1x3x64x80", "--max", "4x3x128x160"], "--min: '1x3x32' has 3 dimensions"),
    (["--min", "1x3x96x32", "--opt", "1x3x64x80", "--max", "4x3x128x160"], "not so on H"),
    (["--min", "1x3x32x32", "--opt", "1x3x64x80", "--max", "1x3x128x64"], "not so on W"),
    (["--min", "1x1x32x32", "--opt", "1x1x64x80", "--max", "4x1x128x160"], "channels fixed at 3"),
    (SHAPES + ["--workspace", "0"], "--workspace must be >= 1"),
    (SHAPES + ["--hardware-compat", "hopper"], "valid: ampere+, none, same-cc"),
])
def test_bad_arguments(onnx_model, tmp_path, capsys, args, words):
    path, _ = onnx_model
    assert main([str(path), str(tmp_path / "m.plan"), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words in err[0]


def test_bad_files(onnx_model, tmp_path, capsys):
    path, _ = onnx_model
    make_tiny_onnx(tmp_path / "foreign.onnx", tiny_info(5), metadata=False)
    assert main([str(tmp_path / "foreign.onnx"), str(tmp_path / "m.plan"), *SHAPES]) == 2
    assert "carries no fcn-deploy metadata" in capsys.readouterr().err
    assert main([str(path), str(tmp_path / "m.trt"), *SHAPES]) == 2
    assert "should end in .plan" in capsys.readouterr().err
    (tmp_path / "junk.onnx").write_bytes(b"\x00\x01junk")
    assert main([str(tmp_path / "junk.onnx"), str(tmp_path / "m.plan"), *SHAPES]) == 2
    assert "not a valid ONNX model" in capsys.readouterr().err
    assert main([str(tmp_path / "none.onnx"), str(tmp_path / "m.plan"), *SHAPES]) == 2
    assert "no such file" in capsys.readouterr().err


def test_static_onnx_needs_matching_profile(tmp_path, capsys):
    make_tiny_onnx(tmp_path / "s.onnx", tiny_info(5), batch=1, hw=(64, 80))
    assert main([str(tmp_path / "s.onnx"), str(tmp_path / "m.plan"), *SHAPES]) == 2
    assert "axis N fixed at 1, but the profile spans 1..4" in capsys.readouterr().err
    shapes = ["--min", "1x3x64x64", "--opt", "1x3x64x80", "--max", "1x3x64x80"]
    assert main([str(tmp_path / "s.onnx"), str(tmp_path / "m.plan"), *shapes]) == 2
    assert "axis W fixed at 80, but the profile spans 64..80" in capsys.readouterr().err


def test_precision_plan_table():
    p = precision_plan((10, 8, 0), "fp32", False)
    assert p.strongly_typed and not p.fp16_flag and p.precision == "fp32"
    p = precision_plan((10, 8, 0), "fp32", True)
    assert not p.strongly_typed and p.fp16_flag and "deprecated" not in p.message
    p = precision_plan((10, 13, 0), "int8", True)
    assert p.fp16_flag and "deprecated since TensorRT 10.12" in p.message and p.precision == "int8+fp16 (builder flag)"
    p = precision_plan((11, 0, 0), "fp16", True)
    assert p.strongly_typed and not p.fp16_flag and "already fp16" in p.message
    assert precision_plan((11, 2, 0), "int8", False).precision == "int8"
    with pytest.raises(FcnError, match="fcn-export --precision fp16"):
        precision_plan((11, 0, 0), "fp32", True)
    with pytest.raises(FcnError, match=">= 10"):
        precision_plan((8, 6, 1), "fp32", False)


def test_format_parser_error_without_node_details():
    class Old:
        def desc(self):
            return "bad graph"

        def node(self):
            return -1

    assert format_parser_error(Old()) == "model: bad graph"
