"""``fcn-import``: a checkpoint made elsewhere -> a normal fcn-deploy checkpoint.

::

    fcn-import SOURCE OUT.pt [--from auto|torchvision|mmseg|...] [--arch A] [--num-classes N]
               [--classes voc|camvid|FILE] [--palette FILE] [--input-convention NAME]

What it does, in order:

1. Reads SOURCE. Torch files with ``torch.load(weights_only=True)`` only: a file that pickles
   code (``torch.save(model)`` of a whole ``nn.Module``) is refused with the line that says how
   to save a state_dict instead; its pickle is scanned (``pickletools``, nothing executed) to
   name the class it holds. Raw formats (an importer's ``suffixes``, e.g. ``.caffemodel``) are
   read as bytes.
2. Unwraps: ``{'state_dict': ..}``, ``{'model': ..}``, ``{'model_state_dict': ..}`` (nested
   too) and DataParallel/DDP ``module.`` prefixes. What the wrapper held beside the weights
   (torchfcn's ``arch``, mmseg's ``meta``) reaches the importer as ``state.wrapper`` and
   ``options.wrapper`` (see ``fcn_deploy.training.importers``).
3. ``--from auto`` asks every registered importer's ``detect`` and says what it recognised; an
   unknown layout gets one line naming what was recognised and the keys no format expects.
4. The importer's ``convert`` gives arch, backbone, state_dict and the source's ModelInfo
   defaults; the model is built from the registry and the weights loaded strictly.
5. ``--num-classes`` / ``--classes`` are checked against the weights (a mismatch is an error,
   never a silent resize); ``--classes``, ``--palette`` and ``--input-convention`` override the
   source's defaults.
6. Writes OUT with ``save_checkpoint`` (atomic: nothing is left behind on failure). The
   checkpoint's ``import`` entry records the source file, its sha256, the source format, what
   was recognised and the notes (e.g. "aux head dropped"); ``info.extra`` carries
   ``import_source``/``import_sha256``/``import_format`` into the exported ONNX.

Class files: one name per line (blank lines and ``#`` comments skipped). Palette files: one
colour per line, ``R G B`` or ``R,G,B`` (0-255), or a JSON list of ``[R, G, B]``.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import pickletools
import sys
import zipfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from fcn_deploy._util import check_writable, run_cli, sha256_file
from fcn_deploy.errors import FcnError, first_line
from fcn_deploy.modelinfo import ModelInfo
from fcn_deploy.palette import CAMVID_CLASSES, CAMVID_IGNORE, CAMVID_PALETTE, VOC_CLASSES, VOC_IGNORE, default_palette, voc_palette

log = logging.getLogger(__name__)

# Keys that hold the weights inside a wrapper dict, tried in this order.
WRAPPER_KEYS = ("state_dict", "model_state_dict", "model")


# ------------------------------------------------------------------------------------------------
# Reading the file
# ------------------------------------------------------------------------------------------------


def _pickle_globals(path) -> List[str]:
    """The ``module.name`` globals a torch file's pickle refers to, found by reading opcodes
    (``pickletools.genops`` executes nothing)."""
    data = None
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                names = [n for n in z.namelist() if n.endswith("data.pkl")]
                if names:
                    data = z.read(names[0])
        else:
            with open(path, "rb") as f:
                data = f.read(1 << 24)
    except (OSError, zipfile.BadZipFile, RuntimeError):
        return []
    if not data:
        return []
    found: List[str] = []
    strings: List[str] = []
    try:
        for op, arg, _ in pickletools.genops(io.BytesIO(data)):
            if op.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "BINUNICODE8"):
                strings.append(str(arg))
            elif op.name == "GLOBAL":
                found.append(str(arg).replace(" ", "."))
            elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                found.append(f"{strings[-2]}.{strings[-1]}")
    except Exception:  # a truncated or odd pickle: report what was seen so far
        pass
    return found


_SAFE_GLOBAL_PREFIXES = ("torch._utils.", "collections.OrderedDict", "torch.FloatStorage", "torch.HalfStorage",
                         "torch.DoubleStorage", "torch.LongStorage", "torch.IntStorage", "torch.ByteStorage",
                         "torch.BFloat16Storage", "torch.BoolStorage", "torch.storage.", "torch.device",
                         "torch.float", "torch.int", "torch.Size", "builtins.set", "__builtin__.set", "torch._tensor.")


def _code_globals(path) -> List[str]:
    return [g for g in _pickle_globals(path) if not g.startswith(_SAFE_GLOBAL_PREFIXES)]


def load_source(path: str):
    """``torch.load(weights_only=True)`` with one-line errors; a pickled module is named."""
    import torch

    from fcn_deploy.training.checkpoint import _unreadable_reason

    p = Path(path)
    if not p.exists():
        raise FcnError(f"source not found: {path}")
    if p.is_dir():
        raise FcnError(f"source is a folder: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        if "Weights only load failed" in str(e) or "Unsupported global" in str(e):
            code = _code_globals(path)
            what = code[0] if code else "Python objects"  # the outermost object comes first
            mm = next((g for g in code if g.startswith(("mmengine.", "mmcv."))), None)
            if mm:
                raise FcnError(
                    f"{path} is an mmengine/mmcv training checkpoint whose extra state holds Python objects ({mm}); "
                    "fcn-import never unpickles code. Where mmengine is installed and you trust the file: "
                    "ck = torch.load(path, weights_only=False); torch.save({'state_dict': ck['state_dict'], "
                    "'meta': ck.get('meta', {})}, 'clean.pth'), then import clean.pth"
                ) from None
            looks = "a whole model saved with torch.save(model)" if any(".nn.modules." in g for g in code) else "not a plain state_dict"
            raise FcnError(
                f"{path} holds a pickled Python object ({what}): {looks}; "
                "fcn-import never unpickles code. Where that model's code is installed, run "
                "torch.save(model.state_dict(), 'weights.pt') and import weights.pt"
            ) from None
        raise FcnError(f"{path} is not a readable torch file ({_unreadable_reason(path, e)})") from None


def _is_tensor(v) -> bool:
    import torch

    return isinstance(v, torch.Tensor)


def unwrap(obj, path: str = "source"):
    """The tensors of a state_dict out of the wrappers people produce. Returns a SourceState."""
    from fcn_deploy.training.importers import SourceState

    wrapper: Dict[str, Any] = {}
    steps: List[str] = []
    for _ in range(4):  # nested wrappers, e.g. {'model': {'state_dict': ...}}
        if not isinstance(obj, dict):
            break
        if obj.get("format") == "fcn-deploy/checkpoint":
            raise FcnError(f"{path} is already an fcn-deploy checkpoint; use it with fcn-export directly")
        if obj and all(_is_tensor(v) for v in obj.values()):
            break
        inner = next((k for k in WRAPPER_KEYS if isinstance(obj.get(k), dict)), None)
        if inner is None:
            break
        for k, v in obj.items():
            if k != inner and k not in wrapper and not k.startswith("optim") and not k.endswith("optimizer"):
                wrapper[k] = v
        steps.append(inner)
        obj = obj[inner]
    if not isinstance(obj, dict) or not obj:
        kind = type(obj).__name__ if not isinstance(obj, dict) else "an empty dict"
        raise FcnError(f"{path} holds {kind}, not a state_dict of tensors")
    bad = [k for k, v in obj.items() if not _is_tensor(v)]
    if bad:
        keys = ", ".join(repr(k) for k in list(obj)[:6])
        raise FcnError(
            f"{path}: not a state_dict of tensors ({bad[0]!r} is a {type(obj[bad[0]]).__name__}); "
            f"top-level keys: {keys}{', ...' if len(obj) > 6 else ''}"
        )
    if all(isinstance(k, str) and k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
        steps.append("module.")
    return SourceState(obj, wrapper=wrapper, unwrapped=steps)


def read_source(path: str, fmt: str):
    """Raw bytes for an importer that reads its format raw, else the unwrapped torch state."""
    from fcn_deploy.training.importers import all_importers, get_importer

    raw = [imp for imp in all_importers() if imp.suffixes]
    if fmt != "auto":
        imp = get_importer(fmt)
        if imp.suffixes:
            return _read_bytes(path)
    elif any(str(path).lower().endswith(s) for imp in raw for s in imp.suffixes):
        return _read_bytes(path)
    return unwrap(load_source(path), path)


def _read_bytes(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise FcnError(f"source not found: {path}") from None
    except IsADirectoryError:
        raise FcnError(f"source is a folder: {path}") from None
    except OSError as e:
        raise FcnError(f"cannot read {path}: {e.strerror or type(e).__name__}") from None


# ------------------------------------------------------------------------------------------------
# Recognising the layout
# ------------------------------------------------------------------------------------------------


def _groups(keys: Sequence[str], limit: int = 6) -> str:
    """``backbone.* (318), foo.* (2)``: the keys' first components with counts."""
    counts: Dict[str, int] = {}
    for k in keys:
        head = k.split(".", 1)[0] + (".*" if "." in k else "")
        counts[head] = counts.get(head, 0) + 1
    items = list(counts.items())
    text = ", ".join(f"{h} ({n})" for h, n in items[:limit])
    return text + (f", ... ({len(items) - limit} more groups)" if len(items) > limit else "")


