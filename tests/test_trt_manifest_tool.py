"""tools/trt_api_manifest.py's parsers on small inputs (the tool itself downloads and never runs
in the test suite), and the committed manifest's provenance."""

import importlib.util
import struct
from pathlib import Path

import trt_api

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("trt_api_manifest", ROOT / "tools" / "trt_api_manifest.py")
tool = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tool)

STUB = '''
import typing
class BuilderFlag:
    """Members:"""
    FP16: typing.ClassVar[BuilderFlag]  # value = <BuilderFlag.FP16: 0>
    VERSION_COMPATIBLE: typing.ClassVar[BuilderFlag]  # value = <BuilderFlag.VERSION_COMPATIBLE: 13>
class IPluginV2:
    def get_workspace_size(self, in: list[int], out: list[int]) -> int: ...
class INetworkDefinition:
    def add_scale_nd(self, input: int, mode: int, shift: int = None, channel_axis: int) -> int: ...
    @property
    def num_inputs(self) -> int: ...
'''


def test_stub_syntax_errors_are_patched_and_enum_values_read():
    classes = tool.stub_classes(STUB)
    assert classes["BuilderFlag"]["kind"] == "enum"
    assert classes["BuilderFlag"]["values"] == {"FP16": 0, "VERSION_COMPATIBLE": 13}
    sig = classes["INetworkDefinition"]["members"]["add_scale_nd"]["sigs"][0]
    assert "channel_axis: int=..." in sig and sig.endswith("-> int")
    assert "in_: list[int]" in classes["IPluginV2"]["members"]["get_workspace_size"]["sigs"][0]
    assert classes["INetworkDefinition"]["members"]["num_inputs"] == {"kind": "property", "type": "int"}


def test_pycuda_wrapper_source_is_read():
    cpp = '''
    DECLARE_EXC(Error, NULL);
    py::def("mem_alloc", mem_alloc_wrap, py::return_value_policy<py::manage_new_object>());
    DEF_SIMPLE_FUNCTION(mem_get_info);
    {
      typedef context cl;
      py::class_<cl, shared_ptr<cl>, boost::noncopyable >("Context", py::no_init)
        .def("push", context_push)
        .DEF_SIMPLE_METHOD(pop)
        .staticmethod("pop");
    }
    '''
    api = tool.pycuda_api(cpp, "def pagelocked_zeros(shape, dtype):\n    pass\n")
    assert api["classes"] == {"Context": ["pop", "push"]}
    assert set(api["module"]) == {"Error", "mem_alloc", "mem_get_info", "Context", "pagelocked_zeros"}


def test_elf_literals_in_code_order():
    """A hand-made 64-bit ELF: .text loads two .rodata strings by lea rip+disp32, in that order."""
    rodata = b"\0FP16\0VERSION_COMPATIBLE\0"
    ro_addr, text_addr = 0x2000, 0x1000
    code = b""
    for off in (rodata.index(b"VERSION_COMPATIBLE"), rodata.index(b"FP16")):
        here = text_addr + len(code)
        code += b"\x48\x8d\x35" + struct.pack("<i", ro_addr + off - (here + 7))
    names = [b"", b".shstrtab", b".text", b".rodata", b".rela.dyn"]
    shstr = b"\0".join(names) + b"\0"
    body = code + rodata + shstr
    code_off, ro_off, sh_off_str = 64, 64 + len(code), 64 + len(code) + len(rodata)
    shoff = 64 + len(body)

    def sh(name, typ, addr, off, size):
        return struct.pack("<IIQQQQIIQQ", shstr.index(name + b"\0") if name else 0, typ, 0, addr, off, size, 0, 0, 1, 0)

    secs = [sh(b"", 0, 0, 0, 0), sh(b".shstrtab", 3, 0, sh_off_str, len(shstr)), sh(b".text", 1, text_addr, code_off, len(code)),
            sh(b".rodata", 1, ro_addr, ro_off, len(rodata)), sh(b".rela.dyn", 4, 0, 0, 0)]
    header = bytearray(64)
    header[:6] = b"\x7fELF\x02\x01"
    struct.pack_into("<Q", header, 0x28, shoff)
    struct.pack_into("<HHH", header, 0x3A, 64, len(secs), 1)
    elf = tool.Elf(bytes(header) + body + b"".join(secs))
    assert elf.rodata_refs() == ["VERSION_COMPATIBLE", "FP16"]


def test_committed_manifest_names_its_sources():
    m = trt_api.manifest()
    assert m["format"] == "fcn-deploy/trt-api-manifest" and m["generated_by"] == "python tools/trt_api_manifest.py"
    src = m["sources"]
    assert src["tensorrt11"]["package"] == "tensorrt-cu12-bindings==11.4.0.106"
    assert src["tensorrt10"]["package"].startswith("tensorrt-stubs==10.13")
    assert src["pycuda"]["package"] == "pycuda==2026.1"
    assert all(len(s["sha256"]) == 64 for s in src.values())
