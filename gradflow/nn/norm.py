"""BatchNorm2d and GroupNorm, with PyTorch's buffers, momentum rule and state_dict layout."""
import numpy as np

from gradflow import functional as F
from gradflow.creation import ones, tensor, zeros
from gradflow.nn import init
from gradflow.nn.module import Module
from gradflow.nn.utils import _new_parameter
from gradflow.tensor import float32


class BatchNorm2d(Module):
    """Batch normalisation over (N, H, W) per channel of NCHW input.

    Training normalises with the batch statistics and, when track_running_stats,
    updates running_mean / running_var in place (momentum=None means a cumulative
    average over num_batches_tracked). Evaluation uses the running statistics.
    """

    _version = 2   # PyTorch's layout with num_batches_tracked

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True,
                 device=None, dtype=None, *, bias=True):
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.affine = affine
        self.track_running_stats = track_running_stats
        if affine:
            self.weight = _new_parameter((num_features,), device, dtype)
            if bias:
                self.bias = _new_parameter((num_features,), device, dtype)
            else:
                self.register_parameter("bias", None)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if track_running_stats:
            self.register_buffer("running_mean", zeros(num_features, dtype=dtype or float32, device=device))
            self.register_buffer("running_var", ones(num_features, dtype=dtype or float32, device=device))
            self.register_buffer("num_batches_tracked", tensor(0, dtype=np.int64, device=device))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)
        self.reset_parameters()

    def reset_running_stats(self):
        if self.track_running_stats:
            self.running_mean.data[...] = 0
            self.running_var.data[...] = 1
            self.num_batches_tracked.data[...] = 0

    def reset_parameters(self):
        self.reset_running_stats()
        if self.affine:
            init.ones_(self.weight)
            if self.bias is not None:
                init.zeros_(self.bias)

    def forward(self, input):
        return F.batch_norm(*self._batch_norm_arguments(input))

    def _batch_norm_arguments(self, input):
        """F.batch_norm's arguments for this call (counting the batch in num_batches_tracked); a
        subclass can hand them to another form of the op, such as the fused batch_norm_relu."""
        if input.ndim != 4:
            raise ValueError(f"expected 4D input (got {input.ndim}D input)")
        average_factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.data += 1
            if self.momentum is None:   # cumulative moving average
                average_factor = 1.0 / float(self.num_batches_tracked.item())
        # Batch statistics in training, and also in eval when there are no running stats.
        use_batch_stats = self.training or (self.running_mean is None and self.running_var is None)
        track = not self.training or self.track_running_stats
        return (input, self.running_mean if track else None, self.running_var if track else None,
                self.weight, self.bias, use_batch_stats, average_factor, self.eps)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, missing_keys, error_msgs):
        # Checkpoints from before num_batches_tracked existed (no version, or version < 2)
        # load with the counter left as it is, as PyTorch does.
        version = local_metadata.get("version")
        key = prefix + "num_batches_tracked"
        if (version is None or version < 2) and self.track_running_stats and key not in state_dict:
            state_dict = dict(state_dict)
            state_dict[key] = self.num_batches_tracked.data.copy()
        super()._load_from_state_dict(state_dict, prefix, local_metadata, missing_keys, error_msgs)

    def extra_repr(self):
        return ("{num_features}, eps={eps}, momentum={momentum}, affine={affine}, bias={use_bias}, "
                "track_running_stats={track_running_stats}".format(**self.__dict__, use_bias=self.bias is not None))


class GroupNorm(Module):
    """Normalise each sample over groups of num_channels // num_groups channels (Wu & He, 2018)."""

    def __init__(self, num_groups, num_channels, eps=1e-5, affine=True, device=None, dtype=None, *, bias=True):
        super().__init__()
        if num_groups <= 0 or num_channels % num_groups != 0:
            raise ValueError(f"GroupNorm: num_groups must be positive and divide num_channels "
                             f"(num_channels={num_channels}, num_groups={num_groups})")
        self.num_groups = num_groups
        self.num_channels = num_channels
        self.eps = eps
        self.affine = affine
        if affine:
            self.weight = _new_parameter((num_channels,), device, dtype)
            if bias:
                self.bias = _new_parameter((num_channels,), device, dtype)
            else:
                self.register_parameter("bias", None)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self):
        if self.affine:
            init.ones_(self.weight)
            if self.bias is not None:
                init.zeros_(self.bias)

    def forward(self, input):
        return F.group_norm(input, self.num_groups, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return "{num_groups}, {num_channels}, eps={eps}, affine={affine}, bias={use_bias}".format(
            **self.__dict__, use_bias=self.bias is not None)
