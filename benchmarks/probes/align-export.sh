#!/bin/sh
# Exports of the aligned head's last-epoch model (seed 0, 25-min run) and their val scores.
set -e
B=.venv/bin
M=runs/align-aligned.last.pt
date -u; uptime
$B/fcn-export $M runs/align-fp32.onnx
$B/fcn-export $M runs/align-fp16.onnx --precision fp16
$B/fcn-export $M runs/align-int8cpu.onnx --precision int8 --int8-target cpu --calib-data ../shared/data/camvid \
    --calib-format camvid --calib-images 32
for p in fp32 fp16 int8cpu; do
  $B/fcn-eval --model runs/align-$p.onnx --data ../shared/data/camvid --format camvid --split val \
      --reference $M --threads 1 -q --json benchmarks/results/align-eval-$p.json
done
date -u; uptime
