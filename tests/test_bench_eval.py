"""fcn-eval on a tiny CamVid-layout dataset: metrics against a direct computation, --reference."""

import json
import sys

import numpy as np
import pytest
from PIL import Image

from fcn_deploy.benchmarks import datasets, evaluate
from fcn_deploy.errors import FcnError

from test_bench_tiny_models import tiny_camvid, tiny_checkpoint, tiny_info, tiny_onnx

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


def test_reference_agreement_against_direct_computation(setup, checkpoint):
    import torch

    from fcn_deploy.training.checkpoint import model_from_checkpoint

    res = evaluate.evaluate(setup["model"], setup["data"], reference=checkpoint, progress=False)
    preds, labels = _direct_predictions(setup["model"], setup["data"])
    model, info, _ = model_from_checkpoint(checkpoint)
    ref_preds = []
    with torch.no_grad():
        for img_path in sorted((setup["data"] / "val").iterdir()):
            rgb = np.asarray(Image.open(img_path).convert("RGB"), np.float64)
            x = (rgb * info.scale - np.array(info.mean)) / np.array(info.std)
            y = model(torch.from_numpy(x.transpose(2, 0, 1)[None].astype(np.float32)))
            ref_preds.append(y[0].argmax(0).numpy())
    agree = sum(int((p == r).sum()) for p, r in zip(preds, ref_preds)) / sum(p.size for p in preds)
    ref_scores, _ = _direct_scores(ref_preds, labels, CAMVID_N)
    r = res.reference
    assert 0.0 < agree < 1.0  # two unrelated models: a real, non-trivial agreement figure
    assert r["label_agreement"] == pytest.approx(agree)
    assert r["metrics"]["mean_iu"] == pytest.approx(ref_scores["mean_iu"])
    assert r["mean_iu_delta"] == pytest.approx(res.mean_iu - ref_scores["mean_iu"])
    assert set(r) == {"model", "device", "metrics", "label_agreement", "label_agreement_scored", "mean_iu_delta"}


def test_checkpoint_against_itself_agrees_fully(setup, checkpoint):
    res = evaluate.evaluate(checkpoint, setup["data"], reference=checkpoint, limit=1, progress=False)
    assert res.backend == "torch"
    assert res.reference["label_agreement"] == 1.0
    assert res.reference["mean_iu_delta"] == 0.0


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


@pytest.mark.parametrize("prefer_training", [True, False])
def test_readers_list_the_same_layouts(tmp_path, prefer_training):
    """fcn-train's readers (torch) and the torch-free fallback see the same samples."""
    rng = np.random.default_rng(0)
    f = tmp_path / "f"
    for sub in ("images", "masks"):
        (f / sub).mkdir(parents=True)
    for k in range(6):  # flat folders: index % 5 == 4 is val
        Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(f / "images" / f"a{k}.jpg")
        Image.fromarray(np.full((8, 8), k % 2, np.uint8)).save(f / "masks" / f"a{k}.png")
    if prefer_training:
        pytest.importorskip("torch")
    s = datasets.open_samples(f, "folders", "val", prefer_training=prefer_training)
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
    s = datasets.open_samples(tmp_path, "voc", "val", prefer_training=prefer_training)
    assert len(s) == 1 and len(s.class_names) == 21
    with pytest.raises(FcnError, match="valid"):
        datasets.open_samples(f, "coco", "val", prefer_training=prefer_training)

    cv = tiny_camvid(tmp_path / "cv", n_val=2)
    s = datasets.open_samples(cv, "camvid", "val", prefer_training=prefer_training)
    assert len(s) == 2 and s.ignore_index == 11 and "img001.png" in s.describe(1)


def test_eval_of_an_onnx_model_needs_no_torch(setup, tmp_path):
    """The deployed path: fcn-eval on ONNX in a process where torch cannot be imported."""
    import subprocess

    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'torch':\n"
        "            raise ImportError('blocked ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "from fcn_deploy.benchmarks.evaluate import main\n"
        f"rc = main(['--model', {str(setup['model'])!r}, '--data', {str(setup['data'])!r}, '-q'])\n"
        "assert 'torch' not in sys.modules\n"
        "sys.exit(rc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "mean IU" in out.stdout
