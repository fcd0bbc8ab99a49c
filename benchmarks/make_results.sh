#!/usr/bin/env bash
# Regenerates the recorded reports in benchmarks/results/ (what benchmarks/results/README.md lists),
# on the machine at hand. `make results` runs it; every path is relative or a variable:
#
#   make results [STEPS="formats latency-r18"] [CAMVID=../shared/data/camvid] [WORK=results-work] [DRY=1]
#
#   BIN     folder of the fcn-* commands           (default: .venv/bin)
#   CAMVID  CamVid root (its README has the layout) (default: ../shared/data/camvid)
#   WORK    scratch folder for checkpoints/ONNX     (default: results-work; git-ignored)
#   OUT     where the reports go                    (default: benchmarks/results)
#   STEPS   which steps, in order                   (default: all, see `STEPS=list`)
#   DRY=1   print the commands instead of running them
#
# Steps that need a trained model train it first if $WORK/runs/camvid_r18_fcn8s.pt is missing
# (the 80-minute recipe). Figures move with the machine: record `lscpu` flags and `uptime` with
# any figure you quote (benchmarks/RESULTS.md), and compare only ratios from one run.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
CAMVID=${CAMVID:-../shared/data/camvid}
WORK=${WORK:-results-work}
OUT=${OUT:-benchmarks/results}
DRY=${DRY:-}
ALL="train-r18 formats eval-int8 latency-r18 int8cpu peers-r18 vgg16-untrained latency-vgg16 int8cpu-vgg16 ceilings vgg16-bf16 train-vgg16"
STEPS=${STEPS:-$ALL}
if [ "$STEPS" = list ]; then echo "$ALL"; exit 0; fi

OUT_ABS=$(mkdir -p "$OUT" && cd "$OUT" && pwd)
mkdir -p "$WORK/runs" "$WORK/r18" "$WORK/vgg"
CK=runs/camvid_r18_fcn8s.pt
T="--threads 2"

run() {  # run (or print) one command inside $WORK
  echo "+ $*" >&2
  if [ -z "$DRY" ]; then (cd "$WORK" && "$@"); fi
}
fcn() { local tool=$1; shift; run "$(cd "$BIN" && pwd)/fcn-$tool" "$@"; }
py() { run "$(cd "$BIN" && pwd)/python" "$@"; }
machine() { echo "# $(date -u +%FT%TZ) $(uptime)" >&2; lscpu | grep -E '^(Model name|Flags)' >&2 || true; }
need_ck() { [ -n "$DRY" ] || [ -f "$WORK/$CK" ] || step_train-r18; }
r18() { echo "r18/camvid_r18_fcn8s-$1.onnx"; }
log_to() { if [ -n "$DRY" ]; then cat; else tee "$1"; fi; }  # keep a training log (never in a dry run)

