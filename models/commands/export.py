"""`export`: write a trained model as ONNX, and check it against ONNX Runtime when that is installed."""
import argparse

import numpy as np

import gradflow as gf
from models.checkpoints import load_weights_file, model_from_checkpoint
from models.commands import positive_int

HELP = "export a checkpoint's model to ONNX"
PARSER_OPTIONS = {"formatter_class": argparse.ArgumentDefaultsHelpFormatter}


def add_arguments(parser, default_model):
    parser.add_argument("checkpoint", help="a .ckpt file or best.safetensors written by train")
    parser.add_argument("--onnx", required=True, metavar="PATH", help="where to write the .onnx file")
    parser.add_argument("--image-size", type=positive_int,
                        help="height and width the graph takes (default: the training size); the batch is free")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset version")
    parser.add_argument("--fixed-batch", type=positive_int, metavar="N",
                        help="fix the batch size to N instead of leaving it free")


def run(args, default_model):
    state = load_weights_file(args.checkpoint)
    spec = state["model_spec"]
    size = args.image_size or state["config"]["image_size"]
    model = model_from_checkpoint(state, "cpu")
    batch = args.fixed_batch or 1
    rng = np.random.default_rng(0)
    example = gf.tensor(rng.uniform(0, 1, (batch, spec["in_channels"], size, size)).astype(np.float32))
    gf.onnx.export(model, example, args.onnx, opset_version=args.opset, dynamic_batch=args.fixed_batch is None)
    batch_text = "batch" if args.fixed_batch is None else str(batch)
    print(f"wrote {args.onnx}: {spec['name']} ({spec['norm']} norm, width {spec['width']}), opset {args.opset}; "
          f"input 'input' ({batch_text}, {spec['in_channels']}, {size}, {size}) float32 -> "
          f"output 'output' ({batch_text}, {spec['num_classes']}, {size}, {size}) logits; "
          f"classes: {', '.join(state['class_names'])}")
    _check_with_onnxruntime(model, args.onnx, (args.fixed_batch or 2, spec["in_channels"], size, size))
    return 0


def _check_with_onnxruntime(model, path, shape):
    try:
        import onnxruntime
    except ImportError:
        print("onnxruntime is not installed: not checked (pip install gradflow[onnx])")
        return
    x = np.random.default_rng(1).uniform(0, 1, shape).astype(np.float32)
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    theirs = session.run(None, {"input": x})[0]
    with gf.no_grad():
        ours = model(gf.tensor(x)).numpy()
    difference = float(np.abs(theirs - ours).max())
    print(f"checked with ONNX Runtime {onnxruntime.__version__} at batch {shape[0]}: "
          f"max |difference| {difference:.2e} from gradflow")
    if not difference <= 1e-4:
        raise RuntimeError(f"ONNX Runtime's output differs from gradflow's by {difference:.3g} (> 1e-4)")
