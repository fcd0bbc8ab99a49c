"""The CLI kit (fcn_deploy/cli_kit.py) and the one size/shape grammar (fcn_deploy/shapes.py):
the grammar everywhere a CLI takes a size or a shape, the error chain under --debug, the shared
groups' choices from the registries, and the old spellings parsing to the same call as the new.
Parsing only: nothing here loads a model."""

from __future__ import annotations

import logging

import pytest

from fcn_deploy.errors import FcnError
from fcn_deploy.shapes import parse_hw, parse_hw_list, parse_shape


# -- the grammar -------------------------------------------------------------------------------------

@pytest.mark.parametrize("text", ["288,384", "288x384", "288X384", " 288 x 384 ", "288*384"])
def test_parse_hw_spellings(text):
    assert parse_hw(text) == (288, 384)


def test_parse_hw_square_and_lists():
    assert parse_hw("64") == (64, 64)
    with pytest.raises(FcnError, match="1 numbers"):
        parse_hw("64", square=False)
    assert parse_hw_list("97x131,375x500") == [(97, 131), (375, 500)]
    assert parse_hw_list("97,131;375,500") == [(97, 131), (375, 500)]
    assert parse_hw_list("97,131 64") == [(97, 131), (64, 64)]
    assert parse_hw_list("288,384") == [(288, 384)]


@pytest.mark.parametrize("text, words", [
    ("", "empty"), ("64by96", "not H,W or HxW"), ("1x2x3", "3 numbers"), ("0x5", "side < 1"), ("-3", "not H,W"), ("3x", "not H,W"),
    ("2_88", "not H,W"), ("+288", "not H,W"), ("99999999999x5", "too large"), ("288 384", "not H,W"),
])
def test_parse_hw_errors_are_one_line(text, words):
    with pytest.raises(FcnError, match=words) as e:
        parse_hw(text, what="--crop")
    assert "\n" not in str(e.value) and str(e.value).startswith("--crop: ")


@pytest.mark.parametrize("text, sizes", [
    ("97X131,375x500", [(97, 131), (375, 500)]), ("97*131,375*500", [(97, 131), (375, 500)]),
    ("97x 131, 375 x500", [(97, 131), (375, 500)]), ("97x131 375x500", [(97, 131), (375, 500)]),
])
def test_parse_hw_list_takes_the_size_grammar(text, sizes):
    assert parse_hw_list(text) == sizes


@pytest.mark.parametrize("text", ["288,384,97x131", "97x131,375"])
def test_parse_hw_list_refuses_a_comma_meaning_two_things(text):
    # 288,384 is one size; 288,384,97x131 would otherwise be read as 288x288, 384x384, 97x131
    with pytest.raises(FcnError, match="put ; between H,W sizes"):
        parse_hw_list(text, what="--verify-sizes")


@pytest.mark.parametrize("text", ["1x3x288x384", "1,3,288,384", "1X3x288,384"])
def test_parse_shape_spellings(text):
    assert parse_shape(text) == (1, 3, 288, 384)


@pytest.mark.parametrize("text, words", [
    ("1x3x288", "3 dimensions"), ("1x3xHx4", "not NxCxHxW"), ("0x3x4x4", "< 1"), ("", "empty"), ("1x1x4x4", "C=1"),
])
def test_parse_shape_errors_are_one_line(text, words):
    with pytest.raises(FcnError, match=words) as e:
        parse_shape(text, what="--shape", channels=3)
    assert "\n" not in str(e.value)


def _parse(module, argv):
    """A CLI's parsed arguments (the old spellings rewritten where the CLI has any)."""
    if hasattr(module, "parse_args"):
        return module.parse_args(argv)
    return (module.build_parser() if hasattr(module, "build_parser") else module._parser()).parse_args(argv)


def _bench():
    from fcn_deploy.benchmarks import bench

    return bench


def _export():
    from fcn_deploy.export import cli

    return cli


