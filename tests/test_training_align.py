"""Geometric alignment of the ResNet FCN heads, measured.

A ResNet FCN is built with hand-set weights so that every stage passes channel 0 on as a
*linear-interpolating* (tent) resampler: conv1 7x7/2 and the stride-2 blocks' conv1 3x3/2 carry
a tent of half-width 2 (weights 1 - |d|/2), everything else is the identity (BatchNorm with
mean 0 / var 1 - eps, zero residual branches, zero downsample shortcuts). A tent of half-width
s sampled at stride s reproduces constants and linear functions, so it keeps the centroid
(first moment / mass) of an impulse exactly. The max pool is the only non-linear stage: a spike
on an even input pixel reaches it as a single spike (or two equal ones on either side) and keeps
its centroid; on an odd pixel it moves by one pixel, so the impulses sit on even pixels -- but
not on multiples of 8, 16 or 32, so the stride grids do not hide a shift.

The head's score layers copy channel 0 to class 0. One skip path is enabled at a time (the
other score layers zeroed), so the centroid of the output is measured for the stride-8, the
stride-16 and the stride-32 path separately, at odd image sizes. An aligned head puts it where
the impulse went in; the legacy (padded even-kernel) head shifts it by (s-1)/2 px per
upsampling stage: 3.5 px (stride-8 path of FCN-8s), 7.5 (stride 16), 15.5 (stride 32).
"""

from __future__ import annotations

import pytest
import torch

from fcn_deploy.training.models import FCN, ResNetBackbone, build_model

SIZES = [(193, 225), (161, 257), (225, 193)]  # odd, not multiples of 32
# (y, x) impulse positions, one batch per size: even, far (>= 64 px) from every border, on no
# stride-8 grid line.
POSITIONS = [((98, 108), (94, 130)), ((92, 130), (96, 126)), ((108, 100), (130, 94))]
PATHS = {"fcn8s": ("pool3", "pool4", "fr"), "fcn16s": ("pool4", "fr"), "fcn32s": ("fr",),
         "fcn8s-atonce": ("pool3", "pool4", "fr")}
CLASS_OF = {"pool3": 0, "pool4": 1, "fr": 2}  # each path writes its own class
STRIDE = {"pool3": 8, "pool4": 16, "fr": 32}
LEGACY_SHIFT = {"pool3": 3.5, "pool4": 7.5, "fr": 15.5}  # (s-1)/2 summed over the upsamplings


def _tent(n: int, half_width: float) -> torch.Tensor:
    d = torch.arange(n, dtype=torch.float64) - (n - 1) / 2
    return (1 - d.abs() / half_width).clamp(min=0)


def _identity_bn(bn: torch.nn.BatchNorm2d, weight: float = 1.0) -> None:
    bn.weight.fill_(weight)
    bn.bias.zero_()
    bn.running_mean.zero_()
    bn.running_var.fill_(1.0 - bn.eps)  # (x - 0) / sqrt(var + eps) == x exactly


@torch.no_grad()
def _make_identity_like(model: FCN) -> FCN:
    """Hand-set weights (see the module docstring); score_pool3 / score_pool4 / score_fr copy
    channel 0 to classes 0 / 1 / 2, so each class carries one skip path alone."""
    model = model.eval()
    bb = model.backbone
    assert isinstance(bb, ResNetBackbone)
    for m in bb.modules():
        if isinstance(m, torch.nn.Conv2d):
            m.weight.zero_()
        elif isinstance(m, torch.nn.BatchNorm2d):
            _identity_bn(m)
    t7 = _tent(7, 2.0)
    bb.conv1.weight[0, 0] = torch.outer(t7, t7)
    for name in ("layer1", "layer2", "layer3", "layer4"):
        for block in getattr(bb, name):
            if block.downsample is None:
                _identity_bn(block.bn2, 0.0)  # zero residual branch: the block is relu(x) == x
            else:
                t3 = _tent(3, 2.0)
                block.conv1.weight[0, 0] = torch.outer(t3, t3)  # tent, stride 2
                block.conv2.weight[0, 0, 1, 1] = 1.0
                # downsample conv stays zero: the shortcut adds nothing
    for p in ("pool3", "pool4", "fr"):
        layer = getattr(model, f"score_{p}", None)
        if layer is not None:
            layer.weight.zero_()
            layer.bias.zero_()
            layer.weight[CLASS_OF[p], 0] = 1.0  # channel 0 -> this path's own class
    return model


