"""The Segmenter: exact answers on tiny hand-built models (every output kind, both channel
orders, both CPU backends), bad inputs, batching, resize="fit", threads, timing; and parity
with PyTorch on an exported ResNet-18 FCN-8s (random images and real CamVid val images)."""

import threading
import time

import numpy as np
import pytest
from PIL import Image

import fcn_deploy
from fcn_deploy.errors import FcnError
from fcn_deploy.segmenter import Segmenter, SegmentationResult
from runtime_models import expected_labels, expected_scores, make_tiny_onnx, random_image, tiny_info

BACKENDS = ["onnxruntime", "openvino"]


def _agree(labels, rgb, info, W, b, min_gap=1e-4):
    """Labels equal the independent expectation wherever the top-2 gap is not a float tie."""
    s = expected_scores(rgb, info, W, b)
    top2 = np.sort(s, axis=0)[-2:]
    clear = (top2[1] - top2[0]) > min_gap
    exp = s.argmax(0)
    assert clear.mean() > 0.99
    np.testing.assert_array_equal(labels[clear], exp[clear])


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("seg")
    out = {}
    for kind in ("logits", "probs", "labels"):
        for order in ("RGB", "BGR"):
            info = tiny_info(5, channel_order=order, output=kind)
            path = d / f"{kind}_{order}.onnx"
            out[(kind, order)] = (path, info) + make_tiny_onnx(path, info, seed=hash((kind, order)) % 100)
    return out


# -- exact answers ---------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", ["logits", "probs", "labels"])
@pytest.mark.parametrize("order", ["RGB", "BGR"])
def test_labels_exact(models, backend, kind, order):
    if backend == "openvino":
        pytest.importorskip("openvino")
    path, info, W, b = models[(kind, order)]
    with fcn_deploy.load(path, backend=backend) as seg:
        assert seg.backend == backend and seg.output_kind == kind
        img = random_image(37, 53, seed=3)
        r = seg.segment(img)
        assert isinstance(r, SegmentationResult)
        assert r.labels.shape == (37, 53) and r.labels.dtype == np.uint8
        _agree(r.labels, img, info, W, b)
        # Same picture given as BGR array, PIL image and file: same labels.
        assert np.array_equal(seg.segment(img[:, :, ::-1].copy(), channel_order="BGR").labels, r.labels)
        assert np.array_equal(seg.segment(Image.fromarray(img)).labels, r.labels)


@pytest.mark.parametrize("kind", ["logits", "probs"])
def test_confidence_is_softmax_max(models, kind):
    path, info, W, b = models[(kind, "RGB")]
    seg = fcn_deploy.load(path, backend="onnxruntime")
    img = random_image(20, 24, seed=5)
    r = seg.segment(img, return_confidence=True)
    s = expected_scores(img, info, W, b)
    e = np.exp(s - s.max(0))
    expected = (e / e.sum(0)).max(0)
    assert r.confidence.shape == (20, 24) and r.confidence.dtype == np.float32
    np.testing.assert_allclose(r.confidence, expected, rtol=1e-4, atol=1e-5)
    assert seg.segment(img).confidence is None


def test_labels_model_has_no_confidence(models):
    path, _, _, _ = models[("labels", "RGB")]
    seg = fcn_deploy.load(path)
    with pytest.raises(FcnError, match="outputs labels only"):
        seg.segment(random_image(8, 8), return_confidence=True)


def test_labels_output_with_channel_dim(tmp_path):
    info = tiny_info(4, output="labels")
    W, b = make_tiny_onnx(tmp_path / "m.onnx", info, labels_keep_dim=True)
    img = random_image(11, 13)
    r = fcn_deploy.load(tmp_path / "m.onnx").segment(img)
    _agree(r.labels, img, info, W, b)


def test_fp16_input_model(tmp_path):
    info = tiny_info(5)
    W, b = make_tiny_onnx(tmp_path / "h.onnx", info, input_dtype="float16")
    seg = fcn_deploy.load(tmp_path / "h.onnx")
    assert seg.input_dtype == np.float16
    img = random_image(30, 40, seed=9)
    r = seg.segment(img)
    s = expected_scores(img, info, W, b)
    top2 = np.sort(s, axis=0)[-2:]
    clear = (top2[1] - top2[0]) > 0.05  # fp16 input rounding
    np.testing.assert_array_equal(r.labels[clear], s.argmax(0)[clear])


# -- the result object ---------------------------------------------------------------------------------

