"""wkentaro/pytorch-fcn (``torchfcn``) FCN32s / FCN16s / FCN8s / FCN8sAtOnce -> our VGG16 FCNs.

Layout read from torchfcn 1.9.7 (``torchfcn/models/fcn32s.py``, ``fcn16s.py``, ``fcn8s.py``,
``torchfcn/trainer.py``):

- flat module names ``conv1_1 .. conv5_3`` (3x3, conv1_1 pad 100), ``fc6`` (7x7 512->4096),
  ``fc7`` (1x1), ``score_fr``, ``score_pool4``, ``score_pool3`` (1x1 to n_class), bias-free
  ``ConvTranspose2d`` ``upscore`` (FCN32s, k64 s32), ``upscore2`` + ``upscore16`` (FCN16s),
  ``upscore2`` + ``upscore_pool4`` + ``upscore8`` (FCN8s, FCN8sAtOnce); crops 19 / 5,27 /
  5,9,31 and the at-once scales 0.01 / 0.0001: the graph of ``training/models.py``'s VGG16 FCNs,
  so the import is a rename (``convN_M`` -> ``backbone.features.I``, ``fc6/fc7`` ->
  ``backbone.fc6/fc7``, heads as they are);
- its trainer saves ``{'epoch', 'iteration', 'arch': model.__class__.__name__,
  'optim_state_dict', 'model_state_dict', 'best_mean_iu'}`` (fcn-import unwraps it and passes
  ``arch`` as ``options.wrapper['arch']``).

FCN8s and FCN8sAtOnce have identical keys: a plain state_dict of either needs ``--arch``; the
trainer dict's ``arch`` decides. Input convention: BGR 0-255 minus the Caffe mean, no std (the
models were ported from the Caffe originals).

The Caffe importer (caffe.py) maps layer names to this same flat layout and reuses
:func:`convert_flat`.
"""

from __future__ import annotations

from typing import Dict, Optional

from fcn_deploy.errors import FcnError
from fcn_deploy.training.importers import Imported, Importer, ImportOptions, register_importer

# torchfcn/Caffe layer name -> index in torchvision's vgg16().features (= our backbone.features).
VGG_CONV_INDEX = {
    "conv1_1": 0, "conv1_2": 2,
    "conv2_1": 5, "conv2_2": 7,
    "conv3_1": 10, "conv3_2": 12, "conv3_3": 14,
    "conv4_1": 17, "conv4_2": 19, "conv4_3": 21,
    "conv5_1": 24, "conv5_2": 26, "conv5_3": 28,
}
# Heads per arch (our arch name -> the layer names it has beside the trunk).
HEADS = {
    "fcn32s": ("score_fr", "upscore"),
    "fcn16s": ("score_fr", "score_pool4", "upscore2", "upscore16"),
    "fcn8s": ("score_fr", "score_pool4", "score_pool3", "upscore2", "upscore_pool4", "upscore8"),
    "fcn8s-atonce": ("score_fr", "score_pool4", "score_pool3", "upscore2", "upscore_pool4", "upscore8"),
}
# torchfcn class names (the trainer dict's 'arch') -> ours.
CLASS_TO_ARCH = {"FCN32s": "fcn32s", "FCN16s": "fcn16s", "FCN8s": "fcn8s", "FCN8sAtOnce": "fcn8s-atonce"}
ARCH_TO_CLASS = {v: k for k, v in CLASS_TO_ARCH.items()}
TRUNK = tuple(VGG_CONV_INDEX) + ("fc6", "fc7")


def caffe_info_defaults(num_classes: int, class_names=None) -> dict:
    """BGR 0-255 minus the Caffe mean, no std; the VOC classes where there are 21."""
    from fcn_deploy.modelinfo import CAFFE_CONVENTION
    from fcn_deploy.palette import VOC_CLASSES, VOC_IGNORE, voc_palette

    order, scale, mean, std = CAFFE_CONVENTION
    d = {"channel_order": order, "scale": scale, "mean": mean, "std": std, "convention": "caffe"}
    if class_names is not None and len(class_names) == num_classes:
        d["class_names"] = list(class_names)
        d["palette"] = voc_palette(num_classes)
    elif num_classes == len(VOC_CLASSES):
        d["class_names"] = list(VOC_CLASSES)
        d["palette"] = voc_palette(num_classes)
        d["ignore_index"] = VOC_IGNORE
    return d


def layer_names(state) -> set:
    """``{'conv1_1', 'fc6', ...}`` of a flat ``name.weight`` / ``name.bias`` dict."""
    return {k.rsplit(".", 1)[0] for k in state if isinstance(k, str) and k.endswith((".weight", ".bias"))}


def arch_candidates(layers) -> tuple:
    """Our archs whose trunk + heads are exactly ``layers``."""
    return tuple(a for a, heads in HEADS.items() if set(TRUNK) | set(heads) == set(layers))


