"""The training engine, in the shape of torchvision's reference scripts: one step, one epoch, evaluation.

    train_step(model, criterion, optimizer, images, masks)   # one update; the place to change how a step runs
    train_one_epoch(run)                                      # a Trainer's epoch, resumable at any step
    evaluate(model, loader, criterion, task)                  # validation metrics and mean loss

The Trainer (models/trainer.py) owns a run's state and calls these; models/cli.py
is the command line (`main`).

A step reads nothing back from the device: on CUDA that would wait for the GPU
(a sync). Its loss and a fused finiteness check (one flag per weight and per
gradient, and one for the loss, computed on the device) are kept, and read back
every ``log_every`` steps, at checkpoints and at the epoch's end, in one transfer
(gradflow.transfer.to_host) with the running confusion matrix. Numerical faults
stop the run there: a non-finite loss or gradient raises NonFiniteError naming the
epoch, the step and the parameters whose gradient broke; the steps after it are
not checkpointed, so the last checkpoint is the last good state.
"""
import os
import time

import numpy as np

import gradflow as gf
import gradflow.nn
from gradflow import backend, transfer
from models.utils import NonFiniteError, progress_bar


def train_step(model, criterion, optimizer, images, masks, clip_grad=None):
    """Forward, loss, backward, finiteness check, gradient clipping, update: no host read.

    Returns ``(loss, health, logits)``: the loss as a 0-d device array, the check as
    a device bool array ``[loss, weight of each parameter..., gradient of each
    parameter...]`` (True: NaN/Inf; weights as they were before the update, in
    model.parameters() order) and the detached logits.
    """
    logits = model(images)
    loss = criterion(logits, masks)
    optimizer.zero_grad()
    loss.backward()
    params = list(model.parameters())
    health = transfer.nonfinite_each([loss.data] + [p.data for p in params]
                                     + [None if p.grad is None else p.grad.data for p in params])
    if clip_grad:
        gf.nn.utils.clip_grad_norm_(params, clip_grad)
    optimizer.step()
    return loss.data, health, logits.detach()


def train_one_epoch(run):
    """Train ``run`` (a Trainer) from its current step to the end of its current epoch.

    Brings the run's counters and running statistics (loss, images, seconds, the
    confusion matrix) up to date at every read-back (``read_back``), and writes a
    checkpoint every ``ckpt_every`` global steps right after one, so a checkpoint
    resumes exactly. Returns the epoch's training metrics.
    """
    cfg, stats = run.cfg, run.running
    steps = len(run.loader)
    run.model.train()
    run.loader.set_epoch(run.epoch)
    bar = progress_bar(cfg.progress and run.parallel.is_main, steps, run.step, f"epoch {run.epoch + 1}/{cfg.epochs}")
    metric = run.task.metric()      # this process's counts since the last read-back
    started = time.perf_counter() - stats["seconds"]
    unread = []            # (loss, health) of the steps since the last read-back
    for images, masks in run.loader:
        loss, health, logits = train_step(run.train_model, run.criterion, run.optimizer, images, masks,
                                          cfg.clip_grad)
        if run.scheduler_mode == "iteration":
            run.scheduler.step()
        metric.update(logits, masks)
        del logits
        unread.append((loss, health))
        run.step += 1
        run.global_step += 1
        stats["steps"] += 1
        stats["images"] += images.shape[0] * run.parallel.world_size
        if bar is not None:
            bar.update(1)
        checkpoint_due = cfg.ckpt_every and run.global_step % cfg.ckpt_every == 0 and run.step < steps
        if checkpoint_due or len(unread) >= cfg.log_every:
            read_back(run, metric, unread, bar, started)
            unread = []
        if checkpoint_due:
            run.save("last.ckpt")
    if unread:
        read_back(run, metric, unread, bar, started)
    if bar is not None:
        bar.close()
    return metric.scores(stats["confusion"])


