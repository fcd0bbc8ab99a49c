"""``fcn-export onnx CHECKPOINT OUTPUT.onnx``, ``fcn-export check-trt FILE.onnx`` and
``fcn-export adopt FOREIGN.onnx OUT.onnx`` (export/adopt.py). The old spellings
(``fcn-export CHECKPOINT OUTPUT.onnx``, ``--check-trt FILE.onnx``, ``--adopt FOREIGN.onnx OUT.onnx``)
are the same commands."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from fcn_deploy.errors import FcnError

log = logging.getLogger(__name__)


COMMANDS = ("onnx", "check-trt", "adopt")
# Old spellings: `fcn-export CKPT OUT.onnx` = `fcn-export onnx CKPT OUT.onnx`; `--check-trt F` and
# `--adopt FOREIGN OUT` = the subcommands of those names.
_LEGACY_MOVES = {"--check-trt": "check-trt", "--adopt": "adopt"}


def _parser() -> argparse.ArgumentParser:
    from fcn_deploy.cli_kit import add_hw, add_layout, cli_parser, hw_list_type
    from fcn_deploy.export.onnx_export import INPUT_KINDS, OPSET_RANGE, OUTPUT_KINDS, PRECISIONS
    from fcn_deploy.export.precision import (
        CALIB_FORMATS, CALIB_METHODS, DEFAULT_CALIB_METHOD, DEFAULT_PERCENTILE, INT8_TARGETS,
    )

    p = cli_parser(
        prog="fcn-export",
        description="Export an fcn-deploy checkpoint to ONNX (dynamic batch/height/width, metadata, "
        "parity check against PyTorch), check an ONNX file for TensorRT readiness, or adopt a foreign ONNX.",
        epilog="the old spellings still work: fcn-export CKPT OUT.onnx = fcn-export onnx CKPT OUT.onnx, "
        "fcn-export --check-trt F = fcn-export check-trt F, fcn-export --adopt F OUT = fcn-export adopt F OUT",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    onnx_cmd = sub.add_parser("onnx", help="export a checkpoint to ONNX (the default command)",
                       description="Export an fcn-deploy checkpoint to ONNX and check it against PyTorch.")
    onnx_cmd.add_argument("checkpoint", help="fcn-deploy checkpoint (.pt)")
    onnx_cmd.add_argument("onnx_out", metavar="OUTPUT.onnx", help="ONNX file to write")
    onnx_cmd.add_argument("--opset", type=int, default=17, help=f"ONNX opset {OPSET_RANGE[0]}..{OPSET_RANGE[1]} (default: %(default)s)")
    onnx_cmd.add_argument("--precision", choices=PRECISIONS, default="fp32", help="default: %(default)s")
    onnx_cmd.add_argument("--fp16-io", action="store_true", help="fp16: float16 input/output (default float32 I/O)")
    onnx_cmd.add_argument("--graph-output", "--output", dest="output_kind", choices=OUTPUT_KINDS, default="logits",
                   help="graph output: logits (N,C,H,W float32), probs (softmax), labels (N,H,W int32); "
                   "default: %(default)s")
    onnx_cmd.add_argument("--graph-input", "--input", dest="input_kind", choices=INPUT_KINDS, default="float",
                   help="graph input: float ((N,3,H,W) float32, normalised by the caller) or uint8 ((N,H,W,3) RGB "
                   "pixels, normalisation inside the graph; with --graph-output labels the runtime's pre/post is a "
                   "view and a copy); default: %(default)s")
    onnx_cmd.add_argument("--batch", default="dynamic", help="'dynamic' or a fixed batch size (default: %(default)s)")
    add_hw(onnx_cmd, "--static", help="fix height and width (for runtimes that need static shapes)")
    onnx_cmd.add_argument("--calib-data", metavar="DIR", help="int8: calibration dataset folder")
    add_layout(onnx_cmd, flag="--calib-layout", aliases=("--calib-format",), dest="calib_layout", choices=CALIB_FORMATS,
               default="images",
               help="layout of --calib-data, read like fcn-train reads it (train split; masks never used): "
               "images = every image directly in DIR, camvid = DIR/train/, voc = JPEGImages per "
               "ImageSets/Segmentation/train.txt, folders = DIR/images/[train/]")
    onnx_cmd.add_argument("--calib-images", type=int, default=64, help="default: %(default)s")
    onnx_cmd.add_argument("--calib-method", choices=CALIB_METHODS, default=DEFAULT_CALIB_METHOD, help="default: %(default)s")
    onnx_cmd.add_argument("--calib-percentile", type=float, default=DEFAULT_PERCENTILE, metavar="P",
                   help="percentile method: %% of each tensor's |values| kept inside the range (default: %(default)s)")
    add_hw(onnx_cmd, "--calib-size", help="resize calibration images (default: the first image's size)")
    onnx_cmd.add_argument("--quantize-head", action="store_true",
                   help="int8: also quantize the FCN head (upsampling ConvTransposes and skip Adds); default float")
    onnx_cmd.add_argument("--quantize-stem", action="store_true",
                   help="int8: also quantize the stem (the convolution reading the raw image); default float")
    onnx_cmd.add_argument("--keep-float", action="append", default=[], metavar="NODE",
                   help="int8: keep this node float too (exact ONNX node name or fnmatch pattern, e.g. "
                   "'/inner/backbone/layer1/*'); repeatable")
    onnx_cmd.add_argument("--int8-target", choices=INT8_TARGETS, default="tensorrt",
                   help="int8 Q/DQ layout: tensorrt (int8, zero point 0; what TensorRT needs) or cpu (uint8 "
                   "activations: integer kernels in onnxruntime on x86 and OpenVINO; not for TensorRT); "
                   "default: %(default)s")
    onnx_cmd.add_argument("--no-verify", action="store_true", help="skip the PyTorch-vs-ONNX parity check")
    onnx_cmd.add_argument("--verify-sizes", type=hw_list_type(), metavar="HxW,...",
                   help="sizes of the parity check (default 97x131,375x500)")

    check_cmd = sub.add_parser("check-trt", help="check an ONNX file for TensorRT readiness (no GPU needed)",
                       description="Check an ONNX file for TensorRT readiness (ops, dtypes, Q/DQ layout; no GPU needed).")
    check_cmd.add_argument("onnx_file", metavar="FILE.onnx", help="the ONNX file to check")

    # allow_abbrev=False: onnx's --output (an old spelling of --graph-output) must not be read as --output-name.
    adopt_cmd = sub.add_parser("adopt", allow_abbrev=False, help="stamp fcn-deploy metadata onto an ONNX exported elsewhere",
                       description="Stamp fcn-deploy metadata onto an ONNX exported elsewhere (e.g. the model zoo's "
                       "fcn-resnet50-11), so the runtime and the other tools use it like one of ours.")
    adopt_cmd.add_argument("foreign", metavar="FOREIGN.onnx", help="the foreign ONNX file")
    adopt_cmd.add_argument("adopted", metavar="OUT.onnx", help="the adopted file to write")
    adopt_cmd.add_argument("--classes", metavar="voc|camvid|FILE", help="the class names (FILE: one per line)")
    from fcn_deploy.training.registry import CONVENTIONS

    adopt_cmd.add_argument("--input-convention", metavar="NAME", help=" | ".join(CONVENTIONS))
    adopt_cmd.add_argument("--output-name", metavar="NAME", help="the segmentation output (default: the only one, or 'out')")
    return p


def parse_args(argv=None) -> argparse.Namespace:
    """fcn-export's arguments; the old spellings (no subcommand, --check-trt, --adopt) rewritten."""
    from fcn_deploy.cli_kit import legacy_argv

    return _parser().parse_args(legacy_argv(argv, COMMANDS, moves=_LEGACY_MOVES, default="onnx"))


