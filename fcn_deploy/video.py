"""Frame sources and sinks for streams: video files, URLs, cameras, image sequences and folders.

Sources yield HxWx3 uint8 RGB frames; sinks take them (or label maps) in order. Video files,
network streams (RTSP/HTTP/...) and cameras go through PyAV (``pip install "fcn-deploy[video]"``;
its wheels carry FFmpeg), imported lazily; image sequences and folders need only Pillow.

=====================================  ==========================================================
input                                  read as
=====================================  ==========================================================
``clip.mp4`` (mkv avi mov webm ...)    video file (PyAV), first video stream
``rtsp://`` ``http(s)://`` ...         network stream (PyAV; ``--timeout`` for open and reads)
``/dev/video0``, ``v4l2:///dev/video0`` camera through video4linux2 (PyAV; unverified on hardware:
                                       no camera on this project's machines)
``frames/%05d.png``                    numbered image sequence (first number 0..4, then consecutive)
``frames/*.png``                       glob, sorted
``frames/``                            folder, images found recursively, sorted
=====================================  ==========================================================

Outputs: a video file by extension (``.mp4`` H.264 by default, ``.mkv``, ``.avi``, ``.mov``,
``.webm``), an image sequence pattern (``out/%05d.png``, numbered by frame index from 0) or a
folder (``out/``: ``NAME.png`` per input image for folder/glob sources, else ``%06d.png``).
Every file is written atomically; a video file is written beside its final name and renamed
only once closed (a stream that breaks off still gives a complete, playable file of the frames
before the break).

Damage is reported, not raised, where frames can still be kept: :class:`Source` records
problems (``problems``: one line each) and whether frames were lost (``lost``); a packet the
decoder rejects is skipped; a read error ends the stream; a file that ends before the frame
count its header announced counts as lost frames.
"""

from __future__ import annotations

import glob as _glob
import logging
import re
from fractions import Fraction
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

import numpy as np

from fcn_deploy._util import atomic_path
from fcn_deploy.errors import FcnError, first_line
from fcn_deploy.image import IMAGE_EXTENSIONS, label_image, load_image

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mkv", ".avi", ".mov", ".webm", ".mpg", ".mpeg", ".ts", ".flv", ".wmv", ".y4m")
# Writable containers and the encoder tried first for each (the first available one wins).
CONTAINER_CODECS = {
    ".mp4": ("libx264", "h264", "libopenh264", "mpeg4"),
    ".m4v": ("libx264", "h264", "libopenh264", "mpeg4"),
    ".mov": ("libx264", "h264", "libopenh264", "mpeg4"),
    ".mkv": ("libx264", "h264", "libopenh264", "mpeg4"),
    ".avi": ("libx264", "h264", "mpeg4"),
    ".webm": ("libvpx-vp9", "libvpx"),
}
URL_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "udp", "tcp", "srt", "rtp", "hls", "mms")
PATTERN_RE = re.compile(r"%0?(\d*)d")
MAX_BAD_PACKETS = 25  # consecutive packets the decoder rejects before the stream counts as broken


def av_module():
    """PyAV, or one FcnError line saying how to install it."""
    try:
        import av  # noqa: F401
    except ImportError:
        raise FcnError('video files, network streams and cameras need PyAV: pip install "fcn-deploy[video]" '
                       "(or pip install av)") from None
    import av

    return av


# ------------------------------------------------------------------------------------------------
# What a name means
# ------------------------------------------------------------------------------------------------

def input_kind(spec: str) -> str:
    """"url", "camera", "pattern", "glob", "folder", "video", "image" (a single image file)."""
    s = str(spec)
    low = s.lower()
    if low.startswith("v4l2://") or re.match(r"^/dev/video\d+$", s):
        return "camera"
    m = re.match(r"^([a-z][a-z0-9+.-]*)://", low)
    if m and m.group(1) in URL_SCHEMES:
        return "url"
    p = Path(s)
    if p.is_dir():
        return "folder"
    if p.exists():
        if p.suffix.lower() in IMAGE_EXTENSIONS:
            return "image"
        return "video"  # PyAV probes anything else (and says so when it cannot)
    if PATTERN_RE.search(p.name):
        return "pattern"
    if any(c in s for c in "*?["):
        return "glob"
    if m:
        raise FcnError(f"{s}: unknown stream scheme {m.group(1)!r}; use one of {', '.join(URL_SCHEMES)}")
    raise FcnError(f"{s}: no such file or folder")


