"""torchfcn (wkentaro/pytorch-fcn) import: fcn-import -> fcn-export -> onnxruntime equals
torchfcn's OWN forward on the same random weights.

Needs ``torchfcn`` 1.9.7 (``pip install --no-deps torchfcn==1.9.7``: its declared deps pull in
torchvision, which does not install beside this torch); skipped with that reason otherwise. See
tests/import_parity.py for how its model files are loaded. The default run checks the imported
FCN-8s at-once (from a trainer dict) in PyTorch against torchfcn's forward at 97x131 (VGG16 is
heavy on 2 cores; the VGG16 ONNX export has its own default-run test in test_export_onnx);
FCN_DEPLOY_SLOW=1 runs every class through fcn-export x 97x131, 360x480, 500x375 x batch 1 and 2.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from import_parity import (  # noqa: E402
    SIZES_ALL, SIZES_FAST, caffe_input, check_onnx_against, check_torch_against, load_torchfcn, randomize_, torch_fn,
    torchfcn_missing_reason,
)

from fcn_deploy.export.cli import main as export_main  # noqa: E402
from fcn_deploy.training.checkpoint import load_checkpoint, model_from_checkpoint  # noqa: E402
from fcn_deploy.training.importers.cli import main as import_main  # noqa: E402

pytestmark = pytest.mark.skipif(torchfcn_missing_reason() is not None, reason=str(torchfcn_missing_reason()))
CLASSES = {"fcn32s": "FCN32s", "fcn16s": "FCN16s", "fcn8s": "FCN8s", "fcn8s-atonce": "FCN8sAtOnce"}


def torchfcn_model(cls_name: str, n_class: int = 21, seed: int = 0):
    m = getattr(load_torchfcn(), cls_name)(n_class=n_class)
    randomize_(m, seed)
    return m.eval()


def trainer_dict(model):
    """What torchfcn/trainer.py's validate() saves."""
    optim = torch.optim.SGD(model.parameters(), lr=1e-10, momentum=0.99)
    return {"epoch": 3, "iteration": 1234, "arch": model.__class__.__name__,
            "optim_state_dict": optim.state_dict(), "model_state_dict": model.state_dict(), "best_mean_iu": 0.5}


@pytest.fixture(scope="module")
def atonce(tmp_path_factory):
    d = tmp_path_factory.mktemp("tfcn")
    m = torchfcn_model("FCN8sAtOnce", 21)
    torch.save(trainer_dict(m), d / "checkpoint.pth.tar")
    # A plain state_dict with FCN-8s' keys: the arch is refused from the keys, before any tensor
    # is read, so small tensors stand in for the 538 MB of weights.
    torch.save({k: torch.zeros(1) for k in m.state_dict()}, d / "fcn8s_plain.pth")
    return m, d


def test_stand_in_for_fcn_is_strict():
    # torchfcn's model files import `fcn` only for download(); the stand-in must not fake it.
    import sys

    tf = load_torchfcn()
    if getattr(sys.modules["fcn"], "__file__", None) is None:  # the empty stand-in
        with pytest.raises(AttributeError):
            tf.FCN32s.download()
    assert tf.FCN8sAtOnce.__module__ == "_torchfcn_models.fcn8s"  # torchfcn's own file


def test_trainer_dict_fcn8s_atonce_matches_torchfcn(atonce, tmp_path, capsys):
    m, d = atonce
    ck = tmp_path / "m.pt"
    assert import_main([str(d / "checkpoint.pth.tar"), str(ck)]) == 0
    out = capsys.readouterr().out
    assert "--from torchfcn" in out and "FCN8sAtOnce" in out
    c = load_checkpoint(ck)
    assert (c["model"]["arch"], c["model"]["backbone"], c["model"]["num_classes"]) == ("fcn8s-atonce", "vgg16", 21)
    info = c["info"]
    assert info["channel_order"] == "BGR" and info["scale"] == 1.0 and info["std"] == [1.0, 1.0, 1.0]
    assert info["class_names"][0] == "background" and len(info["class_names"]) == 21
    assert c["import"]["source_format"] == "torchfcn"
    # The imported model against torchfcn's own forward; the ONNX leg of every class runs in
    # test_every_torchfcn_class_all_sizes (slow: a 538 MB VGG16 export costs ~20 s on 2 cores).
    model, _, _ = model_from_checkpoint(ck)
    print(check_torch_against(model.eval(), torch_fn(m), SIZES_FAST))


def test_plain_state_dict_needs_arch(atonce, tmp_path, capsys):
    _, d = atonce
    out = tmp_path / "x.pt"
    assert import_main([str(d / "fcn8s_plain.pth"), str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "FCN8s and FCN8sAtOnce" in err[0] and "--arch fcn8s" in err[0] and "fcn8s-atonce" in err[0]
    assert not out.exists()


def test_trainer_arch_decides_and_conflicting_flag_fails(atonce, tmp_path, capsys):
    _, d = atonce
    out = tmp_path / "x.pt"
    assert import_main([str(d / "checkpoint.pth.tar"), str(out), "--arch", "fcn8s"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "FCN8sAtOnce" in err[0]
    assert not out.exists()


def test_wrong_arch_gives_other_logits(atonce, tmp_path):
    """The parity check can fail: the same weights imported as plain FCN-8s (no 0.01/0.0001
    scaling) do not give torchfcn's FCN8sAtOnce logits."""
    m, _ = atonce
    from fcn_deploy.training.importers import ImportOptions, get_importer
    from fcn_deploy.training.registry import build_model

    # The importer in memory (the CLI path is test_trainer_dict_...; a 538 MB write costs seconds).
    imp = get_importer("torchfcn").convert(m.state_dict(), ImportOptions(arch="fcn8s"))
    assert (imp.arch, imp.backbone) == ("fcn8s", "vgg16")
    model = build_model(imp.arch, imp.backbone, imp.num_classes, **imp.build_options)
    model.load_state_dict(imp.state_dict, strict=True)
    model.eval()
    x = caffe_input(1, 64, 80)
    with torch.no_grad():
        ours = model(torch.from_numpy(x)).numpy()
    ref = torch_fn(m)(x)
    assert np.linalg.norm(ours - ref) / np.linalg.norm(ref) > 1e-2


def test_class_count_flag_mismatch(atonce, tmp_path, capsys):
    _, d = atonce
    out = tmp_path / "x.pt"
    assert import_main([str(d / "checkpoint.pth.tar"), str(out), "--num-classes", "11"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "21" in err[0]
    assert not out.exists()


@pytest.mark.slow
@pytest.mark.parametrize("arch", list(CLASSES))
def test_every_torchfcn_class_all_sizes(arch, tmp_path):
    m = torchfcn_model(CLASSES[arch], 21, seed=3)
    src = tmp_path / "src.pth"
    torch.save(m.state_dict(), src)
    ck, onnx_path = tmp_path / "m.pt", tmp_path / "m.onnx"
    extra = ["--arch", arch] if arch.startswith("fcn8s") else []
    assert import_main([str(src), str(ck), "--from", "torchfcn", *extra]) == 0
    assert export_main([str(ck), str(onnx_path), "--no-verify"]) == 0
    rows = check_onnx_against(onnx_path, torch_fn(m), SIZES_ALL)
    print(arch, rows)
