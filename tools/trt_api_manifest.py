"""Write ``tests/data/trt_manifest.json``: the TensorRT and pycuda API names the real packages define.

One command per release (it downloads three packages with pip, about 3 MB, and imports none)::

    python tools/trt_api_manifest.py                       # the pinned versions below
    python tools/trt_api_manifest.py --trt11 11.5.0.1 --from DIR   # other versions / files already downloaded

Not part of ``make test`` (it downloads); the tests read the committed JSON.

Where each part comes from:

- **TensorRT 10.x**: ``tensorrt-stubs`` (``tensorrt_bindings/tensorrt.pyi``, generated from the
  10.13 bindings by pybind11-stubgen). A few of its signatures are not valid Python
  ("non-default argument follows default argument"); they are patched in memory (the later
  parameters get ``= ...``, a parameter named ``in`` becomes ``in_``) so ``ast`` can read the file. Classes, bases, methods with their
  signatures, properties, and enum members with their integer values (the stub's
  ``# value = <BuilderFlag.FP16: 0>`` comments).
- **TensorRT 11.x**: ``tensorrt-cu12-bindings`` (the wheel's ``tensorrt.so``; it cannot be
  imported without libnvinfer, so it is read as an ELF file). The bindings keep every method's
  docstring in a symbol ``tensorrt::<Class>Doc::<method>`` (a pointer, resolved through the
  ``.rela.dyn`` relocations) and every class's properties as ``:ivar name:`` lines in
  ``<Class>Doc::descr``. Enum members have no symbols; their names are the string literals that
  the registration code loads one after another (``lea reg, [rip+disp]`` in ``.text``, in code
  order, each member after its docstring), so the members of an enum are the identifiers of the
  run of literals that holds its 10.x members. A 10.x member absent from that run is gone in
  11.x (``BuilderFlag.FP16``, ``INT8``, ``BF16``...); an identifier inside the run that 10.x did
  not have is new (``DataType.E8M0``). A 10.x class member with neither a doc symbol nor an
  ``:ivar`` is kept when its name is still a string of the 11.x bindings (``"by": "name"``: the
  name exists there, on some class; the removed APIs, such as ``execute_async_v2``,
  ``int8_calibrator`` or ``platform_has_fast_fp16``, are no string of it at all). Integer values of 11.x enum members cannot be read this way: the manifest
  records names only for 11.x and the stand-ins take the 10.x values where a member exists in both.
- **pycuda**: the sdist's ``src/wrapper/wrap_cudadrv.cpp`` (``py::class_<...>("Name")`` blocks with
  their ``.def("x"`` / ``DEF_SIMPLE_METHOD(x)`` / ``.add_property("x"`` members, module-level
  ``py::def("x"`` / ``DEF_SIMPLE_FUNCTION(x)``, ``DECLARE_EXC(Name, ...)``) plus the module-level
  functions of ``pycuda/driver.py``.

Only classes in :data:`DETAIL` keep signatures (the stand-ins need them); every other class keeps
member names only, so the file stays small.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import io
import json
import re
import struct
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

TRT11 = "11.4.0.106"
STUBS = "10.13.0.35.1"
PYCUDA = "2026.1"
OUT = Path(__file__).resolve().parents[1] / "tests" / "data" / "trt_manifest.json"

# Classes whose signatures are kept (what the project's GPU code and its stand-ins touch).
DETAIL = (
    "Logger", "ILogger", "Builder", "INetworkDefinition", "OnnxParser", "IBuilderConfig",
    "IOptimizationProfile", "ITimingCache", "IHostMemory", "ITensor", "Runtime", "ICudaEngine", "ParserError",
    "IExecutionContext", "Dims",
)
IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
UPPER = re.compile(r"[A-Z][A-Z0-9_]*\Z")


# -- downloads ------------------------------------------------------------------------------------

def download(spec: str, dest: Path, *, sdist: bool = False) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q", "-d", str(dest), spec]
    if sdist:
        cmd[4:4] = ["--no-binary", ":all:", "--no-build-isolation"]
    subprocess.run(cmd, check=True)
    name = re.split(r"[=<>]", spec)[0].replace("-", "_").lower()
    hits = [p for p in dest.iterdir() if p.name.lower().replace("-", "_").startswith(name)]
    if not hits:
        raise SystemExit(f"pip download {spec} left nothing in {dest}")
    return hits[0]


def find_file(folder: Path, prefix: str) -> Path:
    hits = sorted(p for p in folder.iterdir() if p.name.lower().replace("-", "_").startswith(prefix))
    if not hits:
        raise SystemExit(f"no {prefix}* in {folder}")
    return hits[-1]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- TensorRT 10.x: the stubs ---------------------------------------------------------------------

def parse_patched(text: str) -> ast.Module:
    """ast.parse, adding ``= ...`` to the parameters pybind11-stubgen wrote after defaulted ones."""
    import keyword

    kw = "|".join(keyword.kwlist)
    # Parameters named after keywords (``in``) become ``in_``.
    lines = [re.sub(rf"(?<=[(,] )({kw})(?=: )", r"\1_", ln) if ln.lstrip().startswith("def ") else ln
             for ln in text.splitlines()]
    for _ in range(200):
        try:
            return ast.parse("\n".join(lines))
        except SyntaxError as e:
            if "non-default argument follows default argument" not in str(e.msg) and "parameter without a default follows" not in str(e.msg):
                raise
            i = e.lineno - 1
            line = lines[i]
            head, sep, rest = line.partition("(")
            params = rest.rsplit(")", 1)
            depth, out, seen_default, cur = 0, [], False, ""
            for ch in params[0] + ",":
                if ch in "([{":
                    depth += 1
                elif ch in ")]}":
                    depth -= 1
                if ch == "," and depth == 0:
                    p = cur
                    if "=" in p:
                        seen_default = True
                    elif seen_default and p.strip() and not p.strip().startswith("*"):
                        p = p + " = ..."
                    out.append(p)
                    cur = ""
                else:
                    cur += ch
            lines[i] = head + sep + ",".join(out) + ")" + params[1]
    raise SystemExit("could not patch the stubs into valid Python")


def stub_classes(text: str) -> dict:
    tree = parse_patched(text)
    src = text.splitlines()
    classes = {}
    for node in tree.body:
        if not isinstance(node, ast.ClassDef):
            continue
        members, values = {}, {}
        for item in node.body:
            if isinstance(item, ast.FunctionDef):
                decos = {ast.unparse(d) for d in item.decorator_list}
                if "property" in decos:
                    members.setdefault(item.name, {"kind": "property", "type": ast.unparse(item.returns) if item.returns else None})
                elif any(d.endswith(".setter") for d in decos):
                    members[item.name]["settable"] = True
                else:
                    args = item.args
                    sig = "(" + ", ".join(ast.unparse(a) for a in args.args) + ")"
                    if args.defaults:
                        # keep defaults visible: rebuild with ast's own rendering of the arguments
                        sig = "(" + ast.unparse(args) + ")"
                    sig += f" -> {ast.unparse(item.returns)}" if item.returns else ""
                    m = members.setdefault(item.name, {"kind": "staticmethod" if "staticmethod" in decos else "method", "sigs": []})
                    if "sigs" in m and sig not in m["sigs"]:
                        m["sigs"].append(sig)
            elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                name = item.target.id
                line = src[item.lineno - 1]
                mv = re.search(r"# value = <[\w.]+: (-?\d+)>", line)
                if mv and f"ClassVar[{node.name}]" in ast.unparse(item.annotation):
                    values[name] = int(mv.group(1))
                else:
                    members[name] = {"kind": "attribute", "type": ast.unparse(item.annotation)}
        entry = {"bases": [ast.unparse(b) for b in node.bases], "members": members}
        if values:
            entry["kind"] = "enum"
            entry["values"] = dict(sorted(values.items(), key=lambda kv: kv[1]))
        else:
            entry["kind"] = "class"
        classes[node.name] = entry
    return classes


def stub_module_names(init_text: str) -> list:
    names = set()
    for node in ast.parse(init_text).body:
        if isinstance(node, ast.ImportFrom):
            names.update(a.asname or a.name for a in node.names)
        elif isinstance(node, ast.Import):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            for t in (node.targets if isinstance(node, ast.Assign) else [node.target]):
                if isinstance(t, ast.Name):
                    names.add(t.id)
    return sorted(names)


# -- TensorRT 11.x: the ELF file -------------------------------------------------------------------

class Elf:
    def __init__(self, data: bytes):
        if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
            raise SystemExit("tensorrt.so is not a little-endian 64-bit ELF file")
        self.b = data
        shoff, = struct.unpack_from("<Q", data, 0x28)
        shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
        secs = []
        for i in range(shnum):
            name, typ, _flags, addr, off, size, _link, _info, _align, _ent = struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize)
            secs.append({"name": name, "type": typ, "addr": addr, "off": off, "size": size})
        strtab = secs[shstrndx]
        for s in secs:
            o = strtab["off"] + s["name"]
            s["name"] = data[o:data.index(b"\0", o)].decode()
        self.secs = {s["name"]: s for s in secs}
        self.relative = {}
        rd = self.secs[".rela.dyn"]
        for i in range(rd["size"] // 24):
            off, info, addend = struct.unpack_from("<QQq", data, rd["off"] + i * 24)
            if info & 0xFFFFFFFF == 8:  # R_X86_64_RELATIVE
                self.relative[off] = addend

    def in_section(self, name: str, addr: int) -> bool:
        s = self.secs[name]
        return s["addr"] <= addr < s["addr"] + s["size"]

    def cstr(self, addr: int) -> str:
        s = self.secs[".rodata"]
        o = addr - s["addr"] + s["off"]
        return self.b[o:self.b.index(b"\0", o)].decode("utf-8", "replace")

    def symbols(self):
        st, ss = self.secs[".symtab"], self.secs[".strtab"]
        for i in range(st["size"] // 24):
            nm, _info, _other, _shndx, value, size = struct.unpack_from("<IBBHQQ", self.b, st["off"] + i * 24)
            o = ss["off"] + nm
            yield self.b[o:self.b.index(b"\0", o)].decode("utf-8", "replace"), value, size

    def rodata_refs(self):
        """String literals loaded by ``lea r64, [rip+disp32]`` in ``.text``, in code order."""
        t = self.secs[".text"]
        code = self.b[t["off"]:t["off"] + t["size"]]
        out = []
        for m in re.finditer(rb"[\x48\x4c]\x8d[\x05\x0d\x15\x1d\x25\x2d\x35\x3d]", code):
            i = m.start()
            disp, = struct.unpack_from("<i", code, i + 3)
            target = t["addr"] + i + 7 + disp
            if self.in_section(".rodata", target):
                out.append(self.cstr(target))
        return out


DOC_SYM = re.compile(r"_ZN8tensorrt(\d+)")


def doc_symbols(elf: Elf) -> dict:
    """{class: {member: docstring}} from the ``tensorrt::<Class>Doc::<member>`` pointers."""
    out: dict = {}
    for name, value, size in elf.symbols():
        m = DOC_SYM.match(name)
        if not m or size != 8:
            continue
        n = int(m.group(1))
        ns = name[m.end():m.end() + n]
        rest = name[m.end() + n:]
        if not ns.endswith("Doc") or not rest.startswith("L"):
            continue
        m2 = re.match(r"L(\d+)", rest)
        k = int(m2.group(1))
        member = rest[m2.end():m2.end() + k]
        ptr = elf.relative.get(value)
        if ptr is None or not elf.in_section(".rodata", ptr):
            continue
        out.setdefault(ns[:-3], {})[member] = elf.cstr(ptr)
    return out


def trt11_classes(elf: Elf, stub10: dict) -> dict:
    docs = doc_symbols(elf)
    refs = elf.rodata_refs()
    strings = set(refs)
    classes = {}
    # Enums: the run of literals holding most of the 10.x members.
    owner = {}
    for cname, c in stub10.items():
        if c["kind"] == "enum":
            for v in c["values"]:
                owner.setdefault(v, set()).add(cname)
    for cname, c in stub10.items():
        if c["kind"] != "enum":
            continue
        want = set(c["values"])
        best, best_hits = None, 0
        i = 0
        while i < len(refs):
            if refs[i] in want:
                # extend a run of member identifiers (docstrings may sit between them)
                j, hits, run = i, 0, []
                while j < len(refs) and (refs[j] in want or not IDENT.match(refs[j])
                                         or (UPPER.match(refs[j]) and refs[j] not in owner)):
                    if IDENT.match(refs[j]):
                        run.append(refs[j])
                        hits += refs[j] in want
                    j += 1
                if hits > best_hits:
                    best, best_hits = run, hits
                i = j + 1
            else:
                i += 1
        if best is None or best_hits < max(1, len(want) // 3):
            if cname in strings:
                classes[cname] = {"kind": "enum", "members": [], "note": "members not found"}
            continue
        members = []
        for name in best:
            if name not in members:
                members.append(name)
        classes[cname] = {"kind": "enum", "members": members}
    # Classes: documented methods, :ivar properties, and 10.x members whose name is still a
    # string of the 11.x bindings (a literal the code loads, a whole string, or an ``:ivar``).
    ro = elf.secs[".rodata"]
    whole = {x.decode("utf-8", "replace") for x in elf.b[ro["off"]:ro["off"] + ro["size"]].split(b"\0")}
    ivars = {iv for x in whole if ":ivar" in x for iv in re.findall(r":ivar (\w+):", x)}
    names = strings | whole | ivars
    class_names = [n for n, c in stub10.items() if c["kind"] == "class"] + [n for n in docs if n not in stub10]
    for cname in class_names:
        if cname not in names and cname not in docs:
            continue
        members = {}
        for mname, text in docs.get(cname, {}).items():
            if mname == "descr":
                for iv in re.findall(r":ivar (\w+):", text):
                    members[iv] = {"kind": "property", "by": "doc"}
            else:
                members[mname] = {"kind": "method", "by": "doc", "args": re.findall(r":arg (\w+):", text)}
        known = stub10.get(cname, {}).get("members", {})
        for mname, m in known.items():
            if mname not in members and mname in names:
                members[mname] = {"kind": m["kind"] if m["kind"] != "attribute" else "property", "by": "name"}
        classes[cname] = {"kind": "class", "bases": stub10.get(cname, {}).get("bases", []), "members": members}
    return classes


def module_names_py(text: str) -> list:
    names = set()
    for node in ast.parse(text).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return sorted(n for n in names if not n.startswith("_") or n == "__version__")


# -- pycuda --------------------------------------------------------------------------------------

CLASS = re.compile(r'py::class_<[^;{}]*?>\s*(?:\w+\s*)?\(\s*"(\w+)"', re.S)
MEMBER = re.compile(r'\.(?:def|add_property|def_readonly|def_readwrite|staticmethod|add_static_property)\(\s*"(\w+)"|\.DEF_SIMPLE_METHOD(?:_WITH_ARGS)?\((\w+)'
                    r'|\bwrp\.(?:def|add_property)\(\s*"(\w+)"')
MODFUNC = re.compile(r'py::def\(\s*"(\w+)"|DEF_SIMPLE_FUNCTION(?:_WITH_ARGS)?\((\w+)|DECLARE_EXC\((\w+)')


def pycuda_api(cpp: str, driver_py: str) -> dict:
    classes = {}
    matches = list(CLASS.finditer(cpp))
    for k, m in enumerate(matches):
        end = matches[k + 1].start() if k + 1 < len(matches) else len(cpp)
        body = cpp[m.end():end]
        names = {a or b or c for a, b, c in MEMBER.findall(body)}
        classes.setdefault(m.group(1), set()).update(names)
    module = {a or b or c for a, b, c in MODFUNC.findall(cpp)}
    module.update(classes)
    tree = ast.parse(driver_py)
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and not node.name.startswith("_"):
            module.add(node.name)
    # _add_functionality() attaches Python methods: ``Class.name = func``.
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign):
            for t in node.targets:
                if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id in classes:
                    classes[t.value.id].add(t.attr)
    return {"module": sorted(module), "classes": {k: sorted(v) for k, v in sorted(classes.items())}}


# -- main ------------------------------------------------------------------------------------------

def slim(classes: dict, version: str) -> dict:
    out = {}
    for name, c in sorted(classes.items()):
        if name in DETAIL or c["kind"] == "enum":
            out[name] = c
        else:
            out[name] = {k: v for k, v in c.items() if k != "members"}
            out[name]["members"] = sorted(c.get("members", {}))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trt11", default=TRT11, help="tensorrt-cu12-bindings version (default %(default)s)")
    ap.add_argument("--stubs", default=STUBS, help="tensorrt-stubs version (default %(default)s)")
    ap.add_argument("--pycuda", default=PYCUDA, help="pycuda sdist version (default %(default)s)")
    ap.add_argument("--from", dest="src", help="folder holding the three downloaded files (skips pip download)")
    ap.add_argument("--out", default=str(OUT))
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(a.src) if a.src else Path(tmp)
        if not a.src:
            download(f"tensorrt-cu12-bindings=={a.trt11}", folder)
            download(f"tensorrt-stubs=={a.stubs}", folder)
            download(f"pycuda=={a.pycuda}", folder, sdist=True)
        whl11 = find_file(folder, "tensorrt_cu12_bindings")
        whlst = find_file(folder, "tensorrt_stubs")
        sdist = find_file(folder, "pycuda")
        with zipfile.ZipFile(whlst) as z:
            stub_text = z.read("tensorrt_bindings/tensorrt.pyi").decode()
            stub_init = z.read("tensorrt/__init__.pyi").decode()
        with zipfile.ZipFile(whl11) as z:
            so = z.read("tensorrt_bindings/tensorrt.so")
            init11 = z.read("tensorrt_bindings/__init__.py").decode()
        with tarfile.open(sdist) as t:
            root = t.getnames()[0].split("/")[0]
            cpp = t.extractfile(f"{root}/src/wrapper/wrap_cudadrv.cpp").read().decode()
            drv = t.extractfile(f"{root}/pycuda/driver.py").read().decode()
        stub10 = stub_classes(stub_text)
        c11 = trt11_classes(Elf(so), stub10)
        # The package's __init__.py attaches Python methods (``ICudaEngine.__enter__ = common_enter``).
        for node in ast.walk(ast.parse(init11)):
            if isinstance(node, ast.Assign):
                for t in node.targets:
                    if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and c11.get(t.value.id, {}).get("kind") == "class":
                        c11[t.value.id].setdefault("members", {})[t.attr] = {"kind": "method", "by": "python"}
        manifest = {
            "format": "fcn-deploy/trt-api-manifest",
            "generated_by": "python tools/trt_api_manifest.py",
            "sources": {
                "tensorrt10": {"package": f"tensorrt-stubs=={a.stubs}", "file": whlst.name, "sha256": sha256(whlst)},
                "tensorrt11": {"package": f"tensorrt-cu12-bindings=={a.trt11}", "file": whl11.name, "sha256": sha256(whl11)},
                "pycuda": {"package": f"pycuda=={a.pycuda}", "file": sdist.name, "sha256": sha256(sdist)},
            },
            "tensorrt": {
                "10": {"version": a.stubs.rsplit(".", 1)[0] if a.stubs.count(".") > 3 else a.stubs,
                       "module": sorted(set(stub_module_names(stub_init)) | set(stub10)),
                       "classes": slim(stub10, "10")},
                "11": {"version": a.trt11,
                       "module": sorted(set(c11) | set(module_names_py(init11)) | {"__version__"}),
                       "classes": slim(c11, "11")},
            },
            "pycuda": {"version": a.pycuda, "driver": pycuda_api(cpp, drv)},
        }
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(manifest, indent=1, sort_keys=False) + "\n"
    tmp_out = out.with_suffix(".tmp")
    tmp_out.write_text(text, encoding="utf-8")
    tmp_out.replace(out)
    print(f"wrote {out} ({len(text) / 1024:.0f} KiB): TensorRT {a.stubs} stubs ({len(stub10)} classes), "
          f"{a.trt11} bindings ({len(c11)} classes), pycuda {a.pycuda}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
