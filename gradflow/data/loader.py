"""DataLoader: batches of (images, masks) Tensors with reproducible, resumable order.

Randomness is derived, never drawn from a running stream: the shuffle order of
epoch ``e`` comes from ``(seed, e)`` and the augmentation of dataset sample ``i``
in epoch ``e`` from ``(seed, e, i)``. So the loader's whole state is three
integers (seed, epoch, position), and restoring them from a checkpoint replays
the rest of an interrupted epoch exactly, batch for batch.
"""
import numpy as np

from gradflow import backend
from gradflow import random as gf_random
from gradflow.tensor import Tensor

_ORDER_STREAM, _TRANSFORM_STREAM = 0, 1     # keep shuffle and augmentation draws independent


def shuffled_order(seed, epoch, n):
    """The permutation of range(n) that epoch ``epoch`` of a loader (or sampler) seeded ``seed`` visits."""
    return np.random.default_rng((seed, _ORDER_STREAM, int(epoch))).permutation(n)


def collate(samples):
    """Stack (image, mask) pairs into one contiguous float32 (N,C,H,W) and int64 (N,H,W) array."""
    first_image, first_mask = samples[0]
    images = np.empty((len(samples),) + np.shape(first_image), dtype=np.float32)
    masks = np.empty((len(samples),) + np.shape(first_mask), dtype=np.int64)
    for k, (image, mask) in enumerate(samples):
        if np.shape(image) != images.shape[1:] or np.shape(mask) != masks.shape[1:]:
            raise ValueError(
                f"cannot batch samples of different sizes: sample 0 has image {images.shape[1:]} / mask "
                f"{masks.shape[1:]}, sample {k} has {np.shape(image)} / {np.shape(mask)}; give the dataset an "
                f"image_size or add a RandomCrop/Resize transform")
        images[k] = image
        masks[k] = mask
    return images, masks


class DataLoader:
    """Iterate ``dataset`` in batches of ``(images, masks)`` gradflow Tensors.

    images are float32 (N, C, H, W), masks int64 (N, H, W), on ``device`` (default:
    gradflow's default device). ``transform(image, mask, rng)`` is applied to each
    sample before collation.

    Order: with ``shuffle`` each epoch has its own permutation, from ``seed`` and
    the epoch number. With ``seed=None`` one seed is drawn from gradflow's RNG when
    the loader is built, so ``gf.manual_seed`` makes runs repeat. Iterating to the
    end advances the epoch; so does starting a new iteration after abandoning one
    part-way, as with PyTorch's loader. ``set_epoch(e)`` picks an epoch explicitly.

    ``sampler`` (e.g. a DistributedSampler, exclusive with ``shuffle``) decides the order
    instead: epoch ``e`` visits ``sampler.indices(e)``.

    Resume: ``state_dict()`` says where the *next* batch comes from (seed, epoch,
    position = samples already yielded this epoch). After ``load_state_dict`` the
    next iteration yields exactly the batches the interrupted run had not yet
    yielded. Once the last batch of an epoch has been yielded the state already
    points at the next epoch, so a checkpoint saved at the end of an epoch
    resumes at the start of the following one.
    """

    def __init__(self, dataset, batch_size=1, shuffle=False, drop_last=False, seed=None, transform=None,
                 device=None, sampler=None):
        if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if sampler is not None and shuffle:
            raise ValueError("sampler option is mutually exclusive with shuffle (the sampler shuffles)")
        if sampler is not None and not callable(getattr(sampler, "indices", None)):
            raise TypeError(f"sampler must have an indices(epoch) method, as DistributedSampler does; "
                            f"got {type(sampler).__name__}")
        self.sampler = sampler
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self.transform = transform
        self.device = backend.check_device(device)
        if seed is None:
            seed = int(gf_random.generator().integers(0, 2 ** 63))
        self.seed = int(seed) % 2 ** 64     # SeedSequence needs non-negative entropy
        self.epoch = 0
        self.position = 0
        self._resume_pending = False

    def __len__(self):
        """Batches in one full epoch."""
        n = len(self.dataset) if self.sampler is None else len(self.sampler)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    # ---- order and randomness ----------------------------------------------------------
    def order(self, epoch=None):
        """Dataset indices in the order epoch ``epoch`` (default: the current one) visits them."""
        epoch = self.epoch if epoch is None else epoch
        if self.sampler is not None:
            return self.sampler.indices(epoch)
        n = len(self.dataset)
        if not self.shuffle:
            return np.arange(n)
        return shuffled_order(self.seed, epoch, n)

    def sample_rng(self, epoch, index):
        """The generator the transform gets for dataset sample ``index`` in ``epoch``."""
        return np.random.default_rng((self.seed, _TRANSFORM_STREAM, epoch, int(index)))

    def set_epoch(self, epoch):
        """Make the next iteration run epoch ``epoch`` from its start.

        The one exception is a resume: right after ``load_state_dict``, calling it
        with the restored epoch keeps the restored position, so a trainer can call
        ``set_epoch`` at the top of every epoch, resumed or not."""
        epoch = int(epoch)
        if epoch == self.epoch and self._resume_pending:
            return
        self.epoch, self.position, self._resume_pending = epoch, 0, False

    # ---- checkpointing -----------------------------------------------------------------
    def state_dict(self):
        state = {"seed": self.seed, "epoch": self.epoch, "position": self.position,
                 "batch_size": self.batch_size, "shuffle": self.shuffle, "dataset_len": len(self.dataset)}
        if self.sampler is not None:
            state["sampler"] = {**self.sampler.state_dict(), "epoch": self.epoch, "position": self.position}
        return state

    def load_state_dict(self, state):
        if state.get("dataset_len", len(self.dataset)) != len(self.dataset):
            raise ValueError(f"loader state is for a dataset of {state['dataset_len']} samples, "
                             f"this one has {len(self.dataset)}; the order would not match")
        if state.get("shuffle", self.shuffle) != self.shuffle:
            raise ValueError(f"loader state has shuffle={state['shuffle']} but this loader has shuffle={self.shuffle}")
        if self.sampler is not None:
            if "sampler" not in state:
                raise ValueError("loader state was saved without a sampler but this loader has one")
            self.sampler.load_state_dict(state["sampler"])
        self.seed = int(state["seed"])
        self.epoch = int(state["epoch"])
        self.position = int(state["position"])
        self._resume_pending = self.position > 0

    # ---- iteration ---------------------------------------------------------------------
    def __iter__(self):
        if self.position > 0 and not self._resume_pending:
            self.epoch, self.position = self.epoch + 1, 0   # previous iteration was abandoned
        self._resume_pending = False
        return self._batches(self.epoch, self.position)

    def _batches(self, epoch, start):
        order = self.order(epoch)
        n = len(order)
        stop = start + (n - start) // self.batch_size * self.batch_size if self.drop_last else n
        starts = range(start, stop, self.batch_size)
        if len(starts) == 0:
            self.epoch, self.position = epoch + 1, 0
            return
        for b in starts:
            end = min(b + self.batch_size, stop)
            batch = self._load(epoch, order[b:end])
            if end >= stop:
                self.epoch, self.position = epoch + 1, 0
            else:
                self.position = end
            yield batch

    def _load(self, epoch, indices):
        samples = []
        for i in indices:
            image, mask = self.dataset[int(i)]
            if self.transform is not None:
                image, mask = self.transform(image, mask, self.sample_rng(epoch, i))
            samples.append((image, mask))
        images, masks = collate(samples)
        return Tensor(backend.to_device(images, self.device)), Tensor(backend.to_device(masks, self.device))
