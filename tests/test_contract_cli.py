"""Contract tests over every console script in pyproject.toml [project.scripts]: ``--help``
exits 0 and prints the usage; a bad flag prints exactly one line, ``error: ...``, on stderr and
exits 2 (no usage dump, no traceback). A new console script is tested here without a new test.

The entry points are called in-process (``main(argv) -> int``), as the scripts call them."""

from __future__ import annotations

import importlib
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]


def _entry(target):
    mod, func = target.split(":")
    try:
        return getattr(importlib.import_module(mod), func)
    except ImportError as e:  # an optional extra missing (torch for fcn-train, ...)
        pytest.skip(f"{target}: {e}")


def test_scripts_are_listed():
    assert {"fcn-train", "fcn-export", "fcn-verify", "fcn-build", "fcn-predict", "fcn-bench", "fcn-eval"} <= set(SCRIPTS)


def _call(main, argv):
    try:
        return main(argv)
    except SystemExit as e:
        return e.code


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_help_exits_0(name, capsys):
    main = _entry(SCRIPTS[name])
    assert _call(main, ["--help"]) in (0, None)
    out = capsys.readouterr().out
    assert out.lower().startswith("usage:") and "--help" in out, out[:200]


@pytest.mark.parametrize("name", sorted(SCRIPTS))
@pytest.mark.parametrize("argv", [["--no-such-flag"], ["--no-such-flag", "x", "y", "z"]])
def test_bad_flag_is_one_error_line_and_exit_2(name, argv, capsys):
    main = _entry(SCRIPTS[name])
    rc = _call(main, argv)
    err = capsys.readouterr().err
    assert rc == 2, (rc, err)
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err and "usage:" not in err
