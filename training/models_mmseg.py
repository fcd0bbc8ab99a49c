"""mmsegmentation's FCN (``fcn_r18b-d8``, ``fcn_r50b-d8``, ``fcn_r50-d8``, ...), written here
without mmseg/mmcv.

Layout, as mmsegmentation's own code has it (read, not copied; open-mmlab/mmsegmentation):

- ``configs/_base_/models/fcn_r50-d8.py``: ``ResNetV1c`` depth 50, ``dilations=(1, 1, 2, 4)``,
  ``strides=(1, 2, 1, 1)``, ``style='pytorch'``, ``contract_dilation=True``; decode head
  ``FCNHead(in_channels=2048, in_index=3, channels=512, num_convs=2, concat_input=True,
  dropout_ratio=0.1, align_corners=False)``; auxiliary ``FCNHead`` on stage 3 (dropped here).
  ``fcn_r18b-d8_*``: ``type='ResNet', depth=18`` (the torchvision-named "b" backbone), decode
  head ``in_channels=512, channels=128``; ``fcn_r50b-d8``: ``type='ResNet', depth=50``.
- ``mmseg/models/backbones/resnet.py``: ``ResNet`` (v1b: 7x7 stem ``conv1``/``bn1``) and
  ``ResNetV1c`` (``deep_stem``: ``stem.0..8`` = three 3x3 convs 3->32->32->64, BN, ReLU), then a
  3x3/2 max pool; Bottleneck with the stride on the 3x3 conv (style pytorch), padding = dilation;
  BasicBlock whose conv1 carries stride and dilation and whose conv2 is a plain 3x3 (padding 1,
  not dilated). ``mmseg/models/utils/res_layer.py``: downsample = 1x1 conv (stride) + BN; with
  contract_dilation the first block of a dilated stage uses dilation // 2 (layer3: 1 then 2,
  layer4: 2 then 4), as torchvision's replace_stride_with_dilation does.
- ``mmseg/models/decode_heads/fcn_head.py``: ``convs`` = ``num_convs`` ConvModules (conv
  without bias + BN + ReLU, kernel k, padding (k // 2) * dilation), ``conv_cat`` on
  ``cat([x, convs(x)])`` (padding k // 2, not dilated) when ``concat_input``;
  ``decode_head.py``'s ``cls_seg``: Dropout2d(0.1) then ``conv_seg`` (1x1 with bias).
- ``EncoderDecoder``: the logits are resized to the input with bilinear, align_corners=False
  (the same 3.5-pixel shift as torchvision's FCN: see models_torchvision).

Parameter names equal mmseg's (``backbone.*``, ``decode_head.convs.N.conv/bn``,
``decode_head.conv_cat.conv/bn``, ``decode_head.conv_seg``), so an mmseg ``state_dict`` loads
without renaming.

Backbones: ``resnet18/34/50/101`` (mmseg's ``ResNet``, the ``r*b`` configs) and
``resnet18v1c/34v1c/50v1c/101v1c`` (``ResNetV1c``, the plain ``r*`` configs). Build options:
``channels`` (default 128 for ResNet-18/34, 512 otherwise), ``num_convs`` (2),
``concat_input`` (True), ``kernel_size`` (3), ``dilation`` (1), and mmseg ResNet's
``stem_channels``/``base_channels`` (64; smaller only in the test fixtures).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from fcn_deploy.errors import FcnError
from fcn_deploy.training.models_torchvision import DilatedResNet

DEPTHS = {18: ("basic", (2, 2, 2, 2)), 34: ("basic", (3, 4, 6, 3)), 50: ("bottleneck", (3, 4, 6, 3)),
          101: ("bottleneck", (3, 4, 23, 3))}
BACKBONES = tuple(f"resnet{d}" for d in DEPTHS) + tuple(f"resnet{d}v1c" for d in DEPTHS)


def parse_backbone(name: str):
    """``resnet50v1c`` -> (50, deep_stem=True)."""
    deep = name.endswith("v1c")
    depth = int(name[len("resnet"): -3 if deep else None])
    return depth, deep


class ConvModule(nn.Module):
    """mmcv's ConvModule as the FCN head uses it: conv (no bias) -> BN -> ReLU."""

    def __init__(self, cin: int, cout: int, k: int, padding: int, dilation: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, padding=padding, dilation=dilation, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.activate = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.activate(self.bn(self.conv(x)))


class MMSegFCNHead(nn.Module):
    def __init__(self, in_channels: int, channels: int, num_classes: int, *, num_convs: int = 2,
                 concat_input: bool = True, kernel_size: int = 3, dilation: int = 1):
        super().__init__()
        if num_convs < 0 or dilation < 1 or kernel_size < 1:
            raise FcnError(f"bad mmseg FCNHead settings: num_convs {num_convs}, kernel {kernel_size}, dilation {dilation}")
        if num_convs == 0 and in_channels != channels:
            raise FcnError(f"mmseg FCNHead with num_convs 0 needs in_channels == channels ({in_channels} != {channels})")
        self.concat_input = concat_input
        pad = (kernel_size // 2) * dilation
        if num_convs == 0:
            self.convs = nn.Identity()
        else:
            self.convs = nn.Sequential(*[ConvModule(in_channels if i == 0 else channels, channels, kernel_size, pad, dilation)
                                         for i in range(num_convs)])
        if concat_input:
            self.conv_cat = ConvModule(in_channels + channels, channels, kernel_size, kernel_size // 2)
        self.dropout = nn.Dropout2d(0.1)
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)

    def forward(self, x):
        out = self.convs(x)
        if self.concat_input:
            out = self.conv_cat(torch.cat([x, out], dim=1))
        return self.conv_seg(self.dropout(out))


class MMSegFCN(nn.Module):
    def __init__(self, backbone: str, num_classes: int, *, channels: Optional[int] = None, num_convs: int = 2,
                 concat_input: bool = True, kernel_size: int = 3, dilation: int = 1, stem_channels: int = 64,
                 base_channels: int = 64):
        super().__init__()
        depth, deep = parse_backbone(backbone)
        block, blocks = DEPTHS[depth]
        self.backbone = DilatedResNet(blocks, block=block, deep_stem=deep, stem_channels=stem_channels,
                                      base_channels=base_channels)
        if channels is None:
            channels = 128 if block == "basic" else 512
        self.decode_head = MMSegFCNHead(self.backbone.out_channels, channels, num_classes, num_convs=num_convs,
                                        concat_input=concat_input, kernel_size=kernel_size, dilation=dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        y = self.decode_head(self.backbone(x)["out"])
        return F.interpolate(y, size=size, mode="bilinear", align_corners=False)


def _register() -> None:
    from fcn_deploy.training.registry import register_arch

    defaults = {"num_convs": 2, "concat_input": True, "kernel_size": 3, "dilation": 1, "stem_channels": 64,
                "base_channels": 64}

    def builder(backbone, num_classes, *, channels=None, num_convs=2, concat_input=True, kernel_size=3, dilation=1,
                stem_channels=64, base_channels=64):
        m = MMSegFCN(backbone, num_classes, channels=channels, num_convs=num_convs, concat_input=concat_input,
                     kernel_size=kernel_size, dilation=dilation, stem_channels=stem_channels, base_channels=base_channels)
        m.arch, m.backbone_name, m.num_classes = "mmseg-fcn", backbone, num_classes
        given = {"num_convs": int(num_convs), "concat_input": bool(concat_input), "kernel_size": int(kernel_size),
                 "dilation": int(dilation), "stem_channels": int(stem_channels), "base_channels": int(base_channels)}
        m.build_options = {k: v for k, v in given.items() if v != defaults[k]}
        m.build_options["channels"] = int(m.decode_head.conv_seg.in_channels)
        return m

    register_arch("mmseg-fcn", backbones=BACKBONES, family="mmseg",
                  description="mmsegmentation FCN, D8 (fcn_r*-d8 / fcn_r*b-d8: dilated OS8 ResNet, FCNHead with concat_input)",
                  convention="mmseg", options=("channels", "num_convs", "concat_input", "kernel_size", "dilation",
                                                "stem_channels", "base_channels"))(builder)


_register()
