"""Shared fixtures and the gates.

- ``@pytest.mark.gpu``: needs an NVIDIA GPU with TensorRT / CUDA; skipped here with the reason.
- ``@pytest.mark.camvid``: needs ../shared/data/camvid; skipped when absent.
- ``@pytest.mark.slow``: the one slow gate. Skipped unless ``FCN_DEPLOY_SLOW=1`` (``make
  test-slow``); each slow test says in its docstring or comment why it is too slow for the
  default run. Nothing else in the suite reads FCN_DEPLOY_SLOW.

Every test has a default timeout (pyproject ``timeout``); heavier ones carry an explicit
``@pytest.mark.timeout(N)``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fcn_deploy.backends.cuda_buffers import gpu_unavailable_reason

CAMVID = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "camvid"
SLOW_ENV = "FCN_DEPLOY_SLOW"


def slow_enabled() -> bool:
    return os.environ.get(SLOW_ENV, "") not in ("", "0")


def pytest_collection_modifyitems(config, items):
    gpu_reason = None
    gpu_checked = False
    slow_skip = pytest.mark.skip(reason=f"slow: set {SLOW_ENV}=1 (make test-slow)")
    for item in items:
        if "slow" in item.keywords and not slow_enabled():
            item.add_marker(slow_skip)
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
