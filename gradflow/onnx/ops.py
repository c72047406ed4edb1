"""One converter per gradflow op: ``convert(g, *args)`` receives the op's forward arguments (tensors as
traced, plain values as given) and returns the ONNX name of each output (None: not exported).

Where an op's arguments are tables rather than a geometry (pooling windows,
resampling weights), the converter emits the table itself (Gather indices or a
MatMul matrix), so the graph computes exactly what gradflow computed; a pool
whose windows are a plain sliding window becomes a native MaxPool/AveragePool.
"""
import numpy as np

from gradflow import backend
from gradflow.onnx.graph import INT64_MAX, INT64_MIN
from gradflow.onnx.trace import ExportError
from gradflow.ops import activation, conv, elementwise, norm, pool, reduce, resample, shape, softmax

CONVERTERS = {}


def converts(*functions):
    def register(convert):
        for function in functions:
            CONVERTERS[function] = convert
        return convert
    return register


def _out(g, j=0):
    return g.trace.calls[g.call_index].outputs[j]


def _no_free(g, x, axes, what):
    """Refuse an op that would fix the size of an axis that follows the batch."""
    hit = sorted(set(g.free_axes(x)) & set(axes))
    if hit:
        raise ExportError(f"{what} acts on axis {hit[0]}, which follows the batch; export with dynamic_batch=False")


# ---- convolution ---------------------------------------------------------------------------------------
@converts(conv.Conv2d)
def conv2d(g, x, weight, bias, stride, pads, dilation, groups):
    inputs = [g.name(x), g.name(weight)] + ([g.name(bias)] if bias is not None else [])
    return [g.add("Conv", inputs, kernel_shape=list(weight.shape[2:]), strides=list(stride), dilations=list(dilation),
                  pads=[pads[0][0], pads[1][0], pads[0][1], pads[1][1]], group=groups)]


@converts(conv.ConvTranspose2d)
def conv_transpose2d(g, x, weight, bias, stride, pads, dilation, groups, out_hw):
    kernel = weight.shape[2:]
    # ONNX derives the output size from output_padding, gradflow carries the size itself
    output_padding = [out - ((n - 1) * s - 2 * p[0] + d * (k - 1) + 1)
                      for out, n, s, p, d, k in zip(out_hw, x.shape[2:], stride, pads, dilation, kernel)]
    inputs = [g.name(x), g.name(weight)] + ([g.name(bias)] if bias is not None else [])
    return [g.add("ConvTranspose", inputs, kernel_shape=list(kernel), strides=list(stride), dilations=list(dilation),
                  pads=[pads[0][0], pads[1][0], pads[0][1], pads[1][1]], group=groups, output_padding=output_padding)]


# ---- normalisation ---------------------------------------------------------------------------------------
def _per_channel(g, t, x):
    """A (C,) weight or bias as (C, 1, ...), to broadcast over x (N, C, ...)."""
    return g.add("Reshape", [g.cast(g.name(t), t.dtype, x.dtype), g.ints([x.shape[1]] + [1] * (x.ndim - 2))])


@converts(norm.BatchNorm)
def batch_norm(g, x, running_mean, running_var, weight, bias, training, momentum, eps, relu):
    if training or running_mean is None:
        raise ExportError("batch norm in training mode (batch statistics) cannot be exported: the exporter "
                          "traces in eval mode, so use running statistics (track_running_stats=True)")
    channels = x.shape[1]
    scale = g.cast(g.name(weight), weight.dtype, x.dtype) if weight is not None else g.const(np.ones(channels, x.dtype))
    shift = g.cast(g.name(bias), bias.dtype, x.dtype) if bias is not None else g.const(np.zeros(channels, x.dtype))
    mean = g.cast(g.name(running_mean), running_mean.dtype, x.dtype)
    var = g.cast(g.name(running_var), running_var.dtype, x.dtype)
    y = g.add("BatchNormalization", [g.name(x), scale, shift, mean, var], epsilon=float(eps))
    return [g.add("Relu", [y]) if relu else y]


