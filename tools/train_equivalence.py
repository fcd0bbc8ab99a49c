"""Does the training loop at a git revision train exactly what this tree trains?

    .venv/bin/python tools/train_equivalence.py 3328be8        # that revision's code vs this tree's
    .venv/bin/python tools/train_equivalence.py main --ddp     # also a 2-process gloo run (torchrun)

For a few tiny configurations (ResNet-18 FCN-8s with median-frequency weights, warm-up, scale
and crop; FCN-16s with SGD and a hold-out; bf16 autocast; a loader worker; VGG16 FCN-32s
channels-last; a model with dropout), trains once with REV's code and once with this tree's,
each in its own process, and compares the checkpoints both write (``model.pt``,
``model.last.pt``): weights, optimizer state, metrics, info, history, exactly (bit for bit;
wall-clock entries aside). Then a run of REV's interrupted after epoch 1 is resumed by this
tree's code and compared with REV's uninterrupted run: a checkpoint of the old code resumes
into the same weights.

REV's code is its ``git archive`` in a temporary folder whose ``fcn_deploy`` links to its own
``training/``, ``export/``, ``benchmarks/`` (the installed layout), first on PYTHONPATH, as
tools/mutants.py does; the whole of REV runs, not only its train.py. The configurations use
the Python API (``TrainConfig``, ``train(cfg, on_epoch_end=...)``), which both sides must have.
Exit status 0 when everything agrees, 1 when something differs (the first difference printed).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SUBPACKAGES = ("training", "export", "benchmarks")
TIMING = ("seconds", "val_seconds", "elapsed_s")  # wall-clock entries: never equal

BASE = dict(format="synthetic", synthetic=dict(num_train=12, num_val=4, height=32, width=32, seed=5),
            arch="fcn8s", backbone="resnet18", epochs=3, batch_size=4, lr=2e-3, crop=[32, 32],
            scale_range=[0.75, 1.25], class_weights="median-freq", warmup=0.1, seed=7, threads=1, progress=False)
CASES = {
    "base": {},
    "fcn16s-sgd-holdout": dict(arch="fcn16s", optimizer="sgd", holdout=2, val_every=2,
                               synthetic=dict(BASE["synthetic"], num_train=24)),
    "bf16": dict(amp="bf16", epochs=2),
    "worker-no-weights": dict(workers=1, class_weights="none", epochs=2),
    "vgg16-fcn32s-channels-last": dict(arch="fcn32s", backbone="vgg16", epochs=1, channels_last=True,
                                       synthetic=dict(BASE["synthetic"], num_train=4, num_val=2)),
    "dropout": dict(dropout=True),
}

# Runs in each side's process: python -c RUNNER SPEC.json OUTDIR
RUNNER = r"""
import json, sys, torch
from fcn_deploy.training import registry
from fcn_deploy.training.data import SyntheticSpec
from fcn_deploy.training.train import TrainConfig, train
spec, outdir = json.load(open(sys.argv[1])), sys.argv[2]
real_build = registry.build_model
class Stop(KeyboardInterrupt):
    pass
for name, kw in spec.items():
    kw = dict(kw)
    dropout, stop_after = kw.pop("dropout", False), kw.pop("stop_after", None)
    def build(*a, **k):
        m = real_build(*a, **k)
        if dropout:  # dropout before score_fr: torch's RNG then matters to the weights
            m.score_fr.register_forward_pre_hook(
                lambda mod, inp: (torch.nn.functional.dropout(inp[0], 0.5, training=mod.training),))
        return m
    registry.build_model = build
    kw["synthetic"] = SyntheticSpec(**kw["synthetic"])
    for key in ("crop", "scale_range"):
        kw[key] = tuple(kw[key])
    def stop(epoch, rec):
        if epoch == stop_after:
            raise Stop()
    try:
        train(TrainConfig(out=f"{outdir}/{name}.pt", **kw), on_epoch_end=stop)
    except Stop:
        pass
