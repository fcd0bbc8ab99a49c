"""FCN-32s / FCN-16s / FCN-8s / FCN-8s at-once, faithful to the Caffe reference, and the same
heads on ResNet-18/34 for edge use.

VGG16 (Long, Shelhamer, Darrell; ``voc-fcn*`` prototxts):
- conv1_1 pad 100, other 3x3 convs pad 1 + ReLU, 2x2/2 max pools with ceil mode;
- fc6 = 7x7 conv 512->4096 (pad 0) + ReLU + Dropout(0.5); fc7 = 1x1 4096->4096 + ReLU + Dropout;
- score_fr / score_pool4 / score_pool3: 1x1 convs to n_class, zero-initialised;
- deconvolutions without bias, n_class x n_class kernel with the bilinear filter on the
  diagonal, frozen by default;
- crops offset from the top-left: FCN-32s 19; FCN-16s 5 and 27; FCN-8s 5, 9 and 31;
- FCN-8s at-once scales pool4 by 0.01 and pool3 by 0.0001 before scoring.

ResNet heads (``head_alignment="aligned"``, the default): torchvision-layout ResNet features
at stride s are centred on input pixel s*i (conv1 7x7/2 p3 centres output j on 2j, the 3x3/2 p1
max pool and the 3x3/2 p1 convs / 1x1/2 shortcuts centre m on 2m, so the offsets compose to
zero). Each upsampling by f is an unpadded deconvolution with the odd kernel 2f-1 whose diagonal
is the tent 1 - |d|/f (exact linear interpolation: input i lands on output f*i + f-1), then a
crop at offset f-1: upsampled sample f*i sits on feature i, at every skip fusion and at the
output, for any input size. ``head_alignment="legacy"`` is the earlier head (kernel 2f,
padding f/2, crops at 0), which centres feature i on f*i + (f-1)/2: 3.5 px off at the output of
the stride-8 path, 7.5 px on the stride-16 and 15.5 px on the stride-32 path of FCN-8s. It is
kept so checkpoints trained with it (they carry no ``head_alignment`` build option) rebuild and
export exactly as before. ``tests/test_training_align.py`` measures both with an impulse.

Backbone parameter names equal torchvision's (``features.N`` for VGG16, ``conv1/bn1/layerK``
for ResNet), so ``load_backbone_weights`` takes a torchvision ``.pth`` without torchvision.

For every input size the logits have exactly the input's H and W (the crops export to ONNX
as Shape -> Slice with input-dependent ends).
"""

from __future__ import annotations

from typing import Dict, List, Optional

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from fcn_deploy.errors import FcnError, unknown_name

ARCHS = ("fcn32s", "fcn16s", "fcn8s", "fcn8s-atonce")
BACKBONES = ("vgg16", "resnet18", "resnet34")
HEAD_ALIGNMENTS = ("aligned", "legacy")  # ResNet heads only; VGG16 always has the reference's crops


def bilinear_kernel(in_channels: int, out_channels: int, kernel_size: int) -> torch.Tensor:
    """The reference ``upsample_filt``: bilinear weights on the channel diagonal, zeros elsewhere."""
    factor = (kernel_size + 1) // 2
    center = factor - 1 if kernel_size % 2 == 1 else factor - 0.5
    og = np.ogrid[:kernel_size, :kernel_size]
    filt = (1 - abs(og[0] - center) / factor) * (1 - abs(og[1] - center) / factor)
    weight = np.zeros((in_channels, out_channels, kernel_size, kernel_size), dtype=np.float32)
    for i in range(min(in_channels, out_channels)):
        weight[i, i] = filt
    return torch.from_numpy(weight)


