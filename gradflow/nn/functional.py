"""``import gradflow.nn.functional as F``: the same functions as ``gradflow.functional``.

Delegates lookups, so each op's module is still imported only on first use.
"""
from gradflow import functional as _functional

__all__ = list(_functional.__all__)


def __getattr__(name):
    value = getattr(_functional, name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
