"""Faults: SIGKILL mid-epoch and mid-write, damaged checkpoints, NaN/Inf, memory over many epochs."""
import gc
import os
import re
import signal
import tracemalloc

import numpy as np
import pytest

import gradflow as gf
from gradflow import checkpoint
from gradflow.checkpoint import CheckpointError
from models.trainer import Trainer
from models.utils import NonFiniteError
from tests.models.helpers import TINY, assert_same_weights, model_weights, run_cli, tiny_config

# 3 epochs of 4 steps, a checkpoint every 3 steps (and at each epoch end): 7 checkpoint writes.
FAULT_RUN = TINY + ["--epochs", "3", "--ckpt-every", "3", "--no-plots", "--out", "runs", "--name", "run"]


# ---- gf.save / gf.load ---------------------------------------------------------------------------
def test_save_load_round_trip(tmp_path):
    state = {"w": gf.randn(3, 2, requires_grad=True), "array": np.arange(5), "nested": [1.5, {"x": gf.ones(2)}]}
    gf.save(state, tmp_path / "a.ckpt")          # gf.save / gf.load are gradflow.checkpoint's
    back = gf.load(tmp_path / "a.ckpt")
    assert isinstance(back["w"], gf.Tensor) and back["w"].grad_fn is None
    assert np.array_equal(back["w"].detach().numpy(), state["w"].detach().numpy())
    assert np.array_equal(back["array"], state["array"])
    assert np.array_equal(back["nested"][1]["x"].numpy(), np.ones(2, dtype=np.float32))
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


