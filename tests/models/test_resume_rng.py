"""Resuming restores every random generator the run draws from after the resume point.

The model here draws on each training step from all three generators a training run
may use: gradflow's (dropout), NumPy's global one (input noise, as an augmentation
would) and Python's `random` (a random gain). A run crashed mid-epoch and resumed from
its last checkpoint must end with the weights of a run never stopped, bit for bit; and
leaving out any one generator's restore must change them (so the first check cannot
pass by accident: each generator really is drawn from after the resume).
"""
import random

import numpy as np
import pytest

import gradflow as gf
import gradflow.functional as F
import models.checkpoints
import models.trainer
from models.checkpoints import load_checkpoint
from models.trainer import Trainer
from tests.models.faults import Crash, crash_after
from tests.models.helpers import assert_same_weights, tiny_config

GENERATORS = ("gradflow", "numpy", "python")


class RandomisedTraining(gf.nn.Module):
    """The real model behind dropout, NumPy noise and a Python-random gain (training only)."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        if self.training:
            gain = 1.0 + 0.2 * random.random()
            noise = np.random.standard_normal(x.shape).astype(np.float32) * 0.1
            x = F.dropout(x * gain + gf.tensor(noise), p=0.3, training=True)
        return self.inner(x)


@pytest.fixture
def randomised_model(monkeypatch):
    real = models.trainer.build_model
    monkeypatch.setattr(models.trainer, "build_model", lambda **spec: RandomisedTraining(real(**spec)))


def _config(tmp_path, name):
    return tiny_config(tmp_path, name=name, epochs=2, ckpt_every=1)


def _weights(trainer):
    return {k: v.numpy() for k, v in trainer.model.state_dict().items()}


def _fit(trainer):
    trainer.fit()
    return _weights(trainer)


def _crashed_run(tmp_path, monkeypatch):
    """Train, crash in the middle of epoch 2 (after step 6 of 8), return the last checkpoint."""
    random.seed(0)
    cfg = _config(tmp_path, "crashed")
    trainer = Trainer(cfg, log=lambda *_: None)
    with monkeypatch.context() as patch:
        crash_after(patch, 6)
        with pytest.raises(Crash):
            trainer.fit()
    state = load_checkpoint(tmp_path / "crashed" / "last.ckpt")
    assert (state["epoch"], state["step"]) == (1, 2)    # mid-epoch: epoch 2's first two steps done
    # the process goes on drawing (as a new process would start from other states)
    random.random(), np.random.standard_normal(3), gf.rand(3)
    return cfg, state


def _resume(cfg, state, monkeypatch, restored=GENERATORS):
    """Resume from `state`, restoring only the generators in `restored`."""
    real = models.checkpoints.restore_rng

    def partial_restore(rng):
        real({**{k: _current_state(k) for k in GENERATORS}, **{k: rng[k] for k in restored}})
    with monkeypatch.context() as patch:
        patch.setattr(models.trainer, "restore_rng", partial_restore)
        random.seed(12345)   # what a fresh process would have: anything but the crashed run's state
        np.random.seed(54321)
        return _fit(Trainer(cfg, resume=state, log=lambda *_: None))


def _current_state(name):
    return models.checkpoints.capture_rng()[name]


def test_resume_after_random_draws_gives_identical_weights(tmp_path, monkeypatch, randomised_model):
    random.seed(0)
    reference = _fit(Trainer(_config(tmp_path, "reference"), log=lambda *_: None))
    cfg, state = _crashed_run(tmp_path, monkeypatch)
    assert_same_weights(_resume(cfg, state, monkeypatch), reference)

    for missing in GENERATORS:   # each generator's restore matters
        resumed = _resume(cfg, state, monkeypatch, restored=[g for g in GENERATORS if g != missing])
        assert any(not np.array_equal(resumed[k], reference[k]) for k in reference), \
            f"not restoring {missing}'s generator left the weights unchanged: the test cannot see it"
    resumed = _resume(cfg, state, monkeypatch, restored=[])
    assert any(not np.array_equal(resumed[k], reference[k]) for k in reference)
