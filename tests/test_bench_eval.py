"""fcn-eval on a tiny CamVid-layout dataset: metrics against a direct computation, --reference."""

import json
import sys

import numpy as np
import pytest
from PIL import Image

import fcn_deploy.datasets as DS
from fcn_deploy.benchmarks import datasets, evaluate
from fcn_deploy.errors import FcnError

from test_bench_tiny_models import tiny_camvid, tiny_checkpoint, tiny_info, tiny_onnx
from test_datasets_readers import run_without_torch

ort = pytest.importorskip("onnxruntime")

CAMVID_N = 11


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("eval")
    data = tiny_camvid(d / "camvid", n_val=3, sizes=[(24, 32), (19, 27), (32, 24)], seed=5)
    model = tiny_onnx(d / "m.onnx", classes=CAMVID_N, width=8, depth=2, seed=7)
    return {"dir": d, "data": data, "model": model}


def _direct_predictions(onnx_path, data):
    """Run the ONNX with onnxruntime directly, normalising by hand (ImageNet convention, RGB)."""
    info = tiny_info(CAMVID_N)
    s = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    preds, labels = [], []
    for img_path in sorted((data / "val").iterdir()):
        rgb = np.asarray(Image.open(img_path).convert("RGB"), np.float64)
        x = (rgb * info.scale - np.array(info.mean)) / np.array(info.std)
        y = s.run(None, {"input": x.transpose(2, 0, 1)[None].astype(np.float32)})[0]
        preds.append(y[0].argmax(0))
        labels.append(np.asarray(Image.open(data / "valannot" / img_path.name)).astype(np.int64))
    return preds, labels


def _direct_scores(preds, labels, n):
    hist = np.zeros((n, n), np.int64)
    for p, l in zip(preds, labels):
        for t, q in zip(l.ravel(), p.ravel()):
            if 0 <= t < n:
                hist[t, q] += 1
    tp = np.diag(hist).astype(float)
    gt, pr = hist.sum(1), hist.sum(0)
    present = gt + pr - tp > 0
    iu = tp[present] / (gt + pr - tp)[present]
    return {
        "pixel_acc": tp.sum() / hist.sum(),
        "mean_acc": np.mean(tp[gt > 0] / gt[gt > 0]),
        "mean_iu": iu.mean(),
        "fw_iu": float(((gt / hist.sum()) * np.where(present, tp / np.maximum(gt + pr - tp, 1), 0)).sum()),
    }, hist


def test_metrics_match_a_direct_computation(setup):
    res = evaluate.evaluate(setup["model"], setup["data"], fmt="camvid", split="val", backend="onnxruntime", progress=False)
    preds, labels = _direct_predictions(setup["model"], setup["data"])
    want, hist = _direct_scores(preds, labels, CAMVID_N)
    assert res.images == 3
    assert res.pixels == sum(p.size for p in preds)
    np.testing.assert_array_equal(res.hist, hist)
    for k, v in want.items():
        assert res.scores[k] == pytest.approx(v, abs=1e-12), k
    assert 0 < res.mean_iu < 1
    assert set(res.scores["per_class_iu"]) == set(tiny_info(CAMVID_N).class_names)


def test_limit_and_json_keys(setup, tmp_path):
    res = evaluate.evaluate(setup["model"], setup["data"], limit=2, progress=False)
    assert res.images == 2
    p = tmp_path / "e.json"
    evaluate.write_json(res, p)
    doc = json.loads(p.read_text())
    assert set(doc) == {"schema", "created_utc", "model", "backend", "device", "precision", "data", "format",
                        "split", "images", "pixels", "class_names", "metrics", "per_class_iu", "confusion",
                        "reference", "seconds"}
    assert set(doc["metrics"]) == {"pixel_acc", "mean_acc", "mean_iu", "fw_iu"}
    assert doc["reference"] is None
    assert np.array(doc["confusion"]).shape == (CAMVID_N, CAMVID_N)


@pytest.fixture(scope="module")
def checkpoint(setup):
    pytest.importorskip("torch")
    return tiny_checkpoint(setup["dir"] / "ref.pt", classes=CAMVID_N, seed=1)


