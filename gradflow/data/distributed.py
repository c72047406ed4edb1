"""DistributedSampler: each rank's share of a dataset, as PyTorch's, plus an exact-resume state."""
import math

import numpy as np

from gradflow.data.loader import shuffled_order


class DistributedSampler:
    """Indices of ``dataset`` for rank ``rank`` of ``num_replicas`` (default: from the process group).

    Every rank builds the same order (when ``shuffle``, the permutation a
    ``DataLoader(shuffle=True, seed=seed)`` visits in that epoch) and takes every
    ``num_replicas``-th index starting at its rank, so the shards are
    disjoint and together cover the dataset. When the length does not divide evenly,
    ``drop_last=False`` repeats the first indices so that every rank gets
    ``ceil(n / num_replicas)`` (those few samples are seen twice per epoch) and
    ``drop_last=True`` drops the tail so that every rank gets ``floor(n / num_replicas)``.
    Call ``set_epoch(epoch)`` at the start of every epoch to reshuffle.

    So with ``drop_last`` and a per-rank batch of B, batch k of all ranks together is
    batch k of a one-process loader with batch ``B * num_replicas`` and the same seed.

    Resume: ``state_dict()`` holds the epoch and how many indices this rank has already
    yielded in it; after ``load_state_dict`` iteration continues right after them. A
    DataLoader given this sampler uses ``indices(epoch)`` and keeps the position itself.
    """

    def __init__(self, dataset, num_replicas=None, rank=None, shuffle=True, seed=0, drop_last=False):
        if num_replicas is None or rank is None:
            from gradflow import distributed as dist
            group = dist.default_group("DistributedSampler (without num_replicas and rank)")
            num_replicas = group.world_size if num_replicas is None else num_replicas
            rank = group.rank if rank is None else rank
        if not isinstance(num_replicas, (int, np.integer)) or num_replicas < 1:
            raise ValueError(f"num_replicas must be a positive integer, got {num_replicas!r}")
        if not isinstance(rank, (int, np.integer)) or not 0 <= rank < num_replicas:
            raise ValueError(f"Invalid rank {rank!r}, rank should be in the interval [0, {num_replicas - 1}]")
        self.dataset = dataset
        self.num_replicas, self.rank = int(num_replicas), int(rank)
        self.shuffle, self.drop_last = bool(shuffle), bool(drop_last)
        self.seed = int(seed) % 2 ** 64
        n = len(dataset)
        if self.drop_last and n % self.num_replicas:
            self.num_samples = n // self.num_replicas
        else:
            self.num_samples = math.ceil(n / self.num_replicas)
        self.total_size = self.num_samples * self.num_replicas
        self.epoch = 0
        self.position = 0
        self._resume_pending = False

    def __len__(self):
        return self.num_samples

    def indices(self, epoch):
        """This rank's dataset indices for ``epoch``, in order."""
        n = len(self.dataset)
        order = shuffled_order(self.seed, epoch, n) if self.shuffle else np.arange(n)
        if self.total_size > n:
            order = np.resize(order, self.total_size)     # repeats from the start: PyTorch's padding
        return order[self.rank:self.total_size:self.num_replicas]

    def set_epoch(self, epoch):
        """Use ``epoch``'s shuffle from its start (kept at the restored position right after a resume)."""
        epoch = int(epoch)
        if epoch == self.epoch and self._resume_pending:
            return
        self.epoch, self.position, self._resume_pending = epoch, 0, False

    def __iter__(self):
        self._resume_pending = False
        order = self.indices(self.epoch)
        while self.position < len(order):
            index = int(order[self.position])
            self.position += 1
            yield index
        self.position = 0

    def state_dict(self):
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed,
                "num_replicas": self.num_replicas, "rank": self.rank, "shuffle": self.shuffle,
                "drop_last": self.drop_last, "dataset_len": len(self.dataset)}

    def load_state_dict(self, state):
        self.check_compatible(state)
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self._resume_pending = self.position > 0

    def check_compatible(self, state):
        """Raise unless ``state`` describes the same sharding, so its order can be replayed exactly."""
        for key, mine in (("num_replicas", self.num_replicas), ("dataset_len", len(self.dataset)),
                          ("seed", self.seed), ("shuffle", self.shuffle), ("drop_last", self.drop_last)):
            if state.get(key, mine) != mine:
                raise ValueError(f"sampler state has {key}={state[key]!r} but this sampler has {key}={mine!r}; "
                                 "an exact resume needs the same world size, dataset and settings")
