"""fcn-train: resume determinism (Ctrl-C and SIGKILL), the resume state's round trip, DDP on gloo,
checkpoint contents, time budget, a diverging loss, CLI bad input."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fcn_deploy.metrics import ConfusionMatrix
from fcn_deploy.training import data as D
from fcn_deploy.training.checkpoint import load_checkpoint, model_from_checkpoint
from fcn_deploy.training.models import input_convention
from fcn_deploy.training.cli import main
from fcn_deploy.training.resume import ResumeState, config_fingerprint
from fcn_deploy.training.train import TrainConfig, evaluate, last_path_for, lr_at, train

TINY = D.SyntheticSpec(num_train=12, num_val=4, height=32, width=32, seed=5)
# The resume tests: two steps of 4 images per epoch (few steps keep them fast; several per epoch
# and a resume between epochs are what they are about).
RESUME_DATA = D.SyntheticSpec(num_train=8, num_val=4, height=32, width=32, seed=5)
ROOT = Path(__file__).resolve().parents[1]


def tiny_cfg(out, **kw):
    base = dict(out=str(out), format="synthetic", synthetic=TINY, arch="fcn8s", backbone="resnet18", epochs=3,
                batch_size=4, lr=2e-3, crop=(32, 32), scale_range=(0.75, 1.25), class_weights="median-freq",
                warmup=0.1, seed=7, threads=1, progress=False)
    base.update(kw)
    return TrainConfig(**base)


def _same_weights(p1, p2):
    a, b = load_checkpoint(p1)["state_dict"], load_checkpoint(p2)["state_dict"]
    assert a.keys() == b.keys()
    diff = [k for k in a if not torch.equal(a[k], b[k])]
    assert not diff, f"{len(diff)} tensors differ, first {diff[0]}"


@pytest.fixture(autouse=True)
def _restore_threads():
    # train() sets torch's thread count for the process; keep it from leaking into other tests.
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


class _Stop(KeyboardInterrupt):
    pass


def _with_dropout(monkeypatch):
    """train() builds models with dropout before score_fr (a forward pre-hook: same state_dict),
    so torch's RNG matters to the weights, as it does for the VGG16 FCNs (fc6/fc7 dropout)."""
    import fcn_deploy.training.train as T

    real = T.registry.build_model
    used = []

    def build(*a, **k):
        m = real(*a, **k)

        def drop(mod, inputs):
            used.append(mod.training)
            return (torch.nn.functional.dropout(inputs[0], 0.5, training=mod.training),)

        m.score_fr.register_forward_pre_hook(drop)
        return m

    monkeypatch.setattr(T.registry, "build_model", build)
    return used


