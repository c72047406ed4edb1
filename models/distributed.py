"""Data-parallel training runs: ``mpirun -n N python models/fcn.py train ...``.

Every process builds the same run from the same options and seed. ``--batch-size``
is the global batch: each of N processes takes batch_size / N images of every step
(a DistributedSampler over the loader's own shuffle), and DistributedDataParallel
averages the gradients, so N processes train the same model as one process does
(equal within float rounding with GroupNorm; BatchNorm normalises per process).

Rank 0 alone writes checkpoints, metrics.json and plots, logs and draws the progress
bar; the others' stdout is silenced. The steps' losses, finiteness flags and confusion
counts are combined over ranks at every read-back (models/train.py), so every rank stops
at the same step, the running statistics in rank 0's checkpoints cover the whole run and
``--resume auto`` continues exactly. Validation is sharded over ranks and
its confusion matrix summed. An error on any rank aborts every rank (with the error
printed); a dead or stuck rank makes the others fail after $GRADFLOW_DIST_TIMEOUT
seconds (default 600) instead of hanging.
"""
import os
import sys

import numpy as np

from gradflow.data import DataLoader, DistributedSampler, Subset

# world size as each MPI launcher exports it: Open MPI, MPICH/Intel MPI (Hydra), MVAPICH
_SIZE_VARIABLES = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE")
TRAINER_TIMEOUT_S = 600.0


def launched_world_size():
    """How many processes the MPI launcher started (1 when run without one)."""
    for name in _SIZE_VARIABLES:
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value)
    return 1


class Parallel:
    """This process's part of a run: rank and world size, and the few places training differs."""

    def __init__(self, rank=0, world_size=1):
        self.rank, self.world_size = rank, world_size

    @classmethod
    def from_launcher(cls):
        """Join the process group when started by mpirun with more than one process."""
        if launched_world_size() <= 1:
            return cls()
        import gradflow.distributed as dist
        if not dist.is_initialized():
            timeout = float(os.environ.get("GRADFLOW_DIST_TIMEOUT", TRAINER_TIMEOUT_S))
            dist.init_process_group(timeout=timeout)
        parallel = cls(dist.get_rank(), dist.get_world_size())
        if not parallel.is_main:
            sys.stdout = open(os.devnull, "w")   # one log: rank 0's (errors still reach stderr)
        return parallel

    @property
    def enabled(self):
        return self.world_size > 1

    @property
    def is_main(self):
        return self.rank == 0

    def wrap(self, model):
        if not self.enabled:
            return model
        from gradflow.nn.parallel import DistributedDataParallel
        return DistributedDataParallel(model)

    def train_loader(self, dataset, batch_size, seed, transform, device):
        if not self.enabled:
            return DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=True, seed=seed,
                              transform=transform, device=device)
        if batch_size % self.world_size:
            raise ValueError(f"--batch-size {batch_size} is the global batch and must divide evenly over "
                             f"{self.world_size} processes")
        sampler = DistributedSampler(dataset, self.world_size, self.rank, shuffle=True, seed=seed, drop_last=True)
        return DataLoader(dataset, batch_size=batch_size // self.world_size, drop_last=True, seed=seed,
                          transform=transform, device=device, sampler=sampler)

    def shard(self, dataset):
        """Every world_size-th sample from this rank's: disjoint, complete, nothing repeated (for evaluation)."""
        return Subset(dataset, range(self.rank, len(dataset), self.world_size)) if self.enabled else dataset

    def sum(self, values):
        """Sum a float64 array over ranks (in place) and return it."""
        if self.enabled:
            import gradflow as gf
            import gradflow.distributed as dist
            t = gf.Tensor(np.ascontiguousarray(values, dtype=np.float64))
            dist.all_reduce(t)
            return t.data
        return values

    def sync_buffers(self, train_model):
        """Rank 0's buffers (BatchNorm running statistics) everywhere, before evaluating or saving."""
        if self.enabled:
            train_model.sync_buffers()


def stop_all(code):
    """After an error on this rank: in a run of several processes, stop them all (they would wait
    forever for this one); else just return the exit code."""
    if code and launched_world_size() > 1:
        import gradflow.distributed as dist
        if dist.is_initialized():
            dist.abort(f"stopping every rank after the error above (exit code {code})", code)
    return code
