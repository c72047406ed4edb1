"""gradflow.distributed in one process: errors before init, missing backends, the backend choice
and the NCCL path driven against a stand-in for cupy.cuda.nccl (no GPU here)."""
import sys
import types

import numpy as np
import pytest

import gradflow as gf
import gradflow.distributed as dist
from gradflow.distributed import group as group_module
from gradflow.nn.parallel import DistributedDataParallel


@pytest.mark.parametrize("call", [
    lambda: dist.get_rank(), lambda: dist.get_world_size(), lambda: dist.barrier(),
    lambda: dist.all_reduce(gf.ones(2)), lambda: dist.broadcast(gf.ones(2), src=0),
    lambda: dist.all_gather([gf.ones(2)], gf.ones(2)), lambda: DistributedDataParallel(gf.nn.Linear(2, 2))])
def test_everything_before_init_says_to_init(call):
    assert not dist.is_initialized()
    with pytest.raises(dist.DistributedError, match=r"not initialized; call gradflow.distributed.init_process_group"):
        call()


def test_missing_mpi4py_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "mpi4py", None)
    assert not dist.is_available()
    with pytest.raises(dist.DistributedError, match=r"needs mpi4py.*gradflow\[distributed\]"):
        dist.init_process_group()
    assert not dist.is_initialized()


class FakeComm:
    """The few mpi4py Comm methods the NCCL setup uses, for one rank of ``size``."""

    def __init__(self, rank, size, broadcast_value=None, local_size=1):
        self.rank, self.size, self.broadcast_value = rank, size, broadcast_value
        self.local_size = local_size    # processes on this machine (one machine each, by default)
        self.bcasts = []

    def Get_rank(self):
        return self.rank

    def Get_size(self):
        return self.size

    def Split_type(self, kind):
        return FakeComm(self.rank % self.local_size, self.local_size)

    def Free(self):
        pass

    def bcast(self, value, root):
        self.bcasts.append((value, root))
        return value if self.rank == root else self.broadcast_value


@pytest.fixture
def fake_mpi(monkeypatch):
    mpi = types.SimpleNamespace(COMM_TYPE_SHARED="shared", IN_PLACE="in place", SUM="sum", MAX="max", MIN="min",
                                PROD="prod")
    monkeypatch.setattr(group_module, "_import_mpi", lambda: mpi)
    return mpi


def test_missing_cupy_makes_the_nccl_backend_fail_clearly(monkeypatch, fake_mpi):
    monkeypatch.setitem(sys.modules, "cupy", None)
    assert not dist.is_nccl_available()
    with pytest.raises(dist.DistributedError, match=r"NCCL backend needs CuPy built with NCCL.*gradflow\[gpu\]"):
        dist.init_process_group(backend="nccl", comm=FakeComm(0, 1))
    assert not dist.is_initialized()
    # picking per tensor: a CPU-only job never touches CuPy
    group = dist.init_process_group(comm=FakeComm(0, 1))
    try:
        assert group.backend == "auto" and not group._uses_nccl(np.zeros(2), "x")
        with pytest.raises(dist.DistributedError, match="NCCL backend needs CuPy"):
            group.nccl()
    finally:
        dist.destroy_process_group()


def test_bad_backend_and_timeout(fake_mpi):
    with pytest.raises(ValueError, match="unknown backend 'gloo'"):
        dist.init_process_group(backend="gloo", comm=FakeComm(0, 1))
    with pytest.raises(ValueError, match="timeout must be positive"):
        dist.init_process_group(comm=FakeComm(0, 1), timeout=0)
    assert not dist.is_initialized()


# ---- a stand-in for CuPy with NCCL, recording what the backend asks of it ----------------------
class FakeDeviceArray:
    __module__ = "cupy._core.core"     # what gradflow.backend takes for a CUDA array

    def __init__(self, n, dtype, ptr):
        self.shape, self.size, self.dtype = (n,), n, np.dtype(dtype)
        self.data = types.SimpleNamespace(ptr=ptr)
        self.device = types.SimpleNamespace(id=0)
        self.flags = types.SimpleNamespace(c_contiguous=True, writeable=True)


def fake_cupy(calls):
    class Communicator:
        def __init__(self, world, unique_id, rank):
            calls.append(("communicator", world, unique_id, rank))

        def allReduce(self, *args):
            calls.append(("allReduce",) + args)

        def bcast(self, *args):
            calls.append(("bcast",) + args)

        def allGather(self, *args):
            calls.append(("allGather",) + args)

        def abort(self):
            calls.append(("abort",))

    nccl = types.SimpleNamespace(
        available=True, get_unique_id=lambda: calls.append(("get_unique_id",)) or (7, 7, 7),
        NcclCommunicator=Communicator, NCCL_FLOAT32=7, NCCL_FLOAT64=8, NCCL_INT64=4, NCCL_SUM=0, NCCL_PROD=1,
        NCCL_MAX=2, NCCL_MIN=3)
    used = []

    class Event:
        def __init__(self, **kwargs):
            self.done = True

        def record(self, stream):
            calls.append(("event", stream.ptr))

    cuda = types.SimpleNamespace(
        nccl=nccl, Event=Event, runtime=types.SimpleNamespace(getDeviceCount=lambda: 1),
        Device=lambda i: types.SimpleNamespace(use=lambda: used.append(i)),
        get_current_stream=lambda: types.SimpleNamespace(ptr=4242))
    cupy = types.ModuleType("cupy")
    cupy.cuda = cuda
    return cupy, nccl, used