step_train-r18() {
  fcn train --recipe camvid-resnet18-fcn8s --data "$CAMVID" --out "$CK" 2>&1 | log_to "$OUT_ABS/train-camvid-r18-fcn8s-80min.log"
}
step_formats() {
  need_ck
  fcn bench --formats "$CK" --data "$CAMVID" --format camvid --split val --out-dir r18 --shape 1x3x360x480 $T \
    --iterations 10 --json "$OUT_ABS/camvid-val-r18-formats.json" --markdown "$OUT_ABS/camvid-val-r18-formats.md" -q
}
step_eval-int8() {
  need_ck
  for target in tensorrt cpu; do
    tag=$([ $target = cpu ] && echo int8cpu || echo int8trt)
    fcn export "$CK" "$(r18 $tag)" --precision int8 --int8-target $target --calib-data "$CAMVID" --calib-format camvid
    fcn eval --model "$(r18 $tag)" --data "$CAMVID" --format camvid --split val --reference "$CK" \
      --json "$OUT_ABS/camvid-val-r18-$tag-floatstem-ort.json" -q
    fcn eval --model "$(r18 $tag)" --backend openvino --data "$CAMVID" --format camvid --split val --reference "$CK" \
      --json "$OUT_ABS/camvid-val-r18-$tag-floatstem-ov.json" -q
  done
}
step_latency-r18() {
  need_ck
  [ -n "$DRY" ] || [ -f "$WORK/$(r18 fp32)" ] || fcn export "$CK" "$(r18 fp32)"
  [ -n "$DRY" ] || [ -f "$WORK/$(r18 fp16)" ] || fcn export "$CK" "$(r18 fp16)" --precision fp16
  fcn bench --compare torch:$CK torch-bf16:$CK torch-compile:$CK onnx:$(r18 fp32) onnx:$(r18 fp16) onnx:$(r18 int8trt) \
    openvino:$(r18 fp32) openvino:$(r18 int8trt) --shape 1x3x360x480 --shape 1x3x512x512 $T --warmup 2 --iterations 10 \
    --json "$OUT_ABS/latency-r18-all-360x480-512x512.json" --markdown "$OUT_ABS/latency-r18-all-360x480-512x512.md" \
    --plot "$OUT_ABS/latency-r18-all-360x480-512x512.png" -q
}
step_int8cpu() {
  need_ck
  fcn bench --compare torch:$CK onnx:$(r18 fp32) onnx:$(r18 int8cpu) openvino:$(r18 int8trt) openvino:$(r18 int8cpu) \
    --shape 1x3x360x480 $T --warmup 2 --iterations 10 \
    --json "$OUT_ABS/latency-r18-int8cpu-floatstem-360x480.json" --markdown "$OUT_ABS/latency-r18-int8cpu-floatstem-360x480.md" -q
}
step_peers-r18() {
  need_ck
  fcn bench --compare torch:$CK torch-compile:$CK torch-compile-bf16:$CK openvino-bf16:$(r18 fp32) onnx:$(r18 fp32) \
    onnx:$(r18 int8cpu) onnx:$(r18 int8trt) openvino:$(r18 int8cpu) openvino:$(r18 int8trt) --shape 1x3x360x480 $T \
    --warmup 2 --iterations 10 --json "$OUT_ABS/latency-r18-peers-floatstem-360x480.json" \
    --markdown "$OUT_ABS/latency-r18-peers-floatstem-360x480.md" -q
}
step_vgg16-untrained() {  # speed does not depend on the weights: an untrained VGG16 FCN-8s
  py -c "from fcn_deploy.training.models import build_model, input_convention as ic
from fcn_deploy.training.checkpoint import save_checkpoint
from fcn_deploy.modelinfo import ModelInfo
from fcn_deploy.palette import CAMVID_CLASSES, CAMVID_PALETTE
o, s, m, d = ic('vgg16')
save_checkpoint('vgg/vgg16-fcn8s.pt', build_model('fcn8s', 'vgg16', 11), ModelInfo(arch='fcn8s', backbone='vgg16',
    num_classes=11, class_names=CAMVID_CLASSES, palette=CAMVID_PALETTE, channel_order=o, scale=s, mean=m, std=d, ignore_index=11))"
  fcn export vgg/vgg16-fcn8s.pt vgg/vgg16-fcn8s.onnx
  fcn export vgg/vgg16-fcn8s.pt vgg/vgg16-fcn8s-fp16.onnx --precision fp16 --no-verify
  for target in tensorrt cpu; do
    tag=$([ $target = cpu ] && echo int8cpu || echo int8trt)
    fcn export vgg/vgg16-fcn8s.pt vgg/vgg16-fcn8s-$tag.onnx --precision int8 --int8-target $target \
      --calib-data "$CAMVID" --calib-format camvid --calib-images 8 --calib-method minmax --no-verify
  done
}
step_latency-vgg16() {
  fcn bench --compare torch:vgg/vgg16-fcn8s.pt onnx:vgg/vgg16-fcn8s.onnx onnx:vgg/vgg16-fcn8s-int8trt.onnx \
    openvino:vgg/vgg16-fcn8s.onnx openvino:vgg/vgg16-fcn8s-int8trt.onnx onnx:vgg/vgg16-fcn8s-fp16.onnx \
    --shape 1x3x360x480 --shape 1x3x512x512 $T --warmup 1 --iterations 5 \
    --json "$OUT_ABS/latency-vgg16-all-360x480-512x512.json" --markdown "$OUT_ABS/latency-vgg16-all-360x480-512x512.md" \
    --plot "$OUT_ABS/latency-vgg16-all-360x480-512x512.png" -q
}
step_int8cpu-vgg16() {
  fcn bench --compare torch:vgg/vgg16-fcn8s.pt onnx:vgg/vgg16-fcn8s.onnx onnx:vgg/vgg16-fcn8s-int8cpu.onnx \
    openvino:vgg/vgg16-fcn8s-int8cpu.onnx --shape 1x3x360x480 $T --warmup 1 --iterations 10 \
    --json "$OUT_ABS/latency-vgg16-int8cpu-floatstem-360x480.json" --markdown "$OUT_ABS/latency-vgg16-int8cpu-floatstem-360x480.md" -q
}
step_ceilings() {
  fcn bench --ceiling vgg/vgg16-fcn8s.onnx --shape 1x3x360x480 $T --iterations 5 \
    --json "$OUT_ABS/ceiling-vgg16-360x480.json" --markdown "$OUT_ABS/ceiling-vgg16-360x480.md" -q
  fcn bench --ceiling $(r18 fp32) --shape 1x3x360x480 $T --iterations 5 \
    --json "$OUT_ABS/ceiling-r18-360x480.json" --markdown "$OUT_ABS/ceiling-r18-360x480.md" -q
}
step_vgg16-bf16() {  # one image: where bf16 is emulated this takes minutes
  fcn bench --compare torch:vgg/vgg16-fcn8s.pt torch-bf16:vgg/vgg16-fcn8s.pt --shape 1x3x360x480 $T --warmup 0 \
    --iterations 1 --no-prepost --json "$OUT_ABS/latency-vgg16-bf16-360x480.json" --markdown "$OUT_ABS/latency-vgg16-bf16-360x480.md" -q
}
step_train-vgg16() {  # a short from-scratch VGG16, only to measure int8 against fp32 on VGG16
  fcn train --data "$CAMVID" --format camvid --arch fcn8s --backbone vgg16 --optimizer adamw --lr 1e-4 --weight-decay 1e-4 \
    --time-budget 38 --epochs 50 --crop 240x320 --scale 0.75,1.25 --class-weights median-freq --batch-size 4 $T \
    --val-every 100 --seed 0 --out vgg/vgg16_camvid.pt 2>&1 | log_to "$OUT_ABS/train-camvid-vgg16-fcn8s-38min.log"
  fcn export vgg/vgg16_camvid.pt vgg/vgg16_camvid-int8cpu.onnx --precision int8 --int8-target cpu \
    --calib-data "$CAMVID" --calib-format camvid --calib-images 32 --no-verify
  fcn eval --model vgg/vgg16_camvid-int8cpu.onnx --data "$CAMVID" --format camvid --split val \
    --reference vgg/vgg16_camvid.pt --json "$OUT_ABS/camvid-val-vgg16-38min-int8cpu-ort.json" -q
  fcn eval --model vgg/vgg16_camvid-int8cpu.onnx --backend openvino --data "$CAMVID" --format camvid --split val \
    --reference vgg/vgg16_camvid.pt --json "$OUT_ABS/camvid-val-vgg16-38min-int8cpu-ov.json" -q
}

for s in $STEPS; do
  if ! declare -F "step_$s" >/dev/null; then echo "error: unknown step '$s'; steps: $ALL" >&2; exit 2; fi
done
machine
for s in $STEPS; do
  "step_$s"
  machine
done
