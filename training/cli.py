"""``fcn-train``'s command line: flags -> :class:`~fcn_deploy.training.train.TrainConfig` (over
a ``--recipe``'s values), :func:`~fcn_deploy.training.train.train`, the summary.

Entry points: ``fcn-train`` and ``python -m fcn_deploy.training.train`` (the loop's module hands
its ``main`` to this one), ``python -m fcn_deploy.training.cli``. Bad input is one ``error:``
line and exit 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple

from fcn_deploy._util import cli_parser, run_cli
from fcn_deploy.cli_kit import add_layout, hw_type
from fcn_deploy.errors import FcnError
from fcn_deploy.metrics import format_scores

# The loop's module first: it sets OMP_WAIT_POLICY before torch is imported.
from fcn_deploy.training.train import HOLDOUT_BLOCK, TrainConfig, TrainResult, train
from fcn_deploy.training import registry
from fcn_deploy.training.data import SyntheticSpec


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


def build_parser() -> argparse.ArgumentParser:
    parser = cli_parser(prog="fcn-train", description="Train an FCN for semantic segmentation.")
    unset = argparse.SUPPRESS  # unset flags stay out of the namespace, so a recipe's values apply
    parser.add_argument("--recipe", default=unset, help="named configuration (see docs/training.md); flags override it")
    parser.add_argument("--data", default=unset, help="dataset folder (not needed for --layout synthetic)")
    add_layout(parser, default=unset, dest="format", help="dataset layout (default synthetic)")
    parser.add_argument("--arch", default=unset, help="a registered architecture (default fcn8s; --list-archs shows all)")
    parser.add_argument("--backbone", default=unset, help="a backbone of that arch (default resnet18; --list-archs)")
    parser.add_argument("--list-archs", action="store_true", default=unset,
                        help="print every registered architecture with its backbones and exit")
    parser.add_argument("--epochs", type=int, default=unset, help="epochs (a cap when --time-budget is given)")
    parser.add_argument("--batch-size", type=int, default=unset, help="images per step per process (default 8)")
    parser.add_argument("--lr", type=float, default=unset, help="peak learning rate (default 2e-3)")
    parser.add_argument("--optimizer", default=unset, help="adamw | sgd")
    parser.add_argument("--weight-decay", type=float, default=unset)
    parser.add_argument("--time-budget", type=float, dest="time_budget_min", default=unset,
                        help="minutes: poly LR decay over elapsed time, stop when used")
    parser.add_argument("--crop", type=hw_type(), default=unset, help="random crop HxW (default none: whole images)")
    parser.add_argument("--scale", type=_range, dest="scale_range", default=unset, help="random scale MIN,MAX (default 1,1)")
    parser.add_argument("--no-flip", dest="hflip", action="store_false", default=unset, help="no horizontal flips")
    parser.add_argument("--class-weights", default=unset, help="median-freq | none (default none)")
    parser.add_argument("--learnable-upsampling", action="store_true", default=unset)
    parser.add_argument("--head-alignment", default=unset,
                        help="ResNet heads: aligned (default) | legacy (the pre-fix head, for comparison)")
    parser.add_argument("--channels-last", action="store_true", default=unset)
    parser.add_argument("--no-channels-last", dest="channels_last", action="store_false", default=unset)
    parser.add_argument("--holdout", type=int, default=unset,
                        help=f"hold out every K-th block of {HOLDOUT_BLOCK} train images; scored with val and used "
                        "to choose the best epoch (default 0: none)")
    parser.add_argument("--out", default=unset, help="best checkpoint path (.pt); the resumable state goes to <out>.last.pt")
    parser.add_argument("--resume", action="store_true", default=unset, help="continue from <out>.last.pt")
    parser.add_argument("--seed", type=int, default=unset)
    parser.add_argument("--device", default=unset, help="auto | cpu | cuda (default auto)")
    parser.add_argument("--amp", nargs="?", const="on", default=unset, metavar="MODE",
                        help="auto | off | on | bf16 | fp16. auto: bf16 autocast where the CPU has native bf16 "
                        "(AVX512-BF16 / AMX), fp32 otherwise; bf16 or fp16 AMP on CUDA. Bare --amp = on "
                        "(bf16 on CPU, fp16 on CUDA). Default off; the CamVid recipe uses auto")
    parser.add_argument("--threads", type=int, default=unset, help="torch CPU threads")
    parser.add_argument("--adaptive-threads", action="store_true", default=unset,
                        help="drop to 1 thread while other processes load the CPU (shared machines)")
    parser.add_argument("--val-every", type=int, default=unset, help="validate every K epochs (always at the end)")
    parser.add_argument("--val-batch-size", type=int, default=unset)
    parser.add_argument("--backbone-weights", default=unset, help="torchvision .pth state_dict for the backbone")
    parser.add_argument("--workers", type=int, default=unset, help="data loader processes (default 0)")
    parser.add_argument("--synthetic-size", type=hw_type(), default=unset, help="synthetic images HxW (default 64x64)")
    parser.add_argument("--synthetic-count", type=hw_type(), default=unset, help="synthetic train,val counts, e.g. 64x16")
    return parser


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
        spec = SyntheticSpec()
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
    for name, metrics in (("last", last), ("best", best)):
        if metrics and metrics.get("holdout"):
            lines.append(f"hold-out, {name} epoch {metrics['epoch']}: {format_scores(metrics['holdout'])}")
    return lines


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
