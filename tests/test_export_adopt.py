"""``fcn-export --adopt``: foreign ONNX files (made here with torch.onnx.export from tiny modules
shaped like the ONNX model zoo's fcn-resnet50-11, with ``out`` + ``aux``, and like NVIDIA's
quickstart export, with ArgMax inside) get fcn-deploy metadata; the runtime, fcn-build's reader,
fcn-eval and fcn-bench then accept them. Bad cases: one line each, nothing written."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import fcn_deploy  # noqa: E402
from fcn_deploy.export.cli import main as export_main  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:You are using the legacy TorchScript-based ONNX export")

SYN = ["background", "disc", "box", "triangle", "ring"]


class ZooLike(nn.Module):
    """torchvision-FCN-shaped: a strided trunk, main + aux heads, bilinear resize to the input."""

    def __init__(self, n=5, softmax=False):
        super().__init__()
        self.trunk = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU())
        self.head = nn.Conv2d(8, n, 1)
        self.aux = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, n, 1))
        self.softmax = softmax

    def forward(self, x):
        f = self.trunk(x)
        out = F.interpolate(self.head(f), size=x.shape[2:], mode="bilinear", align_corners=False)
        aux = F.interpolate(self.aux(f), size=x.shape[2:], mode="bilinear", align_corners=False)
        return (out.softmax(1) if self.softmax else out), aux


class ArgmaxInside(nn.Module):
    """NVIDIA's quickstart wraps the FCN as argmax(model(x)['out'], dim=1, keepdim=True)."""

    def __init__(self):
        super().__init__()
        self.m = ZooLike()

    def forward(self, x):
        return torch.argmax(self.m(x)[0], dim=1, keepdim=True)


class TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.m = ZooLike()

    def forward(self, a, b):
        return self.m(a + b)[0]


class Nhwc(nn.Module):
    def __init__(self):
        super().__init__()
        self.m = ZooLike()

    def forward(self, x):
        return self.m(x.permute(0, 3, 1, 2))[0]


def export(module, path, inputs, input_names, output_names, dynamic=True):
    torch.manual_seed(0)
    module.eval()
    for p in module.parameters():
        nn.init.normal_(p, std=0.3)
    axes = {n: {0: "batch", 2: "height", 3: "width"} for n in input_names} if dynamic else None
    if axes:
        for n in output_names:
            axes[n] = {0: "batch"}
    torch.onnx.export(module, inputs, str(path), input_names=input_names, output_names=output_names,
                      dynamic_axes=axes, opset_version=17, dynamo=False)
    return path


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    d = tmp_path_factory.mktemp("adopt")
    path = export(ZooLike(), d / "fcn-zoo.onnx", (torch.randn(1, 3, 64, 64),), ["input"], ["out", "aux"])
    classes = d / "classes.txt"
    classes.write_text("\n".join(SYN) + "\n")
    return path, classes


def err_line(capsys):
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


def test_flags_are_required_and_named(zoo, tmp_path, capsys):
    path, classes = zoo
    out = tmp_path / "a.onnx"
    assert export_main(["--adopt", str(path), str(out)]) == 2
    e = err_line(capsys)
    assert "--classes" in e and "--input-convention" in e and "imagenet" in e
    assert export_main(["--adopt", str(path), str(out), "--classes", str(classes)]) == 2
    e = err_line(capsys)
    assert "--input-convention" in e and "--classes voc|camvid|FILE and" not in e
    assert not out.exists()