def test_result_views(models, tmp_path):
    path, info, W, b = models[("logits", "RGB")]
    seg = fcn_deploy.load(path)
    img = random_image(16, 18, seed=11)
    r = seg.segment(img)
    pal = np.array(info.palette, np.uint8)
    assert np.array_equal(r.colorized(), pal[r.labels])
    ov = r.overlay(0.25)
    np.testing.assert_allclose(ov, 0.75 * img + 0.25 * pal[r.labels], atol=1.0)
    assert np.array_equal(r.overlay(0.0), img) and np.array_equal(r.overlay(1.0), pal[r.labels])
    with pytest.raises(FcnError, match="alpha"):
        r.overlay(1.5)
    counts = r.class_counts()
    assert list(counts) == list(info.class_names)
    assert sum(counts.values()) == 16 * 18
    assert [counts[n] for n in info.class_names] == list(np.bincount(r.labels.ravel(), minlength=5))
    r.save_labels(tmp_path / "l.png")
    r.save_overlay(tmp_path / "o.png", alpha=0.25)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "l.png")), r.labels)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "o.png")), ov)


# -- bad inputs ------------------------------------------------------------------------------------

def test_foreign_onnx_without_metadata_is_refused(tmp_path):
    make_tiny_onnx(tmp_path / "foreign.onnx", tiny_info(5), metadata=False)
    for backend in BACKENDS:
        with pytest.raises(FcnError, match="carries no fcn-deploy metadata.*fcn-export"):
            fcn_deploy.load(tmp_path / "foreign.onnx", backend=backend)


def test_class_count_mismatch(tmp_path):
    # Declared in the graph: refused at load.
    make_tiny_onnx(tmp_path / "a.onnx", tiny_info(5), channels_out=6)
    with pytest.raises(FcnError, match="outputs 6 class channels but its metadata lists 5 classes"):
        fcn_deploy.load(tmp_path / "a.onnx")
    # A symbolic channel axis: refused at load (if the backend infers it) or at the first image.
    make_tiny_onnx(tmp_path / "b.onnx", tiny_info(5), channels_out=6, declared_channels="C")
    for backend in BACKENDS:
        with pytest.raises(FcnError, match="outputs 6 class channels but its metadata lists 5 classes"):
            fcn_deploy.load(tmp_path / "b.onnx", backend=backend).segment(random_image(8, 8))
    # The check at run time itself (a runner that reports no channel count).
    make_tiny_onnx(tmp_path / "ok.onnx", tiny_info(5))
    seg = fcn_deploy.load(tmp_path / "ok.onnx")
    seg.info = tiny_info(4)
    with pytest.raises(FcnError, match="outputs 5 class channels but its metadata lists 4 classes"):
        seg.segment(random_image(8, 8))