def _torch_predictions(ckpt, data):
    """Argmax of the checkpoint's model run directly in PyTorch on the val images (hand-normalised)."""
    import torch

    from fcn_deploy.training.checkpoint import model_from_checkpoint

    model, info, _ = model_from_checkpoint(ckpt)
    model.eval()
    preds = []
    with torch.no_grad():
        for img_path in sorted((data / "val").iterdir()):
            rgb = np.asarray(Image.open(img_path).convert("RGB"), np.float64)
            x = (rgb * info.scale - np.array(info.mean)) / np.array(info.std)
            y = model(torch.from_numpy(x.transpose(2, 0, 1)[None].astype(np.float32)))
            preds.append(y[0].argmax(0).numpy())
    return preds


def _agreement(a, b):
    return sum(int((p == r).sum()) for p, r in zip(a, b)) / sum(p.size for p in a)


def test_reference_agreement_against_direct_computation(setup, checkpoint):
    res = evaluate.evaluate(setup["model"], setup["data"], reference=checkpoint, progress=False)
    preds, labels = _direct_predictions(setup["model"], setup["data"])
    ref_preds = _torch_predictions(checkpoint, setup["data"])
    agree = _agreement(preds, ref_preds)
    ref_scores, _ = _direct_scores(ref_preds, labels, CAMVID_N)
    r = res.reference
    assert 0.0 < agree < 1.0  # two unrelated models: a real, non-trivial agreement figure
    assert r["label_agreement"] == pytest.approx(agree)
    # ... and over the scored pixels only (void, label 11, left out), by value.
    same = sum(int(((p == q) & (lab < CAMVID_N)).sum()) for p, q, lab in zip(preds, ref_preds, labels))
    scored = sum(int((lab < CAMVID_N).sum()) for lab in labels)
    assert 0 < scored < sum(lab.size for lab in labels)  # some void pixels: the two figures differ
    assert r["label_agreement_scored"] == pytest.approx(same / scored)
    assert r["label_agreement_scored"] != pytest.approx(r["label_agreement"], abs=1e-9)
    assert r["metrics"]["mean_iu"] == pytest.approx(ref_scores["mean_iu"])
    assert r["mean_iu_delta"] == pytest.approx(res.mean_iu - ref_scores["mean_iu"])
    assert set(r) == {"model", "device", "metrics", "label_agreement", "label_agreement_scored", "mean_iu_delta"}


def test_perturbed_checkpoint_against_its_source(setup, checkpoint):
    """A copy of the reference with slightly perturbed score layers, both run by PyTorch through
    the Segmenter: the agreement drops below 100 % by exactly what a direct computation finds."""
    import torch

    from fcn_deploy.training.checkpoint import model_from_checkpoint, save_checkpoint

    model, info, _ = model_from_checkpoint(checkpoint)
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, mod in model.named_modules():
            if name.startswith("score") and isinstance(mod, torch.nn.Conv2d):
                mod.weight.add_(torch.randn(mod.weight.shape, generator=gen) * 0.002)
    perturbed = setup["dir"] / "perturbed.pt"
    save_checkpoint(perturbed, model, info)

    res = evaluate.evaluate(perturbed, setup["data"], reference=checkpoint, progress=False)
    assert res.backend == "torch"
    mine, ref = _torch_predictions(perturbed, setup["data"]), _torch_predictions(checkpoint, setup["data"])
    _, labels = _direct_predictions(setup["model"], setup["data"])
    agree = _agreement(mine, ref)
    assert 0.5 < agree < 1.0  # close to its source, but not the same model
    r = res.reference
    assert r["label_agreement"] == pytest.approx(agree)
    want = _direct_scores(mine, labels, CAMVID_N)[0]["mean_iu"] - _direct_scores(ref, labels, CAMVID_N)[0]["mean_iu"]
    assert r["mean_iu_delta"] == pytest.approx(want)


