#!/usr/bin/env bash
set -x
cd /work/bench
uptime
/work/main/.venv/bin/fcn-bench --compare torch:vgg16-fcn8s.pt torch-bf16:vgg16-fcn8s.pt --shape 1x3x360x480 \
   --threads 2 --warmup 0 --iterations 1 --no-prepost --json s2-vgg16-bf16.json --markdown s2-vgg16-bf16.md -q
uptime
