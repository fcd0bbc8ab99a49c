"""fcn-predict on streams: a video made with PyAV from generated frames, segmented with an
exported model (the tiny ONNX of runtime_models: its answer is known independently), and
checked against per-frame ``Segmenter.segment`` on the input frames as PyAV decodes them.

How exactness is reached despite lossy video: the input video may be lossy (H.264), because the
reference is computed on the *decoded* input frames, which is what the pipeline sees too. The
output is checked three ways: class ids written as a PNG sequence (lossless: must be equal
pixel for pixel), overlay+mask through the lossless ffv1 encoder (RGB kept exactly: must be
equal), and the default H.264 mp4 (lossy: yuv420p halves the chroma resolution and x264
quantises, so colours smear across label edges; away from edges every pixel must still be
nearest to its class's palette colour).
"""

from __future__ import annotations

import http.server
import json
import logging
import socket
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

av = pytest.importorskip("av")

from fcn_deploy import video  # noqa: E402
from fcn_deploy.image import read_label_png  # noqa: E402
from fcn_deploy.palette import colorize, overlay  # noqa: E402
from fcn_deploy.predict import main  # noqa: E402
from fcn_deploy.segmenter import Segmenter  # noqa: E402
from runtime_models import make_tiny_onnx, tiny_info  # noqa: E402

pytest.importorskip("onnxruntime")

H, W, N = 48, 64, 24


