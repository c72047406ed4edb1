"""What the model predicts: C classes (softmax) or one binary foreground channel (sigmoid).

Binary segmentation is what `--loss bce`, `--loss bce+dice`, and `--loss dice` on
two-class data train: one output channel, p = sigmoid(logit), a pixel is
foreground where p > 0.5 (BINARY_THRESHOLD), and the metrics are foreground IoU
and Dice. Multi-class Dice (`--loss dice` on more classes) takes the softmax of C
channels.

Masks: class ids with 255 = ignore. A folder dataset whose masks hold only 0 and
255 is read as binary masks of 0/255: there 255 is the foreground (class 1), and
nothing is ignored; masks of 0/1 are binary as they are.
"""
import dataclasses

import numpy as np

from gradflow.data import IGNORE_INDEX, Dataset
from gradflow.metrics import BinaryMetrics, ConfusionMatrix, sigmoid_predictions

BINARY_THRESHOLD = 0.5


@dataclasses.dataclass
class Task:
    num_classes: int                 # classes in the masks (2 for binary)
    class_names: tuple
    binary: bool = False             # one sigmoid output channel instead of num_classes softmax ones
    foreground_255: bool = False     # masks are 0/255: 255 is class 1 (read through BinaryMasks)

    @property
    def output_channels(self):
        return 1 if self.binary else self.num_classes

    @property
    def monitor(self):
        """The validation score that picks best.ckpt, drives the plateau schedule and early stopping."""
        return "foreground_iou" if self.binary else "miou"

    def metric(self):
        """A fresh accumulator: ``update(logits, masks)``, ``compute()``, ``matrix`` (the counts)."""
        if self.binary:
            return BinaryMetrics(threshold=BINARY_THRESHOLD, ignore_index=IGNORE_INDEX)
        return ConfusionMatrix(self.num_classes, ignore_index=IGNORE_INDEX)

    def predictions(self, logits):
        """Class ids (N, H, W) on the logits' device."""
        if self.binary:
            return sigmoid_predictions(logits, BINARY_THRESHOLD)
        return logits.argmax(axis=1)

    def wrap(self, dataset):
        """``dataset`` with its masks as this task reads them."""
        return BinaryMasks(dataset) if self.foreground_255 else dataset


def detect_task(loss, dataset_name, dataset):
    """The Task of training with ``loss`` on ``dataset`` (its train split); explains what does not fit."""
    foreground_255 = dataset_name == "folder" and dataset.num_classes == 1
    num_classes = 2 if foreground_255 else dataset.num_classes
    names = ("background", "foreground") if foreground_255 else tuple(dataset.class_names)
    binary = loss in ("bce", "bce+dice") or (loss == "dice" and num_classes == 2)
    if binary and num_classes != 2:
        raise ValueError(f"--loss {loss} trains binary segmentation (one sigmoid channel) and needs masks of "
                         f"0/1 or 0/255, but this dataset has {num_classes} classes; use --loss ce or dice")
    if num_classes < 2:
        raise ValueError(f"the masks hold a single class ({names[0]}): there is nothing to segment")
    return Task(num_classes, names, binary, foreground_255)


class BinaryMasks(Dataset):
    """A dataset with 0/255 masks as 0/1 class ids (255, the foreground, becomes 1)."""

    def __init__(self, dataset):
        self.dataset = dataset
        self.num_classes, self.class_names = 2, ("background", "foreground")

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        image, mask = self.dataset[index]
        return image, (mask == 255).astype(np.int64)
