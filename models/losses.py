"""`--loss {ce, bce, dice, bce+dice}` and `--class-weights`: the training criterion of a Task.

    ce        cross-entropy over C softmax channels (class weights: per class)
    bce       binary cross-entropy of the one sigmoid channel (class weights: background, foreground)
    dice      soft Dice: of the sigmoid channel on binary data, of the softmax on C classes
    bce+dice  their sum, the usual recipe for binary masks with a small foreground

Each criterion is ``criterion(logits, masks) -> scalar``, a mean over the counted
pixels (255 = ignore is left out). Class weights scale the cross-entropy terms;
Dice is left unweighted (it already scores each class by its own overlap).
`auto` weights are the inverse class frequency, normalised like sklearn's
"balanced": weight_c = 1 / (C * share_c), so equal shares give weight 1.
"""
import numpy as np

import gradflow as gf
import gradflow.nn.functional as F
from gradflow import backend
from gradflow.data import IGNORE_INDEX
from gradflow.tensor import Tensor

LOSSES = ("ce", "bce", "dice", "bce+dice")


def parse_class_weights(text):
    """`auto`, or comma-separated positive numbers, as given to --class-weights."""
    if text == "auto":
        return text
    try:
        weights = [float(v) for v in text.split(",")]
    except ValueError:
        raise ValueError(f"--class-weights must be 'auto' or comma-separated numbers, got {text!r}") from None
    if not all(w >= 0 and np.isfinite(w) for w in weights) or not any(weights):
        raise ValueError(f"class weights must be finite, non-negative and not all 0, got {text!r}")
    return weights


def class_frequencies(dataset, num_classes, max_samples=1000):
    """Pixel share of each class over up to ``max_samples`` masks spread evenly over ``dataset``."""
    picks = np.unique(np.linspace(0, len(dataset) - 1, min(len(dataset), max_samples)).astype(int))
    counts = np.zeros(num_classes, dtype=np.int64)
    for i in picks:
        mask = np.asarray(dataset[int(i)][1]).ravel()
        counts += np.bincount(mask[mask != IGNORE_INDEX], minlength=num_classes)[:num_classes]
    return counts / max(counts.sum(), 1)


def resolve_class_weights(spec, task, train_set):
    """None, or a list of ``task.num_classes`` weights from a parsed --class-weights value."""
    if spec is None:
        return None
    if spec == "auto":
        shares = class_frequencies(task.wrap(train_set), task.num_classes)
        # a class with no pixels has nothing to weigh: 1 keeps the numbers readable
        return [float(1.0 / (task.num_classes * s)) if s > 0 else 1.0 for s in shares]
    if len(spec) != task.num_classes:
        raise ValueError(f"--class-weights gives {len(spec)} weights but the data has {task.num_classes} classes "
                         f"({', '.join(map(str, task.class_names))})")
    return [float(w) for w in spec]


def make_criterion(loss, task, class_weights=None, device="cpu"):
    """``criterion(logits, masks)`` for ``loss`` on ``task`` (see the module docstring)."""
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; choose one of {', '.join(LOSSES)}")
    weights = None if class_weights is None else gf.tensor(np.asarray(class_weights, np.float32), device=device)
    if not task.binary:
        if loss == "ce":
            return lambda logits, masks: F.cross_entropy(logits, masks, weight=weights, ignore_index=IGNORE_INDEX)
        return lambda logits, masks: F.dice_loss(logits, masks, ignore_index=IGNORE_INDEX)
    if loss == "ce":
        raise ValueError("--loss ce trains C softmax channels; a binary task takes bce, dice or bce+dice")

    def bce(logits, masks):
        target = masks.data
        xp = backend.get_array_module(target)
        counted = target != IGNORE_INDEX
        foreground = target == 1
        if weights is None:
            pixel_weight = counted.astype(logits.dtype)
        else:   # PyTorch's weighted mean: sum(w * loss) / sum(w), over the counted pixels
            pixel_weight = (xp.where(foreground, weights.data[1], weights.data[0]) * counted).astype(logits.dtype)
        loss_sum = F.binary_cross_entropy_with_logits(logits[:, 0], Tensor(foreground.astype(logits.dtype)),
                                                      weight=Tensor(pixel_weight), reduction="sum")
        return loss_sum / Tensor(xp.maximum(pixel_weight.sum(), 1e-12).astype(logits.dtype))   # stays on the device

    def dice(logits, masks):
        return F.dice_loss(logits, masks, ignore_index=IGNORE_INDEX)

    if loss == "bce":
        return bce
    if loss == "dice":
        return dice
    return lambda logits, masks: bce(logits, masks) + dice(logits, masks)
