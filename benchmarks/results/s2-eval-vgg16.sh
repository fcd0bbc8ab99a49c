#!/usr/bin/env bash
# Session 2: export the short-trained VGG16 FCN-8s to fp32 and int8 (both layouts) and score them on CamVid val.
set -x
cd /work/bench/vggt
B=/work/main/.venv/bin
CV=/work/shared/data/camvid
uptime
time $B/fcn-export vgg16_camvid.pt vgg16_camvid.onnx --no-verify
time $B/fcn-export vgg16_camvid.pt vgg16_camvid-int8cpu.onnx --precision int8 --int8-target cpu --calib-data $CV --calib-format camvid --calib-images 32 --no-verify
$B/fcn-eval --model vgg16_camvid-int8cpu.onnx --data $CV --format camvid --split val --reference vgg16_camvid.pt --json eval-vgg16-int8cpu-ort.json -q
$B/fcn-eval --model vgg16_camvid-int8cpu.onnx --backend openvino --data $CV --format camvid --split val --reference vgg16_camvid.pt --json eval-vgg16-int8cpu-ov.json -q
uptime
