"""Mutation check: apply each hand-kept source mutation to a temporary copy of the repository,
run the tests meant to catch it, and print caught / not caught.

    make mutants                                   # every mutation in tools/mutants.toml
    .venv/bin/python tools/mutants.py -k verify    # only those whose id contains "verify"
    .venv/bin/python tools/mutants.py --list

The table (tools/mutants.toml) holds one ``[[mutant]]`` per mutation: ``id``, ``why`` (the
defect it stands for), ``file`` + ``old`` + ``new`` (a literal, sed-style replacement; ``old``
must occur exactly once; ``[[mutant.edit]]`` sub-tables give several edits) and ``tests``
(pytest node ids that must fail under the mutation).

The real tree is never touched: the tracked and untracked-but-not-ignored files are copied to
a folder under the system temp dir, the copy's ``fcn_deploy`` gets links to its own
``training/``, ``export/`` and ``benchmarks/`` (the installed package layout) and is put first
on PYTHONPATH, so the venv's editable install (pointing at the real tree) is shadowed. Each
run first checks that the copy is what gets imported, that every mutation applies, and that
the listed tests pass there unmutated (one run of them all; a test that fails anyway proves
nothing, its mutants are reported BROKEN).

Each mutant's tests run without -x, so the report names every listed test that caught it.

Exit status: 0 when every mutation is caught, 1 when one is not, 2 on a broken table.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TABLE = REPO / "tools" / "mutants.toml"
# Installed layout: fcn_deploy.<name> lives in the repo's top-level <name>/ folder.
SUBPACKAGES = ("training", "export", "benchmarks")


class TableError(Exception):
    pass


def load_table(path: Path = TABLE) -> list:
    doc = tomllib.loads(path.read_text())
    mutants = doc.get("mutant", [])
    seen = set()
    for m in mutants:
        for key in ("id", "why", "tests"):
            if key not in m:
                raise TableError(f"mutant {m.get('id', '?')}: missing {key!r}")
        if m["id"] in seen:
            raise TableError(f"mutant id {m['id']!r} twice")
        seen.add(m["id"])
        edits = m.get("edit") or [{"file": m.get("file"), "old": m.get("old"), "new": m.get("new")}]
        for e in edits:
            if not e.get("file") or e.get("old") is None or e.get("new") is None:
                raise TableError(f"mutant {m['id']}: an edit needs file, old and new")
        m["edits"] = edits
    return mutants


def repo_files() -> list:
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, check=True,
                         capture_output=True).stdout.decode()
    return [f for f in out.split("\0") if f and (REPO / f).is_file()]


def make_copy(dest: Path) -> None:
    for f in repo_files():
        target = dest / f
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / f, target)
    for sub in SUBPACKAGES:
        link = dest / "fcn_deploy" / sub
        if not link.exists():
            link.symlink_to(Path("..") / sub)


def apply_edits(root: Path, edits: list) -> None:
    for e in edits:
        p = root / e["file"]
        text = p.read_text()
        n = text.count(e["old"])
        if n != 1:
            raise TableError(f"{e['file']}: the text to mutate occurs {n} times (must be once): {e['old'][:80]!r}")
        p.write_text(text.replace(e["old"], e["new"]))


def restore(root: Path, edits: list) -> None:
    for e in edits:
        shutil.copy2(REPO / e["file"], root / e["file"])


def _env(root: Path) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(root) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.pop("FCN_DEPLOY_SLOW", None)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def check_imports_copy(root: Path, python: str) -> None:
    code = ("import fcn_deploy, fcn_deploy.training, fcn_deploy.export, fcn_deploy.benchmarks, sys;"
            "print('\\n'.join(m.__file__ for m in (fcn_deploy, fcn_deploy.training, fcn_deploy.export, fcn_deploy.benchmarks)))")
    out = subprocess.run([python, "-c", code], cwd=root, env=_env(root), capture_output=True, text=True)
    files = out.stdout.split()
    if out.returncode != 0 or len(files) != 4 or not all(Path(f).resolve().is_relative_to(root.resolve()) for f in files):
        raise TableError(f"the copy is not what gets imported: {out.stdout} {out.stderr[-500:]}")


def run_tests(root: Path, python: str, tests: list, timeout: float) -> tuple:
    """(exit status, the node ids that failed or errored, the last output line, seconds)."""
    cmd = [python, "-m", "pytest", "-q", "-rfE", "-p", "no:cacheprovider", "-o", "addopts=", *tests]
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, cwd=root, env=_env(root), capture_output=True, text=True, timeout=timeout)
        rc, out = p.returncode, p.stdout + p.stderr
    except subprocess.TimeoutExpired as e:
        rc, out = -1, f"timed out after {timeout:g} s"
    failed = []
    for line in out.splitlines():
        for tag in ("FAILED ", "ERROR "):
            if line.startswith(tag):
                failed.append(line[len(tag):].split(" - ")[0].strip())
    tail = (out.strip().splitlines() or [""])[-1]
    return rc, failed, tail, time.perf_counter() - t0


def _matches(node: str, listed: str) -> bool:
    return node == listed or node.startswith(listed + "[") or node.startswith(listed + "::")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="mutants", description=__doc__.splitlines()[0])
    ap.add_argument("-k", dest="select", help="only mutants whose id contains this text")
    ap.add_argument("--list", action="store_true", help="list the mutants and exit")
    ap.add_argument("--table", type=Path, default=TABLE)
    ap.add_argument("--timeout", type=float, default=900, help="seconds per test run (default %(default)s)")
    ap.add_argument("--markdown", type=Path, help="also write the result table (markdown) to this file")
    ap.add_argument("--keep", action="store_true", help="keep the temporary copy")
    args = ap.parse_args(argv)
    try:
        mutants = load_table(args.table)
    except (TableError, tomllib.TOMLDecodeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.select:
        mutants = [m for m in mutants if args.select in m["id"]]
    if args.list:
        for m in mutants:
            print(f"{m['id']}: {m['why']}  [{', '.join(m['tests'])}]")
        return 0
    python = sys.executable
    tmp = Path(tempfile.mkdtemp(prefix="fcn-mutants-"))
    rows = []
    try:
        root = tmp / "repo"
        make_copy(root)
        check_imports_copy(root, python)
        for m in mutants:  # every mutation applies (fail early on a stale table)
            apply_edits(root, m["edits"])
            restore(root, m["edits"])
        union = sorted({t for m in mutants for t in m["tests"]})
        print(f"copy of {REPO.name} at {root}; {len(mutants)} mutants; unmutated run of {len(union)} tests", flush=True)
        rc0, failed0, tail0, s0 = run_tests(root, python, union, args.timeout)
        print(f"unmutated: {tail0} ({s0:.0f} s)", flush=True)
        if rc0 not in (0, 1):
            raise TableError(f"the unmutated test run did not complete (exit {rc0}): {tail0}")
        for m in mutants:
            broken = [t for t in m["tests"] if any(_matches(f, t) for f in failed0)]
            if broken:
                rows.append((m, "BROKEN", [], f"fails unmutated: {', '.join(broken)}", 0.0))
                print(f"BROKEN      {m['id']}: {', '.join(broken)} fail without the mutation", flush=True)
                continue
            try:
                apply_edits(root, m["edits"])
                rc, failed, tail, s = run_tests(root, python, m["tests"], args.timeout)
            finally:
                restore(root, m["edits"])
            if rc in (0, 1) or rc == -1:
                result = "caught" if rc != 0 else "NOT CAUGHT"
            else:
                result = f"BROKEN (pytest exit {rc})"
            rows.append((m, result, failed, tail, s))
            by = ", ".join(failed) if failed else ("timeout" if rc == -1 else "-")
            print(f"{result:<10}  {m['id']}: caught by {by} ({s:.0f} s)", flush=True)
    except TableError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    caught = sum(r[1] == "caught" for r in rows)
    print(f"\n{caught}/{len(rows)} mutants caught")
    if args.markdown:
        args.markdown.write_text(markdown(rows))
    return 0 if caught == len(rows) else 1


def markdown(rows) -> str:
    head = (f"Run {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC on {platform.node() or '?'} "
            f"({platform.machine()}, Python {platform.python_version()}); load average at the end "
            f"{os.getloadavg()[0]:.2f}\n\n")
    lines = ["| mutation | defect it stands for | tests that caught it | result |", "| --- | --- | --- | --- |"]
    for m, result, failed, tail, s in rows:
        shown = failed or m["tests"]
        tests = "<br>".join(f"`{t.replace('tests/', '')}`" for t in shown)
        lines.append(f"| `{m['id']}` | {m['why']} | {tests} | {result} ({s:.0f} s) |")
    return head + "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