def output_kind(spec: str) -> str:
    """"video" (by extension), "pattern" (``%d`` in the name) or "folder"."""
    p = Path(str(spec))
    if PATTERN_RE.search(p.name):
        return "pattern"
    ext = p.suffix.lower()
    if ext in CONTAINER_CODECS:
        return "video"
    if ext in VIDEO_EXTENSIONS:
        raise FcnError(f"--out {spec}: cannot write {ext} videos; use one of {', '.join(CONTAINER_CODECS)}")
    if ext in IMAGE_EXTENSIONS and not p.is_dir():
        raise FcnError(f"--out {spec}: a single image cannot hold a stream; give a video file, a pattern such as "
                       f"{p.with_name(p.stem + '_%05d' + ext)} or a folder")
    return "folder"


def is_stream_name(spec: str) -> bool:
    """True for names only a stream run can read (video, URL, camera, pattern, glob)."""
    try:
        return input_kind(spec) in ("url", "camera", "pattern", "glob", "video")
    except FcnError:
        return False


# ------------------------------------------------------------------------------------------------
# Sources
# ------------------------------------------------------------------------------------------------

class Source:
    """Frames from somewhere. ``frames()`` yields ``(name or None, HxWx3 uint8 RGB)`` and never
    raises for damage found after the first frame: it records it in ``problems`` (and ``lost``
    when frames were lost) and ends. ``total`` is the expected frame count when known."""

    description = "?"
    total: Optional[int] = None
    fps: Optional[Fraction] = None
    live = False

    def __init__(self):
        self.problems: List[str] = []
        self.lost = False
        self.skipped = 0
        self.produced = 0

    def frames(self) -> Iterator[Tuple[Optional[str], np.ndarray]]:  # pragma: no cover - interface
        raise NotImplementedError

    def close(self) -> None:
        pass

    def note(self, msg: str, *, lost: bool) -> None:
        self.problems.append(msg)
        self.lost = self.lost or lost


class ImageFilesSource(Source):
    """A list of image files read with Pillow; a bad file is skipped and reported."""

    def __init__(self, files: List[Path], description: str, names: Optional[List[str]] = None):
        super().__init__()
        if not files:
            raise FcnError(f"{description}: no images found")
        self.files = files
        self.names = names
        self.description = description
        self.total = len(files)

    def frames(self):
        for i, f in enumerate(self.files):
            try:
                rgb = load_image(f)
            except FcnError as e:
                self.skipped += 1
                self.note(f"skipped frame {i}: {e}", lost=True)
                continue
            self.produced += 1
            yield (self.names[i] if self.names else None), rgb


def _sequence_files(pattern: str) -> List[Path]:
    """FFmpeg image2 style: the first of numbers 0..4 that exists, then consecutive numbers."""
    p = Path(pattern)
    fmt = PATTERN_RE.sub(lambda m: "{:0" + (m.group(1) or "1") + "d}" if m.group(1) else "{:d}", p.name, count=1)
    if "%" in fmt:
        raise FcnError(f"{pattern}: one %d (or %05d) is allowed in a sequence pattern")
    start = next((k for k in range(5) if (p.parent / fmt.format(k)).is_file()), None)
    if start is None:
        raise FcnError(f"{pattern}: no file matches (looked for {p.parent / fmt.format(0)} .. {fmt.format(4)})")
    out = []
    k = start
    while (p.parent / fmt.format(k)).is_file():
        out.append(p.parent / fmt.format(k))
        k += 1
    return out


def _unique_stems(files: List[Path], root: Optional[Path]) -> List[str]:
    names, seen = [], set()
    for i, f in enumerate(files):
        stem = str(f.relative_to(root).with_suffix("")) if root else f.stem
        if stem in seen:
            stem = f"{stem}_{i:06d}"
        seen.add(stem)
        names.append(stem)
    return names


