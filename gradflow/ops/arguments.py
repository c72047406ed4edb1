"""Argument checks shared by the ops (and the layers that pass arguments through to them)."""
import numbers

_MINIMUM_WORDS = {0: "non-negative", 1: "positive"}


def pair(value, name, op, minimum=None, integers=True):
    """``value`` as an (h, w) pair: an int becomes (v, v), a sequence of 1 or 2 items a tuple of 2.

    As torch.nn.modules.utils._pair, checked: ``integers`` requires ints (bools refused) and
    returns Python ints, else any real numbers pass; ``minimum`` (0: non-negative, 1: positive)
    bounds each item. Errors start with ``op`` and name the argument: TypeError for a wrong
    type, ValueError for a wrong length or an item below ``minimum``.
    """
    if type(value) is int and (minimum is None or value >= minimum):    # the common case, fast
        return value, value
    items = tuple(value) if isinstance(value, (tuple, list)) else (value,)
    kind = "an int or a pair of ints" if integers else "a number or a pair of numbers"
    if len(items) not in (1, 2):
        raise ValueError(f"{op}: {name} must be {kind} (one per spatial dim), got {value!r}")
    allowed = numbers.Integral if integers else numbers.Real
    if any(isinstance(v, bool) or not isinstance(v, allowed) for v in items):
        raise TypeError(f"{op}: {name} must be {kind}, got {value!r}")
    result = tuple(int(v) if integers else v for v in items) * (2 // len(items))
    if minimum is not None and min(result) < minimum:
        raise ValueError(f"{op}: {name} must be {_MINIMUM_WORDS.get(minimum, f'>= {minimum}')}, got {value!r}")
    return result