def test_bad_images_and_arguments(models, tmp_path):
    path, _, _, _ = models[("logits", "RGB")]
    seg = fcn_deploy.load(path)
    with pytest.raises(FcnError, match="got an array of shape"):
        seg.segment(np.zeros((8, 8, 4), np.uint8))
    with pytest.raises(FcnError, match="float32"):
        seg.segment(np.zeros((8, 8, 3), np.float32))
    with pytest.raises(FcnError, match="4-D array; pass a list"):
        seg.segment(np.zeros((2, 8, 8, 3), np.uint8))
    (tmp_path / "bad.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(FcnError, match="image 1: .*bad.png"):
        seg.segment([random_image(8, 8), tmp_path / "bad.png"])
    with pytest.raises(FcnError, match="resize must be None or 'fit'"):
        seg.segment(random_image(8, 8), resize="stretch")
    with pytest.raises(FcnError, match="no images"):
        seg.segment([])
    with pytest.raises(FcnError, match="no such file"):
        fcn_deploy.load(tmp_path / "nothing.onnx")
    with pytest.raises(FcnError, match="does not take option.*providers, threads"):
        fcn_deploy.load(path, backend="onnxruntime", precision="bf16")
    with pytest.raises(FcnError, match="unknown backend 'cuda'; valid"):
        fcn_deploy.load(path, backend="cuda")


# -- batching, sizes, fit ---------------------------------------------------------------------------

def test_list_batches_same_sizes_and_keeps_order(models):
    path, info, W, b = models[("logits", "RGB")]
    seg = fcn_deploy.load(path)
    imgs = [random_image(20, 30, 1), random_image(25, 17, 2), random_image(20, 30, 3), random_image(9, 9, 4)]
    res = seg.segment(imgs)
    assert isinstance(res, list) and len(res) == 4
    for img, r in zip(imgs, res):
        assert r.labels.shape == img.shape[:2]
        _agree(r.labels, img, info, W, b)
        assert np.array_equal(r.image, img)
    assert res[0].timing.batch == 2 and res[1].timing.batch == 1
    t = seg.last_timing
    assert t.runs == 3 and t.batch == 4
    assert t.preprocess_ms > 0 and t.infer_ms > 0 and t.postprocess_ms > 0
    assert t.total_ms >= t.infer_ms + t.overhead_ms


def test_static_model_sizes_and_fit(tmp_path):
    info = tiny_info(5)
    W, b = make_tiny_onnx(tmp_path / "s.onnx", info, batch=1, hw=(32, 48))
    seg = fcn_deploy.load(tmp_path / "s.onnx")
    assert seg.profile.min == seg.profile.max == (1, 3, 32, 48)
    img = random_image(32, 48)
    _agree(seg.segment(img).labels, img, info, W, b)
    # Static batch 1: a list of 3 runs 3 times.
    res = seg.segment([img, img, img])
    assert seg.last_timing.runs == 3 and all(np.array_equal(r.labels, res[0].labels) for r in res)
    with pytest.raises(FcnError, match=r"image 1x3x64x96 is outside the sizes this model accepts \(min 1x3x32x48.*re-export it with dynamic"):
        seg.segment(random_image(64, 96))
    # fit: a smooth image at twice the size gives labels at its own size that match the
    # expectation computed at that size almost everywhere.
    yy, xx = np.mgrid[0:64, 0:96]
    smooth = np.stack([yy * 4, xx * 2, (yy + xx) * 2], -1).clip(0, 255).astype(np.uint8)
    r = seg.segment(smooth, resize="fit", return_confidence=True)
    assert r.labels.shape == (64, 96) and r.confidence.shape == (64, 96)
    assert (r.labels == expected_labels(smooth, info, W, b)).mean() > 0.9


def test_labels_model_fit_uses_nearest(tmp_path):
    info = tiny_info(5, output="labels")
    W, b = make_tiny_onnx(tmp_path / "s.onnx", info, batch=1, hw=(16, 16))
    seg = fcn_deploy.load(tmp_path / "s.onnx")
    # Four flat quadrants of different colours, 32x32: scaled into 16x16 and the labels back.
    colours = random_image(2, 2, 7)
    big = np.repeat(np.repeat(colours, 16, 0), 16, 1)
    r = seg.segment(big, resize="fit")
    assert r.labels.shape == (32, 32)
    exp = expected_labels(big, info, W, b)
    interior = np.ones((32, 32), bool)
    interior[13:19, :] = interior[:, 13:19] = False  # blending at the quadrant borders
    np.testing.assert_array_equal(r.labels[interior], exp[interior])
    assert len(np.unique(r.labels)) > 1 or len(np.unique(exp)) == 1


# -- threads ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
def test_four_threads_share_one_segmenter(models, backend):
    if backend == "openvino":
        pytest.importorskip("openvino")
    path, info, W, b = models[("logits", "BGR")]
    seg = fcn_deploy.load(path, backend=backend)
    imgs = [random_image(20 + 3 * i, 30 + 5 * i, seed=i) for i in range(8)]
    expected = [expected_scores(im, info, W, b) for im in imgs]
    errors, checked = [], [0] * 4
    barrier = threading.Barrier(4)

    def work(t):
        # Thread t segments lists of t + 1 images: a last_timing shared between threads would
        # show another thread's batch size.
        try:
            barrier.wait()
            for it in range(10):
                ks = [(t * 3 + it + j) % len(imgs) for j in range(t + 1)]
                rs = seg.segment([imgs[k] for k in ks], return_confidence=(it % 2 == 0))
                for k, r in zip(ks, rs):
                    s = expected[k]
                    top2 = np.sort(s, axis=0)[-2:]
                    clear = (top2[1] - top2[0]) > 1e-4
                    if r.labels.shape != imgs[k].shape[:2] or not np.array_equal(r.labels[clear], s.argmax(0)[clear]):
                        errors.append((t, it, k))
                time.sleep(0.001)  # let the other threads run their segment() in between
                lt = seg.last_timing
                if lt is None or lt.batch != t + 1 or lt.runs != len({imgs[k].shape for k in ks}):
                    errors.append(("timing", t, it, None if lt is None else (lt.batch, lt.runs)))
                checked[t] += 1
        except Exception as e:  # pragma: no cover - reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    assert checked == [10, 10, 10, 10]


# -- parity with PyTorch on an exported FCN ------------------------------------------------------------

@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny-trained ResNet-18 FCN-8s exported by the export stage as logits and as labels.

    The zero-initialised score layers start from small random weights, then 3 SGD steps on
    random images whose target is their quantised brightness, so the label maps vary over the
    image (a constant map would make the parity checks below weak)."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnx")
    from fcn_deploy.export.onnx_export import export_onnx
    from fcn_deploy.modelinfo import ModelInfo
    from fcn_deploy.palette import CAMVID_CLASSES, CAMVID_PALETTE
    from fcn_deploy.training.models import build_model, input_convention

    torch.manual_seed(0)
    model = build_model("fcn8s", "resnet18", 11)
    order, scale, mean, std = input_convention("resnet18")
    info = ModelInfo(arch="fcn8s", backbone="resnet18", num_classes=11, class_names=CAMVID_CLASSES,
                     palette=CAMVID_PALETTE, channel_order=order, scale=scale, mean=mean, std=std)
    with torch.no_grad():
        for layer in (model.score_fr, model.score_pool4, model.score_pool3):
            layer.weight.normal_(0, 0.05, generator=torch.Generator().manual_seed(2))
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.05, momentum=0.9)
    model.train()
    g = torch.Generator().manual_seed(1)
    for _ in range(3):
        x = torch.nn.functional.avg_pool2d(torch.randn(2, 3, 64, 64, generator=g), 9, 1, 4) * 3
        y = ((x.mean(1) + 1.5) * 11 / 3).long().clamp(0, 10)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    assert float(model.score_fr.weight.detach().abs().sum()) > 0
    d = tmp_path_factory.mktemp("exported")
    paths = {k: export_onnx((model, info), d / f"fcn8s_{k}.onnx", output_kind=k, verify=False) for k in ("logits", "labels")}
    return model, info, paths


