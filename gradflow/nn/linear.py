"""Linear (y = x W^T + b) and Identity."""

from gradflow import functional as F
from gradflow.nn import init
from gradflow.nn.module import Module
from gradflow.nn.utils import _new_parameter


class Identity(Module):
    """Returns its input; accepts and ignores any constructor arguments, as PyTorch."""

    def __init__(self, *args, **kwargs):
        super().__init__()

    def forward(self, input):
        return input


class Linear(Module):
    """Affine map over the last dimension; weight (out_features, in_features)."""

    def __init__(self, in_features, out_features, bias=True, device=None, dtype=None):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.weight = _new_parameter((out_features, in_features), device, dtype)
        if bias:
            self.bias = _new_parameter((out_features,), device, dtype)
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self):
        init.default_layer_init_(self.weight, self.bias)

    def forward(self, input):
        return F.linear(input, self.weight, self.bias)

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"
