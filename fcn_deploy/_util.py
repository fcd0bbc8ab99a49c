"""Small helpers shared by every stage: atomic writes (and, for old imports, the CLI kit's
``cli_parser`` / ``run_cli``: fcn_deploy/cli_kit.py)."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import secrets
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence, Tuple

from fcn_deploy.errors import FcnError


# errno values that always mean "the file could not be written" whatever path they name.
_WRITE_ERRNOS = frozenset(getattr(errno, n) for n in ("ENOSPC", "EDQUOT", "EFBIG", "EROFS") if hasattr(errno, n))


def _reason(e: OSError) -> str:
    return e.strerror or type(e).__name__


def _create_temp(parent: Path, name: str, suffix: str) -> Path:
    """Create an empty, new file ``parent/.name.XXXXXXXX.tmp<suffix>`` with mode ``0o666 & ~umask``.

    Unlike ``tempfile.mkstemp`` (always 0600) the kernel applies the process umask, so the
    final file gets the same permissions as one written with ``open(path, "w")``, without
    reading the umask (``os.umask`` can only be read by changing it, which is not thread-safe).
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        tmp = parent / f".{name}.{secrets.token_hex(4)}.tmp{suffix}"
        try:
            fd = os.open(tmp, flags, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp
    raise FileExistsError(errno.EEXIST, "no free temporary file name", str(parent))


def _check_target(path) -> Tuple[Path, Path]:
    """(path, its folder) after the checks that need no write: folder exists, path no folder."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.exists():
        raise FcnError(f"output folder does not exist: {parent}")
    if not parent.is_dir():
        raise FcnError(f"cannot write {path}: {parent} is not a folder")
    if path.is_dir():
        raise FcnError(f"cannot write {path}: it is a folder")
    return path, parent


@contextlib.contextmanager
def atomic_path(path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only on success.

    Nothing half-written is ever left at ``path``: on any exception the temp file is removed.
    A place that cannot be written (missing or read-only folder, ``path`` being a folder, a
    pseudo file system such as /proc, a full disk) gives one :class:`FcnError`
    ``cannot write <path>: <reason>``, also for an ``OSError`` about the temp file raised by the
    body. The file gets mode ``0o666 & ~umask`` like any newly created file.
    """
    path, parent = _check_target(path)
    if not os.access(parent, os.W_OK):
        raise FcnError(f"output folder is not writable: {parent}")
    try:
        tmp = _create_temp(parent, path.name, suffix)
    except OSError as e:
        raise FcnError(f"cannot write {path}: {_reason(e)}") from None
    try:
        try:
            yield tmp
        except OSError as e:
            if e.errno in _WRITE_ERRNOS or (e.filename is not None and str(e.filename) == str(tmp)):
                raise FcnError(f"cannot write {path}: {_reason(e)}") from None
            raise
        try:
            os.replace(tmp, path)
        except OSError as e:
            raise FcnError(f"cannot write {path}: {_reason(e)}") from None
    finally:
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass  # renamed onto path (or removed by the body)
        except OSError as e:  # pragma: no cover - e.g. the folder became read-only meanwhile
            logging.getLogger(__name__).warning("could not remove temporary file %s: %s", tmp, _reason(e))


def check_writable(path) -> None:
    """Raise FcnError unless ``path`` can be written by :func:`atomic_path` later on.

    For long jobs that would otherwise only fail at their first save: checks the folder exists
    and is a folder, ``path`` is not a folder, and a file can really be created (and removed)
    there, which ``os.access`` does not tell for root or on pseudo file systems such as /proc.
    """
    path, parent = _check_target(path)
    try:
        tmp = _create_temp(parent, path.name, ".probe")
    except OSError as e:
        raise FcnError(f"cannot write {path}: {_reason(e)}") from None
    try:
        tmp.unlink()
    except OSError as e:
        raise FcnError(f"cannot write {path}: {_reason(e)}") from None


def atomic_write_bytes(path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def sha256_file(path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def cli_parser(**kwargs):
    """An ``argparse.ArgumentParser`` whose errors are one ``error:`` line; see
    :mod:`fcn_deploy.cli_kit` (kept here for the callers that import it from this module)."""
    from fcn_deploy.cli_kit import cli_parser as make

    return make(**kwargs)


def run_cli(main: Callable[[Optional[Sequence[str]]], int], argv=None) -> int:
    """Run a CLI body (FcnError -> one ``error:`` line, exit 2); see :func:`fcn_deploy.cli_kit.run_cli`."""
    from fcn_deploy.cli_kit import run_cli as run

    return run(main, argv)
