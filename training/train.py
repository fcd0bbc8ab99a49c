"""``fcn-train``: train an FCN, validate with the paper's four metrics, save checkpoints, resume.

Files written for ``--out model.pt``:

- ``model.pt``: the best weights so far by validation mean IU (``metrics`` holds their scores);
- ``model.last.pt``: the state after the last finished epoch, with the full resume state
  (optimizer, epoch, step, elapsed time, class weights, history). ``--resume`` continues from it.

Both are ordinary checkpoints (``training/checkpoint.py``), written atomically, loadable with
``torch.load(weights_only=True)``.

Reproducibility: the image order of epoch ``e`` comes from ``DistributedSampler(seed, epoch=e)``,
the augmentation of batch ``b`` from ``np.random.default_rng([seed, e, rank, b])`` and torch's
RNG (dropout) is re-seeded with ``seed`` and ``e`` at every epoch start. A run interrupted
(Ctrl-C, kill) after epoch ``k`` and resumed therefore ends with exactly the weights of an
uninterrupted run, when the schedule is over epochs. With ``--time-budget`` the learning rate
follows elapsed wall time, which no rerun reproduces bit for bit; resume then continues from the
stored elapsed time.

Precision (``--amp``): ``auto`` (the CamVid recipe's) trains with bf16 autocast when the CPU
computes bf16 in hardware (``torch.cpu._is_amx_tile_supported()`` / ``_is_avx512_bf16_supported()``:
Sapphire Rapids and later, Zen 4 and later) and in fp32 where bf16 would be emulated (an order of
magnitude slower); on CUDA, bf16 where the device supports it, else fp16 with a grad scaler
(unverified on hardware). The decision and its reason are logged at start and recorded in the
checkpoint (``info.extra["train_precision"]``, ``train.config.amp``). Validation always runs in
fp32: its scores are those the fp32 export gives.

Reporting: ``fcn-train`` prints the val scores of the *last* epoch first (no selection involved)
and the best epoch's beside them. The best epoch is chosen on a hold-out part of train when
``--holdout K`` is given (every K-th block of 10 consecutive train images, scored at every
validation), else on val itself, which the summary then calls optimistic. ``model.pt`` (best)
carries ``metrics.last_epoch``, ``model.last.pt`` carries ``metrics.best_epoch``.

Distributed: run the same script under ``torchrun --nproc_per_node N``; it reads
``WORLD_SIZE``/``RANK``/``LOCAL_RANK``, uses gloo on CPU and nccl on CUDA, shards the images with
``DistributedSampler`` (``--batch-size`` is per process) and only rank 0 writes files and prints.
"""

from __future__ import annotations

import argparse
import dataclasses
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

import numpy as np
import torch
import torch.nn.functional as F

from fcn_deploy._util import check_writable, run_cli
from fcn_deploy.errors import FcnError, unknown_name
from fcn_deploy.metrics import ConfusionMatrix, format_scores
from fcn_deploy.modelinfo import ModelInfo

from fcn_deploy.training import data as D
from fcn_deploy.training.checkpoint import load_checkpoint, save_checkpoint
from fcn_deploy.training import registry
from fcn_deploy.training.models import load_backbone_weights

log = logging.getLogger(__name__)

OPTIMIZERS = ("adamw", "sgd")
# --amp: "auto" = bf16 autocast where the CPU runs bf16 natively (AVX512-BF16 or AMX), fp32 where
# it would be emulated; on CUDA bf16 where supported, else fp16 with a grad scaler (unverified
# on hardware). "on" = the earlier --amp: bf16 on CPU, fp16 on CUDA. "off" = fp32.
AMP_MODES = ("auto", "off", "on", "bf16", "fp16")
HEAD_ALIGNMENTS = ("aligned", "legacy")
HOLDOUT_BLOCK = 10  # --holdout K holds out every K-th block of this many consecutive train images
CLASS_WEIGHTS = ("median-freq", "none")
DEVICES = ("auto", "cpu", "cuda")


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
    synthetic: D.SyntheticSpec = field(default_factory=D.SyntheticSpec)
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
        if self.format not in D.FORMATS:
            raise unknown_name("dataset format", self.format, D.FORMATS)
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
    p = Path(out)
    return p.with_name(p.stem + ".last" + p.suffix)


