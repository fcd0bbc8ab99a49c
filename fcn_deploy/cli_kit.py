"""The CLI kit every console script is built from (one place for how the tools parse and fail).

- :func:`cli_parser` / :class:`CliParser`: argparse whose errors are one line ``error: ...`` and
  exit 2 (subcommands too: ``add_subparsers`` makes parsers of the same class), and which adds
  ``--debug`` to every parser it makes.
- :func:`run_cli`: runs a ``main(argv) -> int`` body; an :class:`~fcn_deploy.errors.FcnError` becomes
  that one line. With ``--debug`` (or ``FCN_DEPLOY_DEBUG=1`` in the environment) the whole error
  chain is printed instead (every traceback, also the library errors an FcnError was raised
  ``from None`` over), and the ``fcn_deploy`` loggers go to DEBUG.
- Shared argument groups whose choices come from the registries, never from lists written here:
  :func:`add_backend` (fcn_deploy.backends), :func:`add_threads`, :func:`add_layout` (dataset
  layouts, fcn_deploy.datasets), :func:`add_hw` / :func:`add_shape` (the one grammar of
  :func:`fcn_deploy.shapes.parse_hw` / :func:`~fcn_deploy.shapes.parse_shape`).
- :func:`legacy_argv`: rewrites the old mode flags (``fcn-bench --compare ...``,
  ``fcn-export --check-trt F``) into their subcommands, so old command lines keep working.

A new CLI: ``p = cli_parser(prog="fcn-x", ...)``, the groups it needs, ``main = lambda argv:
run_cli(_main, argv)``, one line in pyproject's [project.scripts]; tests/test_contract_cli.py then
tests it (--help, a bad flag, --debug) without a new test.
"""

from __future__ import annotations

import argparse
import contextvars
import logging
import os
import sys
import traceback
from typing import Callable, Dict, Iterable, List, Optional, Sequence

from fcn_deploy.errors import FcnError

DEBUG_ENV = "FCN_DEPLOY_DEBUG"
DEBUG_FLAG = "--debug"
_debug = contextvars.ContextVar("fcn_deploy_cli_debug", default=False)
# The prog of the innermost parser that ran (a subcommand's), named by errors the top level reports.
_prog = contextvars.ContextVar("fcn_deploy_cli_prog", default="")
# Set by run_cli for the length of one run: only then may a parser change the debug state and the
# logger level (a parser used on its own, e.g. by a test, leaves both alone).
_running = contextvars.ContextVar("fcn_deploy_cli_running", default=False)


def debug_enabled() -> bool:
    """Whether this CLI run shows error chains: ``--debug`` seen, or FCN_DEPLOY_DEBUG set (not 0/empty)."""
    return _debug.get() or os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no", "off")


def is_debug_flag(token) -> bool:
    """``--debug`` or an abbreviation argparse would take for it (``--deb``, ``--debu``)."""
    return isinstance(token, str) and len(token) >= len("--deb") and DEBUG_FLAG.startswith(token)


class CliParser(argparse.ArgumentParser):
    """argparse with the house error: a bad flag or a missing argument is one line
    ``error: ...`` on stderr and exit 2 (through :func:`run_cli`), not usage + message.
    Every parser (subcommands included) takes ``--debug``."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # SUPPRESS: a subcommand's parser never overwrites the flag given before the subcommand.
        self.add_argument(DEBUG_FLAG, action="store_true", default=argparse.SUPPRESS,
                          help=f"on failure show the whole error chain (tracebacks), not one line; "
                               f"also {DEBUG_ENV}=1")

    def parse_known_args(self, args=None, namespace=None):
        tokens = list(sys.argv[1:] if args is None else args)
        options = tokens[: tokens.index("--")] if "--" in tokens else tokens
        # Seen before parsing, so an error while parsing is shown in full too; argparse's
        # abbreviations (--deb, --debu) count as the flag.
        if _running.get() and any(is_debug_flag(t) for t in options):
            _debug.set(True)
            logging.getLogger("fcn_deploy").setLevel(logging.DEBUG)
        _prog.set(self.prog)
        return super().parse_known_args(tokens, namespace)

    def error(self, message):
        inner = _prog.get()
        prog = inner if inner.startswith(self.prog + " ") else self.prog
        raise FcnError(f"{message} (see {prog} --help)")


def cli_parser(**kwargs) -> CliParser:
    """An ``argparse.ArgumentParser`` whose errors are one ``error:`` line (see :func:`run_cli`)."""
    return CliParser(**kwargs)


def _print_chain(e: BaseException) -> None:
    """Every exception of ``e``'s chain with its traceback, suppressed contexts included."""
    seen = set()
    link: Optional[BaseException] = e
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        link.__suppress_context__ = False
        link = link.__cause__ or link.__context__
    traceback.print_exception(type(e), e, e.__traceback__, file=sys.stderr)


