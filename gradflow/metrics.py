"""Segmentation metrics from a confusion matrix: pixel accuracy, mean accuracy, IoU, mIoU.

Everything derives from one (C, C) count matrix ``cm[true, pred]`` (rows are
targets, columns predictions, as in sklearn.metrics.confusion_matrix). Counting
is one ``bincount`` over ``true * C + pred`` per batch, on the device that holds
the predictions; only the small matrix comes back to the host. Accumulating
counts (not averaging per-batch scores) gives the same numbers however the
data is batched.
"""
import numpy as np

from gradflow import backend
from gradflow.tensor import Tensor


def _array(x):
    """The raw array of a Tensor (numpy or cupy) or anything array-like."""
    if isinstance(x, Tensor):
        return x.data
    return x if backend.is_cuda_array(x) else np.asarray(x)


def _class_ids(pred, target):
    """Class ids with the target's shape: logits/scores (N, C, ...) are argmax-ed over dim 1."""
    if pred.ndim == target.ndim + 1:
        pred = pred.argmax(axis=1)
    if pred.shape != target.shape:
        raise ValueError(f"pred shape {tuple(pred.shape)} does not match target shape {tuple(target.shape)} "
                         f"(pass class ids with the target's shape, or scores (N, C, ...))")
    if pred.dtype.kind not in "iub":
        raise ValueError(f"pred with the target's shape must hold integer class ids, got dtype {pred.dtype}")
    return pred


def confusion_matrix(pred, target, num_classes, ignore_index=255):
    """(num_classes, num_classes) int64 counts, ``cm[t, p]`` = pixels of class t predicted p.

    ``pred``: class ids shaped like ``target``, or scores (N, C, ...) reduced by
    argmax over dim 1. Pixels whose target is ``ignore_index`` are not counted.
    Any other target (or predicted) id outside [0, num_classes) raises
    ValueError naming it: such a pixel is a data bug, not something to drop.
    """
    pred, target = _array(pred), _array(target)
    if target.dtype.kind not in "iub":
        raise ValueError(f"target must hold integer class ids, got dtype {target.dtype}")
    pred = _class_ids(pred, target)
    if backend.device_of(pred) != backend.device_of(target):
        raise RuntimeError(f"pred is on {backend.device_of(pred)} but target is on {backend.device_of(target)}")
    xp = backend.get_array_module(target)
    pred, target = pred.ravel().astype(xp.int64), target.ravel().astype(xp.int64)
    if ignore_index is not None:
        keep = target != ignore_index
        pred, target = pred[keep], target[keep]
    for name, ids in (("target", target), ("pred", pred)):
        bad = (ids < 0) | (ids >= num_classes)
        if bool(bad.any()):
            values = backend.to_numpy(xp.unique(ids[bad]))[:10].tolist()
            ignore = "" if ignore_index is None else f" and not ignore_index={ignore_index}"
            raise ValueError(f"{name} has class ids {values} outside [0, {num_classes}){ignore}")
    counts = xp.bincount(target * num_classes + pred, minlength=num_classes * num_classes)
    return backend.to_numpy(counts).reshape(num_classes, num_classes).astype(np.int64)


