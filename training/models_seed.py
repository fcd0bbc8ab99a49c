"""The seed's decoder: pochih/FCN-pytorch's ``FCNs`` / ``FCN8s`` / ``FCN16s`` / ``FCN32s``.

Layout read from pochih/FCN-pytorch ``python/fcn.py`` (not copied; no code of it is here):

- backbone ``pretrained_net``: torchvision's ``vgg16().features`` (3x3 convs pad 1 + ReLU,
  2x2/2 max pools with floor mode, no pad 100, no fc6/fc7), tapped after each pool:
  ``x1`` (features[0:5], 64 ch, 1/2) .. ``x5`` (features[24:31], 512 ch, 1/32);
- five ``ConvTranspose2d(k3, s2, p1, output_padding 1)`` stages 512->512->256->128->64->32,
  each ``relu`` then ``BatchNorm2d`` (``deconv1..5``, ``bn1..5``), then a 1x1 ``classifier``;
- skips: ``FCNs`` adds x4, x3, x2, x1 *after* the BN of stages 1-4; ``FCN8s`` adds x4 and x3
  *before* the BN of stages 1-2 (``bn(relu(deconv(s)) + x)``); ``FCN16s`` adds x4 before bn1;
  ``FCN32s`` adds nothing.

Parameter names are pochih's (``pretrained_net.features.N``, ``deconv1..5``, ``bn1..5``,
``classifier``), so a state_dict of his model loads unchanged (training/importers/pochih.py).

Sizes. pochih's model only runs where H and W are multiples of 32 (floor pools, and every
skip-add needs the 2x-upsampled map to equal the skip). Here the input is zero-padded at the
bottom/right to the next multiple of 32 (zero = the mean colour after normalisation) and the
logits are cropped back to H x W, so every size works; at multiples of 32 nothing is padded
and the output equals pochih's forward exactly. Elsewhere it equals pochih's forward of the
padded input, cropped.

Alignment (measured in tests/test_models_seed.py): a k3 s2 p1 op1 deconvolution puts the
centre of coarse pixel i at fine pixel 2i, while the coarse pixel covers fine pixels 2i and
2i+1 (centre 2i + 0.5): each stage shifts its input by half a fine pixel towards the top-left
relative to the skip it is added to. Through five stages the x5 path lands 15.5 input pixels
off (8 + 4 + 2 + 1 + 0.5), the x4 path 7.5, ..., x1 0.5. Learnt kernels cannot undo it (output
2i sees only input i). It is kept, because imported weights were trained with it.
"""

from __future__ import annotations

from typing import Dict, List

import torch
import torch.nn as nn
import torch.nn.functional as F

from fcn_deploy.errors import FcnError

# arch -> pochih class name, and where the skip-adds go.
SEED_ARCHS = {
    "fcns": "FCNs",
    "fcn8s-bn": "FCN8s",
    "fcn16s-bn": "FCN16s",
    "fcn32s-bn": "FCN32s",
}
BACKBONES = ("vgg16",)
_VGG16_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
_STAGE_ENDS = (5, 10, 17, 24, 31)  # features[prev:end] gives x1..x5 (after each pool)
_DECONV_CHANNELS = (512, 512, 256, 128, 64, 32)
STRIDE = 32


