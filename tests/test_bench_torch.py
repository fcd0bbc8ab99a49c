"""The PyTorch baseline runner (fcn-bench torch:* targets, fcn-eval on checkpoints)."""

import numpy as np
import pytest

from fcn_deploy.errors import FcnError

from test_bench_tiny_models import tiny_checkpoint

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("torch") / "m.pt", classes=4, seed=3)


def test_fp32_runner_matches_the_model(ckpt):
    from fcn_deploy.benchmarks.torch_runner import TorchRunner
    from fcn_deploy.training.checkpoint import model_from_checkpoint

    x = np.random.default_rng(0).normal(size=(2, 3, 19, 27)).astype(np.float32)
    with TorchRunner(ckpt) as r:
        out = r.infer({"input": x})["logits"]
        assert r.last_timing.total_ms > 0 and r.last_timing.compute_ms == r.last_timing.total_ms
        assert r.last_timing.h2d_ms is None
        assert r.precision == "fp32" and r.device.startswith("cpu")
        assert [s.name for s in r.inputs()] == ["input"] and r.outputs()[0].shape[1] == 4
    model, _, _ = model_from_checkpoint(ckpt)
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    np.testing.assert_array_equal(out, want)


def test_bf16_autocast_is_close_and_float32_out(ckpt):
    from fcn_deploy.benchmarks.torch_runner import TorchRunner

    x = np.random.default_rng(1).normal(size=(1, 3, 16, 16)).astype(np.float32)
    ref = TorchRunner(ckpt).infer({"input": x})["logits"]
    r = TorchRunner(ckpt, autocast="bf16")
    out = r.infer({"input": x})["logits"]
    assert r.precision == "bf16-autocast" and out.dtype == np.float32
    assert not np.array_equal(out, ref)  # bf16 really ran
    assert np.linalg.norm(out - ref) / np.linalg.norm(ref) < 0.1


def test_threads_and_bad_options(ckpt):
    from fcn_deploy.benchmarks.torch_runner import TorchRunner

    before = torch.get_num_threads()
    try:
        TorchRunner(ckpt, threads=1)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    with pytest.raises(FcnError, match="valid"):
        TorchRunner(ckpt, device="tpu")
    with pytest.raises(FcnError, match="valid"):
        TorchRunner(ckpt, autocast="int4")
    if not torch.cuda.is_available():
        with pytest.raises(FcnError, match="CUDA"):
            TorchRunner(ckpt, device="cuda")
    r = TorchRunner(ckpt)
    with pytest.raises(FcnError, match="N x 3 x H x W"):
        r.infer({"input": np.zeros((1, 1, 8, 8), np.float32)})


def test_foreign_checkpoint_is_an_error_row(tmp_path):
    from fcn_deploy.benchmarks.targets import TargetSpec, open_target

    bad = tmp_path / "x.pt"
    torch.save({"hello": 1}, bad)
    t = open_target(TargetSpec("torch", str(bad), "torch:x.pt"))
    assert t.runner is None and "not an fcn-deploy checkpoint" in t.error