# ------------------------------------------------------------------------------------------------
# Distributed helpers
# ------------------------------------------------------------------------------------------------


@dataclass
class Dist:
    world: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def _init_dist(device_type: str) -> Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    import torch.distributed as dist

    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", str(rank)))
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    return Dist(world=world, rank=rank, local_rank=local)


def _bcast_floats(values: Sequence[float], d: Dist) -> List[float]:
    if d.world == 1:
        return list(values)
    import torch.distributed as dist

    t = torch.tensor(list(values), dtype=torch.float64)
    dist.broadcast(t, 0)
    return t.tolist()


def _allreduce_(t: torch.Tensor, d: Dist) -> torch.Tensor:
    if d.world > 1:
        import torch.distributed as dist

        dist.all_reduce(t)
    return t


def _barrier(d: Dist) -> None:
    if d.world > 1:
        import torch.distributed as dist

        dist.barrier()


# ------------------------------------------------------------------------------------------------
# Schedule
# ------------------------------------------------------------------------------------------------


def lr_at(cfg: TrainConfig, progress: float) -> float:
    """Poly decay ``lr * (1 - progress) ** power`` with optional linear warm-up; progress in [0, 1]."""
    p = min(max(progress, 0.0), 1.0)
    lr = cfg.lr * (1.0 - p) ** cfg.poly_power
    if cfg.warmup > 0 and p < cfg.warmup:
        lr *= max(p / cfg.warmup, 0.01)
    return lr


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
def evaluate(model: torch.nn.Module, ds: D.SegDataset, convention, *, device: torch.device,
             batch_size: int = 4, amp: Any = False, channels_last: bool = False,
             dist_info: Optional[Dist] = None, progress: bool = False) -> Dict[str, Any]:
    """Four metrics of ``model`` on ``ds`` at full image size (confusion matrix summed over ranks)."""
    d = dist_info or Dist()
    was_training = model.training
    model.eval()
    cm = ConfusionMatrix(ds.num_classes)
    mine = list(range(d.rank, len(ds), d.world))
    batches = D.eval_batches(ds, batch_size, mine)
    it = batches
    if progress:
        from tqdm import tqdm

        it = tqdm(batches, desc="val", leave=False)
    for b in it:
        x, y = D.make_eval_batch(ds, b, convention)
        x = x.to(device)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with _autocast(device, amp):
            out = model(x)
        pred = out.argmax(1).cpu().numpy()
        cm.update(y.numpy(), pred)
    hist = torch.from_numpy(cm.hist)
    _allreduce_(hist, d)
    cm.hist = hist.numpy()
    if was_training:
        model.train()
    return cm.scores(ds.class_names)


def _autocast(device: torch.device, amp):
    """``amp``: False/None (off), True (bf16 on CPU, fp16 on CUDA) or a torch dtype."""
    if amp is None or amp is False:
        return torch.autocast(device.type, enabled=False)
    if isinstance(amp, torch.dtype):
        return torch.autocast(device.type, dtype=amp)
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return torch.autocast("cpu", dtype=torch.bfloat16)


def cpu_bf16_native() -> Tuple[bool, str]:
    """Whether this CPU computes bf16 in hardware (AMX tiles or AVX512-BF16), and which; oneDNN
    emulates bf16 elsewhere, an order of magnitude slower than fp32 on the AVX2 EPYC measured."""
    for name, label in (("_is_amx_tile_supported", "AMX"), ("_is_avx512_bf16_supported", "avx512_bf16")):
        fn = getattr(torch.cpu, name, None)
        try:
            if fn is not None and fn():
                return True, label
        except Exception:  # a private torch API: absent or failing means "not known to be native"
            continue
    return False, "no AVX512-BF16 or AMX: bf16 would be emulated"


@dataclass(frozen=True)
class Precision:
    """What ``--amp`` and ``--channels-last`` resolved to on this device, and why."""

    dtype: Optional[torch.dtype]  # autocast dtype; None = fp32
    channels_last: bool
    scaler: bool  # fp16 on CUDA needs a grad scaler
    reason: str

    @property
    def name(self) -> str:
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]

    def describe(self) -> str:
        return f"{self.name} {'autocast ' if self.dtype else ''}{'channels-last' if self.channels_last else 'NCHW'} ({self.reason})"

    def record(self) -> Dict[str, Any]:
        return {"precision": self.name, "channels_last": self.channels_last, "reason": self.reason}


