#!/bin/bash
# fcn-import -> fcn-export (fp32/fp16/int8) -> --check-trt -> fcn-bench of the full torchvision fcn_resnet50 (random weights).
# Run from the repository root: TVFULL=folder of `make_torchvision_reference.py full`, WORK=a scratch folder.
set -x
V=$PWD/.venv/bin
CAMVID=$PWD/../shared/data/camvid
cd "$WORK"
date -u; uptime; lscpu | grep -E "Model name|^CPU\(s\)"
$V/fcn-import $TVFULL/torchvision_fcn_resnet50.pth tv50.pt
$V/fcn-export tv50.pt tv50.onnx --verify-sizes 97x131,360x480,500x375
$V/fcn-export --check-trt tv50.onnx
$V/fcn-export tv50.pt tv50-fp16.onnx --precision fp16 --verify-sizes 97x131,360x480
$V/fcn-export tv50.pt tv50-int8.onnx --precision int8 --calib-data $CAMVID --calib-format camvid --calib-images 16 --calib-size 360x480
$V/fcn-export --check-trt tv50-fp16.onnx
$V/fcn-export --check-trt tv50-int8.onnx
$V/python - <<'PY'
from fcn_deploy.training.registry import build_model, default_convention
from fcn_deploy.training.checkpoint import save_checkpoint
from fcn_deploy.modelinfo import ModelInfo
from fcn_deploy.palette import CAMVID_CLASSES, CAMVID_PALETTE
import torch
torch.manual_seed(0)
m = build_model("fcn8s", "resnet18", 11).eval()
o, s, mean, std = default_convention("fcn8s", "resnet18")
save_checkpoint("r18.pt", m, ModelInfo(arch="fcn8s", backbone="resnet18", num_classes=11, class_names=CAMVID_CLASSES,
                palette=CAMVID_PALETTE, channel_order=o, scale=s, mean=mean, std=std))
PY
$V/fcn-export r18.pt r18.onnx --no-verify
uptime
$V/fcn-bench --compare onnx:r18.onnx onnx:tv50.onnx --shape 1x3x360x480 --warmup 2 --iterations 10 --threads 2 --json bench.json --markdown bench.md
uptime; date -u
