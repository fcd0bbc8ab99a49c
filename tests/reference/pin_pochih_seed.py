"""One-off pin of the seed decoder against pochih/FCN-pytorch's own python/fcn.py (not committed
here; fetch the repo, commit 8436fab). Run outside the test suite:

    .venv/bin/python tests/reference/pin_pochih_seed.py /path/to/FCN-pytorch/python > benchmarks/results/imp2_pochih_pin.json

Prints, per arch, whether pochih's state_dict keys/shapes equal SeedFCN's and the relative L2 /
label agreement of SeedFCN vs pochih's forward on the same random weights (sizes that are not
multiples of 32: pochih's forward of the zero-padded input, cropped, since his model cannot run
there). torchvision does not import beside torch 2.13, so a minimal stand-in gives fcn.py the
``torchvision.models.vgg.VGG`` base class it subclasses (features / avgpool / classifier, as
torchvision's); VGGNet(pretrained=False) never touches torchvision's weights.
"""
import sys, types, json
import torch, torch.nn as nn, torch.nn.functional as F
class VGG(nn.Module):
    def __init__(self, features, num_classes=1000, init_weights=True):
        super().__init__()
        self.features = features
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(nn.Linear(512*7*7, 4096), nn.ReLU(True), nn.Dropout(), nn.Linear(4096, 4096), nn.ReLU(True), nn.Dropout(), nn.Linear(4096, num_classes))
tv = types.ModuleType("torchvision"); tvm = types.ModuleType("torchvision.models"); tvv = types.ModuleType("torchvision.models.vgg")
tvv.VGG = VGG; tvm.vgg = tvv; tv.models = tvm
sys.modules.update({"torchvision": tv, "torchvision.models": tvm, "torchvision.models.vgg": tvv})
sys.path.insert(0, sys.argv[1])
import fcn as pochih  # noqa: E402
from fcn_deploy.training.registry import build_model
torch.manual_seed(0)
res = {}
for arch, cls in (("fcns", "FCNs"), ("fcn8s-bn", "FCN8s"), ("fcn16s-bn", "FCN16s"), ("fcn32s-bn", "FCN32s")):
    vgg = pochih.VGGNet(pretrained=False)
    ref = getattr(pochih, cls)(pretrained_net=vgg, n_class=5)
    sd = ref.state_dict()
    g = torch.Generator().manual_seed(1)
    for k, v in sd.items():
        if v.dtype.is_floating_point:
            if "running_var" in k: v.copy_(torch.rand(v.shape, generator=g) + 0.5)
            else: v.copy_(torch.randn(v.shape, generator=g) * (0.05 if v.ndim > 1 else 0.1))
    ref.eval()
    ours = build_model(arch, "vgg16", 5).eval()
    ok = sorted((k, tuple(v.shape)) for k, v in ours.state_dict().items()) == sorted((k, tuple(v.shape)) for k, v in sd.items())
    ours.load_state_dict(sd, strict=True)
    row = {"same_keys_shapes": ok, "n_keys": len(sd)}
    for (n, h, w) in ((2, 96, 128), (1, 160, 160), (2, 97, 131), (1, 360, 480)):
        x = torch.randn(n, 3, h, w, generator=g)
        with torch.no_grad():
            ph, pw = (-h) % 32, (-w) % 32
            r = ref(F.pad(x, [0, pw, 0, ph]))[:, :, :h, :w]
            o = ours(x)
        rel = float((o - r).norm() / r.norm())
        agree = float((o.argmax(1) == r.argmax(1)).float().mean())
        row[f"{n}x{h}x{w}" + ("" if ph == pw == 0 else " (ref on padded input)")] = {"rel_l2": rel, "label_agreement": agree}
    res[arch] = row
print(json.dumps(res, indent=1))
