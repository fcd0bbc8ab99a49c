"""The TensorRT / pycuda API as the real packages define it (``tests/data/trt_manifest.json``,
written by ``tools/trt_api_manifest.py``), and a checker that holds source code to it.

:func:`check_source` walks a module's AST, follows which names hold the ``tensorrt`` module, the
``pycuda.driver`` module or an object of one of their classes (``trt.Runtime(...)`` is a
``Runtime``; a method's return type comes from the 10.x signatures: ``deserialize_cuda_engine``
returns ``ICudaEngine``...), and reports every attribute used on them that a claimed version
lacks, as ``file:line: ...``. A line may narrow its claim with a ``# trt-api: 10`` comment
(the line runs only on TensorRT 10.x, e.g. ``BuilderFlag.FP16``). Not a test file.
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Dict, List, Optional, Set, Tuple

MANIFEST = Path(__file__).resolve().parent / "data" / "trt_manifest.json"
TRT_VERSIONS = ("10", "11")
ENUM_INSTANCE = {"name", "value", "__int__", "__index__", "__eq__", "__hash__", "itemsize"}
# pycuda's wrapper source gives no return types; these are the ones pycuda documents.
PYCUDA_RETURNS = {
    ("Device", "retain_primary_context"): "Context", ("Device", "make_context"): "Context",
    (None, "mem_alloc"): "DeviceAllocation", ("Context", "get_device"): "Device",
}
PRAGMA = re.compile(r"#\s*trt-api:\s*([0-9, ]+)")


@lru_cache(maxsize=1)
def manifest() -> dict:
    return json.loads(MANIFEST.read_text(encoding="utf-8"))


class Api:
    """One library version: module names, classes, their members (with bases)."""

    def __init__(self, lib: str, version: str):
        m = manifest()
        self.lib, self.version = lib, version
        if lib == "trt":
            d = m["tensorrt"][version]
            self.module = set(d["module"])
            self.classes = d["classes"]
            self.sigs = m["tensorrt"]["10"]["classes"]  # signatures: the 10.x stubs
        else:
            d = m["pycuda"]["driver"]
            self.module = set(d["module"])
            self.classes = {k: {"kind": "class", "members": v, "bases": []} for k, v in d["classes"].items()}
            self.sigs = {}

    def members(self, cls: str) -> Set[str]:
        c = self.classes.get(cls)
        if c is None:
            return set()
        if c["kind"] == "enum":
            names = set(c.get("values") or c.get("members") or [])
            mem = c.get("members")
            return names | (set(mem) if isinstance(mem, (dict,)) else set())
        out = set(c.get("members") or [])
        for b in c.get("bases") or []:
            out |= self.members(b.split(".")[-1])
        return out

    def is_enum(self, cls: str) -> bool:
        return self.classes.get(cls, {}).get("kind") == "enum"

    def returns(self, cls: Optional[str], name: str) -> Optional[str]:
        """The class a method/property returns (10.x signatures; pycuda: its docs), if one of ours."""
        if self.lib == "cuda":
            if cls is None and name in self.classes:
                return name
            return PYCUDA_RETURNS.get((cls, name))
        if cls is None:
            return name if name in self.classes else None
        c = self.sigs.get(cls, {})
        m = (c.get("members") or {}).get(name) if isinstance(c.get("members"), dict) else None
        if m is None:
            for b in c.get("bases") or []:
                r = self.returns(b.split(".")[-1], name)
                if r:
                    return r
            return None
        text = " ".join(m.get("sigs") or []) if m.get("kind") in ("method", "staticmethod") else (m.get("type") or "")
        if m.get("kind") in ("method", "staticmethod"):
            rets = {s.rsplit("->", 1)[-1].strip() for s in m.get("sigs") or [] if "->" in s}
        else:
            rets = {text}
        for r in rets:
            r = r.replace("tensorrt.", "").strip()
            r = re.sub(r"^(typing\.)?Optional\[(.*)\]$", r"\2", r)
            if r in self.classes:
                return r
        return None


@dataclass
class Finding:
    file: str
    line: int
    what: str

    def __str__(self):
        return f"{self.file}:{self.line}: {self.what}"


@dataclass
class Report:
    findings: List[Finding] = field(default_factory=list)
    checked: Set[Tuple[str, str]] = field(default_factory=set)  # (receiver, attribute) pairs checked


Type = Tuple[str, Optional[str]]  # ("trt" | "cuda", class name or None for the module)


class _Checker(ast.NodeVisitor):
    def __init__(self, path: str, source: str, report: Report):
        self.path, self.report = path, report
        self.lines = source.splitlines()
        self.apis = {("trt", v): Api("trt", v) for v in TRT_VERSIONS}
        self.apis[("cuda", "2026")] = Api("cuda", "2026")
        self.tree = ast.parse(source)
        self.module_funcs: Dict[str, Type] = {}
        self.scopes: List[Dict[str, Type]] = [{}]
        self.self_attrs: Dict[str, Type] = {}

    # -- types -------------------------------------------------------------------------------
    def versions(self, lib: str, line: int):
        if lib == "cuda":
            return [self.apis[("cuda", "2026")]]
        text = self.lines[line - 1] if 0 < line <= len(self.lines) else ""
        m = PRAGMA.search(text)
        want = [v.strip() for v in m.group(1).split(",")] if m else list(TRT_VERSIONS)
        return [self.apis[("trt", v)] for v in want]

    def api(self, lib):
        return self.apis[("trt", "10")] if lib == "trt" else self.apis[("cuda", "2026")]

    def lookup(self, name: str) -> Optional[Type]:
        for s in reversed(self.scopes):
            if name in s:
                return s[name]
        return None

    def type_of(self, node) -> Optional[Type]:
        if isinstance(node, ast.ListComp):  # [cuda.Event() for _ in range(4)]: a list of Event
            t = self.type_of(node.elt)
            return ("list", t) if t else None
        if isinstance(node, ast.Subscript):  # events[i]
            t = self.type_of(node.value)
            return t[1] if t and t[0] == "list" else None
        if isinstance(node, ast.Name):
            return self.lookup(node.id)
        if isinstance(node, ast.Attribute):
            if isinstance(node.value, ast.Name) and node.value.id == "self":
                return self.self_attrs.get(node.attr)
            base = self.type_of(node.value)
            if base is None and isinstance(node.value, (ast.Name, ast.Attribute)):
                # An attribute of one of the module's own objects (``engine.context`` on a
                # TrtEngine): the type the module gave ``self.<attr>`` where it assigned it.
                return self.self_attrs.get(node.attr)
            if base is None or base[0] == "list":
                return None
            lib, cls = base
            r = self.api(lib).returns(cls, node.attr)
            if cls is None and r is None and node.attr in self.api(lib).classes:
                r = node.attr
            return (lib, r) if r else None
        if isinstance(node, ast.Call):
            f = node.func
            if isinstance(f, ast.Name) and f.id in self.module_funcs:
                return self.module_funcs[f.id]
            if isinstance(f, ast.Attribute):
                base = self.type_of(f.value)
                if base is None or base[0] == "list":
                    return None
                lib, cls = base
                if cls is None and f.attr in self.api(lib).classes:
                    return (lib, f.attr)  # a constructor
                r = self.api(lib).returns(cls, f.attr)
                return (lib, r) if r else None
        return None

    def bind(self, target, t: Optional[Type]):
        if t is None:
            return
        if isinstance(target, ast.Name):
            self.scopes[-1][target.id] = t
        elif isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name) and target.value.id == "self":
            self.self_attrs[target.attr] = t

    # -- checks ------------------------------------------------------------------------------
    def check_attr(self, node: ast.Attribute):
        if isinstance(node.value, ast.Name) and node.value.id == "self":
            return
        base = self.type_of(node.value)
        if base is None or base[0] == "list":
            return
        lib, cls = base
        for api in self.versions(lib, node.lineno):
            if cls is None:
                ok = node.attr in api.module
                where = "tensorrt" if lib == "trt" else "pycuda.driver"
            else:
                have = api.members(cls)
                ok = node.attr in have or (api.is_enum(cls) and node.attr in ENUM_INSTANCE)
                if cls not in api.classes:
                    ok = False
                where = ("tensorrt." if lib == "trt" else "pycuda.driver.") + cls
            label = f"TensorRT {api.version}" if lib == "trt" else f"pycuda {api.version}"
            self.report.checked.add((where, node.attr))
            if not ok:
                self.report.findings.append(Finding(self.path, node.lineno, f"{where}.{node.attr} does not exist in {label}"))

    # -- walk --------------------------------------------------------------------------------
    def run(self):
        # module aliases and functions returning a module (``def import_tensorrt(): ... return trt``)
        for node in self.tree.body:
            self._imports(node, self.scopes[0])
            if isinstance(node, ast.FunctionDef):
                local: Dict[str, Type] = {}
                for sub in ast.walk(node):
                    self._imports(sub, local)
                for sub in ast.walk(node):
                    if isinstance(sub, ast.Return) and isinstance(sub.value, ast.Name) and sub.value.id in local:
                        self.module_funcs[node.name] = local[sub.value.id]
        # self.X types: two passes over every class so use before assignment in source order works
        for _ in range(2):
            for node in ast.walk(self.tree):
                if isinstance(node, ast.FunctionDef):
                    self.scopes.append(self._params(node))
                    for sub in ast.walk(node):
                        self._imports(sub, self.scopes[-1])
                        if isinstance(sub, ast.Assign):
                            t = self.type_of(sub.value)
                            for tg in sub.targets:
                                self.bind(tg, t)
                    self.scopes.pop()
        self.visit(self.tree)

    def _params(self, fn: ast.FunctionDef) -> Dict[str, Type]:
        return {a.arg: ("trt", None) for a in fn.args.args + fn.args.kwonlyargs if a.arg == "trt"}

    @staticmethod
    def _imports(node, scope):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name == "tensorrt":
                    scope[a.asname or "tensorrt"] = ("trt", None)
                if a.name == "pycuda.driver" and a.asname:
                    scope[a.asname] = ("cuda", None)
        elif isinstance(node, ast.ImportFrom) and node.module == "pycuda":
            for a in node.names:
                if a.name == "driver":
                    scope[a.asname or "driver"] = ("cuda", None)

    def visit_FunctionDef(self, node):
        self.scopes.append(self._params(node))
        self.generic_visit(node)
        self.scopes.pop()

    def visit_Import(self, node):
        self._imports(node, self.scopes[-1])

    visit_ImportFrom = visit_Import

    def visit_Assign(self, node):
        self.generic_visit(node)
        t = self.type_of(node.value)
        for tg in node.targets:
            self.bind(tg, t)

    def visit_Attribute(self, node):
        self.check_attr(node)
        self.generic_visit(node)

    def visit_Call(self, node):
        # getattr(obj, "name") / hasattr(obj, "name") with a constant name count as uses
        # unless they give a default (a deliberate probe of an optional name).
        f = node.func
        if isinstance(f, ast.Name) and f.id in ("getattr", "hasattr") and len(node.args) >= 2 \
                and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str):
            if f.id == "getattr" and len(node.args) == 2:
                fake = ast.Attribute(value=node.args[0], attr=node.args[1].value, ctx=ast.Load())
                ast.copy_location(fake, node)
                self.check_attr(fake)
        self.generic_visit(node)


def check_source(source: str, path: str = "<source>") -> Report:
    report = Report()
    _Checker(path, source, report).run()
    return report


def check_files(paths, root: Path) -> Report:
    report = Report()
    for p in paths:
        p = Path(p)
        rel = p.resolve().relative_to(root.resolve()).as_posix()
        _Checker(rel, p.read_text(encoding="utf-8"), report).run()
    return report
