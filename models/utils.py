"""Small helpers of the trainer: non-finite checks, JSON and metric formatting, the progress bar."""
import json
import math
import os
import sys

from gradflow import backend


class NonFiniteError(RuntimeError):
    """Training produced NaN/Inf; the message names epoch, step and (where known) the parameter."""


def first_nonfinite(named_tensors):
    """Name of the first tensor in (name, tensor) pairs holding NaN/Inf, else None."""
    for name, t in named_tensors:
        if t is not None and not bool(backend.get_array_module(t.data).isfinite(t.data).all()):
            return name
    return None


def nonfinite_culprit(model):
    """Which parameters hold or received NaN/Inf, in words, for a NonFiniteError message."""
    named = list(model.named_parameters())
    weight = first_nonfinite(named)
    if weight is not None:
        return f"parameter {weight} already holds NaN/Inf"
    bad_grads = [name for name, p in named if first_nonfinite([(name, p.grad)])]
    if bad_grads:
        return (f"{len(bad_grads)} of {len(named)} parameters have NaN/Inf gradients; "
                f"first: {bad_grads[0]}, last: {bad_grads[-1]} (in model order)")
    return "every parameter and gradient is finite (the input or the loss overflowed)"


def write_json(obj, path):
    """Atomic like the checkpoints: a reader never sees half a file."""
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1, allow_nan=True)
    os.replace(tmp, path)


def format_metrics(metrics, class_names):
    """The metrics table the CLI prints: overall scores, then IoU per class."""
    lines = [f"  pixel accuracy  {metrics['pixel_accuracy']:.4f}",
             f"  mean accuracy   {metrics['mean_accuracy']:.4f}",
             f"  mIoU            {metrics['miou']:.4f}"]
    if "loss" in metrics:
        lines.append(f"  loss            {metrics['loss']:.4f}")
    width = max(len("class"), *(len(str(n)) for n in class_names))
    lines.append(f"  {'class':<{width}}  IoU")
    for name, iou in zip(class_names, metrics["per_class_iou"]):
        lines.append(f"  {str(name):<{width}}  {'  n/a' if math.isnan(iou) else f'{iou:.4f}'}")
    return "\n".join(lines)


def progress_bar(enabled, total, initial, desc):
    """A tqdm bar on stderr, or None when ``enabled`` is false."""
    if not enabled:
        return None
    from tqdm import tqdm
    return tqdm(total=total, initial=initial, desc=desc, unit="batch", leave=False, dynamic_ncols=True,
                file=sys.stderr, mininterval=0.5)
