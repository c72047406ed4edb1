"""Finite-difference gradient check in float64."""
import numpy as np

from gradflow import backend
from gradflow.autograd import no_grad
from gradflow.tensor import Tensor, float64


class GradcheckError(AssertionError):
    pass


def _outputs(result):
    return result if isinstance(result, (tuple, list)) else (result,)


def gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-3, seed=0):
    """Compare fn's analytic gradients with central differences, in float64.

    Every output is projected on a fixed random cotangent v, so one backward gives
    the analytic v^T J, and two forward calls per input element give the numeric one.
    Float inputs that require grad are checked (copied to float64 first); other
    arguments are passed through. Raises GradcheckError naming the input, the worst
    element and both values; returns True otherwise.
    """
    inputs = tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)
    # contiguous float64 copies, so perturbing a flat view perturbs the input itself
    inputs = tuple(Tensor(backend.get_array_module(x.data).ascontiguousarray(x.data, dtype=np.float64),
                          requires_grad=True)
                   if isinstance(x, Tensor) and x.requires_grad else x for x in inputs)
    checked = [i for i, x in enumerate(inputs) if isinstance(x, Tensor) and x.requires_grad]
    if not checked:
        raise ValueError("gradcheck: no input requires grad")

    outputs = [o for o in _outputs(fn(*inputs)) if isinstance(o, Tensor) and o.dtype.kind == "f"]
    rng = np.random.default_rng(seed)
    cotangents = [rng.standard_normal(o.shape) for o in outputs]
    for o in outputs:
        if o.dtype != float64:
            raise GradcheckError(f"gradcheck: an output has dtype {o.dtype}; fn must keep float64")

    def projected(*args):
        with no_grad():
            outs = [o for o in _outputs(fn(*args)) if isinstance(o, Tensor) and o.dtype.kind == "f"]
        return sum(float((backend.to_numpy(o.data) * v).sum()) for o, v in zip(outs, cotangents))

    for i in checked:
        inputs[i].grad = None
    differentiable = [(o, v) for o, v in zip(outputs, cotangents) if o.requires_grad]
    if not differentiable:
        # nothing to check: every analytic gradient would be "zero" by default, which
        # would pass for any function whose numeric gradient happens to vanish too
        raise GradcheckError(
            "gradcheck: fn has no differentiable output (no floating point output requires grad); "
            "it returned " + ", ".join(f"{type(o).__name__}"
                                       + (f"(dtype {o.dtype}, requires_grad={o.requires_grad})"
                                          if isinstance(o, Tensor) else "")
                                       for o in _outputs(fn(*inputs))))
    from gradflow import autograd
    autograd.backward([o for o, _ in differentiable],
                      [backend.to_device(v, o.device) for o, v in differentiable])

    for i in checked:
        x = inputs[i]
        analytic = np.zeros(x.shape) if x.grad is None else backend.to_numpy(x.grad.data)
        numeric = np.zeros(x.shape)
        flat = x.data.reshape(-1)   # a view: perturbs x in place
        for k in range(flat.size):
            original = flat[k].item()
            flat[k] = original + eps
            plus = projected(*inputs)
            flat[k] = original - eps
            minus = projected(*inputs)
            flat[k] = original
            numeric.reshape(-1)[k] = (plus - minus) / (2 * eps)
        error = np.abs(analytic - numeric) - (atol + rtol * np.abs(numeric))
        if error.size and error.max() > 0:
            worst = np.unravel_index(int(np.argmax(error)), error.shape)
            raise GradcheckError(
                f"gradcheck failed for input {i} (shape {x.shape}) at index {tuple(int(j) for j in worst)}: "
                f"analytic {analytic[worst]:.10g} vs numeric {numeric[worst]:.10g} "
                f"(atol={atol}, rtol={rtol}; {int((error > 0).sum())} of {error.size} elements off)")
    return True