def detect(state, path: str = "source") -> Tuple[str, str]:
    """(importer name, what it recognised); FcnError when none or several recognise it."""
    from fcn_deploy.training.importers import all_importers

    hits = []
    for imp in all_importers():
        if isinstance(state, bytes) != bool(imp.suffixes):
            continue
        try:
            desc = imp.detect(state)
        except FcnError:
            desc = None
        if desc:
            hits.append((imp.name, desc))
    if len(hits) == 1:
        return hits[0]
    if len(hits) > 1:
        raise FcnError(f"{path} is recognised by several formats ({'; '.join(f'{n}: {d}' for n, d in hits)}); pick one with --from")
    raise FcnError(explain_unknown(state, path))


def explain_unknown(state, path: str) -> str:
    from fcn_deploy.training.importers import all_importers, importer_names

    tried = ", ".join(importer_names())
    if isinstance(state, bytes):
        return f"{path}: no importer recognises this file ({len(state)} bytes; tried {tried})"
    keys = list(state)
    read = f"a state_dict of {len(keys)} tensors"
    if getattr(state, "unwrapped", None):
        read += " (unwrapped " + " -> ".join(repr(s) for s in state.unwrapped) + ")"
    best, best_n = None, 0
    for imp in all_importers():
        if imp.prefixes:
            n = sum(1 for k in keys if k.startswith(imp.prefixes))
            if n > best_n:
                best, best_n = imp, n
    if best is not None:
        unexpected = [k for k in keys if not k.startswith(best.prefixes)]
        shown = ", ".join(unexpected[:5]) + (f", ... ({len(unexpected)} in all)" if len(unexpected) > 5 else "")
        partly = (f"{best_n} of {len(keys)} keys look like {best.name} ({'/'.join(p + '*' for p in best.prefixes)})"
                  + (f", unexpected keys: {shown}" if unexpected else ", but its layout checks failed (try --from " + best.name + ")"))
        return f"{path}: unknown layout: read {read}; {partly}; tried {tried}"
    return f"{path}: unknown layout: read {read}, no known key prefixes; unexpected keys: {_groups(keys)}; tried {tried}"


