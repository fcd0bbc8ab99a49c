"""Reference outputs of mmsegmentation's OWN FCN code, for the mmseg-fcn import tests.

Not run by CI or pytest: mmsegmentation needs torch/mmcv/mmengine versions that cannot live in
the project venv. Run it with a separate environment outside the repository::

    python3 -m venv /tmp/mmvenv
    # torch 2.14.1 from another venv (or pip install torch==2.14.1 into this one):
    echo /tmp/tvenv/lib/python3.11/site-packages > /tmp/mmvenv/lib/python3.11/site-packages/tvenv.pth
    /tmp/mmvenv/bin/pip install mmcv-lite==2.1.0 mmengine==0.10.7 mmsegmentation==1.2.2 ftfy regex
    /tmp/mmvenv/bin/python tests/reference/make_mmseg_reference.py small tests/data
    /tmp/mmvenv/bin/python tests/reference/make_mmseg_reference.py full /tmp/mmfull

mmcv-lite has no compiled ops, and ``import mmseg.models`` imports ``mmcv.ops`` (for heads this
script never builds). ``mmcv.ops`` is therefore replaced by a module whose every attribute
raises when called; the code that runs (``ResNet``/``ResNetV1c``, ``ResLayer``, ``FCNHead``,
``BaseDecodeHead.cls_seg``, ``EncoderDecoder.predict`` with its resize and post-processing,
mmcv's ``ConvModule``) is mmsegmentation's and mmcv's own, unmodified.

The models are built from mmseg's registry with the settings of
``configs/_base_/models/fcn_r50-d8.py`` (D8: dilations (1, 1, 2, 4), strides (1, 2, 1, 1),
contract_dilation, FCNHead num_convs 2 + concat_input, auxiliary FCNHead on stage 3), BN
instead of SyncBN (identical in eval mode). Weights and BN statistics are random and non-zero,
rounded to float16 precision (the small fixtures store float16). The checkpoint is saved as
mmseg's runners save it: ``{'meta': ..., 'state_dict': model.state_dict()}`` with classes and
palette in 0.x (``CLASSES``/``PALETTE``/``config``) or 1.x (``dataset_meta``/``cfg``) form.
The reference output is ``model.predict(x)[i].seg_logits.data`` (mmseg's whole-image
inference: encode_decode, bilinear resize, post-processing).

- ``small``: ``fcn_r18b-d8`` layout (ResNet depth 18) and ``fcn_r50-d8`` layout (ResNetV1c
  depth 50), with ``base_channels=8, stem_channels=16`` and ``4, 8`` so the fixtures stay small, 3
  classes; sizes 97x131 (batch 2) and 33x47 (batch 1).
- ``full``: ``fcn_r18b-d8`` and ``fcn_r50b-d8`` (ResNet depth 18 / 50) and ``fcn_r50-d8``
  (ResNetV1c depth 50) at full width, 19 classes (Cityscapes' count); sizes 97x131, 360x480,
  500x375, batch 2.
"""

from __future__ import annotations

import argparse
import sys
import types
from pathlib import Path

import numpy as np

MEAN = np.array([123.675, 116.28, 103.53], np.float32).reshape(1, 3, 1, 1)
STD = np.array([58.395, 57.12, 57.375], np.float32).reshape(1, 3, 1, 1)


def normalize(u8: np.ndarray) -> np.ndarray:
    """uint8 RGB NCHW -> float32, mmseg's data_preprocessor (the tests use the same ops)."""
    return (u8.astype(np.float32) - MEAN) / STD


class _NoCompiledOps(types.ModuleType):
    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)

        def unavailable(*a, **k):
            raise RuntimeError(f"mmcv.ops.{name} needs mmcv's compiled ops (mmcv-lite has none)")

        return unavailable


def model_cfg(backbone_type, depth, n, *, base=64, stem=64):
    feat = (512 if depth < 50 else 2048) * base // 64
    chans = (128 if depth < 50 else 512) * base // 64
    norm = dict(type="BN", requires_grad=True)
    head = dict(type="FCNHead", in_channels=feat, in_index=3, channels=chans, num_convs=2, concat_input=True,
                dropout_ratio=0.1, num_classes=n, norm_cfg=norm, align_corners=False,
                loss_decode=dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=1.0))
    aux = dict(type="FCNHead", in_channels=feat // 2, in_index=2, channels=chans // 2, num_convs=1,
               concat_input=False, dropout_ratio=0.1, num_classes=n, norm_cfg=norm, align_corners=False,
               loss_decode=dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=0.4))
    return dict(
        type="EncoderDecoder",
        backbone=dict(type=backbone_type, depth=depth, base_channels=base, stem_channels=stem, num_stages=4,
                      out_indices=(0, 1, 2, 3), dilations=(1, 1, 2, 4), strides=(1, 2, 1, 1), norm_cfg=norm,
                      norm_eval=False, style="pytorch", contract_dilation=True),
        decode_head=head, auxiliary_head=aux, train_cfg=dict(), test_cfg=dict(mode="whole"))


