"""Reverse-mode autodiff: Function (forward/backward on a context) and the graph walk.

Functions work on raw arrays (numpy or cupy): ``forward(ctx, *args)`` receives the
``.data`` of every Tensor argument (other arguments pass through unchanged) and
returns an array or a tuple of arrays; ``backward(ctx, *grads)`` receives one
gradient array per output and returns one gradient (or None) per forward argument.
"""
import contextlib
import os
import threading

import numpy as np

from gradflow import backend

_state = threading.local()
Tensor = None   # set by gradflow.tensor (which imports this module)


def is_grad_enabled():
    return getattr(_state, "enabled", True)


def set_grad_enabled(mode):
    _state.enabled = bool(mode)


@contextlib.contextmanager
def _grad_mode(mode):
    previous = is_grad_enabled()
    set_grad_enabled(mode)
    try:
        yield
    finally:
        set_grad_enabled(previous)


# Debug mode: extra checks in backward() that cost a little time. GRADFLOW_DEBUG=1 turns
# it on at import; the test suite runs with it on.
_debug = os.environ.get("GRADFLOW_DEBUG", "0") not in ("", "0")


def is_debug_enabled():
    return _debug


def set_debug(mode):
    """In debug mode, a backward that returns None for an input that requires grad is an
    error (naming the op and the input) instead of silently counting as a zero gradient."""
    global _debug
    _debug = bool(mode)


@contextlib.contextmanager
def debug_mode(mode=True):
    previous = is_debug_enabled()
    set_debug(mode)
    try:
        yield
    finally:
        set_debug(previous)


class no_grad(contextlib.ContextDecorator):
    """Context manager and decorator that disables graph recording."""

    def __enter__(self):
        self._previous = is_grad_enabled()
        set_grad_enabled(False)

    def __exit__(self, *exc):
        set_grad_enabled(self._previous)
        return False


class enable_grad(no_grad):
    def __enter__(self):
        self._previous = is_grad_enabled()
        set_grad_enabled(True)


class Context:
    """What a Function's forward leaves for its backward; also the graph node."""

    __slots__ = ("function", "edges", "needs_input_grad", "device", "_saved", "_freed",
                 "_n_outputs", "_output_meta", "__dict__")

    def __init__(self, function, edges, needs_input_grad):
        self.function = function
        # One per forward argument: None, a leaf Tensor, or (producing Context, output
        # index, shape). Edges, not Tensors, so the graph keeps no intermediate data alive.
        self.edges = edges
        self.needs_input_grad = needs_input_grad
        self._saved = ()
        self._freed = False
        self._n_outputs = 1

    def save_for_backward(self, *arrays):
        self._saved = arrays

    @property
    def saved_tensors(self):
        if self._freed:
            raise RuntimeError(
                f"Trying to backward through the graph of {self.function.__name__} a second "
                "time: its saved values were freed after the first backward. Pass "
                "retain_graph=True to the first backward() if you need to call it twice.")
        return self._saved

    def free(self):
        self._saved = ()
        self._freed = True
        self.__dict__.clear()


class Function:
    """Subclass with @staticmethod forward(ctx, *args) and backward(ctx, *grads)."""

    @staticmethod
    def forward(ctx, *args):
        raise NotImplementedError

    @staticmethod
    def backward(ctx, *grads):
        raise NotImplementedError

    @classmethod
    def apply(cls, *args):
        raw, needs, edges = [], [], []
        device = first_tensor = None
        record = False
        for arg in args:
            if isinstance(arg, Tensor):
                data = arg.data
                arg_device = "cpu" if type(data) is np.ndarray else backend.device_of(data)
                if device is None:
                    device, first_tensor = arg_device, arg
                elif arg_device != device:
                    raise RuntimeError(
                        f"{cls.__name__}: expected all tensors on the same device, but found "
                        f"{device} (shape {first_tensor.shape}) and {arg_device} (shape {arg.shape})")
                raw.append(data)
                need = arg._requires_grad
                record = record or need
            else:
                raw.append(arg)
                need = False
            needs.append(need)
            edges.append(_edge(arg) if need else None)
        record = record and is_grad_enabled()
        if record:
            ctx = Context(cls, tuple(edges), tuple(needs))
        else:
            ctx = Context(cls, (), (False,) * len(args))
        ctx.device = device or "cpu"
        out = cls.forward(ctx, *raw)   # on arrays: nothing in it can record a graph
        if not isinstance(out, tuple):
            return Tensor._from_op(out, ctx if record else None, 0)
        if record:
            ctx._n_outputs = len(out)
            ctx._output_meta = tuple((o.shape, o.dtype) for o in out)
        # integer outputs (indices) are never differentiable, so they do not require grad
        return tuple(Tensor._from_op(o, ctx if record and _is_float(o.dtype) else None, i)
                     for i, o in enumerate(out))


