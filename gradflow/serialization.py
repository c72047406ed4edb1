"""gf.save_safetensors / gf.load_safetensors: weights in the safetensors format.

Why a second format beside ``gf.save``: a safetensors file is a JSON header
(names, dtypes, shapes, byte offsets) followed by raw little-endian bytes, so
reading one can never run code, and PyTorch (``safetensors.torch.load_file``),
NumPy, JAX and most serving tools read it directly. It holds only named arrays:
the model's weights and buffers, not optimizer or training state (``gf.save``
keeps those for resuming).
"""
import collections
import os
import tempfile

import numpy as np

from gradflow import backend
from gradflow.checkpoint import CheckpointError
from gradflow.tensor import Tensor

# What the format stores (safetensors has no float128, complex or object arrays).
SUPPORTED_DTYPES = tuple(np.dtype(d) for d in ("bool", "uint8", "int8", "uint16", "int16", "uint32", "int32",
                                                "uint64", "int64", "float16", "float32", "float64"))


def _as_array(name, value):
    if isinstance(value, Tensor):
        value = value.data
    if backend.is_cuda_array(value):
        value = backend.to_numpy(value)
    if not isinstance(value, np.ndarray):
        raise TypeError(f"save_safetensors: {name!r} is a {type(value).__name__}; safetensors stores only "
                        f"Tensors and arrays (keep other state in gf.save)")
    if value.dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"save_safetensors: {name!r} has dtype {value.dtype}, which safetensors cannot store; "
                        f"supported: {', '.join(str(d) for d in SUPPORTED_DTYPES)}")
    # not np.ascontiguousarray: it turns a 0-d array into shape (1,)
    return value if value.flags.c_contiguous else value.copy(order="C")


def save_safetensors(state_dict, path, metadata=None):
    """Write ``{name: Tensor or array}`` (e.g. ``model.state_dict()``) to ``path`` as safetensors.

    ``metadata`` is an optional ``{str: str}`` stored in the header. Tensors on the GPU
    are copied to the host. The file is written beside ``path`` and renamed into place,
so a killed process never leaves a half-written ``path``.
    """
    from safetensors.numpy import save_file

    if not isinstance(state_dict, dict):
        raise TypeError(f"save_safetensors expects a dict of name -> Tensor, got {type(state_dict).__name__}")
    arrays = {}
    for name, value in state_dict.items():
        if not isinstance(name, str):
            raise TypeError(f"save_safetensors: keys must be strings, got {name!r}")
        arrays[name] = _as_array(name, value)
    if metadata is not None and not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise TypeError("save_safetensors: metadata must map str to str")
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    os.close(fd)
    try:
        save_file(arrays, tmp, metadata=metadata)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def load_safetensors(path, device="cpu"):
    """``{name: Tensor}`` from a safetensors file, on ``device`` (dtypes and shapes exactly as saved).

    Raises CheckpointError naming the file when it is missing or not a valid
    safetensors file.
    """
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    path = os.fspath(path)
    device = backend.check_device(device)
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: no such safetensors file")
    try:
        arrays = load_file(path)
    except SafetensorError as exc:
        raise CheckpointError(f"{path}: not a valid safetensors file ({exc})") from None
    return collections.OrderedDict((name, Tensor(backend.to_device(array, device)))
                                   for name, array in arrays.items())


def load_safetensors_metadata(path):
    """The ``{str: str}`` metadata stored in a safetensors file's header (empty when there is none)."""
    from safetensors import safe_open
    with safe_open(os.fspath(path), framework="numpy") as f:
        return dict(f.metadata() or {})
