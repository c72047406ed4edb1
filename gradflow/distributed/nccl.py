"""NCCL for CUDA arrays, through CuPy's ``cupy.cuda.nccl`` (imported only when a CUDA tensor
meets a collective, so CPU-only installs never need CuPy).

One process per GPU: each rank uses GPU ``local_rank % device_count``, where the local
rank counts the processes on the same machine. Rank 0 makes the NCCL unique id and
MPI broadcasts it; every rank then joins the communicator. Collectives are enqueued on
CuPy's current stream (the one gradflow's kernels run on), zero-copy on the arrays'
device pointers; waiting polls a CUDA event against the group's deadline and aborts the
communicator when it passes, since a NCCL kernel waiting on a dead peer never returns.
"""
import numpy as np

from gradflow.distributed.group import DistributedError, Work, average_in_place


def _import_nccl():
    try:
        import cupy
        from cupy.cuda import nccl
    except Exception as exc:   # ImportError, or CUDA/NCCL libraries failing to load
        raise DistributedError(
            f"the NCCL backend needs CuPy built with NCCL ({type(exc).__name__}: {exc}); install "
            "gradflow[gpu] (cupy-cuda12x) on a machine with NVIDIA GPUs, or use backend='mpi' for CPU tensors") from exc
    if not getattr(nccl, "available", True):
        raise DistributedError("the NCCL backend needs CuPy built with NCCL, but this CuPy has no NCCL support; "
                               "pip install nvidia-nccl-cu12, or use backend='mpi' for CPU tensors")
    return cupy, nccl


class NcclCommunicator:
    def __init__(self, group):
        cupy, nccl = _import_nccl()
        self.cupy, self.nccl, self.group = cupy, nccl, group
        MPI = group.MPI
        n_devices = cupy.cuda.runtime.getDeviceCount()
        if n_devices < 1:
            raise DistributedError("the NCCL backend found no CUDA device on this machine")
        local = group.comm.Split_type(MPI.COMM_TYPE_SHARED)
        local_rank, local_size = local.Get_rank(), local.Get_size()
        local.Free()
        if local_size > n_devices:
            raise DistributedError(f"{local_size} processes share a machine with {n_devices} GPU(s); NCCL needs "
                                   "one GPU per process: start at most as many processes per machine as GPUs")
        self.device = local_rank % n_devices
        cupy.cuda.Device(self.device).use()
        unique_id = nccl.get_unique_id() if group.rank == 0 else None
        unique_id = group.comm.bcast(unique_id, root=0)
        self.comm = nccl.NcclCommunicator(group.world_size, unique_id, group.rank)
        self._types = {np.dtype("float32"): nccl.NCCL_FLOAT32, np.dtype("float64"): nccl.NCCL_FLOAT64,
                       np.dtype("int64"): nccl.NCCL_INT64}
        self._ops = {"sum": nccl.NCCL_SUM, "avg": nccl.NCCL_SUM, "max": nccl.NCCL_MAX, "min": nccl.NCCL_MIN,
                     "product": nccl.NCCL_PROD}

    def _stream(self, array):
        if array.device.id != self.device:
            raise DistributedError(f"this rank's NCCL communicator is on GPU {self.device} but the tensor is on "
                                   f"GPU {array.device.id}")
        return self.cupy.cuda.get_current_stream()

    def _work(self, what, stream):
        event = self.cupy.cuda.Event(block=False, disable_timing=True)
        event.record(stream)
        return Work(self.group, what, event=event)

    def all_reduce(self, array, op):
        stream = self._stream(array)
        self.comm.allReduce(array.data.ptr, array.data.ptr, array.size, self._types[array.dtype], self._ops[op],
                            stream.ptr)
        work = self._work("all_reduce", stream)
        if op == "avg":   # the division is queued on the same stream, after the sum
            average_in_place(array, self.group.world_size)
        return work

    def broadcast(self, array, src):
        stream = self._stream(array)
        self.comm.bcast(array.data.ptr, array.size, self._types[array.dtype], src, stream.ptr)
        return self._work("broadcast", stream)

    def all_gather(self, out, array):
        stream = self._stream(array)
        self.comm.allGather(array.data.ptr, out.data.ptr, array.size, self._types[array.dtype], stream.ptr)
        return self._work("all_gather", stream)

    def abort(self):
        try:
            self.comm.abort()
        except Exception:   # already torn down: nothing left to stop
            pass

    def destroy(self):
        self.comm.destroy()
