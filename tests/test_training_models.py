"""Architecture pins: output shapes, bilinear deconvs, the reference parameter count, crop offsets,
torchvision-compatible backbone loading."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

from fcn_deploy.errors import FcnError
from fcn_deploy.training.models import ARCHS, build_model, load_backbone_weights

SIZES = [(97, 131), (360, 480), (375, 500)]


@pytest.fixture
def fast_init(monkeypatch):
    """Skip the random init of VGG16's 134M parameters (shapes and counts do not depend on it)."""
    monkeypatch.setattr(nn.init, "kaiming_normal_", lambda t, *a, **k: t)


@pytest.fixture(scope="module")
def vgg_heads():
    """The four VGG16 heads (21 classes) sharing one backbone, built once for the module."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(nn.init, "kaiming_normal_", lambda t, *a, **k: t)
        torch.manual_seed(0)
        models = _heads("vgg16", 21)
    backbone = models["fcn8s"].backbone.inner
    for mod in backbone.modules():
        if isinstance(mod, nn.Conv2d):
            nn.init.normal_(mod.weight, std=0.01)
    return models


class _Memo(nn.Module):
    """Shares one backbone between heads and computes its features once per input tensor, so the
    four heads of a size cost one backbone forward."""

    def __init__(self, backbone):
        super().__init__()
        self.inner = backbone
        self.channels = backbone.channels
        self._key, self._val = None, None

    def forward(self, x):
        if self._key is not x:
            self._key, self._val = x, self.inner(x)
        return self._val


def _heads(backbone_name, n, shared=None):
    models = {}
    for arch in ARCHS:
        m = build_model(arch, backbone_name, n).eval()
        if shared is None:
            shared = _Memo(m.backbone)
        m.backbone = shared  # the head's own backbone is dropped
        models[arch] = m
    return models


@torch.no_grad()
def test_resnet_output_shapes_all_archs_all_sizes():
    torch.manual_seed(0)
    for name, sizes in (("resnet18", SIZES), ("resnet34", SIZES[:1])):
        models = _heads(name, 11)
        for h, w in sizes:
            x = torch.randn(1, 3, h, w)
            for arch, m in models.items():
                assert m(x).shape == (1, 11, h, w), (name, arch, h, w)


@pytest.mark.timeout(300)
@torch.no_grad()
def test_vgg16_output_shapes_small(vgg_heads):
    models = vgg_heads
    x = torch.zeros(1, 3, 97, 131)
    for arch, m in models.items():
        assert m(x).shape == (1, 21, 97, 131), arch


def _score_inputs_and_features(model, x):
    """(inputs of score_pool4 and score_pool3, the backbone's pool4 and pool3) for one forward."""
    seen = {}
    hooks = [getattr(model, n).register_forward_pre_hook(lambda mod, inp, n=n: seen.__setitem__(n, inp[0]))
             for n in ("score_pool4", "score_pool3")]
    hooks.append(model.backbone.register_forward_hook(lambda mod, inp, out: seen.__setitem__("feats", out)))
    try:
        model(x)
    finally:
        for h in hooks:
            h.remove()
    return seen["score_pool4"], seen["score_pool3"], seen["feats"]["pool4"], seen["feats"]["pool3"]


@pytest.mark.timeout(300)
@torch.no_grad()
def test_atonce_scales_the_skips_before_scoring(vgg_heads):
    """FCN-8s at-once (the paper's VGG16 reference): score_pool4 sees pool4 x 0.01 and score_pool3
    sees pool3 x 0.0001; the staged FCN-8s sees them unscaled. Checked on the VGG16 heads and on
    ResNet-18."""
    x = torch.randn(1, 3, 16, 24, generator=torch.Generator().manual_seed(0)) * 50
    resnet = {a: build_model(a, "resnet18", 5).eval() for a in ("fcn8s", "fcn8s-atonce")}
    for models in (vgg_heads, resnet):
        s4, s3, p4, p3 = _score_inputs_and_features(models["fcn8s-atonce"], x)
        assert float(p4.abs().max()) > 0 and float(p3.abs().max()) > 0
        torch.testing.assert_close(s4, p4 * 0.01, rtol=0, atol=0)
        torch.testing.assert_close(s3, p3 * 0.0001, rtol=0, atol=0)
        s4, s3, p4, p3 = _score_inputs_and_features(models["fcn8s"], x)
        torch.testing.assert_close(s4, p4, rtol=0, atol=0)
        torch.testing.assert_close(s3, p3, rtol=0, atol=0)


@pytest.mark.timeout(300)
@pytest.mark.slow
@torch.no_grad()
def test_vgg16_output_shapes_voc_size(vgg_heads):
    # Slow: 500x375 (W x H), the PASCAL VOC size; one backbone forward (~10-20 s on 2 cores) for the
    # 4 heads. The default run checks the same heads at 97x131 (test_vgg16_output_shapes_small).
    models = vgg_heads
    x = torch.zeros(1, 3, 375, 500)
    for arch, m in models.items():
        assert m(x).shape == (1, 21, 375, 500), arch


def _caffe_upsample_filt(size):
    # The reference formula, written out independently of training/models.py.
    factor = (size + 1) // 2
    center = factor - 1 if size % 2 == 1 else factor - 0.5
    r = np.arange(size)
    f1 = 1 - np.abs(r - center) / factor
    return np.outer(f1, f1)


def test_deconv_kernels_are_bilinear_and_frozen(fast_init):
    # Hand values for kernel 4 (stride 2): [0.25, 0.75, 0.75, 0.25] on each axis.
    np.testing.assert_allclose(_caffe_upsample_filt(4)[0], [0.0625, 0.1875, 0.1875, 0.0625])
    for backbone, arch in [("resnet18", a) for a in ARCHS] + [("vgg16", "fcn8s")]:
        m = build_model(arch, backbone, 5)
        deconvs = {n: mod for n, mod in m.named_modules() if isinstance(mod, nn.ConvTranspose2d)}
        assert deconvs, arch
        for n, d in deconvs.items():
            w = d.weight.detach().numpy()
            k = w.shape[-1]
            assert d.bias is None and not d.weight.requires_grad, n
            for i in range(5):
                for j in range(5):
                    want = _caffe_upsample_filt(k) if i == j else np.zeros((k, k))
                    np.testing.assert_allclose(w[i, j], want, atol=0, rtol=0, err_msg=f"{arch}/{n}[{i},{j}]")
    kernels = {n: d.kernel_size[0] for n, d in m.named_modules() if isinstance(d, nn.ConvTranspose2d)}
    assert kernels == {"upscore2": 4, "upscore_pool4": 4, "upscore8": 16}
    learn = build_model("fcn32s", "resnet18", 3, learnable_upsampling=True)
    assert learn.upscore.weight.requires_grad


@pytest.mark.timeout(300)
def test_vgg16_fcn8s_parameter_count(fast_init):
    # Caffe voc-fcn8s / a PyTorch port list 134,489,759 parameters for 21 classes:
    # VGG16 convs 14,714,688 + fc6 102,764,544 + fc7 16,781,312 + score_fr 86,037 + score_pool4 10,773
    # + score_pool3 5,397 + deconvs (no bias) 7,056 + 7,056 + 112,896.
    m = build_model("fcn8s", "vgg16", 21)
    assert sum(p.numel() for p in m.parameters()) == 134_489_759
    m32 = build_model("fcn32s", "vgg16", 21)
    # FCN-32s: no skip scores, one k64 deconv.
    assert sum(p.numel() for p in m32.parameters()) == 14_714_688 + 102_764_544 + 16_781_312 + 86_037 + 21 * 21 * 64 * 64


@pytest.mark.timeout(300)
@torch.no_grad()
def test_vgg16_crop_offsets(vgg_heads):
    """The final output is upscore[..., 31:31+H, 31:31+W] (FCN-8s), 19 (FCN-32s), 27 (FCN-16s); the
    skip scores are cropped at 5 (pool4) and 9 (pool3)."""
    torch.manual_seed(0)
    models = vgg_heads
    # Random non-zero score layers so that crops change values (restored afterwards).
    saved = {}
    for arch, m in models.items():
        for name in ("score_fr", "score_pool4", "score_pool3"):
            if hasattr(m, name):
                saved[arch, name] = getattr(m, name).weight.clone()
                nn.init.normal_(getattr(m, name).weight, std=0.01)
    x = torch.randn(1, 3, 61, 67)
    caught = {}

    def grab(name):
        def hook(mod, inp, out):
            caught[name] = out
        return hook

    for arch, final in (("fcn32s", "upscore"), ("fcn16s", "upscore16"), ("fcn8s", "upscore8")):
        m = models[arch]
        hs = [getattr(m, final).register_forward_hook(grab(final))]
        for s in ("score_pool4", "score_pool3"):
            if hasattr(m, s):
                hs.append(getattr(m, s).register_forward_hook(grab(s)))
        if hasattr(m, "upscore2"):
            hs.append(m.upscore2.register_forward_hook(grab("upscore2")))
        if hasattr(m, "upscore_pool4"):
            hs.append(m.upscore_pool4.register_forward_hook(grab("upscore_pool4")))
        out = m(x)
        off = {"fcn32s": 19, "fcn16s": 27, "fcn8s": 31}[arch]
        up = caught[final]
        assert torch.equal(out, up[:, :, off:off + 61, off:off + 67]), arch
        if arch == "fcn16s":
            u2 = caught["upscore2"]
            p4 = caught["score_pool4"][:, :, 5:5 + u2.shape[2], 5:5 + u2.shape[3]]
            # upscore16's input is upscore2 + crop(score_pool4, 5)
            assert torch.allclose(m.upscore16(u2 + p4), up)
        if arch == "fcn8s":
            u4 = caught["upscore_pool4"]
            p3 = caught["score_pool3"][:, :, 9:9 + u4.shape[2], 9:9 + u4.shape[3]]
            assert torch.allclose(m.upscore8(u4 + p3), up)
        for h in hs:
            h.remove()
        caught.clear()
    for (arch, name), w in saved.items():
        getattr(models[arch], name).weight.copy_(w)
    assert models["fcn8s"].crops == {"pool4": 5, "pool3": 9, "final": 31}
    assert models["fcn32s"].crops == {"final": 19}
    assert models["fcn16s"].crops == {"pool4": 5, "final": 27}


def _torchvision_resnet_state(name, seed=0):
    """What ``torchvision.models.resnetXX().state_dict()`` holds (names and shapes), random values."""
    g = torch.Generator().manual_seed(seed)
    blocks = {"resnet18": (2, 2, 2, 2), "resnet34": (3, 4, 6, 3)}[name]
    sd = {}

    def bn(prefix, c):
        sd[prefix + ".weight"] = torch.rand(c, generator=g) + 0.5
        sd[prefix + ".bias"] = torch.randn(c, generator=g)
        sd[prefix + ".running_mean"] = torch.randn(c, generator=g)
        sd[prefix + ".running_var"] = torch.rand(c, generator=g) + 0.5
        sd[prefix + ".num_batches_tracked"] = torch.tensor(7)

    sd["conv1.weight"] = torch.randn(64, 3, 7, 7, generator=g)
    bn("bn1", 64)
    inp = 64
    for li, (planes, nb) in enumerate(zip((64, 128, 256, 512), blocks)):
        for b in range(nb):
            p = f"layer{li + 1}.{b}"
            stride = 2 if (b == 0 and li > 0) else 1
            sd[p + ".conv1.weight"] = torch.randn(planes, inp, 3, 3, generator=g)
            bn(p + ".bn1", planes)
            sd[p + ".conv2.weight"] = torch.randn(planes, planes, 3, 3, generator=g)
            bn(p + ".bn2", planes)
            if stride != 1 or inp != planes:
                sd[p + ".downsample.0.weight"] = torch.randn(planes, inp, 1, 1, generator=g)
                bn(p + ".downsample.1", planes)
            inp = planes
    sd["fc.weight"] = torch.randn(1000, 512, generator=g)
    sd["fc.bias"] = torch.randn(1000, generator=g)
    return sd


@pytest.mark.parametrize("name", ["resnet18", "resnet34"])
def test_load_torchvision_resnet_pth(tmp_path, name):
    sd = _torchvision_resnet_state(name)
    p = tmp_path / f"{name}.pth"
    torch.save(sd, p)
    m = build_model("fcn8s", name, 4)
    loaded = load_backbone_weights(m, str(p))
    assert "fc.weight" not in loaded and "conv1.weight" in loaded
    got = m.backbone.state_dict()
    for k, v in sd.items():
        if k.startswith("fc."):
            continue
        assert torch.equal(got[k], v), k


@pytest.mark.timeout(300)
def test_load_torchvision_vgg16_pth(tmp_path, fast_init):
    # torchvision vgg16 names: features.{0,2,5,...,28}, classifier.{0,3,6}; classifier.0/3 become fc6/fc7.
    g = torch.Generator().manual_seed(1)
    sd = {}
    convs = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]
    chans = [(3, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 256),
             (256, 512), (512, 512), (512, 512), (512, 512), (512, 512), (512, 512)]
    for i, (ci, co) in zip(convs, chans):
        sd[f"features.{i}.weight"] = torch.randn(co, ci, 3, 3, generator=g)
        sd[f"features.{i}.bias"] = torch.randn(co, generator=g)
    sd["classifier.0.weight"] = torch.zeros(4096, 512 * 7 * 7)
    sd["classifier.0.weight"][:, 5] = torch.arange(4096, dtype=torch.float32)
    sd["classifier.0.bias"] = torch.randn(4096, generator=g)
    sd["classifier.3.weight"] = torch.zeros(4096, 4096)
    sd["classifier.3.weight"][7, :] = 1.5
    sd["classifier.3.bias"] = torch.randn(4096, generator=g)
    sd["classifier.6.weight"] = torch.zeros(1000, 4096)
    sd["classifier.6.bias"] = torch.zeros(1000)
    p = tmp_path / "vgg16.pth"
    torch.save(sd, p)
    m = build_model("fcn32s", "vgg16", 21)
    load_backbone_weights(m, str(p))
    b = m.backbone
    assert torch.equal(b.features[28].weight, sd["features.28.weight"])
    assert torch.equal(b.fc6.weight.reshape(4096, -1), sd["classifier.0.weight"])
    # column 5 of classifier.0 is input channel 0, kernel row 0, col 5
    assert torch.equal(b.fc6.weight[:, 0, 0, 5], torch.arange(4096, dtype=torch.float32))
    assert torch.equal(b.fc7.weight[7, :, 0, 0], torch.full((4096,), 1.5))
    assert torch.equal(b.fc7.bias, sd["classifier.3.bias"])


def test_backbone_weights_errors(tmp_path):
    m = build_model("fcn8s", "resnet18", 4)
    foreign = tmp_path / "foreign.pth"
    torch.save({"encoder.weight": torch.zeros(3)}, foreign)
    with pytest.raises(FcnError, match="not a torchvision resnet18"):
        load_backbone_weights(m, str(foreign))
    # resnet34 weights into resnet18: unexpected keys (layer1.2...)
    r34 = tmp_path / "r34.pth"
    torch.save(_torchvision_resnet_state("resnet34"), r34)
    with pytest.raises(FcnError, match="resnet18"):
        load_backbone_weights(m, str(r34))
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a pickle at all")
    with pytest.raises(FcnError):
        load_backbone_weights(m, str(garbage))
    with pytest.raises(FcnError, match="not found"):
        load_backbone_weights(m, str(tmp_path / "missing.pth"))


def test_unknown_names_list_valid_ones():
    with pytest.raises(FcnError, match="fcn16s"):
        build_model("fcn4s", "resnet18", 3)
    with pytest.raises(FcnError, match="resnet34"):
        build_model("fcn8s", "mobilenet", 3)
