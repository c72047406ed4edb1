"""Record one forward pass as the list of Function calls it made.

Why record at ``Function.apply``: every differentiable op goes through it, with
its tensors and its plain arguments (strides, axes, window tables) exactly as
the op's forward sees them, so each ONNX converter reads the same arguments as
the op it translates. ``recording`` swaps ``Function.apply`` for a wrapper only
while an export traces, so the autograd core carries no export code and
ordinary runs pay nothing. (Ops that other threads run meanwhile would be
recorded too: export while no other thread computes.)

Why two traces: the exporter runs the model on the example input and again on
a second input whose batch differs (or, with a fixed batch, whose samples are
permuted). Comparing the two tells which axis of every value follows the batch
(so shapes can be emitted with that axis left free), and catches what a single
trace cannot export faithfully: control flow that depends on the batch or the
data, and tensors computed outside gradflow's ops that would be frozen as
constants.
"""
import contextlib
from dataclasses import dataclass

import numpy as np

from gradflow import backend
from gradflow.autograd import Function, no_grad
from gradflow.tensor import Tensor


class ExportError(RuntimeError):
    """The model cannot be exported as traced (an unsupported op, or a value the graph cannot express)."""


@dataclass
class Call:
    function: type
    args: tuple
    outputs: tuple


@contextlib.contextmanager
def recording(calls):
    """While active, every ``Function.apply`` appends a ``Call`` to ``calls``."""
    original = Function.__dict__["apply"]

    def apply(cls, *args):
        result = original.__func__(cls, *args)
        calls.append(Call(cls, args, result if isinstance(result, tuple) else (result,)))
        return result

    Function.apply = classmethod(apply)
    try:
        yield
    finally:
        Function.apply = original


class Trace:
    """One forward pass: its calls, and a stable key for every tensor it touched.

    Keys are comparable across traces: ("input", i), ("param", state_dict name),
    ("op", call index, output index) and ("const", call index, argument index).
    """

    def __init__(self, model, inputs):
        self.inputs = inputs
        self.calls = []
        with no_grad(), recording(self.calls):
            result = model(*inputs)
        self.outputs = _as_tuple(result, "the model's forward")
        self._keys = {}
        for i, t in enumerate(inputs):
            self._keys[id(t)] = ("input", i)
        for name, t in list(model.named_parameters()) + list(model.named_buffers()):
            self._keys.setdefault(id(t), ("param", name))
        self.tensors = {}     # key -> tensor, for every tensor the calls read or wrote
        for index, call in enumerate(self.calls):
            for position, arg in enumerate(call.args):
                if isinstance(arg, Tensor):
                    self.tensors.setdefault(self.key(arg, index, position), arg)
            for j, out in enumerate(call.outputs):
                self._keys[id(out)] = ("op", index, j)
                self.tensors[("op", index, j)] = out
        for i, t in enumerate(inputs):
            self.tensors[("input", i)] = t

    def key(self, tensor, call_index=None, position=None):
        found = self._keys.get(id(tensor))
        if found is None:
            if call_index is None:
                raise ExportError("the model returned a tensor that no gradflow op computed from its input "
                                  "(a constant output cannot be exported)")
            return ("const", call_index, position)
        return found

    def arg_keys(self, index):
        call = self.calls[index]
        return tuple(self.key(a, index, p) if isinstance(a, Tensor) else None for p, a in enumerate(call.args))


def _as_tuple(result, what):
    items = result if isinstance(result, (tuple, list)) else (result,)
    for item in items:
        if not isinstance(item, Tensor):
            raise ExportError(f"{what} must return a Tensor or a tuple of Tensors, got {type(item).__name__}")
    return tuple(items)


def second_input(t, dynamic_batch):
    """The input of the comparison trace: samples reversed, plus one more when the batch is free."""
    data = backend.to_numpy(t.data)
    other = data[::-1]
    if dynamic_batch:
        other = np.concatenate([other, data[:1]])
    return Tensor(backend.to_device(np.ascontiguousarray(other), t.device))


def check_same_program(first, second):
    """Raise ExportError unless both traces ran the same ops on the same values."""
    if len(first.calls) != len(second.calls):
        raise ExportError(f"the forward pass ran {len(first.calls)} ops on the example input but "
                          f"{len(second.calls)} on an input with another batch size or other values: "
                          f"control flow that depends on the batch or the data cannot be exported")
    for index, (a, b) in enumerate(zip(first.calls, second.calls)):
        if a.function is not b.function or first.arg_keys(index) != second.arg_keys(index):
            raise ExportError(f"op {index} of the forward pass was {a.function.__name__} on the example input "
                              f"but {b.function.__name__} on another input: control flow that depends on the "
                              f"batch or the data cannot be exported")
        for position, arg in enumerate(a.args):
            if isinstance(arg, Tensor) and first.key(arg, index, position)[0] == "const":
                other = b.args[position]
                if arg.shape != other.shape or not np.array_equal(backend.to_numpy(arg.data),
                                                                  backend.to_numpy(other.data)):
                    raise ExportError(
                        f"argument {position} of {a.function.__name__} (op {index}) is a tensor computed outside "
                        f"gradflow's ops that changes with the input (shape {arg.shape} vs {other.shape}); it "
                        f"would be frozen as a constant. Compute it with tensor ops instead")