@converts(norm.GroupNorm)
def group_norm(g, x, num_groups, weight, bias, eps, relu):
    # (N, C, *) -> (N, G, C/G * spatial): instance norm over each group, then the per-channel affine
    if g.free_axes(x) not in ((), (0,)):
        raise ExportError(f"group norm of a value whose batch is on axis {g.free_axes(x)}; expected axis 0")
    grouped = g.add("Reshape", [g.name(x), g.ints([0, num_groups, -1])])
    ones, zeros = g.const(np.ones(num_groups, x.dtype)), g.const(np.zeros(num_groups, x.dtype))
    normed = g.add("InstanceNormalization", [grouped, ones, zeros], epsilon=float(eps))
    y = g.add("Reshape", [normed, g.add("Shape", [g.name(x)])])
    if weight is not None:
        y = g.add("Mul", [y, _per_channel(g, weight, x)])
    if bias is not None:
        y = g.add("Add", [y, _per_channel(g, bias, x)])
    return [g.add("Relu", [y]) if relu else y]


# ---- pooling ------------------------------------------------------------------------------------------------
def _table(a):
    return np.asarray(backend.to_numpy(a))


def _sliding(windows, size):
    """(kernel, stride) when the windows are a plain sliding window with no padding, else None."""
    first, count = _table(windows.first), _table(windows.count)
    if len(first) == 0:
        raise ExportError("pooling to an output of size 0 cannot be exported")
    kernel = int(count[0])
    span = windows.step * (kernel - 1) + 1
    if len(first) == 1:
        stride = max(1, size - span + 1)
    else:
        stride = int(first[1] - first[0])
    if stride < 1 or np.any(count != kernel) or np.any(first != np.arange(len(first)) * stride):
        return None
    if (size - span) // stride + 1 != len(first):
        return None
    return kernel, stride


def _tap_table(windows):
    """(O, K) input positions of each window, short windows repeating their last tap (harmless for a max)."""
    first, count = _table(windows.first), _table(windows.count)
    if np.any(count < 1):
        raise ExportError("max pooling with an empty window cannot be exported")
    taps = np.arange(count.max())[None, :]
    return first[:, None] + np.minimum(taps, count[:, None] - 1) * windows.step


def _average_matrix(windows, size, dtype):
    """(O, size) matrix whose row o averages window o along one axis (its share of the divisor)."""
    first, count, divisor = _table(windows.first), _table(windows.count), _table(windows.divisor)
    matrix = np.zeros((len(first), size))
    for o, (f, c) in enumerate(zip(first, count)):
        matrix[o, f:f + c * windows.step:windows.step] = 1.0 / divisor[o]
    return matrix.astype(dtype)


@converts(pool.MaxPool2d)
def max_pool2d(g, x, rows, cols):
    height, width = x.shape[2:]
    sliding = _sliding(rows, height), _sliding(cols, width)
    if None not in sliding:
        (kh, sh), (kw, sw) = sliding
        return [g.add("MaxPool", [g.name(x)], kernel_shape=[kh, kw], strides=[sh, sw],
                      dilations=[rows.step, cols.step]), None]
    y = g.name(x)
    for axis, windows in ((2, rows), (3, cols)):   # separable: the max of row maxima
        y = g.add("Gather", [y, g.const(_tap_table(windows))], axis=axis)
        y = g.reduce("ReduceMax", y, [axis + 1], keepdims=False)
    return [y, None]


@converts(pool.AvgPool2d)
def avg_pool2d(g, x, rows, cols):
    height, width = x.shape[2:]
    sliding = _sliding(rows, height), _sliding(cols, width)
    if None not in sliding and np.all(_table(rows.divisor) == sliding[0][0]) \
            and np.all(_table(cols.divisor) == sliding[1][0]) and rows.step == cols.step == 1:
        (kh, sh), (kw, sw) = sliding
        return [g.add("AveragePool", [g.name(x)], kernel_shape=[kh, kw], strides=[sh, sw])]
    # padded, ceil-mode or adaptive windows: rows (Oh, H) @ x @ columns (W, Ow), the divisor in the weights
    by_rows = g.add("MatMul", [g.const(_average_matrix(rows, height, x.dtype)), g.name(x)])
    return [g.add("MatMul", [by_rows, g.const(_average_matrix(cols, width, x.dtype).T)])]


# ---- resampling ----------------------------------------------------------------------------------------------
def _resample_matrix(index, weight, size):
    matrix = np.zeros((index.shape[0], size), dtype=weight.dtype)
    for k in range(index.shape[1]):    # += : a border output may read one input twice
        np.add.at(matrix, (np.arange(index.shape[0]), index[:, k]), weight[:, k])
    return matrix