def read_back(run, metric, unread, bar, started):
    """The one device-to-host transfer of a logging interval: the steps' losses and
    finiteness checks and the metric's counts of those steps (then reset). In a
    data-parallel run they are combined over ranks (mean loss, any flag, summed
    counts), so every rank stops at the same step and rank 0's checkpoints hold the
    whole run's statistics. Raises NonFiniteError for the first step with a NaN/Inf;
    otherwise updates the run's statistics."""
    stats, parallel = run.running, run.parallel
    xp = backend.get_array_module(unread[0][0])
    losses, health, counts = transfer.to_host(xp.stack([loss for loss, _ in unread]),
                                              xp.stack([flags for _, flags in unread]), metric.counts)
    if parallel.enabled:
        packed = parallel.sum(np.concatenate([losses, health.ravel(), counts]).astype(np.float64))
        losses, packed = packed[:losses.size] / parallel.world_size, packed[losses.size:]
        health, counts = packed[:health.size].reshape(health.shape) > 0, np.rint(packed[health.size:])
    first = run.global_step - len(unread)
    for k, (loss_value, flags) in enumerate(zip(losses.tolist(), health)):
        if flags.any():
            raise NonFiniteError(_where_it_broke(run, first + k, len(unread) - k, loss_value, flags))
        run.step_losses.append(loss_value)
        stats["loss_sum"] += loss_value
    stats["confusion"] = stats["confusion"] + counts.astype(np.int64).reshape(stats["confusion"].shape)
    metric.reset()      # after the sum: on the CPU, to_host may hand back the counts array itself
    stats["seconds"] = time.perf_counter() - started
    if bar is not None:
        monitor = run.task.monitor
        score = metric.scores(stats["confusion"])[monitor]
        bar.set_postfix(loss=f"{run.step_losses[-1]:.4f}", **{monitor: f"{score:.3f}"},
                        img_s=f"{stats['images'] / max(stats['seconds'], 1e-9):.1f}", refresh=False)


def _where_it_broke(run, global_step, steps_back, loss_value, flags):
    """NonFiniteError's message for the step at 0-based ``global_step`` (``steps_back`` steps
    before the current one), from its health flags [loss, weights..., gradients...]."""
    names = [name for name, _ in run.model.named_parameters()]
    weights, grads = flags[1:1 + len(names)], flags[1 + len(names):]
    if weights.any():
        culprit = f"parameter {names[weights.argmax()]} already holds NaN/Inf"
    elif grads.any():
        bad = [name for name, flag in zip(names, grads) if flag]
        culprit = (f"{len(bad)} of {len(names)} parameters have NaN/Inf gradients; "
                   f"first: {bad[0]}, last: {bad[-1]} (in model order)")
    else:
        culprit = "every parameter and gradient is finite (the input or the loss overflowed)"
    what = "loss" if flags[0] else "gradient"
    step = run.step - steps_back
    where = f"epoch {run.epoch + 1}, step {step + 1} (global step {global_step + 1})"
    last = os.path.join(run.run_dir, "last.ckpt")
    saved = f"the last good checkpoint is {last}" if os.path.exists(last) else "no checkpoint was written yet"
    return (f"non-finite {what} (loss {loss_value}) at {where}; {culprit}. Training stopped: nothing after "
            f"the last good step is saved; {saved}. Lower --lr or set --clip-grad.")


def evaluate(model, loader, criterion, task, parallel=None):
    """Validation metrics (pixel/mean accuracy, per-class IoU, mIoU; binary: also foreground IoU and
    Dice) and the loss, averaged over samples; losses and counts come back in one transfer at the end.
    With ``parallel`` (a data-parallel run) each rank's loader holds its shard and the sums are combined."""
    was_training = model.training
    model.eval()
    metric = task.metric()
    losses, sizes = [], []
    with gf.no_grad():
        for images, masks in loader:
            logits = model(images)
            losses.append(criterion(logits, masks).data)
            sizes.append(images.shape[0])
            metric.update(logits, masks)
    model.train(was_training)
    if losses:
        values, counts = transfer.to_host(backend.get_array_module(losses[0]).stack(losses), metric.counts)
    else:
        values, counts = np.zeros(0), transfer.to_host(metric.counts)
    loss_sum, samples = sum(value * size for value, size in zip(values.tolist(), sizes)), sum(sizes)
    if parallel is not None and parallel.enabled:      # every rank gets here, even with an empty shard
        packed = parallel.sum(np.concatenate([[loss_sum, samples], counts]).astype(np.float64))
        loss_sum, samples, counts = float(packed[0]), int(packed[1]), np.rint(packed[2:]).astype(np.int64)
    side = int(round(counts.size ** 0.5))
    metrics = metric.scores(counts.reshape(side, side))
    metrics["loss"] = loss_sum / max(samples, 1)
    return metrics


def predict(model, images, task):
    """Class ids (N, H, W) numpy for a batch Tensor of images."""
    was_training = model.training
    model.eval()
    with gf.no_grad():
        ids = backend.to_numpy(task.predictions(model(images).data))
    model.train(was_training)
    return ids
