"""gf.save / gf.load: checkpoints that survive crashes and say clearly when they are damaged.

File layout::

    b"GRADFLOW-CKPT\\n"  magic (14 bytes)
    uint32 format version, uint64 payload length, 32-byte SHA-256 of the payload (little endian)
    payload: a pickle in which every Tensor is stored as a numpy array (no autograd graph)

Why the header: a process killed while writing leaves a short file, and a disk
error leaves flipped bytes; both would otherwise surface as an obscure
unpickling error, or worse, load as wrong weights. The length and the checksum
turn them into a ``CheckpointError`` that names the file and what is wrong.

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


def dumps(obj):
    """The checkpoint bytes of ``obj`` (header + pickle)."""
    buffer = io.BytesIO()
    _Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(obj)
    payload = buffer.getvalue()
    return MAGIC + _HEADER.pack(VERSION, len(payload), hashlib.sha256(payload).digest()) + payload


def loads(data, source="<bytes>"):
    """Inverse of ``dumps``; raises CheckpointError naming ``source`` on any damage."""
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
        return pickle.loads(payload)
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


def load(path, map_location=None):
    """Read a checkpoint written by ``save``.

    Raises CheckpointError (a RuntimeError) naming the file when it is missing,
    truncated, corrupt or not a checkpoint. ``map_location="cuda"`` moves the
    loaded Tensors to the GPU (default: they stay on the CPU).
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such checkpoint") from None
    except IsADirectoryError:
        raise CheckpointError(f"{path}: is a folder, not a checkpoint file") from None
    obj = loads(data, source=path)
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


def load_with_fallback(path, map_location=None):
    """``(obj, path_used, problems)``: ``path`` if it is sound, else ``path.prev``.

    ``problems`` lists the error of each file that was skipped. Raises
    CheckpointError naming both files when neither can be read.
    """
    problems = []
    for candidate in (os.fspath(path), previous_path(path)):
        try:
            return load(candidate, map_location), candidate, problems
        except CheckpointError as exc:
            problems.append(str(exc))
    raise CheckpointError("no usable checkpoint: " + "; ".join(problems))