@pytest.fixture
def nccl_calls(monkeypatch, fake_mpi):
    calls = []
    cupy, nccl, used = fake_cupy(calls)
    monkeypatch.setitem(sys.modules, "cupy", cupy)
    monkeypatch.setitem(sys.modules, "cupy.cuda", cupy.cuda)
    monkeypatch.setitem(sys.modules, "cupy.cuda.nccl", nccl)
    return calls, used


def test_nccl_id_made_on_rank_0_and_broadcast_over_mpi(nccl_calls):
    calls, used = nccl_calls
    comm = FakeComm(0, 2)
    group = group_module.ProcessGroup(comm, "nccl", timeout=5)
    group.nccl()
    assert calls == [("get_unique_id",), ("communicator", 2, (7, 7, 7), 0)]
    assert comm.bcasts == [((7, 7, 7), 0)] and used == [0]
    calls.clear()
    other = FakeComm(1, 2, broadcast_value=(7, 7, 7))
    group_module.ProcessGroup(other, "nccl", timeout=5).nccl()
    assert calls == [("communicator", 2, (7, 7, 7), 1)]           # rank 1 makes no id of its own
    assert other.bcasts == [(None, 0)]


def test_more_processes_than_gpus_on_a_machine_is_refused(nccl_calls):
    group = group_module.ProcessGroup(FakeComm(0, 2, local_size=2), "nccl", timeout=5)
    with pytest.raises(dist.DistributedError, match="2 processes share a machine with 1 GPU"):
        group.nccl()


def test_cuda_tensors_go_to_nccl_zero_copy_on_the_current_stream(nccl_calls):
    calls, _ = nccl_calls
    group = group_module.ProcessGroup(FakeComm(0, 2), "auto", timeout=5)
    a = FakeDeviceArray(6, "float32", ptr=1000)
    assert group._uses_nccl(a, "all_reduce")
    group.all_reduce(a, "max", check=False).wait()
    group.broadcast(FakeDeviceArray(3, "int64", ptr=2000), 1, check=False).wait()
    out = FakeDeviceArray(12, "float64", ptr=3000)
    group.all_gather(out, FakeDeviceArray(6, "float64", ptr=4000), check=False).wait()
    ops = [c for c in calls if c[0] in ("allReduce", "bcast", "allGather")]
    assert ops == [("allReduce", 1000, 1000, 6, 7, 2, 4242), ("bcast", 2000, 3, 4, 1, 4242),
                   ("allGather", 4000, 3000, 6, 8, 4242)]
    assert calls.count(("event", 4242)) == 3


def test_backend_restrictions(nccl_calls):
    cuda_array = FakeDeviceArray(2, "float32", ptr=1)
    only_mpi = group_module.ProcessGroup(FakeComm(0, 1), "mpi", timeout=5)
    with pytest.raises(dist.DistributedError, match="backend='mpi', which carries CPU tensors only"):
        only_mpi._uses_nccl(cuda_array, "all_reduce")
    only_nccl = group_module.ProcessGroup(FakeComm(0, 1), "nccl", timeout=5)
    with pytest.raises(dist.DistributedError, match="backend='nccl', which carries CUDA tensors only"):
        only_nccl._uses_nccl(np.zeros(2, np.float32), "all_reduce")


def test_tensor_checks_before_any_communication(fake_mpi):
    group = dist.init_process_group(comm=FakeComm(0, 1))
    try:
        with pytest.raises(TypeError, match="dtype int32 is not supported"):
            dist.all_reduce(gf.tensor(np.zeros(2, np.int32)))
        with pytest.raises(ValueError, match="not contiguous"):
            dist.all_reduce(gf.Tensor(np.zeros((3, 4), np.float32)[:, ::2]))
        with pytest.raises(ValueError, match="unknown reduce op 'mean'"):
            dist.all_reduce(gf.ones(2), op="mean")
        with pytest.raises(ValueError, match=r"src must be a rank in \[0, 1\)"):
            dist.broadcast(gf.ones(2), src=1)
        with pytest.raises(TypeError, match="expected a gradflow Tensor"):
            dist.all_reduce(np.ones(2))
        with pytest.raises(RuntimeError, match="part of an autograd graph"):
            dist.all_reduce(gf.ones(2, requires_grad=True) * 2)
        with pytest.raises(ValueError, match="list of world_size=1 tensors"):
            dist.all_gather([gf.ones(2), gf.ones(2)], gf.ones(2))
        with pytest.raises(ValueError, match=r"tensor_list\[0\] is float64"):
            dist.all_gather([gf.ones(2, dtype=gf.float64)], gf.ones(2))
        with pytest.raises(dist.DistributedError, match="already initialized"):
            dist.init_process_group(comm=FakeComm(0, 1))
        assert group.world_size == 1 and dist.get_rank() == 0
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("dtype", ["float32", "float64", "int64"])
def test_average_truncates_integers_toward_zero_like_nccl(dtype):
    a = np.array([-7, -6, -1, 0, 1, 6, 7], dtype=dtype)
    group_module.average_in_place(a, 2)
    want = [-3.5, -3, -0.5, 0, 0.5, 3, 3.5] if dtype != "int64" else [-3, -3, 0, 0, 0, 3, 3]
    np.testing.assert_array_equal(a, np.array(want, dtype=dtype))
