"""The training engine, in the shape of torchvision's reference scripts: one step, one epoch, evaluation.

    train_step(model, criterion, optimizer, images, masks)   # one update; the place to change how a step runs
    train_one_epoch(run)                                      # a Trainer's epoch, resumable at any step
    evaluate(model, loader, criterion, num_classes)           # validation metrics and mean loss

The Trainer (models/trainer.py) owns a run's state and calls these; models/cli.py
is the command line (`main`).

Numerical faults stop the run: a non-finite loss or gradient raises
NonFiniteError naming the epoch, the step and the first parameter with a
non-finite gradient, before the optimizer touches the weights.
"""
import math
import os
import time

import gradflow as gf
import gradflow.nn
from gradflow import backend
from gradflow.data import IGNORE_INDEX
from gradflow.metrics import ConfusionMatrix
from models.utils import NonFiniteError, first_nonfinite, nonfinite_culprit, progress_bar


class NonFiniteStep(NonFiniteError):
    """Raised by train_step; train_one_epoch re-raises it as a NonFiniteError that says where."""

    def __init__(self, what, loss_value, culprit):
        super().__init__(f"non-finite {what} (loss {loss_value}); {culprit}")
        self.what, self.loss_value, self.culprit = what, loss_value, culprit


def train_step(model, criterion, optimizer, images, masks, clip_grad=None):
    """Forward, loss, backward, finiteness checks, gradient clipping, update.

    Returns ``(loss value as a float, detached logits)``. Raises NonFiniteStep,
    before the update, when the loss or any gradient holds NaN/Inf (the
    backward still runs for a bad loss, so the message can name the first
    layer whose gradient broke).
    """
    logits = model(images)
    loss = criterion(logits, masks)
    loss_value = float(loss.item())
    optimizer.zero_grad()
    loss.backward()
    if not math.isfinite(loss_value):
        raise NonFiniteStep("loss", loss_value, nonfinite_culprit(model))
    if first_nonfinite((n, p.grad) for n, p in model.named_parameters()) is not None:
        raise NonFiniteStep("gradient", loss_value, nonfinite_culprit(model))
    if clip_grad:
        gf.nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
    optimizer.step()
    return loss_value, logits.detach()


def train_one_epoch(run):
    """Train ``run`` (a Trainer) from its current step to the end of its current epoch.

    Keeps the run's counters and running statistics (loss, images, seconds, the
    confusion matrix) up to date after every step, so a checkpoint written at any
    step resumes exactly; writes one every ``ckpt_every`` global steps. Returns the
    epoch's training metrics.
    """
    cfg, stats = run.cfg, run.running
    steps = len(run.loader)
    run.model.train()
    run.loader.set_epoch(run.epoch)
    bar = progress_bar(cfg.progress, steps, run.step, f"epoch {run.epoch + 1}/{cfg.epochs}")
    cm = ConfusionMatrix(run.num_classes, ignore_index=IGNORE_INDEX)
    cm.matrix[...] = stats["confusion"]
    started = time.perf_counter() - stats["seconds"]
    for images, masks in run.loader:
        try:
            loss_value, logits = train_step(run.model, run.criterion, run.optimizer, images, masks, cfg.clip_grad)
        except NonFiniteStep as exc:
            raise NonFiniteError(_where_it_broke(run, exc)) from None
        if run.scheduler_mode == "iteration":
            run.scheduler.step()
        cm.update(logits, masks)
        del logits
        run.step += 1
        run.global_step += 1
        run.step_losses.append(loss_value)
        stats["loss_sum"] += loss_value
        stats["steps"] += 1
        stats["images"] += images.shape[0]
        stats["seconds"] = time.perf_counter() - started
        stats["confusion"] = cm.matrix
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss_value:.4f}", mIoU=f"{cm.compute()['miou']:.3f}",
                            img_s=f"{stats['images'] / max(stats['seconds'], 1e-9):.1f}", refresh=False)
        if cfg.ckpt_every and run.global_step % cfg.ckpt_every == 0 and run.step < steps:
            run.save("last.ckpt")
    if bar is not None:
        bar.close()
    return cm.compute()


def _where_it_broke(run, exc):
    where = f"epoch {run.epoch + 1}, step {run.step + 1} (global step {run.global_step + 1})"
    last = os.path.join(run.run_dir, "last.ckpt")
    saved = f"the last good checkpoint is {last}" if os.path.exists(last) else "no checkpoint was written yet"
    return (f"non-finite {exc.what} (loss {exc.loss_value}) at {where}; {exc.culprit}. Training stopped "
            f"before the update; {saved}. Lower --lr or set --clip-grad.")


def evaluate(model, loader, criterion, num_classes):
    """Validation metrics (pixel/mean accuracy, per-class IoU, mIoU) and the loss, averaged over samples."""
    was_training = model.training
    model.eval()
    cm = ConfusionMatrix(num_classes, ignore_index=IGNORE_INDEX)
    loss_sum, samples = 0.0, 0
    with gf.no_grad():
        for images, masks in loader:
            logits = model(images)
            loss_sum += float(criterion(logits, masks).item()) * images.shape[0]
            samples += images.shape[0]
            cm.update(logits, masks)
    model.train(was_training)
    metrics = cm.compute()
    metrics["loss"] = loss_sum / max(samples, 1)
    return metrics


def predict(model, images):
    """Class ids (N, H, W) numpy for a batch Tensor of images."""
    was_training = model.training
    model.eval()
    with gf.no_grad():
        ids = backend.to_numpy(model(images).data.argmax(axis=1))
    model.train(was_training)
    return ids