@converts(resample.Resample2d)
def resample2d(g, x, tables_h, tables_w):
    rows_h, weight_h = (None if a is None else _table(a) for a in tables_h[:2])
    rows_w, weight_w = (None if a is None else _table(a) for a in tables_w[:2])
    if weight_h is None:       # nearest: pick rows, then columns
        y = g.add("Gather", [g.name(x), g.const(rows_h[:, 0])], axis=2)
        return [g.add("Gather", [y, g.const(rows_w[:, 0])], axis=3)]
    # bilinear: (Oh, H) @ x @ (W, Ow), the interpolation weights gradflow computed
    dtype = x.dtype
    by_cols = g.add("MatMul", [g.name(x), g.const(_resample_matrix(rows_w, weight_w, x.shape[3]).T.astype(dtype))])
    return [g.add("MatMul", [g.const(_resample_matrix(rows_h, weight_h, x.shape[2]).astype(dtype)), by_cols])]


# ---- padding -------------------------------------------------------------------------------------------------------
@converts(activation.ConstantPad)
def constant_pad(g, x, widths, value):
    _no_free(g, x, [axis for axis, w in enumerate(widths) if any(w)], "pad")
    pads = [lo for lo, _ in widths] + [hi for _, hi in widths]
    return [g.add("Pad", [g.name(x), g.ints(pads), g.scalar(value, x.dtype)], mode="constant")]


@converts(activation.IndexPad)
def index_pad(g, x, widths, mode):
    # reflect/replicate/circular: gather the same source positions gradflow gathers (any opset)
    _no_free(g, x, [axis for axis, w in enumerate(widths) if any(w)], "pad")
    y = g.name(x)
    for axis, (lo, hi) in enumerate(widths):
        if lo or hi:
            y = g.add("Gather", [y, g.const(activation._source_index(x.shape[axis], lo, hi, mode))], axis=axis)
    return [y]


# ---- shapes -------------------------------------------------------------------------------------------------------
@converts(shape.Reshape)
def reshape(g, x, target):
    out = _out(g)
    return [g.add("Reshape", [g.name(x), g.shape_with_free_axes(out.shape, g.free_axes_of_output(), "reshape")])]


@converts(shape.Permute)
def permute(g, x, dims):
    return [g.add("Transpose", [g.name(x)], perm=[int(d) for d in dims])]


@converts(shape.Expand)
def expand(g, x, target):
    out = _out(g)
    lead = out.ndim - x.ndim
    free_in = {a + lead for a in g.free_axes(x)}
    free_out = set(g.free_axes_of_output())
    if free_out - free_in:
        raise ExportError(f"expand to {tuple(target)} fixes the batch size (a constant expanded to the batch); "
                          f"export with dynamic_batch=False")
    # Expand broadcasts both ways: 1 keeps the input's (batch) size
    return [g.add("Expand", [g.name(x), g.ints([1 if i in free_out else n for i, n in enumerate(out.shape)])])]


@converts(shape.Cat)
def cat(g, dim, *tensors):
    for t in tensors:
        _no_free(g, t, [dim], "cat")
    return [g.add("Concat", [g.name(t) for t in tensors], axis=int(dim))]


@converts(shape.Stack)
def stack(g, dim, *tensors):
    parts = [g.add("Unsqueeze", [g.name(t), g.ints([dim])]) for t in tensors]
    return [g.add("Concat", parts, axis=int(dim))]


@converts(shape.GetItem)
def getitem(g, x, index):
    items = list(index) if isinstance(index, tuple) else [index]
    arrays = [i for i in items if hasattr(i, "shape")]
    if len(arrays) > 1 or any(getattr(a, "ndim", 1) != 1 or a.dtype.kind not in "iu" for a in arrays):
        raise ExportError("indexing with several index arrays, or with non-1-D or boolean arrays, is not "
                          "supported by the ONNX exporter (use one 1-D integer index array)")
    ellipses = [p for p, i in enumerate(items) if i is Ellipsis]   # (`in` would compare arrays elementwise)
    if ellipses:
        at = ellipses[0]
        fill = x.ndim - sum(1 for i in items if i is not None and i is not Ellipsis)
        items[at:at + 1] = [slice(None)] * fill
    items += [slice(None)] * (x.ndim - sum(1 for i in items if i is not None))
    starts, ends, axes, steps, selects, gathers, new_axes = [], [], [], [], [], [], []
    axis = out_axis = 0
    for item in items:
        if item is None:
            new_axes.append(out_axis)
            out_axis += 1
            continue
        n = x.shape[axis]
        if isinstance(item, slice):
            start, stop, step = item.indices(n)
            if (start, stop, step) != (0, n, 1):
                _no_free(g, x, [axis], "slicing")
                starts.append(start)
                ends.append(INT64_MIN if step < 0 and stop < 0 else stop)
                axes.append(axis)
                steps.append(step)
            out_axis += 1
        elif hasattr(item, "shape"):
            _no_free(g, x, [axis], "indexing with an array")
            gathers.append((axis, _table(item).astype(np.int64) % n))
            out_axis += 1
        else:
            _no_free(g, x, [axis], "indexing with an integer")
            selects.append((axis, int(item) % n))
        axis += 1
    y = g.name(x)
    if axes:
        y = g.add("Slice", [y, g.ints(starts), g.ints(ends), g.ints(axes), g.ints(steps)])
    for axis, positions in gathers:
        y = g.add("Gather", [y, g.const(positions)], axis=axis)
    for axis, position in sorted(selects, reverse=True):    # from the last axis, so earlier ones keep their place
        y = g.add("Gather", [y, g.const(np.int64(position))], axis=axis)
    if new_axes:
        y = g.add("Unsqueeze", [y, g.ints(new_axes)])
    if y == g.name(x):
        y = g.add("Identity", [y])
    return [y]