# ------------------------------------------------------------------------------------------------
# Classes, palette, conventions
# ------------------------------------------------------------------------------------------------


def read_classes(spec: str) -> Tuple[List[str], Optional[List[Tuple[int, int, int]]], Optional[int]]:
    """``voc`` | ``camvid`` | a file with one name per line -> (names, palette or None, ignore)."""
    if spec == "voc":
        return list(VOC_CLASSES), voc_palette(len(VOC_CLASSES)), VOC_IGNORE
    if spec == "camvid":
        return list(CAMVID_CLASSES), list(CAMVID_PALETTE), CAMVID_IGNORE
    try:
        text = Path(spec).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FcnError(f"--classes: expected voc, camvid or a file with one class name per line; {spec} not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise FcnError(f"--classes: cannot read {spec}: {first_line(e)}") from None
    names = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if not names:
        raise FcnError(f"--classes: {spec} lists no class names")
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise FcnError(f"--classes: {spec} lists {dup!r} twice")
    return names, None, None


def read_palette(path: str) -> List[Tuple[int, int, int]]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FcnError(f"--palette: {path} not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise FcnError(f"--palette: cannot read {path}: {first_line(e)}") from None
    rows: List[Any]
    if text.lstrip().startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as e:
            raise FcnError(f"--palette: {path} is not valid JSON ({e.msg}, line {e.lineno})") from None
    else:
        rows = [ln.replace(",", " ").split() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    out = []
    for i, row in enumerate(rows):
        try:
            c = tuple(int(v) for v in row)
        except (TypeError, ValueError):
            raise FcnError(f"--palette: {path} entry {i + 1} is not three integers: {row!r}") from None
        if len(c) != 3 or not all(0 <= v <= 255 for v in c):
            raise FcnError(f"--palette: {path} entry {i + 1} is not an R G B colour in 0..255: {row!r}")
        out.append(c)
    if not out:
        raise FcnError(f"--palette: {path} holds no colours")
    return out


def _weights_classes(imported) -> str:
    """Where the class count is visible in the weights, for error messages."""
    sd = imported.state_dict
    for k in reversed(list(sd)):
        v = sd[k]
        if k.endswith("weight") and getattr(v, "ndim", 0) == 4 and v.shape[0] == imported.num_classes:
            return f" ({k} is {tuple(v.shape)})"
    return ""


def build_info(imported, args) -> ModelInfo:
    from fcn_deploy.training.registry import convention

    d = dict(imported.info_defaults)
    n = imported.num_classes
    names = d.get("class_names")
    palette = d.get("palette")
    ignore = d.get("ignore_index")
    if args.classes:
        names, pal, ign = read_classes(args.classes)
        if len(names) != n:
            raise FcnError(f"--classes {args.classes} names {len(names)} classes, the weights have {n}{_weights_classes(imported)}")
        palette = pal if pal is not None else (palette if palette and len(palette) >= n else None)
        ignore = ign if ign is not None else ignore
    if args.palette:
        palette = read_palette(args.palette)
        if len(palette) < n:
            raise FcnError(f"--palette {args.palette} has {len(palette)} colours for {n} classes")
    if not names or len(names) != n:
        if names:
            imported.notes.append(f"the source's {len(names)} class names do not fit {n} classes; using class0..class{n - 1} (set --classes)")
        else:
            imported.notes.append(f"the source names no classes; using class0..class{n - 1} (set --classes)")
        names = [f"class{i}" for i in range(n)]
    if not palette or len(palette) < n:
        palette = default_palette(n)
    if args.input_convention:
        order, scale, mean, std = convention(args.input_convention)
        conv_name = args.input_convention
    else:
        order = d.get("channel_order", "RGB")
        scale, mean, std = d.get("scale", 1.0 / 255.0), d.get("mean"), d.get("std")
        conv_name = d.get("convention", "")
        if mean is None or std is None:
            raise FcnError(f"the {imported.arch} import gives no input convention; pass --input-convention (one of imagenet, caffe, mmseg, pochih)")
    extra = {str(k): str(v) for k, v in (d.get("extra") or {}).items()}
    if conv_name:
        extra["input_convention"] = conv_name
    return ModelInfo(
        arch=imported.arch, backbone=imported.backbone, num_classes=n, class_names=tuple(names),
        palette=tuple(tuple(c) for c in palette[: max(n, len(palette))]), channel_order=order, scale=float(scale),
        mean=tuple(mean), std=tuple(std), ignore_index=ignore, extra=extra,
    )


# ------------------------------------------------------------------------------------------------
# The command
# ------------------------------------------------------------------------------------------------


def import_checkpoint(source: str, out: str, *, fmt: str = "auto", arch: Optional[str] = None,
                      num_classes: Optional[int] = None, classes: Optional[str] = None,
                      palette: Optional[str] = None, input_convention: Optional[str] = None,
                      say=None) -> Dict[str, Any]:
    """The whole of ``fcn-import``; returns the checkpoint's ``import`` entry. FcnError on bad input.
    ``say(text)`` gets what was recognised, the notes and the result (default: logging)."""
    say = say or log.info
    import torch

    from fcn_deploy.training.checkpoint import save_checkpoint
    from fcn_deploy.training.importers import ImportOptions, get_importer, importer_names
    from fcn_deploy.training.registry import build_model, convention

    if not str(out).endswith(".pt"):
        raise FcnError(f"OUT must name a .pt file, got {out}")
    if Path(out).exists() and Path(source).exists() and Path(out).resolve() == Path(source).resolve():
        raise FcnError("OUT is the SOURCE file; write the import to a new file")
    if fmt != "auto":
        get_importer(fmt)  # unknown names list the valid ones
    if input_convention:
        convention(input_convention)
    if num_classes is not None and num_classes < 1:
        raise FcnError(f"--num-classes must be >= 1, got {num_classes}")
    check_writable(out)
    state = read_source(source, fmt)
    if fmt == "auto":
        fmt, recognised = detect(state, source)
        say(f"recognised: {recognised} (--from {fmt})")
    else:
        recognised = get_importer(fmt).detect(state) or ""
    imp = get_importer(fmt)
    wrapper = dict(getattr(state, "wrapper", {}) or {})
    opts = ImportOptions(arch=arch, num_classes=num_classes, wrapper=wrapper, source_path=str(source))
    imported = imp.convert(state, opts)
    if num_classes is not None and num_classes != imported.num_classes:
        raise FcnError(f"--num-classes {num_classes}, but the weights have {imported.num_classes} classes{_weights_classes(imported)}")
    if arch is not None and arch != imported.arch:
        raise FcnError(f"--arch {arch}, but these weights are a {imported.arch} ({fmt})")

    args = argparse.Namespace(classes=classes, palette=palette, input_convention=input_convention)
    info = build_info(imported, args)

    model = build_model(imported.arch, imported.backbone, imported.num_classes, **imported.build_options)
    expected = model.state_dict()
    missing = [k for k in expected if k not in imported.state_dict and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in imported.state_dict if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (first: {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (first: {', '.join(unexpected[:3])})")
        raise FcnError(f"{source}: the {fmt} weights do not fit {imported.arch}/{imported.backbone}: " + "; ".join(parts))
    for k, v in imported.state_dict.items():
        if tuple(v.shape) != tuple(expected[k].shape):
            raise FcnError(f"{source}: {k} has shape {tuple(v.shape)}, {imported.arch}/{imported.backbone} expects {tuple(expected[k].shape)}")
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            raise FcnError(f"{source}: {k} holds NaN or infinite values")
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in imported.state_dict.items()}, strict=False)
    model.eval()

    sha = sha256_file(source)
    provenance = {
        "source_file": Path(source).name,
        "source_path": str(source),
        "sha256": sha,
        "source_format": fmt,
        "recognised": recognised,
        "unwrapped": list(getattr(state, "unwrapped", []) or []),
        "wrapper_keys": sorted(str(k) for k in wrapper),
        "notes": list(imported.notes),
        "flags": {k: v for k, v in (("arch", arch), ("num_classes", num_classes), ("classes", classes),
                                      ("palette", palette), ("input_convention", input_convention)) if v is not None},
    }
    extra = dict(info.extra)
    extra.update(import_source=Path(source).name, import_sha256=sha, import_format=fmt)
    info = info.replace(extra=extra)
    save_checkpoint(out, model, info, metrics={}, provenance=provenance)
    for note in imported.notes:
        say(f"note: {note}")
    say(f"wrote {out}: {info.arch}/{info.backbone}, {info.num_classes} classes, {info.channel_order} input, "
        f"scale {info.scale:g}, mean {list(info.mean)}, std {list(info.std)}")
    return provenance


def build_parser() -> argparse.ArgumentParser:
    from fcn_deploy.training.importers import importer_names
    from fcn_deploy.training.registry import CONVENTIONS

    from fcn_deploy.cli_kit import cli_parser

    p = cli_parser(prog="fcn-import", description="Turn a checkpoint made elsewhere into an fcn-deploy checkpoint "
                "(then fcn-export / fcn-verify / fcn-eval / fcn-bench use it like one from fcn-train).")
    p.add_argument("source", metavar="SOURCE", help="the foreign checkpoint (.pth/.pt state_dict, wrapped or not; raw formats by suffix)")
    p.add_argument("out", metavar="OUT.pt", help="the fcn-deploy checkpoint to write")
    # The source's format (a model-file format, not a dataset layout): the importers' registry names
    # (checked by get_importer, whose error lists them).
    p.add_argument("--from", dest="fmt", default="auto", metavar="SOURCE_FORMAT",
                   help="auto | " + " | ".join(importer_names()) + " (default auto: recognise by keys)")
    p.add_argument("--arch", default=None, help="fcn-deploy arch, where the keys cannot tell (e.g. fcn8s vs fcn8s-atonce)")
    p.add_argument("--num-classes", type=int, default=None, help="expected class count; an error when the weights disagree")
    p.add_argument("--classes", default=None, help="voc | camvid | FILE (one name per line); overrides the source's names")
    p.add_argument("--palette", default=None, help="FILE: one 'R G B' per line, or a JSON list")
    p.add_argument("--input-convention", default=None, help=" | ".join(CONVENTIONS) + " (default: the source's own)")
    return p


def _main(argv: Optional[Sequence[str]]) -> int:
    args = build_parser().parse_args(argv)
    import_checkpoint(args.source, args.out, fmt=args.fmt, arch=args.arch, num_classes=args.num_classes,
                      classes=args.classes, palette=args.palette, input_convention=args.input_convention, say=print)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
