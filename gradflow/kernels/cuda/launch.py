"""How the CUDA kernels launch: stream, grid geometry, argument views, compiled specialisations.

A plain ``kernel[grid, block, stream](*cupy_arrays)`` costs tens of microseconds before
the GPU sees anything: Numba types every argument (wrapping each CuPy array through
``cuda.as_cuda_array``, a driver query plus objects), looks the signature up, checks the
grid for low occupancy, then wraps every array again to marshal it. ``Kernel`` does the
work once instead:

* the signature is explicit, built from the arguments' dtypes and ranks (no ``typeof``),
  compiled once per process and cached on disk (``cache=True``, NUMBA_CACHE_DIR);
* arrays travel as ``DeviceView``: pointer, shape, strides and dtype read straight off
  the CuPy array, which is all Numba's marshalling reads from a device array;
* constant arrays (pooling window tables) get their view once (``constant``);
* launches go to the compiled kernel directly, on CuPy's current stream.

The first launch on a GPU checks this path against a known result (``fast_path``); if
this Numba version marshals arguments differently it falls back, for the whole
process, to the public ``kernel[grid, block, stream]`` call with ``cuda.as_cuda_array``.

Under NUMBA_ENABLE_CUDASIM=1 (Numba's simulator, how CI tests the kernels) the
kernels run on NumPy arrays through the public call. ``geometry`` sets the threads per
block and caps the blocks per grid, so simulator tests can make every grid-stride and
block-stride loop run several iterations on tiny inputs.
"""
import contextlib
import ctypes
import hashlib
import importlib
import os
from pathlib import Path

import numpy as np

os.environ.setdefault("NUMBA_CUDA_LOW_OCCUPANCY_WARNINGS", "0")   # before Numba reads its config

from numba import cuda  # noqa: E402

from gradflow import backend  # noqa: E402

# numba-cuda >= 0.2x carries its own type system and config; older Numba has them in numba.core
try:
    from numba.cuda import types
    from numba.cuda.np import numpy_support
    types.Array                                       # noqa: B018 (numba.cuda.types of old Numba lacks it)
except (ImportError, AttributeError):
    from numba import types
    from numba.np import numpy_support

SIMULATOR = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
# A reduction block is at most this many threads: the size of its shared-memory scratch.
MAX_REDUCE_THREADS = 256



