#!/usr/bin/env bash
# Session 2 (2026-11-22): peers by hand for issue 6, quiet VGG16 re-run for issue 5, ceilings.
# (As run: the R18 int8 files are the float-stem ones, -v2; the ceilings ran by hand right after.)
set -x
cd /work/bench
B=/work/main/.venv/bin
CK=/work/main/runs/camvid_r18_fcn8s.pt
R8CPU=r18/camvid_r18_fcn8s-int8cpu-v2.onnx
R8TRT=r18/camvid_r18_fcn8s-int8-v2.onnx
uptime
$B/fcn-bench --compare torch:$CK torch-compile:$CK torch-compile-bf16:$CK openvino-bf16:r18/camvid_r18_fcn8s-fp32.onnx \
   onnx:r18/camvid_r18_fcn8s-fp32.onnx onnx:$R8CPU onnx:$R8TRT openvino:$R8CPU openvino:$R8TRT \
   --shape 1x3x360x480 --threads 2 --warmup 2 --iterations 10 --json s2-r18-peers.json --markdown s2-r18-peers.md -q
uptime
$B/fcn-bench --compare torch:vgg16-fcn8s.pt onnx:vgg16-fcn8s.onnx onnx:vgg16-fcn8s-int8cpu-v2.onnx openvino:vgg16-fcn8s-int8cpu-v2.onnx \
   --shape 1x3x360x480 --threads 2 --warmup 1 --iterations 10 --json s2-vgg16.json --markdown s2-vgg16.md -q
uptime
# ceilings (at the time each layer probe had one warm-up run; fcn-bench now uses --warmup, default 3)
$B/fcn-bench --ceiling vgg16-fcn8s.onnx --shape 1x3x360x480 --threads 2 --iterations 5 --reference-ms 2484.2 \
   --json s2-vgg16-ceiling.json --markdown s2-vgg16-ceiling.md -q
$B/fcn-bench --ceiling r18/camvid_r18_fcn8s-fp32.onnx --shape 1x3x360x480 --threads 2 --iterations 5 --reference-ms 130.6 \
   --json s2-r18-ceiling.json --markdown s2-r18-ceiling.md -q
