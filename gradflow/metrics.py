"""Segmentation metrics from a confusion matrix: pixel accuracy, mean accuracy, IoU, mIoU.

Everything derives from one (C, C) count matrix ``cm[true, pred]`` (rows are
targets, columns predictions, as in sklearn.metrics.confusion_matrix). Counting
runs on the device that holds the predictions: a ``bincount`` over
``true * C + pred`` on the CPU, a counting kernel on CUDA. ``ConfusionMatrix``
keeps its counts there and reads them back only when asked (``matrix``,
``compute()``): one transfer per evaluation, none per batch. Accumulating
counts (not averaging per-batch scores) gives the same numbers however the
data is batched.
"""
import numpy as np

from gradflow import backend, transfer
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
    counts = _counts(pred, target, num_classes, ignore_index)
    return transfer.to_host(counts).reshape(num_classes, num_classes)


def _counts(pred, target, num_classes, ignore_index):
    """The flat (C*C,) int64 counts on the inputs' device. On CUDA an out-of-range id
    is reported at the next host read (gradflow.transfer.check_later), not here."""
    pred, target = _array(pred), _array(target)
    if target.dtype.kind not in "iub":
        raise ValueError(f"target must hold integer class ids, got dtype {target.dtype}")
    pred = _class_ids(pred, target)
    if backend.device_of(pred) != backend.device_of(target):
        raise RuntimeError(f"pred is on {backend.device_of(pred)} but target is on {backend.device_of(target)}")
    xp = backend.get_array_module(target)
    pred, target = pred.ravel().astype(xp.int64), target.ravel().astype(xp.int64)
    if backend.is_cuda_array(target):
        from gradflow.kernels.cuda import metrics as cuda_metrics
        counts = xp.zeros(num_classes * num_classes, dtype=xp.int64)
        bad = cuda_metrics.count_pairs(pred, target, num_classes, ignore_index, counts)

        def raise_error():   # the target's ids first, as on the CPU
            name = "target" if bool(bad[0]) else "pred"
            _raise_out_of_range(name, pred, target, num_classes, ignore_index)
        transfer.check_later(bad.any(), raise_error)
        return counts
    if ignore_index is not None:
        keep = target != ignore_index
        pred, target = pred[keep], target[keep]
    for name, ids in (("target", target), ("pred", pred)):
        if bool(((ids < 0) | (ids >= num_classes)).any()):
            _raise_out_of_range(name, pred, target, num_classes, ignore_index)
    return np.bincount(target * num_classes + pred, minlength=num_classes * num_classes).astype(np.int64)


def _raise_out_of_range(name, pred, target, num_classes, ignore_index):
    xp = backend.get_array_module(target)
    if ignore_index is not None:
        keep = target != ignore_index
        pred, target = pred[keep], target[keep]
    ids = target if name == "target" else pred
    if name == "pred":    # as counted: only pixels whose target is in range
        ids = ids[(target >= 0) & (target < num_classes)]
    values = backend.to_numpy(xp.unique(ids[(ids < 0) | (ids >= num_classes)]))[:10].tolist()
    ignore = "" if ignore_index is None else f" and not ignore_index={ignore_index}"
    raise ValueError(f"{name} has class ids {values} outside [0, {num_classes}){ignore}")


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
        self._counts = np.zeros(self.num_classes * self.num_classes, dtype=np.int64)   # on the data's device

    def update(self, pred, target):
        """Add a batch's counts, on the batch's device: no host read."""
        counts = _counts(pred, target, self.num_classes, self.ignore_index)
        if backend.device_of(counts) != backend.device_of(self._counts):
            self._counts = backend.to_device(self._counts, backend.device_of(counts))
        self._counts += counts
        return self

    @property
    def counts(self):
        """The flat (C*C,) int64 counts where they live (the data's device): to read
        back together with other values in one gradflow.transfer.to_host."""
        return self._counts

    @property
    def matrix(self):
        """The (C, C) int64 counts as a read-only NumPy array (one device-to-host transfer
        on CUDA); assign to ``matrix`` to replace the counts."""
        matrix = transfer.to_host(self._counts).reshape(self.num_classes, self.num_classes).copy()
        matrix.flags.writeable = False
        return matrix

    @matrix.setter
    def matrix(self, value):
        value = np.asarray(value, dtype=np.int64)
        if value.shape != (self.num_classes, self.num_classes):
            raise ValueError(f"matrix must have shape {(self.num_classes, self.num_classes)}, got {value.shape}")
        self._counts = backend.to_device(value.reshape(-1).copy(), backend.device_of(self._counts))

    def reset(self):
        self._counts[...] = 0

    def compute(self):
        """Plain Python floats and lists, ready for JSON (NaN marks an undefined value)."""
        return self.scores(self.matrix)

    @staticmethod
    def scores(matrix):
        """compute()'s dict for a (C, C) host count matrix."""
        return {
            "pixel_accuracy": pixel_accuracy(matrix),
            "mean_accuracy": mean_accuracy(matrix),
            "per_class_iou": per_class_iou(matrix).tolist(),
            "miou": mean_iou(matrix),
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

    @matrix.setter
    def matrix(self, value):
        self.confusion.matrix = value

    @property
    def counts(self):
        return self.confusion.counts

    def update(self, pred, target):
        pred, target = _array(pred), _array(target)
        if pred.ndim != target.ndim or pred.dtype.kind == "f":     # logits: threshold them
            pred = sigmoid_predictions(pred, self.threshold)
        self.confusion.update(pred, target)
        return self

    def reset(self):
        self.confusion.reset()

    def compute(self):
        return self.scores(self.matrix)

    @staticmethod
    def scores(matrix):
        """compute()'s dict for a (2, 2) host count matrix."""
        metrics = ConfusionMatrix.scores(matrix)
        iou, dice = per_class_iou(matrix), per_class_dice(matrix)
        metrics.update(foreground_iou=float(iou[1]), foreground_dice=float(dice[1]), per_class_dice=dice.tolist())
        return metrics
