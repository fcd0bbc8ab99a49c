#!/usr/bin/env bash
# Lead's follow-up: the onnxruntime-friendly int8 layout (--int8-target cpu) for issue 6.
set -x
cd /work/bench
B=/work/main/.venv/bin
CK=/work/main/runs/camvid_r18_fcn8s.pt
CV=/work/shared/data/camvid
uptime
$B/fcn-export $CK r18/camvid_r18_fcn8s-int8cpu.onnx --precision int8 --int8-target cpu --calib-data $CV --calib-format camvid --calib-images 32 --calib-method entropy 2>&1 | grep -v "^  \|TensorRT" | tail -8
$B/fcn-eval --model r18/camvid_r18_fcn8s-int8cpu.onnx --data $CV --format camvid --split val --reference $CK --json eval-int8cpu.json -q 2>&1 | tail -4
$B/fcn-eval --model r18/camvid_r18_fcn8s-int8.onnx --backend openvino --data $CV --format camvid --split val --reference $CK --json eval-int8-openvino.json -q 2>&1 | tail -4
uptime
$B/fcn-bench --compare torch:$CK onnx:r18/camvid_r18_fcn8s-fp32.onnx onnx:r18/camvid_r18_fcn8s-int8cpu.onnx openvino:r18/camvid_r18_fcn8s-int8.onnx openvino:r18/camvid_r18_fcn8s-int8cpu.onnx \
   --shape 1x3x360x480 --threads 2 --warmup 2 --iterations 10 --json r18-int8cpu.json --markdown r18-int8cpu.md -q
uptime
$B/fcn-export vgg16-fcn8s.pt vgg16-fcn8s-int8cpu.onnx --precision int8 --int8-target cpu --calib-data $CV --calib-format camvid --calib-images 8 --calib-method minmax --no-verify 2>&1 | grep -v "^  \|TensorRT" | tail -4
$B/fcn-bench --compare torch:vgg16-fcn8s.pt onnx:vgg16-fcn8s.onnx onnx:vgg16-fcn8s-int8cpu.onnx openvino:vgg16-fcn8s-int8cpu.onnx \
   --shape 1x3x360x480 --threads 2 --warmup 1 --iterations 5 --json vgg16-int8cpu.json --markdown vgg16-int8cpu.md -q
uptime
