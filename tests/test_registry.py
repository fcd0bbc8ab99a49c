"""The model registry: every family registers by decorator, unknown names list the valid ones,
every arch builds and gives input-sized logits, checkpoints rebuild from build_options (and
old ones with a top-level learnable_upsampling still load), fcn-train uses the registry."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from fcn_deploy.errors import FcnError  # noqa: E402
from fcn_deploy.modelinfo import ModelInfo  # noqa: E402
from fcn_deploy.training import registry  # noqa: E402
from fcn_deploy.training.checkpoint import model_from_checkpoint, save_checkpoint  # noqa: E402

# Small configurations of every family (the full ResNet-50/101 are exercised in the import tests).
SMALL = [
    ("fcn8s", "resnet18", {}),
    ("fcn32s", "resnet34", {"learnable_upsampling": True}),
    ("tv-fcn", "resnet-custom", {"blocks": [1, 1, 1, 1], "width_per_group": 4, "expansion": 1}),
    ("mmseg-fcn", "resnet18", {"base_channels": 8, "stem_channels": 16, "channels": 16}),
    ("mmseg-fcn", "resnet50v1c", {"base_channels": 4, "stem_channels": 8, "channels": 16, "num_convs": 1,
                                  "concat_input": False}),
]


def test_every_family_is_registered_and_listed():
    names = registry.arch_names()
    assert {"fcn8s", "fcn8s-atonce", "tv-fcn", "mmseg-fcn"} <= set(names)
    text = registry.describe()
    for n in names:
        assert n in text
    assert "resnet50v1c" in registry.backbone_names("mmseg-fcn")


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(FcnError, match="unknown arch 'fcn4s'; valid: .*tv-fcn"):
        registry.build_model("fcn4s", "resnet18", 3)
    with pytest.raises(FcnError, match="unknown backbone for tv-fcn 'resnet18'; valid: resnet-custom, resnet101, resnet50"):
        registry.build_model("tv-fcn", "resnet18", 3)
    with pytest.raises(FcnError, match="does not take option.*learnable_upsampling"):
        registry.build_model("tv-fcn", "resnet50", 3, learnable_upsampling=True)
    with pytest.raises(FcnError, match="unknown input convention 'bgr'; valid: caffe, imagenet, mmseg, pochih"):
        registry.convention("bgr")


def test_registering_a_name_twice_is_an_error():
    spec = registry.get_arch("tv-fcn")
    with pytest.raises(FcnError, match="registered twice"):
        registry.register_arch("tv-fcn", backbones=("x",), family="other")(lambda *a, **k: None)
    assert registry.get_arch("tv-fcn") is spec


def test_default_conventions():
    assert registry.default_convention_name("fcn8s", "vgg16") == "caffe"
    assert registry.default_convention_name("fcn8s", "resnet18") == "imagenet"
    assert registry.default_convention_name("tv-fcn", "resnet50") == "imagenet"
    assert registry.default_convention("mmseg-fcn", "resnet18")[2] == (123.675, 116.28, 103.53)


@pytest.mark.parametrize("arch,backbone,opts", SMALL)
def test_build_forward_and_checkpoint_round_trip(tmp_path, arch, backbone, opts):
    torch.manual_seed(0)
    m = registry.build_model(arch, backbone, 3, **opts).eval()
    with torch.no_grad():
        y = m(torch.randn(2, 3, 37, 53))
    assert y.shape == (2, 3, 37, 53)
    info = ModelInfo(arch=arch, backbone=backbone, num_classes=3, class_names=("a", "b", "c"),
                     palette=((0, 0, 0), (1, 1, 1), (2, 2, 2)))
    save_checkpoint(tmp_path / "m.pt", m, info)
    again, _, ck = model_from_checkpoint(tmp_path / "m.pt")
    assert ck["model"]["build_options"] == m.build_options
    with torch.no_grad():
        torch.testing.assert_close(again(torch.randn(1, 3, 21, 30) * 0 + 1), m(torch.randn(1, 3, 21, 30) * 0 + 1))


def test_pre_registry_checkpoint_with_learnable_upsampling_loads(tmp_path):
    # a checkpoint from before the registry also predates the aligned ResNet head
    m = registry.build_model("fcn16s", "resnet18", 3, learnable_upsampling=True, head_alignment="legacy")
    info = ModelInfo(arch="fcn16s", backbone="resnet18", num_classes=3, class_names=("a", "b", "c"),
                     palette=((0, 0, 0), (1, 1, 1), (2, 2, 2)))
    save_checkpoint(tmp_path / "m.pt", m, info)
    ck = torch.load(tmp_path / "m.pt", weights_only=True)
    ck["model"] = {"arch": "fcn16s", "backbone": "resnet18", "num_classes": 3, "learnable_upsampling": True}
    torch.save(ck, tmp_path / "old.pt")
    old, _, _ = model_from_checkpoint(tmp_path / "old.pt")
    assert old.upscore2.weight.requires_grad and old.build_options == {"learnable_upsampling": True, "head_alignment": "legacy"}
    ck["model"] = {"arch": "fcn16s", "backbone": "resnet18", "num_classes": 3}  # older still: frozen
    torch.save(ck, tmp_path / "older.pt")
    assert not model_from_checkpoint(tmp_path / "older.pt")[0].upscore2.weight.requires_grad


def test_damaged_build_options_is_one_error(tmp_path):
    m = registry.build_model("fcn8s", "resnet18", 3)
    info = ModelInfo(arch="fcn8s", backbone="resnet18", num_classes=3, class_names=("a", "b", "c"),
                     palette=((0, 0, 0), (1, 1, 1), (2, 2, 2)))
    save_checkpoint(tmp_path / "m.pt", m, info)
    ck = torch.load(tmp_path / "m.pt", weights_only=True)
    ck["model"]["build_options"] = ["x"]
    with pytest.raises(FcnError, match="build_options is not a mapping"):
        model_from_checkpoint(ck)
    ck["model"]["build_options"] = {"bogus": 1}
    with pytest.raises(FcnError, match="does not take option"):
        model_from_checkpoint(ck)


def test_fcn_train_list_archs_and_registry_validation(tmp_path, capsys):
    from fcn_deploy.training.train import main

    assert main(["--list-archs"]) == 0
    out = capsys.readouterr().out
    assert "tv-fcn" in out and "mmseg-fcn" in out and "resnet50v1c" in out
    assert main(["--arch", "tv-fcn", "--backbone", "resnet18", "--out", str(tmp_path / "m.pt")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown backbone for tv-fcn 'resnet18'; valid:") and err.count("\n") == 1
    assert main(["--arch", "mmseg-fcn", "--backbone", "resnet18", "--learnable-upsampling",
                 "--out", str(tmp_path / "m.pt")]) == 2
    assert "has no deconvolutions to learn" in capsys.readouterr().err
    assert not (tmp_path / "m.pt").exists()


def test_fcn_train_trains_a_registry_arch(tmp_path):
    """A non-FCN-family arch goes through fcn-train (one tiny epoch) with its own convention."""
    from fcn_deploy.training import data as D
    from fcn_deploy.training.train import TrainConfig, train

    spec = D.SyntheticSpec(num_train=4, num_val=2, height=32, width=32, seed=1)
    cfg = TrainConfig(out=str(tmp_path / "m.pt"), format="synthetic", synthetic=spec, arch="mmseg-fcn",
                      backbone="resnet18", epochs=1, batch_size=2, threads=1, progress=False)
    res = train(cfg)
    model, info, ck = model_from_checkpoint(res.best_path)
    assert ck["model"]["arch"] == "mmseg-fcn" and info.mean == (123.675, 116.28, 103.53)


def test_torchvision_imagenet_backbone_weights_load_into_tv_fcn_and_mmseg_r18b(tmp_path):
    """--backbone-weights: a torchvision resnet state_dict (with fc.*) loads into the dilated
    trunks (dilation changes no shape); mmseg's r18b uses torchvision's resnet18 names."""
    from fcn_deploy.training.models import load_backbone_weights

    for arch, backbone, opts in (("tv-fcn", "resnet-custom", {"blocks": [1, 1, 1, 1], "width_per_group": 4, "expansion": 1}),
                                 ("mmseg-fcn", "resnet18", {})):
        src = registry.build_model(arch, backbone, 3, **opts)
        state = {k: torch.randn_like(v) if v.is_floating_point() else v for k, v in src.backbone.state_dict().items()}
        state["fc.weight"], state["fc.bias"] = torch.ones(10, 4), torch.ones(10)
        torch.save(state, tmp_path / "tv.pth")
        m = registry.build_model(arch, backbone, 3, **opts)
        loaded = load_backbone_weights(m, str(tmp_path / "tv.pth"))
        assert "fc.weight" not in loaded and torch.equal(m.backbone.conv1.weight, state["conv1.weight"])
    v1c = registry.build_model("mmseg-fcn", "resnet18v1c", 3)
    with pytest.raises(FcnError, match="not a torchvision resnet state_dict"):
        load_backbone_weights(v1c, str(tmp_path / "tv.pth"))