def _main(argv=None) -> int:
    args = parse_args(argv)
    if args.command == "adopt":
        return _adopt(args)
    if args.command == "check-trt":
        from fcn_deploy.export.trt_check import check_trt

        report = check_trt(args.onnx_file)
        print(report.format())
        return 0 if report.ok else 1
    return _export(args)


def _export(args) -> int:
    from fcn_deploy.export.onnx_export import export_onnx
    from fcn_deploy.export.precision import CalibConfig
    from fcn_deploy.export.trt_check import check_trt

    batch = args.batch
    if batch != "dynamic":
        try:
            batch = int(batch)
        except ValueError:
            raise FcnError(f"--batch must be 'dynamic' or a positive integer, got {args.batch!r}") from None
    calib = None
    if args.precision == "int8":
        if not args.calib_data:
            raise FcnError("--precision int8 needs --calib-data DIR (real images to calibrate on)")
        calib = CalibConfig(
            data=Path(args.calib_data), format=args.calib_layout, images=args.calib_images,
            method=args.calib_method, percentile=args.calib_percentile, size=args.calib_size,
            quantize_head=args.quantize_head, target=args.int8_target,
            quantize_stem=args.quantize_stem, keep_float=tuple(args.keep_float),
        )
        from fcn_deploy.export.precision import DEFAULT_PERCENTILE, calibration_files

        if args.calib_method != "percentile" and args.calib_percentile != DEFAULT_PERCENTILE:
            log.warning("--calib-percentile is only used with --calib-method percentile")

        calibration_files(calib)  # a wrong folder or layout fails now, not after the export
    elif args.calib_data or args.int8_target != "tensorrt" or args.keep_float or args.quantize_stem:
        log.warning("--calib-data / --int8-target / --keep-float / --quantize-stem are only used with --precision int8")
    ckpt = Path(args.checkpoint)
    if not ckpt.is_file():
        raise FcnError(f"checkpoint not found: {ckpt}")
    t0 = time.perf_counter()
    reports: list = []
    out = export_onnx(
        ckpt, args.onnx_out, opset=args.opset, precision=args.precision, output_kind=args.output_kind,
        batch=batch, static_hw=args.static, calib=calib, verify=not args.no_verify, verify_sizes=args.verify_sizes,
        fp16_io=args.fp16_io, input_kind=args.input_kind, progress=True, reports=reports,
    )
    seconds = time.perf_counter() - t0
    size = sum(f.stat().st_size for f in (out, out.with_name(out.name + ".data")) if f.exists())
    report = check_trt(out)
    print(f"wrote {out} ({size / 1e6:.1f} MB, {args.precision}, output {args.output_kind}) in {seconds:.1f} s"
          + _parity_words(args.no_verify, reports))
    print(report.format().splitlines()[-1])
    if calib is not None and calib.target == "cpu":
        print("  (--int8-target cpu: uint8 activations for onnxruntime/OpenVINO on CPU; export with the "
              "default --int8-target tensorrt for TensorRT)")
        return 0
    for issue in report.issues:
        print(f"  {issue}")
    return 0


def _adopt(args) -> int:
    from fcn_deploy.export.adopt import adopt_onnx

    report = adopt_onnx(args.foreign, args.adopted, classes=args.classes, input_convention=args.input_convention,
                        output_name=args.output_name)
    print(report.format())
    return 0


def _parity_words(skipped: bool, reports: list) -> str:
    if skipped:
        return ""
    if reports and all(r.verified for r in reports):
        return ", parity verified"
    status = reports[-1].status if reports else "NOT VERIFIED: no parity report"
    return f", parity {status.replace('NOT VERIFIED', 'NOT verified')}"


def main(argv=None) -> int:
    from fcn_deploy._util import run_cli

    return run_cli(_main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
