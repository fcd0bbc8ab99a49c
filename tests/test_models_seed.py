"""The seed's deconv decoder (pochih/FCN-pytorch FCNs/FCN8s/FCN16s/FCN32s): layout, numerics,
training, export and import.

pochih's code is not installable (no package; its VGGNet subclasses torchvision's VGG, which does
not import here), so:
- the layout is pinned by the key names/shapes its ``python/fcn.py`` defines (EXPECTED below,
  written from reading that file at commit 8436fab);
- the numerics by an independent re-computation with torch.nn.functional (``reference``), in
  the order pochih's ``forward`` methods apply their ops;
- once, outside the repo, pochih's own fcn.py was run against SeedFCN on the same weights
  (benchmarks/RESULTS.md ("Imported models"), benchmarks/results/imp2_pochih_pin.json): equal, rel L2 0.0.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402

from import_parity import SIZES_ALL, SIZES_FAST, check_onnx_against, compare, randomize_  # noqa: E402

from fcn_deploy.training.checkpoint import load_checkpoint  # noqa: E402
from fcn_deploy.training.registry import build_model  # noqa: E402

SLOW = pytest.mark.skipif(not os.environ.get("FCN_DEPLOY_SLOW"), reason="slow: set FCN_DEPLOY_SLOW=1")
VARIANTS = {"fcns": "FCNs", "fcn8s-bn": "FCN8s", "fcn16s-bn": "FCN16s", "fcn32s-bn": "FCN32s"}
VGG_CONVS = [(0, 3, 64), (2, 64, 64), (5, 64, 128), (7, 128, 128), (10, 128, 256), (12, 256, 256), (14, 256, 256),
             (17, 256, 512), (19, 512, 512), (21, 512, 512), (24, 512, 512), (26, 512, 512), (28, 512, 512)]
POOLS_AFTER = {2, 7, 14, 21, 28}  # a max pool follows these convs (features 4, 9, 16, 23, 30)
DECONVS = [(512, 512), (512, 256), (256, 128), (128, 64), (64, 32)]


def expected_layout(n_class: int):
    """Key -> shape of pochih's FCNs(pretrained_net=VGGNet(remove_fc=True), n_class).state_dict()."""
    out = {}
    for i, cin, cout in VGG_CONVS:
        out[f"pretrained_net.features.{i}.weight"] = (cout, cin, 3, 3)
        out[f"pretrained_net.features.{i}.bias"] = (cout,)
    for j, (cin, cout) in enumerate(DECONVS, 1):
        out[f"deconv{j}.weight"] = (cin, cout, 3, 3)  # ConvTranspose2d: (in, out, k, k)
        out[f"deconv{j}.bias"] = (cout,)
        for s in ("weight", "bias", "running_mean", "running_var"):
            out[f"bn{j}.{s}"] = (cout,)
        out[f"bn{j}.num_batches_tracked"] = ()
    out["classifier.weight"] = (n_class, 32, 1, 1)
    out["classifier.bias"] = (n_class,)
    return out


def reference(sd, variant: str, x: torch.Tensor) -> torch.Tensor:
    """pochih's forward, re-computed with functional ops from the state_dict (input padded to a
    multiple of 32 at the bottom/right, output cropped, as SeedFCN documents)."""
    h, w = x.shape[2:]
    x = F.pad(x, [0, (-w) % 32, 0, (-h) % 32])
    taps = []
    for i, _, _ in VGG_CONVS:
        x = F.relu(F.conv2d(x, sd[f"pretrained_net.features.{i}.weight"], sd[f"pretrained_net.features.{i}.bias"], padding=1))
        if i in POOLS_AFTER:
            x = F.max_pool2d(x, 2, 2)
            taps.append(x)
    x1, x2, x3, x4, x5 = taps

    def dc(j, t):
        return F.relu(F.conv_transpose2d(t, sd[f"deconv{j}.weight"], sd[f"deconv{j}.bias"], stride=2, padding=1, output_padding=1))

    def bn(j, t):
        return F.batch_norm(t, sd[f"bn{j}.running_mean"], sd[f"bn{j}.running_var"], sd[f"bn{j}.weight"], sd[f"bn{j}.bias"], False, 0.0, 1e-5)

    if variant == "FCNs":
        s = bn(1, dc(1, x5)) + x4
        s = bn(2, dc(2, s)) + x3
        s = bn(3, dc(3, s)) + x2
        s = bn(4, dc(4, s)) + x1
        s = bn(5, dc(5, s))
    elif variant == "FCN8s":
        s = bn(1, dc(1, x5) + x4)
        s = bn(2, dc(2, s) + x3)
        s = bn(5, dc(5, bn(4, dc(4, bn(3, dc(3, s))))))
    elif variant == "FCN16s":
        s = bn(1, dc(1, x5) + x4)
        s = bn(5, dc(5, bn(4, dc(4, bn(3, dc(3, bn(2, dc(2, s))))))))
    else:
        s = x5
        for j in range(1, 6):
            s = bn(j, dc(j, s))
    return F.conv2d(s, sd["classifier.weight"], sd["classifier.bias"])[:, :, :h, :w]