def _edge(tensor):
    return tensor if tensor._ctx is None else (tensor._ctx, tensor._out_index, tensor.shape)


def _is_float(dtype):
    return dtype.kind == "f"


def _topological_order(roots):
    """Contexts reachable from roots, each after every context that consumes it."""
    order, visited = [], set()
    stack = [(ctx, False) for ctx in roots]
    while stack:
        ctx, expanded = stack.pop()
        if expanded:
            order.append(ctx)
            continue
        if id(ctx) in visited:
            continue
        visited.add(id(ctx))
        stack.append((ctx, True))
        # Pushed last to first, so the first argument's subgraph (the data path, by convention)
        # is explored first and so runs last: the short branches to parameters (a weight's
        # transpose or reshape) run right after their consumer, and their leaves' gradients
        # (and post-accumulate hooks) are ready early in backward, not only at its very end.
        for edge in reversed(ctx.edges):
            if type(edge) is tuple and id(edge[0]) not in visited:
                stack.append((edge[0], False))
    order.reverse()
    return order


def backward(tensors, grad_tensors, retain_graph=False):
    """Accumulate d(sum of tensors * grad_tensors)/d(leaf) into every leaf's .grad."""
    pending = {}   # id(ctx) -> list of output grads
    roots = []
    for t, g in zip(tensors, grad_tensors):
        if not t.requires_grad:
            raise RuntimeError("element of tensors does not require grad and does not have a grad_fn")
        if g is None:
            if t.data.size != 1:
                raise RuntimeError(
                    f"grad can be implicitly created only for scalar outputs; backward() was "
                    f"called on a tensor of shape {t.shape}: pass a gradient of that shape")
            xp = backend.get_array_module(t.data)
            g = xp.ones_like(t.data)
        else:
            g = g.data if isinstance(g, Tensor) else g
            if tuple(g.shape) != t.shape:
                raise RuntimeError(f"backward: gradient has shape {tuple(g.shape)} but the tensor has shape {t.shape}")
            if backend.device_of(g) != t.device:
                raise RuntimeError(f"backward: gradient is on {backend.device_of(g)} but the tensor is on {t.device}")
        if t._ctx is None:
            t._accumulate(g)
            continue
        _add_output_grad(pending, t._ctx, t._out_index, g)
        roots.append(t._ctx)

    order = _topological_order(roots)
    hooks = _PostAccumulateHooks(order, tensors) if _post_accumulate_hooks_registered else None
    with _grad_mode(False):
        for ctx in order:
            grads = pending.pop(id(ctx), None)
            if grads is None:
                if hooks is not None:
                    hooks.visited(ctx, ())
                continue
            if ctx._freed:
                raise RuntimeError(
                    f"Trying to backward through the graph of {ctx.function.__name__} a second "
                    "time: it was freed after the first backward. Pass retain_graph=True to "
                    "the first backward() if you need to call it twice.")
            grads = _materialize(ctx, grads)
            input_grads = ctx.function.backward(ctx, *grads)
            if not isinstance(input_grads, tuple):
                input_grads = (input_grads,)
            if len(input_grads) < len(ctx.edges):
                raise RuntimeError(
                    f"{ctx.function.__name__}.backward returned {len(input_grads)} gradients "
                    f"for {len(ctx.edges)} forward arguments")
            if _debug:
                _check_no_missing_grad(ctx, input_grads)
            if not retain_graph:
                ctx.free()
            for edge, g in zip(ctx.edges, input_grads):
                if edge is None or g is None:
                    continue
                if type(edge) is tuple:
                    parent, index, shape = edge
                    _check_grad_shape(ctx, g, shape)
                    _add_output_grad(pending, parent, index, g)
                else:
                    _check_grad_shape(ctx, g, edge.shape)
                    edge._accumulate(g)
            if hooks is not None:
                hooks.visited(ctx, input_grads)
        if hooks is not None:
            hooks.finish()