def test_confusion_png_with_and_without_matplotlib(setup, tmp_path, monkeypatch):
    hist = np.array([[5, 1], [2, 7]])
    p1 = tmp_path / "a.png"
    note = evaluate.write_confusion_png(hist, ["x", "y"], p1)
    assert p1.read_bytes()[:4] == b"\x89PNG" and "wrote" in note
    for m in ("matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, m, None)
    p2 = tmp_path / "b.png"
    note = evaluate.write_confusion_png(hist, ["x", "y"], p2)
    assert "plain heatmap" in note
    im = np.asarray(Image.open(p2).convert("RGB"))
    assert im.shape[0] > 40 and len(np.unique(im.reshape(-1, 3), axis=0)) > 3


def test_cli_writes_json_and_confusion(setup, tmp_path, capsys):
    js, cm = tmp_path / "e.json", tmp_path / "cm.png"
    rc = evaluate.main(["--model", str(setup["model"]), "--data", str(setup["data"]), "--json", str(js),
                        "--confusion", str(cm), "-q"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "mean IU" in out and "per-class IoU" in out
    assert json.loads(js.read_text())["images"] == 3
    assert cm.is_file()


def _broken_dataset(tmp_path, kind):
    root = tiny_camvid(tmp_path / kind, n_val=2, seed=2)
    if kind == "missing_label":
        (root / "valannot" / "img001.png").unlink()
    elif kind == "size_mismatch":
        Image.fromarray(np.zeros((5, 5), np.uint8)).save(root / "valannot" / "img001.png")
    elif kind == "rgb_label":
        Image.fromarray(np.zeros((24, 32, 3), np.uint8)).save(root / "valannot" / "img001.png")
    return root


@pytest.mark.parametrize("kind, expect", [
    ("missing_label", "missing mask"),
    ("size_mismatch", "size mismatch"),
    ("rgb_label", "single-channel"),
])
def test_cli_bad_data_is_one_line(setup, tmp_path, capsys, kind, expect):
    root = _broken_dataset(tmp_path, kind)
    rc = evaluate.main(["--model", str(setup["model"]), "--data", str(root), "-q"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    assert expect in err and "img001.png" in err


@pytest.mark.parametrize("args, expect", [
    (["--model", "/nope.onnx", "--data", "DATA"], "model not found"),
    (["--model", "MODEL", "--data", "/nope"], "folder not found"),
    (["--model", "MODEL", "--data", "DATA", "--split", "test"], "test"),
    (["--model", "MODEL", "--data", "DATA", "--format", "voc"], "no PASCAL VOC layout"),
    (["--model", "MODEL", "--data", "DATA", "--reference", "MODEL"], "must be a PyTorch checkpoint"),
    (["--model", "MODEL", "--data", "DATA", "--limit", "0"], "--limit"),
    (["--model", "MODEL", "--data", "DATA", "--confusion", "cm.jpg"], ".png"),
])
def test_cli_bad_input(setup, capsys, args, expect):
    args = [str(setup["model"]) if a == "MODEL" else str(setup["data"]) if a == "DATA" else a for a in args]
    rc = evaluate.main(args + ["-q"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    assert expect in err


def test_class_count_mismatch_is_an_error(setup, tmp_path, capsys):
    five = tiny_onnx(tmp_path / "five.onnx", classes=5)
    with pytest.raises(FcnError, match="class count mismatch: the model has 5 classes, the camvid dataset 11"):
        evaluate.evaluate(five, setup["data"], progress=False)
    rc = evaluate.main(["--model", str(five), "--data", str(setup["data"]), "-q"])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "class count mismatch" in err


class _IgnoreInRange:
    """The tiny CamVid val split with its void pixels (11) relabelled 3 and ignore_index = 3: a
    dataset whose ignore index lies inside the class range."""

    def __init__(self, root):
        self.ds = DS.open_dataset("camvid", root, "val", cache=False)
        self.class_names, self.ignore_index = self.ds.class_names, 3

    def __len__(self):
        return len(self.ds)

    def get(self, i):
        img, lab = self.ds.get(i)
        return img, np.where(lab == 11, 3, lab).astype(np.uint8)


def test_ignore_index_is_masked_even_inside_the_class_range(setup):
    res = evaluate.evaluate(setup["model"], _IgnoreInRange(setup["data"]), progress=False)
    preds, labels = _direct_predictions(setup["model"], setup["data"])
    _, hist = _direct_scores(preds, [np.where(l == 3, 255, l) for l in labels], CAMVID_N)
    assert (labels[0] == 3).any()
    np.testing.assert_array_equal(res.hist, hist)
    assert res.hist[3].sum() == 0


def _folders(root, top_label, classes_txt=None):
    rng = np.random.default_rng(4)
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True)
    for k in range(5):  # flat: a4 is val
        Image.fromarray(rng.integers(0, 255, (9, 11, 3), dtype=np.uint8)).save(root / "images" / f"a{k}.png")
        Image.fromarray(rng.integers(0, top_label + 1, (9, 11), dtype=np.uint8)).save(root / "masks" / f"a{k}.png")
    if classes_txt:
        (root / "classes.txt").write_text("\n".join(classes_txt) + "\n")
    return root


def test_folders_class_count(tmp_path):
    three = tiny_onnx(tmp_path / "three.onnx", classes=3)
    # no classes.txt, masks hold 0..1: the count is only a guess, the model's 3 names are used
    res = evaluate.evaluate(three, _folders(tmp_path / "a", 1), fmt="folders", split="val", progress=False)
    assert res.class_names == ["c0", "c1", "c2"] and res.hist.shape == (3, 3) and res.hist.sum() == 99
    # classes.txt says 2: a real mismatch
    with pytest.raises(FcnError, match="model has 3 classes, the folders dataset 2"):
        evaluate.evaluate(three, _folders(tmp_path / "b", 1, ["road", "sky"]), fmt="folders", progress=False)
    # masks hold 0..3 (4 classes at least): more than the model knows
    with pytest.raises(FcnError, match="dataset 4 .*add classes.txt"):
        evaluate.evaluate(three, _folders(tmp_path / "c", 3), fmt="folders", progress=False)


def test_readers_list_the_layouts(tmp_path):
    """fcn-eval's samples come from the shared torch-free readers (fcn_deploy.datasets), uncached."""
    rng = np.random.default_rng(0)
    f = tmp_path / "f"
    for sub in ("images", "masks"):
        (f / sub).mkdir(parents=True)
    for k in range(6):  # flat folders: index % 5 == 4 is val
        Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(f / "images" / f"a{k}.jpg")
        Image.fromarray(np.full((8, 8), k % 2, np.uint8)).save(f / "masks" / f"a{k}.png")
    s = datasets.open_samples(f, "folders", "val")
    assert isinstance(s, DS.PairDataset) and not s.cache
    assert len(s) == 1 and "a4.jpg" in s.describe(0)
    img, lab = s.get(0)
    assert img.shape == (8, 8, 3) and lab.shape == (8, 8) and int(lab.max()) == 0

    v = tmp_path / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (v / sub).mkdir(parents=True)
    Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(v / "JPEGImages" / "x1.jpg")
    lab = np.full((8, 8), 255, np.uint8)
    lab[2:4, 2:4] = 15
    Image.fromarray(lab).convert("P").save(v / "SegmentationClass" / "x1.png")
    (v / "ImageSets/Segmentation/val.txt").write_text("x1\n")
    s = datasets.open_samples(tmp_path, "voc", "val")
    assert len(s) == 1 and len(s.class_names) == 21
    with pytest.raises(FcnError, match="valid"):
        datasets.open_samples(f, "coco", "val")

    cv = tiny_camvid(tmp_path / "cv", n_val=2)
    s = datasets.open_samples(cv, "camvid", "val")
    assert len(s) == 2 and s.ignore_index == 11 and "img001.png" in s.describe(1)


def test_eval_of_an_onnx_model_needs_no_torch(setup):
    """The deployed path: fcn-eval on ONNX in a process where torch cannot be imported."""
    out = run_without_torch(
        "from fcn_deploy.benchmarks.evaluate import main\n"
        f"rc = main(['--model', {str(setup['model'])!r}, '--data', {str(setup['data'])!r}, '-q'])\n"
    )
    assert out.returncode == 0, out.stderr
    assert "mean IU" in out.stdout