def _torch_logits(model, info, rgbs):
    import torch

    xs = []
    for rgb in rgbs:
        img = rgb[..., ::-1] if info.channel_order == "BGR" else rgb
        x = (img.astype(np.float32) * np.float32(info.scale) - np.array(info.mean, np.float32)) / np.array(info.std, np.float32)
        xs.append(x.transpose(2, 0, 1))
    with torch.no_grad():
        return model(torch.from_numpy(np.ascontiguousarray(np.stack(xs)))).numpy()


def _assert_torch_parity(labels, logits):
    top2 = np.sort(logits, axis=0)[-2:]
    clear = (top2[1] - top2[0]) > 1e-4 * np.abs(logits).max()  # not a float tie
    assert clear.mean() > 0.99
    np.testing.assert_array_equal(labels[clear], logits.argmax(0)[clear])
    assert (labels == logits.argmax(0)).mean() > 0.999


@pytest.mark.timeout(300)
@pytest.mark.parametrize("kind", ["logits", "labels"])
def test_labels_equal_pytorch_argmax(exported, kind):
    model, info, paths = exported
    seg = fcn_deploy.load(paths[kind], backend="onnxruntime")
    assert seg.output_kind == kind
    imgs = [random_image(64, 80, 21), random_image(97, 131, 22), random_image(64, 80, 23)]
    res = seg.segment(imgs)
    assert seg.last_timing.runs == 2  # the two 64x80 images ran as one batch
    for img, r in zip(imgs, res):
        ref = _torch_logits(model, info, [img])[0]
        assert r.labels.shape == img.shape[:2]
        _assert_torch_parity(r.labels, ref)
    assert len(np.unique(res[1].labels)) > 1  # a trained head, not a constant map


def test_openvino_equals_onnxruntime_on_exported_model(exported):
    pytest.importorskip("openvino")
    _, _, paths = exported
    img = random_image(97, 131, 30)
    a = fcn_deploy.load(paths["logits"], backend="onnxruntime").segment(img, return_confidence=True)
    b = fcn_deploy.load(paths["logits"], backend="openvino").segment(img, return_confidence=True)
    assert (a.labels == b.labels).mean() > 0.999
    np.testing.assert_allclose(a.confidence, b.confidence, atol=1e-3)


@pytest.mark.camvid
def test_camvid_val_labels_equal_pytorch_argmax(exported, camvid_dir):
    model, info, paths = exported
    files = sorted((camvid_dir / "val").glob("*.png"))[:3]
    assert files
    seg = fcn_deploy.load(paths["logits"])
    for f in files:
        r = seg.segment(f)
        rgb = np.asarray(Image.open(f).convert("RGB"))
        assert r.labels.shape == rgb.shape[:2]
        _assert_torch_parity(r.labels, _torch_logits(model, info, [rgb])[0])


# -- TensorRT-only branches, driven by a fake runner on the CPU --------------------------------------

from fcn_deploy.backends.base import Runner as _Runner  # noqa: E402


