"""Tensor: an array (numpy on cpu, cupy on cuda) plus its place in the autograd graph."""
import numpy as np

from gradflow import autograd, backend, transfer

float32 = np.dtype("float32")
float64 = np.dtype("float64")
float16 = np.dtype("float16")
int64 = np.dtype("int64")
int32 = np.dtype("int32")
uint8 = np.dtype("uint8")
bool_ = np.dtype("bool")

_NUMERIC_KINDS = "biuf"   # bool, signed/unsigned integer, float


def check_numeric_dtype(dtype, what="tensor"):
    """Strings, bytes and Python objects are not tensor data (PyTorch refuses them too)."""
    if dtype.kind not in _NUMERIC_KINDS:
        raise TypeError(f"{what}: dtype {dtype} is not supported; a tensor holds bool, integer or "
                        "floating point numbers")


def check_numeric_data(array):
    if array.dtype.kind not in _NUMERIC_KINDS:
        kind = "strings" if array.dtype.kind in "US" else "Python objects"
        raise TypeError(f"tensor: cannot make a tensor of {kind} (array dtype {array.dtype}); "
                        "data must be numbers, bools, or nested sequences of them")


class Tensor:
    __slots__ = ("data", "grad", "_requires_grad", "_ctx", "_out_index", "_post_accumulate_grad_hooks",
                 "__weakref__")
    __array_priority__ = 1000   # numpy scalars/arrays on the left defer to our operators

    def __init__(self, data, requires_grad=False):
        if isinstance(data, Tensor):
            data = data.data
        if not (isinstance(data, np.ndarray) or backend.is_cuda_array(data)):
            data = np.asarray(data)
        check_numeric_data(data)
        self.data = data
        self.grad = None
        self._ctx = None
        self._out_index = 0
        self._requires_grad = False
        self.requires_grad = requires_grad

    @classmethod
    def _from_op(cls, data, ctx, index):
        t = cls.__new__(cls)
        t.data = data
        t.grad = None
        t._ctx = ctx
        t._out_index = index
        t._requires_grad = ctx is not None
        return t

    # ---- properties -------------------------------------------------------------
    @property
    def requires_grad(self):
        return self._requires_grad

    @requires_grad.setter
    def requires_grad(self, value):
        if value and self.data.dtype.kind not in "fc":
            raise RuntimeError(f"only floating point tensors can require gradients, got dtype {self.dtype}")
        if not value and self._ctx is not None:
            raise RuntimeError("you can only change requires_grad of leaf tensors; use detach()")
        self._requires_grad = bool(value)

    def requires_grad_(self, value=True):
        self.requires_grad = value
        return self

    @property
    def is_leaf(self):
        return self._ctx is None

    @property
    def grad_fn(self):
        return None if self._ctx is None else self._ctx.function

    @property
    def shape(self):
        return tuple(self.data.shape)

    def size(self, dim=None):
        if dim is None:
            return self.shape
        if self.ndim == 0:
            raise IndexError(f"size: dim {dim} given but the tensor has no dimensions")
        return self.shape[_reduce.normalize_dim(dim, self.ndim, "size")]

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def device(self):
        return backend.device_of(self.data)

    @property
    def ndim(self):
        return self.data.ndim

    def dim(self):
        return self.data.ndim

    def numel(self):
        return int(self.data.size)

    @property
    def T(self):
        return self.permute(*reversed(range(self.ndim)))

    def __len__(self):
        if self.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self.shape[0]

    def __repr__(self):
        body = np.array2string(backend.to_numpy(self.data), precision=4, separator=", ",
                               prefix="tensor(", threshold=200)
        extras = []
        if self.device != "cpu":
            extras.append(f"device='{self.device}'")
        if self.dtype not in (float32, int64, bool_):
            extras.append(f"dtype={self.dtype}")
        if self.grad_fn is not None:
            extras.append(f"grad_fn=<{self.grad_fn.__name__}>")
        elif self.requires_grad:
            extras.append("requires_grad=True")
        return "tensor(" + ", ".join([body] + extras) + ")"

    # ---- conversion ---------------------------------------------------------------
    def numpy(self):
        if self.requires_grad:
            raise RuntimeError("Can't call numpy() on a tensor that requires grad; use tensor.detach().numpy()")
        return transfer.to_host(self.data)

    def tolist(self):
        return transfer.to_host(self.data).tolist()

    def item(self):
        if self.data.size != 1:
            raise ValueError(f"item() needs a tensor with one element, got shape {self.shape}")
        return transfer.item(self.data)

    def __float__(self):
        return float(self.item())

    def __int__(self):
        return int(self.item())

    def __bool__(self):
        if self.data.size != 1:
            raise RuntimeError(f"the truth value of a tensor with shape {self.shape} is ambiguous")
        return bool(self.item())

    def __index__(self):
        if self.dtype.kind not in "iu" or self.data.size != 1:
            raise TypeError("only integer tensors of a single element can be used as an index")
        return int(self.item())

    def detach(self):
        return Tensor(self.data)

    # ---- DLPack (zero-copy exchange; gradflow.utils.dlpack has the way in) -------------
    def __dlpack__(self, *, stream=None, **kwargs):
        """A DLPack capsule over this tensor's memory (NumPy's or CuPy's export, which owns the data)."""
        if self.requires_grad:
            raise RuntimeError("Can't export a tensor that requires grad through DLPack (the other library "
                               "would bypass autograd); use tensor.detach()")
        try:
            if stream is not None:
                kwargs["stream"] = stream
            return self.data.__dlpack__(**kwargs)
        except BufferError as exc:    # e.g. a read-only NumPy array (a broadcast view)
            raise BufferError(f"cannot export this {self.dtype} tensor of shape {self.shape} through "
                              f"DLPack ({exc}); export tensor.clone().detach() instead") from exc

    def __dlpack_device__(self):
        return self.data.__dlpack_device__()

    def clone(self):
        return _elementwise.Clone.apply(self)

    def to(self, device=None, dtype=None):
        """to('cuda'), to(gf.float64), to('cpu', gf.float32): differentiable moves and casts."""
        if device is not None and not isinstance(device, str):
            device, dtype = None, device
        out = self
        if dtype is not None and np.dtype(dtype) != self.dtype:
            out = _elementwise.Cast.apply(out, np.dtype(dtype))
        if device is not None:
            device = backend.check_device(device)
            if device != out.device:
                out = _elementwise.ToDevice.apply(out, device)
        return out

    def cpu(self):
        return self.to("cpu")

    def cuda(self):
        return self.to("cuda")

    def float(self):
        return self.to(float32)

    def double(self):
        return self.to(float64)

    def long(self):
        return self.to(int64)

    def type(self, dtype):
        return self.to(dtype)

    # ---- autograd -----------------------------------------------------------------
    def backward(self, gradient=None, retain_graph=False):
        autograd.backward([self], [gradient], retain_graph=retain_graph)

    def register_post_accumulate_grad_hook(self, hook):
        """Call ``hook(tensor)`` after backward has accumulated this leaf's gradient into
        ``.grad`` (once per backward pass, after its last contribution), as PyTorch does.
        Returns a handle whose ``remove()`` unregisters it."""
        from gradflow.nn.module import RemovableHandle   # nn imports tensor: import when used
        if self._ctx is not None:
            raise RuntimeError("post accumulate grad hooks cannot be registered on non-leaf tensors")
        if not self.requires_grad:
            raise RuntimeError("cannot register a hook on a tensor that doesn't require gradient")
        if not callable(hook):
            raise TypeError(f"hook must be callable, got {type(hook).__name__}")
        hooks = getattr(self, "_post_accumulate_grad_hooks", None)
        if hooks is None:
            hooks = self._post_accumulate_grad_hooks = {}
        handle = RemovableHandle(hooks)
        hooks[handle.id] = hook
        autograd._post_accumulate_hooks_registered = True
        return handle

    def _accumulate(self, g):
        if g.dtype != self.data.dtype:
            g = g.astype(self.data.dtype)
        if self.grad is None:
            # a fresh array, never an alias of an array some op still uses
            self.grad = Tensor(g.copy())
        else:
            self.grad.data = self.grad.data + g

    # ---- in-place (only outside the graph, as PyTorch requires for leaves) ----------
    def _check_inplace(self, name):
        if self._ctx is not None or (self.requires_grad and autograd.is_grad_enabled()):
            raise RuntimeError(
                f"{name}: a tensor that requires grad (or is part of a graph) cannot be "
                "modified in place; wrap the update in gf.no_grad() or use detach()")

    def zero_(self):
        self._check_inplace("zero_")
        self.data[...] = 0
        return self

    def fill_(self, value):
        self._check_inplace("fill_")
        self.data[...] = value
        return self

    def copy_(self, src):
        self._check_inplace("copy_")
        src = src.data if isinstance(src, Tensor) else src
        xp = backend.get_array_module(self.data)
        self.data[...] = xp.asarray(backend.to_device(src, self.device) if hasattr(src, "shape") else src)
        return self

    def __setitem__(self, index, value):
        self._check_inplace("__setitem__")
        value = value.data if isinstance(value, Tensor) else value
        if hasattr(value, "shape"):
            value = backend.to_device(value, self.device)
        self.data[raw_index(index)] = value

    # ---- operators ------------------------------------------------------------------
    def __add__(self, other):
        return _elementwise.add(self, other)

    def __radd__(self, other):
        return _elementwise.add(other, self)

    def __sub__(self, other):
        return _elementwise.sub(self, other)

    def __rsub__(self, other):
        return _elementwise.sub(other, self)

    def __mul__(self, other):
        return _elementwise.mul(self, other)

    def __rmul__(self, other):
        return _elementwise.mul(other, self)

    def __truediv__(self, other):
        return _elementwise.div(self, other)

    def __rtruediv__(self, other):
        return _elementwise.div(other, self)

    def __pow__(self, other):
        return _elementwise.pow(self, other)

    def __rpow__(self, other):
        return _elementwise.pow(other, self)

    def __matmul__(self, other):
        return _elementwise.matmul(self, other)

    def __rmatmul__(self, other):
        return _elementwise.matmul(other, self)

    def __neg__(self):
        return _elementwise.Neg.apply(self)

    def __pos__(self):
        return self

    def __abs__(self):
        return self.abs()

    def __lt__(self, other):
        return _elementwise.compare("less", self, other)

    def __le__(self, other):
        return _elementwise.compare("less_equal", self, other)

    def __gt__(self, other):
        return _elementwise.compare("greater", self, other)

    def __ge__(self, other):
        return _elementwise.compare("greater_equal", self, other)

    def __eq__(self, other):
        return _elementwise.compare("equal", self, other)

    def __ne__(self, other):
        return _elementwise.compare("not_equal", self, other)

    __hash__ = object.__hash__

    def __getitem__(self, index):
        return _shape.getitem(self, index)

    # ---- methods ----------------------------------------------------------------------
    def exp(self):
        return _elementwise.Exp.apply(self)

    def log(self):
        return _elementwise.Log.apply(self)

    def sqrt(self):
        return _elementwise.Sqrt.apply(self)

    def abs(self):
        return _elementwise.Abs.apply(self)

    def relu(self):
        return _elementwise.Relu.apply(self)

    def sigmoid(self):
        return _elementwise.Sigmoid.apply(self)

    def tanh(self):
        return _elementwise.Tanh.apply(self)

    def clamp(self, min=None, max=None):
        return _elementwise.clamp(self, min, max)

    clip = clamp

    def pow(self, exponent):
        return _elementwise.pow(self, exponent)

    def matmul(self, other):
        return _elementwise.matmul(self, other)

    def sum(self, dim=None, keepdim=False):
        return _reduce.sum(self, dim, keepdim)

    def mean(self, dim=None, keepdim=False):
        return _reduce.mean(self, dim, keepdim)

    def max(self, dim=None, keepdim=False):
        return _reduce.max(self, dim, keepdim)

    def min(self, dim=None, keepdim=False):
        return _reduce.min(self, dim, keepdim)

    def argmax(self, dim=None, keepdim=False):
        return _reduce.argmax(self, dim, keepdim)

    def argmin(self, dim=None, keepdim=False):
        return _reduce.argmin(self, dim, keepdim)

    def softmax(self, dim):
        return _softmax.softmax(self, dim)

    def log_softmax(self, dim):
        return _softmax.log_softmax(self, dim)

    def isfinite(self):
        return Tensor(backend.get_array_module(self.data).isfinite(self.data))

    def isnan(self):
        return Tensor(backend.get_array_module(self.data).isnan(self.data))

    def any(self):
        return Tensor(self.data.any())

    def all(self):
        return Tensor(self.data.all())

    def reshape(self, *shape):
        return _shape.reshape(self, *shape)

    view = reshape

    def view_as(self, other):
        return self.reshape(other.shape)

    def permute(self, *dims):
        return _shape.permute(self, *dims)

    def transpose(self, dim0, dim1):
        return _shape.transpose(self, dim0, dim1)

    def flatten(self, start_dim=0, end_dim=-1):
        return _shape.flatten(self, start_dim, end_dim)

    def squeeze(self, dim=None):
        return _shape.squeeze(self, dim)

    def unsqueeze(self, dim):
        return _shape.unsqueeze(self, dim)

    def expand(self, *shape):
        return _shape.expand(self, *shape)

    def contiguous(self):
        return self


def raw_index(index):
    """An index with its Tensors replaced by their arrays."""
    if isinstance(index, Tensor):
        return index.data
    if isinstance(index, tuple):
        return tuple(i.data if isinstance(i, Tensor) else i for i in index)
    return index


autograd.Tensor = Tensor

# The ops build on Tensor (they import it from here), so they come after it; Tensor's methods
# reach them through these module names at call time.
from gradflow.ops import elementwise as _elementwise  # noqa: E402
from gradflow.ops import reduce as _reduce  # noqa: E402
from gradflow.ops import shape as _shape  # noqa: E402
from gradflow.ops import softmax as _softmax  # noqa: E402