@pytest.mark.parametrize("arch", list(VARIANTS))
def test_layout_is_pochihs(arch):
    m = build_model(arch, "vgg16", 7)
    got = {k: tuple(v.shape) for k, v in m.state_dict().items()}
    assert got == expected_layout(7)
    assert (m.arch, m.backbone_name, m.num_classes, m.build_options) == (arch, "vgg16", 7, {})


@pytest.mark.parametrize("arch", list(VARIANTS))
def test_forward_equals_independent_recomputation(arch):
    m = randomize_(build_model(arch, "vgg16", 5), seed=1).eval()
    sd = m.state_dict()
    for n, h, w in ((2, 64, 96), (1, 37, 53)):  # a multiple of 32 (no pad) and odd sizes
        x = torch.randn(n, 3, h, w, generator=torch.Generator().manual_seed(h))
        with torch.no_grad():
            ours, ref = m(x), reference(sd, VARIANTS[arch], x)
        assert ours.shape == (n, 5, h, w)
        rel, agree = compare(ours.numpy(), ref.numpy())
        assert rel <= 1e-6 and agree == 1.0, (arch, h, w, rel)


def test_recomputation_tells_variants_apart():
    """The check can fail: FCNs' weights run through FCN8s' order give other logits."""
    m = randomize_(build_model("fcns", "vgg16", 5), seed=1).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        a, b = m(x).numpy(), reference(m.state_dict(), "FCN8s", x).numpy()
    assert np.linalg.norm(a - b) / np.linalg.norm(b) > 1e-2


def test_half_pixel_shift_per_stage():
    """k3 s2 p1 op1 puts coarse pixel i's centre at fine pixel 2i (the coarse pixel covers 2i and
    2i+1, centre 2i+0.5): half a fine pixel per stage; through five stages 15.5 input pixels."""
    def up(t, taps=(0.5, 1.0, 0.5)):
        k = torch.tensor(taps).reshape(1, 1, 1, 3).repeat(1, 1, 3, 1) * torch.tensor(taps).reshape(1, 1, 3, 1)
        return F.conv_transpose2d(t, k / k.sum() * 4, stride=2, padding=1, output_padding=1)

    def centroid(t):
        p = t[0, 0].sum(0)
        return float((p * torch.arange(p.numel())).sum() / p.sum())

    n = 12
    d = torch.zeros(1, 1, 1, n)
    d[..., 5] = 1
    one = up(d)
    assert one.shape[-1] == 2 * n and abs(centroid(one) - 2 * 5) < 1e-6  # true centre: 10.5
    t = d
    for _ in range(5):
        t = up(t)
    assert t.shape[-1] == 32 * n
    true_centre = 32 * 5 + 15.5  # coarse pixel 5 at stride 32 covers input pixels 160..191
    assert abs(centroid(t) - 32 * 5) < 1e-4 and true_centre - centroid(t) == pytest.approx(15.5)


def test_fcn_train_trains_the_seed_decoder(tmp_path):
    from fcn_deploy.training.train import main as train_main

    out = tmp_path / "seed.pt"
    rc = train_main(["--arch", "fcns", "--backbone", "vgg16", "--format", "synthetic", "--synthetic-size", "64x64",
                     "--synthetic-count", "4x2", "--epochs", "1", "--batch-size", "2", "--out", str(out), "--threads", "2"])
    assert rc == 0
    c = load_checkpoint(out)
    assert (c["model"]["arch"], c["model"]["backbone"]) == ("fcns", "vgg16")
    assert c["info"]["channel_order"] == "RGB"  # a fresh model uses the ImageNet convention
    assert set(c["state_dict"]) == set(expected_layout(c["model"]["num_classes"]))


