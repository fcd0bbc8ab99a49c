"""Named, reusable training configurations (``fcn-train --recipe NAME``).

A recipe is a set of :class:`~fcn_deploy.training.train.TrainConfig` field values; flags given on
the command line override it. ``recipe_config(name, out=..., data=..., **overrides)`` builds the
config from Python.

``camvid-resnet18-fcn8s`` (from scratch, 2-core CPU): ResNet-18 FCN-8s with the aligned head,
AdamW lr 2e-3 with poly(0.9) decay over the time budget (stops when the budget is used), weight
decay 1e-4, median-frequency class weights, random scale 0.75-1.25 then 288x384 crops (padded
with void) + horizontal flips, ImageNet mean/std, a short warm-up; validation (fp32) on the 101
val frames at full 360x480 every few epochs and always at the end.

Precision: ``amp="auto"``. On a CPU with native bf16 (Zen 4 EPYC, avx512_bf16, 2 threads) a
train step (batch 8 of 288x384) took 10.5 s in bf16 autocast against 17.8 s in fp32 (1.70x,
interleaved, load ~15; benchmarks/RESULTS.md ("Training from scratch")), channels-last adding nothing (1.006x).
On the earlier AVX2-only EPYC, bf16 was emulated: fp32 NCHW ~2.1 s, fp32 channels_last
~2.4-4.7 s, bf16 autocast 28-55 s, so ``auto`` trains fp32 there (the recipe's recorded 80-minute
run, benchmarks/RESULTS.md, is that fp32 run with the legacy head).
"""

from __future__ import annotations

from typing import Any, Dict

from fcn_deploy.errors import unknown_name

RECIPES: Dict[str, Dict[str, Any]] = {
    "camvid-resnet18-fcn8s": dict(
        format="camvid",
        arch="fcn8s",
        backbone="resnet18",
        epochs=10_000,  # a cap only: the time budget ends the run
        time_budget_min=80.0,
        batch_size=8,
        lr=2e-3,
        optimizer="adamw",
        weight_decay=1e-4,
        poly_power=0.9,
        warmup=0.02,
        crop=(288, 384),
        scale_range=(0.75, 1.25),
        hflip=True,
        class_weights="median-freq",
        learnable_upsampling=False,
        head_alignment="aligned",
        channels_last=None,  # the precision decision picks it (see train.resolve_precision)
        amp="auto",  # bf16 autocast where the CPU has native bf16, fp32 where it would be emulated
        threads=2,
        # The recorded run (benchmarks/RESULTS.md) used 2 fixed threads; add --adaptive-threads
        # on a machine shared with other busy processes.
        adaptive_threads=False,
        val_every=5,
        val_batch_size=4,
    ),
    # The embedded default: synthetic shapes, a couple of minutes on 2 CPU cores.
    "synthetic-resnet18-fcn8s": dict(
        format="synthetic",
        arch="fcn8s",
        backbone="resnet18",
        epochs=12,
        batch_size=8,
        lr=2e-3,
        optimizer="adamw",
        weight_decay=1e-4,
        warmup=0.05,
        scale_range=(0.75, 1.25),
        crop=(64, 64),
        hflip=True,
        class_weights="median-freq",
        val_every=3,
    ),
    # The paper's protocol on VOC (SGD, fixed lr 1e-4 for un-normalised loss is approximated by
    # lr 1e-10 on summed loss in Caffe; here mean loss): for machines with a GPU.
    "voc-vgg16-fcn8s": dict(
        format="voc",
        arch="fcn8s",
        backbone="vgg16",
        epochs=50,
        batch_size=1,
        lr=1e-4,
        optimizer="sgd",
        momentum=0.99,
        weight_decay=5e-4,
        poly_power=0.0,
        hflip=True,
        class_weights="none",
        val_every=5,
        val_batch_size=1,
    ),
}


def get_recipe(name: str) -> Dict[str, Any]:
    if name not in RECIPES:
        raise unknown_name("recipe", name, RECIPES)
    return dict(RECIPES[name])


def recipe_config(name: str, **overrides):
    """A :class:`TrainConfig` from a recipe, with keyword overrides (``out`` is required)."""
    from fcn_deploy.training.train import TrainConfig

    values = get_recipe(name)
    values.update(overrides)
    values["recipe"] = name
    return TrainConfig(**values)