# ---- elementwise --------------------------------------------------------------------------------------------------
_BINARY = {elementwise.Add: "Add", elementwise.Sub: "Sub", elementwise.Mul: "Mul", elementwise.Div: "Div",
           elementwise.Pow: "Pow"}
_UNARY = {elementwise.Neg: "Neg", elementwise.Exp: "Exp", elementwise.Log: "Log", elementwise.Sqrt: "Sqrt",
          elementwise.Abs: "Abs", elementwise.Relu: "Relu", elementwise.Sigmoid: "Sigmoid",
          elementwise.Tanh: "Tanh", elementwise.Clone: "Identity", elementwise.ToDevice: "Identity"}


@converts(*_BINARY)
def binary(g, a, b):
    dtype = _out(g).dtype      # NumPy's promotion already chose it; cast both sides to it
    op_type = _BINARY[g.trace.calls[g.call_index].function]
    return [g.add(op_type, [g.operand(a, dtype), g.operand(b, dtype)])]


@converts(*_UNARY)
def unary(g, a, *unused):
    return [g.add(_UNARY[g.trace.calls[g.call_index].function], [g.name(a)])]


@converts(elementwise.MatMul)
def matmul(g, a, b):
    return [g.add("MatMul", [g.name(a), g.name(b)])]


@converts(elementwise.Clamp)
def clamp(g, a, lo, hi):
    bound = lambda v: "" if v is None else g.scalar(v, a.dtype)   # noqa: E731  ("" = absent input)
    return [g.add("Clip", [g.name(a), bound(lo), bound(hi)])]


@converts(elementwise.Where)
def where(g, condition, a, b):
    dtype = _out(g).dtype
    return [g.add("Where", [g.name(condition), g.operand(a, dtype), g.operand(b, dtype)])]


@converts(elementwise.Cast)
def cast(g, a, dtype):
    return [g.add("Cast", [g.name(a)], to=g.onnx.helper.np_dtype_to_tensor_dtype(np.dtype(dtype)))]


# ---- softmax and reductions ------------------------------------------------------------------------------------
@converts(softmax.Softmax)
def softmax_(g, x, axis):
    return [g.add("Softmax", [g.name(x)], axis=int(axis))]


@converts(softmax.LogSoftmax)
def log_softmax(g, x, axis):
    return [g.add("LogSoftmax", [g.name(x)], axis=int(axis))]


@converts(reduce.Sum, reduce.Mean)
def sum_or_mean(g, x, axes, keepdim):
    op_type = "ReduceSum" if g.trace.calls[g.call_index].function is reduce.Sum else "ReduceMean"
    return [g.reduce(op_type, g.name(x), axes, keepdim)]


@converts(reduce.AMax)
def amax(g, x, axes, keepdim, is_max):
    return [g.reduce("ReduceMax" if is_max else "ReduceMin", g.name(x), axes, keepdim)]


def check_supported(call):
    if call.function not in CONVERTERS:
        raise ExportError(f"ONNX export does not support the op {call.function.__name__} "
                          f"({call.function.__module__}); supported: {supported_ops()}")


def convert(g, call):
    check_supported(call)
    names = CONVERTERS[call.function](g, *call.args)
    if len(names) != len(call.outputs):
        raise ExportError(f"internal: the {call.function.__name__} converter gave {len(names)} outputs "
                          f"for {len(call.outputs)}")
    return names


def supported_ops():
    return ", ".join(sorted(f.__name__ for f in CONVERTERS))