def test_zoo_like_out_and_aux(zoo, tmp_path, capsys):
    path, classes = zoo
    out = tmp_path / "adopted.onnx"
    assert export_main(["--adopt", str(path), str(out), "--classes", str(classes), "--input-convention", "imagenet"]) == 0
    printed = capsys.readouterr().out
    assert "output 'out' (logits)" in printed and "dropped output(s) 'aux'" in printed
    m = onnx.load(str(out))
    assert [o.name for o in m.graph.output] == ["out"]
    meta = {p.key: p.value for p in m.metadata_props}
    assert meta["fcn_deploy.output_name"] == "out" and meta["fcn_deploy.output"] == "logits"
    assert meta["fcn_deploy.channel_order"] == "RGB"
    # same main output as the foreign file, on the runtime
    img = np.random.default_rng(0).integers(0, 256, (45, 61, 3), dtype=np.uint8)
    with fcn_deploy.load(out, backend="onnxruntime") as seg:
        res = seg.segment(img)
    x = ((img.astype(np.float32) / 255 - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]).astype(np.float32)
    x = x.transpose(2, 0, 1)[None]
    ref = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(["out"], {"input": x})[0]
    agree = float((res.labels == ref[0].argmax(0)).mean())
    assert agree >= 0.999, agree
    assert len(np.unique(res.labels)) > 1
    # fcn-build's reader (no TensorRT needed for it)
    from fcn_deploy.build import read_model

    header, info = read_model(out)
    assert info.input_name == "input" and info.num_classes == 5


def test_eval_and_bench_accept_it(zoo, tmp_path, capsys):
    from fcn_deploy.benchmarks.bench import main as bench_main
    from fcn_deploy.benchmarks.evaluate import main as eval_main

    path, classes = zoo
    out = tmp_path / "adopted.onnx"
    assert export_main(["--adopt", str(path), str(out), "--classes", str(classes), "--input-convention", "imagenet"]) == 0
    assert eval_main(["--model", str(out), "--data", str(tmp_path), "--format", "synthetic", "--limit", "2", "-q"]) == 0
    assert bench_main(["--onnx", str(out), "--shape", "1x3x64x64", "--warmup", "1", "--iterations", "2", "-q"]) == 0
    from PIL import Image

    from fcn_deploy.predict import main as predict_main

    Image.fromarray(np.random.default_rng(3).integers(0, 256, (40, 52, 3), dtype=np.uint8)).save(tmp_path / "img.png")
    assert predict_main(["--model", str(out), "--out", str(tmp_path / "masks"), str(tmp_path / "img.png"), "--no-progress"]) == 0
    assert list((tmp_path / "masks").iterdir())


def test_argmax_inside_is_labels(tmp_path, capsys):
    path = export(ArgmaxInside(), tmp_path / "nvidia.onnx", (torch.randn(1, 3, 64, 64),), ["input"], ["output"])
    out = tmp_path / "a.onnx"
    assert export_main(["--adopt", str(path), str(out), "--classes", "voc", "--input-convention", "imagenet"]) == 0
    assert "(labels)" in capsys.readouterr().out
    img = np.random.default_rng(1).integers(0, 256, (50, 70, 3), dtype=np.uint8)
    with fcn_deploy.load(out, backend="onnxruntime") as seg:
        assert seg.output_kind == "labels"
        res = seg.segment(img)
    x = ((img.astype(np.float32) / 255 - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]).astype(np.float32).transpose(2, 0, 1)[None]
    ref = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    assert ref.dtype == np.int64 and ref.shape == (1, 1, 50, 70)
    assert np.array_equal(res.labels, ref[0, 0])


def test_softmax_output_is_probs(tmp_path, capsys):
    path = export(ZooLike(softmax=True), tmp_path / "p.onnx", (torch.randn(1, 3, 64, 64),), ["input"], ["out", "aux"])
    out = tmp_path / "a.onnx"
    names = tmp_path / "c.txt"
    names.write_text("\n".join(SYN))
    assert export_main(["--adopt", str(path), str(out), "--classes", str(names), "--input-convention", "caffe"]) == 0
    assert "(probs)" in capsys.readouterr().out