class AVSource(Source):
    """A video file, network stream or camera through PyAV: the first video stream, decoded
    packet by packet so that one bad packet costs one frame, not the stream."""

    def __init__(self, spec: str, kind: str, *, timeout: float = 10.0):
        super().__init__()
        av = av_module()
        self.av = av
        self.spec = spec
        self.kind = kind
        self.live = kind in ("url", "camera")
        kw = {}
        target = spec
        if kind == "camera":
            target = spec[len("v4l2://"):] if spec.lower().startswith("v4l2://") else spec
            kw["format"] = "video4linux2"
            if not Path(target).exists():
                raise FcnError(f"{spec}: no such camera device")
        if kind == "url":
            kw["timeout"] = (float(timeout), float(timeout))
            if spec.lower().startswith(("rtsp://", "rtsps://")):
                kw["options"] = {"rtsp_transport": "tcp"}
        self.description = spec
        try:
            self.container = av.open(target, "r", **kw)
        except av.error.FFmpegError as e:
            raise FcnError(f"cannot open {spec}: {_av_reason(e)}") from None
        except (OSError, ValueError) as e:
            raise FcnError(f"cannot open {spec}: {first_line(e)}") from None
        vs = list(self.container.streams.video)
        if not vs:
            self.container.close()
            hint = " (an mp4 whose index is at its end, cut short?)" if not self.live else ""
            raise FcnError(f"{spec}: no video stream found{hint}")
        self.stream = vs[0]
        try:
            self.stream.thread_type = "AUTO"  # frame + slice threads in the decoder
        except Exception:  # pragma: no cover - older PyAV
            pass
        rate = self.stream.average_rate or self.stream.guessed_rate
        self.fps = Fraction(rate) if rate else None
        self.total = self._expected_frames()

    def _expected_frames(self) -> Optional[int]:
        if self.live:
            return None
        n = int(self.stream.frames or 0)
        if n > 0:
            return n
        dur = self.container.duration  # microseconds, from the header (Matroska, AVI...)
        if dur and self.fps:
            return int(round(dur / 1e6 * float(self.fps)))
        return None

    def frames(self):
        av = self.av
        bad_run = 0
        bad = []  # (frame index, reason) of packets the decoder rejected
        index = 0
        broke = None
        try:
            for packet in self.container.demux(self.stream):
                try:
                    decoded = packet.decode()
                except av.error.InvalidDataError as e:
                    self.skipped += 1
                    bad_run += 1
                    bad.append((index, _av_reason(e)))
                    if bad_run >= MAX_BAD_PACKETS:
                        broke = f"{bad_run} corrupt packets in a row, stopped reading"
                        break
                    continue
                bad_run = 0
                for fr in decoded:
                    index += 1
                    self.produced += 1
                    yield None, fr.to_ndarray(format="rgb24")
        except av.error.EOFError:
            pass
        except (av.error.FFmpegError, OSError) as e:
            broke = f"{'connection lost' if self.live else 'read error'} after {self.produced} frames ({_av_reason(e)})"
        self._report(broke, bad)

    def _report(self, broke: Optional[str], bad: List[Tuple[int, str]]) -> None:
        """One line for everything that went wrong while reading (none when nothing did)."""
        parts = []
        lost = bool(bad) or broke is not None
        if broke:
            parts.append(broke)
        elif self.total is not None and self.produced + self.skipped < self.total - 1:
            parts.append(f"ended after {self.produced} of the {self.total} frames its header announces (truncated file?)")
            lost = True
        elif self.live:
            parts.append(f"the stream ended after {self.produced} frames")
        if bad:
            parts.append(f"{len(bad)} corrupt packet(s) skipped (first near frame {bad[0][0]}: {bad[0][1]})")
        if parts:
            self.note(f"{self.spec}: " + "; ".join(parts), lost=lost)

    def close(self) -> None:
        try:
            self.container.close()
        except Exception:  # pragma: no cover
            pass


def _av_reason(e) -> str:
    text = getattr(e, "strerror", None) or first_line(e)
    return str(text)


def open_source(spec: str, *, timeout: float = 10.0) -> Source:
    kind = input_kind(spec)
    if kind in ("video", "url", "camera"):
        return AVSource(spec, kind, timeout=timeout)
    if kind == "pattern":
        files = _sequence_files(spec)
        return ImageFilesSource(files, spec)
    if kind == "glob":
        files = sorted(Path(f) for f in _glob.glob(spec) if Path(f).is_file() and Path(f).suffix.lower() in IMAGE_EXTENSIONS)
        return ImageFilesSource(files, spec, _unique_stems(files, None))
    if kind == "folder":
        root = Path(spec)
        files = sorted(f for f in root.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS)
        return ImageFilesSource(files, spec, _unique_stems(files, root))
    files = [Path(spec)]  # a single image: a one-frame stream
    return ImageFilesSource(files, spec, [Path(spec).stem])