def init_resnet_(module: nn.Module) -> None:
    """torchvision's ResNet init: He-normal (fan_out) convolutions, BatchNorm weight 1 and bias 0."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def _deconv(n: int, kernel: int, stride: int, padding: int = 0, learnable: bool = False) -> nn.ConvTranspose2d:
    layer = nn.ConvTranspose2d(n, n, kernel, stride=stride, padding=padding, bias=False)
    with torch.no_grad():
        layer.weight.copy_(bilinear_kernel(n, n, kernel))
    layer.weight.requires_grad_(learnable)
    return layer


def _score(in_channels: int, n: int) -> nn.Conv2d:
    layer = nn.Conv2d(in_channels, n, 1)
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


# ------------------------------------------------------------------------------------------------
# Backbones. Each returns a dict of feature maps: "pool3" (stride 8), "pool4" (stride 16),
# "out" (stride 32, the input of score_fr) and knows their channel counts.
# ------------------------------------------------------------------------------------------------

VGG16_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


class VGG16Backbone(nn.Module):
    """torchvision's ``vgg16().features`` indices, with pad 100 on conv1_1 and ceil-mode pools,
    plus fc6/fc7 as convolutions."""

    channels = {"pool3": 256, "pool4": 512, "out": 4096}

    def __init__(self):
        super().__init__()
        layers: List[nn.Module] = []
        in_c = 3
        self._taps = {}
        for v in VGG16_CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(2, stride=2, ceil_mode=True))
                pools = sum(1 for l in layers if isinstance(l, nn.MaxPool2d))
                if pools == 3:
                    self._taps[len(layers) - 1] = "pool3"
                elif pools == 4:
                    self._taps[len(layers) - 1] = "pool4"
            else:
                layers.append(nn.Conv2d(in_c, v, 3, padding=100 if not layers else 1))
                layers.append(nn.ReLU(inplace=True))
                in_c = v
        self.features = nn.Sequential(*layers)
        self.fc6 = nn.Conv2d(512, 4096, 7)
        self.relu6 = nn.ReLU(inplace=True)
        self.drop6 = nn.Dropout(0.5)
        self.fc7 = nn.Conv2d(4096, 4096, 1)
        self.relu7 = nn.ReLU(inplace=True)
        self.drop7 = nn.Dropout(0.5)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        out = {}
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self._taps:
                out[self._taps[i]] = x
        x = self.drop6(self.relu6(self.fc6(x)))
        x = self.drop7(self.relu7(self.fc7(x)))
        out["out"] = x
        return out

    def load_torchvision(self, state: Dict[str, torch.Tensor]) -> List[str]:
        """Load a torchvision ``vgg16`` state_dict: features as is, classifier.0/3 reshaped into
        fc6/fc7. Returns the keys that were loaded."""
        own = {}
        for k, v in state.items():
            if k.startswith("features."):
                own[k] = v
        for src, dst, shape in (("classifier.0", "fc6", (4096, 512, 7, 7)), ("classifier.3", "fc7", (4096, 4096, 1, 1))):
            if src + ".weight" in state:
                own[dst + ".weight"] = state[src + ".weight"].reshape(shape)
                own[dst + ".bias"] = state[src + ".bias"]
        _check_and_load(self, own, "vgg16")
        return sorted(own)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNetBackbone(nn.Module):
    """torchvision-named ResNet-18/34 trunk (no ``fc``); skips from layer2 (stride 8) and
    layer3 (stride 16)."""

    LAYERS = {"resnet18": (2, 2, 2, 2), "resnet34": (3, 4, 6, 3)}
    channels = {"pool3": 128, "pool4": 256, "out": 512}

    def __init__(self, name: str):
        super().__init__()
        self.name = name
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        inplanes = 64
        for i, (planes, blocks) in enumerate(zip((64, 128, 256, 512), self.LAYERS[name])):
            stride = 1 if i == 0 else 2
            layer = [BasicBlock(inplanes, planes, stride)] + [BasicBlock(planes, planes) for _ in range(blocks - 1)]
            inplanes = planes
            setattr(self, f"layer{i + 1}", nn.Sequential(*layer))
        init_resnet_(self)
        # Zero-init the last BN of each residual branch (torchvision's zero_init_residual):
        # helps from-scratch training.
        for m in self.modules():
            if isinstance(m, BasicBlock):
                nn.init.zeros_(m.bn2.weight)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer1(x)
        c3 = self.layer2(x)
        c4 = self.layer3(c3)
        c5 = self.layer4(c4)
        return {"pool3": c3, "pool4": c4, "out": c5}

    def load_torchvision(self, state: Dict[str, torch.Tensor]) -> List[str]:
        own = {k: v for k, v in state.items() if not k.startswith("fc.")}
        _check_and_load(self, own, self.name)
        return sorted(own)


def _check_and_load(module: nn.Module, state: Dict[str, torch.Tensor], name: str) -> None:
    expected = module.state_dict()
    unknown = [k for k in state if k not in expected]
    if unknown:
        raise FcnError(f"backbone weights are not a torchvision {name} state_dict (unexpected key {unknown[0]!r})")
    for k, v in state.items():
        if tuple(v.shape) != tuple(expected[k].shape):
            raise FcnError(
                f"backbone weights do not fit {name}: {k} has shape {tuple(v.shape)}, expected {tuple(expected[k].shape)}"
            )
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    if missing:
        raise FcnError(f"backbone weights lack {len(missing)} {name} tensors (first: {missing[0]!r})")
    module.load_state_dict(state, strict=False)


# ------------------------------------------------------------------------------------------------
# Heads
# ------------------------------------------------------------------------------------------------

# (skip stages used, crop offsets) per arch for the VGG reference.
_VGG_CROPS = {
    "fcn32s": {"final": 19},
    "fcn16s": {"pool4": 5, "final": 27},
    "fcn8s": {"pool4": 5, "pool3": 9, "final": 31},
    "fcn8s-atonce": {"pool4": 5, "pool3": 9, "final": 31},
}


def _crop(x: torch.Tensor, offset: int, ref: torch.Tensor) -> torch.Tensor:
    """Offset-from-top-left crop of ``x`` to ``ref``'s spatial size (Caffe's Crop layer)."""
    return x[:, :, offset : offset + ref.shape[2], offset : offset + ref.shape[3]]


class FCN(nn.Module):
    """FCN-32s/16s/8s over a backbone. ``forward(x) -> logits`` of shape (N, n_class, H, W)."""

    def __init__(self, arch: str, backbone: str, num_classes: int, learnable_upsampling: bool = False,
                 head_alignment: str = "aligned"):
        super().__init__()
        if arch not in ARCHS:
            raise unknown_name("arch", arch, ARCHS)
        if backbone not in BACKBONES:
            raise unknown_name("backbone", backbone, BACKBONES)
        if head_alignment not in HEAD_ALIGNMENTS:
            raise unknown_name("head alignment", head_alignment, HEAD_ALIGNMENTS)
        self.head_alignment = head_alignment
        if num_classes < 1:
            raise FcnError(f"num_classes must be >= 1, got {num_classes}")
        self.arch, self.backbone_name, self.num_classes = arch, backbone, num_classes
        self.backbone = VGG16Backbone() if backbone == "vgg16" else ResNetBackbone(backbone)
        channels = self.backbone.channels
        n = num_classes
        skips = {"fcn32s": 0, "fcn16s": 1, "fcn8s": 2, "fcn8s-atonce": 2}[arch]
        self.skips = skips
        self.atonce = arch == "fcn8s-atonce"
        self.vgg = backbone == "vgg16"
        self.score_fr = _score(channels["out"], n)
        if skips >= 1:
            self.score_pool4 = _score(channels["pool4"], n)
        if skips >= 2:
            self.score_pool3 = _score(channels["pool3"], n)
        if self.vgg:
            # The reference's unpadded deconvs and crops.
            if skips == 0:
                self.upscore = _deconv(n, 64, 32, learnable=learnable_upsampling)
            else:
                self.upscore2 = _deconv(n, 4, 2, learnable=learnable_upsampling)
                if skips == 1:
                    self.upscore16 = _deconv(n, 32, 16, learnable=learnable_upsampling)
                else:
                    self.upscore_pool4 = _deconv(n, 4, 2, learnable=learnable_upsampling)
                    self.upscore8 = _deconv(n, 16, 8, learnable=learnable_upsampling)
            self.crops = _VGG_CROPS[arch]
        elif head_alignment == "aligned":
            # ResNet stages give ceil(H / s) samples, sample i centred on pixel s*i. An unpadded
            # deconv with the odd tent kernel 2f-1 puts input i on output f*i + (f-1); cropping
            # at f-1 leaves f*i: aligned at every fusion and at the output. Its length
            # (ceil(H/s) + 1) * f - 1 - (f-1) = f * ceil(H/s) covers the finer stage.
            if skips == 0:
                self.upscore = _deconv(n, 63, 32, learnable=learnable_upsampling)
            else:
                self.upscore2 = _deconv(n, 3, 2, learnable=learnable_upsampling)
                if skips == 1:
                    self.upscore16 = _deconv(n, 31, 16, learnable=learnable_upsampling)
                else:
                    self.upscore_pool4 = _deconv(n, 3, 2, learnable=learnable_upsampling)
                    self.upscore8 = _deconv(n, 15, 8, learnable=learnable_upsampling)
            self.crops = {k: (1 if k != "final" else {0: 31, 1: 15, 2: 7}[skips]) for k in _VGG_CROPS[arch]}
        else:
            # "legacy": the earlier head, kept bit for bit for its checkpoints. A deconv with
            # kernel 2s, stride s, padding s/2 gives s times ceil(H / s) samples, but centres
            # input i on s*i + (s-1)/2 (a half-pixel convention), with every crop at offset 0.
            if skips == 0:
                self.upscore = _deconv(n, 64, 32, padding=16, learnable=learnable_upsampling)
            else:
                self.upscore2 = _deconv(n, 4, 2, padding=1, learnable=learnable_upsampling)
                if skips == 1:
                    self.upscore16 = _deconv(n, 32, 16, padding=8, learnable=learnable_upsampling)
                else:
                    self.upscore_pool4 = _deconv(n, 4, 2, padding=1, learnable=learnable_upsampling)
                    self.upscore8 = _deconv(n, 16, 8, padding=4, learnable=learnable_upsampling)
            self.crops = {k: 0 for k in _VGG_CROPS[arch]}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.backbone(x)
        h = self.score_fr(feats["out"])
        c = self.crops
        if self.skips == 0:
            return _crop(self.upscore(h), c["final"], x)
        pool4 = feats["pool4"] * 0.01 if self.atonce else feats["pool4"]
        h = self._fuse(self.upscore2(h), self.score_pool4(pool4), c["pool4"])
        if self.skips == 1:
            return _crop(self.upscore16(h), c["final"], x)
        pool3 = feats["pool3"] * 0.0001 if self.atonce else feats["pool3"]
        h = self._fuse(self.upscore_pool4(h), self.score_pool3(pool3), c["pool3"])
        return _crop(self.upscore8(h), c["final"], x)

    def _fuse(self, up: torch.Tensor, skip: torch.Tensor, offset: int) -> torch.Tensor:
        """Skip fusion. VGG (unpadded deconvs): the upsampled map is the smaller one and the
        skip is cropped at the reference offset. ResNet: the upsampled map covers the
        ceil-sized skip and is cropped to it at ``offset`` (f-1 aligned, 0 legacy)."""
        if self.vgg:
            return up + _crop(skip, offset, up)
        return _crop(up, offset, skip) + skip


def _register_fcn_family() -> None:
    from fcn_deploy.training.registry import register_arch

    descriptions = {"fcn32s": "FCN-32s", "fcn16s": "FCN-16s", "fcn8s": "FCN-8s",
                    "fcn8s-atonce": "FCN-8s at-once (pool4 x0.01, pool3 x0.0001)"}
    for arch in ARCHS:
        def builder(backbone, num_classes, *, learnable_upsampling=False, head_alignment="aligned", _arch=arch):
            m = FCN(_arch, backbone, num_classes, learnable_upsampling=learnable_upsampling,
                    head_alignment=head_alignment)
            m.build_options = {"learnable_upsampling": bool(learnable_upsampling)}
            if backbone != "vgg16":  # VGG16 has the reference's crops whatever is asked
                m.build_options["head_alignment"] = head_alignment
            return m

        register_arch(arch, backbones=BACKBONES, family="fcn", description=descriptions[arch],
                      convention={b: ("caffe" if b == "vgg16" else "imagenet") for b in BACKBONES},
                      options=("learnable_upsampling", "head_alignment"))(builder)


_register_fcn_family()


def checkpoint_build_options(arch: str, backbone: str, options: Dict) -> Dict:
    """Builder options for a checkpoint's model entry: a ResNet FCN checkpoint that records no
    ``head_alignment`` was written before the aligned head existed, so it is rebuilt with the
    legacy head it was trained with (same weights shape, same outputs, same export)."""
    out = dict(options)
    if arch in ARCHS and backbone != "vgg16" and "head_alignment" not in out:
        out["head_alignment"] = "legacy"
    return out


def build_model(arch: str, backbone: str, num_classes: int, **options):
    """Any registered architecture (see fcn_deploy.training.registry); unknown names list the
    valid ones. Kept here so existing imports keep working."""
    from fcn_deploy.training.registry import build_model as _build

    return _build(arch, backbone, num_classes, **options)


def load_backbone_weights(model: FCN, path: str) -> List[str]:
    """Load a torchvision ``.pth`` state_dict (vgg16 / resnet18 / resnet34) into the backbone.

    Uses ``torch.load(weights_only=True)``; a file that is not such a state_dict gets FcnError.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FcnError(f"backbone weights not found: {path}") from None
    except Exception as e:  # corrupt or foreign pickle
        raise FcnError(f"cannot read backbone weights {path}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise FcnError(f"{path} is not a state_dict of tensors")
    return model.backbone.load_torchvision(state)


def input_convention(backbone: str):
    """Default input convention per backbone: the Caffe one for the faithful VGG16, ImageNet's
    for ResNets (the one torchvision weights expect)."""
    from fcn_deploy.modelinfo import CAFFE_CONVENTION, IMAGENET_CONVENTION

    return CAFFE_CONVENTION if backbone == "vgg16" else IMAGENET_CONVENTION