# Whether channels-last goes with bf16 when --channels-last is left to the decision (None): it
# measured no faster than NCHW for the ResNet-18 FCN-8s train step on a CPU with native bf16
# (benchmarks/RESULTS.md, "Training from scratch"). So NCHW.
_CL_WITH_BF16 = False


def resolve_precision(amp: str, device: torch.device, channels_last: Optional[bool]) -> Precision:
    """Decide the training precision at start (a capability check, no timing run)."""
    if isinstance(amp, bool):
        amp = "on" if amp else "off"
    if amp not in AMP_MODES:
        raise unknown_name("amp mode", amp, AMP_MODES)
    dtype, reason = None, "--amp off"
    if device.type == "cuda":  # unverified on hardware
        bf16_ok = bool(torch.cuda.is_bf16_supported())
        if amp == "auto":
            dtype, reason = (torch.bfloat16, "auto: CUDA device supports bf16") if bf16_ok else (
                torch.float16, "auto: CUDA without bf16, fp16 with a grad scaler")
        elif amp in ("on", "fp16"):
            dtype, reason = torch.float16, f"--amp {amp}: fp16 with a grad scaler"
        elif amp == "bf16":
            if not bf16_ok:
                raise FcnError("--amp bf16: this CUDA device does not support bf16; use --amp fp16 or auto")
            dtype, reason = torch.bfloat16, "--amp bf16"
    else:
        native, how = cpu_bf16_native()
        if amp == "fp16":
            raise FcnError("--amp fp16 is for CUDA; on a CPU use --amp bf16 or auto")
        if amp == "auto":
            dtype, reason = (torch.bfloat16, f"auto: CPU has native {how}") if native else (None, f"auto: {how}")
        elif amp in ("on", "bf16"):
            dtype, reason = torch.bfloat16, f"--amp {amp}" + ("" if native else f" ({how}: slow)")
    if channels_last is None:
        cl = bool(dtype is torch.bfloat16 and device.type == "cpu" and _CL_WITH_BF16)
    else:
        cl = bool(channels_last)
    return Precision(dtype=dtype, channels_last=cl, scaler=dtype is torch.float16 and device.type == "cuda",
                     reason=reason)


# ------------------------------------------------------------------------------------------------
# Training
# ------------------------------------------------------------------------------------------------


def _model_info(cfg: TrainConfig, ds: D.SegDataset) -> ModelInfo:
    order, scale, mean, std = registry.default_convention(cfg.arch, cfg.backbone)
    return ModelInfo(
        arch=cfg.arch, backbone=cfg.backbone, num_classes=ds.num_classes, class_names=ds.class_names,
        palette=ds.palette, channel_order=order, scale=scale, mean=mean, std=std,
        ignore_index=ds.ignore_index,
        extra={"dataset": ds.name, "recipe": cfg.recipe or ""},
    )


def _metrics_entry(scores: Dict[str, Any], epoch: int) -> Dict[str, Any]:
    out = {k: float(scores[k]) for k in ("pixel_acc", "mean_acc", "mean_iu", "fw_iu")}
    out["per_class_iu"] = {k: (float("nan") if v is None else float(v)) for k, v in scores["per_class_iu"].items()}
    out["epoch"] = int(epoch)
    return out


def _config_dict(cfg: TrainConfig) -> Dict[str, Any]:
    d = dataclasses.asdict(cfg)
    d["crop"] = list(cfg.crop) if cfg.crop else None
    d["scale_range"] = list(cfg.scale_range)
    return d


_RESUME_KEYS = ("format", "arch", "backbone", "seed", "batch_size", "crop", "scale_range", "learnable_upsampling",
                "optimizer", "class_weights", "head_alignment", "holdout")


class _Subset(D.SegDataset):
    """Some samples of a dataset (the hold-out split of train, or train without it)."""

    def __init__(self, base: D.SegDataset, indices: Sequence[int], split: str):
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
    hs = set(held)
    return [i for i in range(n) if i not in hs], held


