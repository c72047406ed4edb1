"""Gradient clipping (``nn.utils.clip_grad_norm_``, ``clip_grad_value_``) and small layer helpers."""
import math
import types
import warnings

import numpy as np

from gradflow import backend
from gradflow.creation import empty
from gradflow.nn.module import Parameter
from gradflow.tensor import Tensor, float32


def _new_parameter(shape, device=None, dtype=None):
    """An uninitialised Parameter; layers fill it in reset_parameters()."""
    return Parameter(empty(*shape, dtype=dtype or float32, device=device))


def _vector_norm(array, norm_type):
    """torch.linalg.vector_norm over all elements of an array (numpy or cupy), as a 0-d array."""
    xp = backend.get_array_module(array)
    magnitude = xp.abs(array)
    if norm_type == math.inf:
        return magnitude.max() if magnitude.size else xp.zeros((), array.dtype)
    if norm_type == -math.inf:
        return magnitude.min()
    if norm_type == 0:
        return (magnitude != 0).sum().astype(array.dtype)
    if norm_type == 1:
        return magnitude.sum()
    if norm_type == 2:
        return xp.sqrt(xp.vdot(magnitude.ravel(), magnitude.ravel()))
    return (magnitude ** norm_type).sum() ** (1.0 / norm_type)


def _as_list(parameters):
    if isinstance(parameters, Tensor):
        return [parameters]
    is_generator = isinstance(parameters, types.GeneratorType)
    parameters = list(parameters)
    if is_generator and not parameters:
        warnings.warn("`parameters` is an empty generator, no gradient clipping will occur.", stacklevel=3)
    return parameters


def get_total_norm(tensors, norm_type=2.0, error_if_nonfinite=False):
    """The norm of all tensors' elements taken together, as a 0-d Tensor on the first one's device."""
    tensors = [t.data if isinstance(t, Tensor) else t for t in _as_list(tensors)]
    norm_type = float(norm_type)
    if not tensors:
        return Tensor(np.array(0.0, dtype=float32))
    device = backend.device_of(tensors[0])
    xp = backend.xp_for(device)
    norms = xp.stack([backend.to_device(_vector_norm(t, norm_type), device) for t in tensors])
    total = _vector_norm(norms, norm_type)
    if error_if_nonfinite and not bool(xp.isfinite(total)):
        raise RuntimeError(f"The total norm of order {norm_type} for gradients from `parameters` is non-finite, "
                           "so it cannot be clipped. To disable this error and scale the gradients by the "
                           "non-finite norm anyway, set `error_if_nonfinite=False`")
    return Tensor(total)


def clip_grad_norm_(parameters, max_norm, norm_type=2.0, error_if_nonfinite=False, foreach=None):
    """Scale all gradients in place so their joint norm is at most max_norm; returns that norm before clipping.

    As PyTorch: every gradient is multiplied by min(1, max_norm / (total_norm + 1e-6)).
    """
    parameters = _as_list(parameters)
    grads = [p.grad for p in parameters if p.grad is not None]
    total_norm = get_total_norm(grads, norm_type, error_if_nonfinite)
    if grads:
        xp = backend.get_array_module(total_norm.data)
        coefficient = xp.asarray(xp.minimum(float(max_norm) / (total_norm.data + 1e-6), 1.0))
        for g in grads:
            g.data *= backend.to_device(coefficient, g.device)
    return total_norm


def clip_grad_value_(parameters, clip_value, foreach=None):
    """Clamp every gradient element into [-clip_value, clip_value], in place."""
    clip_value = float(clip_value)
    for p in _as_list(parameters):
        if p.grad is not None:
            xp = backend.get_array_module(p.grad.data)
            xp.clip(p.grad.data, -clip_value, clip_value, out=p.grad.data)
