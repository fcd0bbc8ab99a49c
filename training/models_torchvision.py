"""torchvision's segmentation FCN (``fcn_resnet50`` / ``fcn_resnet101``), written here without
torchvision (which cannot be installed beside this project's CPU torch build).

Layout, as torchvision's own code has it (``torchvision/models/resnet.py``,
``torchvision/models/segmentation/fcn.py`` and ``_utils.py``; read, not copied):

- backbone: ResNet with Bottleneck blocks (stride on the 3x3 conv, "v1.5"), built with
  ``replace_stride_with_dilation=[False, True, True]``: layer3 and layer4 keep stride 1 and
  dilate instead (layer3: first block dilation 1, the rest 2; layer4: first block 2, the rest 4),
  so the output stride is 8; downsample = 1x1 conv (stride) + BN; no ``fc`` (the
  IntermediateLayerGetter stops at layer4);
- classifier = ``FCNHead(2048, n)``: 3x3 conv 2048->512 (no bias), BN, ReLU, Dropout(0.1),
  1x1 conv 512->n (keys ``classifier.0``, ``classifier.1``, ``classifier.4``);
- output: ``F.interpolate(logits, size=input HxW, mode="bilinear", align_corners=False)``;
- the auxiliary head (``aux_classifier``, on layer3) is a training aid: not built here, its
  weights are dropped on import.

Parameter names equal torchvision's (``backbone.*``, ``classifier.*``), so a torchvision
``state_dict()`` loads without renaming.

Backbones: ``resnet50`` (blocks 3,4,6,3) and ``resnet101`` (3,4,23,3); ``resnet-custom`` takes
``blocks``, ``width_per_group`` (torchvision's parameter: 128 for wide_resnet50_2) and
``expansion`` (4 for torchvision's Bottleneck; other values only for the small test fixture)
as build options, so a checkpoint of any such variant rebuilds from its recorded options.

Alignment (kept as torchvision has it, so outputs equal torchvision's; the weights were trained
with it): the stride-8 feature pixel j is centred on input pixel 8j (stem conv 7x7/2 pad 3,
max pool 3/2 pad 1, the stride-2 3x3 pad 1 / 1x1 convs of layer2 are all centred), but the
align_corners=False resize maps output pixel i to feature coordinate (i + 0.5) * h / H - 0.5,
i.e. (i - 3.5) / 8 when H = 8h. The logits are therefore shifted by 3.5 input pixels towards
the bottom-right (and, when H is not a multiple of 8, stretched by 8h/H) against an aligned
upsampling. ``tests/test_import_torchvision.py`` measures this shift.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from fcn_deploy.errors import FcnError
from fcn_deploy.training.models import BasicBlock, init_resnet_

BLOCKS = {"resnet50": (3, 4, 6, 3), "resnet101": (3, 4, 23, 3)}
BACKBONES = ("resnet50", "resnet101", "resnet-custom")


class Bottleneck(nn.Module):
    """torchvision's Bottleneck: 1x1 -> 3x3 (stride, dilation) -> 1x1 expand, residual."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: Optional[nn.Module] = None,
                 width: Optional[int] = None, dilation: int = 1, expansion: int = 4):
        super().__init__()
        width = planes if width is None else width
        self.conv1 = nn.Conv2d(inplanes, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, planes * expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class MMSegBasicBlock(BasicBlock):
    """mmseg's BasicBlock (``mmseg/models/backbones/resnet.py``): conv1 3x3 carries stride and
    dilation (padding = dilation), conv2 is a plain 3x3 (padding 1, NOT dilated); the downsample
    is given by the trunk. Same layers and forward as the FCN family's BasicBlock."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: Optional[nn.Module] = None,
                 width: Optional[int] = None, dilation: int = 1, expansion: int = 1):
        nn.Module.__init__(self)
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample


class DilatedResNet(nn.Module):
    """A torchvision-named ResNet trunk with output stride 8 (layer3/4 dilated 2/4, their first
    blocks 1/2: torchvision's replace_stride_with_dilation and mmseg's contract_dilation agree).

    ``deep_stem``: mmseg's ResNetV1c stem (``stem.0..8``: three 3x3 convs 3->32->32->64 with BN
    and ReLU) instead of ``conv1``/``bn1``. ``stem_channels``/``base_channels``: mmseg's ResNet
    parameters (64 for every published model; torchvision has no such knobs). Returns layer4's
    features (and layer3's as "aux").
    """

    def __init__(self, blocks: Sequence[int], *, block: str = "bottleneck", width_per_group: int = 64,
                 expansion: int = 4, deep_stem: bool = False, stem_channels: int = 64, base_channels: int = 64):
        super().__init__()
        if len(blocks) != 4 or min(blocks) < 1:
            raise FcnError(f"a ResNet needs 4 stages of >= 1 blocks, got {list(blocks)}")
        self.deep_stem = deep_stem
        if deep_stem:
            half = stem_channels // 2
            self.stem = nn.Sequential(
                nn.Conv2d(3, half, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(half), nn.ReLU(inplace=True),
                nn.Conv2d(half, half, 3, padding=1, bias=False), nn.BatchNorm2d(half), nn.ReLU(inplace=True),
                nn.Conv2d(half, stem_channels, 3, padding=1, bias=False), nn.BatchNorm2d(stem_channels), nn.ReLU(inplace=True),
            )
        else:
            self.conv1 = nn.Conv2d(3, stem_channels, 7, stride=2, padding=3, bias=False)
            self.bn1 = nn.BatchNorm2d(stem_channels)
            self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        Block = Bottleneck if block == "bottleneck" else MMSegBasicBlock
        if block == "basic":
            expansion = 1
        self.expansion = expansion
        inplanes = stem_channels
        strides, dilations = (1, 2, 1, 1), (1, 1, 2, 4)
        for i, n in enumerate(blocks):
            planes = base_channels * 2 ** i
            stride, dil = strides[i], dilations[i]
            first_dil = dil // 2 if dil > 1 else dil
            width = int(planes * (width_per_group / 64.0))
            down = None
            if stride != 1 or inplanes != planes * expansion:
                down = nn.Sequential(nn.Conv2d(inplanes, planes * expansion, 1, stride=stride, bias=False),
                                     nn.BatchNorm2d(planes * expansion))
            layer = [Block(inplanes, planes, stride, down, width=width, dilation=first_dil, expansion=expansion)]
            inplanes = planes * expansion
            layer += [Block(inplanes, planes, width=width, dilation=dil, expansion=expansion) for _ in range(n - 1)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*layer))
        self.out_channels = inplanes
        init_resnet_(self)

    def forward(self, x) -> Dict[str, torch.Tensor]:
        if self.deep_stem:
            x = self.stem(x)
        else:
            x = self.relu(self.bn1(self.conv1(x)))
        x = self.maxpool(x)
        x = self.layer2(self.layer1(x))
        aux = self.layer3(x)
        return {"aux": aux, "out": self.layer4(aux)}

    def load_torchvision(self, state: Dict[str, torch.Tensor]) -> List[str]:
        """``--backbone-weights``: an ImageNet torchvision resnet50/101 state_dict (``fc`` dropped)."""
        from fcn_deploy.training.models import _check_and_load

        own = {k: v for k, v in state.items() if not k.startswith("fc.")}
        _check_and_load(self, own, "resnet")
        return sorted(own)


class FCNHead(nn.Sequential):
    """torchvision's FCNHead: 3x3 conv (in -> in/4, no bias), BN, ReLU, Dropout(0.1), 1x1 conv."""

    def __init__(self, in_channels: int, channels: int):
        inter = in_channels // 4
        super().__init__(
            nn.Conv2d(in_channels, inter, 3, padding=1, bias=False), nn.BatchNorm2d(inter), nn.ReLU(inplace=True),
            nn.Dropout(0.1), nn.Conv2d(inter, channels, 1),
        )


class TorchvisionFCN(nn.Module):
    """``forward(x) -> logits`` (N, n, H, W): classifier on layer4, bilinear resize to the input."""

    def __init__(self, backbone: str, num_classes: int, *, blocks: Optional[Sequence[int]] = None,
                 width_per_group: int = 64, expansion: int = 4):
        super().__init__()
        if backbone == "resnet-custom":
            if blocks is None:
                raise FcnError("backbone resnet-custom needs the build option blocks (4 block counts)")
        else:
            if blocks is not None and tuple(blocks) != BLOCKS[backbone]:
                raise FcnError(f"{backbone} has blocks {BLOCKS[backbone]}, not {tuple(blocks)}; use resnet-custom")
            blocks = BLOCKS[backbone]
        self.backbone = DilatedResNet(blocks, width_per_group=width_per_group, expansion=expansion)
        self.classifier = FCNHead(self.backbone.out_channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        y = self.classifier(self.backbone(x)["out"])
        return F.interpolate(y, size=size, mode="bilinear", align_corners=False)


def _register() -> None:
    from fcn_deploy.training.registry import register_arch

    def builder(backbone, num_classes, *, blocks=None, width_per_group=64, expansion=4):
        m = TorchvisionFCN(backbone, num_classes, blocks=blocks, width_per_group=width_per_group, expansion=expansion)
        m.arch, m.backbone_name, m.num_classes = "tv-fcn", backbone, num_classes
        opts = {}
        if backbone == "resnet-custom":
            opts["blocks"] = [int(b) for b in blocks]
        if width_per_group != 64:
            opts["width_per_group"] = int(width_per_group)
        if expansion != 4:
            opts["expansion"] = int(expansion)
        m.build_options = opts
        return m

    register_arch("tv-fcn", backbones=BACKBONES, family="torchvision",
                  description="torchvision fcn_resnet50/101 layout (dilated OS8 ResNet, FCNHead, bilinear resize)",
                  convention="imagenet", options=("blocks", "width_per_group", "expansion"))(builder)


_register()
