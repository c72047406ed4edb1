import numpy as np
import pytest
from hypothesis import strategies as st

import gradflow as gf
from tests.opinfo import ErrorInput, OpInfo, Sample, arrays, op_tests, shapes

torch = pytest.importorskip("torch")


@st.composite
def reshape_samples(d):
    shape = d(shapes(0, 4, 1, 3))
    a = d(arrays(shape))
    target = list(d(st.permutations(list(shape))))
    if target and d(st.booleans()):
        target[d(st.integers(0, len(target) - 1))] = -1
    return Sample((a,), dict(shape=tuple(target)))


@st.composite
def permute_samples(d):
    shape = d(shapes(1, 4, 1, 3))
    return Sample((d(arrays(shape)),), dict(dims=tuple(d(st.permutations(range(len(shape)))))))


@st.composite
def dim_samples(d, extra=0, allow_none=False):
    shape = d(shapes(1, 4, 1, 3))
    n = len(shape) + extra
    dim = d(st.integers(-n, n - 1))
    if allow_none and d(st.booleans()):
        dim = None
    return Sample((d(arrays(shape)),), dict(dim=dim))


@st.composite
def index_samples(d):
    shape = d(shapes(1, 3, 2, 4))
    index = []
    for n in shape:
        kind = d(st.sampled_from(["int", "slice", "full", "array"]))
        if kind == "int":
            index.append(d(st.integers(-n, n - 1)))
        elif kind == "slice":
            index.append(slice(d(st.integers(0, n - 1)), d(st.integers(1, n)), d(st.integers(1, 2))))
        elif kind == "array":
            index.append(np.array(d(st.lists(st.integers(0, n - 1), min_size=1, max_size=3))))
        else:
            index.append(slice(None))
    if sum(isinstance(i, np.ndarray) for i in index) > 1:
        index = [i if not isinstance(i, np.ndarray) else slice(None) for i in index]
    if d(st.booleans()):
        index.insert(d(st.integers(0, len(index))), None)
    return Sample((d(arrays(shape)),), dict(index=tuple(index)))


@st.composite
def cat_samples(d):
    shape = d(shapes(1, 3, 1, 3))
    dim = d(st.integers(0, len(shape) - 1))
    parts = []
    for _ in range(d(st.integers(1, 3))):
        s = list(shape)
        s[dim] = d(st.integers(1, 3))
        parts.append(d(arrays(tuple(s))))
    return Sample(tuple(parts), dict(dim=dim))


@st.composite
def stack_samples(d):
    shape = d(shapes(0, 3, 1, 3))
    parts = [d(arrays(shape)) for _ in range(d(st.integers(1, 3)))]
    return Sample(tuple(parts), dict(dim=d(st.integers(-len(shape) - 1, len(shape)))))


@st.composite
def expand_samples(d):
    shape = d(shapes(1, 3, 1, 3))
    base = tuple(1 if d(st.booleans()) else n for n in shape)
    target = tuple(n if b == 1 else (-1 if d(st.booleans()) else n) for n, b in zip(shape, base))
    return Sample((d(arrays(base)),), dict(shape=(2,) + target))


def _torch_index(a, index):
    return a[tuple(torch.from_numpy(i) if isinstance(i, np.ndarray) else i for i in index)]


OPS = [
    OpInfo("reshape", lambda a, shape: a.reshape(shape), reshape_samples(), torch_op=lambda a, shape: a.reshape(shape),
           errors=(ErrorInput(Sample((np.ones((2, 3)),), dict(shape=(4, 2))), ValueError, r"\(4, 2\).*\(2, 3\)"),
                   ErrorInput(Sample((np.ones((2, 3)),), dict(shape=(-1, -1))), ValueError, "invalid"))),
    OpInfo("permute", lambda a, dims: a.permute(dims), permute_samples(), torch_op=lambda a, dims: a.permute(dims),
           errors=(ErrorInput(Sample((np.ones((2, 3)),), dict(dims=(0,))), ValueError, "permute"),)),
    OpInfo("transpose", lambda a, dim: a.transpose(dim, 0), dim_samples(), torch_op=lambda a, dim: a.transpose(dim, 0)),
    OpInfo("flatten", lambda a, dim: a.flatten(dim), dim_samples(), torch_op=lambda a, dim: a.flatten(dim)),
    OpInfo("squeeze", lambda a, dim: a.squeeze(dim), dim_samples(allow_none=True),
           torch_op=lambda a, dim: a.squeeze() if dim is None else a.squeeze(dim)),
    OpInfo("unsqueeze", lambda a, dim: a.unsqueeze(dim), dim_samples(extra=1), torch_op=lambda a, dim: a.unsqueeze(dim)),
    OpInfo("expand", lambda a, shape: a.expand(shape), expand_samples(), torch_op=lambda a, shape: a.expand(shape),
           errors=(ErrorInput(Sample((np.ones((2, 3)),), dict(shape=(4, 3))), ValueError, "cannot expand"),)),
    OpInfo("getitem", lambda a, index: a[index], index_samples(), torch_op=_torch_index),
    OpInfo("cat", lambda *a, dim: gf.cat(a, dim), cat_samples(), torch_op=lambda *a, dim: torch.cat(a, dim),
           errors=(ErrorInput(Sample((np.ones((2, 3)), np.ones((3, 3))), dict(dim=1)), ValueError, "sizes must match"),)),
    OpInfo("stack", lambda *a, dim: gf.stack(a, dim), stack_samples(), torch_op=lambda *a, dim: torch.stack(a, dim),
           errors=(ErrorInput(Sample((np.ones((2, 3)), np.ones((3, 3))), dict(dim=0)), ValueError, "same shape"),)),
]
test_gradcheck, test_matches_torch, test_errors = op_tests(OPS)


def test_repeated_advanced_index_accumulates():
    x = gf.tensor(np.arange(4.0), requires_grad=True)
    x[np.array([0, 0, 3])].sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [2.0, 0.0, 0.0, 1.0])