class VGG16Features(nn.Module):
    """torchvision ``vgg16().features`` (no pad 100, floor-mode pools), returning x1..x5."""

    channels = (64, 128, 256, 512, 512)

    def __init__(self):
        super().__init__()
        layers: List[nn.Module] = []
        in_c = 3
        for v in _VGG16_CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(2, stride=2))
            else:
                layers += [nn.Conv2d(in_c, v, 3, padding=1), nn.ReLU(inplace=True)]
                in_c = v
        self.features = nn.Sequential(*layers)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        outs = []
        start = 0
        for end in _STAGE_ENDS:
            for i in range(start, end):
                x = self.features[i](x)
            outs.append(x)
            start = end
        return outs

    def load_torchvision(self, state: Dict[str, torch.Tensor]) -> List[str]:
        """A torchvision ``vgg16`` state_dict: ``features.*`` loaded, ``classifier.*`` unused."""
        own = {k: v for k, v in state.items() if k.startswith("features.")}
        expected = self.state_dict()
        unknown = [k for k in own if k not in expected]
        if unknown or not own:
            raise FcnError(f"backbone weights are not a torchvision vgg16 state_dict (unexpected key {(unknown or list(state) or ['none'])[0]!r})")
        for k, v in own.items():
            if tuple(v.shape) != tuple(expected[k].shape):
                raise FcnError(f"backbone weights do not fit vgg16: {k} has shape {tuple(v.shape)}, expected {tuple(expected[k].shape)}")
        missing = [k for k in expected if k not in own]
        if missing:
            raise FcnError(f"backbone weights lack {len(missing)} vgg16 tensors (first: {missing[0]!r})")
        self.load_state_dict(own, strict=True)
        return sorted(own)


class SeedFCN(nn.Module):
    """pochih's deconv decoder over torchvision VGG16 features. ``forward(x)`` -> (N, C, H, W)."""

    def __init__(self, arch: str, backbone: str, num_classes: int):
        super().__init__()
        if arch not in SEED_ARCHS:
            raise FcnError(f"unknown seed arch {arch!r}; valid: {', '.join(SEED_ARCHS)}")
        if backbone not in BACKBONES:
            raise FcnError(f"unknown backbone for {arch} {backbone!r}; valid: {', '.join(BACKBONES)}")
        if num_classes < 1:
            raise FcnError(f"num_classes must be >= 1, got {num_classes}")
        self.arch, self.backbone_name, self.num_classes = arch, backbone, num_classes
        self.build_options: Dict[str, object] = {}
        self.variant = SEED_ARCHS[arch]
        self.pretrained_net = VGG16Features()
        self.relu = nn.ReLU(inplace=True)
        c = _DECONV_CHANNELS
        for i in range(5):
            setattr(self, f"deconv{i + 1}", nn.ConvTranspose2d(c[i], c[i + 1], 3, stride=2, padding=1, output_padding=1))
            setattr(self, f"bn{i + 1}", nn.BatchNorm2d(c[i + 1]))
        self.classifier = nn.Conv2d(c[5], num_classes, 1)

    @property
    def backbone(self) -> VGG16Features:
        """``load_backbone_weights`` and fcn-train look for ``model.backbone``."""
        return self.pretrained_net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[2], x.shape[3]
        pad_h = (STRIDE - h % STRIDE) % STRIDE
        pad_w = (STRIDE - w % STRIDE) % STRIDE
        x = F.pad(x, [0, pad_w, 0, pad_h])
        x1, x2, x3, x4, x5 = self.pretrained_net(x)
        skips = {1: x4, 2: x3, 3: x2, 4: x1}
        v = self.variant
        s = x5
        for i in range(1, 6):
            up = self.relu(getattr(self, f"deconv{i}")(s))
            bn = getattr(self, f"bn{i}")
            if v == "FCNs":
                s = bn(up)
                if i in skips:
                    s = s + skips[i]
            elif (v == "FCN8s" and i <= 2) or (v == "FCN16s" and i == 1):
                s = bn(up + skips[i])
            else:
                s = bn(up)
        return self.classifier(s)[:, :, :h, :w]


def _register() -> None:
    from fcn_deploy.training.registry import register_arch

    desc = {
        "fcns": "pochih FCNs: 5 deconv+BN stages, skip-adds x4..x1 (the seed's decoder)",
        "fcn8s-bn": "pochih FCN8s: 5 deconv+BN stages, skip-adds x4, x3",
        "fcn16s-bn": "pochih FCN16s: 5 deconv+BN stages, skip-add x4",
        "fcn32s-bn": "pochih FCN32s: 5 deconv+BN stages, no skips",
    }
    for arch in SEED_ARCHS:
        def builder(backbone, num_classes, _arch=arch):
            return SeedFCN(_arch, backbone, num_classes)

        register_arch(arch, backbones=BACKBONES, family="seed-deconv", description=desc[arch],
                      convention="imagenet")(builder)


_register()
