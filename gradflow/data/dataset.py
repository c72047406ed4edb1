"""Dataset protocol and the two helpers every training script needs: Subset and random_split.

A dataset maps an index to one ``(image, mask)`` pair of numpy arrays: image float32
(C, H, W), mask int64 (H, W). Samples stay numpy (not Tensors) so transforms and
collation are plain array code; the DataLoader makes Tensors once per batch.
"""
import abc
import math
import numbers

import numpy as np

from gradflow import random as gf_random

# Mask value of pixels that count for nothing: no loss, no metric (PyTorch's segmentation convention).
IGNORE_INDEX = 255


def check_index(index, length):
    """Normalise ``index`` (negative allowed, as for lists) or raise IndexError.

    IndexError (not ValueError) so that ``for sample in dataset`` stops at the end
    through Python's old sequence-iteration protocol, as it does for lists.
    """
    if not isinstance(index, numbers.Integral):
        raise TypeError(f"dataset indices must be integers, got {type(index).__name__}")
    index = int(index)
    if index < -length or index >= length:
        raise IndexError(f"index {index} out of range for a dataset of {length} samples")
    return index % length


class Dataset(abc.ABC):
    """Abstract map-style dataset: ``len(ds)`` samples, ``ds[i] -> (image, mask)``.

    Subclasses may set ``num_classes`` and ``class_names`` so training code can
    size the model's output layer without knowing which dataset it got.
    """

    @abc.abstractmethod
    def __len__(self):
        ...

    @abc.abstractmethod
    def __getitem__(self, index):
        ...


class Subset(Dataset):
    """The samples of ``dataset`` at ``indices``, in that order (a view, no copy)."""

    def __init__(self, dataset, indices):
        self.dataset = dataset
        self.indices = [check_index(i, len(dataset)) for i in indices]

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, index):
        return self.dataset[self.indices[check_index(index, len(self))]]

    # Forward the class description so a split is as usable as the whole dataset.
    @property
    def num_classes(self):
        return self.dataset.num_classes

    @property
    def class_names(self):
        return self.dataset.class_names


def _split_lengths(lengths, total):
    """Integer lengths from integers or fractions, as torch.utils.data.random_split."""
    lengths = list(lengths)
    if all(isinstance(n, numbers.Integral) for n in lengths):
        lengths = [int(n) for n in lengths]
        if any(n < 0 for n in lengths) or sum(lengths) != total:
            raise ValueError(f"split lengths {lengths} must be non-negative and sum to the dataset size {total}")
        return lengths
    if any(f < 0 or f > 1 for f in lengths) or not math.isclose(sum(lengths), 1.0, abs_tol=1e-6):
        raise ValueError(f"split fractions {lengths} must lie in [0, 1] and sum to 1")
    counts = [int(math.floor(total * f)) for f in lengths]
    for i in range(total - sum(counts)):      # hand the remainder out round-robin, like PyTorch
        counts[i % len(counts)] += 1
    return counts


def random_split(dataset, lengths, seed=None):
    """Split ``dataset`` into non-overlapping random Subsets of the given lengths.

    ``lengths`` are sample counts summing to ``len(dataset)`` or fractions summing
    to 1. The permutation comes from ``seed``, or from gradflow's RNG when ``seed``
    is None (so ``gf.manual_seed`` fixes it); the same seed and size always give
    the same split, which is what keeps train and validation disjoint across runs.
    """
    counts = _split_lengths(lengths, len(dataset))
    rng = gf_random.generator() if seed is None else np.random.default_rng(seed)
    order = rng.permutation(len(dataset))
    splits, start = [], 0
    for n in counts:
        splits.append(Subset(dataset, order[start:start + n].tolist()))
        start += n
    return splits
