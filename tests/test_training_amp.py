"""fcn-train --amp: the precision decision (capability check), its record in log and checkpoint,
the hold-out split and the last-epoch headline."""

from __future__ import annotations

import logging

import pytest
import torch

from fcn_deploy.errors import FcnError
from fcn_deploy.training import data as D
from fcn_deploy.training import amp as A
from fcn_deploy.training import cli as C
from fcn_deploy.training import train as T
from fcn_deploy.training.checkpoint import load_checkpoint
from fcn_deploy.training.recipes import get_recipe

TINY = D.SyntheticSpec(num_train=20, num_val=4, height=32, width=32, seed=5)
CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def _restore_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def _native(monkeypatch, avx512_bf16: bool, amx: bool = False):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)


def test_auto_is_bf16_only_where_the_cpu_has_native_bf16(monkeypatch):
    _native(monkeypatch, True)
    p = A.resolve_precision("auto", CPU, None)
    assert (p.dtype, p.name, p.scaler) == (torch.bfloat16, "bf16", False) and "avx512_bf16" in p.reason
    _native(monkeypatch, False, amx=True)
    assert A.resolve_precision("auto", CPU, None).dtype is torch.bfloat16
    assert "AMX" in A.resolve_precision("auto", CPU, None).reason
    _native(monkeypatch, False)
    p = A.resolve_precision("auto", CPU, None)
    assert (p.dtype, p.name, p.channels_last) == (None, "fp32", False) and "emulated" in p.reason


def test_explicit_modes(monkeypatch):
    _native(monkeypatch, False)
    assert A.resolve_precision("off", CPU, None).dtype is None
    assert A.resolve_precision("bf16", CPU, None).dtype is torch.bfloat16  # asked for: given, said slow
    assert "slow" in A.resolve_precision("on", CPU, None).reason
    assert A.resolve_precision(True, CPU, None).dtype is torch.bfloat16  # the earlier boolean --amp
    assert A.resolve_precision("off", CPU, True).channels_last is True  # an explicit flag wins
    with pytest.raises(FcnError, match="fp16 is for CUDA"):
        A.resolve_precision("fp16", CPU, None)
    with pytest.raises(FcnError, match="amp mode"):
        A.resolve_precision("fp8", CPU, None)


def test_the_real_capability_check_agrees_with_torch():
    native, how = A.cpu_bf16_native()
    assert native == bool(torch.cpu._is_avx512_bf16_supported() or getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)())
    assert isinstance(how, str) and how


def test_cli_amp_values():
    assert C.config_from_args(["--out", "m.pt"]).amp == "off"
    assert C.config_from_args(["--out", "m.pt", "--amp"]).amp == "on"
    assert C.config_from_args(["--out", "m.pt", "--amp", "auto"]).amp == "auto"
    assert T.TrainConfig(out="m.pt", amp=True).amp == "on"
    with pytest.raises(FcnError, match="amp mode"):
        C.config_from_args(["--out", "m.pt", "--amp", "fast"])
    assert C.main(["--out", "m.pt", "--amp", "fast"]) == 2
    rec = C.config_from_args(["--recipe", "camvid-resnet18-fcn8s", "--data", "x", "--out", "m.pt"])
    assert (rec.amp, rec.channels_last, rec.head_alignment) == ("auto", None, "aligned")
    assert get_recipe("camvid-resnet18-fcn8s")["amp"] == "auto"


def test_precision_is_logged_and_recorded(tmp_path, monkeypatch, caplog):
    _native(monkeypatch, False)  # an AVX2-only CPU: auto trains fp32
    caplog.set_level(logging.INFO, logger="fcn_deploy.training.train")
    cfg = T.TrainConfig(out=str(tmp_path / "m.pt"), format="synthetic", synthetic=TINY, epochs=1, batch_size=4,
                        crop=(32, 32), amp="auto", channels_last=None, threads=1, progress=False)
    res = T.train(cfg)
    assert "precision: fp32 NCHW (auto: no AVX512-BF16 or AMX" in caplog.text
    ck = load_checkpoint(res.best_path)
    assert ck["info"]["extra"]["train_precision"] == "fp32"
    last = load_checkpoint(res.last_path)
    assert last["train"]["config"]["amp"] == "auto"
    assert last["info"]["extra"]["train_precision"] == "fp32"


def test_bf16_training_records_bf16(tmp_path, monkeypatch):
    _native(monkeypatch, True)
    cfg = T.TrainConfig(out=str(tmp_path / "m.pt"), format="synthetic", synthetic=TINY, epochs=1, batch_size=4,
                        crop=(32, 32), amp="auto", threads=1, progress=False)
    res = T.train(cfg)
    assert load_checkpoint(res.best_path)["info"]["extra"]["train_precision"] == "bf16"


def test_holdout_split_is_blocks_disjoint_and_complete():
    kept, held = T.holdout_split(367, 6)
    assert sorted(kept + held) == list(range(367)) and not set(kept) & set(held)
    assert held[:10] == list(range(50, 60)) and held[10:20] == list(range(110, 120))
    assert len(held) == 60
    with pytest.raises(FcnError, match="holdout"):
        T.TrainConfig(out="m.pt", holdout=1).validate()


def test_holdout_run_reports_last_epoch_first_and_chooses_best_on_holdout(tmp_path):
    cfg = T.TrainConfig(out=str(tmp_path / "m.pt"), format="synthetic", synthetic=TINY, epochs=2, batch_size=4,
                        crop=(32, 32), holdout=2, val_every=1, threads=1, progress=False)
    res = T.train(cfg)
    lines = C.summary_lines(res)
    assert lines[0].startswith("val, last epoch 2:")
    assert lines[1].startswith(f"val, best epoch {res.best_metrics['epoch']} (chosen on the hold-out)")
    assert any(l.startswith("hold-out, last epoch 2") for l in lines)
    hist = [r["val"] for r in res.history if "val" in r]
    best_on_holdout = max(hist, key=lambda v: v["holdout"]["mean_iu"])  # first max, as training keeps it
    assert res.best_metrics["epoch"] == best_on_holdout["epoch"]
    best = load_checkpoint(res.best_path)["metrics"]
    assert best["selected_on"] == "holdout" and best["last_epoch"]["epoch"] == 2
    assert best["last_epoch"]["mean_iu"] == pytest.approx(res.final_metrics["mean_iu"])
    last = load_checkpoint(res.last_path)["metrics"]
    assert last["epoch"] == 2 and last["best_epoch"]["epoch"] == res.best_metrics["epoch"]


def test_without_holdout_the_best_is_flagged_as_chosen_on_val(tmp_path):
    res = T.train(T.TrainConfig(out=str(tmp_path / "m.pt"), format="synthetic", synthetic=TINY, epochs=1,
                                batch_size=4, crop=(32, 32), threads=1, progress=False))
    assert "chosen on val itself, so optimistic" in C.summary_lines(res)[1]