def scene(i: int, h: int = H, w: int = W) -> np.ndarray:
    """A frame with large flat regions (so the tiny model's classes form blobs) that move."""
    # Colours the tiny model (seed 3) labels 2, 3, 0, 2: several classes per frame.
    cols = np.array([(30, 230, 30), (240, 240, 240), (230, 30, 30), (30, 30, 230)], np.uint8)
    a = np.empty((h, w, 3), np.uint8)
    a[:] = cols[0]
    a[: h // 3] = cols[1]
    x = (3 * i) % w
    a[h // 3: 2 * h // 3, x: x + w // 3] = cols[2]
    a[2 * h // 3:, : w // 2] = cols[3]
    return a


def noisy(i: int, h: int, w: int) -> np.ndarray:
    return np.random.default_rng(i).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def make_video(path, n=N, h=H, w=W, *, frame=scene, rate=10, codec="libx264", pix_fmt="yuv420p", **open_kw):
    c = av.open(str(path), "w", **open_kw)
    s = c.add_stream(codec, rate=rate)
    s.width, s.height, s.pix_fmt = w, h, pix_fmt
    for i in range(n):
        for p in s.encode(av.VideoFrame.from_ndarray(frame(i, h, w), format="rgb24")):
            c.mux(p)
    for p in s.encode():
        c.mux(p)
    c.close()
    return path


def decode(path):
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(c.streams.video[0])]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    d = tmp_path_factory.mktemp("model")
    info = tiny_info(5)
    make_tiny_onnx(d / "m.onnx", info, seed=3)
    return d / "m.onnx"


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return make_video(tmp_path_factory.mktemp("clip") / "in.mp4")


@pytest.fixture(scope="module")
def reference(model, clip):
    """Per-frame Segmenter.segment on the decoded input frames: (frames, labels)."""
    frames = decode(clip)
    with Segmenter.load(model, backend="onnxruntime") as seg:
        labels = [seg.segment(f).labels for f in frames]
        info = seg.info
    assert len(frames) == N
    # The test is only meaningful if the model labels frames with several classes.
    assert len(np.unique(np.stack(labels))) >= 3
    return frames, labels, info


def run(argv, capsys, caplog):
    caplog.set_level(logging.INFO)
    rc = main(argv)
    cap = capsys.readouterr()
    return rc, cap.out, cap.err + "\n".join(r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("batch,sequential", [(1, False), (4, False), (1, True)])
def test_labels_png_sequence_match_per_frame_segment(model, clip, reference, tmp_path, capsys, caplog, batch, sequential):
    _, labels, _ = reference
    argv = ["--model", str(model), str(clip), "--out", str(tmp_path / "seq" / "f_%04d.png"), "--visualize", "labels",
            "--batch", str(batch), "--stats", str(tmp_path / "stats.json"), "--no-progress"]
    rc, out, err = run(argv + (["--sequential"] if sequential else []), capsys, caplog)
    assert rc == 0, err
    files = sorted((tmp_path / "seq").glob("f_*.png"))
    assert [f.name for f in files] == [f"f_{i:04d}.png" for i in range(N)]  # every frame, in order
    for i, f in enumerate(files):
        np.testing.assert_array_equal(read_label_png(f), labels[i], err_msg=f.name)
    assert f"wrote {N} frame(s)" in out and "FPS mean" in out and "model busy" in out
    st = json.loads((tmp_path / "stats.json").read_text())
    counts = np.bincount(np.stack(labels).ravel(), minlength=5)
    assert st["frames"] == N and st["status"] == "complete" and st["pixels"] == N * H * W
    assert [c["pixels"] for c in st["classes"]] == counts.tolist()
    assert sum(st["pixel_share"].values()) == pytest.approx(1.0)
    assert st["pipelined"] is (not sequential)


def test_lossless_video_overlay_mask_side_by_side_exact(model, clip, reference, tmp_path, capsys, caplog):
    frames, labels, info = reference
    out_path = tmp_path / "out.mkv"
    rc, out, err = run(["--model", str(model), str(clip), "--out", str(out_path), "--codec", "ffv1",
                        "--visualize", "overlay,mask", "--alpha", "0.4", "--batch", "2", "--no-progress"], capsys, caplog)
    assert rc == 0, err
    got = decode(out_path)
    assert len(got) == N
    for i, g in enumerate(got):
        assert g.shape == (H, 2 * W, 3)
        expect = np.concatenate([overlay(frames[i], labels[i], info.palette, 0.4), colorize(labels[i], info.palette)], axis=1)
        np.testing.assert_array_equal(g, expect, err_msg=f"frame {i}")
    assert not list(tmp_path.glob(".*tmp*"))  # the temp file was renamed, not left behind


def _interior(lab: np.ndarray, r: int = 3) -> np.ndarray:
    """Pixels whose (2r+1)^2 neighbourhood has a single label."""
    h, w = lab.shape
    ok = np.ones_like(lab, dtype=bool)
    p = np.pad(lab, r, mode="edge")
    for dy in range(2 * r + 1):
        for dx in range(2 * r + 1):
            ok &= p[dy: dy + h, dx: dx + w] == lab
    return ok


def test_default_mp4_is_h264_and_colours_hold_away_from_edges(model, clip, reference, tmp_path, capsys, caplog):
    _, labels, info = reference
    out_path = tmp_path / "out.mp4"
    rc, out, err = run(["--model", str(model), str(clip), "--out", str(out_path), "--visualize", "mask", "--no-progress"],
                       capsys, caplog)
    assert rc == 0, err
    assert "(libx264)" in out
    with av.open(str(out_path)) as c:
        s = c.streams.video[0]
        assert s.codec_context.name == "h264" and (s.width, s.height) == (W, H)
        assert s.average_rate == 10  # the input's frame rate
    got = decode(out_path)
    assert len(got) == N
    pal = np.asarray(info.palette, dtype=np.float32)
    checked = 0
    for i, g in enumerate(got):
        nearest = ((g[:, :, None, :].astype(np.float32) - pal[None, None]) ** 2).sum(-1).argmin(-1)
        m = _interior(labels[i])
        checked += int(m.sum())
        assert (nearest[m] == labels[i][m]).mean() > 0.99, f"frame {i}"
    assert checked > N * H * W * 0.3


def test_folder_in_video_out_and_pattern_in_folder_out(model, tmp_path, capsys, caplog):
    from PIL import Image

    src = tmp_path / "frames"
    src.mkdir()
    for i in range(5):
        Image.fromarray(scene(i)).save(src / f"img{i}.png")
    rc, out, err = run(["--model", str(model), str(src), "--out", str(tmp_path / "o.mkv"), "--codec", "ffv1",
                        "--visualize", "mask", "--fps", "5", "--no-progress"], capsys, caplog)
    assert rc == 0, err
    assert len(decode(tmp_path / "o.mkv")) == 5
    # A %d pattern as input; a folder as output keeps the source names for folder/glob inputs.
    rc, out, err = run(["--model", str(model), str(src / "img%d.png"), "--out", str(tmp_path / "o1"),
                        "--visualize", "overlay", "--max-frames", "3", "--no-progress"], capsys, caplog)
    assert rc == 0, err
    assert sorted(p.name for p in (tmp_path / "o1").iterdir()) == ["000000.png", "000001.png", "000002.png"]
    rc, out, err = run(["--model", str(model), str(src / "*.png"), "--out", str(tmp_path / "o2"),
                        "--visualize", "image,mask", "--no-progress"], capsys, caplog)
    assert rc == 0, err
    names = sorted(p.name for p in (tmp_path / "o2").iterdir())
    assert names == [f"img{i}.png" for i in range(5)]
    assert np.asarray(Image.open(tmp_path / "o2" / "img0.png")).shape == (H, 2 * W, 3)


def test_max_frames_and_ignore_class(model, clip, reference, tmp_path, capsys, caplog):
    frames, labels, info = reference
    rc, out, err = run(["--model", str(model), str(clip), "--out", str(tmp_path / "m" / "%03d.png"), "--visualize", "mask",
                        "--ignore-class", "class2", "--max-frames", "5", "--no-progress"], capsys, caplog)
    assert rc == 0, err
    from PIL import Image

    files = sorted((tmp_path / "m").iterdir())
    assert len(files) == 5
    for i, f in enumerate(files):
        expect = colorize(labels[i], info.palette)
        expect[labels[i] == 2] = 0  # the ignored class stays black in the mask
        np.testing.assert_array_equal(np.asarray(Image.open(f)), expect)


@pytest.mark.parametrize("argv,expect", [
    (["--ignore-class", "Sky"], "the model's classes are class0"),
    (["--visualize", "overlay,labels"], "cannot be combined"),
    (["--visualize", "heat"], "--visualize"),
    (["--batch", "0"], "--batch"),
    (["--max-frames", "0"], "--max-frames"),
    (["--alpha", "2"], "--alpha"),
    (["--overlay"], "--visualize"),
    (["--codec", "nosuchcodec"], "no such encoder"),
    (["--stats", "/nonexistent-folder/s.json"], "--stats: output folder does not exist"),
])
def test_bad_options_one_line(model, clip, tmp_path, capsys, caplog, argv, expect):
    out = tmp_path / "o.mp4"
    rc, _, err = run(["--model", str(model), str(clip), "--out", str(out), "--no-progress"] + argv, capsys, caplog)
    assert rc == 2 and expect in err and "Traceback" not in err
    assert not out.exists()


def test_batch_beyond_a_static_profile_is_refused(tmp_path, clip, capsys, caplog):
    make_tiny_onnx(tmp_path / "b1.onnx", tiny_info(5), batch=1)
    rc, _, err = run(["--model", str(tmp_path / "b1.onnx"), str(clip), "--out", str(tmp_path / "o.mp4"), "--batch", "2"],
                     capsys, caplog)
    assert rc == 2 and "accepts batches of 1..1" in err


def test_labels_into_a_video_is_refused(model, clip, tmp_path, capsys, caplog):
    rc, _, err = run(["--model", str(model), str(clip), "--out", str(tmp_path / "o.mp4"), "--visualize", "labels"],
                     capsys, caplog)
    assert rc == 2 and "class-id PNGs" in err


def test_truncated_video_keeps_the_frames_before(model, tmp_path, capsys, caplog):
    # Index at the front (faststart), so a cut-short file still opens and announces 40 frames.
    full = make_video(tmp_path / "full.mp4", n=40, h=96, w=128, frame=noisy, container_options={"movflags": "+faststart"})
    data = full.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: int(len(data) * 0.6)])
    out = tmp_path / "o.mp4"
    rc, text, err = run(["--model", str(model), str(cut), "--out", str(out), "--visualize", "mask", "--no-progress"],
                        capsys, caplog)
    assert rc == 1, err  # frames were lost
    got = decode(out)  # the output closed properly: it decodes
    assert 0 < len(got) < 40
    assert f"wrote {len(got)} frame(s)" in text
    assert "of the 40 frames its header announces" in err
    # A cut mp4 whose index was at its end cannot be read at all: one line, no output.
    plain = make_video(tmp_path / "plain.mp4", n=10, h=96, w=128, frame=noisy)
    (tmp_path / "cut2.mp4").write_bytes(plain.read_bytes()[:2000])
    rc, _, err = run(["--model", str(model), str(tmp_path / "cut2.mp4"), "--out", str(tmp_path / "o2.mp4")], capsys, caplog)
    assert rc == 2 and "error:" in err and "Traceback" not in err
    assert not (tmp_path / "o2.mp4").exists()


def test_corrupt_packet_mid_file_is_skipped(model, tmp_path, capsys, caplog):
    full = make_video(tmp_path / "full.mp4", n=40, h=96, w=128, frame=noisy, container_options={"movflags": "+faststart"})
    d = bytearray(full.read_bytes())
    m = len(d) // 2
    d[m: m + 3000] = bytes(3000)
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(bytes(d))
    rc, text, err = run(["--model", str(model), str(bad), "--out", str(tmp_path / "o" / "%03d.png"), "--visualize", "labels",
                         "--no-progress"], capsys, caplog)
    n = len(list((tmp_path / "o").iterdir()))
    assert rc == 1 and 30 <= n < 40, err
    assert "corrupt packet(s) skipped (first near frame" in err


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    return port


def test_unreachable_url_one_line_no_output(model, tmp_path, capsys, caplog):
    out = tmp_path / "o.mp4"
    url = f"http://127.0.0.1:{_closed_port()}/live.mp4"
    rc, _, err = run(["--model", str(model), url, "--out", str(out), "--timeout", "2"], capsys, caplog)
    assert rc == 2
    lines = [l for l in err.splitlines() if l.startswith("error:")]
    assert len(lines) == 1 and "cannot open" in lines[0] and url in lines[0], err
    assert not out.exists() and not list(tmp_path.iterdir())


def test_dropped_connection_keeps_the_frames_before(model, tmp_path, capsys, caplog):
    """An HTTP server that announces the whole file and closes the connection after 60 %."""
    src = make_video(tmp_path / "src.mkv", n=40, h=96, w=128, frame=noisy)
    data = src.read_bytes()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Type", "video/x-matroska")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: int(len(data) * 0.6)])
            self.wfile.flush()
            self.close_connection = True

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    try:
        url = f"http://127.0.0.1:{srv.server_address[1]}/src.mkv"
        out = tmp_path / "o.mp4"
        rc, text, err = run(["--model", str(model), url, "--out", str(out), "--visualize", "mask", "--timeout", "3",
                             "--no-progress"], capsys, caplog)
    finally:
        srv.shutdown()
        srv.server_close()
    n = len(decode(out))
    assert 0 < n < 40 and rc == 1, err
    assert url in err and f"wrote {n} frame(s)" in text


def test_missing_pyav_one_line(tmp_path, model, clip):
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'av': raise ImportError('blocked')\n"
        "sys.meta_path.insert(0, Block())\n"
        "from fcn_deploy.predict import main\n"
        f"rc = main(['--model', {str(model)!r}, {str(clip)!r}, '--out', {str(tmp_path / 'o.mp4')!r}])\n"
        "import fcn_deploy.stream, fcn_deploy.video\n"
        "print('RC', rc, 'av' in sys.modules)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "RC 2 False" in r.stdout, r.stderr
    err = [l for l in r.stderr.splitlines() if l.startswith("error:")]
    assert len(err) == 1 and 'pip install "fcn-deploy[video]"' in err[0]


def test_stream_modules_import_av_lazily():
    r = subprocess.run([sys.executable, "-c", "import sys, fcn_deploy.stream, fcn_deploy.video, fcn_deploy.predict; "
                        "print(sorted(m for m in ('av', 'torch', 'onnxruntime') if m in sys.modules))"],
                       capture_output=True, text=True, timeout=60)
    assert r.stdout.strip() == "[]", r.stderr


def test_input_and_output_kinds(tmp_path):
    (tmp_path / "a.mp4").write_bytes(b"x")
    (tmp_path / "a.png").write_bytes(b"x")
    assert video.input_kind(str(tmp_path / "a.mp4")) == "video"
    assert video.input_kind(str(tmp_path / "a.png")) == "image"
    assert video.input_kind(str(tmp_path)) == "folder"
    assert video.input_kind("rtsp://cam.local/stream") == "url"
    assert video.input_kind("v4l2:///dev/video0") == "camera"
    assert video.input_kind("/dev/video3") == "camera"
    assert video.input_kind(str(tmp_path / "f%05d.png")) == "pattern"
    assert video.input_kind(str(tmp_path / "*.png")) == "glob"
    with pytest.raises(Exception, match="no such file"):
        video.input_kind(str(tmp_path / "missing.mp4"))
    with pytest.raises(Exception, match="unknown stream scheme"):
        video.input_kind("gopher://x/y")
    assert video.output_kind("o.mp4") == "video" and video.output_kind("o/%04d.png") == "pattern"
    assert video.output_kind(str(tmp_path / "outdir")) == "folder"
    with pytest.raises(Exception, match="cannot write .wmv"):
        video.output_kind("o.wmv")
    with pytest.raises(Exception, match="single image"):
        video.output_kind("o.png")


def test_missing_camera_one_line(model, tmp_path, capsys, caplog):
    rc, _, err = run(["--model", str(model), "v4l2:///dev/video97", "--out", str(tmp_path / "o.mp4")], capsys, caplog)
    assert rc == 2 and "no such camera device" in err


def test_images_mode_unchanged(model, tmp_path, capsys, caplog):
    """A folder with a folder --out and no stream option is still the per-image mode."""
    from PIL import Image

    (tmp_path / "imgs").mkdir()
    Image.fromarray(scene(0)).save(tmp_path / "imgs" / "a.png")
    rc, out, err = run(["--model", str(model), str(tmp_path / "imgs"), "--out", str(tmp_path / "o"), "--overlay",
                        "--no-progress"], capsys, caplog)
    assert rc == 0, err
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["a.png", "a_overlay.png"]


def test_odd_size_and_size_changes(model, tmp_path, capsys, caplog):
    """Odd frame sizes are padded by one edge pixel for yuv420p H.264; a sequence whose frame
    size changes is batched per size and each frame keeps its own size in image outputs."""
    from PIL import Image

    src = tmp_path / "seq"
    src.mkdir()
    sizes = [(47, 63), (47, 63), (30, 40), (47, 63), (47, 63)]
    for i, (h, w) in enumerate(sizes):
        Image.fromarray(scene(i, h, w)).save(src / f"{i:03d}.png")
    rc, out, err = run(["--model", str(model), str(src / "%03d.png"), "--out", str(tmp_path / "o.mp4"),
                        "--visualize", "mask", "--no-progress"], capsys, caplog)
    assert rc == 0, err
    got = decode(tmp_path / "o.mp4")
    assert len(got) == 5 and all(g.shape == (48, 64, 3) for g in got)
    rc, out, err = run(["--model", str(model), str(src), "--out", str(tmp_path / "lab"), "--visualize", "labels",
                        "--batch", "2", "--no-progress"], capsys, caplog)
    assert rc == 0, err
    with Segmenter.load(model, backend="onnxruntime") as seg:
        for i, (h, w) in enumerate(sizes):
            lab = read_label_png(tmp_path / "lab" / f"{i:03d}.png")
            np.testing.assert_array_equal(lab, seg.segment(np.asarray(Image.open(src / f"{i:03d}.png"))).labels)


def test_corrupt_image_in_a_sequence_is_skipped(model, tmp_path, capsys, caplog):
    from PIL import Image

    src = tmp_path / "seq"
    src.mkdir()
    for i in range(4):
        Image.fromarray(scene(i)).save(src / f"{i}.png")
    (src / "2.png").write_bytes(b"not a png")
    rc, out, err = run(["--model", str(model), str(src / "%d.png"), "--out", str(tmp_path / "o" / "%d.png"),
                        "--visualize", "mask", "--no-progress", "--stats", str(tmp_path / "s.json")], capsys, caplog)
    assert rc == 1 and "skipped frame 2" in err
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["0.png", "1.png", "2.png"]  # frames renumbered in order
    st = json.loads((tmp_path / "s.json").read_text())
    assert st["status"] == "incomplete" and st["frames"] == 3 and st["problems"]


def test_stages_overlap(model, tmp_path):
    """The pipeline overlaps inference with encoding: with a model that takes 30 ms a batch and
    a sink that takes 30 ms a frame (sleeps: they release the GIL as the backends and FFmpeg
    do, and need no CPU, so the machine's load cannot blur the result), the pipelined run takes
    about max(30, 30) ms a frame, the sequential one 30 + 30 ms."""
    import time as _time

    from fcn_deploy.stream import StreamOptions, run_stream

    class SlowSegmenter(Segmenter):
        def infer(self, x):
            _time.sleep(0.03)
            return super().infer(x)

    class SlowSink(video.ImageSink):
        def write(self, index, name, frame):
            _time.sleep(0.03)
            super().write(index, name, frame)

    base = Segmenter.load(model, backend="onnxruntime")
    seg = SlowSegmenter(base.runner, base.info, path=model)
    items = [(None, scene(i)) for i in range(16)]

    class ListSource(video.Source):
        description = "list"
        total = len(items)

        def frames(self):
            yield from items

    reps = {}
    try:
        for pipelined in (False, True):
            sink = SlowSink(str(tmp_path / f"o{int(pipelined)}"), "folder", labels=True, palette=seg.info.palette)
            reps[pipelined] = run_stream(seg, ListSource(), sink, StreamOptions(visualize=("labels",), progress=False,
                                                                                pipelined=pipelined))
    finally:
        base.close()
    seq, pipe = reps[False], reps[True]
    assert seq.frames == pipe.frames == 16
    print(f"sequential {seq.seconds:.2f} s, pipelined {pipe.seconds:.2f} s")
    assert pipe.seconds < 0.8 * seq.seconds, (pipe.seconds, seq.seconds)
    assert pipe.model_busy > 0.7 > seq.model_busy
    for i in range(16):  # same results, same order
        np.testing.assert_array_equal(read_label_png(tmp_path / "o0" / f"{i:06d}.png"),
                                      read_label_png(tmp_path / "o1" / f"{i:06d}.png"))
