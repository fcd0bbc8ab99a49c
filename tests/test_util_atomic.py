"""atomic_path / atomic_write_*: unwritable places give one FcnError line (no traceback, no
temp file left), and written files get the usual ``0o666 & ~umask`` permissions."""

import errno
import os
import stat

import pytest

from fcn_deploy import _util
from fcn_deploy._util import atomic_path, atomic_write_text, run_cli
from fcn_deploy.errors import FcnError


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux /proc")
def test_proc_path_is_one_error_line():
    # /proc exists and root passes os.access(W_OK), but no file can be created there.
    with pytest.raises(FcnError, match=r"^(cannot write /proc/x\.json: |output folder is not writable)"):
        atomic_write_text("/proc/x.json", "{}")


def test_cli_wrapper_turns_it_into_exit_2(capsys):
    def body(argv):
        atomic_write_text("/proc/x.json", "{}")

    assert run_cli(body, []) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err


def test_folder_given_as_output_file(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(FcnError, match="cannot write .*d: it is a folder"):
        atomic_write_text(tmp_path / "d", "x")
    assert _leftovers(tmp_path) == ["d"] and _leftovers(tmp_path / "d") == []


def test_file_given_as_output_folder(tmp_path):
    (tmp_path / "f").write_text("keep")
    with pytest.raises(FcnError, match="cannot write .*f/x.json: .*f is not a folder"):
        atomic_write_text(tmp_path / "f" / "x.json", "x")
    assert (tmp_path / "f").read_text() == "keep"


def test_rename_failure_removes_temp(tmp_path, monkeypatch):
    def boom(src, dst):
        raise OSError(errno.EXDEV, "Invalid cross-device link", str(src))

    monkeypatch.setattr(_util.os, "replace", boom)
    with pytest.raises(FcnError, match=r"cannot write .*out\.txt: Invalid cross-device link"):
        atomic_write_text(tmp_path / "out.txt", "x")
    assert _leftovers(tmp_path) == []


def test_disk_full_in_body_is_one_error_and_nothing_left(tmp_path):
    with pytest.raises(FcnError, match=r"cannot write .*m\.pt: No space left on device"):
        with atomic_path(tmp_path / "m.pt") as tmp:
            tmp.write_bytes(b"half")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert _leftovers(tmp_path) == []


def test_unrelated_oserror_in_body_passes_through(tmp_path):
    with pytest.raises(FileNotFoundError):
        with atomic_path(tmp_path / "m.pt"):
            open(tmp_path / "does-not-exist")
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_mode_follows_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        with atomic_path(tmp_path / "b.png", suffix=".png") as tmp:
            tmp.write_bytes(b"y")
    finally:
        os.umask(old)
    for name in ("a.txt", "b.png"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~umask
    assert _leftovers(tmp_path) == ["a.txt", "b.png"]


def test_check_writable_probes_and_leaves_nothing(tmp_path):
    from fcn_deploy._util import check_writable

    check_writable(tmp_path / "m.pt")
    assert _leftovers(tmp_path) == []
    with pytest.raises(FcnError, match="output folder does not exist"):
        check_writable(tmp_path / "no" / "m.pt")
    if os.path.isdir("/proc/self"):
        with pytest.raises(FcnError, match=r"cannot write /proc/m\.pt: "):
            check_writable("/proc/m.pt")
