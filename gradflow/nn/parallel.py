"""DistributedDataParallel: one model replica per process, gradients averaged across processes.

As PyTorch's DDP: rank 0's parameters and buffers are broadcast when the wrapper is
built, so every replica starts equal; gradients are averaged in buckets of about
``bucket_cap_mb`` (parameters in reverse order, roughly the order backward produces
their gradients), and each bucket's all-reduce starts from a post-accumulate-grad hook
as soon as its last gradient is ready, while backward is still computing the earlier
layers. Buckets are launched in the same order on every rank (MPI and NCCL match
collectives by order). When backward returns, every ``.grad`` holds the average.
"""
import contextlib
import hashlib

import numpy as np

from gradflow import autograd, backend
from gradflow import distributed as dist
from gradflow.nn.module import Module
from gradflow.tensor import Tensor

_FIRST_BUCKET_BYTES = 1 << 20   # small first bucket: its all-reduce starts earliest, as in PyTorch


class _Bucket:
    def __init__(self, params, dtype, device):
        self.params = params
        self.offsets = np.cumsum([0] + [p.numel() for p in params]).tolist()
        self.dtype, self.device = dtype, device
        self.flat = None        # allocated on first use, on the parameters' device
        self.ready = 0
        self.work = None

    def slot(self, k):
        p = self.params[k]
        return self.flat[self.offsets[k]:self.offsets[k + 1]].reshape(p.shape)