def test_every_size_and_shape_flag_takes_the_one_grammar():
    from fcn_deploy import build
    from fcn_deploy.export import verify
    from fcn_deploy.serve import cli as serve

    for size in ("288,384", "288x384"):
        a = _parse(_export(), ["onnx", "m.pt", "o.onnx", "--calib-size", size, "--static", size])
        assert a.calib_size == a.static == (288, 384)
    assert _parse(_export(), ["m.pt", "o.onnx", "--calib-size", "64"]).calib_size == (64, 64)
    for sizes in ("97x131,375x500", "97,131;375,500"):
        assert _parse(_export(), ["m.pt", "o.onnx", "--verify-sizes", sizes]).verify_sizes == [(97, 131), (375, 500)]
        assert _parse(verify, ["m.pt", "m.onnx", "--sizes", sizes]).sizes == [(97, 131), (375, 500)]
    for shape in ("1x3x8x16", "1,3,8,16"):
        assert _parse(_bench(), ["run", "--onnx", "m.onnx", "--shape", shape]).shape == [(1, 3, 8, 16)]
        assert _parse(build, ["m.onnx", "m.plan", "--min", shape, "--opt", shape, "--max", shape]).min == (1, 3, 8, 16)
        assert _parse(serve, ["triton", "m.onnx", "--repo", "r", "--opt", shape]).opt_shape == (1, 3, 8, 16)


