"""Build an ONNX graph from two aligned traces: value names, initializers, nodes, free batch axes."""
import numpy as np

from gradflow import backend
from gradflow.onnx.trace import ExportError
from gradflow.tensor import Tensor

INT64_MAX = np.iinfo(np.int64).max
INT64_MIN = np.iinfo(np.int64).min


class Graph:
    """What a converter sees: ``name(t)`` of each input tensor, ``add(op, inputs, **attrs)`` for nodes,
    ``const(array)`` for constants, ``free_axes(t)`` for the axes that follow the batch."""

    def __init__(self, trace, other, opset):
        import onnx
        self.onnx = onnx
        self.trace, self.other, self.opset = trace, other, opset
        self.nodes, self.initializers = [], []
        self._names = {}           # trace key -> ONNX value name (None: an output no converter produced)
        self._counts = {}
        self._consts = {}          # (dtype, shape, bytes) -> name, so repeated constants are stored once
        self.call_index = None     # the call being converted (for keys and messages)

    # ---- values ----------------------------------------------------------------------------------
    def key(self, tensor):
        position = next(p for p, a in enumerate(self.trace.calls[self.call_index].args) if a is tensor) \
            if self.call_index is not None else None
        return self.trace.key(tensor, self.call_index, position)

    def name(self, tensor):
        """The ONNX value holding ``tensor``: a graph input, an op's output, or an initializer."""
        key = self.key(tensor)
        if key in self._names:
            name = self._names[key]
            if name is None:
                producer = self.trace.calls[key[1]].function.__name__
                raise ExportError(f"output {key[2]} of {producer} (op {key[1]}) is used but is not exported "
                                  f"(e.g. max pooling indices)")
            return name
        if key[0] == "op":
            raise ExportError(f"internal: value {key} used before it was produced")
        data = np.array(backend.to_numpy(tensor.data), order="C")
        name = key[1] if key[0] == "param" else self.fresh("const")
        self.initializers.append(self.onnx.numpy_helper.from_array(data, name))
        self._names[key] = name
        return name

    def bind(self, key, name):
        self._names[key] = name

    def free_axes(self, tensor):
        """Axes of ``tensor`` whose size followed the batch between the two traces."""
        if self.other is None:
            return ()
        key = self.key(tensor)
        mine = tensor.shape
        theirs = self.other.tensors[key].shape if key in self.other.tensors else mine
        if len(mine) != len(theirs):
            raise ExportError(f"a value has shape {mine} at one batch size and {theirs} at another")
        return tuple(i for i, (a, b) in enumerate(zip(mine, theirs)) if a != b)

    def free_axes_of_output(self, j=0):
        call = self.trace.calls[self.call_index]
        return self.free_axes_of_key(("op", self.call_index, j), call.outputs[j].shape)

    def free_axes_of_key(self, key, shape):
        if self.other is None:
            return ()
        theirs = self.other.tensors[key].shape
        return tuple(i for i, (a, b) in enumerate(zip(shape, theirs)) if a != b)

    def fresh(self, stem):
        count = self._counts.get(stem, 0)
        self._counts[stem] = count + 1
        return f"{stem}_{count}"

    # ---- constants ---------------------------------------------------------------------------------
    def const(self, array, dtype=None):
        array = np.array(array, dtype=dtype, order="C")     # (np.ascontiguousarray would make 0-d arrays 1-d)
        key = (array.dtype.str, array.shape, array.tobytes())
        if key not in self._consts:
            name = self.fresh("const")
            self.initializers.append(self.onnx.numpy_helper.from_array(array, name))
            self._consts[key] = name
        return self._consts[key]

    def ints(self, values):
        return self.const(np.asarray(values, dtype=np.int64).reshape(-1))

    def scalar(self, value, dtype):
        return self.const(np.asarray(value, dtype=dtype))

    # ---- nodes ----------------------------------------------------------------------------------------
    def add(self, op_type, inputs, outputs=1, **attrs):
        """Append a node; returns its output name (or the list of names when ``outputs`` > 1)."""
        stem = self.trace.calls[self.call_index].function.__name__ if self.call_index is not None else op_type
        names = [self.fresh(stem) for _ in range(outputs)]
        attrs = {k: v for k, v in attrs.items() if v is not None}
        self.nodes.append(self.onnx.helper.make_node(op_type, list(inputs), names, name=self.fresh(op_type + "_node"),
                                                     **attrs))
        return names[0] if outputs == 1 else names

    def reduce(self, op_type, x, axes, keepdims):
        """ReduceMax/Mean/...: axes became an input in opset 18 (ReduceSum: 13)."""
        axes = [int(a) for a in axes]
        if op_type == "ReduceSum" or self.opset >= 18:
            return self.add(op_type, [x, self.ints(axes)], keepdims=int(keepdims))
        return self.add(op_type, [x], axes=axes, keepdims=int(keepdims))

    def cast(self, name, from_dtype, to_dtype):
        if np.dtype(from_dtype) == np.dtype(to_dtype):
            return name
        return self.add("Cast", [name], to=self.onnx.helper.np_dtype_to_tensor_dtype(np.dtype(to_dtype)))

    def operand(self, value, dtype):
        """A tensor argument or a Python number as an ONNX value of ``dtype``."""
        if isinstance(value, Tensor):
            return self.cast(self.name(value), value.dtype, dtype)
        return self.scalar(value, dtype)

    def shape_with_free_axes(self, shape, free, what):
        """A Reshape target: the traced sizes, with -1 on the one axis that follows the batch."""
        if len(free) > 1:
            raise ExportError(f"{what}: output shape {tuple(shape)} has several axes that follow the batch "
                              f"(axes {free}); export with dynamic_batch=False")
        return self.ints([-1 if i in free else n for i, n in enumerate(shape)])
