"""Shared fixtures. GPU tests carry ``@pytest.mark.gpu`` and are skipped with a reason here."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fcn_deploy.backends.cuda_buffers import gpu_unavailable_reason

CAMVID = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "camvid"


def pytest_collection_modifyitems(config, items):
    gpu_reason = None
    gpu_checked = False
    for item in items:
        if "gpu" in item.keywords:
            if not gpu_checked:
                gpu_reason, gpu_checked = gpu_unavailable_reason(), True
            if gpu_reason:
                item.add_marker(pytest.mark.skip(reason=gpu_reason))
        if "camvid" in item.keywords and not CAMVID.is_dir():
            item.add_marker(pytest.mark.skip(reason=f"CamVid not present at {CAMVID}"))


@pytest.fixture(scope="session")
def camvid_dir():
    return CAMVID


@pytest.fixture(autouse=True)
def _few_threads(monkeypatch):
    # Tests run on 2-core machines: keep torch from oversubscribing.
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "2"))
