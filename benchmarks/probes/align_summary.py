"""Markdown rows from fcn-train runs: val / hold-out mean IU per validated epoch, last and best
epoch (best chosen on the hold-out), per-class IoU. Usage: python align_summary.py RUN.pt ..."""
import sys

from fcn_deploy.training.checkpoint import load_checkpoint
from fcn_deploy.training.train import last_path_for


def pct(v):
    return f"{100 * v:.2f}"


for path in sys.argv[1:]:
    last = load_checkpoint(last_path_for(path))
    st = last["train"]
    hist = st["history"]
    vals = [r for r in hist if "val" in r]
    cfg = st["config"]
    best = st["best"]
    lv = vals[-1]["val"]
    print(f"### {path}: head {cfg['head_alignment']}, amp {cfg['amp']} -> {last['info']['extra'].get('train_precision')}, "
          f"seed {cfg['seed']}, budget {cfg['time_budget_min']} min, threads {cfg['threads']}, holdout {cfg['holdout']}")
    print(f"epochs {st['epoch']}, elapsed {st['elapsed_s'] / 60:.1f} min, epoch seconds "
          + ", ".join(f"{r['seconds']:.0f}" for r in hist))
    print("| epoch | loss | val mIU | hold-out mIU | val pixel acc | val mean acc |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in vals:
        v = r["val"]
        print(f"| {r['epoch']} | {r['loss']:.4f} | {pct(v['mean_iu'])} | {pct(v['holdout']['mean_iu']) if 'holdout' in v else '-'} "
              f"| {pct(v['pixel_acc'])} | {pct(v['mean_acc'])} |")
    print(f"last epoch {lv['epoch']}: val mIU {pct(lv['mean_iu'])}; best epoch {best['epoch']} "
          f"(chosen on {best.get('selected_on')}): val mIU {pct(best['mean_iu'])}")
    for name, m in (("last val", lv), ("last hold-out", lv.get("holdout")), ("best val", best)):
        if m:
            print(f"per-class IoU, {name}: " + ", ".join(f"{k} {pct(v)}" for k, v in m["per_class_iu"].items()))
    print()