def convert_flat(state: Dict, arch: str, source: str, *, class_names=None) -> Imported:
    """A torchfcn-layout dict of tensors (exactly ``arch``'s layers) -> :class:`Imported`."""
    want = set(TRUNK) | set(HEADS[arch])
    have = layer_names(state)
    extra = sorted(have - want)
    missing = sorted(want - have)
    if missing or extra:
        raise FcnError(f"{source}: not a {ARCH_TO_CLASS[arch]} layout"
                       + (f"; missing {', '.join(missing[:4])}" if missing else "")
                       + (f"; unexpected {', '.join(extra[:4])}" if extra else ""))
    out = {}
    for k, v in state.items():
        layer, kind = k.rsplit(".", 1)
        if layer in VGG_CONV_INDEX:
            out[f"backbone.features.{VGG_CONV_INDEX[layer]}.{kind}"] = v
        elif layer in ("fc6", "fc7"):
            out[f"backbone.{layer}.{kind}"] = v
        else:
            out[k] = v
    sf = state.get("score_fr.weight")
    if sf is None or getattr(sf, "ndim", 0) != 4:
        raise FcnError(f"{source}: score_fr.weight is missing or not a 4-d convolution weight")
    n = int(sf.shape[0])
    up = [k for k in state if k.startswith("upscore") and k.endswith(".weight")]
    for k in up:
        if tuple(state[k].shape[:2]) != (n, n):
            raise FcnError(f"{source}: {k} has shape {tuple(state[k].shape)}; expected ({n}, {n}, k, k) for {n} classes")
        if k.rsplit(".", 1)[0] + ".bias" in state:
            raise FcnError(f"{source}: {k.rsplit('.', 1)[0]} has a bias; the FCN deconvolutions have none")
    return Imported(arch=arch, backbone="vgg16", num_classes=n, state_dict=out,
                    build_options={"learnable_upsampling": False},
                    info_defaults=caffe_info_defaults(n, class_names))


def choose_arch(layers, options: ImportOptions, wrapper_arch: Optional[str], source: str) -> str:
    """Our arch from the layers present, ``--arch`` and the trainer dict's ``arch``."""
    cands = arch_candidates(layers)
    if not cands:
        heads = sorted(l for l in layers if l.startswith(("score", "upscore")))
        raise FcnError(f"{source}: torchfcn-like keys but no known FCN head (heads found: {', '.join(heads) or 'none'})")
    from_wrapper = None
    if wrapper_arch is not None:
        if str(wrapper_arch) not in CLASS_TO_ARCH:
            raise FcnError(f"{source}: the trainer dict says arch {wrapper_arch!r}; torchfcn's are {', '.join(CLASS_TO_ARCH)}")
        from_wrapper = CLASS_TO_ARCH[str(wrapper_arch)]
        if from_wrapper not in cands:
            raise FcnError(f"{source}: the trainer dict says {wrapper_arch} but the weights are a {'/'.join(ARCH_TO_CLASS[c] for c in cands)}")
    if options.arch is not None:
        if options.arch not in cands:
            raise FcnError(f"--arch {options.arch}: these weights are a {' or '.join(f'{c} ({ARCH_TO_CLASS[c]})' for c in cands)}")
        if from_wrapper is not None and from_wrapper != options.arch:
            raise FcnError(f"--arch {options.arch}, but the trainer dict says {wrapper_arch} ({from_wrapper})")
        return options.arch
    if from_wrapper is not None:
        return from_wrapper
    if len(cands) > 1:
        raise FcnError(f"{source}: {' and '.join(ARCH_TO_CLASS[c] for c in cands)} have identical weights; "
                       f"pass --arch {' or --arch '.join(cands)}")
    return cands[0]


@register_importer
class TorchfcnImporter(Importer):
    name = "torchfcn"
    suffixes = ()
    prefixes = tuple(f"{l}." for l in TRUNK) + ("score_fr.", "score_pool4.", "score_pool3.", "upscore")
    description = "wkentaro/pytorch-fcn FCN32s/16s/8s/8sAtOnce state_dicts and trainer checkpoints"

    def detect(self, state) -> Optional[str]:
        if not isinstance(state, dict):
            return None
        layers = layer_names(state)
        if not set(TRUNK) <= layers:
            return None
        cands = arch_candidates(layers)
        if not cands:
            return None
        wa = (getattr(state, "wrapper", None) or {}).get("arch")
        what = "/".join(ARCH_TO_CLASS[c] for c in cands)
        return f"torchfcn {what} ({len(state)} tensors" + (f", trainer dict arch {wa}" if wa else "") + ")"

    def convert(self, state, options: ImportOptions) -> Imported:
        src = getattr(options, "source_path", "") or "source"
        wrapper = dict(getattr(options, "wrapper", None) or getattr(state, "wrapper", None) or {})
        if not isinstance(state, dict):
            raise FcnError(f"{src}: not a state_dict of tensors")
        arch = choose_arch(layer_names(state), options, wrapper.get("arch"), src)
        imp = convert_flat(state, arch, src)
        imp.notes.append(f"torchfcn {ARCH_TO_CLASS[arch]} -> {arch}/vgg16 (a rename; same graph)")
        return imp
