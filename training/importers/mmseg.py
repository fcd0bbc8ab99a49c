"""mmsegmentation FCN checkpoints (``{'state_dict', 'meta', ...}``) -> ``mmseg-fcn``.

What is read:
- ``state_dict``: ``backbone.*`` (mmseg ``ResNet`` = torchvision names, or ``ResNetV1c`` with
  ``backbone.stem.*``), ``decode_head.{convs,conv_cat,conv_seg}.*``, ``auxiliary_head.*``
  (dropped, with a note). The depth comes from the block counts and block type; channels,
  num_convs, concat_input and kernel size from the shapes.
- ``meta`` (kept by fcn-import as ``options.wrapper['meta']``): classes and palette from
  0.x ``CLASSES``/``PALETTE`` or 1.x ``dataset_meta['classes'/'palette']``; the training
  config text (0.x ``config``, 1.x ``cfg``), when present, is checked for what the weights
  cannot show: a backbone other than ``ResNet``/``ResNetV1c`` (``ResNetV1d``'s avg-pool
  downsample), ``dilations``/``strides`` other than D8's ``(1, 1, 2, 4)``/``(1, 2, 1, 1)``
  (e.g. the ``fcn-d6_r50-d16`` models), or a head dilation (``dilation=6``), ``multi_grid``,
  ``align_corners=True``: those are refused with the reason, never imported wrong. Without a
  config text the D8 settings of ``configs/_base_/models/fcn_r50-d8.py`` are assumed (said in
  a note).

Defaults: mmseg's data_preprocessor: RGB, 0-255, mean (123.675, 116.28, 103.53), std
(58.395, 57.12, 57.375).
"""

from __future__ import annotations

import re
from typing import Any, Dict, List, Optional

from fcn_deploy.errors import FcnError
from fcn_deploy.training.importers import Imported, Importer, ImportOptions, register_importer

_BLOCK = re.compile(r"^backbone\.layer([1-4])\.(\d+)\.")
_HEAD_PARTS = ("convs", "conv_cat", "conv_seg")
_DEPTHS = {("basic", (2, 2, 2, 2)): 18, ("basic", (3, 4, 6, 3)): 34, ("bottleneck", (3, 4, 6, 3)): 50,
           ("bottleneck", (3, 4, 23, 3)): 101}


def _blocks(state):
    counts = [0, 0, 0, 0]
    for k in state:
        m = _BLOCK.match(k)
        if m:
            i = int(m.group(1)) - 1
            counts[i] = max(counts[i], int(m.group(2)) + 1)
    return tuple(counts)


def _meta(wrapper: Dict[str, Any]) -> Dict[str, Any]:
    meta = wrapper.get("meta")
    return meta if isinstance(meta, dict) else {}


def classes_and_palette(meta: Dict[str, Any]):
    """(class names or None, palette or None) from an mmseg 0.x or 1.x ``meta``."""
    dm = meta.get("dataset_meta") if isinstance(meta.get("dataset_meta"), dict) else {}
    names = dm.get("classes", meta.get("CLASSES"))
    palette = dm.get("palette", meta.get("PALETTE"))
    if names is not None:
        if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
            raise FcnError("mmseg meta: classes is not a list of names")
        names = list(names)
    if palette is not None:
        try:
            palette = [tuple(int(v) for v in c) for c in palette]
        except (TypeError, ValueError):
            raise FcnError("mmseg meta: palette is not a list of [R, G, B]") from None
        if not all(len(c) == 3 and all(0 <= v <= 255 for v in c) for c in palette):
            raise FcnError("mmseg meta: palette is not a list of [R, G, B] in 0..255")
    return names, palette


def _flat(text: str) -> str:
    return re.sub(r"\s+", "", text)


def _block(t: str, key: str) -> str:
    """The top level of ``key=dict(...)`` in flattened config text: nested ``dict(...)`` values
    blanked out, tuples kept (so ``type=`` is the block's own, not its norm_cfg's)."""
    m = re.search(r"(?<![A-Za-z_])" + re.escape(key) + r"=dict\(", t)
    if not m:
        return ""
    i, depth, out, nested = m.end(), 1, [], 0
    dict_stack = []
    while i < len(t) and depth:
        if t.startswith("dict(", i):
            dict_stack.append(depth)
            depth += 1
            nested += 1
            i += 5
            continue
        c = t[i]
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if dict_stack and dict_stack[-1] == depth:
                dict_stack.pop()
                nested -= 1
                i += 1
                continue
        if depth and not nested:
            out.append(c)
        i += 1
    return "".join(out)


