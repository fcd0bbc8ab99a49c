"""The FCN paper's four metrics (score.py in the reference code), in numpy only.

One confusion matrix ``hist[true, pred]`` accumulated with ``np.bincount(n*t+p)``; pixels whose
label is the ignore index (or outside [0, n)) are excluded.
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence

import numpy as np


def fast_hist(label: np.ndarray, pred: np.ndarray, n: int) -> np.ndarray:
    """Confusion matrix (n x n, int64) of one label map against one prediction."""
    label = np.asarray(label).reshape(-1).astype(np.int64)
    pred = np.asarray(pred).reshape(-1).astype(np.int64)
    if label.shape != pred.shape:
        raise ValueError(f"label has {label.size} pixels, prediction {pred.size}")
    k = (label >= 0) & (label < n)
    return np.bincount(n * label[k] + pred[k], minlength=n * n).reshape(n, n)


class ConfusionMatrix:
    """Accumulates a confusion matrix over a dataset; labels >= n (the ignore index) are skipped."""

    def __init__(self, num_classes: int):
        self.n = int(num_classes)
        self.hist = np.zeros((self.n, self.n), dtype=np.int64)

    def update(self, label: np.ndarray, pred: np.ndarray) -> None:
        self.hist += fast_hist(label, pred, self.n)

    def merge(self, other: "ConfusionMatrix") -> None:
        self.hist += other.hist

    def scores(self, class_names: Optional[Sequence[str]] = None) -> Dict[str, object]:
        return scores_from_hist(self.hist, class_names)


def scores_from_hist(hist: np.ndarray, class_names: Optional[Sequence[str]] = None) -> Dict[str, object]:
    """Pixel acc, mean acc, mean IU, frequency-weighted IU (as fractions), plus per-class IoU.

    Classes absent from both label and prediction get NaN IoU and are left out of the means,
    as in the reference ``np.nanmean``.
    """
    hist = np.asarray(hist, dtype=np.float64)
    total = hist.sum()
    diag = np.diag(hist)
    with np.errstate(divide="ignore", invalid="ignore"):
        acc = diag.sum() / total if total else float("nan")
        per_class_acc = diag / hist.sum(1)
        iu = diag / (hist.sum(1) + hist.sum(0) - diag)
        freq = hist.sum(1) / total if total else np.zeros(len(diag))
    valid = freq > 0
    fwiou = float((freq[valid] * iu[valid]).sum()) if total else float("nan")
    names = list(class_names) if class_names is not None else [str(i) for i in range(len(diag))]
    return {
        "pixel_acc": float(acc),
        "mean_acc": float(np.nanmean(per_class_acc)) if np.isfinite(per_class_acc).any() else float("nan"),
        "mean_iu": float(np.nanmean(iu)) if np.isfinite(iu).any() else float("nan"),
        "fw_iu": fwiou,
        "per_class_iu": {name: (None if np.isnan(v) else float(v)) for name, v in zip(names, iu)},
    }


def format_scores(s: Dict[str, object]) -> str:
    """One line with the four metrics in percent."""
    return (
        f"pixel acc {100 * s['pixel_acc']:.2f}  mean acc {100 * s['mean_acc']:.2f}  "
        f"mean IU {100 * s['mean_iu']:.2f}  fw IU {100 * s['fw_iu']:.2f}"
    )
