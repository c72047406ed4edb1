"""The functional API (``gradflow.nn.functional`` / ``gradflow.functional``), as in PyTorch.

Thin: each name lives in the ops module that implements it and is imported on first use,
so `import gradflow` does not compile or import every kernel up front.
"""
import importlib

_SOURCES = {
    "conv": ["conv2d", "conv_transpose2d"],
    "pool": ["max_pool2d", "avg_pool2d", "adaptive_avg_pool2d", "adaptive_max_pool2d"],
    "norm": ["batch_norm", "group_norm"],
    "softmax": ["softmax", "log_softmax"],
    "loss": ["cross_entropy", "nll_loss"],
    "bce": ["binary_cross_entropy_with_logits"],
    "dice": ["dice_loss"],
    "resample": ["interpolate"],
    "dropout": ["dropout", "dropout2d"],
    "activation": ["relu", "sigmoid", "tanh", "linear", "pad"],
}
_MODULE_OF = {name: module for module, names in _SOURCES.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name):
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'gradflow.functional' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"gradflow.ops.{module}"), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
