"""DLPack: share a tensor's memory with NumPy, PyTorch, CuPy, JAX ... without copying.

``gf.from_dlpack(obj)`` accepts anything with ``__dlpack__`` (a NumPy or CuPy
array, a PyTorch tensor) or a legacy DLPack capsule (``torch.utils.dlpack.to_dlpack``),
and returns a Tensor over the same memory: a write through either side is
seen by the other. The reverse is ``Tensor.__dlpack__`` (so ``torch.from_dlpack(t)``
and ``np.from_dlpack(t)`` work on gradflow tensors) and ``to_dlpack(t)``, which
returns a capsule. CPU memory goes through NumPy, CUDA memory through CuPy:
those two libraries own a gradflow tensor's data, so they decide what can be shared.
"""
import ctypes

import numpy as np

from gradflow import backend
from gradflow.tensor import Tensor

# DLDeviceType codes (dlpack.h) and the names errors use for them.
KDLCPU, KDLCUDA = 1, 2
DEVICE_NAMES = {1: "CPU", 2: "CUDA", 3: "CUDA host (pinned)", 4: "OpenCL", 7: "Vulkan", 8: "Metal", 9: "VPI",
                10: "ROCm", 11: "ROCm host", 12: "ExtDev", 13: "CUDA managed", 14: "oneAPI", 15: "WebGPU",
                16: "Hexagon", 17: "MAIA"}


def to_dlpack(tensor):
    """A DLPack capsule over ``tensor``'s memory (as ``torch.utils.dlpack.to_dlpack``); consume it once."""
    if not isinstance(tensor, Tensor):
        raise TypeError(f"to_dlpack expects a gradflow Tensor, got {type(tensor).__name__}")
    return tensor.__dlpack__()


def from_dlpack(obj):
    """A Tensor sharing memory with ``obj`` (an object with ``__dlpack__``, or a DLPack capsule)."""
    if isinstance(obj, Tensor):
        return obj.detach()
    capsule = _is_capsule(obj)
    if capsule:
        device_type = _capsule_device_type(obj)
    elif hasattr(obj, "__dlpack__") and hasattr(obj, "__dlpack_device__"):
        device_type = int(obj.__dlpack_device__()[0])
    else:
        raise TypeError(f"from_dlpack expects an object with __dlpack__ and __dlpack_device__ (NumPy, CuPy, "
                        f"PyTorch, JAX arrays) or a DLPack capsule, got {type(obj).__name__}")
    if device_type == KDLCPU:
        if capsule:     # numpy takes only objects: give it one that hands over this capsule
            obj = _CapsuleOnCpu(obj)
        consume = np.from_dlpack
    elif device_type == KDLCUDA:
        consume = backend.cupy_module().from_dlpack    # raises, saying why, when CUDA is unusable
    else:
        name = DEVICE_NAMES.get(device_type, f"DLPack device type {device_type}")
        raise RuntimeError(f"from_dlpack: memory on {name} is not supported; gradflow shares CPU and CUDA memory")
    try:
        array = consume(obj)
    except (TypeError, RuntimeError, BufferError, ValueError) as exc:
        raise TypeError(f"from_dlpack: cannot share this {_describe(obj)} ({exc}); gradflow supports bool, "
                        f"integer and float16/32/64 data (bfloat16 and the like: convert first)") from exc
    return Tensor(array)


class _CapsuleOnCpu:
    def __init__(self, capsule):
        self._capsule = capsule

    def __dlpack__(self, **kwargs):
        return self._capsule

    def __dlpack_device__(self):
        return (KDLCPU, 0)


def _describe(obj):
    dtype = getattr(obj, "dtype", None)
    return type(obj).__name__ + (f" of dtype {dtype}" if dtype is not None else "")


def _is_capsule(obj):
    return type(obj).__name__ == "PyCapsule"


_get_name = ctypes.pythonapi.PyCapsule_GetName
_get_name.restype, _get_name.argtypes = ctypes.c_char_p, [ctypes.py_object]
_get_pointer = ctypes.pythonapi.PyCapsule_GetPointer
_get_pointer.restype, _get_pointer.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]


def _capsule_device_type(capsule):
    """The device type of a legacy capsule: DLManagedTensor starts with DLTensor {void *data; DLDevice device}."""
    name = _get_name(capsule)
    if name != b"dltensor":
        used = " (already consumed)" if name == b"used_dltensor" else ""
        raise TypeError(f"from_dlpack: capsule named {name.decode() if name else None!r}{used} is not a DLPack "
                        f"tensor; a capsule can be consumed only once")
    pointer = _get_pointer(capsule, name)
    return ctypes.c_int32.from_address(pointer + ctypes.sizeof(ctypes.c_void_p)).value