# ------------------------------------------------------------------------------------------------
# Sinks
# ------------------------------------------------------------------------------------------------

class Sink:
    """Takes frames in order. ``write(index, name, frame)``: frame is HxWx3 uint8 RGB, or HxW
    class ids in ``labels`` mode. ``close()`` finishes (a video is flushed and renamed into
    place); ``abort()`` removes what is unfinished."""

    description = "?"
    written = 0
    codec: Optional[str] = None

    def write(self, index: int, name: Optional[str], frame: np.ndarray) -> None:  # pragma: no cover
        raise NotImplementedError

    def close(self) -> None:
        pass

    def abort(self) -> None:
        self.close()


class ImageSink(Sink):
    """One image per frame: ``pattern % index`` or ``folder/NAME.png``; labels as palette PNGs."""

    def __init__(self, spec: str, kind: str, *, labels: bool, palette=None):
        self.kind = kind
        self.labels = labels
        self.palette = palette
        p = Path(spec)
        if kind == "pattern":
            self.folder = p.parent if str(p.parent) else Path(".")
            self.pattern = p.name
            ext = p.suffix.lower()
        else:
            self.folder = p
            self.pattern = None
            ext = ".png"
        if ext not in IMAGE_EXTENSIONS:
            raise FcnError(f"--out {spec}: unknown image extension {ext!r}; use one of {' '.join(IMAGE_EXTENSIONS)}")
        if labels and ext != ".png":
            raise FcnError(f"--out {spec}: class-id maps (--visualize labels) are written as .png only (lossless)")
        if self.folder.exists() and not self.folder.is_dir():
            raise FcnError(f"--out {spec}: {self.folder} exists and is not a folder")
        self.ext = ext
        self.description = spec
        self._made = False

    def path_for(self, index: int, name: Optional[str]) -> Path:
        if self.pattern is not None:
            return self.folder / PATTERN_RE.sub(lambda m: f"{index:0{m.group(1) or 1}d}", self.pattern, count=1)
        return self.folder / f"{name if name is not None else format(index, '06d')}{self.ext}"

    def write(self, index, name, frame):
        from PIL import Image

        path = self.path_for(index, name)
        if not self._made:
            try:
                self.folder.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise FcnError(f"cannot create {self.folder}: {e.strerror or type(e).__name__}") from None
            self._made = True
        path.parent.mkdir(parents=True, exist_ok=True)
        im = label_image(frame, self.palette) if self.labels else Image.fromarray(np.ascontiguousarray(frame))
        fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".tif": "TIFF", ".tiff": "TIFF", ".ppm": "PPM", ".pgm": "PPM"}.get(
            self.ext, self.ext[1:].upper())
        with atomic_path(path, suffix=self.ext) as tmp:
            im.save(tmp, format=fmt)
        self.written += 1


def pick_codec(ext: str, requested: Optional[str] = None) -> str:
    """The encoder to use: ``requested`` if this FFmpeg has it, else the first available of
    the container's list (H.264 first for mp4/mkv/mov/avi)."""
    av = av_module()
    names = (requested,) if requested else CONTAINER_CODECS[ext]
    for name in names:
        try:
            av.codec.Codec(name, "w")
            return name
        except Exception:
            continue
    if requested:
        raise FcnError(f"--codec {requested}: this FFmpeg (PyAV {av.__version__}) has no such encoder")
    raise FcnError(f"no encoder for {ext} in this FFmpeg (tried {', '.join(names)})")


