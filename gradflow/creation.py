"""Tensor factories, as in PyTorch: tensor, zeros, ones, full, arange, randn, rand, *_like."""
import numpy as np

from gradflow import backend, random
from gradflow.tensor import Tensor, check_numeric_data, check_numeric_dtype, float32, int64


def _default_dtype_for(data, array):
    """ndarrays keep their dtype; Python floats become float32 and ints int64, as in PyTorch."""
    if isinstance(data, (np.ndarray, np.generic)):
        return data.dtype
    if array.dtype.kind == "f":
        return float32
    if array.dtype.kind in "iu":
        return int64
    return array.dtype


def tensor(data, dtype=None, device=None, requires_grad=False):
    """A new leaf tensor. ndarrays keep their dtype; Python floats/lists become float32."""
    if isinstance(data, Tensor):
        data = data.data
    if not backend.is_cuda_array(data):
        array = np.asarray(data)
        check_numeric_data(array)    # before any cast: numpy would parse "1.5" as a float
        dtype = np.dtype(dtype) if dtype is not None else _default_dtype_for(data, array)
        data = array
    elif dtype is None:
        dtype = data.dtype
    dtype = np.dtype(dtype)
    check_numeric_dtype(dtype)
    device = backend.check_device(device) if device is not None else (
        backend.device_of(data) if backend.is_cuda_array(data) else backend.default_device())
    xp = backend.xp_for(device)
    array = backend.to_device(data, device)
    array = xp.array(array, dtype=dtype, copy=True)
    return Tensor(array, requires_grad=requires_grad)


def as_tensor(data, dtype=None, device=None):
    if isinstance(data, Tensor) and dtype is None and device is None:
        return data
    return tensor(data, dtype=dtype, device=device)


def from_numpy(array):
    return Tensor(array)


def _shape(size):
    if len(size) == 1 and isinstance(size[0], (tuple, list)):
        size = tuple(size[0])
    for n in size:
        if not isinstance(n, (int, np.integer)) or n < 0:
            raise ValueError(f"invalid size {size}: sizes must be non-negative integers")
    return tuple(int(n) for n in size)


def _make(fill, size, dtype, device, requires_grad):
    device = backend.check_device(device)
    xp = backend.xp_for(device)
    dtype = np.dtype(dtype or float32)
    check_numeric_dtype(dtype)
    array = fill(xp, _shape(size), dtype)
    return Tensor(array, requires_grad=requires_grad)


def zeros(*size, dtype=None, device=None, requires_grad=False):
    return _make(lambda xp, s, d: xp.zeros(s, dtype=d), size, dtype, device, requires_grad)


def ones(*size, dtype=None, device=None, requires_grad=False):
    return _make(lambda xp, s, d: xp.ones(s, dtype=d), size, dtype, device, requires_grad)


def empty(*size, dtype=None, device=None, requires_grad=False):
    return _make(lambda xp, s, d: xp.empty(s, dtype=d), size, dtype, device, requires_grad)


def full(size, fill_value, dtype=None, device=None, requires_grad=False):
    if dtype is None and isinstance(fill_value, (bool, int)) and not isinstance(fill_value, float):
        dtype = np.bool_ if isinstance(fill_value, bool) else int64
    return _make(lambda xp, s, d: xp.full(s, fill_value, dtype=d), (size,) if isinstance(size, int) else tuple(size),
                 dtype, device, requires_grad)


def _random(draw, size, dtype, device, requires_grad):
    device = backend.check_device(device)
    dtype = np.dtype(dtype or float32)
    shape = _shape(size)
    array = draw(random.generator(), shape).astype(dtype)
    return Tensor(backend.to_device(array, device), requires_grad=requires_grad)


def randn(*size, dtype=None, device=None, requires_grad=False):
    return _random(lambda g, s: g.standard_normal(s), size, dtype, device, requires_grad)


def rand(*size, dtype=None, device=None, requires_grad=False):
    return _random(lambda g, s: g.random(s), size, dtype, device, requires_grad)


def randint(low, high, size, dtype=None, device=None):
    device = backend.check_device(device)
    array = random.generator().integers(low, high, size=tuple(size)).astype(np.dtype(dtype or int64))
    return Tensor(backend.to_device(array, device))


def arange(start, end=None, step=1, dtype=None, device=None, requires_grad=False):
    if end is None:
        start, end = 0, start
    if dtype is None:
        dtype = int64 if all(isinstance(v, (int, np.integer)) for v in (start, end, step)) else float32
    device = backend.check_device(device)
    array = backend.xp_for(device).arange(start, end, step, dtype=np.dtype(dtype))
    return Tensor(array, requires_grad=requires_grad)


def zeros_like(t, dtype=None, device=None, requires_grad=False):
    return zeros(t.shape, dtype=dtype or t.dtype, device=device or t.device, requires_grad=requires_grad)


def ones_like(t, dtype=None, device=None, requires_grad=False):
    return ones(t.shape, dtype=dtype or t.dtype, device=device or t.device, requires_grad=requires_grad)


def full_like(t, fill_value, dtype=None, device=None, requires_grad=False):
    return full(t.shape, fill_value, dtype=dtype or t.dtype, device=device or t.device, requires_grad=requires_grad)


def randn_like(t, dtype=None, device=None, requires_grad=False):
    return randn(t.shape, dtype=dtype or t.dtype, device=device or t.device, requires_grad=requires_grad)


def rand_like(t, dtype=None, device=None, requires_grad=False):
    return rand(t.shape, dtype=dtype or t.dtype, device=device or t.device, requires_grad=requires_grad)