def train(cfg: TrainConfig, *, on_epoch_end: Optional[Callable[[int, Dict[str, Any]], None]] = None) -> TrainResult:
    """Train per ``cfg``; returns where the checkpoints are and the metrics.

    ``on_epoch_end(epoch, record)`` is called on rank 0 after each epoch's checkpoints are
    written (the tests interrupt a run from it).
    """
    cfg.validate()
    device = _resolve_device(cfg.device)
    d = _init_dist(device.type)
    if d.world > 1 and device.type == "cuda":
        device = torch.device("cuda", d.local_rank)
        torch.cuda.set_device(device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    max_threads = cfg.threads or torch.get_num_threads()
    out = Path(cfg.out)
    last = last_path_for(out)
    if d.main:
        # Fail now, not after the first epoch: both files must be creatable before any data is read.
        check_writable(out)
        check_writable(last)

    # -- data ---------------------------------------------------------------------------------
    train_ds = D.open_dataset(cfg.format, cfg.data, "train", synthetic=cfg.synthetic)
    val_ds = D.open_dataset(cfg.format, cfg.data, "val", synthetic=cfg.synthetic)
    t0 = time.perf_counter()
    train_ds.preload()
    val_ds.preload()
    if train_ds.class_names != val_ds.class_names:
        raise FcnError("train and val splits disagree on the class list")
    holdout_ds: Optional[D.SegDataset] = None
    if cfg.holdout:
        kept, held = holdout_split(len(train_ds), cfg.holdout)
        if not held or not kept:
            raise FcnError(f"--holdout {cfg.holdout}: {len(train_ds)} train images leave no hold-out block "
                           f"(blocks of {HOLDOUT_BLOCK}) or nothing to train on")
        holdout_ds = _Subset(train_ds, held, "holdout")
        train_ds = _Subset(train_ds, kept, "train")
    if d.main:
        log.info("data: %s train %d / val %d images%s, %d classes (ignore %d), decoded in %.1f s",
                 train_ds.name, len(train_ds), len(val_ds),
                 f" / hold-out {len(holdout_ds)} (every {cfg.holdout}th block of {HOLDOUT_BLOCK} train images)"
                 if holdout_ds is not None else "",
                 train_ds.num_classes, train_ds.ignore_index, time.perf_counter() - t0)
    convention = registry.default_convention(cfg.arch, cfg.backbone)
    info = _model_info(cfg, train_ds)

    # -- model --------------------------------------------------------------------------------
    torch.manual_seed(cfg.seed)
    spec_options = registry.get_arch(cfg.arch).options
    options = {}
    if "learnable_upsampling" in spec_options:
        options["learnable_upsampling"] = cfg.learnable_upsampling
    if "head_alignment" in spec_options:
        options["head_alignment"] = cfg.head_alignment
    model = registry.build_model(cfg.arch, cfg.backbone, train_ds.num_classes, **options)
    prec = resolve_precision(cfg.amp, device, cfg.channels_last)
    info = dataclasses.replace(info, extra={**info.extra, "train_precision": prec.name})
    if d.main:
        log.info("precision: %s", prec.describe())
    if cfg.backbone_weights:
        loaded = load_backbone_weights(model, cfg.backbone_weights)
        if d.main:
            log.info("loaded %d backbone tensors from %s", len(loaded), cfg.backbone_weights)
    model.to(device)
    if prec.channels_last:
        model = model.to(memory_format=torch.channels_last)
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "adamw":
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    else:
        opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    scaler = torch.amp.GradScaler("cuda") if prec.scaler else None

    if cfg.class_weights == "median-freq":
        weights = torch.from_numpy(train_ds.median_frequency_weights())
    else:
        weights = None

    # -- resume -------------------------------------------------------------------------------
    start_epoch, step, elapsed = 0, 0, 0.0
    history: List[Dict[str, Any]] = []
    best: Dict[str, Any] = {}
    finished = False
    stopped_by_budget = False
    if cfg.resume:
        if not last.is_file():
            raise FcnError(f"nothing to resume: {last} does not exist")
        ck = load_checkpoint(last)
        st = ck.get("train")
        if not isinstance(st, dict):
            raise FcnError(f"{last} holds no resume state")
        old = dict(st.get("config", {}))
        if cfg.backbone != "vgg16":
            old.setdefault("head_alignment", "legacy")  # a run from before the aligned ResNet head
        now = _config_dict(cfg)
        diff = [k for k in _RESUME_KEYS if k in old and old[k] != now[k]]
        if diff:
            k = diff[0]
            raise FcnError(f"cannot resume {last}: {k} was {old[k]!r}, now {now[k]!r}")
        getattr(model, "module", model).load_state_dict(ck["state_dict"])
        opt.load_state_dict(st["optimizer"])
        if scaler is not None and st.get("scaler"):
            scaler.load_state_dict(st["scaler"])
        start_epoch, step, elapsed = int(st["epoch"]), int(st["step"]), float(st["elapsed_s"])
        history = list(st.get("history", []))
        best = dict(st.get("best", {}))
        finished = bool(st.get("finished", False))
        stopped_by_budget = bool(st.get("stopped_by_budget", False))
        if "class_weights" in st and st["class_weights"] is not None:
            weights = st["class_weights"].float()
        if d.main:
            log.info("resumed from %s after epoch %d (%.1f min elapsed)", last, start_epoch, elapsed / 60)

    crit_weight = weights.to(device) if weights is not None else None

    ddp_model = model
    if d.world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        ddp_model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)

    aug = D.AugmentConfig(crop=cfg.crop, scale_range=cfg.scale_range, hflip=cfg.hflip)
    sampler = torch.utils.data.DistributedSampler(
        list(range(len(train_ds))), num_replicas=d.world, rank=d.rank, shuffle=True, seed=cfg.seed
    )
    tty = sys.stderr.isatty() if cfg.progress is None else cfg.progress
    budget_s = cfg.time_budget_min * 60.0 if cfg.time_budget_min else None
    n_batches = math.ceil(math.ceil(len(train_ds) / d.world) / cfg.batch_size)
    total_steps = n_batches * cfg.epochs
    last_scores: Dict[str, Any] = dict(history[-1].get("val", {})) if history and history[-1].get("val") else {}

    def progress_now(elapsed_now: float) -> float:
        by_steps = step / max(total_steps, 1)
        if budget_s is not None:
            # Whichever ends first: the time budget or the epoch cap.
            return max(elapsed_now / budget_s, by_steps)
        return by_steps

    epoch = start_epoch
    run_t0 = time.perf_counter() - elapsed  # wall clock so that now - run_t0 == total elapsed
    if d.main:
        sched = f"{cfg.time_budget_min:g} min budget" if budget_s else f"{cfg.epochs} epochs"
        log.info("training %s/%s on %s (%s), %d batches of %d per epoch per process, world %d, %s",
                 cfg.arch, cfg.backbone, device, prec.name, n_batches, cfg.batch_size,
                 d.world, sched)
    while not finished:
        if epoch >= cfg.epochs:
            finished = True
            break
        sampler.set_epoch(epoch)
        order = list(sampler)
        batches = [order[i:i + cfg.batch_size] for i in range(0, len(order), cfg.batch_size)]
        bds = D.BatchDataset(train_ds, batches, seed=cfg.seed, epoch=epoch, rank=d.rank, aug=aug,
                             convention=convention)
        loader = torch.utils.data.DataLoader(bds, batch_size=None, shuffle=False, num_workers=cfg.workers,
                                             persistent_workers=False)
        # Torch's RNG is a function of (seed, epoch) alone, so the resume state stores no RNG state.
        torch.manual_seed(cfg.seed * 100003 + epoch)
        ddp_model.train()
        ep_t0 = time.perf_counter()
        loss_sum = torch.zeros(2, dtype=torch.float64)
        bar = None
        if d.main and tty:
            from tqdm import tqdm

            bar = tqdm(total=len(batches), desc=f"epoch {epoch + 1}", leave=False, dynamic_ncols=True)
        last_line = time.perf_counter()
        lr = opt.param_groups[0]["lr"]  # an epoch the budget ends before its first step records the last lr set, not the peak
        for x, y in loader:
            now_elapsed = time.perf_counter() - run_t0
            prog, = _bcast_floats([progress_now(now_elapsed)], d)
            if budget_s is not None and prog >= 1.0:
                stopped_by_budget = True
                break
            if cfg.adaptive_threads and step % 10 == 0:
                _adapt_threads(max_threads)
            lr = lr_at(cfg, prog)
            for g in opt.param_groups:
                g["lr"] = lr
            x = x.to(device, non_blocking=True)
            y = y.to(device, non_blocking=True)
            if prec.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with _autocast(device, prec.dtype):
                logits = ddp_model(x)
            loss = F.cross_entropy(logits.float(), y, weight=crit_weight, ignore_index=train_ds.ignore_index)
            opt.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
            else:
                loss.backward()
                opt.step()
            step += 1
            lv = float(loss.detach())
            if not math.isfinite(lv):
                raise FcnError(f"loss became {lv} at epoch {epoch + 1}, step {step}: lower --lr")
            loss_sum += torch.tensor([lv * len(y), len(y)], dtype=torch.float64)
            if bar is not None:
                bar.set_postfix(loss=f"{lv:.3f}", lr=f"{lr:.2e}")
                bar.update(1)
            elif d.main and time.perf_counter() - last_line > 300:
                last_line = time.perf_counter()
                log.info("  epoch %d: %d/%d batches, loss %.4f", epoch + 1, int(loss_sum[1] // cfg.batch_size),
                         len(batches), loss_sum[0] / max(loss_sum[1], 1))
        if bar is not None:
            bar.close()
        _allreduce_(loss_sum, d)
        ep_s = time.perf_counter() - ep_t0
        done_epoch = epoch + 1
        epoch_images = int(loss_sum[1].item())
        rec: Dict[str, Any] = {
            "epoch": done_epoch, "loss": float(loss_sum[0] / max(loss_sum[1], 1)), "lr": float(lr),
            "seconds": float(ep_s), "images": epoch_images, "partial": bool(stopped_by_budget),
        }
        elapsed = time.perf_counter() - run_t0
        budget_left = budget_s is None or elapsed < budget_s
        finished = done_epoch >= cfg.epochs or (budget_s is not None and (stopped_by_budget or not budget_left))
        finished = bool(_bcast_floats([float(finished)], d)[0])  # rank 0's clock decides for all
        do_val = finished or (done_epoch % cfg.val_every == 0)
        if d.main:
            log.info("epoch %d  loss %.4f  lr %.2e  %.1f s (%.1f img/s, %d threads, load %.1f)  elapsed %.1f min%s",
                     done_epoch, rec["loss"], lr, ep_s, epoch_images / max(ep_s, 1e-9), torch.get_num_threads(),
                     os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan"), elapsed / 60,
                     f" / {cfg.time_budget_min:g}" if budget_s else "")
        if do_val:
            # Validation runs in fp32 whatever the training precision: the scores are those of the
            # weights as the fp32 export runs them.
            v_t0 = time.perf_counter()
            scores = evaluate(model, val_ds, convention, device=device, batch_size=cfg.val_batch_size,
                              channels_last=prec.channels_last, dist_info=d, progress=d.main and tty)
            entry = _metrics_entry(scores, done_epoch)
            select = entry
            if holdout_ds is not None:
                h_scores = evaluate(model, holdout_ds, convention, device=device, batch_size=cfg.val_batch_size,
                                    channels_last=prec.channels_last, dist_info=d, progress=d.main and tty)
                select = _metrics_entry(h_scores, done_epoch)
                entry["holdout"] = select
            entry["selected_on"] = "holdout" if holdout_ds is not None else "val"
            rec["val"] = entry
            rec["val_seconds"] = float(time.perf_counter() - v_t0)
            last_scores = entry
            ref = best.get("holdout", best) if best else {}
            improved = not best or select["mean_iu"] > ref.get("mean_iu", -1) or (
                math.isnan(ref.get("mean_iu", float("nan"))))
            if d.main:
                log.info("  val epoch %d: %s (%.1f s)%s", done_epoch, format_scores(scores), rec["val_seconds"],
                         "  * best" + (" on the hold-out" if holdout_ds is not None else "") if improved else "")
                if holdout_ds is not None:
                    log.info("  hold-out epoch %d: %s", done_epoch, format_scores(h_scores))
            if improved:
                best = entry
                if d.main:
                    save_checkpoint(out, model, info, metrics=best)
        elapsed = time.perf_counter() - run_t0
        history.append(rec)
        epoch = done_epoch
        if d.main:
            state = {
                "config": _config_dict(cfg),
                "optimizer": opt.state_dict(),
                "scaler": scaler.state_dict() if scaler is not None else None,
                "epoch": epoch, "step": step, "elapsed_s": float(elapsed),
                "history": history, "best": best, "finished": finished,
                "stopped_by_budget": stopped_by_budget,
                "class_weights": weights.clone() if weights is not None else None,
                "world_size": d.world,
            }
            last_metrics = dict(last_scores)
            if best:
                last_metrics["best_epoch"] = {k: v for k, v in best.items() if k != "per_class_iu"}
            save_checkpoint(last, model, info, metrics=last_metrics, train_state=state)
        _barrier(d)
        if d.main and on_epoch_end is not None:
            on_epoch_end(epoch, rec)

    if d.main and not out.exists():
        # No validation ever improved (e.g. resumed a finished run whose best is gone): write the last weights.
        save_checkpoint(out, model, info, metrics=last_scores)
    if d.main and last_scores:
        _add_last_epoch(out, last_scores)
    elapsed = time.perf_counter() - run_t0
    if d.main:
        log.info("wrote %s (best) and %s (last, resumable); %.1f min", out, last, elapsed / 60)
    return TrainResult(best_path=str(out), last_path=str(last), best_metrics=best, final_metrics=last_scores,
                       history=history, epochs_done=epoch, elapsed_s=float(elapsed),
                       stopped_by_budget=stopped_by_budget)


# ------------------------------------------------------------------------------------------------
# CLI
# ------------------------------------------------------------------------------------------------


def _size(text: str) -> Tuple[int, int]:
    try:
        parts = [int(v) for v in text.lower().replace("x", ",").split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW, got {text!r}") from None
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or min(parts) < 1:
        raise argparse.ArgumentTypeError(f"expected HxW, got {text!r}")
    return parts[0], parts[1]


def _range(text: str) -> Tuple[float, float]:
    try:
        parts = [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected MIN,MAX, got {text!r}") from None
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(f"expected MIN,MAX, got {text!r}")
    return parts[0], parts[1]


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2, like FcnError
        raise FcnError(message)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="fcn-train", description="Train an FCN for semantic segmentation.")
    S = argparse.SUPPRESS  # unset flags stay out of the namespace, so a recipe's values apply
    p.add_argument("--recipe", default=S, help="named configuration (see docs/training.md); flags override it")
    p.add_argument("--data", default=S, help="dataset folder (not needed for --format synthetic)")
    p.add_argument("--format", default=S, help="camvid | voc | folders | synthetic (default synthetic)")
    p.add_argument("--arch", default=S, help="a registered architecture (default fcn8s; --list-archs shows all)")
    p.add_argument("--backbone", default=S, help="a backbone of that arch (default resnet18; --list-archs)")
    p.add_argument("--list-archs", action="store_true", default=S,
                   help="print every registered architecture with its backbones and exit")
    p.add_argument("--epochs", type=int, default=S, help="epochs (a cap when --time-budget is given)")
    p.add_argument("--batch-size", type=int, default=S, help="images per step per process (default 8)")
    p.add_argument("--lr", type=float, default=S, help="peak learning rate (default 2e-3)")
    p.add_argument("--optimizer", default=S, help="adamw | sgd")
    p.add_argument("--weight-decay", type=float, default=S)
    p.add_argument("--time-budget", type=float, dest="time_budget_min", default=S,
                   help="minutes: poly LR decay over elapsed time, stop when used")
    p.add_argument("--crop", type=_size, default=S, help="random crop HxW (default none: whole images)")
    p.add_argument("--scale", type=_range, dest="scale_range", default=S, help="random scale MIN,MAX (default 1,1)")
    p.add_argument("--no-flip", dest="hflip", action="store_false", default=S, help="no horizontal flips")
    p.add_argument("--class-weights", default=S, help="median-freq | none (default none)")
    p.add_argument("--learnable-upsampling", action="store_true", default=S)
    p.add_argument("--head-alignment", default=S,
                   help="ResNet heads: aligned (default) | legacy (the pre-fix head, for comparison)")
    p.add_argument("--channels-last", action="store_true", default=S)
    p.add_argument("--no-channels-last", dest="channels_last", action="store_false", default=S)
    p.add_argument("--holdout", type=int, default=S,
                   help=f"hold out every K-th block of {HOLDOUT_BLOCK} train images; scored with val and used "
                        "to choose the best epoch (default 0: none)")
    p.add_argument("--out", default=S, help="best checkpoint path (.pt); the resumable state goes to <out>.last.pt")
    p.add_argument("--resume", action="store_true", default=S, help="continue from <out>.last.pt")
    p.add_argument("--seed", type=int, default=S)
    p.add_argument("--device", default=S, help="auto | cpu | cuda (default auto)")
    p.add_argument("--amp", nargs="?", const="on", default=S, metavar="MODE",
                   help="auto | off | on | bf16 | fp16. auto: bf16 autocast where the CPU has native bf16 "
                        "(AVX512-BF16 / AMX), fp32 otherwise; bf16 or fp16 AMP on CUDA. Bare --amp = on "
                        "(bf16 on CPU, fp16 on CUDA). Default off; the CamVid recipe uses auto")
    p.add_argument("--threads", type=int, default=S, help="torch CPU threads")
    p.add_argument("--adaptive-threads", action="store_true", default=S,
                   help="drop to 1 thread while other processes load the CPU (shared machines)")
    p.add_argument("--val-every", type=int, default=S, help="validate every K epochs (always at the end)")
    p.add_argument("--val-batch-size", type=int, default=S)
    p.add_argument("--backbone-weights", default=S, help="torchvision .pth state_dict for the backbone")
    p.add_argument("--workers", type=int, default=S, help="data loader processes (default 0)")
    p.add_argument("--synthetic-size", type=_size, default=S, help="synthetic images HxW (default 64x64)")
    p.add_argument("--synthetic-count", type=_size, default=S, help="synthetic train,val counts, e.g. 64x16")
    return p


def config_from_args(argv: Optional[Sequence[str]] = None) -> TrainConfig:
    from fcn_deploy.training.recipes import get_recipe

    args = vars(build_parser().parse_args(argv))
    values: Dict[str, Any] = {}
    args.pop("list_archs", None)
    recipe = args.pop("recipe", None)
    if recipe:
        values.update(get_recipe(recipe))
        values["recipe"] = recipe
    syn_size = args.pop("synthetic_size", None)
    syn_count = args.pop("synthetic_count", None)
    values.update(args)
    if "out" not in values:
        raise FcnError("--out is required (the checkpoint to write, e.g. model.pt)")
    if values.get("time_budget_min") is not None and "epochs" not in args and not recipe:
        values["epochs"] = 10_000  # the budget decides
    if syn_size or syn_count:
        spec = D.SyntheticSpec()
        if syn_size:
            spec = dataclasses.replace(spec, height=syn_size[0], width=syn_size[1])
        if syn_count:
            spec = dataclasses.replace(spec, num_train=syn_count[0], num_val=syn_count[1])
        values["synthetic"] = spec
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    cfg = TrainConfig(**{k: v for k, v in values.items() if k in fields})
    cfg.validate()
    return cfg


def summary_lines(res: TrainResult) -> List[str]:
    """The run's headline: val at the last epoch (no selection), then the best epoch beside it
    (chosen on the hold-out when there is one, else on val itself: optimistic), then the hold-out."""
    lines = []
    last, best = res.final_metrics, res.best_metrics
    if last:
        lines.append(f"val, last epoch {last['epoch']}: {format_scores(last)}")
    if best:
        on = best.get("selected_on", "val")
        note = "chosen on the hold-out" if on == "holdout" else "chosen on val itself, so optimistic"
        lines.append(f"val, best epoch {best['epoch']} ({note}): {format_scores(best)}")
    for name, m in (("last", last), ("best", best)):
        if m and m.get("holdout"):
            lines.append(f"hold-out, {name} epoch {m['epoch']}: {format_scores(m['holdout'])}")
    return lines


def _add_last_epoch(out: Path, last_scores: Dict[str, Any]) -> None:
    """Store the last epoch's val scores beside the best checkpoint's own (``metrics.last_epoch``)."""
    from fcn_deploy._util import atomic_path

    ck = load_checkpoint(out)
    ck["metrics"] = dict(ck.get("metrics") or {})
    ck["metrics"]["last_epoch"] = {k: v for k, v in last_scores.items() if k != "per_class_iu"}
    with atomic_path(out) as tmp:
        torch.save(ck, tmp)


def _main(argv: Optional[Sequence[str]]) -> int:
    if "--list-archs" in (sys.argv[1:] if argv is None else list(argv)):
        print(registry.describe())
        return 0
    cfg = config_from_args(argv)
    res = train(cfg)
    if int(os.environ.get("RANK", "0")) == 0:
        for line in summary_lines(res):
            print(line)
        print(f"checkpoint: {res.best_path}  (resumable: {res.last_path})")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
