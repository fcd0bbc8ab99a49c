"""pochih/FCN-pytorch state_dicts (``FCNs`` / ``FCN8s`` / ``FCN16s`` / ``FCN32s``) -> the seed
decoder family (training/models_seed.py).

Layout read from pochih/FCN-pytorch ``python/fcn.py``: ``pretrained_net.features.N`` (a
torchvision VGG16 trunk; with ``remove_fc=False`` also ``pretrained_net.classifier.*``, dropped
here), ``deconv1..5``, ``bn1..5`` (with running stats), ``classifier``. All four classes have the
same keys, so ``--arch`` is required: ``fcns`` (``FCNs``, what its train.py trains), ``fcn8s-bn``,
``fcn16s-bn`` or ``fcn32s-bn``.

Its train.py saves ``torch.save(fcn_model, path)``: a pickled whole model, which fcn-import
refuses (it never unpickles code); where pochih's code is installed, save
``model.state_dict()`` and import that. Input convention ("pochih"): BGR, /255, minus
(103.939, 116.779, 123.68)/255, no std (its CamVid/Cityscapes loaders).
"""

from __future__ import annotations

from typing import Optional

from fcn_deploy.errors import FcnError
from fcn_deploy.training.importers import Imported, Importer, ImportOptions, register_importer

_CLASSES = {"fcns": "FCNs", "fcn8s-bn": "FCN8s", "fcn16s-bn": "FCN16s", "fcn32s-bn": "FCN32s"}
_DECODER = tuple(f"deconv{i}." for i in range(1, 6)) + tuple(f"bn{i}." for i in range(1, 6)) + ("classifier.",)


@register_importer
class PochihImporter(Importer):
    name = "pochih"
    suffixes = ()
    prefixes = ("pretrained_net.",) + _DECODER
    description = "pochih/FCN-pytorch FCNs/FCN8s/FCN16s/FCN32s state_dicts (the seed's decoder)"

    def detect(self, state) -> Optional[str]:
        if not isinstance(state, dict):
            return None
        keys = [k for k in state if isinstance(k, str)]
        if not any(k.startswith("pretrained_net.features.") for k in keys):
            return None
        if not all(f"{p}weight" in state for p in _DECODER):
            return None
        return f"pochih FCN-pytorch deconv decoder ({len(state)} tensors; FCNs/FCN8s/FCN16s/FCN32s share these keys)"

    def convert(self, state, options: ImportOptions) -> Imported:
        src = getattr(options, "source_path", "") or "source"
        if not isinstance(state, dict) or self.detect(state) is None:
            raise FcnError(f"{src}: not a pochih FCN-pytorch state_dict (needs pretrained_net.features.*, deconv1..5, bn1..5, classifier)")
        if options.arch is None:
            raise FcnError(f"{src}: pochih's FCNs, FCN8s, FCN16s and FCN32s have identical keys; pass --arch fcns (FCNs, "
                           "what its train.py trains), --arch fcn8s-bn (FCN8s), --arch fcn16s-bn or --arch fcn32s-bn")
        if options.arch not in _CLASSES:
            raise FcnError(f"--arch {options.arch}: a pochih state_dict is one of {', '.join(_CLASSES)}")
        out, dropped = {}, []
        for k, v in state.items():
            if k.startswith("pretrained_net.classifier."):
                dropped.append(k)
                continue
            out[k] = v
        cw = state["classifier.weight"]
        if getattr(cw, "ndim", 0) != 4:
            raise FcnError(f"{src}: classifier.weight has shape {tuple(cw.shape)}; expected a 1x1 convolution")
        n = int(cw.shape[0])
        from fcn_deploy.training.registry import convention

        order, scale, mean, std = convention("pochih")
        imp = Imported(arch=options.arch, backbone="vgg16", num_classes=n, state_dict=out, build_options={},
                       info_defaults={"channel_order": order, "scale": scale, "mean": mean, "std": std,
                                      "convention": "pochih"})
        imp.notes.append(f"pochih {_CLASSES[options.arch]} -> {options.arch}/vgg16 (same parameter names)")
        if dropped:
            imp.notes.append(f"dropped the unused VGG classifier ({len(dropped)} tensors, pretrained_net.classifier.*)")
        return imp
