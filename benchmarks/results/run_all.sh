#!/usr/bin/env bash
# Lead's benchmark sequence, run on the quiet machine after the CamVid training run.
set -x
cd /work/bench
B=/work/main/.venv/bin
CK=/work/main/runs/camvid_r18_fcn8s.pt
CV=/work/shared/data/camvid
uptime
# 1. every precision of the trained CamVid model: size, val mean IU, latency vs PyTorch
$B/fcn-bench --formats $CK --data $CV --format camvid --split val --out-dir r18 --shape 1x3x360x480 \
   --threads 2 --iterations 10 --json formats.json --markdown formats.md -q
uptime
# 2. int8 and fp16 against their PyTorch source on the whole val split
$B/fcn-eval --model r18/camvid_r18_fcn8s-int8.onnx --data $CV --format camvid --split val --reference $CK --json eval-int8.json --confusion confusion-int8.png -q
uptime
# 3. ResNet-18 FCN-8s, PyTorch peers vs fcn_deploy paths
$B/fcn-bench --compare torch:$CK torch-bf16:$CK torch-compile:$CK onnx:r18/camvid_r18_fcn8s-fp32.onnx onnx:r18/camvid_r18_fcn8s-fp16.onnx onnx:r18/camvid_r18_fcn8s-int8.onnx \
   openvino:r18/camvid_r18_fcn8s-fp32.onnx openvino:r18/camvid_r18_fcn8s-int8.onnx \
   --shape 1x3x360x480 --shape 1x3x512x512 --threads 2 --warmup 2 --iterations 10 \
   --json r18-compare.json --markdown r18-compare.md --plot r18-compare.png -q
uptime
# 4. VGG16 FCN-8s (untrained: timing only)
$B/fcn-bench --compare torch:vgg16-fcn8s.pt onnx:vgg16-fcn8s.onnx onnx:vgg16-fcn8s-int8.onnx openvino:vgg16-fcn8s.onnx openvino:vgg16-fcn8s-int8.onnx onnx:vgg16-fcn8s-fp16.onnx \
   --shape 1x3x360x480 --shape 1x3x512x512 --threads 2 --warmup 1 --iterations 5 \
   --json vgg16-compare.json --markdown vgg16-compare.md --plot vgg16-compare.png -q
uptime
# 5. export time of the full VGG16 FCN-8s
( time $B/fcn-export vgg16-fcn8s.pt /tmp/vgg16-timed.onnx --no-verify ) 2>&1 | tail -5
( time $B/fcn-export vgg16-fcn8s.pt /tmp/vgg16-timed.onnx ) 2>&1 | tail -8
uptime