def _centroid(m: torch.Tensor):
    m = m.double()
    assert (m >= -1e-6).all()
    ys = torch.arange(m.shape[0], dtype=torch.float64)
    xs = torch.arange(m.shape[1], dtype=torch.float64)
    total = m.sum()
    return float((m.sum(1) * ys).sum() / total), float((m.sum(0) * xs).sum() / total)


def _impulses(h: int, w: int, positions) -> torch.Tensor:
    img = torch.zeros(len(positions), 3, h, w)
    for n, (y, x) in enumerate(positions):
        img[n, 0, y, x] = 1.0
    return img


def _mass(model: FCN, path: str, y: int, x: int) -> float:
    """The output's total for a unit impulse at (y, x): the resampling tents keep mass, the max
    pool doubles it along an axis where the spike reaches it between two windows (pixel 2 mod 4),
    each bilinear upsampling by f multiplies it by f * f, so a stride-s path gives s * s; the
    at-once variant also scales pool4 by 0.01 and pool3 by 0.0001."""
    scale = {"pool3": 1e-4, "pool4": 1e-2, "fr": 1.0}[path] if model.atonce else 1.0
    pool = (2 if y % 4 else 1) * (2 if x % 4 else 1)
    return STRIDE[path] ** 2 * scale * pool


def _measure(arch: str, sizes, head_alignment=None):
    """{(path, size, position): (centroid_y, centroid_x)}, checking shape and mass on the way."""
    opts = {} if head_alignment is None else {"head_alignment": head_alignment}
    model = _make_identity_like(build_model(arch, "resnet18", 3, **opts))
    found = {}
    for (h, w), positions in sizes:
        with torch.no_grad():
            out = model(_impulses(h, w, positions))
        assert out.shape == (len(positions), 3, h, w)
        for n, (y, x) in enumerate(positions):
            for path in PATHS[arch]:
                m = out[n, CLASS_OF[path]]
                assert float(m.sum()) == pytest.approx(_mass(model, path, y, x), rel=1e-4)  # nothing lost at a border
                found[(path, (h, w), (y, x))] = _centroid(m)
    return found


@pytest.mark.parametrize("arch", sorted(PATHS))
def test_aligned_head_puts_an_impulse_where_it_went_in(arch):
    for (path, size, pos), got in _measure(arch, zip(SIZES, POSITIONS)).items():
        assert got == pytest.approx(pos, abs=1e-3), f"{arch} {path} path at {size}: impulse at {pos} came out at {got}"


@pytest.mark.parametrize("arch", ["fcn8s", "fcn16s", "fcn32s"])
def test_legacy_head_keeps_its_measured_shift(arch):
    """``head_alignment="legacy"`` is the head the checkpoints recorded in RESULTS were trained
    with: it must keep exactly its old geometry (so they export identically), shift included."""
    for (path, size, (y, x)), got in _measure(arch, [(SIZES[0], POSITIONS[0])], "legacy").items():
        d = LEGACY_SHIFT[path]
        assert got == pytest.approx((y + d, x + d), abs=1e-3), (arch, path, size)


