"""fcn-import's dispatch and every bad-input path: one ``error:`` line, exit 2, no output file.

Also the wrappers people produce (``module.``, ``{'state_dict'}``, ``{'model'}``,
``{'model_state_dict', 'arch', ...}``) and that the wrapper's other keys reach the importer."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from fcn_deploy.training import importers  # noqa: E402
from fcn_deploy.training.checkpoint import load_checkpoint  # noqa: E402
from fcn_deploy.training.importers import Imported, Importer  # noqa: E402
from fcn_deploy.training.importers.cli import main  # noqa: E402
from fcn_deploy.training.registry import build_model  # noqa: E402

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def tv_state():
    m = build_model("tv-fcn", "resnet-custom", 3, blocks=[1, 1, 1, 1], width_per_group=4, expansion=1)
    return m.state_dict()


def _fails(capsys, argv, *frags, out=None):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    for f in frags:
        assert f in err, err
    if out is not None:
        assert not Path(out).exists()
        assert not [p for p in Path(out).parent.iterdir() if p.name.startswith("." + Path(out).name)]  # no temp left
    return err


def test_unknown_layout_lists_what_was_recognised_and_unexpected_keys(tmp_path, capsys, tv_state):
    sd = dict(tv_state)
    sd["head.extra.weight"] = torch.ones(2)
    torch.save({"state_dict": sd}, tmp_path / "x.pth")
    out = tmp_path / "o.pt"
    _fails(capsys, [str(tmp_path / "x.pth"), str(out)], "unknown layout", "unwrapped 'state_dict'",
           "look like torchvision", "unexpected keys: head.extra.weight", "tried caffe, mmseg, pochih, torchfcn, torchvision", out=out)
    torch.save({"encoder.0.weight": torch.ones(3, 3), "decoder.weight": torch.ones(1)}, tmp_path / "y.pth")
    _fails(capsys, [str(tmp_path / "y.pth"), str(out)], "no known key prefixes", "encoder.* (1), decoder.* (1)", out=out)


def test_explicit_from_names_the_unexpected_keys(tmp_path, capsys, tv_state):
    sd = dict(tv_state)
    sd["head.extra.weight"] = torch.ones(2)
    torch.save(sd, tmp_path / "x.pth")
    _fails(capsys, [str(tmp_path / "x.pth"), str(tmp_path / "o.pt"), "--from", "torchvision"],
           "unexpected keys head.extra.weight", out=tmp_path / "o.pt")


def test_class_count_mismatch_between_flags_and_weights(tmp_path, capsys, tv_state):
    torch.save(tv_state, tmp_path / "w.pth")
    out = tmp_path / "o.pt"
    _fails(capsys, [str(tmp_path / "w.pth"), str(out), "--num-classes", "21"],
           "--num-classes 21, but the weights have 3 classes (classifier.4.weight is (3, 128, 1, 1))", out=out)
    _fails(capsys, [str(tmp_path / "w.pth"), str(out), "--classes", "camvid"], "names 11 classes, the weights have 3", out=out)
    (tmp_path / "names.txt").write_text("a\nb\n")
    _fails(capsys, [str(tmp_path / "w.pth"), str(out), "--classes", str(tmp_path / "names.txt")], "names 2 classes", out=out)


def test_pickled_module_is_refused_without_unpickling(tmp_path, capsys):
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 1))
    torch.save(model, tmp_path / "whole.pth")
    _fails(capsys, [str(tmp_path / "whole.pth"), str(tmp_path / "o.pt")],
           "pickled Python object (torch.nn.modules.container.Sequential)", "torch.save(model)",
           "torch.save(model.state_dict(), 'weights.pt')", out=tmp_path / "o.pt")


def test_mmengine_training_checkpoint_gets_the_clean_up_line(tmp_path, capsys, tv_state):
    """mmengine's message_hub pickles HistoryBuffer objects; faked by a class whose module name
    is mmengine's (the pickle names it; nothing is unpickled)."""
    import sys
    import types

    mod = types.ModuleType("mmengine.logging.history_buffer")

    class HistoryBuffer:
        pass

    HistoryBuffer.__module__, HistoryBuffer.__qualname__ = mod.__name__, "HistoryBuffer"
    mod.HistoryBuffer = HistoryBuffer
    for name in ("mmengine", "mmengine.logging", "mmengine.logging.history_buffer"):
        sys.modules.setdefault(name, types.ModuleType(name))
    sys.modules["mmengine.logging.history_buffer"] = mod
    try:
        torch.save({"state_dict": tv_state, "message_hub": {"log_scalars": {"loss": HistoryBuffer()}}}, tmp_path / "mm.pth")
    finally:
        for name in ("mmengine.logging.history_buffer", "mmengine.logging", "mmengine"):
            sys.modules.pop(name, None)
    _fails(capsys, [str(tmp_path / "mm.pth"), str(tmp_path / "o.pt")], "mmengine/mmcv training checkpoint",
           "mmengine.logging.history_buffer.HistoryBuffer", "'clean.pth'", out=tmp_path / "o.pt")


