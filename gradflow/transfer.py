"""Device-to-host transfers, all through one function, so a training step can be kept free of them.

On CUDA every read of a device value on the host (``loss.item()``, ``bool(x.any())``,
``array.get()``) waits for all queued GPU work: a sync. ``to_host`` is the one door for
such reads in gradflow (Tensor.item/numpy/tolist and backend.to_numpy go through it),
and it counts its calls (``transfer_count``), so tests can pin how many a training
step makes, on the CPU too, where the same calls run without a GPU.

``to_host(a, b, ...)`` fetches several arrays in one transfer; ``nonfinite_each``
finds NaN/Inf on the device, for a read later. Checks that would need
a read of their own on CUDA (a target class out of range) are queued with
``check_later`` and evaluated with the next ``to_host``, in the same transfer: an
error is raised at the next read instead of at once, still naming the bad value.
"""
import contextlib
import threading

import numpy as np

from gradflow import backend

_counter = threading.local()
MAX_PENDING = 64      # queued checks kept before one is forced (bounds the arrays they hold)


def transfer_count():
    """to_host calls so far in this thread."""
    return getattr(_counter, "calls", 0)


@contextlib.contextmanager
def counting():
    """``with counting() as calls: ...`` then ``calls()`` is the to_host calls inside."""
    start = transfer_count()
    yield lambda: transfer_count() - start


_pending = []         # (device bool array, function raising the error), oldest first


def check_later(flag, raise_error):
    """Call raise_error() if `flag` (a 0-d bool array) is true: now for a NumPy flag,
    at the next to_host for a CuPy one (no sync here)."""
    if not backend.is_cuda_array(flag):
        if bool(flag):
            raise_error()
        return
    _pending.append((flag, raise_error))
    if len(_pending) >= MAX_PENDING:
        to_host()


def to_host(*arrays):
    """NumPy copies of `arrays` (NumPy arrays pass through), with one device-to-host
    transfer for all CuPy ones and the queued checks; a tuple for several arrays, the
    array itself for one. Raises the first failed queued check."""
    _counter.calls = transfer_count() + 1
    flags = [flag for flag, _ in _pending]
    device = [a for a in arrays if backend.is_cuda_array(a)]
    if not device and not flags:
        return arrays[0] if len(arrays) == 1 else arrays
    fetched = iter(_fetch(device + flags))
    host = [next(fetched) if backend.is_cuda_array(a) else a for a in arrays]
    checks = [bool(next(fetched)) for _ in flags]
    failed = [raise_error for ok, (_, raise_error) in zip(checks, _pending) if ok]
    _pending.clear()
    if failed:
        failed[0]()
    return host[0] if len(host) == 1 else tuple(host)


def _fetch(arrays):
    """One copy for all: the arrays packed as bytes into one device buffer."""
    if len(arrays) == 1:
        return [arrays[0].get()]
    cupy = backend.cupy_module()
    parts = [cupy.ascontiguousarray(a).reshape(-1).view(cupy.uint8) for a in arrays]
    packed = cupy.concatenate(parts).get()
    out, start = [], 0
    for a, part in zip(arrays, parts):
        out.append(packed[start:start + part.size].view(a.dtype).reshape(a.shape))
        start += part.size
    return out


def item(array):
    """The Python scalar in a one-element array, read through to_host."""
    return to_host(array).reshape(()).item()


def nonfinite_each(arrays):
    """A bool array on the arrays' device, one entry per array: does it hold a NaN or an
    Inf? (None counts as finite.) No host read; a few launches on CUDA (kernels/cuda/finite.py)."""
    if not arrays:
        return np.zeros(0, dtype=bool)
    present = [a for a in arrays if a is not None]
    if present and backend.is_cuda_array(present[0]):
        from gradflow.kernels.cuda import finite
        cupy = backend.cupy_module()
        empty = cupy.empty(0, dtype=cupy.float32)
        return finite.nonfinite_each([empty if a is None else a for a in arrays])
    return np.array([a is not None and not np.isfinite(a).all() for a in arrays], dtype=bool)


def any_nonfinite(arrays):
    """0-d bool on the arrays' device: does any of them hold a NaN or an Inf?"""
    return nonfinite_each(arrays).any()