def test_a_bad_size_is_one_line_naming_the_flag(capsys):
    assert _export().main(["m.pt", "o.onnx", "--calib-size", "288by384"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: argument --calib-size: '288by384' is not H,W or HxW")


# -- --debug ----------------------------------------------------------------------------------------

def test_debug_prints_the_chain_an_fcn_error_hid(capsys, monkeypatch):
    """``raise FcnError(...) from None`` hides the library error from the one line; --debug shows it."""
    from fcn_deploy.cli_kit import cli_parser, run_cli

    monkeypatch.delenv("FCN_DEPLOY_DEBUG", raising=False)

    def body(argv):
        cli_parser(prog="t").parse_args(argv)
        try:
            int("seven")
        except ValueError:
            raise FcnError("not a number") from None

    assert run_cli(body, []) == 2
    assert capsys.readouterr().err == "error: not a number\n"
    assert run_cli(body, ["--debug"]) == 2
    err = capsys.readouterr().err
    assert "ValueError: invalid literal for int()" in err and "During handling" in err
    assert err.endswith("error: not a number\n")
    assert run_cli(body, []) == 2  # --debug lasts one run
    assert capsys.readouterr().err == "error: not a number\n"
    assert logging.getLogger("fcn_deploy").level != logging.DEBUG


def test_env_debug_lowers_the_loggers_for_one_run(capsys, monkeypatch):
    from fcn_deploy.cli_kit import run_cli

    seen = []
    monkeypatch.setenv("FCN_DEPLOY_DEBUG", "1")
    assert run_cli(lambda argv: seen.append(logging.getLogger("fcn_deploy").getEffectiveLevel()) or 0, []) == 0
    monkeypatch.delenv("FCN_DEPLOY_DEBUG")
    assert run_cli(lambda argv: seen.append(logging.getLogger("fcn_deploy").getEffectiveLevel()) or 0, []) == 0
    assert seen[0] == logging.DEBUG and seen[1] != logging.DEBUG


def test_a_parser_outside_run_cli_changes_no_global_state(monkeypatch):
    from fcn_deploy.cli_kit import cli_parser, debug_enabled

    monkeypatch.delenv("FCN_DEPLOY_DEBUG", raising=False)
    level = logging.getLogger("fcn_deploy").level
    cli_parser(prog="t").parse_args(["--debug"])
    assert not debug_enabled() and logging.getLogger("fcn_deploy").level == level


@pytest.mark.parametrize("flag", ["--deb", "--debu", "--debug"])
def test_debug_abbreviations_show_the_chain(flag, capsys, monkeypatch):
    monkeypatch.delenv("FCN_DEPLOY_DEBUG", raising=False)
    assert _export().main(["check-trt", "/nonexistent.onnx", flag]) == 2
    assert "Traceback" in capsys.readouterr().err


def test_bench_shape_flag_checks_the_channels(capsys):
    assert _bench().main(["run", "--onnx", "m.onnx", "--shape", "1x1x8x8"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "C=1" in err


def test_debug_given_before_or_after_a_subcommand(capsys, monkeypatch):
    monkeypatch.delenv("FCN_DEPLOY_DEBUG", raising=False)
    for argv in (["--debug", "check-trt", "/nonexistent.onnx"], ["check-trt", "/nonexistent.onnx", "--debug"]):
        assert _export().main(argv) == 2
        assert "Traceback" in capsys.readouterr().err


# -- shared groups from the registries -----------------------------------------------------------

def test_backend_group_takes_the_registry_and_its_aliases():
    from fcn_deploy import backends
    from fcn_deploy.cli_kit import add_backend, cli_parser

    p = cli_parser(prog="t")
    add_backend(p)
    for name in backends.backend_names():
        assert p.parse_args(["--backend", name]).backend == name
    for alias, name in backends.ALIASES.items():
        assert p.parse_args(["--backend", alias.upper()]).backend == name
    assert p.parse_args([]).backend == "auto"
    with pytest.raises(FcnError, match="argument --backend: unknown backend 'tflite'"):
        p.parse_args(["--backend", "tflite"])
    narrow = cli_parser(prog="t")
    add_backend(narrow, default="onnxruntime", auto=False, names=("onnxruntime",))
    with pytest.raises(FcnError, match="not offered here"):
        narrow.parse_args(["--backend", "auto"])
    with pytest.raises(ValueError):
        add_backend(cli_parser(prog="t"), names=("tflite",))


def test_layout_group_takes_the_dataset_registry():
    from fcn_deploy.cli_kit import add_layout, cli_parser
    from fcn_deploy.datasets import FORMATS

    p = cli_parser(prog="t")
    add_layout(p)
    for layout in FORMATS:
        assert p.parse_args(["--layout", layout]).layout == p.parse_args(["--format", layout]).layout == layout
    with pytest.raises(FcnError, match="invalid choice"):
        p.parse_args(["--layout", "coco"])


def test_threads_must_be_positive():
    from fcn_deploy.cli_kit import add_threads, cli_parser

    p = cli_parser(prog="t")
    add_threads(p)
    assert p.parse_args(["--threads", "2"]).threads == 2
    for bad in ("0", "two"):
        with pytest.raises(FcnError, match="argument --threads"):
            p.parse_args(["--threads", bad])


# -- old spellings = new spellings ------------------------------------------------------------------

BENCH_ALIASES = [  # every spelling in README.md, docs/, Makefile, benchmarks/make_results.sh and the tests
    (["--compare", "torch:m.pt", "onnx:f.onnx", "--shape", "1x3x360x480"],
     ["compare", "torch:m.pt", "onnx:f.onnx", "--shape", "1x3x360x480"]),
    (["--shape", "1x3x8x8", "--compare", "onnx:a.onnx", "onnx:b.onnx", "--concurrency", "2", "-q"],
     ["compare", "onnx:a.onnx", "onnx:b.onnx", "--shape", "1x3x8x8", "--concurrency", "2", "-q"]),
    (["--engine", "x.plan"], ["run", "--engine", "x.plan"]),
    (["--engine", "x.plan"], ["run", "--plan", "x.plan"]),
    (["--onnx", "f.onnx", "--provider", "cpu", "--iterations", "50", "--json", "o.json"],
     ["run", "--onnx", "f.onnx", "--provider", "cpu", "--iterations", "50", "--json", "o.json"]),
    (["--torch", "m.pt", "--autocast", "bf16", "--threads", "2"], ["run", "--torch", "m.pt", "--autocast", "bf16", "--threads", "2"]),
    (["--openvino", "f.onnx", "--ov-precision", "bf16"], ["run", "--openvino", "f.onnx", "--ov-precision", "bf16"]),
    (["--ceiling", "f.onnx", "--shape", "1x3x360x480", "--threads", "2", "--iterations", "5", "--reference-ms", "2500",
      "--json", "c.json", "--markdown", "c.md", "-q"],
     ["ceiling", "f.onnx", "--shape", "1x3x360x480", "--threads", "2", "--iterations", "5", "--reference-ms", "2500",
      "--json", "c.json", "--markdown", "c.md", "-q"]),
    (["--ceiling=f.onnx"], ["ceiling", "f.onnx"]),
    (["--formats", "m.pt", "--data", "d", "--format", "camvid", "--split", "val", "--out-dir", "r18", "--shape",
      "1x3x360x480", "--threads", "2", "--iterations", "10", "--json", "f.json", "--markdown", "f.md", "-q"],
     ["formats", "m.pt", "--data", "d", "--layout", "camvid", "--split", "val", "--out-dir", "r18", "--shape",
      "1x3x360x480", "--threads", "2", "--iterations", "10", "--json", "f.json", "--markdown", "f.md", "-q"]),
]


@pytest.mark.parametrize("old, new", BENCH_ALIASES)
def test_bench_old_spellings_parse_to_the_subcommand(old, new):
    assert vars(_parse(_bench(), old)) == vars(_parse(_bench(), new))


@pytest.mark.parametrize("argv, words", [
    (["--onnx", "a.onnx", "--compare", "onnx:b.onnx"], "separate commands"),
    (["--compare"], "expected at least one argument"),
    (["--formats", "m.pt", "--ceiling", "f.onnx"], "separate commands"),
])
def test_bench_old_spellings_keep_their_errors(argv, words, capsys):
    assert _bench().main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and words in err


def test_bench_formats_separates_the_dataset_layout_from_the_model_formats():
    a = _parse(_bench(), ["formats", "m.pt", "--data", "d", "--format", "voc"])
    assert a.command == "formats" and a.checkpoint == "m.pt" and a.layout == "voc"


EXPORT_ALIASES = [
    (["m.pt", "o.onnx"], ["onnx", "m.pt", "o.onnx"]),
    (["m.pt", "o.onnx", "--static", "360x480", "--batch", "1"], ["onnx", "m.pt", "o.onnx", "--static", "360,480", "--batch", "1"]),
    (["m.pt", "o.onnx", "--output", "labels", "--input", "uint8"],
     ["onnx", "m.pt", "o.onnx", "--graph-output", "labels", "--graph-input", "uint8"]),
    (["--precision", "int8", "m.pt", "o.onnx", "--calib-data", "d", "--calib-format", "camvid"],
     ["onnx", "m.pt", "o.onnx", "--precision", "int8", "--calib-data", "d", "--calib-layout", "camvid"]),
    (["--check-trt", "f.onnx"], ["check-trt", "f.onnx"]),
    (["--adopt", "zoo.onnx", "out.onnx", "--classes", "voc", "--input-convention", "imagenet"],
     ["adopt", "zoo.onnx", "out.onnx", "--classes", "voc", "--input-convention", "imagenet"]),
    (["out.onnx", "--adopt", "zoo.onnx", "--classes", "voc"], ["adopt", "zoo.onnx", "out.onnx", "--classes", "voc"]),
    (["--debug", "m.pt", "o.onnx"], ["onnx", "--debug", "m.pt", "o.onnx"]),
]


@pytest.mark.parametrize("old, new", EXPORT_ALIASES)
def test_export_old_spellings_parse_to_the_subcommand(old, new):
    assert vars(_parse(_export(), old)) == vars(_parse(_export(), new))


@pytest.mark.parametrize("old, new", [
    (["--model", "m.onnx", "--data", "d", "--format", "voc"], ["--model", "m.onnx", "--data", "d", "--layout", "voc"]),
    (["--model", "m.onnx", "--data", "d", "--backend", "ov"], ["--model", "m.onnx", "--data", "d", "--backend", "openvino"]),
])
def test_eval_old_spellings(old, new):
    from fcn_deploy.benchmarks import evaluate

    assert vars(_parse(evaluate, old)) == vars(_parse(evaluate, new))


def test_verify_engine_is_the_old_spelling_of_backend():
    from fcn_deploy.export import verify

    assert _parse(verify, ["c.pt", "m.onnx", "--engine", "reference"]).engine == "reference"
    assert _parse(verify, ["c.pt", "m.onnx", "--backend", "reference"]).engine == "reference"
    # the registry's aliases, as on every other --backend; only the CPU engines verify offers
    assert _parse(verify, ["c.pt", "m.onnx", "--backend", "OV"]).engine == "openvino"
    with pytest.raises(FcnError, match="not offered here"):
        _parse(verify, ["c.pt", "m.onnx", "--backend", "trt"])


def test_legacy_argv_leaves_the_new_spelling_alone():
    from fcn_deploy.cli_kit import legacy_argv

    argv = ["compare", "--compare", "x"]
    assert legacy_argv(argv, ("compare",), moves={"--compare": "compare"}) == argv
    assert legacy_argv(["--help"], ("onnx",), default="onnx") == ["--help"]
    assert legacy_argv([], ("onnx",), default="onnx") == []