@pytest.mark.timeout(300)
def test_ctrl_c_then_resume_gives_identical_weights(tmp_path, monkeypatch):
    """Bit-exact resume on a model with dropout: torch's RNG is re-seeded per epoch, not stored."""
    used = _with_dropout(monkeypatch)
    straight = train(tiny_cfg(tmp_path / "a.pt", epochs=2, synthetic=RESUME_DATA))
    assert True in used  # dropout really ran in training mode
    assert straight.epochs_done == 2 and straight.history[0]["images"] == 8

    def interrupt(epoch, rec):
        if epoch == 1:
            raise _Stop()

    cfg = tiny_cfg(tmp_path / "b.pt", epochs=2, synthetic=RESUME_DATA)
    with pytest.raises(_Stop):
        train(cfg, on_epoch_end=interrupt)
    assert load_checkpoint(last_path_for(cfg.out))["train"]["epoch"] == 1
    # A resume with a different configuration is refused, naming what changed; the state stays.
    from fcn_deploy.errors import FcnError

    with pytest.raises(FcnError, match=r"cannot resume .*b\.last\.pt: batch_size was 4, now 2"):
        train(dataclasses.replace(cfg, resume=True, batch_size=2))
    with pytest.raises(FcnError, match=r"cannot resume .*: seed was 7, now 8"):
        train(dataclasses.replace(cfg, resume=True, seed=8))
    assert load_checkpoint(last_path_for(cfg.out))["train"]["epoch"] == 1
    resumed = train(dataclasses.replace(cfg, resume=True))
    assert resumed.epochs_done == 2
    _same_weights(straight.last_path, resumed.last_path)
    _same_weights(straight.best_path, resumed.best_path)
    assert [h["loss"] for h in straight.history] == [h["loss"] for h in resumed.history]
    # and the weights did change during training (score_fr starts at zero): the comparison is not vacuous
    a = load_checkpoint(straight.last_path)["state_dict"]
    assert a["score_fr.weight"].abs().sum() > 0


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_sigkill_then_resume_gives_identical_weights(tmp_path):
    """Slow (a second process importing torch, ~7 s): the default run keeps the same bit-exact
    resume comparison after an interrupt (test_ctrl_c_then_resume_gives_identical_weights) and a
    hard kill in the middle of a checkpoint write (test_killed_checkpoint_write_keeps_the_old_file)."""
    out = tmp_path / "k.pt"
    last = last_path_for(out)
    argv = ["--format", "synthetic", "--synthetic-size", "32x32", "--synthetic-count", "8x4", "--epochs", "3",
            "--batch-size", "4", "--crop", "32x32", "--scale", "0.75,1.25", "--class-weights", "median-freq",
            "--seed", "7", "--threads", "1", "--out", str(out)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "fcn_deploy.training.train", *argv], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    killed_at = None
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if last.exists():
            try:
                ep = load_checkpoint(last)["train"]["epoch"]
            except Exception:  # pragma: no cover - file replaced while reading
                ep = 0
            if ep >= 1:
                os.kill(proc.pid, signal.SIGKILL)
                killed_at = ep
                break
        time.sleep(0.02)
    proc.wait(30)
    assert killed_at is not None and killed_at < 3, f"run was not killed mid-way ({proc.stderr.read().decode()[-300:]})"
    assert load_checkpoint(last)["train"]["epoch"] < 3
    rc = main([*argv, "--resume"])
    assert rc == 0
    straight = train(TrainConfig(out=str(tmp_path / "s.pt"), format="synthetic",
                                 synthetic=D.SyntheticSpec(num_train=8, num_val=4, height=32, width=32),
                                 epochs=3, batch_size=4, crop=(32, 32), scale_range=(0.75, 1.25),
                                 class_weights="median-freq", seed=7, threads=1, progress=False))
    _same_weights(straight.last_path, last)


class _Net(torch.nn.Sequential):
    """A two-layer stand-in for an FCN: what save_checkpoint reads (arch, backbone, classes), BN
    running statistics, and few weights, so the round trip costs milliseconds."""

    arch, backbone_name, num_classes, build_options = "fcn32s", "resnet18", 3, {}

    def __init__(self):
        super().__init__(torch.nn.Conv2d(3, 3, 3), torch.nn.BatchNorm2d(3))