def test_two_three_channel_inputs_refused(tmp_path, capsys):
    path = export(TwoInputs(), tmp_path / "two.onnx", (torch.randn(1, 3, 64, 64), torch.randn(1, 3, 64, 64)), ["a", "b"], ["out"])
    out = tmp_path / "a.onnx"
    assert export_main(["--adopt", str(path), str(out), "--classes", "voc", "--input-convention", "imagenet"]) == 2
    e = err_line(capsys)
    assert "one image input" in e and "'a'" in e and "'b'" in e
    assert not out.exists()


def test_nhwc_input_refused(tmp_path, capsys):
    path = export(Nhwc(), tmp_path / "nhwc.onnx", (torch.randn(1, 64, 64, 3),), ["input"], ["out"], dynamic=False)
    out = tmp_path / "a.onnx"
    assert export_main(["--adopt", str(path), str(out), "--classes", "voc", "--input-convention", "imagenet"]) == 2
    assert "NHWC" in err_line(capsys)
    assert not out.exists()


def test_class_count_mismatch_refused(zoo, tmp_path, capsys):
    path, _ = zoo
    out = tmp_path / "a.onnx"
    assert export_main(["--adopt", str(path), str(out), "--classes", "voc", "--input-convention", "imagenet"]) == 2
    e = err_line(capsys)
    assert "5 class channels" in e and "21" in e
    assert not out.exists()


def test_no_out_needs_output_name(tmp_path, capsys):
    path = export(ZooLike(), tmp_path / "x.onnx", (torch.randn(1, 3, 64, 64),), ["input"], ["seg", "side"])
    names = tmp_path / "c.txt"
    names.write_text("\n".join(SYN))
    out = tmp_path / "a.onnx"
    args = ["--adopt", str(path), str(out), "--classes", str(names), "--input-convention", "imagenet"]
    assert export_main(args) == 2
    e = err_line(capsys)
    assert "'seg'" in e and "--output-name" in e
    assert export_main(args + ["--output-name", "nope"]) == 2
    assert "'seg'" in err_line(capsys)
    assert not out.exists()
    assert export_main(args + ["--output-name", "seg"]) == 0
    assert [o.name for o in onnx.load(str(out)).graph.output] == ["seg"]


def test_garbage_and_already_adopted(zoo, tmp_path, capsys):
    path, classes = zoo
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x08\x07not really an onnx file" * 10)
    out = tmp_path / "a.onnx"
    flags = ["--classes", str(classes), "--input-convention", "imagenet"]
    assert export_main(["--adopt", str(junk), str(out), *flags]) == 2
    assert "junk.onnx" in err_line(capsys)
    assert export_main(["--adopt", str(path), str(out), *flags]) == 0
    capsys.readouterr()
    again = tmp_path / "b.onnx"
    assert export_main(["--adopt", str(out), str(again), *flags]) == 2
    assert "already carries fcn-deploy metadata" in err_line(capsys)
    assert not again.exists()
    assert export_main(["--adopt", str(path), str(tmp_path / "x.txt"), *flags]) == 2
    assert ".onnx" in err_line(capsys)
    assert export_main(["--classes", "voc", "ck.pt", "o.onnx"]) == 2  # an option of adopt, not of onnx
    e = err_line(capsys)
    assert "--classes" in e and "fcn-export onnx --help" in e


def test_export_options_with_adopt_are_refused_not_ignored(zoo, tmp_path, capsys):
    """adopt stamps metadata only: a precision or other export option is no option of it (it would silently
    not apply), in the old --adopt spelling too."""
    path, classes = zoo
    out = tmp_path / "a.onnx"
    base = ["--adopt", str(path), str(out), "--classes", str(classes), "--input-convention", "imagenet"]
    for extra, flag in ((["--precision", "fp16"], "--precision"), (["--output", "labels"], "--output"),
                        (["--static", "64x64"], "--static")):
        assert export_main(base + extra) == 2
        e = err_line(capsys)
        assert flag in e and "unrecognized arguments" in e and "fcn-export adopt --help" in e, e
        assert not out.exists()
    assert export_main(base) == 0 and out.exists()