def randomize(model, seed):
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in list(model.named_parameters()) + list(model.named_buffers()):
            if not t.is_floating_point():
                continue
            if name.endswith("running_var"):
                v = torch.rand(t.shape, generator=g) + 0.5
            elif name.endswith("running_mean") or name.endswith("bias"):
                v = torch.randn(t.shape, generator=g) * 0.1
            elif t.ndim == 1:
                v = torch.rand(t.shape, generator=g) * 0.5 + 0.5
            else:
                v = torch.randn(t.shape, generator=g) * (2.0 / t[0].numel()) ** 0.5
            t.copy_(v.half().float())


def make(name, cfg, n, sizes, out, *, half, style, seed):
    import torch
    from mmengine.config import Config
    from mmseg.registry import MODELS

    model = MODELS.build(Config(dict(model=cfg)).model)  # ConfigDicts, as a config file gives
    randomize(model, seed)
    model.eval()
    classes = [f"class{i}" for i in range(n)] if n != 3 else ["sky", "road", "car"]
    palette = [[(37 * i) % 256, (91 * i) % 256, (151 * i) % 256] for i in range(n)]
    text = Config(dict(model=cfg)).pretty_text
    if style == "0.x":
        meta = {"CLASSES": tuple(classes), "PALETTE": palette, "config": text, "mmseg_version": "0.30.0"}
    else:
        meta = {"dataset_meta": {"classes": tuple(classes), "palette": palette}, "cfg": text, "mmengine_version": "0.10.7"}
    sd = model.state_dict()
    if half:
        sd = {k: (v.half() if v.is_floating_point() else v) for k, v in sd.items()}
    torch.save({"meta": meta, "state_dict": sd}, out / f"{name}.pth")
    ref = {}
    rng_seed = 20
    for k, shape in enumerate(sizes):
        u8 = np.random.default_rng(rng_seed + k).integers(0, 256, size=shape, dtype=np.uint8)
        with torch.no_grad():
            res = model.predict(torch.from_numpy(normalize(u8)))
        y = torch.stack([r.seg_logits.data for r in res]).numpy()
        h, w = shape[2:]
        ref[f"image_{h}x{w}"], ref[f"out_{h}x{w}"] = u8, y.astype(np.float32)
    import mmseg

    ref["versions"] = np.array([f"torch {torch.__version__}", f"mmsegmentation {mmseg.__version__}"])
    np.savez_compressed(out / f"{name}_ref.npz", **ref)
    for f in sorted(out.glob(name + "*")):
        print(f"{f}: {f.stat().st_size / 1e6:.2f} MB")


def main(argv=None) -> int:
    sys.modules["mmcv.ops"] = _NoCompiledOps("mmcv.ops")
    import torch
    from mmseg.utils import register_all_modules

    register_all_modules()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("mode", choices=("small", "full"))
    p.add_argument("out_dir")
    a = p.parse_args(argv)
    out = Path(a.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    if a.mode == "small":
        sizes = [(2, 3, 97, 131), (1, 3, 33, 47)]
        make("mmseg_fcn_r18b_small", model_cfg("ResNet", 18, 3, base=8, stem=16), 3, sizes, out, half=True, style="0.x", seed=1)
        make("mmseg_fcn_r50v1c_small", model_cfg("ResNetV1c", 50, 3, base=4, stem=8), 3, sizes, out, half=True, style="1.x", seed=2)
    else:
        sizes = [(2, 3, 97, 131), (2, 3, 360, 480), (2, 3, 500, 375)]
        make("mmseg_fcn_r18b-d8", model_cfg("ResNet", 18, 19), 19, sizes, out, half=False, style="0.x", seed=3)
        make("mmseg_fcn_r50b-d8", model_cfg("ResNet", 50, 19), 19, sizes, out, half=False, style="1.x", seed=4)
        make("mmseg_fcn_r50-d8", model_cfg("ResNetV1c", 50, 19), 19, sizes, out, half=False, style="1.x", seed=5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
