"""torchvision ``fcn_resnet50`` / ``fcn_resnet101`` state_dicts -> ``tv-fcn``.

Keys (torchvision/models/segmentation/fcn.py): ``backbone.*`` (an IntermediateLayerGetter over
a ResNet: conv1, bn1, layer1..4; no fc), ``classifier.{0,1,4}`` (FCNHead) and, when the model
was built with ``aux_loss=True`` (torchvision's pretrained weights are), ``aux_classifier.*``:
dropped, with a note. The class count is ``classifier.4.weight``'s first dimension; the block
counts, width and expansion come from the ``backbone.layerK.N`` keys and shapes.

Defaults (torchvision's weights and ``SemanticSegmentation`` transforms): the 21 VOC classes
with ``__background__``, RGB, [0, 1], ImageNet mean/std. Other class counts get generic names
unless ``--classes`` is given.
"""

from __future__ import annotations

import re
from typing import Dict, List, Optional, Tuple

from fcn_deploy.errors import FcnError
from fcn_deploy.palette import VOC_IGNORE, voc_palette
from fcn_deploy.training.importers import Imported, Importer, ImportOptions, register_importer

# torchvision.models._meta._VOC_CATEGORIES
VOC_CATEGORIES = ("__background__", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
                  "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
                  "train", "tvmonitor")

_HEAD = ("classifier.0.weight", "classifier.1.weight", "classifier.1.bias", "classifier.1.running_mean",
         "classifier.1.running_var", "classifier.4.weight", "classifier.4.bias")
_BLOCK = re.compile(r"^backbone\.layer([1-4])\.(\d+)\.")


def backbone_config(state, prefix: str = "backbone.") -> Tuple[Tuple[int, ...], int, int]:
    """(blocks per stage, width_per_group, expansion) of a torchvision-named Bottleneck ResNet."""
    pat = re.compile(r"^" + re.escape(prefix) + r"layer([1-4])\.(\d+)\.")
    counts = [0, 0, 0, 0]
    for k in state:
        m = pat.match(k)
        if m:
            counts[int(m.group(1)) - 1] = max(counts[int(m.group(1)) - 1], int(m.group(2)) + 1)
    if min(counts) == 0:
        raise FcnError(f"no {prefix}layer{counts.index(0) + 1}.* blocks: not a 4-stage ResNet")
    c1 = state.get(prefix + "layer1.0.conv1.weight")
    c3 = state.get(prefix + "layer1.0.conv3.weight")
    if c1 is None or c3 is None:
        raise FcnError(f"{prefix}layer1.0 has no conv1/conv3: not a Bottleneck ResNet")
    width_per_group = int(c1.shape[0])  # planes 64 * width_per_group / 64
    expansion = int(c3.shape[0]) // 64
    return tuple(counts), width_per_group, expansion


@register_importer
class TorchvisionImporter(Importer):
    name = "torchvision"
    prefixes = ("backbone.", "classifier.", "aux_classifier.")
    description = "torchvision fcn_resnet50/101 state_dict (backbone.*, classifier.*, aux_classifier.*)"

    def detect(self, state) -> Optional[str]:
        if not isinstance(state, dict):
            return None
        keys = list(state)
        if not all(k in state for k in _HEAD) or "backbone.conv1.weight" not in state:
            return None
        if "classifier.2.weight" in state or "classifier.3.weight" in state:
            return None  # not an FCNHead (e.g. DeepLabV3's ASPP head)
        if not all(k.startswith(self.prefixes) for k in keys):
            return None
        if "backbone.layer1.0.conv3.weight" not in state:
            return None
        try:
            blocks, width, exp = backbone_config(state)
        except FcnError:
            return None
        n = int(state["classifier.4.weight"].shape[0])
        aux = any(k.startswith("aux_classifier.") for k in keys)
        return (f"torchvision FCN, {_backbone_name(blocks, width, exp)} backbone, {n} classes"
                + (", with aux head" if aux else ""))

    def convert(self, state, options: ImportOptions) -> Imported:
        if not isinstance(state, dict):
            raise FcnError("torchvision weights are a torch state_dict, not a raw file")
        missing = [k for k in _HEAD + ("backbone.conv1.weight",) if k not in state]
        if missing:
            raise FcnError(f"not a torchvision FCN state_dict: no {missing[0]}")
        unexpected = [k for k in state if not k.startswith(self.prefixes)]
        if unexpected:
            raise FcnError(f"not a torchvision FCN state_dict: unexpected keys {', '.join(unexpected[:4])}"
                           + (f", ... ({len(unexpected)} in all)" if len(unexpected) > 4 else ""))
        if any(k.startswith("classifier.") and k.split(".")[1] not in ("0", "1", "4") for k in state):
            raise FcnError("classifier is not torchvision's FCNHead (keys other than classifier.0/1/4); "
                           "DeepLabV3/LR-ASPP heads are not supported")
        blocks, width, exp = backbone_config(state)
        n = int(state["classifier.4.weight"].shape[0])
        sd = {k: v for k, v in state.items() if not k.startswith("aux_classifier.")}
        notes: List[str] = []
        aux = [k for k in state if k.startswith("aux_classifier.")]
        if aux:
            notes.append(f"dropped the auxiliary head (aux_classifier.*, {len(aux)} tensors): a training aid, "
                         "not part of torchvision's inference output 'out'")
        name = _backbone_name(blocks, width, exp)
        options_: Dict[str, object] = {}
        backbone = name
        if name not in ("resnet50", "resnet101"):
            backbone = "resnet-custom"
            options_ = {"blocks": list(blocks)}
        if width != 64:
            options_["width_per_group"] = width
        if exp != 4:
            options_["expansion"] = exp
        defaults: Dict[str, object] = {"channel_order": "RGB", "scale": 1.0 / 255.0,
                                       "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225),
                                       "convention": "imagenet"}
        if n == len(VOC_CATEGORIES):
            defaults.update(class_names=list(VOC_CATEGORIES), palette=voc_palette(n), ignore_index=VOC_IGNORE)
        return Imported(arch="tv-fcn", backbone=backbone, num_classes=n, state_dict=sd, build_options=options_,
                        info_defaults=defaults, notes=notes)


def _backbone_name(blocks, width, exp) -> str:
    if width == 64 and exp == 4:
        for name, b in (("resnet50", (3, 4, 6, 3)), ("resnet101", (3, 4, 23, 3))):
            if tuple(blocks) == b:
                return name
    return f"resnet(blocks {'/'.join(map(str, blocks))}, width {width}, expansion {exp})"
