"""Contract tests over every console script in pyproject.toml [project.scripts] and every
subcommand they have: ``--help`` exits 0 and prints the usage; a bad flag prints exactly one
line, ``error: ...``, on stderr and exits 2 (no usage dump, no traceback); with ``--debug`` (or
FCN_DEPLOY_DEBUG=1) the same failure shows the traceback first. A new console script or
subcommand is tested here without a new test.

The entry points are called in-process (``main(argv) -> int``), as the scripts call them; the
subcommands are found by recording the parsers the CLI kit makes while ``--help`` runs."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]


def _load(target):
    mod, func = target.split(":")
    return getattr(importlib.import_module(mod), func)


def _entry(target):
    try:
        return _load(target)
    except ImportError as e:  # an optional extra missing (torch for fcn-train, ...)
        pytest.skip(f"{target}: {e}")


def _call(main, argv):
    try:
        return main(argv)
    except SystemExit as e:
        return e.code


def _commands():
    """(script, [subcommand]) for every script and every subcommand of it."""
    from fcn_deploy.cli_kit import CliParser

    made = []
    original = CliParser.__init__

    def recording_init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        made.append(self)

    out = []
    for name, target in sorted(SCRIPTS.items()):
        out.append((name, []))
        try:
            main = _load(target)
        except ImportError:
            continue
        made.clear()
        CliParser.__init__ = recording_init
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                _call(main, ["--help"])
        finally:
            CliParser.__init__ = original
        for parser in made[:1]:  # the top-level parser (its subparsers are made after it)
            for action in parser._actions:
                if isinstance(action, argparse._SubParsersAction):
                    out.extend((name, [command]) for command in action.choices)
    return out


COMMANDS = _commands()
IDS = [" ".join([name, *sub]) for name, sub in COMMANDS]


def test_scripts_are_listed():
    assert {"fcn-train", "fcn-export", "fcn-verify", "fcn-build", "fcn-predict", "fcn-bench", "fcn-eval"} <= set(SCRIPTS)


def test_subcommands_are_found():
    found = {" ".join([n, *s]) for n, s in COMMANDS}
    assert {"fcn-bench run", "fcn-bench compare", "fcn-bench formats", "fcn-bench ceiling", "fcn-export onnx",
            "fcn-export check-trt", "fcn-serve triton"} <= found, found


@pytest.mark.parametrize("name, sub", COMMANDS, ids=IDS)
def test_help_exits_0(name, sub, capsys):
    main = _entry(SCRIPTS[name])
    assert _call(main, [*sub, "--help"]) in (0, None)
    out = capsys.readouterr().out
    assert out.lower().startswith(f"usage: {' '.join([name, *sub])}") or not sub, out[:200]
    assert out.lower().startswith("usage:") and "--help" in out, out[:200]


@pytest.mark.parametrize("name, sub", COMMANDS, ids=IDS)
@pytest.mark.parametrize("argv", [["--no-such-flag"], ["--no-such-flag", "x", "y", "z"]])
def test_bad_flag_is_one_error_line_and_exit_2(name, sub, argv, capsys, monkeypatch):
    monkeypatch.delenv("FCN_DEPLOY_DEBUG", raising=False)
    main = _entry(SCRIPTS[name])
    rc = _call(main, [*sub, *argv])
    err = capsys.readouterr().err
    assert rc == 2, (rc, err)
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err and "usage:" not in err


def _assert_traceback_then_error(err: str):
    lines = err.strip().splitlines()
    assert lines[0] == "Traceback (most recent call last):", err[:300]
    assert lines[-1].startswith("error: ") and sum(line.startswith("error: ") for line in lines) == 1, err[-300:]
    assert "FcnError" in err


@pytest.mark.parametrize("name, sub", COMMANDS, ids=IDS)
def test_debug_flag_shows_the_traceback(name, sub, capsys, monkeypatch):
    monkeypatch.delenv("FCN_DEPLOY_DEBUG", raising=False)
    main = _entry(SCRIPTS[name])
    assert _call(main, [*sub, "--debug", "--no-such-flag"]) == 2
    _assert_traceback_then_error(capsys.readouterr().err)


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_debug_environment_variable_shows_the_traceback(name, capsys, monkeypatch):
    main = _entry(SCRIPTS[name])
    monkeypatch.setenv("FCN_DEPLOY_DEBUG", "1")
    assert _call(main, ["--no-such-flag"]) == 2
    _assert_traceback_then_error(capsys.readouterr().err)
    monkeypatch.setenv("FCN_DEPLOY_DEBUG", "0")
    assert _call(main, ["--no-such-flag"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err


@pytest.mark.parametrize("argv, frame", [
    (["fcn-export", "check-trt", "/nonexistent/m.onnx"], "load_onnx_checked"),
    (["fcn-bench", "run", "--onnx", "/nonexistent/m.onnx", "-q"], "_cmd_latency"),
    (["fcn-build", "/nonexistent/m.onnx", "m.plan", "--min", "1x3x8x8", "--opt", "1x3x8x8", "--max", "1x3x8x8"], "read_onnx_header"),
])
def test_debug_on_a_library_failure(argv, frame, capsys, monkeypatch):
    """A failing run (not a parse error): one line by default, the traceback down to the library with --debug."""
    monkeypatch.delenv("FCN_DEPLOY_DEBUG", raising=False)
    main = _entry(SCRIPTS[argv[0]])
    assert _call(main, argv[1:]) == 2
    plain = capsys.readouterr().err
    assert plain.startswith("error: ") and plain.count("\n") == 1, plain
    assert _call(main, argv[1:] + ["--debug"]) == 2
    err = capsys.readouterr().err
    _assert_traceback_then_error(err)
    assert frame in err and err.strip().splitlines()[-1] == plain.strip()