@pytest.mark.parametrize("damage,message", [
    (lambda data: data[: len(data) // 2], "truncated"),
    (lambda data: data[:10], "truncated"),
    (lambda data: data[:-1] + bytes([data[-1] ^ 0xFF]), "checksum"),
    (lambda data: b"PK\x03\x04" + data[4:], "not a gradflow checkpoint"),
    (lambda data: data + b"extra", "trailing bytes"),
])
def test_damaged_checkpoint_gives_clear_error(tmp_path, damage, message):
    path = tmp_path / "a.ckpt"
    checkpoint.save({"w": gf.randn(100)}, path)
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(CheckpointError, match=message) as info:
        checkpoint.load(path)
    assert str(path) in str(info.value)


def test_missing_checkpoint_and_fallback_to_previous(tmp_path):
    path = tmp_path / "last.ckpt"
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        checkpoint.load(path)
    checkpoint.save({"version": 1}, path, keep_previous=True)
    checkpoint.save({"version": 2}, path, keep_previous=True)
    assert checkpoint.load(checkpoint.previous_path(path)) == {"version": 1}
    path.write_bytes(path.read_bytes()[:40])                      # the newest one is damaged
    state, used, problems = checkpoint.load_with_fallback(path)
    assert state == {"version": 1} and used.endswith(".prev") and "truncated" in problems[0]
    os.truncate(checkpoint.previous_path(path), 5)                # and so is its predecessor
    with pytest.raises(CheckpointError, match="no usable checkpoint.*last.ckpt.*last.ckpt.prev"):
        checkpoint.load_with_fallback(path)


# ---- SIGKILL and resume (subprocesses) -----------------------------------------------------------
@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    folder = tmp_path_factory.mktemp("uninterrupted")
    result = run_cli(["train", *FAULT_RUN], cwd=folder)
    assert result.returncode == 0, result.stderr
    return model_weights(folder / "runs" / "run" / "last.ckpt")


@pytest.mark.parametrize("kill_at", ["step:6", "write:4"])
def test_sigkill_then_resume_gives_identical_weights(tmp_path, uninterrupted, kill_at):
    """step:6 dies mid-epoch 2 (3 steps after its last checkpoint); write:4 dies half way through writing
    the 4th checkpoint. Either way `--resume auto` finishes with the weights of a run never killed."""
    killed = run_cli(["train", *FAULT_RUN], cwd=tmp_path, kill_at=kill_at)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    run_dir = tmp_path / "runs" / "run"
    state = checkpoint.load(run_dir / "last.ckpt")       # the checkpoint on disk is whole
    assert state["global_step"] < 12
    if kill_at.startswith("write"):
        assert [p for p in os.listdir(run_dir) if p.endswith(".tmp")], "expected the half-written temp file"
    resumed = run_cli(["train", *FAULT_RUN, "--resume", "auto"], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming from runs/run/last.ckpt: epoch {state['epoch'] + 1}, step {state['step']}" in resumed.stdout
    assert_same_weights(model_weights(run_dir / "last.ckpt"), uninterrupted)
    assert checkpoint.load(run_dir / "last.ckpt")["global_step"] == 12
    assert not [p for p in os.listdir(run_dir) if p.endswith(".tmp")], "the stale temp file is cleaned up"


def test_resume_falls_back_when_last_checkpoint_is_corrupt(tmp_path, uninterrupted):
    killed = run_cli(["train", *FAULT_RUN], cwd=tmp_path, kill_at="step:7")
    assert killed.returncode == -signal.SIGKILL
    last = tmp_path / "runs" / "run" / "last.ckpt"
    data = bytearray(last.read_bytes())
    data[len(data) // 2] ^= 0x55                           # a flipped byte: the checksum must catch it
    last.write_bytes(bytes(data))
    resumed = run_cli(["train", *FAULT_RUN, "--resume", "auto"], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "checksum mismatch; falling back to" in resumed.stdout and "last.ckpt.prev" in resumed.stdout
    assert_same_weights(model_weights(last), uninterrupted)


def test_resume_from_unusable_checkpoint_fails_clearly(tmp_path):
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"this is not a checkpoint at all" * 3)
    result = run_cli(["train", *TINY, "--resume", str(bad)], cwd=tmp_path)
    assert result.returncode == 1
    assert "no usable checkpoint" in result.stderr and "not a gradflow checkpoint" in result.stderr
    assert "Traceback" not in result.stderr


# ---- NaN / Inf -----------------------------------------------------------------------------------
def test_huge_learning_rate_stops_with_epoch_step_and_layer(tmp_path):
    result = run_cli(["train", *TINY, "--epochs", "3", "--optimizer", "sgd", "--lr", "1e12", "--ckpt-every", "1",
                      "--scheduler", "none", "--no-plots", "--out", "runs", "--name", "nan"], cwd=tmp_path)
    assert result.returncode == 3, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    message = result.stderr
    # Step 1 starts from sane initial weights, so its loss is finite and, with --ckpt-every 1, its
    # checkpoint is written; its 1e12-sized update then overflows a later step's forward or backward.
    last = tmp_path / "runs" / "nan" / "last.ckpt"
    assert last.is_file() and not (tmp_path / "runs" / "nan" / "best.ckpt").exists()
    saved = checkpoint.load(last)
    assert saved["epoch"] == 0 and saved["global_step"] >= 1
    for name, value in saved["model"].items():       # the checkpoint left behind holds finite weights
        assert np.isfinite(value.numpy()).all(), name
    failed_at = saved["global_step"] + 1                  # the first step after the last good checkpoint
    assert "non-finite" in message and f"(global step {failed_at})" in message
    assert f"the last good checkpoint is {os.path.join('runs', 'nan', 'last.ckpt')}" in message
    named = re.findall(r"first: ([\w.]+), last: ([\w.]+)|parameter ([\w.]+)", message)
    assert named, message                                 # a parameter is named ...
    parameters = set(saved["model"])
    for name in filter(None, named[0]):                   # ... and it is one of the FCN's parameters
        assert name in parameters, (name, sorted(parameters))


class _PoisonGradient(gf.Function):
    """Identity forward; NaN backward: a layer whose gradient breaks."""

    @staticmethod
    def forward(ctx, x):
        return x.copy()

    @staticmethod
    def backward(ctx, grad):
        return grad * np.nan


def test_nonfinite_gradient_names_the_layer_and_keeps_last_checkpoint(tmp_path):
    trainer = Trainer(tiny_config(tmp_path, epochs=2, ckpt_every=2), log=lambda *_: None)
    calls = [0]

    def poison_third_step(module, args, output):
        calls[0] += 1
        return _PoisonGradient.apply(output) if calls[0] == 3 and module.training else output
    trainer.model.score32.register_forward_hook(poison_third_step)
    with pytest.raises(NonFiniteError) as info:
        trainer.fit()
    message = str(info.value)
    assert "non-finite gradient" in message and "epoch 1, step 3 (global step 3)" in message
    assert "first: stages.0.0.weight, last: score32.bias" in message
    saved = checkpoint.load(tmp_path / "run" / "last.ckpt")
    assert saved["global_step"] == 2      # written before the bad step, untouched after it
    for name, value in saved["model"].items():
        assert np.isfinite(value.numpy()).all(), name


def test_nonfinite_weights_are_never_checkpointed(tmp_path):
    trainer = Trainer(tiny_config(tmp_path, epochs=1), log=lambda *_: None)
    trainer.save("last.ckpt")
    trainer.model.score16.weight.data[0, 0] = np.inf
    with pytest.raises(NonFiniteError, match="score16.weight"):
        trainer.save("last.ckpt")
    assert np.isfinite(checkpoint.load(tmp_path / "run" / "last.ckpt")["model"]["score16.weight"].numpy()).all()


def test_clip_grad_bounds_the_gradient_norm(tmp_path):
    trainer = Trainer(tiny_config(tmp_path, clip_grad=1e-3, lr=1e-3), log=lambda *_: None)
    norms = []
    real_step = trainer.optimizer.step

    def step_and_record(*args):
        grads = [p.grad.numpy() for p in trainer.model.parameters() if p.grad is not None]
        norms.append(float(np.sqrt(sum((g.astype(np.float64) ** 2).sum() for g in grads))))
        return real_step(*args)
    trainer.optimizer.step = step_and_record
    trainer.fit()
    assert len(norms) == 8 and max(norms) <= 1e-3 * (1 + 1e-4)


# ---- memory ------------------------------------------------------------------------------------------
def test_no_memory_growth_over_many_epochs(tmp_path):
    """Graphs are freed every step: traced memory stays flat over 30 tiny epochs."""
    trainer = Trainer(tiny_config(tmp_path, epochs=30, train_size=8, ckpt_every=0), log=lambda *_: None)
    samples = []
    real_end = trainer.end_epoch

    def end_epoch_and_measure(train_metrics):
        record = real_end(train_metrics)
        # collect first: json.dump(indent=...) leaves small reference cycles that Python's
        # cyclic GC frees on its own schedule; what must not grow is memory still referenced
        gc.collect()
        samples.append(tracemalloc.get_traced_memory()[0])
        return record
    trainer.end_epoch = end_epoch_and_measure
    tracemalloc.start()
    try:
        trainer.fit()
    finally:
        tracemalloc.stop()
    growth = samples[-1] - samples[9]
    # a leaked step graph costs ~10 KB (contexts and activations of a 4x3x16x16 batch), two steps an
    # epoch; the per-epoch history record ~1.3 KB
    assert growth < 100_000, f"traced memory grew {growth} bytes over epochs 10..30: {samples}"
