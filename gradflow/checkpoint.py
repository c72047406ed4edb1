"""gf.save / gf.load: checkpoints that survive crashes and say clearly when they are damaged.

File layout::

    b"GRADFLOW-CKPT\\n"  magic (14 bytes)
    uint32 format version, uint64 payload length, 32-byte SHA-256 of the payload (little endian)
    payload: a pickle in which every Tensor is stored as a numpy array (no autograd graph)

Why the header: a process killed while writing leaves a short file, and a disk
error leaves flipped bytes; both would otherwise surface as an obscure
unpickling error, or worse, load as wrong weights. The length and the checksum
turn them into a ``CheckpointError`` that names the file and what is wrong.

Why a restricted unpickler: the checksum is computed by whoever wrote the file,
so it proves nothing about where the file came from, and a plain ``pickle.loads``
runs any callable a crafted file names. ``load`` therefore resolves only the
globals a checkpoint needs (arrays, dtypes, numpy scalars, OrderedDict,
Counter, Tensors; everything else in a checkpoint is built from pickle's own
opcodes: dicts, lists, tuples, sets, numbers, strings, bytes) and refuses any other with an
``UnsafeCheckpointError`` naming it. ``load(path, weights_only=False)`` is the
explicit opt-in for a trusted file holding other objects; ``add_safe_globals``
allows more globals without it, as ``torch.serialization.add_safe_globals`` does.

Why the write dance (temp file in the same folder, fsync, ``os.replace``, fsync
of the folder): ``os.replace`` is atomic, so ``path`` is at every instant either
the complete old checkpoint or the complete new one, whatever moment the process
dies. With ``keep_previous`` the old one is first hard-linked to ``path.prev``,
so a checkpoint that later turns out bad (a bug, a bad disk) has a fallback.
"""
import hashlib
import io
import os
import pickle
import struct
import tempfile

import numpy as np

from gradflow import backend
from gradflow.tensor import Tensor

MAGIC = b"GRADFLOW-CKPT\n"
VERSION = 1
_HEADER = struct.Struct("<IQ32s")
HEADER_SIZE = len(MAGIC) + _HEADER.size

# Test hook: when set, called as hook(path) after the first half of a checkpoint's
# bytes reached the temporary file (fault-injection tests kill the process there).
_on_partial_write = None


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, truncated, corrupt or not a gradflow checkpoint."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint names a global that ``load(..., weights_only=True)`` does not allow."""


def _rebuild_tensor(array, requires_grad):
    return Tensor(array, requires_grad=requires_grad)


def _reduce_tensor(t):
    # Only the values travel: a checkpoint must not drag a graph (or a GPU) along.
    return _rebuild_tensor, (backend.to_numpy(t.data), bool(t.requires_grad and t.is_leaf))


def _reduce_cuda_array(a):
    return np.asarray, (backend.to_numpy(a),)


class _Pickler(pickle.Pickler):
    def reducer_override(self, obj):
        if isinstance(obj, Tensor):
            return _reduce_tensor(obj)
        if backend.is_cuda_array(obj):
            return _reduce_cuda_array(obj)
        return NotImplemented