def _silence_low_occupancy_warnings():
    """Small grids are deliberate here (one block per channel, per (n, group)): Numba's
    per-launch low-occupancy warning would only be noise."""
    for name in ("numba.cuda.core.config", "numba.core.config"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        module.CUDA_LOW_OCCUPANCY_WARNINGS = 0


_silence_low_occupancy_warnings()


class _Geometry:
    threads = 256                                     # threads per block, elementwise kernels
    reduce_threads = 32 if SIMULATOR else 256         # threads per reduction block (power of two)
    max_blocks = 1 << 20                              # grid-stride kernels loop past this


GEOMETRY = _Geometry()


@contextlib.contextmanager
def geometry(threads=None, reduce_threads=None, max_blocks=None):
    """Launch with other block sizes / a capped grid inside the block (tests use tiny ones)."""
    saved = (GEOMETRY.threads, GEOMETRY.reduce_threads, GEOMETRY.max_blocks)
    if reduce_threads is not None and (reduce_threads < 1 or reduce_threads & (reduce_threads - 1)
                                       or reduce_threads > MAX_REDUCE_THREADS):
        raise ValueError(f"reduce_threads must be a power of two <= {MAX_REDUCE_THREADS}, got {reduce_threads}")
    for name, value in (("threads", threads), ("max_blocks", max_blocks)):
        if value is not None and value < 1:
            raise ValueError(f"{name} must be positive, got {value}")
    GEOMETRY.threads = threads or GEOMETRY.threads
    GEOMETRY.reduce_threads = reduce_threads or GEOMETRY.reduce_threads
    GEOMETRY.max_blocks = max_blocks or GEOMETRY.max_blocks
    try:
        yield GEOMETRY
    finally:
        GEOMETRY.threads, GEOMETRY.reduce_threads, GEOMETRY.max_blocks = saved


def blocks(n, threads=None):
    """Blocks for a grid-stride loop over n items (capped: the loop covers the rest)."""
    threads = threads or GEOMETRY.threads
    return max(1, min(GEOMETRY.max_blocks, (n + threads - 1) // threads))


def xp_of(array):
    """numpy under the simulator (kernels run on host arrays there), else cupy."""
    return np if SIMULATOR else backend.get_array_module(array)


# ---- streams ----------------------------------------------------------------------------

_streams = {}


def stream():
    """A Numba stream for cupy's current stream, so Numba and CuPy work stays ordered."""
    if SIMULATOR:
        return cuda.stream()          # the simulator has no default_stream(); streams are no-ops there
    ptr = backend.current_stream_ptr()
    s = _streams.get(ptr)
    if s is None:
        s = _streams[ptr] = cuda.external_stream(ptr)
    return s


_launch_streams = {}


def _launch_stream():
    """The current stream in the form the compiled kernel's launch takes (Numba's own
    stream, or a cuda.core stream where Numba launches through cuda.core)."""
    ptr = backend.current_stream_ptr()
    s = _launch_streams.get(ptr)
    if s is None:
        from numba.cuda.cudadrv import driver
        to_core = getattr(driver, "_to_core_stream", None)
        s = _launch_streams[ptr] = to_core(stream()) if to_core else stream()
    return s


# ---- argument views ---------------------------------------------------------------------

class _Layout:
    __slots__ = ("strides_in_bytes", "is_contiguous_c", "is_contiguous_f", "is_contiguous_any")

    def __init__(self, strides, c_contiguous, f_contiguous):
        self.strides_in_bytes = strides
        self.is_contiguous_c = c_contiguous
        self.is_contiguous_f = f_contiguous
        self.is_contiguous_any = c_contiguous or f_contiguous


class DeviceView:
    """A device array as Numba's kernel marshalling reads one: pointer, shape, strides, dtype.

    ``__cuda_memory__`` makes Numba take it as device memory as it is (no
    ``as_cuda_array``); it keeps the array it views alive for as long as it lives."""
    __cuda_memory__ = True
    __slots__ = ("owner", "ptr", "shape", "strides", "dtype", "size", "ndim", "c_contiguous", "_layout")

    def __init__(self, owner, ptr, shape, strides, dtype, c_contiguous, f_contiguous=False):
        self.owner = owner
        self.ptr = ptr
        self.shape = shape
        self.strides = strides
        self.dtype = dtype
        self.ndim = len(shape)
        size = 1
        for extent in shape:
            size *= extent
        self.size = size
        self.c_contiguous = c_contiguous
        self._layout = _Layout(strides, c_contiguous, f_contiguous)

    @classmethod
    def of(cls, array):
        """The view of a CuPy array (or anything with __cuda_array_interface__)."""
        data = getattr(array, "data", None)
        if data is not None and hasattr(data, "ptr"):     # cupy: plain attribute reads
            flags = array.flags
            return cls(array, data.ptr, array.shape, array.strides, array.dtype,
                       flags.c_contiguous, flags.f_contiguous)
        interface = array.__cuda_array_interface__
        dtype = np.dtype(interface["typestr"])
        shape = tuple(interface["shape"])
        strides = interface.get("strides")
        natural = _c_strides(shape, dtype.itemsize)
        strides = natural if strides is None else tuple(strides)
        return cls(array, interface["data"][0], shape, strides, dtype, strides == natural)

    # what the various Numba versions read off a device array
    @property
    def device_ctypes_pointer(self):
        return ctypes.c_size_t(self.ptr)    # .value is 0, not None, for an empty array

    @property
    def device_pointer(self):
        return self.ptr

    @property
    def device_pointer_value(self):
        return self.ptr or None

    @property
    def _strided_memory_view_shim(self):
        return self


def _c_strides(shape, itemsize):
    strides, step = [], itemsize
    for extent in reversed(shape):
        strides.append(step)
        step *= max(extent, 1)
    return tuple(reversed(strides))


_constants = {}
_MAX_CONSTANTS = 4096


def constant(array):
    """The cached device view of an array that never changes (a window table): built on
    its first launch, reused after. Holds the array, so its id stays unique."""
    if SIMULATOR:
        return array
    if _fast_path_state["ok"] is None:
        fast_path()                      # the view's kind depends on the launch path
    entry = _constants.get(id(array))
    if entry is None or entry[0] is not array:
        if len(_constants) >= _MAX_CONSTANTS:
            _constants.clear()
        entry = _constants[id(array)] = (array, _wrap(array))
    return entry[1]


def _public_view(array):
    """An array as Numba's public kernel call takes it (a Numba device array)."""
    return cuda.as_cuda_array(array.owner if isinstance(array, DeviceView) else array, sync=False)


def _wrap(array):
    """The per-launch form of an array argument for the active launch path."""
    if _fast_path_state["ok"] is False:
        return cuda.as_cuda_array(array, sync=False)
    return DeviceView.of(array)


def device_array(array):
    """A zero-copy view of a cupy array to pass to a kernel (the numpy array under the simulator)."""
    if SIMULATOR or isinstance(array, DeviceView):
        return array
    return _wrap(array)


# ---- signatures -------------------------------------------------------------------------

_scalar_types = {bool: types.boolean, int: types.int64, float: types.float64}
_array_types = {}


def numba_type(value):
    """The Numba type of one kernel argument, without numba.typeof (the signature key)."""
    kind = type(value)
    if kind is tuple:
        members = tuple(numba_type(v) for v in value)
        if all(m == members[0] for m in members):
            return types.UniTuple(members[0], len(members))
        return types.Tuple(members)
    scalar = _scalar_types.get(kind)
    if scalar is not None:
        return scalar
    if isinstance(value, np.generic):
        return numpy_support.from_dtype(value.dtype)
    key = (value.dtype, value.ndim, bool(_c_contiguous(value)))
    array_type = _array_types.get(key)
    if array_type is None:
        array_type = _array_types[key] = types.Array(numpy_support.from_dtype(key[0]), key[1],
                                                     "C" if key[2] else "A")
    return array_type


def _c_contiguous(value):
    flag = getattr(value, "c_contiguous", None)
    if flag is not None:
        return flag
    flags = getattr(value, "flags", None)
    if flags is not None:
        return flags["C_CONTIGUOUS"] if isinstance(flags, dict) else flags.c_contiguous
    return value.is_c_contiguous()     # a Numba device array


class Kernel:
    """A CUDA kernel (a Python function with cuda.jit's body) launched as
    ``kernel(blocks, threads, *args)`` on CuPy's current stream."""

    def __init__(self, function, depends=()):
        """depends: other modules whose functions the kernel compiles in. Numba's disk
        cache checks only the kernel's own file, so their source picks the cache folder."""
        self.__name__ = function.__name__
        self.__doc__ = function.__doc__
        if SIMULATOR:
            self.dispatcher = cuda.jit(function)
        else:
            with _cache_folder_for(depends):
                self.dispatcher = cuda.jit(cache=True)(function)
        self._compiled = {}
        self._public = {}      # signatures the direct launch failed for, and why

    def compiled(self, argtypes):
        """The kernel compiled for an explicit signature (from Numba's disk cache when there)."""
        kernel = self._compiled.get(argtypes)
        if kernel is None:
            kernel = self._compiled[argtypes] = self.dispatcher.compile(types.void(*argtypes))
        return kernel

    def __call__(self, grid, threads, *args):
        """Launch on `grid` blocks (an int, or (x, y)) of `threads` threads. Array arguments
        may come as tuples of arrays of one type (Numba UniTuples)."""
        if SIMULATOR:
            self.dispatcher[grid, threads, stream()](*args)
            return
        if _fast_path_state["ok"] is None:
            fast_path()
        if _fast_path_state["ok"]:
            views = tuple(_convert(a, public=False) for a in args)
            argtypes = tuple(numba_type(a) for a in views)
            if argtypes not in self._public:
                try:
                    kernel = self.compiled(argtypes)
                    dims = (grid, 1, 1) if isinstance(grid, int) else tuple(grid) + (1,) * (3 - len(grid))
                    kernel.launch(views, dims, (threads, 1, 1), _launch_stream(), 0)
                    return
                except Exception as exc:     # this signature launches the public way from now on;
                    self._public[argtypes] = f"{type(exc).__name__}: {exc}"   # a real error raises there
        self.dispatcher[grid, threads, stream()](*(_convert(a, public=True) for a in args))


def _convert(arg, public):
    """An argument as the launch passes it: arrays (also inside tuples) as DeviceViews for
    the direct launch, or as Numba device arrays for the public call (``public``)."""
    if isinstance(arg, tuple):
        return tuple(_convert(a, public) for a in arg)
    if isinstance(arg, (np.generic, bool, int, float)) or not hasattr(arg, "shape"):
        return arg
    if not public:
        return arg if isinstance(arg, DeviceView) else DeviceView.of(arg)
    if getattr(arg, "__cuda_memory__", False) and not isinstance(arg, DeviceView):
        return arg          # already a Numba device array
    return _public_view(arg)


def kernel(function=None, depends=()):
    """Decorator: a launch.Kernel (``@kernel`` or ``@kernel(depends=(module,))``)."""
    if function is None:
        return lambda f: Kernel(f, depends)
    return Kernel(function, depends)


@contextlib.contextmanager
def _cache_folder_for(modules):
    """Numba's cache folder, for the dispatchers created inside, keyed by the modules' source."""
    if not modules:
        yield
        return
    digest = hashlib.sha1(b"".join(Path(m.__file__).read_bytes() for m in modules)).hexdigest()[:12]
    configs = []
    for name in ("numba.cuda.core.config", "numba.core.config"):
        try:
            configs.append(importlib.import_module(name))
        except ImportError:
            pass
    saved = [getattr(c, "CACHE_DIR", "") for c in configs]
    base = saved[0] if saved and saved[0] else str(Path(modules[0].__file__).parent / "__pycache__")
    for c in configs:
        c.CACHE_DIR = str(Path(base) / f"depends-{digest}")
    try:
        yield
    finally:
        for c, value in zip(configs, saved):
            c.CACHE_DIR = value


# ---- the fast path's self-check ---------------------------------------------------------

_fast_path_state = {"ok": None, "why": "not checked yet"}


def _probe(src, scale, dst):
    for i in range(cuda.grid(1), dst.shape[1], cuda.gridsize(1)):
        dst[0, i] = src[i] * scale + i
        dst[1, i] = src[i]


def fast_path():
    """(ok, why): whether the direct launch with DeviceView arguments gives the right
    result with this Numba; checked once, on the first GPU launch."""
    if SIMULATOR:
        return False, "the simulator runs kernels on NumPy arrays"
    if _fast_path_state["ok"] is None:
        _fast_path_state["ok"] = True      # so the probe itself launches through the fast path
        try:
            xp = backend.cupy_module()
            src = xp.arange(1000, dtype=xp.float64) * 0.5
            dst = xp.full((2, 1000), -1.0)
            _probe_kernel()(4, 128, src, 3.0, dst)
            xp.cuda.get_current_stream().synchronize()
            expected = xp.stack([src * 3.0 + xp.arange(1000), src])
            ok = bool(xp.array_equal(dst, expected))
            why = "direct launch with DeviceView arguments" if ok else "probe kernel gave wrong values"
        except Exception as exc:      # any Numba-internal mismatch: use the public path instead
            ok, why = False, f"direct launch failed ({type(exc).__name__}: {exc})"
        _fast_path_state.update(ok=ok, why=why if ok else why + "; using kernel[grid, block, stream]")
    return _fast_path_state["ok"], _fast_path_state["why"]


_probe_cache = []


def _probe_kernel():
    if not _probe_cache:
        _probe_cache.append(Kernel(_probe))
    return _probe_cache[0]
