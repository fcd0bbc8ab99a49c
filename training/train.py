"""``fcn-train``'s loop: train an FCN, validate with the paper's four metrics, save checkpoints, resume.

Files written for ``--out model.pt``:

- ``model.pt``: the best weights so far by validation mean IU (``metrics`` holds their scores);
- ``model.last.pt``: the state after the last finished epoch, with the full resume state
  (training/resume.py: optimizer, epoch, step, elapsed time, class weights, history).
  ``--resume`` continues from it.

Both are ordinary checkpoints (``training/checkpoint.py``), written atomically, loadable with
``torch.load(weights_only=True)``.

Layout: :func:`train` sets the run up with a few named helpers, then loops over epochs:
:func:`_train_epoch` (the steps), :func:`_validate` (scores, ``model.pt``) and
:func:`_save_last` (``model.last.pt``). The schedule is :func:`lr_at`. The resume state is
``training/resume.py``, the multi-process helpers ``training/ddp.py``, the precision decision
``training/amp.py``, the command line ``training/cli.py`` (:func:`main` here is its entry point,
so ``python -m fcn_deploy.training.train`` and the ``fcn-train`` script are the same).

Reproducibility: the image order of epoch ``e`` comes from ``DistributedSampler(seed, epoch=e)``,
the augmentation of batch ``b`` from ``np.random.default_rng([seed, e, rank, b])`` and torch's
RNG (dropout) is re-seeded with ``seed`` and ``e`` at every epoch start. A run interrupted
(Ctrl-C, kill) after epoch ``k`` and resumed therefore ends with exactly the weights of an
uninterrupted run, when the schedule is over epochs. With ``--time-budget`` the learning rate
follows elapsed wall time, which no rerun reproduces bit for bit; resume then continues from the
stored elapsed time.

Host syncs: the loss stays on the device during an epoch (summed there in float64); it is read
to the host only at log time (the progress bar about once a second, the progress line, the end
of the epoch), so a CUDA step is not made to wait for the previous one. The epoch's loss is the
same number as when each step's loss was read at once. A loss that is not finite stops the run
with one line at the next read, before anything of that epoch is written.

Precision (``--amp``, training/amp.py): ``auto`` (the CamVid recipe's) trains with bf16 autocast
where the CPU computes bf16 in hardware and in fp32 where bf16 would be emulated; on CUDA, bf16
where the device supports it, else fp16 with a grad scaler (unverified on hardware). The
decision and its reason are logged at start and recorded in the checkpoint
(``info.extra["train_precision"]``, ``train.config.amp``). Validation always runs in fp32: its
scores are those the fp32 export gives.

Reporting: ``fcn-train`` prints the val scores of the *last* epoch first (no selection involved)
and the best epoch's beside them. The best epoch is chosen on a hold-out part of train when
``--holdout K`` is given (every K-th block of 10 consecutive train images, scored at every
validation), else on val itself, which the summary then calls optimistic. ``model.pt`` (best)
carries ``metrics.last_epoch``, ``model.last.pt`` carries ``metrics.best_epoch``.

Distributed (training/ddp.py): run the same script under ``torchrun --nproc_per_node N``; it reads
``WORLD_SIZE``/``RANK``/``LOCAL_RANK``, uses gloo on CPU and nccl on CUDA, shards the images with
``DistributedSampler`` (``--batch-size`` is per process) and only rank 0 writes files and prints.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

if "torch" not in sys.modules:
    # Sleeping (not spinning) OpenMP workers: on a shared 2-core machine, spinning threads of two
    # busy processes slow each other down several times over (measured 0.87 vs 0.33 s/step).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch
import torch.nn.functional as F

from fcn_deploy._util import atomic_path, check_writable
from fcn_deploy.errors import FcnError, unknown_name
from fcn_deploy.metrics import ConfusionMatrix, format_scores
from fcn_deploy.modelinfo import ModelInfo

from fcn_deploy.training import data as segdata
from fcn_deploy.training import ddp, registry
from fcn_deploy.training.amp import AMP_MODES, Precision, autocast, resolve_precision
from fcn_deploy.training.checkpoint import load_checkpoint, save_checkpoint
from fcn_deploy.training.data import SyntheticSpec
from fcn_deploy.training.ddp import Dist
from fcn_deploy.training.models import load_backbone_weights
from fcn_deploy.training.resume import ResumeState, config_fingerprint

log = logging.getLogger(__name__)

OPTIMIZERS = ("adamw", "sgd")
HEAD_ALIGNMENTS = ("aligned", "legacy")
HOLDOUT_BLOCK = 10  # --holdout K holds out every K-th block of this many consecutive train images
CLASS_WEIGHTS = ("median-freq", "none")
DEVICES = ("auto", "cpu", "cuda")
BAR_LOSS_EVERY_S = 1.0  # the progress bar shows the step's loss (a host read) at most this often
LINE_EVERY_S = 300.0  # without a bar: a progress line (mean loss so far) at most this often


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs (the CLI builds one; the demo builds one directly)."""

    out: str
    format: str = "synthetic"
    data: Optional[str] = None
    arch: str = "fcn8s"
    backbone: str = "resnet18"
    epochs: int = 10
    batch_size: int = 8
    lr: float = 2e-3
    optimizer: str = "adamw"
    momentum: float = 0.9
    weight_decay: float = 1e-4
    poly_power: float = 0.9
    warmup: float = 0.0  # fraction of the schedule with linear warm-up
    time_budget_min: Optional[float] = None
    crop: Optional[Tuple[int, int]] = None
    scale_range: Tuple[float, float] = (1.0, 1.0)
    hflip: bool = True
    class_weights: str = "none"
    learnable_upsampling: bool = False
    head_alignment: str = "aligned"  # ResNet heads; "legacy" = the pre-fix head (see models.py)
    channels_last: Optional[bool] = False  # None: channels-last where the precision decision says it is faster
    amp: Any = "off"  # one of AMP_MODES (True / False mean "on" / "off")
    # Hold out every K-th block of HOLDOUT_BLOCK consecutive train images (name order): scored
    # with val, and the best epoch is chosen on it instead of on val. 0: no hold-out.
    holdout: int = 0
    device: str = "auto"
    threads: Optional[int] = None
    # Re-pick the thread count (1..threads or all cores) every few steps from the load average:
    # one thread when other processes keep the cores busy, all of them when the machine is free.
    adaptive_threads: bool = False
    seed: int = 0
    val_every: int = 1
    val_batch_size: int = 4
    workers: int = 0
    resume: bool = False
    backbone_weights: Optional[str] = None
    synthetic: SyntheticSpec = field(default_factory=SyntheticSpec)
    recipe: Optional[str] = None
    progress: Optional[bool] = None  # None: tqdm bar when stderr is a TTY, one line per epoch otherwise

    def __post_init__(self):
        if isinstance(self.amp, bool):  # the earlier boolean --amp
            object.__setattr__(self, "amp", "on" if self.amp else "off")

    def validate(self) -> None:
        if self.amp not in AMP_MODES:
            raise unknown_name("amp mode", self.amp, AMP_MODES)
        if self.head_alignment not in HEAD_ALIGNMENTS:
            raise unknown_name("head alignment", self.head_alignment, HEAD_ALIGNMENTS)
        if self.holdout < 0 or self.holdout == 1:
            raise FcnError(f"holdout must be 0 (none) or >= 2 (every K-th block held out), got {self.holdout}")
        if self.format not in segdata.FORMATS:
            raise unknown_name("dataset format", self.format, segdata.FORMATS)
        spec = registry.check_arch(self.arch, self.backbone)  # unknown names list the valid ones
        if self.learnable_upsampling and "learnable_upsampling" not in spec.options:
            raise FcnError(f"--learnable-upsampling: arch {self.arch} has no deconvolutions to learn")
        if self.optimizer not in OPTIMIZERS:
            raise unknown_name("optimizer", self.optimizer, OPTIMIZERS)
        if self.class_weights not in CLASS_WEIGHTS:
            raise unknown_name("class weighting", self.class_weights, CLASS_WEIGHTS)
        if self.device not in DEVICES:
            raise unknown_name("device", self.device, DEVICES)
        for name in ("epochs", "batch_size", "val_every", "val_batch_size"):
            if getattr(self, name) < 1:
                raise FcnError(f"{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise FcnError(f"lr must be a positive number, got {self.lr}")
        if self.time_budget_min is not None and not self.time_budget_min > 0:
            raise FcnError(f"time budget must be > 0 minutes, got {self.time_budget_min}")
        if self.workers < 0:
            raise FcnError(f"workers must be >= 0, got {self.workers}")
        lo, hi = self.scale_range
        if not (0 < lo <= hi):
            raise FcnError(f"scale range must satisfy 0 < min <= max, got {lo}..{hi}")
        if self.crop is not None and min(self.crop) < 8:
            raise FcnError(f"crop must be at least 8x8, got {self.crop}")
        if not str(self.out).endswith(".pt"):
            raise FcnError(f"--out must name a .pt file, got {self.out}")
        if self.backbone_weights is not None and not Path(self.backbone_weights).is_file():
            raise FcnError(f"backbone weights not found: {self.backbone_weights}")


@dataclass(frozen=True)
class TrainResult:
    best_path: str
    last_path: str
    best_metrics: Dict[str, Any]  # four metrics (fractions) + per_class_iu + epoch of the best weights
    final_metrics: Dict[str, Any]  # scores of the last validation
    history: List[Dict[str, Any]]  # one dict per epoch: epoch, loss, lr, seconds, images, [val metrics]
    epochs_done: int
    elapsed_s: float
    stopped_by_budget: bool


def last_path_for(out) -> Path:
    """``model.pt`` -> ``model.last.pt``."""
    path = Path(out)
    return path.with_name(path.stem + ".last" + path.suffix)


# ------------------------------------------------------------------------------------------------
# Schedule, threads, device
# ------------------------------------------------------------------------------------------------


def lr_at(cfg: TrainConfig, progress: float) -> float:
    """Poly decay ``lr * (1 - progress) ** power`` with optional linear warm-up; progress in [0, 1]."""
    progress = min(max(progress, 0.0), 1.0)
    lr = cfg.lr * (1.0 - progress) ** cfg.poly_power
    if cfg.warmup > 0 and progress < cfg.warmup:
        lr *= max(progress / cfg.warmup, 0.01)
    return lr


class _Clock:
    """Training wall time (continued across a resume) and how far the schedule is: by steps
    over the epochs, or with --time-budget by elapsed time, whichever ends first."""

    def __init__(self, cfg: TrainConfig, total_steps: int, elapsed_s: float, dist: Dist):
        self.budget_s = cfg.time_budget_min * 60.0 if cfg.time_budget_min else None
        self.total_steps = total_steps
        self.dist = dist
        self.t0 = time.perf_counter() - elapsed_s  # so that now - t0 == total elapsed

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def progress(self, step: int) -> float:
        by_steps = step / max(self.total_steps, 1)
        if self.budget_s is None:
            return by_steps  # the same on every rank: nothing to broadcast
        # Whichever ends first: the time budget or the epoch cap; rank 0's clock decides for all.
        return ddp.broadcast_floats([max(self.elapsed() / self.budget_s, by_steps)], self.dist)[0]

    def budget_used(self, elapsed: float) -> bool:
        return self.budget_s is not None and elapsed >= self.budget_s


def _adapt_threads(max_threads: int) -> int:
    """1 thread when the 1-minute load average shows other busy processes, else ``max_threads``."""
    try:
        load = os.getloadavg()[0]
    except OSError:
        return torch.get_num_threads()
    mine = torch.get_num_threads()
    others = load - mine
    want = 1 if others >= 0.75 else max_threads
    if want != mine:
        torch.set_num_threads(want)
        log.debug("load %.2f: %d -> %d threads", load, mine, want)
    return want


def _resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise FcnError("--device cuda was asked but no CUDA device is available")
    return torch.device(name)


# ------------------------------------------------------------------------------------------------
# Evaluation
# ------------------------------------------------------------------------------------------------


@torch.no_grad()
def evaluate(model: torch.nn.Module, ds: segdata.SegDataset, convention, *, device: torch.device,
             batch_size: int = 4, amp: Any = False, channels_last: bool = False,
             dist_info: Optional[Dist] = None, progress: bool = False) -> Dict[str, Any]:
    """Four metrics of ``model`` on ``ds`` at full image size (confusion matrix summed over ranks)."""
    dist = dist_info or Dist()
    was_training = model.training
    model.eval()
    confusion = ConfusionMatrix(ds.num_classes)
    batches = segdata.eval_batches(ds, batch_size, list(range(dist.rank, len(ds), dist.world)))
    if progress:
        from tqdm import tqdm

        batches = tqdm(batches, desc="val", leave=False)
    for indices in batches:
        images, labels = segdata.make_eval_batch(ds, indices, convention)
        images = images.to(device)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with autocast(device, amp):
            logits = model(images)
        confusion.update(labels.numpy(), logits.argmax(1).cpu().numpy())
    hist = torch.from_numpy(confusion.hist).to(device)  # on the device: nccl reduces no CPU tensors
    ddp.all_reduce_(hist, dist)
    confusion.hist = hist.cpu().numpy()
    if was_training:
        model.train()
    return confusion.scores(ds.class_names)


# ------------------------------------------------------------------------------------------------
# Set-up
# ------------------------------------------------------------------------------------------------


class _Subset(segdata.SegDataset):
    """Some samples of a dataset (the hold-out split of train, or train without it)."""

    def __init__(self, base: segdata.SegDataset, indices: Sequence[int], split: str):
        super().__init__(name=base.name, split=split, class_names=base.class_names, palette=base.palette,
                         ignore_index=base.ignore_index, cache=False)
        self.base, self.indices = base, list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def describe(self, i: int) -> str:
        return self.base.describe(self.indices[i])

    def _load(self, i: int):
        return self.base.get(self.indices[i])


def holdout_split(n: int, k: int, block: int = HOLDOUT_BLOCK) -> Tuple[List[int], List[int]]:
    """(kept, held out) indices of ``n`` name-ordered samples: block b of ``block`` consecutive
    samples is held out when b % k == k - 1. Blocks, not single frames, because neighbouring
    video frames (CamVid) are near-duplicates: a frame-wise split would leak the answer."""
    held = [i for i in range(n) if (i // block) % k == k - 1]
    held_set = set(held)
    return [i for i in range(n) if i not in held_set], held


@dataclass
class _Run:
    """What the loop works with; :func:`_setup` builds it once."""

    cfg: TrainConfig
    device: torch.device
    dist: Dist
    out: Path  # model.pt (best)
    last: Path  # model.last.pt (resumable)
    train_ds: segdata.SegDataset
    val_ds: segdata.SegDataset
    holdout_ds: Optional[segdata.SegDataset]
    convention: Any  # the input convention (channel order, scale, mean, std)
    info: ModelInfo
    model: torch.nn.Module  # the FCN, as the checkpoints store it
    net: torch.nn.Module  # what the steps run: the FCN, in DDP with several processes
    optimizer: torch.optim.Optimizer
    scaler: Optional[Any]  # GradScaler for fp16 on CUDA
    precision: Precision
    loss_weight: Optional[torch.Tensor]  # class weights on the device
    sampler: Any  # DistributedSampler: this process's share of the images, in a per-epoch order
    augment: segdata.AugmentConfig
    batches_per_epoch: int
    max_threads: int
    show_bar: bool  # tqdm bars on this process


def _start_processes(cfg: TrainConfig) -> Tuple[torch.device, Dist, int]:
    device = _resolve_device(cfg.device)
    dist = ddp.init(device.type)
    if dist.world > 1 and device.type == "cuda":
        device = torch.device("cuda", dist.local_rank)
        torch.cuda.set_device(device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    return device, dist, cfg.threads or torch.get_num_threads()


def _open_data(cfg: TrainConfig, dist: Dist):
    """(train, val, hold-out or None), decoded into RAM."""
    train_ds = segdata.open_dataset(cfg.format, cfg.data, "train", synthetic=cfg.synthetic)
    val_ds = segdata.open_dataset(cfg.format, cfg.data, "val", synthetic=cfg.synthetic)
    t0 = time.perf_counter()
    train_ds.preload()
    val_ds.preload()
    if train_ds.class_names != val_ds.class_names:
        raise FcnError("train and val splits disagree on the class list")
    holdout_ds: Optional[segdata.SegDataset] = None
    if cfg.holdout:
        kept, held = holdout_split(len(train_ds), cfg.holdout)
        if not held or not kept:
            raise FcnError(f"--holdout {cfg.holdout}: {len(train_ds)} train images leave no hold-out block "
                           f"(blocks of {HOLDOUT_BLOCK}) or nothing to train on")
        holdout_ds = _Subset(train_ds, held, "holdout")
        train_ds = _Subset(train_ds, kept, "train")
    if dist.main:
        log.info("data: %s train %d / val %d images%s, %d classes (ignore %d), decoded in %.1f s",
                 train_ds.name, len(train_ds), len(val_ds),
                 f" / hold-out {len(holdout_ds)} (every {cfg.holdout}th block of {HOLDOUT_BLOCK} train images)"
                 if holdout_ds is not None else "",
                 train_ds.num_classes, train_ds.ignore_index, time.perf_counter() - t0)
    return train_ds, val_ds, holdout_ds


def _model_info(cfg: TrainConfig, ds: segdata.SegDataset, precision: Precision) -> ModelInfo:
    order, scale, mean, std = registry.default_convention(cfg.arch, cfg.backbone)
    return ModelInfo(
        arch=cfg.arch, backbone=cfg.backbone, num_classes=ds.num_classes, class_names=ds.class_names,
        palette=ds.palette, channel_order=order, scale=scale, mean=mean, std=std,
        ignore_index=ds.ignore_index,
        extra={"dataset": ds.name, "recipe": cfg.recipe or "", "train_precision": precision.name},
    )


def _build_model(cfg: TrainConfig, train_ds, device: torch.device, dist: Dist):
    """(model on the device, precision, ModelInfo). The initial weights come from ``cfg.seed``."""
    torch.manual_seed(cfg.seed)
    arch_options = registry.get_arch(cfg.arch).options
    options = {name: getattr(cfg, name) for name in ("learnable_upsampling", "head_alignment") if name in arch_options}
    model = registry.build_model(cfg.arch, cfg.backbone, train_ds.num_classes, **options)
    precision = resolve_precision(cfg.amp, device, cfg.channels_last)
    if dist.main:
        log.info("precision: %s", precision.describe())
    if cfg.backbone_weights:
        loaded = load_backbone_weights(model, cfg.backbone_weights)
        if dist.main:
            log.info("loaded %d backbone tensors from %s", len(loaded), cfg.backbone_weights)
    model.to(device)
    if precision.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model, precision, _model_info(cfg, train_ds, precision)


def _make_optimizer(cfg: TrainConfig, model: torch.nn.Module, precision: Precision):
    params = [param for param in model.parameters() if param.requires_grad]
    if cfg.optimizer == "adamw":
        optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    else:
        optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return optimizer, (torch.amp.GradScaler("cuda") if precision.scaler else None)


def _setup(cfg: TrainConfig) -> Tuple[_Run, ResumeState]:
    """Processes, output check, data, model, optimizer, and the state to start from (fresh, or
    ``<out>.last.pt``'s with ``--resume``: read before the data, so a refused resume costs nothing)."""
    device, dist, max_threads = _start_processes(cfg)
    out, last = Path(cfg.out), last_path_for(cfg.out)
    if dist.main:
        # Fail now, not after the first epoch: both files must be creatable before any data is read.
        check_writable(out)
        check_writable(last)
    state = ResumeState.load(last, cfg, world_size=dist.world) if cfg.resume else ResumeState(
        config=config_fingerprint(cfg), world_size=dist.world)
    train_ds, val_ds, holdout_ds = _open_data(cfg, dist)
    model, precision, info = _build_model(cfg, train_ds, device, dist)
    optimizer, scaler = _make_optimizer(cfg, model, precision)
    if state.class_weights is None and cfg.class_weights == "median-freq":
        state.class_weights = torch.from_numpy(train_ds.median_frequency_weights())
    if cfg.resume:
        state.restore(model, optimizer, scaler)
        if dist.main:
            log.info("resumed from %s after epoch %d (%.1f min elapsed)", last, state.epoch, state.elapsed_s / 60)
    run = _Run(
        cfg=cfg, device=device, dist=dist, out=out, last=last, train_ds=train_ds, val_ds=val_ds,
        holdout_ds=holdout_ds, convention=registry.default_convention(cfg.arch, cfg.backbone), info=info,
        model=model, net=ddp.wrap(model, device, dist), optimizer=optimizer, scaler=scaler, precision=precision,
        loss_weight=state.class_weights.to(device) if state.class_weights is not None else None,
        sampler=torch.utils.data.DistributedSampler(list(range(len(train_ds))), num_replicas=dist.world,
                                                    rank=dist.rank, shuffle=True, seed=cfg.seed),
        augment=segdata.AugmentConfig(crop=cfg.crop, scale_range=cfg.scale_range, hflip=cfg.hflip),
        batches_per_epoch=math.ceil(math.ceil(len(train_ds) / dist.world) / cfg.batch_size),
        max_threads=max_threads, show_bar=dist.main and (sys.stderr.isatty() if cfg.progress is None else cfg.progress),
    )
    return run, state


# ------------------------------------------------------------------------------------------------
# The loop
# ------------------------------------------------------------------------------------------------


def train(cfg: TrainConfig, *, on_epoch_end: Optional[Callable[[int, Dict[str, Any]], None]] = None) -> TrainResult:
    """Train per ``cfg``; returns where the checkpoints are and the metrics.

    ``on_epoch_end(epoch, record)`` is called on rank 0 after each epoch's checkpoints are
    written (the tests interrupt a run from it).
    """
    cfg.validate()
    run, state = _setup(cfg)
    clock = _Clock(cfg, run.batches_per_epoch * cfg.epochs, state.elapsed_s, run.dist)
    last_scores = state.last_val()
    _log_start(run, clock)
    while not state.finished:
        if state.epoch >= cfg.epochs:
            state.finished = True
            break
        rec = _train_epoch(run, state, clock)
        state.epoch += 1
        elapsed = clock.elapsed()
        done = state.epoch >= cfg.epochs or state.stopped_by_budget or clock.budget_used(elapsed)
        state.finished = bool(ddp.broadcast_floats([float(done)], run.dist)[0])  # rank 0's clock decides for all
        _log_epoch(run, rec, elapsed, clock)
        if state.finished or state.epoch % cfg.val_every == 0:
            last_scores = _validate(run, state, rec)
        state.elapsed_s = clock.elapsed()
        state.history.append(rec)
        if run.dist.main:
            _save_last(run, state, last_scores)
        ddp.barrier(run.dist)
        if run.dist.main and on_epoch_end is not None:
            on_epoch_end(state.epoch, rec)
    if run.dist.main:
        _finish(run, last_scores)
    elapsed = clock.elapsed()
    if run.dist.main:
        log.info("wrote %s (best) and %s (last, resumable); %.1f min", run.out, run.last, elapsed / 60)
    return TrainResult(best_path=str(run.out), last_path=str(run.last), best_metrics=state.best,
                       final_metrics=last_scores, history=state.history, epochs_done=state.epoch,
                       elapsed_s=float(elapsed), stopped_by_budget=state.stopped_by_budget)


def _train_epoch(run: _Run, state: ResumeState, clock: _Clock) -> Dict[str, Any]:
    """One pass over this process's share of the images (or until the time budget is used);
    returns the epoch's record: mean loss (over all processes), last lr, seconds, images."""
    cfg = run.cfg
    loader, n_batches = _epoch_loader(run, state.epoch)
    # Torch's RNG is a function of (seed, epoch) alone, so the resume state stores no RNG state.
    torch.manual_seed(cfg.seed * 100003 + state.epoch)
    run.net.train()
    t0 = time.perf_counter()
    loss_sum = torch.zeros((), dtype=torch.float64, device=run.device)  # sum of loss * images, kept on the device
    images_seen = 0
    shown = _Progress(run, state, n_batches)
    lr = run.optimizer.param_groups[0]["lr"]  # an epoch the budget ends before its first step records the last lr set, not the peak
    for images, labels in loader:
        progress = clock.progress(state.step)
        if clock.budget_s is not None and progress >= 1.0:
            state.stopped_by_budget = True
            break
        if cfg.adaptive_threads and state.step % 10 == 0:
            _adapt_threads(run.max_threads)
        lr = lr_at(cfg, progress)
        for group in run.optimizer.param_groups:
            group["lr"] = lr
        loss = _train_step(run, images, labels)
        state.step += 1
        loss_sum += loss.double() * len(labels)  # float64, as the host's sum of float(loss) * n was
        images_seen += len(labels)
        shown.step(loss, loss_sum, images_seen, lr)
    shown.close()
    totals = torch.stack([loss_sum, torch.tensor(float(images_seen), dtype=torch.float64, device=run.device)])
    loss_total, images_total = ddp.all_reduce_(totals, run.dist).tolist()  # the epoch's one host read
    _host_loss(loss_total, state, None)  # every rank sees the same sum: all stop together
    return {"epoch": state.epoch + 1, "loss": loss_total / max(images_total, 1), "lr": float(lr),
            "seconds": float(time.perf_counter() - t0), "images": int(images_total),
            "partial": bool(state.stopped_by_budget)}


def _epoch_loader(run: _Run, epoch: int):
    """(loader, batches): this process's images in epoch ``epoch``'s order (DistributedSampler),
    in batches augmented from (seed, epoch, rank, batch)."""
    cfg = run.cfg
    run.sampler.set_epoch(epoch)
    order = list(run.sampler)
    batches = [order[i:i + cfg.batch_size] for i in range(0, len(order), cfg.batch_size)]
    epoch_data = segdata.BatchDataset(run.train_ds, batches, seed=cfg.seed, epoch=epoch, rank=run.dist.rank,
                                      aug=run.augment, convention=run.convention)
    # Pinned batches on CUDA: the copy to the device in _train_step is then truly asynchronous.
    loader = torch.utils.data.DataLoader(epoch_data, batch_size=None, shuffle=False, num_workers=cfg.workers,
                                         persistent_workers=False, pin_memory=run.device.type == "cuda")
    return loader, len(batches)


def _train_step(run: _Run, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """One optimizer step on a batch. Returns the loss still on the device: reading it here
    would make the host wait for the step to finish."""
    images = images.to(run.device, non_blocking=True)
    labels = labels.to(run.device, non_blocking=True)
    if run.precision.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    with autocast(run.device, run.precision.dtype):
        logits = run.net(images)
    loss = F.cross_entropy(logits.float(), labels, weight=run.loss_weight, ignore_index=run.train_ds.ignore_index)
    run.optimizer.zero_grad(set_to_none=True)
    if run.scaler is not None:
        run.scaler.scale(loss).backward()
        run.scaler.step(run.optimizer)
        run.scaler.update()
    else:
        loss.backward()
        run.optimizer.step()
    return loss.detach()


def _host_loss(value: float, state: ResumeState, dist: Optional[Dist]) -> float:
    """``value`` (a loss or a sum of losses, read to the host); stop the run when it is not
    finite. With several processes only the end-of-epoch sum, which all ranks share, stops it
    (``dist=None``), so that no rank is left waiting in a collective."""
    if not math.isfinite(value) and (dist is None or dist.world == 1):
        raise FcnError(f"loss became {value} in epoch {state.epoch + 1} (by step {state.step}): lower --lr")
    return value


class _Progress:
    """The epoch's progress on rank 0: a tqdm bar on a TTY, showing the step's loss about once a
    second, else a log line every LINE_EVERY_S with the mean loss so far. These are the only
    reads of the loss to the host during an epoch."""

    def __init__(self, run: _Run, state: ResumeState, n_batches: int):
        self.run, self.state, self.n_batches = run, state, n_batches
        self.bar = None
        if run.show_bar:
            from tqdm import tqdm

            self.bar = tqdm(total=n_batches, desc=f"epoch {state.epoch + 1}", leave=False, dynamic_ncols=True)
        self.last_shown = time.perf_counter()

    def step(self, loss: torch.Tensor, loss_sum: torch.Tensor, images_seen: int, lr: float) -> None:
        now = time.perf_counter()
        if self.bar is not None:
            if now - self.last_shown >= BAR_LOSS_EVERY_S:
                self.last_shown = now
                self.bar.set_postfix(loss=f"{_host_loss(loss.item(), self.state, self.run.dist):.3f}", lr=f"{lr:.2e}")
            self.bar.update(1)
        elif self.run.dist.main and now - self.last_shown > LINE_EVERY_S:
            self.last_shown = now
            mean = _host_loss(loss_sum.item(), self.state, self.run.dist) / max(images_seen, 1)
            log.info("  epoch %d: %d/%d batches, loss %.4f", self.state.epoch + 1,
                     images_seen // self.run.cfg.batch_size, self.n_batches, mean)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _validate(run: _Run, state: ResumeState, rec: Dict[str, Any]) -> Dict[str, Any]:
    """Score the weights on val (and the hold-out) into ``rec``; write ``model.pt`` when they
    are the best so far (on the hold-out when there is one). Returns the val entry.

    Validation runs in fp32 whatever the training precision: the scores are those of the
    weights as the fp32 export runs them."""
    t0 = time.perf_counter()
    scores = _score(run, run.val_ds)
    entry = _metrics_entry(scores, state.epoch)
    select, holdout_scores = entry, None
    if run.holdout_ds is not None:
        holdout_scores = _score(run, run.holdout_ds)
        select = _metrics_entry(holdout_scores, state.epoch)
        entry["holdout"] = select
    entry["selected_on"] = "holdout" if run.holdout_ds is not None else "val"
    rec["val"] = entry
    rec["val_seconds"] = float(time.perf_counter() - t0)
    best = state.best
    ref = best.get("holdout", best) if best else {}
    improved = not best or select["mean_iu"] > ref.get("mean_iu", -1) or math.isnan(ref.get("mean_iu", float("nan")))
    if run.dist.main:
        log.info("  val epoch %d: %s (%.1f s)%s", state.epoch, format_scores(scores), rec["val_seconds"],
                 "  * best" + (" on the hold-out" if run.holdout_ds is not None else "") if improved else "")
        if holdout_scores is not None:
            log.info("  hold-out epoch %d: %s", state.epoch, format_scores(holdout_scores))
    if improved:
        state.best = entry
        if run.dist.main:
            save_checkpoint(run.out, run.model, run.info, metrics=entry)
    return entry


def _score(run: _Run, ds: segdata.SegDataset) -> Dict[str, Any]:
    return evaluate(run.model, ds, run.convention, device=run.device, batch_size=run.cfg.val_batch_size,
                    channels_last=run.precision.channels_last, dist_info=run.dist, progress=run.show_bar)


def _metrics_entry(scores: Dict[str, Any], epoch: int) -> Dict[str, Any]:
    out = {k: float(scores[k]) for k in ("pixel_acc", "mean_acc", "mean_iu", "fw_iu")}
    out["per_class_iu"] = {k: (float("nan") if v is None else float(v)) for k, v in scores["per_class_iu"].items()}
    out["epoch"] = int(epoch)
    return out


def _save_last(run: _Run, state: ResumeState, last_scores: Dict[str, Any]) -> None:
    """``model.last.pt``: the weights and the resume state; its metrics are the last
    validation's, with the best epoch's under ``best_epoch``."""
    metrics = dict(last_scores)
    if state.best:
        metrics["best_epoch"] = {k: v for k, v in state.best.items() if k != "per_class_iu"}
    state.save(run.last, run.model, run.optimizer, run.scaler, run.info, metrics)


def _finish(run: _Run, last_scores: Dict[str, Any]) -> None:
    if not run.out.exists():
        # No validation ever improved (e.g. resumed a finished run whose best is gone): write the last weights.
        save_checkpoint(run.out, run.model, run.info, metrics=last_scores)
    if last_scores:
        _add_last_epoch(run.out, last_scores)


def _add_last_epoch(out: Path, last_scores: Dict[str, Any]) -> None:
    """Store the last epoch's val scores beside the best checkpoint's own (``metrics.last_epoch``)."""
    ckpt = load_checkpoint(out)
    ckpt["metrics"] = dict(ckpt.get("metrics") or {})
    ckpt["metrics"]["last_epoch"] = {k: v for k, v in last_scores.items() if k != "per_class_iu"}
    with atomic_path(out) as tmp:
        torch.save(ckpt, tmp)


def _log_start(run: _Run, clock: _Clock) -> None:
    if run.dist.main:
        cfg = run.cfg
        schedule = f"{cfg.time_budget_min:g} min budget" if clock.budget_s else f"{cfg.epochs} epochs"
        log.info("training %s/%s on %s (%s), %d batches of %d per epoch per process, world %d, %s",
                 cfg.arch, cfg.backbone, run.device, run.precision.name, run.batches_per_epoch, cfg.batch_size,
                 run.dist.world, schedule)


def _log_epoch(run: _Run, rec: Dict[str, Any], elapsed: float, clock: _Clock) -> None:
    if run.dist.main:
        log.info("epoch %d  loss %.4f  lr %.2e  %.1f s (%.1f img/s, %d threads, load %.1f)  elapsed %.1f min%s",
                 rec["epoch"], rec["loss"], rec["lr"], rec["seconds"], rec["images"] / max(rec["seconds"], 1e-9),
                 torch.get_num_threads(), os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan"),
                 elapsed / 60, f" / {run.cfg.time_budget_min:g}" if clock.budget_s else "")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``fcn-train`` (the console script's entry point); the command line is training/cli.py."""
    from fcn_deploy.training.cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
