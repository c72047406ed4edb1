"""A training step reads nothing back from the device: every device-to-host read goes
through gradflow.transfer.to_host, and a step makes none of them; the losses, the
finiteness checks and the confusion matrix come back once per logging interval (one
call), an evaluation once. Counted on the CPU, where the same calls run."""
import numpy as np
import pytest

import models.train as engine
import models.trainer
from gradflow import transfer
from models.trainer import Trainer
from tests.models.helpers import tiny_config


@pytest.fixture
def counted(monkeypatch):
    """Records to_host calls made inside each train_step, read_back and evaluate."""
    calls = {"train_step": [], "read_back": [], "evaluate": []}
    for name in calls:
        real = getattr(engine, name)

        def counting(*args, _real=real, _name=name, **kwargs):
            with transfer.counting() as made:
                result = _real(*args, **kwargs)
            calls[_name].append(made())
            return result
        monkeypatch.setattr(engine, name, counting)
        if hasattr(models.trainer, name):             # imported by name there
            monkeypatch.setattr(models.trainer, name, counting)
    return calls


@pytest.mark.parametrize("log_every, reads_per_epoch", [(1, 4), (3, 2), (20, 1)])
def test_steps_make_no_transfers_and_each_interval_one(tmp_path, counted, log_every, reads_per_epoch):
    trainer = Trainer(tiny_config(tmp_path, epochs=2, log_every=log_every), log=lambda *_: None)
    trainer.fit()
    assert counted["train_step"] == [0] * 8                        # 2 epochs of 4 steps: no reads at all
    assert counted["read_back"] == [1] * (2 * reads_per_epoch)      # one call per logging interval
    assert counted["evaluate"] == [1, 1]                            # one per evaluation
    assert len(trainer.step_losses) == 8 and all(np.isfinite(trainer.step_losses))


def test_checkpoints_read_back_first_so_they_hold_current_statistics(tmp_path, counted):
    trainer = Trainer(tiny_config(tmp_path, epochs=1, log_every=20, ckpt_every=2), log=lambda *_: None)
    saved = []
    real_save = trainer.save

    def save(name, **kwargs):
        saved.append((trainer.global_step, trainer.running["steps"], len(trainer.step_losses),
                      int(trainer.running["confusion"].sum())))
        return real_save(name, **kwargs)
    trainer.save = save
    trainer.fit()
    assert counted["read_back"] == [1, 1]                  # at the step-2 checkpoint and at the epoch's end
    global_step, steps, losses, pixels = saved[0]
    assert (global_step, steps, losses) == (2, 2, 2) and pixels == 2 * 4 * 16 * 16


def test_a_bad_step_is_named_at_the_next_read_back(tmp_path, monkeypatch):
    trainer = Trainer(tiny_config(tmp_path, epochs=1, log_every=4), log=lambda *_: None)
    real_step = engine.train_step
    steps = [0]

    def poisoned(model, criterion, optimizer, images, masks, clip_grad=None):
        steps[0] += 1
        if steps[0] == 2:
            images = images * np.nan
        return real_step(model, criterion, optimizer, images, masks, clip_grad)
    monkeypatch.setattr(engine, "train_step", poisoned)
    with pytest.raises(engine.NonFiniteError, match=r"non-finite loss \(loss nan\) at epoch 1, step 2 "
                                                    r"\(global step 2\)"):
        trainer.fit()
    assert len(trainer.step_losses) == 1 and np.isfinite(trainer.step_losses[0])   # the step before it
