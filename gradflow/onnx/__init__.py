"""gf.onnx.export: write a model's forward pass as an ONNX graph (run it with ONNX Runtime, TensorRT, ...).

The exporter runs the model once on the example input and records every op
(gradflow.onnx.trace), then translates each op with its converter
(gradflow.onnx.ops) into ONNX nodes; parameters and buffers become initializers
named by their state_dict keys. Any op without a converter stops the export
with an error naming it. Needs the ``onnx`` package (``pip install gradflow[onnx]``).
"""
import os

from gradflow import backend
from gradflow.onnx.trace import ExportError, Trace, check_same_program, second_input
from gradflow.tensor import Tensor

__all__ = ["export", "ExportError", "supported_ops"]

MIN_OPSET = 13    # Squeeze/Unsqueeze/ReduceSum axes and Pad pads as inputs, per-axis Softmax


def export(model, example_input, path, opset_version=17, dynamic_batch=True, input_names=None, output_names=None):
    """Trace ``model(example_input)`` in eval mode and write it to ``path`` as ONNX; returns the ModelProto.

    ``example_input`` is a Tensor or a tuple of Tensors (the forward's positional
    arguments). With ``dynamic_batch`` the first axis of every input (and each
    axis that follows it) is left free, named "batch"; otherwise every shape is
    fixed to the example's. The model's training flag is restored afterwards.
    """
    try:
        import onnx
    except ImportError:
        raise ImportError("gf.onnx.export needs the onnx package: pip install 'gradflow[onnx]'") from None

    from gradflow.onnx.graph import Graph
    from gradflow.onnx.ops import check_supported, convert

    inputs = tuple(example_input) if isinstance(example_input, (tuple, list)) else (example_input,)
    for t in inputs:
        if not isinstance(t, Tensor):
            raise TypeError(f"gf.onnx.export: example_input must be a Tensor or a tuple of Tensors, "
                            f"got {type(t).__name__}")
        if dynamic_batch and t.ndim == 0:
            raise ValueError("gf.onnx.export: dynamic_batch needs inputs with a batch axis (got a 0-d tensor)")
    if not MIN_OPSET <= opset_version <= onnx.defs.onnx_opset_version():
        raise ValueError(f"gf.onnx.export: opset_version must be between {MIN_OPSET} and "
                         f"{onnx.defs.onnx_opset_version()}, got {opset_version}")
    input_names = _names(input_names, len(inputs), "input")

    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        trace = Trace(model, inputs)
        other = Trace(model, tuple(second_input(t, dynamic_batch) for t in inputs))
    finally:
        for module, mode in modes.items():
            module.training = mode
    for call in trace.calls:        # the most useful error first: an op that has no ONNX form at all
        check_supported(call)
    check_same_program(trace, other)
    if len(trace.outputs) != len(other.outputs):
        raise ExportError("the model returned a different number of outputs for another input")
    output_names = _names(output_names, len(trace.outputs), "output")

    g = Graph(trace, other if dynamic_batch else None, opset_version)
    graph_inputs = []
    for i, (t, name) in enumerate(zip(inputs, input_names)):
        g.bind(("input", i), name)
        graph_inputs.append(_value_info(onnx, name, t, g.free_axes_of_key(("input", i), t.shape)))
    for index, call in enumerate(trace.calls):
        g.call_index = index
        for j, name in enumerate(convert(g, call)):
            g.bind(("op", index, j), name)
    g.call_index = None

    graph_outputs = []
    for t, name in zip(trace.outputs, output_names):
        key = trace.key(t)
        g.add("Identity", [g.name(t)], outputs=1)
        g.nodes[-1].output[0] = name        # the graph's output gets the name the caller chose
        graph_outputs.append(_value_info(onnx, name, t, g.free_axes_of_key(key, t.shape)))

    graph = onnx.helper.make_graph(g.nodes, type(model).__name__, graph_inputs, graph_outputs, g.initializers)
    proto = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", opset_version)],
                                   producer_name="gradflow")
    onnx.checker.check_model(proto, full_check=True)
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    onnx.save(proto, path)
    return proto


def supported_ops():
    """The gradflow ops (Function class names) the exporter translates, comma-separated."""
    from gradflow.onnx import ops    # imported on use: `import gradflow` stays free of the op modules
    return ops.supported_ops()


def _names(names, count, stem):
    if names is None:
        return [stem] if count == 1 else [f"{stem}_{i}" for i in range(count)]
    names = list(names)
    if len(names) != count or len(set(names)) != count:
        raise ValueError(f"gf.onnx.export: expected {count} distinct {stem} names, got {names}")
    return names


def _value_info(onnx, name, tensor, free_axes):
    dims = ["batch" if i in free_axes else n for i, n in enumerate(tensor.shape)]
    elem_type = onnx.helper.np_dtype_to_tensor_dtype(backend.to_numpy(tensor.data).dtype)
    return onnx.helper.make_tensor_value_info(name, elem_type, dims)
