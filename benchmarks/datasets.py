"""Labelled images for fcn-eval and fcn-bench: the torch-free readers of :mod:`fcn_deploy.datasets`.

:func:`open_samples` returns the same dataset object fcn-train reads (layouts, checks, error
messages, the ``synthetic`` set), uncached, whether or not torch is installed: ``len()``,
``get(i) -> (HxWx3 uint8 RGB, HxW labels)``, ``describe(i)``, ``class_names``,
``ignore_index``. See :mod:`fcn_deploy.datasets` for the layouts.
"""

from __future__ import annotations

from typing import Optional, Sequence

from fcn_deploy.datasets import FORMATS, SegDataset, open_dataset

__all__ = ["FORMATS", "open_samples"]


def open_samples(data, fmt: str, split: str = "val", *,
                 class_names: Optional[Sequence[str]] = None) -> SegDataset:
    """The labelled split ``split`` of ``data`` in layout ``fmt``, decoded on demand (no cache)."""
    return open_dataset(fmt, data, split, cache=False, class_names=class_names)
