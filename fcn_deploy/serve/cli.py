"""``fcn-serve``: Triton model repositories, their offline check, and a KServe V2 server.

::

    fcn-serve triton MODEL... --repo DIR [--name NAME] [--max-batch N] [--instances N]
                     [--kind gpu|cpu] [--dynamic-batching] [--warmup] [--ensemble [--colorized]]
                     [--min/--opt/--max NxCxHxW] [--cc PLAN=8.6] [--no-openvino] [--force]
    fcn-serve check DIR
    fcn-serve kserve MODEL [--name NAME] [--port 8080] [--host 127.0.0.1] [--workers N]
                     [--backend onnxruntime|openvino] [--threads N] [--max-batch N]
    fcn-serve manifest MODEL_URI --name NAME [--out FILE] [--image IMAGE] ...   # KServe InferenceService

Exit status: 0 done / repository passes; 1 ``check`` found problems (one line each);
2 usage or model errors (one ``error:`` line).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fcn_deploy._util import run_cli
from fcn_deploy.errors import FcnError


def _parser() -> argparse.ArgumentParser:
    from fcn_deploy.cli_kit import add_backend, add_shape, add_threads, cli_parser

    p = cli_parser(prog="fcn-serve", description="Serve fcn-deploy models: Triton repositories and a KServe V2 server.")
    sub = p.add_subparsers(dest="cmd", required=True)

    triton_cmd = sub.add_parser("triton", help="write a Triton model repository (checked against Triton's ModelConfig)")
    triton_cmd.add_argument("models", nargs="+", metavar="MODEL", help=".onnx, or .plan files (several plans: one per GPU compute capability)")
    triton_cmd.add_argument("--repo", required=True, help="the model repository folder (created if missing)")
    triton_cmd.add_argument("--name", help="model name (default: the model file's stem)")
    triton_cmd.add_argument("--kind", choices=["gpu", "cpu"], default="gpu", help="instance kind (default gpu)")
    triton_cmd.add_argument("--max-batch", type=int, default=None, help="max_batch_size (default: a plan's profile max batch; 4 for ONNX)")
    triton_cmd.add_argument("--instances", type=int, default=1, help="instances per device (instance_group count, default 1)")
    triton_cmd.add_argument("--dynamic-batching", action="store_true", help="enable Triton's dynamic batcher (same-size requests only)")
    triton_cmd.add_argument("--queue-delay-us", type=int, default=100, help="dynamic batcher max_queue_delay_microseconds (default 100)")
    triton_cmd.add_argument("--warmup", action="store_true", help="model_warmup at the profile's opt shape")
    triton_cmd.add_argument("--ensemble", action="store_true", help="also NAME_preprocess/NAME_postprocess (Python backend) and NAME_ensemble: image bytes in, label map out")
    triton_cmd.add_argument("--colorized", action="store_true", help="with --ensemble: also output COLORIZED (the mask in the model's palette)")
    add_shape(triton_cmd, "--min", dest="min_shape", help="ONNX on GPU: TensorRT profile min for dynamic axes (default 1x3x64x64)")
    add_shape(triton_cmd, "--opt", dest="opt_shape", help="ONNX: TensorRT profile opt and warmup shape (default 1x3x360x480)")
    add_shape(triton_cmd, "--max", dest="max_shape", help="ONNX on GPU: TensorRT profile max (default MAXBATCHx3x1088x1920)")
    triton_cmd.add_argument("--trt-cache", default=None, help="ONNX on GPU: TensorRT engine cache folder inside the server (default /tmp/fcn_deploy_trt_cache/NAME)")
    triton_cmd.add_argument("--cc", action="append", default=[], metavar="PLAN=MAJOR.MINOR", help="compute capability of a plan whose sidecar records none")
    triton_cmd.add_argument("--no-openvino", action="store_true", help="--kind cpu: leave out the OpenVINO execution accelerator")
    triton_cmd.add_argument("--force", action="store_true", help="replace model folders that already exist in --repo")

    check_cmd = sub.add_parser("check", help="check a Triton model repository offline (Triton's ModelConfig protobuf + model files)")
    check_cmd.add_argument("repo", help="model repository folder")

    kserve_cmd = sub.add_parser("kserve", help="serve a model over the Open Inference Protocol (KServe V2) with KServe's ModelServer")
    kserve_cmd.add_argument("model", help=".onnx model (onnxruntime or OpenVINO on the CPU)")
    kserve_cmd.add_argument("--name", help="model name (default: the file's stem); NAME_ensemble takes encoded images")
    kserve_cmd.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0 in a container)")
    kserve_cmd.add_argument("--port", type=int, default=8080, help="HTTP port (default 8080)")
    kserve_cmd.add_argument("--workers", type=int, default=1, help="server processes (each loads the model; default 1)")
    add_backend(kserve_cmd, default="onnxruntime", auto=False, names=("onnxruntime", "openvino"))
    add_threads(kserve_cmd, help="CPU threads per model")
    kserve_cmd.add_argument("--max-batch", type=int, default=4, help="largest batch one request may carry (default 4)")

    manifest_cmd = sub.add_parser("manifest", help="write a KServe InferenceService manifest (YAML) for fcn-serve kserve")
    manifest_cmd.add_argument("model_uri", help="where the cluster finds the model: pvc://..., s3://..., gs://... (storageUri)")
    manifest_cmd.add_argument("--name", required=True, help="InferenceService and model name")
    manifest_cmd.add_argument("--model-file", default="model.onnx", help="file name of the model inside the storage URI (default model.onnx)")
    manifest_cmd.add_argument("--image", default="fcn-deploy-serve:latest", help="container image with fcn-deploy[serve,ort] installed")
    manifest_cmd.add_argument("--replicas", type=int, default=1, help="minReplicas (default 1)")
    manifest_cmd.add_argument("--max-replicas", type=int, default=4, help="maxReplicas (default 4)")
    manifest_cmd.add_argument("--cpu", default="2", help="CPU request/limit per replica (default 2)")
    manifest_cmd.add_argument("--memory", default="4Gi", help="memory request/limit per replica (default 4Gi)")
    manifest_cmd.add_argument("--workers", type=int, default=1, help="server processes per replica (default 1)")
    manifest_cmd.add_argument("--out", help="output file (default: print)")
    return p


def _triton(args) -> int:
    from fcn_deploy.serve.triton import DEFAULT_TRT_CACHE, RepoOptions, parse_cc_options, write_repository

    if args.colorized and not args.ensemble:
        raise FcnError("--colorized is an output of the ensemble: add --ensemble")
    if args.max_batch is not None and args.max_batch < 0:
        raise FcnError(f"--max-batch must be >= 0, got {args.max_batch}")
    if args.queue_delay_us < 0:
        raise FcnError(f"--queue-delay-us must be >= 0, got {args.queue_delay_us}")
    opts = RepoOptions(
        name=args.name, kind=args.kind, max_batch=args.max_batch, instances=args.instances,
        dynamic_batching=args.dynamic_batching, max_queue_delay_us=args.queue_delay_us, warmup=args.warmup,
        ensemble=args.ensemble, colorized=args.colorized, openvino=not args.no_openvino,
        min_shape=args.min_shape, opt_shape=args.opt_shape, max_shape=args.max_shape,
        trt_cache=args.trt_cache or DEFAULT_TRT_CACHE,
        cc=parse_cc_options(args.cc), force=args.force,
    )
    written = write_repository(args.models, args.repo, opts)
    for d in written:
        print(f"wrote {d}/config.pbtxt")
    print(f"{args.repo}: {len(written)} model(s), checked against Triton's ModelConfig: OK")
    return 0


def _check(args) -> int:
    from fcn_deploy.serve.check import check_repository

    problems = check_repository(args.repo)
    for line in problems:
        print(f"error: {line}", file=sys.stderr)
    if problems:
        print(f"{args.repo}: {len(problems)} problem(s)", file=sys.stderr)
        return 1
    n = sum(1 for d in Path(args.repo).iterdir() if d.is_dir() and not d.name.startswith("."))
    print(f"{args.repo}: {n} model(s) pass (Triton's ModelConfig schema and the model files)")
    return 0


def _kserve(args) -> int:
    from fcn_deploy.serve.kserve_server import serve

    return serve(args.model, name=args.name, host=args.host, port=args.port, workers=args.workers,
                 backend=args.backend, threads=args.threads, max_batch=args.max_batch)


def _manifest(args) -> int:
    from fcn_deploy._util import atomic_write_text
    from fcn_deploy.serve.manifest import inference_service_manifest

    text = inference_service_manifest(
        args.name, args.model_uri, model_file=args.model_file, image=args.image, min_replicas=args.replicas,
        max_replicas=args.max_replicas, cpu=args.cpu, memory=args.memory, workers=args.workers)
    if args.out:
        atomic_write_text(args.out, text)
        print(f"wrote {args.out}")
    else:
        sys.stdout.write(text)
    return 0


def _main(argv=None) -> int:
    args = _parser().parse_args(argv)
    return {"triton": _triton, "check": _check, "kserve": _kserve, "manifest": _manifest}[args.cmd](args)


def main(argv=None) -> int:
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
