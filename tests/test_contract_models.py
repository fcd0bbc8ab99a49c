"""Contract tests over the model registry (training/registry.py): every registered arch x
backbone is built, run at odd sizes, saved and reloaded as a checkpoint, and exported to a tiny
ONNX that matches PyTorch. A new architecture (one module + one FAMILIES entry) is picked up
here without a new test.

Cost: the default run takes every (arch, backbone) whose backbone is in CHEAP, and exports the
cheapest backbone of each arch; combinations listed in HEAVY (with the reason) run behind the
slow gate. A combination in neither list is built once and must be small (MAX_DEFAULT_PARAMS);
a bigger one fails with a message asking for a HEAVY entry, so the default run stays fast and
nothing goes untested by omission.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from fcn_deploy.training import registry  # noqa: E402

# Backbones cheap enough for the default run (a forward at 33x47 well under a second here).
CHEAP = ("resnet18",)
# (arch or "*", backbone) -> why it is too heavy for the default run.
HEAVY = {
    ("*", "vgg16"): "VGG16: 134M parameters (537 MB); ~20 s per export and ~5 s per build here. "
                    "Its FCN-8s export runs by default in test_export_onnx.py, its shapes in test_training_models.py",
    ("*", "resnet34"): "the ResNet-18 heads on a deeper trunk (3x the forward cost); its shapes run by default in "
                       "test_training_models.py and its FCN-8s export in test_export_onnx.py",
    ("*", "resnet50"): "Bottleneck ResNet-50 trunks (33-47M parameters, 7-10x ResNet-18's forward cost); the "
                       "torchvision and mmseg layouts are checked against their sources' own outputs by default "
                       "in test_import_torchvision.py / test_import_mmseg.py on reduced-width fixtures",
    ("*", "resnet101"): "Bottleneck ResNet-101 trunks (52-66M parameters); see resnet50",
    ("*", "resnet50v1c"): "mmseg's deep-stem ResNet-50 (47M parameters); see resnet50",
    ("*", "resnet101v1c"): "mmseg's deep-stem ResNet-101 (66M parameters); see resnet50",
}
# Backbones that only exist with build options (import-only layouts): the options used here.
OPTIONS = {
    ("tv-fcn", "resnet-custom"): {"blocks": (1, 1, 1, 1), "width_per_group": 16, "expansion": 2},
}
MAX_DEFAULT_PARAMS = 30_000_000
SIZES = ((33, 47), (64, 80))


def _heavy_reason(arch, backbone):
    return HEAVY.get((arch, backbone)) or HEAVY.get(("*", backbone))


def _cases():
    cases, export_cases = [], []
    for arch in registry.arch_names():
        backbones = registry.get_arch(arch).backbones
        first_cheap = next((b for b in backbones if not _heavy_reason(arch, b)), None)
        for b in backbones:
            reason = _heavy_reason(arch, b)
            marks = [pytest.mark.slow, pytest.mark.timeout(600)] if reason else [pytest.mark.timeout(300)]
            cases.append(pytest.param(arch, b, marks=marks, id=f"{arch}-{b}"))
            export_marks = marks if reason else ([] if b == first_cheap else [pytest.mark.slow])
            export_cases.append(pytest.param(arch, b, marks=export_marks, id=f"{arch}-{b}"))
    return cases, export_cases


CASES, EXPORT_CASES = _cases()


def _info(arch, backbone, n):
    from fcn_deploy.modelinfo import CAFFE_CONVENTION, IMAGENET_CONVENTION, ModelInfo
    from fcn_deploy.palette import default_palette

    spec = registry.get_arch(arch)
    try:  # the FCN family knows its backbones' conventions; others declare one per arch
        from fcn_deploy.training.models import input_convention

        order, scale, mean, std = input_convention(backbone)
    except Exception:
        order, scale, mean, std = CAFFE_CONVENTION if spec.convention == "caffe" else IMAGENET_CONVENTION
    return ModelInfo(arch=arch, backbone=backbone, num_classes=n, class_names=tuple(f"c{i}" for i in range(n)),
                     palette=tuple(default_palette(n)), channel_order=order, scale=scale, mean=mean, std=std)


def _built(arch, backbone, n=3):
    """The registered model with its all-zero parameters (zero-initialised score layers) made
    random, in eval mode: outputs that vary, so comparisons mean something."""
    torch.manual_seed(0)
    model = registry.build_model(arch, backbone, n, **OPTIONS.get((arch, backbone), {}))
    if not _heavy_reason(arch, backbone) and backbone not in CHEAP:
        count = sum(p.numel() for p in model.parameters())
        if count > MAX_DEFAULT_PARAMS:
            pytest.fail(f"{arch}/{backbone} has {count / 1e6:.0f}M parameters: add it to HEAVY in {__file__} "
                        "with the reason, so it runs behind the slow gate")
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if p.dtype.is_floating_point and not p.any():
                p.normal_(0, 0.05, generator=gen)
    return model.eval()


def _x(n, h, w, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).normal(size=(n, 3, h, w)).astype(np.float32))


def test_the_registry_is_not_empty():
    assert {"fcn32s", "fcn16s", "fcn8s", "fcn8s-atonce"} <= set(registry.arch_names())
    assert CASES and all(registry.get_arch(a).backbones for a in registry.arch_names())


@pytest.mark.parametrize("arch,backbone", CASES)
def test_model_contract_forward_and_checkpoint(arch, backbone, tmp_path):
    from fcn_deploy.training.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint

    model = _built(arch, backbone, 3)
    assert (model.arch, model.backbone_name, model.num_classes) == (arch, backbone, 3)
    outs = {}
    with torch.no_grad():
        for h, w in SIZES:
            y = model(_x(2, h, w))
            assert tuple(y.shape) == (2, 3, h, w), (arch, backbone, h, w)
            assert y.dtype == torch.float32 and torch.isfinite(y).all()
            assert float(y.std()) > 0, "constant output"
            outs[(h, w)] = y
    # Checkpoint round trip: same arch/backbone/classes, same tensors, same outputs.
    path = tmp_path / "m.pt"
    save_checkpoint(path, model, _info(arch, backbone, 3))
    torch.load(path, weights_only=True)  # the safe loader reads it
    back, info, ck = model_from_checkpoint(path)
    assert (back.arch, back.backbone_name, back.num_classes) == (arch, backbone, 3) and info.num_classes == 3
    a, b = model.state_dict(), back.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not back.training
    with torch.no_grad():
        h, w = SIZES[0]
        assert torch.equal(back(_x(2, h, w)), outs[(h, w)])
    assert load_checkpoint(path)["model"]["arch"] == arch


@pytest.mark.parametrize("arch,backbone", EXPORT_CASES)
def test_model_contract_tiny_onnx_export(arch, backbone, tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from fcn_deploy.export.onnx_export import export_onnx

    model = _built(arch, backbone, 3)
    reports = []
    out = export_onnx((model, _info(arch, backbone, 3)), tmp_path / "m.onnx", verify_sizes=[(33, 47)], reports=reports)
    assert out.is_file() and len(reports) == 1
    rep = reports[0]
    assert rep.verified, rep.format()
    assert all(c.rel_l2 <= 1e-5 for c in rep.cases) and {c.batch for c in rep.cases} == {1, 2}
