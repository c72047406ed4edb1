"""gradflow.distributed: collectives between processes, on MPI (CPU) and NCCL (GPU).

Launch one process per CPU worker or per GPU with ``mpirun``; each calls
``init_process_group()`` and then the collectives, which work in place on a
Tensor's own array (no copies)::

    mpirun -n 2 python train.py
    # train.py
    import gradflow.distributed as dist
    dist.init_process_group()            # the world comes from the MPI launcher
    t = gf.tensor([1.0, 2.0])
    dist.all_reduce(t, op=dist.ReduceOp.AVG)

CPU tensors travel over MPI (mpi4py), CUDA tensors over NCCL (``cupy.cuda.nccl``),
whose communicator is created on first use from an id made on rank 0 and
broadcast over MPI. Every collective first compares a small signature (which
collective, dtype, shape, root) across ranks, so mismatched calls fail with an
error naming every rank's tensor instead of corrupting memory or hanging; and
every wait has a deadline (``timeout``), after which the call raises
:class:`DistributedTimeoutError` and the job is aborted rather than left hanging
on a dead or stuck peer.
"""
from gradflow.distributed.group import (DistributedError, DistributedTimeoutError, ProcessGroup, ReduceOp,
                                        SUPPORTED_DTYPES, Work, abort, default_group, destroy_process_group,
                                        init_process_group, is_available, is_initialized, is_nccl_available)
from gradflow.tensor import Tensor

__all__ = ["init_process_group", "destroy_process_group", "is_available", "is_initialized", "is_nccl_available",
           "get_rank", "get_world_size", "barrier", "all_reduce", "broadcast", "all_gather",
           "all_gather_into_tensor", "abort", "ReduceOp", "Work", "ProcessGroup", "DistributedError",
           "DistributedTimeoutError", "SUPPORTED_DTYPES"]


def _group(group, what):
    return default_group(what) if group is None else group


def get_rank(group=None):
    """This process's rank in ``group`` (default: the world)."""
    return _group(group, "get_rank").rank


def get_world_size(group=None):
    return _group(group, "get_world_size").world_size


def barrier(group=None, async_op=False):
    """Wait until every rank has reached this call."""
    return _finish(_group(group, "barrier").barrier(), async_op)


def all_reduce(tensor, op=ReduceOp.SUM, group=None, async_op=False):
    """Reduce ``tensor`` over all ranks with ``op`` and leave the result in it on every rank.

    ``ReduceOp.AVG`` of int64 tensors truncates toward zero (as NCCL does)."""
    g = _group(group, "all_reduce")
    return _finish(g.all_reduce(_array(tensor, "all_reduce", writable=True), ReduceOp.check(op)), async_op)


def broadcast(tensor, src, group=None, async_op=False):
    """Copy rank ``src``'s ``tensor`` into ``tensor`` on every other rank."""
    g = _group(group, "broadcast")
    return _finish(g.broadcast(_array(tensor, "broadcast", writable=True), g.check_rank(src, "src")), async_op)


def all_gather(tensor_list, tensor, group=None, async_op=False):
    """Fill ``tensor_list[r]`` with rank r's ``tensor``, on every rank."""
    g = _group(group, "all_gather")
    data = _array(tensor, "all_gather")
    if not isinstance(tensor_list, (list, tuple)) or len(tensor_list) != g.world_size:
        length = len(tensor_list) if hasattr(tensor_list, "__len__") else "?"
        raise ValueError(f"all_gather: tensor_list must be a list of world_size={g.world_size} tensors, "
                         f"got {type(tensor_list).__name__} of length {length}")
    outputs = [_array(t, f"all_gather: tensor_list[{r}]", writable=True) for r, t in enumerate(tensor_list)]
    for r, out in enumerate(outputs):
        if out.shape != data.shape or out.dtype != data.dtype:
            raise ValueError(f"all_gather: tensor_list[{r}] is {out.dtype} {tuple(out.shape)} but the input is "
                             f"{data.dtype} {tuple(data.shape)}; every output must match the input")
    gathered = g.new_like(data, (g.world_size,) + data.shape)
    work = g.all_gather(gathered, data)

    def scatter_into_list():
        for r, out in enumerate(outputs):
            out[...] = gathered[r]
    work.then(scatter_into_list)
    return _finish(work, async_op)


def all_gather_into_tensor(output_tensor, input_tensor, group=None, async_op=False):
    """Gather every rank's ``input_tensor`` into ``output_tensor`` of shape (world_size * n, ...) or
    (world_size, ...): rank r's part is the r-th block. No copies: MPI/NCCL write the output's buffer."""
    g = _group(group, "all_gather_into_tensor")
    data = _array(input_tensor, "all_gather_into_tensor")
    out = _array(output_tensor, "all_gather_into_tensor: output", writable=True)
    if out.dtype != data.dtype or out.size != data.size * g.world_size:
        raise ValueError(f"all_gather_into_tensor: output must be {data.dtype} with world_size * {data.size} = "
                         f"{data.size * g.world_size} elements, got {out.dtype} {tuple(out.shape)}")
    return _finish(g.all_gather(out, data), async_op)


def _finish(work, async_op):
    if async_op:
        return work
    work.wait()
    return None


def _array(tensor, what, writable=False):
    if not isinstance(tensor, Tensor):
        raise TypeError(f"{what}: expected a gradflow Tensor, got {type(tensor).__name__}")
    data = tensor.data
    if data.dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"{what}: dtype {data.dtype} is not supported; use one of "
                        f"{', '.join(str(d) for d in SUPPORTED_DTYPES)}")
    if not data.flags.c_contiguous:
        raise ValueError(f"{what}: the tensor of shape {tuple(data.shape)} is not contiguous; "
                         "collectives work on the array's own buffer: pass tensor.contiguous()")
    if writable and not data.flags.writeable:
        raise ValueError(f"{what}: the tensor's array is read-only (a broadcast view?); pass a copy")
    if writable and tensor.requires_grad and tensor._ctx is not None:
        raise RuntimeError(f"{what}: the tensor is part of an autograd graph; collectives write in place, "
                           "so pass tensor.detach() (or work on .grad)")
    return data