class DistributedDataParallel(Module):
    """Wrap ``module`` for data-parallel training; call it like the module.

    process_group: default: the one ``gradflow.distributed.init_process_group`` made.
    bucket_cap_mb: gradient bucket size. broadcast_buffers: copy rank 0's buffers
    (BatchNorm running statistics) to every rank before each forward, so they stay
    identical. find_unused_parameters: find the parameters the output does not depend
    on after each forward and count them as ready (their gradient is averaged as zero;
    a parameter unused on every rank keeps its ``.grad``); without it such a
    parameter leaves the reduction unfinished, which the next forward reports.
    """

    def __init__(self, module, process_group=None, bucket_cap_mb=25, broadcast_buffers=True,
                 find_unused_parameters=False):
        super().__init__()
        if not isinstance(module, Module):
            raise TypeError(f"DistributedDataParallel wraps a gradflow Module, got {type(module).__name__}")
        if not bucket_cap_mb > 0:
            raise ValueError(f"bucket_cap_mb must be positive, got {bucket_cap_mb}")
        self.module = module
        object.__setattr__(self, "process_group",
                           dist.default_group("DistributedDataParallel") if process_group is None else process_group)
        self.broadcast_buffers = bool(broadcast_buffers)
        self.find_unused_parameters = bool(find_unused_parameters)
        self.require_backward_grad_sync = True
        params = [p for p in module.parameters() if p.requires_grad]
        object.__setattr__(self, "_params", params)
        object.__setattr__(self, "_index", {id(p): i for i, p in enumerate(params)})
        self._verify_same_model(params)
        self._broadcast_from_rank0(list(module.parameters()) + list(module.buffers()))
        object.__setattr__(self, "_buckets", _make_buckets(params, bucket_cap_mb * 1e6))
        object.__setattr__(self, "_bucket_of", {id(p): (b, k) for b in self._buckets for k, p in enumerate(b.params)})
        object.__setattr__(self, "_hooks", [p.register_post_accumulate_grad_hook(self._grad_ready) for p in params])
        self._reset()

    # ---- construction -----------------------------------------------------------------------
    def _verify_same_model(self, params):
        # a digest, not hash(): str hashes differ between processes
        layout = repr([(p.shape, str(p.dtype), p.device) for p in params]).encode()
        digest = int.from_bytes(hashlib.blake2b(layout, digest_size=7).digest(), "little")
        mine = [len(params), sum(p.numel() for p in params), digest]
        every = self.process_group.gather_small(mine, "DistributedDataParallel (parameter check)")
        if not (every == every[0]).all():
            counts = "; ".join(f"rank {r}: {int(n)} parameters, {int(e)} elements" for r, (n, e, _) in enumerate(every))
            raise dist.DistributedError(
                "DistributedDataParallel: the model's parameters differ across ranks (count, shape, dtype or "
                f"device): {counts}; every rank must build the same model")

    def _broadcast_from_rank0(self, tensors):
        """Coalesced: one broadcast per dtype/device instead of one per tensor."""
        groups = {}
        for t in tensors:
            if t.dtype in dist.SUPPORTED_DTYPES:
                groups.setdefault((t.dtype, t.device), []).append(t)
        for (dtype, device), group in groups.items():
            xp = backend.xp_for(device)
            flat = xp.concatenate([t.data.reshape(-1) for t in group]) if group else None
            self.process_group.broadcast(flat, 0, check=False).wait()
            start = 0
            for t in group:
                t.data[...] = flat[start:start + t.numel()].reshape(t.shape)
                start += t.numel()

    # ---- forward ---------------------------------------------------------------------------------
    def forward(self, *args, **kwargs):
        if 0 < self._ready_from_backward:
            raise RuntimeError(
                "DistributedDataParallel: the previous iteration's gradient reduction did not finish: "
                f"{len(self._params) - self._n_ready} of {len(self._params)} parameters got no gradient in "
                "backward. Pass find_unused_parameters=True if parts of the model are unused in some "
                "iterations, and make sure every rank calls backward on an output of every forward.")
        if self.broadcast_buffers:
            self.sync_buffers()
        self._reset()
        output = self.module(*args, **kwargs)
        if self.find_unused_parameters and autograd.is_grad_enabled() and self.require_backward_grad_sync:
            used = _leaves_reached_from(output)
            for p in self._params:
                if id(p) not in used:
                    self._mark_ready(p, used=False)
        return output

    def sync_buffers(self):
        """Copy rank 0's buffers (BatchNorm running statistics) to every rank now, e.g. before
        evaluating with ``.module`` or saving (each forward also does it when broadcast_buffers)."""
        buffers = list(self.module.buffers())
        if buffers and self.process_group.world_size > 1:
            self._broadcast_from_rank0(buffers)

    @contextlib.contextmanager
    def no_sync(self):
        """Backward passes inside accumulate gradients locally; the first backward after it
        averages the accumulated total."""
        previous = self.require_backward_grad_sync
        self.require_backward_grad_sync = False
        try:
            yield
        finally:
            self.require_backward_grad_sync = previous

    # ---- the reduction ---------------------------------------------------------------------------
    def _reset(self):
        object.__setattr__(self, "_n_ready", 0)
        object.__setattr__(self, "_ready_from_backward", 0)
        object.__setattr__(self, "_next_bucket", 0)
        object.__setattr__(self, "_used", np.ones(len(self._params), dtype=np.int64))
        object.__setattr__(self, "_marked", np.zeros(len(self._params), dtype=bool))
        for b in self._buckets:
            b.ready, b.work = 0, None

    def _grad_ready(self, param):
        if not self.require_backward_grad_sync:
            return
        object.__setattr__(self, "_ready_from_backward", self._ready_from_backward + 1)
        self._mark_ready(param, used=True)

    def _mark_ready(self, param, used):
        i = self._index[id(param)]
        if self._marked[i]:
            raise RuntimeError(
                "DistributedDataParallel: a parameter was marked ready twice in one reduction (a second "
                "backward through the same forward's graph, or a parameter counted unused by "
                "find_unused_parameters that got a gradient after all); run forward again before each backward")
        self._marked[i] = True
        bucket, k = self._bucket_of[id(param)]
        if bucket.flat is None:
            bucket.flat = backend.xp_for(bucket.device).empty(bucket.offsets[-1], dtype=bucket.dtype)
        slot = bucket.slot(k)
        if used and param.grad is not None:
            slot[...] = param.grad.data
        else:
            slot[...] = 0
            self._used[i] = 0
        bucket.ready += 1
        object.__setattr__(self, "_n_ready", self._n_ready + 1)
        # launch every bucket that is complete, in bucket order, so all ranks issue the same sequence
        while self._next_bucket < len(self._buckets) and \
                self._buckets[self._next_bucket].ready == len(self._buckets[self._next_bucket].params):
            b = self._buckets[self._next_bucket]
            b.work = self.process_group.all_reduce(b.flat, "sum", check=False)
            object.__setattr__(self, "_next_bucket", self._next_bucket + 1)
        if self._next_bucket == len(self._buckets):
            self._finish()
        else:
            for b in self._buckets[:self._next_bucket]:
                b.work.is_completed()     # MPI moves non-blocking collectives on only inside MPI calls

    def _finish(self):
        used_anywhere = None
        if self.find_unused_parameters:
            # on the buckets' device: a NCCL-only group carries no CPU arrays
            used_anywhere = backend.to_device(self._used.copy(), self._buckets[0].device)
            self.process_group.all_reduce(used_anywhere, "max", check=False).wait()
            used_anywhere = backend.to_numpy(used_anywhere)
        world = self.process_group.world_size
        for b in self._buckets:
            b.work.wait()
            for k, p in enumerate(b.params):
                i = self._index[id(p)]
                if used_anywhere is not None and not used_anywhere[i]:
                    continue           # unused on every rank: .grad stays as it was (PyTorch)
                if p.grad is None or not self._used[i]:
                    p.grad = Tensor(b.slot(k) / world)
                else:
                    backend.get_array_module(b.flat).divide(b.slot(k), world, out=p.grad.data)
        self._reset()


def _make_buckets(params, cap_bytes):
    """Reverse parameter order, split by dtype and device, the first bucket capped at 1 MB."""
    buckets, open_by_kind = [], {}     # open_by_kind: (dtype, device) -> [members, bytes, cap]
    for p in reversed(params):
        kind = (p.dtype, p.device)
        current = open_by_kind.get(kind)
        if current is None or (current[0] and current[1] + p.data.nbytes > current[2]):
            current = open_by_kind[kind] = [[], 0, min(_FIRST_BUCKET_BYTES, cap_bytes) if not buckets else cap_bytes]
            buckets.append((kind, current[0]))
        current[0].append(p)
        current[1] += p.data.nbytes
    return [_Bucket(members, dtype, device) for (dtype, device), members in buckets]


def _leaves_reached_from(output):
    tensors, stack = [], [output]
    while stack:
        item = stack.pop()
        if isinstance(item, Tensor):
            tensors.append(item)
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item.values())
    reached = {id(t) for t in tensors if t._ctx is None}
    for ctx in autograd._topological_order([t._ctx for t in tensors if t._ctx is not None]):
        for edge in ctx.edges:
            if edge is not None and type(edge) is not tuple:
                reached.add(id(edge))
    return reached
