"""--early-stop: stops after PATIENCE epochs without a better validation score, keeps best.ckpt, resumes."""
import json

import pytest

import models.trainer
from models.checkpoints import load_checkpoint
from models.trainer import Trainer
from tests.models.faults import Crash, crash_after
from tests.models.helpers import TINY, assert_same_weights, run_cli, tiny_config

# validation mIoU by epoch: best at epoch 2, then three epochs below it
SCORES = [0.30, 0.50, 0.45, 0.49, 0.40, 0.90, 0.95, 0.97]


def script_scores(monkeypatch, trainer):
    """Validation returns SCORES[epoch] as mIoU (the rest of the metrics real), whatever the model learnt."""
    real = models.trainer.evaluate

    def evaluate(*args):
        return {**real(*args), "miou": SCORES[len(trainer.history)]}
    monkeypatch.setattr(models.trainer, "evaluate", evaluate)


def untimed(history):
    return [{k: v for k, v in h.items() if k not in ("seconds", "images_per_s")} for h in history]


def weights(trainer):
    return {k: v.numpy() for k, v in trainer.model.state_dict().items()}


def test_stops_after_patience_epochs_and_says_why(tmp_path, monkeypatch):
    logs = []
    trainer = Trainer(tiny_config(tmp_path, epochs=8, early_stop=3), log=logs.append)
    script_scores(monkeypatch, trainer)
    history = trainer.fit()
    assert [h["epoch"] for h in history] == [1, 2, 3, 4, 5]          # epochs 3, 4, 5 did not beat epoch 2
    stop = [line for line in logs if line.startswith("early stop")]
    assert stop == ["early stop after epoch 5 of 8: val miou has not improved on 0.5000 (epoch 2) for 3 epochs, "
                    "patience 3; best.ckpt holds epoch 2"]
    assert load_checkpoint(tmp_path / "run" / "best.ckpt")["epoch"] == 2
    assert load_checkpoint(tmp_path / "run" / "last.ckpt")["bad_epochs"] == 3
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["best_epoch"] == 2 and "has not improved" in metrics["stopped_early"]
    assert Trainer(tiny_config(tmp_path, epochs=8, early_stop=3), resume=load_checkpoint(tmp_path / "run" / "last.ckpt"),
                   log=logs.append).fit() == history                  # resuming a stopped run does nothing ...
    assert logs[-1].startswith("nothing to do: the run stopped early after epoch 5")


def test_without_patience_it_runs_every_epoch(tmp_path, monkeypatch):
    trainer = Trainer(tiny_config(tmp_path, epochs=6), log=lambda *_: None)
    script_scores(monkeypatch, trainer)
    assert len(trainer.fit()) == 6


def test_raising_the_patience_on_resume_continues(tmp_path, monkeypatch):
    first = Trainer(tiny_config(tmp_path, epochs=8, early_stop=2), log=lambda *_: None)
    script_scores(monkeypatch, first)
    assert len(first.fit()) == 4                                     # epochs 3 and 4 did not beat 0.50
    state = load_checkpoint(tmp_path / "run" / "last.ckpt")
    resumed = Trainer(tiny_config(tmp_path, epochs=8, early_stop=4), resume=state, log=lambda *_: None)
    script_scores(monkeypatch, resumed)
    assert [h["epoch"] for h in resumed.fit()] == [1, 2, 3, 4, 5, 6, 7, 8]   # epoch 6 beat it; never 4 bad ones


def test_a_crashed_run_resumed_stops_where_an_unbroken_one_does(tmp_path, monkeypatch):
    """The patience counter travels in the checkpoint: crash in epoch 4 (after one bad epoch), resume."""
    reference = Trainer(tiny_config(tmp_path, name="ref", epochs=8, early_stop=3), log=lambda *_: None)
    script_scores(monkeypatch, reference)
    reference.fit()
    cfg = tiny_config(tmp_path, name="crashed", epochs=8, early_stop=3)
    broken = Trainer(cfg, log=lambda *_: None)
    script_scores(monkeypatch, broken)
    with monkeypatch.context() as patch:
        crash_after(patch, 14)                                       # 4 steps an epoch: mid-epoch 4
        with pytest.raises(Crash):
            broken.fit()
    state = load_checkpoint(tmp_path / "crashed" / "last.ckpt")
    assert (state["epoch"], state["bad_epochs"]) == (3, 1)
    resumed = Trainer(cfg, resume=state, log=lambda *_: None)
    script_scores(monkeypatch, resumed)
    resumed.fit()
    assert untimed(resumed.history) == untimed(reference.history) and len(resumed.history) == 5
    assert resumed.step_losses == reference.step_losses
    assert_same_weights(weights(resumed), weights(reference))


def test_early_stop_from_the_command_line(tmp_path):
    result = run_cli([*TINY, "--epochs", "2", "--early-stop", "1", "--no-plots", "--out", "runs"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    help_text = run_cli(["train", "--help"], cwd=tmp_path).stdout
    assert "--early-stop PATIENCE" in help_text and "--loss" in help_text and "--augment" in help_text
    bad = run_cli(["train", "--early-stop", "-1"], cwd=tmp_path)
    assert bad.returncode == 2 and "must be >= 0" in bad.stderr
