"""The functional API (``gradflow.nn.functional`` / ``gradflow.functional``), as in PyTorch.

Thin: each name is imported from the ops module that implements it. Importing them
loads Numba and the CPU kernel modules, but compiles nothing: each kernel compiles
(or loads from Numba's cache) on its first call.
"""
from gradflow.ops.activation import linear, pad, relu, sigmoid, tanh
from gradflow.ops.bce import binary_cross_entropy_with_logits
from gradflow.ops.conv import conv2d, conv_transpose2d
from gradflow.ops.dice import dice_loss
from gradflow.ops.dropout import dropout, dropout2d
from gradflow.ops.loss import cross_entropy, nll_loss
from gradflow.ops.norm import batch_norm, group_norm
from gradflow.ops.pool import adaptive_avg_pool2d, adaptive_max_pool2d, avg_pool2d, max_pool2d
from gradflow.ops.resample import interpolate
from gradflow.ops.softmax import log_softmax, softmax

__all__ = ["adaptive_avg_pool2d", "adaptive_max_pool2d", "avg_pool2d", "batch_norm",
           "binary_cross_entropy_with_logits", "conv2d", "conv_transpose2d", "cross_entropy", "dice_loss",
           "dropout", "dropout2d", "group_norm", "interpolate", "linear", "log_softmax", "max_pool2d",
           "nll_loss", "pad", "relu", "sigmoid", "softmax", "tanh"]
