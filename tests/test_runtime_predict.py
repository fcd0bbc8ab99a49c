"""fcn-predict: palette label PNGs and overlays for files and folders, a bad image skipped
with exit status 1, usage/model errors with exit status 2."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fcn_deploy.predict import collect_inputs, main
from runtime_models import expected_scores, make_tiny_onnx, random_image, tiny_info


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    d = tmp_path_factory.mktemp("model")
    info = tiny_info(5)
    W, b = make_tiny_onnx(d / "tiny.onnx", info)
    return d / "tiny.onnx", info, W, b


@pytest.fixture
def images(tmp_path):
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    imgs = {"a.png": random_image(30, 40, 1), "sub/b.png": random_image(21, 17, 2)}
    for name, arr in imgs.items():
        Image.fromarray(arr).save(src / name)
    Image.fromarray(random_image(25, 25, 3)).save(src / "c.jpg", quality=95)
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (src / "notes.txt").write_text("not an image, not picked up")
    return src, imgs


def _check_labels(path, rgb, info, W, b):
    im = Image.open(path)
    assert im.mode == "P"
    lab = np.asarray(im)
    s = expected_scores(rgb, info, W, b)
    top2 = np.sort(s, axis=0)[-2:]
    clear = (top2[1] - top2[0]) > 1e-4
    np.testing.assert_array_equal(lab[clear], s.argmax(0)[clear])
    pal = np.array(im.getpalette()[:15]).reshape(5, 3)
    assert np.array_equal(pal, np.array(info.palette))
    return lab


def test_folder_with_a_bad_image(model, images, tmp_path, capsys):
    path, info, W, b = model
    src, imgs = images
    out = tmp_path / "out"
    rc = main(["--model", str(path), str(src), "--out", str(out), "--overlay", "--alpha", "0.4", "--no-progress"])
    assert rc == 1
    err = capsys.readouterr().err
    assert "broken.png" in err and "1 of 4 image(s) failed" in err
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert written == ["a.png", "a_overlay.png", "c.png", "c_overlay.png", "sub/b.png", "sub/b_overlay.png"]
    for name, rgb in imgs.items():
        stem = name[:-4]
        lab = _check_labels(out / f"{stem}.png", rgb, info, W, b)
        ov = np.asarray(Image.open(out / f"{stem}_overlay.png"))
        pal = np.array(info.palette, np.float64)
        np.testing.assert_allclose(ov, 0.6 * rgb + 0.4 * pal[lab], atol=1.0)


def test_all_good_exit_zero_and_labels_only(model, tmp_path, capsys):
    path, info, W, b = model
    rgb = random_image(12, 14, 5)
    Image.fromarray(rgb).save(tmp_path / "x.png")
    out = tmp_path / "o"
    assert main(["--model", str(path), str(tmp_path / "x.png"), "--out", str(out), "--labels-only", "--no-progress"]) == 0
    im = Image.open(out / "x.png")
    assert im.mode == "L"
    assert np.array_equal(np.asarray(im), expected_scores(rgb, info, W, b).argmax(0))
    assert sorted(p.name for p in out.iterdir()) == ["x.png"]
    assert "wrote 1 label map" in capsys.readouterr().out


def test_openvino_backend_and_threads(model, tmp_path):
    pytest.importorskip("openvino")
    path, info, W, b = model
    rgb = random_image(12, 14, 6)
    Image.fromarray(rgb).save(tmp_path / "x.png")
    out = tmp_path / "o"
    assert main(["--model", str(path), str(tmp_path / "x.png"), "--out", str(out), "--backend", "openvino",
                 "--threads", "1", "--no-progress"]) == 0
    _check_labels(out / "x.png", rgb, info, W, b)


@pytest.mark.parametrize("args, words", [
    (["--alpha", "2"], "--alpha must be within [0, 1]"),
    (["--backend", "tflite"], "unknown backend 'tflite'"),
    (["--backend", "torch"], "ONNX model: it runs only on backend 'onnxruntime' or 'openvino'"),
])
def test_usage_errors_exit_2(model, tmp_path, capsys, args, words):
    path, _, _, _ = model
    Image.fromarray(random_image(8, 8)).save(tmp_path / "x.png")
    rc = main(["--model", str(path), str(tmp_path / "x.png"), "--out", str(tmp_path / "o"), *args])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and words in err[0]


def test_model_errors_exit_2(tmp_path, capsys):
    make_tiny_onnx(tmp_path / "foreign.onnx", tiny_info(5), metadata=False)
    Image.fromarray(random_image(8, 8)).save(tmp_path / "x.png")
    assert main(["--model", str(tmp_path / "foreign.onnx"), str(tmp_path / "x.png"), "--out", str(tmp_path / "o")]) == 2
    assert "carries no fcn-deploy metadata" in capsys.readouterr().err
    assert main(["--model", str(tmp_path / "m.plan"), str(tmp_path / "x.png"), "--out", str(tmp_path / "o")]) == 2
    assert "no such file" in capsys.readouterr().err
    (tmp_path / "m.plan").write_bytes(b"engine")
    assert main(["--model", str(tmp_path / "m.plan"), str(tmp_path / "x.png"), "--out", str(tmp_path / "o")]) == 2
    assert "has no sidecar m.plan.json" in capsys.readouterr().err
    assert main(["--model", str(tmp_path / "foreign.onnx"), str(tmp_path / "missing.png"), "--out", str(tmp_path / "o")]) == 2
    assert "missing.png: no such file or folder" in capsys.readouterr().err


def test_overlay_and_labels_only_are_exclusive(model, tmp_path, capsys):
    path, _, _, _ = model
    assert main(["--model", str(path), "x.png", "--out", str(tmp_path), "--overlay", "--labels-only"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "not allowed with" in err, err


def test_name_clash_is_refused(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for d in ("a", "b"):
        Image.fromarray(random_image(4, 4)).save(tmp_path / d / "x.png")
    items = collect_inputs([str(tmp_path / "a" / "x.png"), str(tmp_path / "a")])  # same file twice is fine
    assert len(items) == 1
    from fcn_deploy.errors import FcnError

    with pytest.raises(FcnError, match="would both write x.png"):
        collect_inputs([str(tmp_path / "a"), str(tmp_path / "b")])


def _one_error_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "Traceback" not in err[0], err
    return err[0]


@pytest.mark.parametrize("where", ["under_a_file", "proc"])
def test_out_that_cannot_be_a_folder_is_one_error(model, tmp_path, capsys, where):
    path, _, _, _ = model
    Image.fromarray(random_image(8, 8)).save(tmp_path / "x.png")
    if where == "proc":
        if not Path("/proc/self").is_dir():
            pytest.skip("needs Linux /proc")
        out = "/proc/self/x"
    else:
        (tmp_path / "some_file").write_text("keep")
        out = str(tmp_path / "some_file" / "x")
    assert main(["--model", str(path), str(tmp_path / "x.png"), "--out", out, "--no-progress"]) == 2
    assert f"cannot create --out {out}" in _one_error_line(capsys)


def test_bad_model_leaves_no_output_folder(tmp_path, capsys):
    Image.fromarray(random_image(8, 8)).save(tmp_path / "x.png")
    out = tmp_path / "new" / "o"
    assert main(["--model", str(tmp_path / "missing.onnx"), str(tmp_path / "x.png"), "--out", str(out)]) == 2
    _one_error_line(capsys)
    assert not (tmp_path / "new").exists()


def test_os_error_on_one_image_is_reported_and_counted(model, images, tmp_path, capsys):
    path, info, W, b = model
    src, imgs = images
    (src / "broken.png").unlink()
    out = tmp_path / "out"
    out.mkdir()
    (out / "sub").write_text("a file where the sub-folder should go")
    rc = main(["--model", str(path), str(src), "--out", str(out), "--no-progress"])
    assert rc == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and "b.png" in err and "1 of 3 image(s) failed" in err
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "c.png", "sub"]
    assert (out / "sub").read_text() == "a file where the sub-folder should go"
    _check_labels(out / "a.png", imgs["a.png"], info, W, b)


def test_overlay_name_clash_is_refused_not_overwritten(model, tmp_path, capsys):
    path, info, W, b = model
    src = tmp_path / "in"
    src.mkdir()
    for i, name in enumerate(["a.png", "a_overlay.png"]):
        Image.fromarray(random_image(9, 11, 10 + i)).save(src / name)
    out = tmp_path / "o"
    assert main(["--model", str(path), str(src), "--out", str(out), "--overlay", "--no-progress"]) == 2
    assert "would both write a_overlay.png" in _one_error_line(capsys)
    assert not out.exists()
    # without --overlay the two label maps have different names: no clash
    assert main(["--model", str(path), str(src), "--out", str(out), "--no-progress"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "a_overlay.png"]
    _check_labels(out / "a_overlay.png", np.asarray(Image.open(src / "a_overlay.png")), info, W, b)