def _equal(a, b, where="state"):
    """Deep equality with tensors compared exactly (dtype, shape, values)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b), (where, list(a), list(b))
        for k in a:
            _equal(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _equal(x, y, f"{where}[{i}]")
    else:
        assert type(a) is type(b) and a == b, (where, a, b)


def _stepped():
    torch.manual_seed(0)
    net = _Net()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-2)
    net(torch.randn(2, 3, 8, 8)).sum().backward()
    opt.step()
    return net, opt


def test_resume_state_round_trip(tmp_path):
    """save then load gives the same state: every field, the weights, the optimizer's tensors;
    restore puts them into fresh objects; the file holds the documented ``train`` entry."""
    cfg = TrainConfig(out=str(tmp_path / "m.pt"), seed=3, crop=(16, 24))
    net, opt = _stepped()
    state = ResumeState(config=config_fingerprint(cfg), epoch=2, step=7, elapsed_s=12.5,
                        history=[{"epoch": 1, "loss": 1.25, "lr": 1e-3}, {"epoch": 2, "loss": 1.0, "lr": 5e-4}],
                        best={"mean_iu": 0.5, "epoch": 2}, finished=False, stopped_by_budget=False,
                        class_weights=torch.tensor([0.5, 1.0, 2.0]), world_size=2)
    path = tmp_path / "m.last.pt"
    state.save(path, net, opt, None, _info(), metrics={"mean_iu": 0.5})
    back = ResumeState.load(path, cfg, world_size=2)
    for f in dataclasses.fields(ResumeState):
        if f.name != "model":
            _equal(getattr(state, f.name), getattr(back, f.name), f.name)
    _equal(net.state_dict(), back.model, "model")
    stored = torch.load(path, weights_only=True)["train"]
    assert list(stored) == ["config", "optimizer", "scaler", "epoch", "step", "elapsed_s", "history", "best",
                            "finished", "stopped_by_budget", "class_weights", "world_size"]
    assert stored["config"]["crop"] == [16, 24] and "rng" not in stored
    fresh = _Net()
    fresh_opt = torch.optim.AdamW(fresh.parameters(), lr=1e-2)
    back.restore(fresh, fresh_opt, None)
    _equal(net.state_dict(), fresh.state_dict(), "restored model")
    _equal(opt.state_dict(), fresh_opt.state_dict(), "restored optimizer")


def test_resume_state_refusals_are_one_line(tmp_path):
    from fcn_deploy.errors import FcnError
    from fcn_deploy.training.checkpoint import save_checkpoint

    cfg = TrainConfig(out=str(tmp_path / "m.pt"), seed=3)
    net, opt = _stepped()
    path = tmp_path / "m.last.pt"
    ResumeState(config=config_fingerprint(cfg)).save(path, net, opt, None, _info(), metrics={})
    bad = [(dataclasses.replace(cfg, seed=4), path, r"^cannot resume .*m\.last\.pt: seed was 3, now 4$"),
           (dataclasses.replace(cfg, crop=(16, 16)), path, r"crop was None, now \[16, 16\]$"),
           (cfg, tmp_path / "none.pt", r"^nothing to resume: .*none\.pt does not exist$")]
    save_checkpoint(tmp_path / "plain.pt", net, _info())
    bad.append((cfg, tmp_path / "plain.pt", r"plain\.pt holds no resume state$"))
    torn = torch.load(path, weights_only=True)
    del torn["train"]["optimizer"]
    torch.save(torn, tmp_path / "torn.pt")
    bad.append((cfg, tmp_path / "torn.pt", r"torn\.pt is a damaged resume state \(no 'optimizer'\)$"))
    for c, p, msg in bad:
        with pytest.raises(FcnError, match=msg) as e:
            ResumeState.load(p, c)
        assert "\n" not in str(e.value)
    # what does not change the run may differ: more epochs, another val interval
    assert ResumeState.load(path, dataclasses.replace(cfg, epochs=20, val_every=3)).config["epochs"] == 20


def test_diverging_loss_stops_with_one_line_and_writes_nothing(tmp_path):
    """The loss is read to the host only at log time; a non-finite one still stops the run
    (at the epoch's end at the latest) before that epoch's checkpoints are written."""
    from fcn_deploy.errors import FcnError

    with pytest.raises(FcnError, match=r"^loss became (nan|inf) in epoch 1 \(by step 2\): lower --lr$"):
        train(tiny_cfg(tmp_path / "nan.pt", epochs=1, lr=1e38, optimizer="sgd", warmup=0.0, synthetic=RESUME_DATA))
    assert list(tmp_path.iterdir()) == []


def test_progress_shows_the_loss_at_log_time(tmp_path, monkeypatch, caplog, capsys):
    """Without a TTY: a progress line (every LINE_EVERY_S; here every step) with the mean loss so
    far, the last one equal to the epoch's recorded loss. With one: a tqdm bar with the step's
    loss (a non-finite one stops the run)."""
    import fcn_deploy.training.train as T

    small = dataclasses.replace(RESUME_DATA, num_train=4)
    monkeypatch.setattr(T, "LINE_EVERY_S", -1.0)
    caplog.set_level("INFO", logger="fcn_deploy.training.train")
    res = train(tiny_cfg(tmp_path / "line.pt", epochs=1, batch_size=2, synthetic=small))
    lines = [m for m in caplog.messages if m.startswith("  epoch 1: ")]
    assert [ln.split(",")[0] for ln in lines] == ["  epoch 1: 1/2 batches", "  epoch 1: 2/2 batches"], lines
    assert lines[-1].endswith(f"loss {res.history[0]['loss']:.4f}")
    # The bar (its own run would cost as much again: the display alone, on the loop's objects' fields)
    from types import SimpleNamespace as NS

    monkeypatch.setattr(T, "BAR_LOSS_EVERY_S", 0.0)
    capsys.readouterr()
    run = NS(show_bar=True, dist=T.Dist(), cfg=NS(batch_size=2))
    shown = T._Progress(run, NS(epoch=0, step=1), 2)
    shown.step(torch.tensor(1.25), torch.tensor(2.5, dtype=torch.float64), 2, 1e-3)
    shown.close()
    err = capsys.readouterr().err
    assert "epoch 1" in err and "loss=1.250" in err and "lr=1.00e-03" in err, err[-500:]
    with pytest.raises(T.FcnError, match=r"^loss became nan in epoch 1 \(by step 1\)"):
        T._Progress(run, NS(epoch=0, step=1), 2).step(torch.tensor(float("nan")), torch.zeros(()), 2, 1e-3)


def test_checkpoint_contents_and_metrics(tmp_path):
    res = train(tiny_cfg(tmp_path / "m.pt", epochs=2, val_every=1, arch="fcn16s"))
    ck = load_checkpoint(res.best_path)  # weights_only=True inside
    assert ck["model"] == {"arch": "fcn16s", "backbone": "resnet18", "num_classes": 5,
                           "build_options": {"learnable_upsampling": False, "head_alignment": "aligned"}}
    info = ck["info"]
    assert info["class_names"] == list(D.SYNTHETIC_CLASSES) and info["ignore_index"] == 255
    order, scale, mean, std = input_convention("resnet18")
    assert (info["channel_order"], info["scale"], info["mean"], info["std"]) == (order, scale, list(mean), list(std))
    m = ck["metrics"]
    assert set(("pixel_acc", "mean_acc", "mean_iu", "fw_iu", "epoch")) <= set(m)
    # the stored metrics are those of the stored weights
    model, _, _ = model_from_checkpoint(res.best_path)
    val = D.open_dataset("synthetic", None, "val", synthetic=TINY)
    again = evaluate(model, val, input_convention("resnet18"), device=torch.device("cpu"))
    for k in ("pixel_acc", "mean_acc", "mean_iu", "fw_iu"):
        assert again[k] == pytest.approx(m[k], abs=1e-9)
    last = load_checkpoint(res.last_path)
    st = last["train"]
    assert st["epoch"] == 2 and st["finished"] and len(st["history"]) == 2
    assert isinstance(st["class_weights"], torch.Tensor) and st["class_weights"].shape == (5,)
    assert "rng" not in st  # torch's RNG is re-seeded from (seed, epoch): a stored state would be dead weight
    # everything loads with the safe unpickler
    torch.load(res.last_path, weights_only=True)


def test_time_budget_stops_and_saves(tmp_path):
    budget_s = 0.03 * 60
    res = train(tiny_cfg(tmp_path / "t.pt", epochs=10_000, time_budget_min=0.03))
    # Stopped by the budget: not before it was used, not long after (an epoch here is well
    # under a second; the rest is the final validation), long before the epoch cap.
    assert res.elapsed_s >= budget_s
    assert res.elapsed_s < budget_s + 8, res.elapsed_s
    assert 1 <= res.epochs_done < 10_000
    # The learning rate followed elapsed time: decayed from the peak by the last step.
    lrs = [h["lr"] for h in res.history]
    assert lrs == sorted(lrs, reverse=True) and lrs[-1] < 0.99 * 2e-3
    assert Path(res.best_path).is_file() and res.final_metrics
    st = load_checkpoint(res.last_path)["train"]
    assert st["finished"]
    # resuming a finished run does nothing more
    again = train(dataclasses.replace(tiny_cfg(tmp_path / "t.pt", epochs=10_000, time_budget_min=0.03), resume=True))
    assert again.epochs_done == res.epochs_done


def test_bf16_autocast_on_cpu(tmp_path, monkeypatch):
    """--amp on CPU runs the training convolutions in bfloat16 (autocast); validation stays
    float32, so the recorded scores are the ones the fp32 export gives."""
    import fcn_deploy.training.train as T

    real = T.registry.build_model
    seen = []

    def build(*a, **k):
        m = real(*a, **k)
        m.score_fr.register_forward_hook(lambda mod, inp, out: seen.append((mod.training, out.dtype)))
        return m

    monkeypatch.setattr(T.registry, "build_model", build)
    res = train(tiny_cfg(tmp_path / "bf.pt", epochs=1, amp=True, synthetic=dataclasses.replace(TINY, num_train=4)))
    assert np.isfinite(res.history[0]["loss"])
    assert {d for t, d in seen if t} == {torch.bfloat16}, seen
    assert {d for t, d in seen if not t} == {torch.float32}, seen
    # Without --amp: float32 throughout.
    seen.clear()
    train(tiny_cfg(tmp_path / "fp.pt", epochs=1, synthetic=dataclasses.replace(TINY, num_train=4)))
    assert {d for _, d in seen} == {torch.float32}


def test_lr_schedule():
    cfg = tiny_cfg("x.pt", lr=1.0, poly_power=0.9, warmup=0.0)
    assert lr_at(cfg, 0.0) == 1.0 and lr_at(cfg, 1.0) == 0.0
    assert lr_at(cfg, 0.5) == pytest.approx(0.5 ** 0.9)
    warm = dataclasses.replace(cfg, warmup=0.1)
    assert lr_at(warm, 0.05) == pytest.approx(0.5 * 0.95 ** 0.9)


@pytest.mark.timeout(300)
def test_ddp_two_cpu_processes_gloo(tmp_path):
    out = tmp_path / "ddp.pt"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "fcn_deploy.training.train", "--format", "synthetic", "--synthetic-size", "32x32",
           "--synthetic-count", "12x4", "--epochs", "1", "--batch-size", "3", "--crop", "32x32",
           "--threads", "1", "--device", "cpu", "--out", str(out)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env, cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.count("checkpoint:") == 1  # only rank 0 prints
    model, info, ck = model_from_checkpoint(out)
    assert info.num_classes == 5 and "mean_iu" in ck["metrics"]
    st = load_checkpoint(last_path_for(out))["train"]
    assert st["world_size"] == 2
    assert st["history"][0]["images"] == 12  # both shards counted, each image once
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ddp.last.pt", "ddp.pt"]


# -- CLI bad input ------------------------------------------------------------------------------


def _bad_camvid(root):
    for s in ("train", "val"):
        (root / s).mkdir(parents=True)
        (root / f"{s}annot").mkdir()
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / s / "a.png")
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / f"{s}annot" / "a.png")
    Image.fromarray(np.full((8, 8), 40, np.uint8)).save(root / "trainannot" / "a.png")


@pytest.mark.parametrize("args, needle", [
    (["--arch", "fcn4s"], "unknown arch 'fcn4s'; valid: fcn16s, "),
    (["--backbone", "vgg19"], "unknown backbone"),
    (["--format", "camvid", "--data", "{tmp}/missing"], "not found"),
    (["--format", "camvid"], "--data is required"),
    (["--crop", "abc"], "is not H,W or HxW"),
    (["--epochs", "0"], "epochs must be >= 1"),
    (["--lr", "-1"], "lr must be a positive"),
    (["--recipe", "nope"], "unknown recipe 'nope'"),
    (["--resume"], "nothing to resume"),
    (["--backbone-weights", "{tmp}/none.pth"], "backbone weights not found"),
    (["--format", "camvid", "--data", "{tmp}/bad"], "label out of range in"),
    (["--no-such-flag"], "unrecognized arguments"),
])
def test_cli_bad_input_one_line_nothing_written(tmp_path, capsys, args, needle):
    outdir = tmp_path / "out"
    outdir.mkdir()
    _bad_camvid(tmp_path / "bad")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in args]
    rc = main(argv + ["--out", str(outdir / "m.pt")] + (["--synthetic-count", "4x2"] if "--format" not in args else []))
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    assert needle in err
    assert list(outdir.iterdir()) == []


def test_cli_out_must_be_pt_and_folder_must_exist(tmp_path, capsys):
    assert main(["--out", str(tmp_path / "m.onnx")]) == 2
    assert "--out must name a .pt file" in capsys.readouterr().err
    assert main(["--out", str(tmp_path / "no" / "m.pt"), "--synthetic-count", "4x2"]) == 2
    assert "output folder does not exist" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_loader_workers_do_not_change_the_batches(tmp_path):
    small = dataclasses.replace(TINY, num_train=8, num_val=2)
    a = train(tiny_cfg(tmp_path / "w0.pt", epochs=1, synthetic=small, workers=0))
    b = train(tiny_cfg(tmp_path / "w1.pt", epochs=1, synthetic=small, workers=1))
    _same_weights(a.last_path, b.last_path)


@pytest.mark.parametrize("where", ["proc", "out_is_folder", "last_is_folder"])
def test_cli_unwritable_out_fails_before_any_data_is_read(tmp_path, capsys, monkeypatch, where):
    def no_data(*a, **k):
        raise AssertionError("data was loaded before --out was checked")

    monkeypatch.setattr(D, "open_dataset", no_data)
    out = tmp_path / "m.pt"
    if where == "proc":
        if not os.path.isdir("/proc/self"):
            pytest.skip("needs Linux /proc")
        out = Path("/proc/x.pt")
    elif where == "out_is_folder":
        out.mkdir()
    else:
        last_path_for(out).mkdir()
    assert main(["--out", str(out), "--synthetic-count", "4x2"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    assert "cannot write" in err or "not writable" in err
    if where != "proc":
        assert sorted(p.name for p in tmp_path.rglob("*")) == sorted(["m.pt"] if where == "out_is_folder" else ["m.last.pt"])


def test_cli_reports_the_best_scores_once(tmp_path, capsys, caplog):
    caplog.set_level("INFO")
    assert main(["--out", str(tmp_path / "m.pt"), "--synthetic-count", "4x2", "--synthetic-size", "32x32",
                 "--epochs", "1", "--batch-size", "4", "--threads", "1"]) == 0
    out = capsys.readouterr()
    lines = out.out.splitlines() + out.err.splitlines() + [m for msg in caplog.messages for m in msg.splitlines()]
    best = [ln for ln in lines if ln.lstrip().startswith("val, best epoch")]
    assert len(best) == 1, best
    # the headline is the last epoch's val scores, printed before the best epoch's
    assert out.out.splitlines()[0].startswith("val, last epoch 1:"), out.out


def _save_zip_then_cut(path):
    torch.save({"a": torch.zeros(256)}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("make, reason", [
    (lambda p: p.write_text("hello, I am a text file\n"), "not a torch checkpoint file"),
    (lambda p: p.write_bytes(b""), "empty file"),
    (_save_zip_then_cut, "truncated"),
    (lambda p: torch.save({"a": np.zeros(3)}, p), "safe loader (weights_only=True) refuses"),
])
def test_unreadable_checkpoint_says_why(tmp_path, make, reason):
    from fcn_deploy.errors import FcnError

    p = tmp_path / "t.pt"
    make(p)
    with pytest.raises(FcnError) as e:
        load_checkpoint(p)
    msg = str(e.value)
    assert msg.startswith(f"{p} is not a readable fcn-deploy checkpoint (") and reason in msg, msg
    assert "\n" not in msg


# -- checkpoint writes that fail or are killed midway ----------------------------------------------

def _tiny_model(seed):
    from fcn_deploy.training.models import build_model

    torch.manual_seed(seed)
    m = build_model("fcn32s", "resnet18", 3)
    with torch.no_grad():
        m.score_fr.weight.normal_()
    return m


def _info():
    from export_models import info_for

    return info_for("fcn32s", "resnet18")


def test_failed_checkpoint_write_keeps_the_old_file(tmp_path, monkeypatch):
    from fcn_deploy.errors import FcnError
    from fcn_deploy.training import checkpoint as C

    path = tmp_path / "model.last.pt"
    old = _tiny_model(1)
    C.save_checkpoint(path, old, _info())
    real_save = torch.save

    def half_then_fail(obj, f, *a, **k):
        import io

        buf = io.BytesIO()
        real_save(obj, buf)
        with open(f, "wb") as fh:
            fh.write(buf.getvalue()[: len(buf.getvalue()) // 2])
        raise OSError(28, "No space left on device", str(f))

    monkeypatch.setattr(torch, "save", half_then_fail)
    with pytest.raises(FcnError, match="cannot write .*model.last.pt: No space left"):
        C.save_checkpoint(path, _tiny_model(2), _info())
    monkeypatch.setattr(torch, "save", real_save)
    assert torch.equal(load_checkpoint(path)["state_dict"]["score_fr.weight"], old.score_fr.weight.detach())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.last.pt"]  # no temp file left


KILLED_WRITER = """
import io, os, signal, sys
sys.path.insert(0, sys.argv[2])
import torch
from fcn_deploy.training import checkpoint as C
from test_training_train import _info, _tiny_model
real_save = torch.save
def half_then_die(obj, f, *a, **k):
    buf = io.BytesIO()
    real_save(obj, buf)
    with open(f, "wb") as fh:
        fh.write(buf.getvalue()[: len(buf.getvalue()) // 2])
        fh.flush()
        os.fsync(fh.fileno())
    os.kill(os.getpid(), signal.SIGKILL)
torch.save = half_then_die
C.save_checkpoint(sys.argv[1], _tiny_model(2), _info())
"""


def test_killed_checkpoint_write_keeps_the_old_file(tmp_path):
    from fcn_deploy.training import checkpoint as C

    path = tmp_path / "model.last.pt"
    old = _tiny_model(1)
    C.save_checkpoint(path, old, _info())
    p = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(path), str(Path(__file__).parent)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == -signal.SIGKILL, p.stderr[-1000:]
    assert len(list(tmp_path.iterdir())) == 2  # the half-written temp file, killed before its rename
    assert torch.equal(load_checkpoint(path)["state_dict"]["score_fr.weight"], old.score_fr.weight.detach())
