#!/usr/bin/env bash
# Session 2: a short from-scratch VGG16 FCN-8s on CamVid, only to measure int8 vs fp32 on VGG16 (issue 5).
set -x
cd /work/bench/vggt
B=/work/main/.venv/bin
uptime
$B/fcn-train --data /work/shared/data/camvid --format camvid --arch fcn8s --backbone vgg16 \
   --optimizer adamw --lr 1e-4 --weight-decay 1e-4 --time-budget 38 --epochs 50 --crop 240x320 --scale 0.75,1.25 \
   --class-weights median-freq --batch-size 4 --threads 2 --val-every 100 --seed 0 --out vgg16_camvid.pt
uptime