class FakeTrtRunner(_Runner):
    """Stands in for TrtRunner: backend "tensorrt", a profile with minimum batch 2, and an infer
    as strict as an execution context's set_input_shape (a shape outside the profile, a wrong
    input name or dtype is an error). Computes the tiny 1x1-conv model in numpy."""

    backend = "tensorrt"
    device = "fake GPU"

    def __init__(self, W, b, profile=((2, 3, 16, 16), (2, 3, 32, 32), (4, 3, 64, 64))):
        from fcn_deploy.backends.base import TensorSpec, Timing

        super().__init__()
        self.W, self.b, self._profile, self.fed = W, b, profile, []
        self._Timing = Timing
        self._in = [TensorSpec("input", "float32", (-1, 3, -1, -1))]
        self._out = [TensorSpec("logits", "float32", (-1, W.shape[0], -1, -1))]

    def inputs(self):
        return list(self._in)

    def outputs(self):
        return list(self._out)

    def profile(self):
        return self._profile

    def _infer(self, feeds):
        if set(feeds) != {"input"}:
            raise RuntimeError(f"unknown input tensor(s) {sorted(feeds)}")
        x = feeds["input"]
        if x.dtype != np.float32 or x.ndim != 4:
            raise RuntimeError(f"input must be 4-D float32, got {x.dtype} {x.shape}")
        lo, _, hi = self._profile
        if not all(a <= v <= c for a, v, c in zip(lo, x.shape, hi)):
            raise RuntimeError(f"set_input_shape: {x.shape} outside the profile {lo}..{hi}")
        self.fed.append(x.shape)
        y = np.einsum("nchw,kc->nkhw", x, self.W[:, :, 0, 0]) + self.b[None, :, None, None]
        return {"logits": y.astype(np.float32)}, self._Timing(total_ms=0.1, compute_ms=0.05, h2d_ms=0.02, d2h_ms=0.03)

    def close(self):
        pass


def test_fake_trt_runner_is_strict():
    W = np.ones((5, 3, 1, 1), np.float32)
    r = FakeTrtRunner(W, np.zeros(5, np.float32))
    with pytest.raises(RuntimeError, match="unknown input"):
        r.infer({"inputs": np.zeros((2, 3, 16, 16), np.float32)})
    with pytest.raises(RuntimeError, match="outside the profile"):
        r.infer({"input": np.zeros((1, 3, 16, 16), np.float32)})
    with pytest.raises(RuntimeError, match="float32"):
        r.infer({"input": np.zeros((2, 3, 16, 16), np.float64)})
    assert r.infer({"input": np.zeros((2, 3, 16, 16), np.float32)})["logits"].shape == (2, 5, 16, 16)


def test_tensorrt_profile_min_batch_is_padded_and_cut():
    info = tiny_info(5)
    rng = np.random.default_rng(4)
    W, b = rng.normal(size=(5, 3, 1, 1)).astype(np.float32), rng.normal(size=5).astype(np.float32) * 0.1
    runner = FakeTrtRunner(W, b)
    seg = Segmenter(runner, info, path="m.plan")
    assert seg.backend == "tensorrt" and seg.profile.min == (2, 3, 16, 16)
    img = random_image(20, 24, seed=8)
    r = seg.segment(img)  # one image: padded to the profile's minimum batch of 2
    assert runner.fed == [(2, 3, 20, 24)]
    _agree(r.labels, img, info, W, b)
    assert seg.last_timing.batch == 1 and seg.last_timing.h2d_ms == pytest.approx(0.02)
    # Five same-size images with max batch 4: runs of 4 and 1 (padded to 2); results in order.
    imgs = [random_image(20, 24, seed=i) for i in range(5)]
    res = seg.segment(imgs)
    assert runner.fed[1:] == [(4, 3, 20, 24), (2, 3, 20, 24)]
    for im, rr in zip(imgs, res):
        _agree(rr.labels, im, info, W, b)


def test_tensorrt_profile_errors_name_the_engine_and_fcn_build():
    info = tiny_info(5)
    W, b = np.ones((5, 3, 1, 1), np.float32), np.zeros(5, np.float32)
    seg = Segmenter(FakeTrtRunner(W, b), info, path="m.plan")
    with pytest.raises(FcnError) as e:
        seg.segment(random_image(100, 24))
    msg = str(e.value)
    assert "outside the engine's profile" in msg and "rebuild the plan with wider fcn-build --min/--max" in msg
    assert "re-export" not in msg
    # fit: scaled into the profile, labels back at the image's size.
    r = seg.segment(random_image(100, 24), resize="fit")
    assert r.labels.shape == (100, 24)
