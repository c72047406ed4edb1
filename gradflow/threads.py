"""How many CPU threads gradflow's kernels use, as torch.set_num_threads / get_num_threads.

gradflow's parallel CPU work runs in Numba's thread pool (the kernels in
gradflow.kernels.cpu). The BLAS library under NumPy's matmul (linear layers, 1x1 and
im2col convolutions) is held to ONE thread: OpenBLAS's results depend on its own thread
count for some shapes (measured: (128, 784) @ (784, 10) float32 differs between 1 and 2
threads), and gradflow's results must not. So the two pools never compete for cores
either: no Numba kernel calls BLAS, and BLAS runs on the calling thread alone.

The default is the number of cores this process may run on (os.sched_getaffinity),
or OMP_NUM_THREADS, else NUMBA_NUM_THREADS, when set. Numba's pool is started with
NUMBA_NUM_THREADS threads (by default the usable cores), which is therefore the most
set_num_threads accepts.

Numba's threading layer is "omp" where it loads (it needs the GNU OpenMP runtime,
libgomp, which most Linux systems have), else "workqueue", which ships inside every Numba
wheel, so parallel kernels run after a plain `pip install` on any machine. workqueue wakes
its pool slowly: a step of the small FCN-bench at batch 1 took 3x as long on it as on omp,
even at 1 thread. Set NUMBA_THREADING_LAYER to choose another. The workqueue pool may be
entered by one Python thread at a time; gradflow's host functions hold KERNEL_LOCK
around their parallel kernels, so several Python threads may still use gradflow at once
(their kernels then take turns).

Results do not depend on the thread count: every parallel kernel cuts its work into
blocks whose size is fixed by the shapes alone, and adds partial sums in a fixed order.
"""
import functools
import os
import threading

THREADING_LAYERS = ["omp", "workqueue", "tbb"]    # the first that loads (Numba wants all three named)
KERNEL_LOCK = threading.RLock()

_requested = None        # set by set_num_threads; None: the default from the environment


def usable_cores():
    """The CPUs this process may run on (its affinity mask), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:           # macOS and Windows have no sched_getaffinity
        return max(1, os.cpu_count() or 1)


def _env_threads():
    for key in ("OMP_NUM_THREADS", "NUMBA_NUM_THREADS"):
        value = os.environ.get(key, "").strip()
        if value:
            try:
                count = int(value.split(",")[0])   # OMP allows a per-level list: its first entry
            except ValueError:
                raise ValueError(f"{key}={value!r} is not a positive integer") from None
            if count < 1:
                raise ValueError(f"{key}={value!r} is not a positive integer")
            return count
    return None


def pool_size():
    """The size of Numba's thread pool: NUMBA_NUM_THREADS, else the usable cores."""
    value = os.environ.get("NUMBA_NUM_THREADS", "").strip()
    if value:
        try:
            return max(1, int(value))
        except ValueError:
            raise ValueError(f"NUMBA_NUM_THREADS={value!r} is not a positive integer") from None
    return usable_cores()


def get_num_threads():
    """The number of threads gradflow's CPU kernels use."""
    if _requested is not None:
        return _requested
    return _default_threads()


@functools.lru_cache(maxsize=None)
def _default_threads():
    # Read once, as the thread pools themselves read the environment once: every parallel
    # kernel call asks, and the variables plus the affinity syscall cost ~7 us a time.
    return min(_env_threads() or usable_cores(), pool_size())


def set_num_threads(n):
    """Use n threads in gradflow's CPU kernels (1 <= n <= pool_size())."""
    global _requested
    if isinstance(n, bool) or not hasattr(n, "__index__"):
        raise TypeError(f"set_num_threads: expected an int, got {type(n).__name__}")
    n = n.__index__()
    if n < 1:
        raise ValueError(f"set_num_threads: the number of threads must be positive, got {n}")
    if n > pool_size():
        raise ValueError(f"set_num_threads: {n} threads requested, but Numba's thread pool has "
                         f"{pool_size()} (set NUMBA_NUM_THREADS={n} before starting Python to allow more)")
    _requested = n
    _hold_blas_to_one_thread()      # again: a BLAS library loaded since (scipy's) starts with all cores


def _hold_blas_to_one_thread():
    from threadpoolctl import threadpool_limits
    threadpool_limits(limits=1, user_api="blas")


def configure():
    """Choose the threading layer (before Numba starts its pool) and hold BLAS to one
    thread. Called once, by gradflow.kernels.cpu when it is imported."""
    from numba.core import config
    if not os.environ.get("NUMBA_THREADING_LAYER"):
        config.THREADING_LAYER = "default"
        if not os.environ.get("NUMBA_THREADING_LAYER_PRIORITY"):
            config.THREADING_LAYER_PRIORITY = list(THREADING_LAYERS)
    _hold_blas_to_one_thread()


def parallel(host):
    """Decorate a host function that calls parallel Numba kernels: they run with
    get_num_threads() threads (Numba's count is per Python thread, so it is set here,
    in the calling thread) and one Python thread at a time (KERNEL_LOCK)."""
    import numba

    @functools.wraps(host)
    def run(*args, **kwargs):
        with KERNEL_LOCK:
            n = get_num_threads()
            if numba.get_num_threads() != n:
                numba.set_num_threads(n)
            return host(*args, **kwargs)
    return run


def by_size(serial_kernel, parallel_kernel, min_size):
    """A host function that runs parallel_kernel (as `parallel` does) when its first argument
    has at least min_size values and more than one thread is allowed, else serial_kernel,
    which needs no thread pool wake-up. The two must compute the same bits."""
    parallel_kernel = parallel(parallel_kernel)

    def run(first, *args):
        use_threads = first.size >= min_size and get_num_threads() > 1
        return (parallel_kernel if use_threads else serial_kernel)(first, *args)
    return run
