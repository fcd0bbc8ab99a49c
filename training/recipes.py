"""Named, reusable training configurations (``fcn-train --recipe NAME``).

A recipe is a set of :class:`~fcn_deploy.training.train.TrainConfig` field values; flags given on
the command line override it. ``recipe_config(name, out=..., data=..., **overrides)`` builds the
config from Python.

``camvid-resnet18-fcn8s`` (from scratch, 2-core CPU): ResNet-18 FCN-8s with the aligned head,
AdamW lr 2e-3 with poly(0.9) decay over the time budget (stops when the budget is used), weight
decay 1e-4, median-frequency class weights, random scale 0.75-1.25 then 288x384 crops (padded
with void) + horizontal flips, ImageNet mean/std, a short warm-up; validation (fp32) on the 101
val frames at full 360x480 every few epochs and always at the end.

Precision: ``amp="auto"``: bf16 autocast where the CPU runs bf16 natively (AVX512-BF16, AMX),
where it measured clearly faster than fp32 per train step, with channels-last adding nothing;
fp32 where bf16 is emulated (many times slower there). The recorded 80-minute run is an fp32 run
with the legacy head. Figures, machines and commands: benchmarks/RESULTS.md ("Training from
scratch").
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