def _safe_globals():
    allowed = {
        ("collections", "OrderedDict"), ("collections", "Counter"),   # Counter: MultiStepLR milestones
        ("builtins", "complex"), ("builtins", "bytearray"), ("builtins", "set"), ("builtins", "frozenset"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("gradflow.checkpoint", "_rebuild_tensor"),
    }
    for core in ("numpy.core", "numpy._core"):   # NumPy 1 and NumPy 2 name the same functions
        allowed |= {(f"{core}.multiarray", "_reconstruct"), (f"{core}.multiarray", "scalar"),
                    (f"{core}.numeric", "_frombuffer")}
    return allowed


_SAFE_GLOBALS = _safe_globals()
_user_safe_globals = {}


def add_safe_globals(objects):
    """Allow these classes or functions in ``load(..., weights_only=True)`` (only for code you trust)."""
    for obj in objects:
        _user_safe_globals[(obj.__module__, obj.__qualname__)] = obj


def get_safe_globals():
    """The (module, name) pairs ``load`` resolves by default, plus those added by ``add_safe_globals``."""
    return sorted(_SAFE_GLOBALS | set(_user_safe_globals))


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in _user_safe_globals:
            return _user_safe_globals[(module, name)]
        if (module, name) in _SAFE_GLOBALS:
            return super().find_class(module, name)
        raise UnsafeCheckpointError(
            f"refused global {module}.{name}: loading it could run code. If you trust this file, "
            f"load it with gf.load(path, weights_only=False), or allow the global with "
            f"gradflow.checkpoint.add_safe_globals([{name}])")

    def persistent_load(self, pid):
        raise UnsafeCheckpointError(f"refused persistent id {pid!r}: gradflow checkpoints have none")


def dumps(obj):
    """The checkpoint bytes of ``obj`` (header + pickle)."""
    buffer = io.BytesIO()
    _Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(obj)
    payload = buffer.getvalue()
    return MAGIC + _HEADER.pack(VERSION, len(payload), hashlib.sha256(payload).digest()) + payload


def loads(data, source="<bytes>", weights_only=True):
    """Inverse of ``dumps``; raises CheckpointError naming ``source`` on any damage.

    With ``weights_only`` (the default) only the globals of ``get_safe_globals()``
    are resolved; any other raises UnsafeCheckpointError naming it.
    """
    if len(data) < HEADER_SIZE:
        raise CheckpointError(f"{source}: truncated checkpoint ({len(data)} bytes, shorter than the "
                              f"{HEADER_SIZE}-byte header)")
    if not data.startswith(MAGIC):
        raise CheckpointError(f"{source}: not a gradflow checkpoint (bad magic bytes {data[:len(MAGIC)]!r})")
    version, length, digest = _HEADER.unpack_from(data, len(MAGIC))
    if version != VERSION:
        raise CheckpointError(f"{source}: checkpoint format version {version}, this gradflow reads {VERSION}")
    payload = memoryview(data)[HEADER_SIZE:]
    if len(payload) != length:
        what = "truncated" if len(payload) < length else "has trailing bytes"
        raise CheckpointError(f"{source}: {what}: payload is {len(payload)} bytes, header says {length} "
                              f"(was the writing process killed?)")
    if hashlib.sha256(payload).digest() != digest:
        raise CheckpointError(f"{source}: corrupt checkpoint: SHA-256 checksum mismatch")
    try:
        if weights_only:
            return _RestrictedUnpickler(io.BytesIO(payload)).load()
        return pickle.loads(payload)
    except UnsafeCheckpointError as exc:
        raise UnsafeCheckpointError(f"{source}: {exc}") from None
    except Exception as exc:    # checksum matched, so this is a code mismatch, not damage
        raise CheckpointError(f"{source}: checkpoint could not be unpickled ({type(exc).__name__}: {exc})") from exc


def _fsync_dir(folder):
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:     # e.g. Windows: directories cannot be opened; rename durability is the OS's job
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def previous_path(path):
    """Where ``save(..., keep_previous=True)`` keeps the checkpoint it replaced."""
    return os.fspath(path) + ".prev"


def save(obj, path, keep_previous=False):
    """Write ``obj`` (state dicts, Tensors, numpy arrays, plain Python) to ``path`` atomically.

    Tensors are stored as numpy arrays and come back as CPU Tensors. With
    ``keep_previous`` an existing ``path`` is kept as ``path.prev``.
    """
    path = os.fspath(path)
    data = dumps(obj)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            half = len(data) // 2
            f.write(data[:half])
            if _on_partial_write is not None:
                f.flush()
                _on_partial_write(path)
            f.write(data[half:])
            f.flush()
            os.fsync(f.fileno())
        if keep_previous and os.path.exists(path):
            _keep_previous(path, folder)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(folder)


def _keep_previous(path, folder):
    """Make ``path.prev`` the current ``path`` without ever leaving ``path`` absent."""
    fd, tmp_link = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".prevtmp", dir=folder)
    os.close(fd)
    os.unlink(tmp_link)
    try:
        os.link(path, tmp_link)
    except OSError:     # no hard links here (some filesystems): copy instead
        with open(path, "rb") as src, open(tmp_link, "wb") as dst:
            dst.write(src.read())
            dst.flush()
            os.fsync(dst.fileno())
    os.replace(tmp_link, previous_path(path))


def load(path, map_location=None, weights_only=True):
    """Read a checkpoint written by ``save``.

    Raises CheckpointError (a RuntimeError) naming the file when it is missing,
    truncated, corrupt or not a checkpoint. ``map_location="cuda"`` moves the
    loaded Tensors to the GPU (default: they stay on the CPU).

    ``weights_only=True`` (the default, as in PyTorch) never runs code from the
    file: a global other than arrays, dtypes, numpy scalars, OrderedDict and
    Tensors raises UnsafeCheckpointError naming it. Pass ``weights_only=False``
    only for a file you trust: it unpickles anything, which can run any code.
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such checkpoint") from None
    except IsADirectoryError:
        raise CheckpointError(f"{path}: is a folder, not a checkpoint file") from None
    obj = loads(data, source=path, weights_only=weights_only)
    if map_location is not None and backend.check_device(map_location) != "cpu":
        obj = _to_device(obj, backend.check_device(map_location))
    return obj


def _to_device(obj, device):
    if isinstance(obj, Tensor):
        return Tensor(backend.to_device(obj.data, device), requires_grad=obj.requires_grad)
    if isinstance(obj, dict):
        return type(obj)((k, _to_device(v, device)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_device(v, device) for v in obj)
    return obj


def load_with_fallback(path, map_location=None, weights_only=True):
    """``(obj, path_used, problems)``: ``path`` if it is sound, else ``path.prev``.

    ``problems`` lists the error of each file that was skipped. Raises
    CheckpointError naming both files when neither can be read.
    """
    problems = []
    for candidate in (os.fspath(path), previous_path(path)):
        try:
            return load(candidate, map_location, weights_only), candidate, problems
        except UnsafeCheckpointError:   # a crafted file is an attack, not damage: say so, never fall back silently
            raise
        except CheckpointError as exc:
            problems.append(str(exc))
    raise CheckpointError("no usable checkpoint: " + "; ".join(problems))