def test_foreign_and_damaged_files(tmp_path, capsys, tv_state):
    out = tmp_path / "o.pt"
    (tmp_path / "t.pth").write_text("hello")
    _fails(capsys, [str(tmp_path / "t.pth"), str(out)], "not a readable torch file (not a torch checkpoint file)", out=out)
    torch.save(tv_state, tmp_path / "w.pth")
    data = (tmp_path / "w.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    _fails(capsys, [str(tmp_path / "cut.pth"), str(out)], "truncated", out=out)
    _fails(capsys, [str(tmp_path / "missing.pth"), str(out)], "source not found", out=out)
    torch.save([1, 2, 3], tmp_path / "list.pth")
    _fails(capsys, [str(tmp_path / "list.pth"), str(out)], "holds list, not a state_dict", out=out)
    torch.save({"a": torch.ones(1), "b": "text"}, tmp_path / "mixed.pth")
    _fails(capsys, [str(tmp_path / "mixed.pth"), str(out)], "not a state_dict of tensors ('b' is a str)", out=out)
    bad = dict(tv_state)
    bad["classifier.4.bias"] = torch.full((3,), float("nan"))
    torch.save(bad, tmp_path / "nan.pth")
    _fails(capsys, [str(tmp_path / "nan.pth"), str(out)], "classifier.4.bias holds NaN", out=out)
    short = dict(tv_state)
    short["classifier.0.weight"] = short["classifier.0.weight"][:, :5]
    torch.save(short, tmp_path / "shape.pth")
    _fails(capsys, [str(tmp_path / "shape.pth"), str(out)], "classifier.0.weight has shape", out=out)


def test_our_own_checkpoint_and_bad_flags(tmp_path, capsys, tv_state):
    torch.save(tv_state, tmp_path / "w.pth")
    assert main([str(tmp_path / "w.pth"), str(tmp_path / "m.pt")]) == 0
    capsys.readouterr()
    out = tmp_path / "o.pt"
    _fails(capsys, [str(tmp_path / "m.pt"), str(out)], "already an fcn-deploy checkpoint", out=out)
    _fails(capsys, [str(tmp_path / "w.pth"), str(out), "--from", "keras"], "unknown source format 'keras'; valid: caffe, mmseg, pochih, torchfcn, torchvision", out=out)
    _fails(capsys, [str(tmp_path / "w.pth"), str(out), "--input-convention", "rgb"], "unknown input convention 'rgb'", out=out)
    _fails(capsys, [str(tmp_path / "w.pth"), str(tmp_path / "o.onnx")], "OUT must name a .pt file")
    _fails(capsys, [str(tmp_path / "w.pth"), str(tmp_path / "nodir" / "o.pt")], "output folder does not exist")
    (tmp_path / "pal.txt").write_text("1 2 3\n4 5\n")
    _fails(capsys, [str(tmp_path / "w.pth"), str(out), "--palette", str(tmp_path / "pal.txt")], "entry 2 is not an R G B", out=out)
    _fails(capsys, [str(tmp_path / "w.pth"), str(out), "--arch", "fcn8s"], "--arch fcn8s, but these weights are a tv-fcn", out=out)
    _fails(capsys, [str(tmp_path / "w.pth")], "the following arguments are required")


@pytest.mark.parametrize("wrap,steps", [
    (lambda sd: {f"module.{k}": v for k, v in sd.items()}, ["module."]),
    (lambda sd: {"state_dict": sd, "epoch": 3}, ["state_dict"]),
    (lambda sd: {"model": {f"module.{k}": v for k, v in sd.items()}}, ["model", "module."]),
    (lambda sd: {"model_state_dict": sd, "arch": "X", "optim_state_dict": {"lr": 1.0}}, ["model_state_dict"]),
    (lambda sd: {"model": {"state_dict": sd}, "meta": {"k": 1}}, ["model", "state_dict"]),
])
def test_wrappers_are_unwrapped(tmp_path, capsys, tv_state, wrap, steps):
    torch.save(wrap(tv_state), tmp_path / "w.pth")
    assert main([str(tmp_path / "w.pth"), str(tmp_path / "m.pt"), "--classes", _names(tmp_path)]) == 0
    assert "recognised: torchvision FCN" in capsys.readouterr().out
    c = load_checkpoint(tmp_path / "m.pt")
    assert c["import"]["unwrapped"] == steps
    assert "optim_state_dict" not in c["import"]["wrapper_keys"]
    for k, v in tv_state.items():
        assert torch.equal(c["state_dict"][k], v), k


def _names(tmp_path):
    p = tmp_path / "n.txt"
    p.write_text("x\ny\nz\n")
    return str(p)


def test_wrapper_keys_reach_the_importer(tmp_path, monkeypatch, tv_state):
    """torchfcn's trainer dict carries 'arch' beside 'model_state_dict': an importer sees it as
    state.wrapper in detect and options.wrapper in convert."""
    seen = {}

    class Probe(Importer):
        name = "probe"

        def detect(self, state):
            seen["detect"] = dict(state.wrapper)
            return "probe layout" if "classifier.4.weight" in state else None

        def convert(self, state, options):
            seen["convert"] = dict(options.wrapper)
            return Imported(arch="tv-fcn", backbone="resnet-custom", num_classes=3, state_dict=dict(state),
                            build_options={"blocks": [1, 1, 1, 1], "width_per_group": 4, "expansion": 1},
                            info_defaults={"mean": (0, 0, 0), "std": (1, 1, 1), "scale": 1.0, "channel_order": "BGR"})

    importers._ensure_loaded()
    monkeypatch.setitem(importers._IMPORTERS, "probe", Probe())
    torch.save({"model_state_dict": tv_state, "arch": "FCN8sAtOnce", "iteration": 7}, tmp_path / "w.pth")
    # two formats recognise it: auto refuses to guess
    assert main([str(tmp_path / "w.pth"), str(tmp_path / "a.pt")]) == 2
    assert main([str(tmp_path / "w.pth"), str(tmp_path / "m.pt"), "--from", "probe"]) == 0
    assert seen["detect"] == seen["convert"] == {"arch": "FCN8sAtOnce", "iteration": 7}
    c = load_checkpoint(tmp_path / "m.pt")
    assert c["info"]["channel_order"] == "BGR" and c["import"]["wrapper_keys"] == ["arch", "iteration"]
    assert c["info"]["extra"]["import_format"] == "probe" and c["import"]["sha256"] == c["info"]["extra"]["import_sha256"]


def test_ambiguous_detection_is_one_line(tmp_path, capsys, monkeypatch, tv_state):
    class Greedy(Importer):
        name = "greedy"

        def detect(self, state):
            return "anything"

    importers._ensure_loaded()
    monkeypatch.setitem(importers._IMPORTERS, "greedy", Greedy())
    torch.save(tv_state, tmp_path / "w.pth")
    _fails(capsys, [str(tmp_path / "w.pth"), str(tmp_path / "o.pt")], "recognised by several formats", "pick one with --from",
           out=tmp_path / "o.pt")