def test_resnet_feature_i_at_stride_s_is_centred_on_pixel_s_times_i():
    """The claim the fix rests on, for the torchvision layout (conv1 7x7/2 p3, max pool 3x3/2
    p1, 3x3/2 p1 convs): an impulse on pixel (32a, 32b) is a single spike at (32a/s, 32b/s) in
    the stride-s features (here with centre-tap weights, so nothing is smeared)."""
    bb = ResNetBackbone("resnet18").eval()
    with torch.no_grad():
        for m in bb.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.weight.zero_()
            elif isinstance(m, torch.nn.BatchNorm2d):
                _identity_bn(m)
        bb.conv1.weight[0, 0, 3, 3] = 1.0
        for name in ("layer1", "layer2", "layer3", "layer4"):
            for block in getattr(bb, name):
                _identity_bn(block.bn2, 0.0)  # residual branch off
                if block.downsample is not None:
                    block.downsample[0].weight[0, 0, 0, 0] = 1.0  # 1x1/2 shortcut: centre tap
        grid = ((2, 3), (3, 5), (4, 2))
        for h, w in SIZES:
            feats = bb(_impulses(h, w, [(32 * a, 32 * b) for a, b in grid]))
            for key, s in (("pool3", 8), ("pool4", 16), ("out", 32)):
                for n, (a, b) in enumerate(grid):
                    f = feats[key][n, 0]
                    assert f.shape == (-(-h // s), -(-w // s))  # ceil(H / s)
                    assert torch.nonzero(f).tolist() == [[32 * a // s, 32 * b // s]], (key, h, w, a, b)


def _old_format_checkpoint(model) -> dict:
    """A checkpoint as fcn-deploy wrote it before the aligned head (no build_options)."""
    from fcn_deploy.modelinfo import IMAGENET_CONVENTION, ModelInfo

    order, scale, mean, std = IMAGENET_CONVENTION
    info = ModelInfo(arch=model.arch, backbone=model.backbone_name, num_classes=model.num_classes,
                     class_names=tuple(f"c{i}" for i in range(model.num_classes)),
                     palette=tuple((i, i, i) for i in range(model.num_classes)),
                     channel_order=order, scale=scale, mean=mean, std=std, ignore_index=255)
    return {"format": "fcn-deploy/checkpoint", "format_version": 1,
            "model": {"arch": model.arch, "backbone": model.backbone_name, "num_classes": model.num_classes,
                      "learnable_upsampling": False},
            "info": info.to_dict(), "state_dict": model.state_dict(), "metrics": {}, "train": None}


def test_a_checkpoint_from_before_the_fix_rebuilds_the_legacy_head_exactly(tmp_path):
    from fcn_deploy.training.checkpoint import model_from_checkpoint, save_checkpoint

    torch.manual_seed(0)
    old = build_model("fcn8s", "resnet18", 3, head_alignment="legacy").eval()
    with torch.no_grad():  # non-zero score layers, so the head's geometry shows in the output
        for name in ("score_fr", "score_pool4", "score_pool3"):
            torch.nn.init.normal_(getattr(old, name).weight, std=0.1)
    x = torch.randn(1, 3, 97, 131)
    model, _, _ = model_from_checkpoint(_old_format_checkpoint(old))
    assert model.head_alignment == "legacy"
    with torch.no_grad():
        assert torch.equal(model(x), old(x))
    # Saved again, it says so, and still rebuilds the legacy head.
    save_checkpoint(tmp_path / "again.pt", model, model_from_checkpoint(_old_format_checkpoint(old))[1])
    again, _, ck = model_from_checkpoint(tmp_path / "again.pt")
    assert ck["model"]["build_options"]["head_alignment"] == "legacy" and again.head_alignment == "legacy"
    # The aligned head has other deconv shapes: legacy weights cannot be loaded into it silently.
    assert build_model("fcn8s", "resnet18", 3).upscore8.weight.shape[-1] == 15
    assert old.upscore8.weight.shape[-1] == 16


def test_a_new_checkpoint_rebuilds_the_aligned_head(tmp_path):
    from fcn_deploy.training.checkpoint import model_from_checkpoint, save_checkpoint

    new = build_model("fcn16s", "resnet34", 3).eval()
    ck = _old_format_checkpoint(new)
    save_checkpoint(tmp_path / "n.pt", new, model_from_checkpoint(_old_format_checkpoint(
        build_model("fcn16s", "resnet34", 3, head_alignment="legacy")))[1])
    model, _, ck = model_from_checkpoint(tmp_path / "n.pt")
    assert ck["model"]["build_options"] == {"learnable_upsampling": False, "head_alignment": "aligned"}
    assert model.head_alignment == "aligned"


def test_vgg16_keeps_the_reference_head_whatever_is_asked():
    a = build_model("fcn8s", "vgg16", 3)
    b = build_model("fcn8s", "vgg16", 3, head_alignment="legacy")
    assert a.crops == b.crops == {"pool4": 5, "pool3": 9, "final": 31}
    assert [tuple(m.weight.shape[-2:]) for m in (a.upscore2, a.upscore_pool4, a.upscore8)] == [(4, 4), (4, 4), (16, 16)]
    assert "head_alignment" not in a.build_options
    with pytest.raises(Exception, match="head alignment"):
        build_model("fcn8s", "resnet18", 3, head_alignment="centred")


@pytest.mark.parametrize("arch", ["fcn32s", "fcn16s", "fcn8s"])
@pytest.mark.parametrize("size", [(1, 1), (7, 9), (33, 65), (97, 131)])
def test_aligned_head_output_is_the_input_size(arch, size):
    m = build_model(arch, "resnet18", 2).eval()
    with torch.no_grad():
        assert m(torch.randn(1, 3, *size)).shape == (1, 2, *size)