# Set by Tensor.register_post_accumulate_grad_hook; until then backward skips the bookkeeping.
_post_accumulate_hooks_registered = False


class _PostAccumulateHooks:
    """Runs each hooked leaf's post-accumulate-grad hooks once per backward, right after
    its last gradient contribution of the pass: a leaf used by k nodes of the graph is
    done when all k have run (or been skipped), so a hook sees the full .grad while the
    rest of backward is still to come (what lets data parallelism overlap communication)."""

    def __init__(self, order, roots):
        self.remaining = {}   # id(leaf) -> [leaf, contributions still to come]
        for ctx in order:
            for edge in ctx.edges:
                if edge is not None and type(edge) is not tuple and _hooks_of(edge):
                    entry = self.remaining.setdefault(id(edge), [edge, 0])
                    entry[1] += 1
        # leaves passed to backward() directly got their gradient already, before the walk
        self.touched = {id(t): t for t in roots if t._ctx is None and _hooks_of(t)}

    def visited(self, ctx, input_grads):
        """ctx's backward ran (input_grads) or was skipped (no gradient reached it: ())."""
        for k, edge in enumerate(ctx.edges):
            if edge is None or type(edge) is tuple:
                continue
            entry = self.remaining.get(id(edge))
            if entry is None:
                continue
            entry[1] -= 1
            if k < len(input_grads) and input_grads[k] is not None:
                self.touched[id(edge)] = edge
            if entry[1] == 0:
                del self.remaining[id(edge)]
                if self.touched.pop(id(edge), None) is not None:
                    _run_post_accumulate_hooks(edge)

    def finish(self):
        for leaf in self.touched.values():
            _run_post_accumulate_hooks(leaf)


def _hooks_of(leaf):
    return getattr(leaf, "_post_accumulate_grad_hooks", None)


def _run_post_accumulate_hooks(leaf):
    for hook in list(leaf._post_accumulate_grad_hooks.values()):
        hook(leaf)


def _check_no_missing_grad(ctx, input_grads):
    for i, (edge, g) in enumerate(zip(ctx.edges, input_grads)):
        if edge is not None and g is None:
            raise RuntimeError(
                f"{ctx.function.__name__}.backward returned None for input {i}, which requires grad "
                f"(shape {edge[2] if type(edge) is tuple else edge.shape}): its gradient would be "
                "silently dropped (debug mode check)")


def _check_grad_shape(ctx, g, shape):
    if tuple(g.shape) != shape:
        raise RuntimeError(
            f"{ctx.function.__name__}.backward returned a gradient of shape "
            f"{tuple(g.shape)} for an input of shape {shape}")


def _add_output_grad(pending, ctx, index, g):
    slots = pending.get(id(ctx))
    if slots is None:
        slots = pending[id(ctx)] = [None] * getattr(ctx, "_n_outputs", 1)
    if index >= len(slots):
        slots.extend([None] * (index + 1 - len(slots)))
    slots[index] = g if slots[index] is None else slots[index] + g


def _materialize(ctx, grads):
    meta = getattr(ctx, "_output_meta", None)
    if meta is None:
        return grads
    out = []
    for i, (shape, dtype) in enumerate(meta):
        g = grads[i]
        if g is None and _is_float(dtype):
            xp = _array_module_of_ctx(ctx)
            g = xp.zeros(shape, dtype=dtype)
        out.append(g)
    return out


def _array_module_of_ctx(ctx):
    return backend.xp_for(ctx.device)