"""


def make_tree(rev: str, dest: Path) -> Path:
    archive = dest / "rev.tar"
    with open(archive, "wb") as f:
        subprocess.run(["git", "archive", rev], cwd=REPO, check=True, stdout=f)
    root = dest / "tree"
    root.mkdir()
    with tarfile.open(archive) as tar:
        tar.extractall(root, filter="data")
    for name in SUBPACKAGES:
        (root / "fcn_deploy" / name).symlink_to(Path("..") / name)
    return root


def env_for(root) -> dict:
    """REV's tree first on the path; ``None``: this tree (the venv's editable install)."""
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", OMP_NUM_THREADS="1")
    env.pop("PYTHONPATH", None)
    if root is not None:
        env["PYTHONPATH"] = str(root)
    return env


def run_side(root, spec: dict, outdir: Path) -> None:
    outdir.mkdir(parents=True, exist_ok=True)
    (outdir / "spec.json").write_text(json.dumps(spec))
    p = subprocess.run([sys.executable, "-c", RUNNER, str(outdir / "spec.json"), str(outdir)], cwd=outdir,
                       env=env_for(root), capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"error: training with {root or 'this tree'} failed: {p.stderr.strip().splitlines()[-1:]}")


def same(a, b, where: str, skip=TIMING) -> None:
    """Exact equality (tensors: dtype and values); raises AssertionError naming the first difference."""
    import torch

    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b), f"{where}: keys {list(a)} vs {list(b)}"
        for k in a:
            if k not in skip:
                same(a[k], b[k], f"{where}.{k}", skip)
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), f"{where}: {a!r} vs {b!r}"
        for i, (x, y) in enumerate(zip(a, b)):
            same(x, y, f"{where}[{i}]", skip)
    elif isinstance(a, float) and math.isnan(a):
        assert isinstance(b, float) and math.isnan(b), f"{where}: nan vs {b!r}"
    else:
        assert type(a) is type(b) and a == b, f"{where}: {a!r} vs {b!r}"


def compare_files(a: Path, b: Path, skip=TIMING) -> None:
    import torch

    ca, cb = (torch.load(p, map_location="cpu", weights_only=True) for p in (a, b))
    for ckpt in (ca, cb):  # the out path differs by construction
        if isinstance(ckpt.get("train"), dict):
            ckpt["train"]["config"].pop("out", None)
    same(ca, cb, a.name, skip)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="train_equivalence", description=__doc__.splitlines()[0])
    ap.add_argument("rev", help="the git revision whose training code to compare with this tree's")
    ap.add_argument("--ddp", action="store_true", help="also compare a 2-process gloo run (torchrun)")
    args = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="fcn-train-equivalence-"))
    try:
        old_root = make_tree(args.rev, tmp)
        spec = {name: {**BASE, **kw} for name, kw in CASES.items()}
        spec["straight"] = dict(BASE, val_every=2)
        spec["interrupted"] = dict(BASE, val_every=2, stop_after=1)
        run_side(old_root, spec, tmp / "old")
        run_side(None, {name: spec[name] for name in CASES}, tmp / "new")
        for suffix in (".pt", ".last.pt"):  # REV's interrupted run, resumed by this tree
            if (tmp / "old" / f"interrupted{suffix}").exists():  # no model.pt before the first validation
                shutil.copy(tmp / "old" / f"interrupted{suffix}", tmp / "new" / f"interrupted{suffix}")
        run_side(None, {"interrupted": dict(BASE, val_every=2, resume=True)}, tmp / "new")
        try:
            for name in CASES:
                for suffix in (".pt", ".last.pt"):
                    compare_files(tmp / "old" / f"{name}{suffix}", tmp / "new" / f"{name}{suffix}")
                print(f"same: {name}")
            for suffix in (".pt", ".last.pt"):
                compare_files(tmp / "old" / f"straight{suffix}", tmp / "new" / f"interrupted{suffix}",
                              skip=TIMING + ("resume",))
            print(f"same: {args.rev}'s run interrupted after epoch 1, resumed by this tree == {args.rev}'s straight run")
            if args.ddp:
                argv_ddp = ["--format", "synthetic", "--synthetic-size", "32x32", "--synthetic-count", "12x4",
                            "--epochs", "2", "--batch-size", "3", "--crop", "32x32", "--scale", "0.75,1.25",
                            "--class-weights", "median-freq", "--threads", "1", "--device", "cpu", "--seed", "3"]
                for side, root in (("old", old_root), ("new", None)):
                    p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                                        "--nproc_per_node", "2", "-m", "fcn_deploy.training.train", *argv_ddp,
                                        "--out", str(tmp / side / "ddp.pt")], env=env_for(root), cwd=tmp,
                                       capture_output=True, text=True)
                    if p.returncode != 0:
                        raise SystemExit(f"error: the {side} DDP run failed: {p.stderr.strip().splitlines()[-1:]}")
                for suffix in (".pt", ".last.pt"):
                    compare_files(tmp / "old" / f"ddp{suffix}", tmp / "new" / f"ddp{suffix}")
                print("same: ddp (2 processes, gloo)")
        except AssertionError as e:
            print(f"DIFFERENT: {e}")
            return 1
        return 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