class VideoSink(Sink):
    """A video file through PyAV, opened at the first frame (its size sets the video's; later
    frames of another size are scaled to it). H.264 uses yuv420p (odd sizes padded by one
    edge pixel), lossless encoders (ffv1, png, libx264rgb) keep RGB exactly."""

    LOSSLESS_RGB = {"ffv1": "bgr0", "png": "rgb24", "libx264rgb": "rgb24", "qtrle": "rgb24"}

    def __init__(self, spec: str, *, fps: Optional[Fraction] = None, codec: Optional[str] = None,
                 crf: Optional[int] = None):
        self.av = av_module()
        self.path = Path(spec)
        ext = self.path.suffix.lower()
        self.codec = pick_codec(ext, codec)
        self.fps = Fraction(fps).limit_denominator(1001 * 1000) if fps else Fraction(30)
        self.crf = crf
        self.description = spec
        self._ctx = atomic_path(self.path, suffix=ext)  # checks the folder now, renames on close
        self.tmp = self._ctx.__enter__()
        self.container = None
        self.stream = None
        self.size = None
        self._closed = False

    def _open(self, h: int, w: int) -> None:
        av = self.av
        try:
            self.container = av.open(str(self.tmp), "w")
            rate = self.fps if self.fps.denominator < 1000 else Fraction(round(float(self.fps) * 1000), 1000)
            s = self.container.add_stream(self.codec, rate=rate)
        except av.error.FFmpegError as e:
            raise FcnError(f"cannot write {self.path}: {_av_reason(e)}") from None
        pix = self.LOSSLESS_RGB.get(self.codec, "yuv420p")
        if pix == "yuv420p":
            h, w = h + h % 2, w + w % 2
        s.width, s.height, s.pix_fmt = w, h, pix
        opts = {}
        if self.codec in ("libx264", "h264"):
            opts = {"preset": "veryfast", "crf": str(self.crf if self.crf is not None else 20)}
        elif self.codec == "libx264rgb":
            opts = {"preset": "veryfast", "qp": "0"}
        elif self.crf is not None:
            opts = {"crf": str(self.crf)}
        s.options = opts
        self.stream = s
        self.size = (h, w)

    def write(self, index, name, frame):
        av = self.av
        if frame.ndim != 3:
            raise FcnError("a video holds colour frames; write class ids (--visualize labels) to PNGs instead")
        if self.container is None:
            self._open(*frame.shape[:2])
        H, W = self.size
        h, w = frame.shape[:2]
        if (h, w) != (H, W):
            if abs(H - h) <= 1 and abs(W - w) <= 1:  # the yuv420p padding: repeat the last row/column
                frame = np.pad(frame, ((0, H - h), (0, W - w), (0, 0)), mode="edge")
            else:
                from fcn_deploy.image import resize_rgb

                if not getattr(self, "_warned", False):
                    log.warning("frame %d is %dx%d, the video %dx%d: scaling it", index, h, w, H, W)
                    self._warned = True
                frame = resize_rgb(np.ascontiguousarray(frame), (H, W))
        vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        vf.pts = self.written
        try:
            for packet in self.stream.encode(vf):
                self.container.mux(packet)
        except (av.error.FFmpegError, OSError) as e:
            raise FcnError(f"cannot write {self.path}: {_av_reason(e)}") from None
        self.written += 1

    def close(self) -> None:
        """Flush the encoder, close the file and move it into place (nothing to keep: no file)."""
        if self._closed:
            return
        self._closed = True
        av = self.av
        err = None
        if self.container is not None:
            try:
                for packet in self.stream.encode():
                    self.container.mux(packet)
            except (av.error.FFmpegError, OSError) as e:
                err = FcnError(f"cannot finish {self.path}: {_av_reason(e)}")
            try:
                self.container.close()
            except (av.error.FFmpegError, OSError) as e:
                err = err or FcnError(f"cannot finish {self.path}: {_av_reason(e)}")
        if self.written == 0 or err is not None:
            self._ctx.__exit__(FcnError, err or FcnError("no frames"), None)  # removes the temp file
            if err is not None:
                raise err
            return
        self._ctx.__exit__(None, None, None)  # rename into place

    def abort(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.container is not None:
            try:
                self.container.close()
            except Exception:
                pass
        self._ctx.__exit__(FcnError, FcnError("aborted"), None)


def open_sink(spec: str, *, labels: bool, palette=None, fps: Optional[Fraction] = None,
              codec: Optional[str] = None, crf: Optional[int] = None) -> Sink:
    kind = output_kind(spec)
    if kind == "video":
        if labels:
            raise FcnError(f"--out {spec}: --visualize labels writes class-id PNGs; give a folder or a pattern "
                           "such as out/%05d.png (or --visualize mask for a video)")
        return VideoSink(spec, fps=fps, codec=codec, crf=crf)
    if codec:
        raise FcnError("--codec applies to video outputs only")
    return ImageSink(spec, kind, labels=labels, palette=palette)