def check_config(cfg_text: str) -> List[str]:
    """Reasons the training config says the weights are not the D8 FCN built here."""
    t = _flat(cfg_text)
    bb, head = _block(t, "backbone"), _block(t, "decode_head")
    bad = []
    m = re.search(r"(?<![a-z_])type='([A-Za-z0-9_]+)'", bb)
    if m and m.group(1) not in ("ResNet", "ResNetV1c"):
        bad.append(f"backbone type {m.group(1)} (only ResNet and ResNetV1c are built here"
                   + ("; ResNetV1d downsamples through an average pool" if m.group(1) == "ResNetV1d" else "") + ")")
    m = re.search(r"dilations=\(([\d,]+)\)", bb)
    if m and m.group(1).rstrip(",") != "1,1,2,4":
        bad.append(f"backbone dilations ({m.group(1).rstrip(',')}), not D8's (1, 1, 2, 4)")
    m = re.search(r"strides=\(([\d,]+)\)", bb)
    if m and m.group(1).rstrip(",") != "1,2,1,1":
        bad.append(f"backbone strides ({m.group(1).rstrip(',')}), not D8's (1, 2, 1, 1)")
    if "contract_dilation=False" in bb:
        bad.append("contract_dilation=False")
    if re.search(r"multi_grid=\(", bb):
        bad.append("multi_grid dilations")
    if "avg_down=True" in bb or "deep_stem=True" in bb and "type='ResNet'" in bb:
        bad.append("avg_down/deep_stem set on a plain ResNet")
    if re.search(r"style='caffe'", bb):
        bad.append("style='caffe' (stride on the 1x1 conv)")
    m = re.search(r"(?<![a-z_])type='([A-Za-z0-9_]+)'", head)
    if m and m.group(1) != "FCNHead":
        bad.append(f"decode head {m.group(1)} (only FCNHead is built here)")
    m = re.search(r"(?<![a-z_])dilation=(\d+)", head)
    if m and m.group(1) != "1":
        bad.append(f"decode head dilation {m.group(1)}")
    if "align_corners=True" in head:
        bad.append("align_corners=True")
    return bad