def _ratio(num, den):
    """num / den with NaN where den is 0, without numpy's divide warnings."""
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    out = np.full(np.broadcast(num, den).shape, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


def _nanmean(values):
    """Mean over the non-NaN entries; NaN (not a warning) when there are none."""
    values = np.asarray(values, dtype=np.float64)
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else float("nan")


def pixel_accuracy(cm):
    """Correct pixels / counted pixels (NaN when nothing was counted)."""
    cm = np.asarray(cm)
    return float(_ratio(np.trace(cm), cm.sum()))


def per_class_accuracy(cm):
    """Recall of each class: cm[c, c] / pixels of class c (NaN for classes absent from the target)."""
    cm = np.asarray(cm)
    return _ratio(np.diag(cm), cm.sum(axis=1))


def mean_accuracy(cm):
    """Mean of per-class accuracy over the classes present in the target."""
    return _nanmean(per_class_accuracy(cm))


def per_class_iou(cm):
    """IoU of each class: TP / (TP + FP + FN); NaN for a class in neither target nor prediction."""
    cm = np.asarray(cm)
    tp = np.diag(cm)
    return _ratio(tp, cm.sum(axis=1) + cm.sum(axis=0) - tp)


def mean_iou(cm):
    """Mean IoU over classes that appear in the target or the prediction (NaNs excluded)."""
    return _nanmean(per_class_iou(cm))


class ConfusionMatrix:
    """Accumulates a confusion matrix over batches; ``compute()`` gives the metrics.

        cm = ConfusionMatrix(num_classes, ignore_index=255)
        for images, masks in loader:
            cm.update(model(images), masks)     # logits (N, C, H, W) or class ids (N, H, W)
        cm.compute()["miou"]
    """

    def __init__(self, num_classes, ignore_index=255):
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self.matrix = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)

    def update(self, pred, target):
        self.matrix += confusion_matrix(pred, target, self.num_classes, self.ignore_index)
        return self

    def reset(self):
        self.matrix[...] = 0

    def compute(self):
        """Plain Python floats and lists, ready for JSON (NaN marks an undefined value)."""
        return {
            "pixel_accuracy": pixel_accuracy(self.matrix),
            "mean_accuracy": mean_accuracy(self.matrix),
            "per_class_iou": per_class_iou(self.matrix).tolist(),
            "miou": mean_iou(self.matrix),
        }


# ---- binary segmentation: one sigmoid channel, foreground IoU and Dice --------------------------
def sigmoid_predictions(logits, threshold=0.5):
    """0/1 class ids (N, ...) from binary logits (N, 1, ...) or (N, ...): 1 where sigmoid(logit) > threshold.

    Compares the logits with logit(threshold) instead of taking the sigmoid (the same
    decision, without an exp per pixel); the ids stay on the logits' device.
    """
    logits = _array(logits)
    if not 0 < threshold < 1:
        raise ValueError(f"threshold must lie strictly between 0 and 1, got {threshold}")
    if logits.ndim >= 3 and logits.shape[1] == 1:
        logits = logits[:, 0]
    return (logits > np.log(threshold / (1 - threshold))).astype(np.int64)


def per_class_dice(cm):
    """Dice (F1) of each class: 2 TP / (2 TP + FP + FN); NaN for a class in neither target nor prediction."""
    cm = np.asarray(cm)
    tp = np.diag(cm)
    return _ratio(2 * tp, cm.sum(axis=1) + cm.sum(axis=0))


class BinaryMetrics:
    """Foreground IoU and Dice of binary segmentation, accumulated over batches.

        metrics = BinaryMetrics(threshold=0.5)
        for images, masks in loader:                 # masks of 0/1 (ignore_index pixels skipped)
            metrics.update(model(images), masks)     # logits (N, 1, H, W), or 0/1 ids (N, H, W)
        metrics.compute()["foreground_iou"]

    Counts go to a 2-class ConfusionMatrix, so ``compute()`` also has its pixel
    accuracy, per-class IoU and mIoU (background and foreground), plus
    "foreground_iou", "foreground_dice" and "per_class_dice".
    """

    def __init__(self, threshold=0.5, ignore_index=255):
        self.threshold = threshold
        self.confusion = ConfusionMatrix(2, ignore_index=ignore_index)

    @property
    def matrix(self):
        return self.confusion.matrix

    def update(self, pred, target):
        pred, target = _array(pred), _array(target)
        if pred.ndim != target.ndim or pred.dtype.kind == "f":     # logits: threshold them
            pred = sigmoid_predictions(pred, self.threshold)
        self.confusion.update(pred, target)
        return self

    def reset(self):
        self.confusion.reset()

    def compute(self):
        metrics = self.confusion.compute()
        iou, dice = per_class_iou(self.matrix), per_class_dice(self.matrix)
        metrics.update(foreground_iou=float(iou[1]), foreground_dice=float(dice[1]), per_class_dice=dice.tolist())
        return metrics