@pytest.fixture(scope="module")
def pochih_file(tmp_path_factory):
    """A pochih-layout state_dict as nn.DataParallel saves it (``module.`` prefix)."""
    d = tmp_path_factory.mktemp("pochih")
    m = randomize_(build_model("fcns", "vgg16", 12), seed=4).eval()
    sd = {k: v.clone() for k, v in m.state_dict().items()}
    torch.save({"module." + k: v for k, v in sd.items()}, d / "fcns_dp.pth")
    return sd, d / "fcns_dp.pth"


def test_import_export_matches_recomputation(pochih_file, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    from fcn_deploy.export.cli import main as export_main
    from fcn_deploy.training.importers.cli import main as import_main

    sd, src = pochih_file
    ck, onnx_path = tmp_path / "m.pt", tmp_path / "m.onnx"
    assert import_main([str(src), str(ck), "--arch", "fcns"]) == 0
    assert "--from pochih" in capsys.readouterr().out
    c = load_checkpoint(ck)
    assert c["info"]["channel_order"] == "BGR" and abs(c["info"]["scale"] - 1 / 255) < 1e-12
    assert c["info"]["extra"]["input_convention"] == "pochih"
    assert export_main([str(ck), str(onnx_path), "--verify-sizes", "97x131"]) == 0  # fcn-export's own parity check too

    def ref(x):
        with torch.no_grad():
            return reference(sd, "FCNs", torch.from_numpy(x)).numpy()

    print(check_onnx_against(onnx_path, ref, SIZES_ALL if os.environ.get("FCN_DEPLOY_SLOW") else SIZES_FAST,
                             input_fn=lambda n, h, w, seed: np.random.default_rng(seed).standard_normal((n, 3, h, w)).astype(np.float32)))


def test_import_without_arch_names_the_candidates(pochih_file, tmp_path, capsys):
    from fcn_deploy.training.importers.cli import main as import_main

    _, src = pochih_file
    out = tmp_path / "x.pt"
    assert import_main([str(src), str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--arch fcns" in err[0] and "fcn8s-bn" in err[0]
    assert not out.exists()


def test_pickled_whole_model_refused(tmp_path, capsys):
    from fcn_deploy.training.importers.cli import main as import_main

    src = tmp_path / "model.pth"
    torch.save(build_model("fcn32s-bn", "vgg16", 3), src)  # what pochih's train.py does
    out = tmp_path / "x.pt"
    assert import_main([str(src), str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "state_dict" in err[0]
    assert not out.exists()


@SLOW
@pytest.mark.slow
@pytest.mark.parametrize("arch", ["fcn8s-bn", "fcn16s-bn", "fcn32s-bn"])
def test_other_variants_import_export(arch, tmp_path):
    pytest.importorskip("onnxruntime")
    from fcn_deploy.export.cli import main as export_main
    from fcn_deploy.training.importers.cli import main as import_main

    sd = randomize_(build_model(arch, "vgg16", 4), seed=9).state_dict()
    src = tmp_path / "s.pth"
    torch.save(sd, src)
    ck, onnx_path = tmp_path / "m.pt", tmp_path / "m.onnx"
    assert import_main([str(src), str(ck), "--arch", arch]) == 0
    assert export_main([str(ck), str(onnx_path), "--no-verify"]) == 0

    def ref(x):
        with torch.no_grad():
            return reference(sd, VARIANTS[arch], torch.from_numpy(x)).numpy()

    rows = check_onnx_against(onnx_path, ref, SIZES_ALL,
                              input_fn=lambda n, h, w, seed: np.random.default_rng(seed).standard_normal((n, 3, h, w)).astype(np.float32))
    print(arch, rows)


def test_torchvision_vgg16_weights_load_into_the_backbone(tmp_path):
    from fcn_deploy.training.models import load_backbone_weights

    src = randomize_(build_model("fcns", "vgg16", 3), seed=2).pretrained_net.state_dict()
    tv = dict(src)
    tv["classifier.6.weight"] = torch.zeros(10, 4096)  # torchvision's classifier: not used by the decoder
    path = tmp_path / "vgg16.pth"
    torch.save(tv, path)
    m = build_model("fcn8s-bn", "vgg16", 3)
    loaded = load_backbone_weights(m, str(path))
    assert len(loaded) == 26 and torch.equal(m.pretrained_net.features[28].weight, src["features.28.weight"])