@register_importer
class MMSegImporter(Importer):
    name = "mmseg"
    prefixes = ("backbone.", "decode_head.", "auxiliary_head.", "data_preprocessor.")
    description = "mmsegmentation FCN checkpoint ({'state_dict', 'meta'}: backbone.*, decode_head.*)"

    def detect(self, state) -> Optional[str]:
        if not isinstance(state, dict) or "decode_head.conv_seg.weight" not in state:
            return None
        if not all(k.startswith(self.prefixes) for k in state):
            return None
        if not any(k.startswith("backbone.") for k in state):
            return None
        head = sorted({k.split(".")[1] for k in state if k.startswith("decode_head.")} - set(_HEAD_PARTS) - {"conv_seg"})
        stem = "ResNetV1c (deep stem)" if "backbone.stem.0.weight" in state else "ResNet"
        n = int(state["decode_head.conv_seg.weight"].shape[0])
        kind = "FCNHead" if not head else f"a decode head with {', '.join(head)} (not FCNHead)"
        meta = _meta(getattr(state, "wrapper", {}) or {})
        return f"mmseg checkpoint, {stem} backbone, {kind}, {n} classes" + (", with meta" if meta else "")

    def convert(self, state, options: ImportOptions) -> Imported:
        if not isinstance(state, dict):
            raise FcnError("mmseg weights are a torch checkpoint, not a raw file")
        if "decode_head.conv_seg.weight" not in state:
            raise FcnError("not an mmseg segmentor state_dict: no decode_head.conv_seg.weight")
        unexpected = [k for k in state if not k.startswith(self.prefixes)]
        if unexpected:
            raise FcnError(f"not an mmseg FCN state_dict: unexpected keys {', '.join(unexpected[:4])}"
                           + (f", ... ({len(unexpected)} in all)" if len(unexpected) > 4 else ""))
        other = sorted({k.split(".")[1] for k in state if k.startswith("decode_head.")} - set(_HEAD_PARTS))
        if other:
            raise FcnError(f"the mmseg decode head has {', '.join(other)}: not an FCNHead (PSP/ASPP/UPer heads are not supported)")
        meta = _meta(options.wrapper or getattr(state, "wrapper", {}) or {})
        notes: List[str] = []
        cfg_text = meta.get("cfg") or meta.get("config")
        if isinstance(cfg_text, str) and cfg_text.strip():
            bad = check_config(cfg_text)
            if bad:
                raise FcnError("this mmseg model cannot be imported as the D8 FCN: its config has " + "; ".join(bad))
        else:
            notes.append("no training config in meta: assumed fcn_r*-d8 settings (dilations 1,1,2,4, strides 1,2,1,1, "
                         "contract_dilation, head dilation 1, align_corners False)")
        deep = "backbone.stem.0.weight" in state
        if not deep and "backbone.conv1.weight" not in state:
            raise FcnError("mmseg backbone has neither conv1 (ResNet) nor stem.0 (ResNetV1c): not a ResNet")
        if deep and any(k.startswith(("backbone.conv1.", "backbone.bn1.")) for k in state):
            raise FcnError("mmseg backbone has both stem.* and conv1/bn1: not a ResNet layout built here")
        if any(re.match(r"^backbone\.layer\d\.0\.downsample\.2\.", k) for k in state):
            raise FcnError("mmseg backbone downsamples through an average pool (ResNetV1d, avg_down): not supported")
        block = "bottleneck" if "backbone.layer1.0.conv3.weight" in state else "basic"
        blocks = _blocks(state)
        depth = _DEPTHS.get((block, blocks))
        if depth is None:
            raise FcnError(f"mmseg backbone with {block} blocks {'/'.join(map(str, blocks))}: not ResNet-18/34/50/101")
        base = int(state["backbone.layer1.0.conv1.weight"].shape[0])  # planes of stage 1 = base_channels
        stem = int(state["backbone.stem.7.weight" if deep else "backbone.bn1.weight"].shape[0])
        backbone = f"resnet{depth}" + ("v1c" if deep else "")
        n = int(state["decode_head.conv_seg.weight"].shape[0])
        channels = int(state["decode_head.conv_seg.weight"].shape[1])
        num_convs = len({k.split(".")[2] for k in state if k.startswith("decode_head.convs.")})
        concat = "decode_head.conv_cat.conv.weight" in state
        k0 = state.get("decode_head.convs.0.conv.weight")
        kernel = int(k0.shape[-1]) if k0 is not None else int(state["decode_head.conv_cat.conv.weight"].shape[-1]) if concat else 3
        aux = [k for k in state if k.startswith("auxiliary_head.")]
        if aux:
            notes.append(f"dropped the auxiliary head (auxiliary_head.*, {len(aux)} tensors): used only in training")
        sd = {k: v for k, v in state.items() if not k.startswith(("auxiliary_head.", "data_preprocessor."))}
        build: Dict[str, Any] = {"channels": channels}
        if base != 64:
            build["base_channels"] = base
        if stem != 64:
            build["stem_channels"] = stem
        if num_convs != 2:
            build["num_convs"] = num_convs
        if not concat:
            build["concat_input"] = False
        if kernel != 3:
            build["kernel_size"] = kernel
        defaults: Dict[str, Any] = {"channel_order": "RGB", "scale": 1.0, "mean": (123.675, 116.28, 103.53),
                                    "std": (58.395, 57.12, 57.375), "convention": "mmseg"}
        names, palette = classes_and_palette(meta)
        if names is not None:
            if len(names) != n:
                raise FcnError(f"mmseg meta names {len(names)} classes, the weights have {n} (decode_head.conv_seg.weight "
                               f"is {tuple(state['decode_head.conv_seg.weight'].shape)})")
            defaults["class_names"] = names
        if palette is not None and len(palette) >= n:
            defaults["palette"] = palette
        extra = {}
        if isinstance(meta.get("mmseg_version"), str):
            extra["mmseg_version"] = meta["mmseg_version"]
        if extra:
            defaults["extra"] = extra
        return Imported(arch="mmseg-fcn", backbone=backbone, num_classes=n, state_dict=sd, build_options=build,
                        info_defaults=defaults, notes=notes)