def run_cli(main: Callable[[Optional[Sequence[str]]], int], argv=None) -> int:
    """Run a CLI body: FcnError (and Ctrl-C) become one line on stderr and a non-zero exit;
    with ``--debug`` / FCN_DEPLOY_DEBUG=1 the error chain is printed before that line."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    token, running = _debug.set(False), _running.set(True)
    level = logging.getLogger("fcn_deploy").level  # --debug lowers it for this run only
    if debug_enabled():  # FCN_DEPLOY_DEBUG=1 (a --debug flag is seen by the parser)
        logging.getLogger("fcn_deploy").setLevel(logging.DEBUG)
    try:
        try:
            return int(main(argv) or 0)
        except FcnError as e:
            if debug_enabled():
                _print_chain(e)
            print(f"error: {e}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130
    finally:
        _debug.reset(token)
        _running.reset(running)
        logging.getLogger("fcn_deploy").setLevel(level)


# -- argument types -------------------------------------------------------------------------------

def _argtype(fn: Callable, name: str) -> Callable:
    """An argparse ``type`` from a parser raising FcnError (argparse then words it as
    ``argument --x: <message>``, one line)."""

    def convert(text):
        try:
            return fn(text)
        except FcnError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    convert.__name__ = name
    return convert


def positive_int(text) -> int:
    try:
        value = int(text)
    except (TypeError, ValueError):
        raise FcnError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise FcnError(f"must be >= 1, got {value}")
    return value


def hw_type(*, square: bool = True) -> Callable:
    """argparse type: ``H,W`` / ``HxW`` (``N`` for N x N when ``square``) -> (H, W)."""
    from fcn_deploy.shapes import parse_hw

    return _argtype(lambda t: parse_hw(t, what="", square=square), "size")


def hw_list_type() -> Callable:
    """argparse type: ``HxW,HxW,...`` (also ``H,W;H,W``) -> [(H, W), ...]."""
    from fcn_deploy.shapes import parse_hw_list

    return _argtype(lambda t: parse_hw_list(t, what=""), "sizes")


def shape_type(*, channels: Optional[int] = None) -> Callable:
    """argparse type: ``NxCxHxW`` / ``N,C,H,W`` -> (N, C, H, W), C checked when given."""
    from fcn_deploy.shapes import parse_shape

    return _argtype(lambda t: parse_shape(t, what="", channels=channels), "shape")


# -- shared argument groups -----------------------------------------------------------------------

def _default_note(default) -> str:
    # argparse.SUPPRESS: a parser whose unset flags stay out of the namespace (fcn-train's recipes).
    return f" (default {default})" if default not in (None, "", argparse.SUPPRESS) else ""


def add_backend(p, *, default: Optional[str] = "auto", auto: bool = True, names: Optional[Iterable[str]] = None,
                help: str = "runtime backend", aliases: Sequence[str] = (), dest: str = "backend") -> None:
    """``--backend NAME``: a name (or alias, any case) of fcn_deploy.backends' registry, stored as
    its canonical name; ``auto`` too when ``auto``. ``names`` narrows to a subset of the registry;
    ``aliases``: old spellings of the flag."""
    from fcn_deploy import backends

    allowed = list(names) if names is not None else backends.backend_names()
    unknown = sorted(set(allowed) - set(backends.backend_names()))
    if unknown:  # a programming error: only registered backends can be offered
        raise ValueError(f"not registered backends: {unknown}")
    valid = (["auto"] if auto else []) + allowed

    def backend(text):
        name = backends.canonical_name(text)
        if name not in valid:
            raise FcnError(f"backend {text!r} is not offered here; valid: {', '.join(valid)}")
        return name

    p.add_argument("--backend", *aliases, dest=dest, type=_argtype(backend, "backend"), default=default, metavar="NAME",
                   help=f"{help}: {' | '.join(valid)}" + _default_note(default))


def add_threads(p, *, default: Optional[int] = None, help: str = "CPU threads for the backend") -> None:
    p.add_argument("--threads", type=_argtype(positive_int, "threads"), default=default, metavar="N",
                   help=help + _default_note(default))


def add_layout(p, *, default: Optional[str] = "camvid", choices: Optional[Sequence[str]] = None,
               flag: str = "--layout", aliases: Sequence[str] = ("--format",), dest: str = "layout",
               help: str = "dataset layout") -> None:
    """The dataset layout (camvid | voc | folders ...; fcn_deploy.datasets.FORMATS unless
    ``choices`` is given), spelt ``--layout``; the old ``--format`` is kept as an alias."""
    if choices is None:
        from fcn_deploy.datasets import FORMATS as choices
    p.add_argument(flag, *aliases, dest=dest, choices=tuple(choices), default=default, metavar="LAYOUT",
                   help=f"{help}: {' | '.join(choices)}" + _default_note(default))


def add_hw(p, *flags, square: bool = True, help: str = "size", **kwargs) -> None:
    """A size flag in the one grammar (``288,384`` / ``288x384`` / ``N`` for square)."""
    grammar = "H,W or HxW" + (" or N (square)" if square else "")
    p.add_argument(*flags, type=hw_type(square=square), metavar="HxW", help=f"{help} ({grammar})", **kwargs)


def add_shape(p, *flags, channels: Optional[int] = None, help: str = "input shape", **kwargs) -> None:
    """A shape flag in the one grammar (``1x3x288x384`` / ``1,3,288,384``)."""
    p.add_argument(*flags, type=shape_type(channels=channels), metavar="NxCxHxW", help=f"{help} (NxCxHxW or N,C,H,W)",
                   **kwargs)


# -- old spellings of the modes ---------------------------------------------------------------------

def legacy_argv(argv: Optional[Sequence[str]], commands: Iterable[str], *, moves: Dict[str, str] = None,
                selects: Dict[str, str] = None, nargs_plus: Iterable[str] = (),
                default: Optional[str] = None) -> List[str]:
    """The subcommand spelling of an old command line (unchanged when it names a subcommand).

    ``moves``: old mode flag -> subcommand; the flag goes, its value becomes the subcommand's
    first positional (all the values up to the next option for flags in ``nargs_plus``), e.g.
    ``--compare a b --shape S`` -> ``compare a b --shape S``. ``selects``: flag -> subcommand
    whose own flag it is (``--onnx m`` -> ``run --onnx m``). ``default``: the subcommand of a
    line with none of these (``fcn-export m.pt o.onnx`` -> ``onnx m.pt o.onnx``); None leaves
    it to the top-level parser. Two mode flags of different subcommands are an error.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    commands, moves, selects, plus = set(commands), dict(moves or {}), dict(selects or {}), set(nargs_plus)
    first = next((a for a in args if a != DEBUG_FLAG), None)
    if first is None or first in commands or first in ("-h", "--help"):
        return args
    found = []  # (subcommand, flag, index)
    for i, a in enumerate(args):
        if a == "--":
            break
        flag = a.split("=", 1)[0] if a.startswith("--") else a
        if flag in moves:
            found.append((moves[flag], flag, i))
        elif flag in selects:
            found.append((selects[flag], flag, i))
    cmds = {c for c, _, _ in found}
    if len(cmds) > 1:
        flags = sorted({f for _, f, _ in found})
        raise FcnError(f"{' and '.join(flags)} are separate commands; give one")
    if not found:
        return args if default is None else [default] + args
    cmd = found[0][0]
    movers = [(f, i) for _, f, i in found if f in moves]
    if len(movers) > 1:
        raise FcnError(f"{movers[0][0]} given twice")
    if not movers:
        return [cmd] + args
    flag, i = movers[0]
    if "=" in args[i]:
        values, end = [args[i].split("=", 1)[1]], i + 1
    else:
        end = i + 1
        while end < len(args) and not args[end].startswith("-") and (flag in plus or end == i + 1):
            end += 1
        values = args[i + 1:end]
        if not values:
            raise FcnError(f"argument {flag}: expected {'at least one argument' if flag in plus else 'one argument'}")
    return [cmd] + values + args[:i] + args[end:]
