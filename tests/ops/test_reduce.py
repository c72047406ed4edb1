import numpy as np
import pytest
from hypothesis import strategies as st

import gradflow as gf
from tests.opinfo import ErrorInput, OpInfo, Sample, arrays, op_tests, shapes

torch = pytest.importorskip("torch")


def reduce_samples(distinct=False):
    @st.composite
    def draw(d):
        shape = d(shapes(1, 4, 1, 4))
        a = d(arrays(shape))
        if distinct:    # max/min: well-separated values, so finite differences never cross a tie
            a = np.random.default_rng(d(st.integers(0, 1000))).permutation(a.size).reshape(shape) * 0.1
        dims = d(st.one_of(st.none(), st.integers(-len(shape), len(shape) - 1),
                           st.lists(st.integers(0, len(shape) - 1), min_size=1, max_size=len(shape), unique=True)
                           .map(tuple)))
        return Sample((a,), dict(dim=dims, keepdim=d(st.booleans())))
    return draw()


def one_dim(samples):
    return samples.filter(lambda s: isinstance(s.kwargs["dim"], int))


OPS = [
    OpInfo("sum", lambda a, dim, keepdim: a.sum(dim, keepdim), reduce_samples(), torch_op=lambda a, dim, keepdim: a.sum(dim=dim, keepdim=keepdim),
           errors=(ErrorInput(Sample((np.ones((2, 3)),), dict(dim=2, keepdim=False)), IndexError, "out of range"),
                   ErrorInput(Sample((np.ones((2, 3)),), dict(dim=(0, 0), keepdim=False)), ValueError, "repeats"))),
    OpInfo("mean", lambda a, dim, keepdim: a.mean(dim, keepdim), reduce_samples(), torch_op=lambda a, dim, keepdim: a.mean(dim=dim, keepdim=keepdim)),
    OpInfo("max_all", lambda a, dim, keepdim: a.max(), reduce_samples(distinct=True),
           torch_op=lambda a, dim, keepdim: a.max()),
    OpInfo("max_dim", lambda a, dim, keepdim: a.max(dim, keepdim).values, one_dim(reduce_samples(distinct=True)),
           torch_op=lambda a, dim, keepdim: a.max(dim, keepdim).values),
    OpInfo("min_dim", lambda a, dim, keepdim: a.min(dim, keepdim)[0], one_dim(reduce_samples(distinct=True)),
           torch_op=lambda a, dim, keepdim: a.min(dim, keepdim)[0]),
]
test_gradcheck, test_matches_torch, test_errors = op_tests(OPS)


def test_max_ties_share_the_gradient_like_torch():
    a = np.array([[1.0, 3.0, 3.0], [2.0, 2.0, 0.0]])
    x = gf.tensor(a, requires_grad=True)
    t = torch.tensor(a, requires_grad=True)
    x.max().backward()
    t.max().backward()
    np.testing.assert_allclose(x.grad.numpy(), t.grad.numpy())


def test_max_dim_returns_indices_like_torch():
    a = np.random.default_rng(0).permutation(24).reshape(2, 3, 4).astype(np.float32)
    for dim in range(-3, 3):
        got = gf.tensor(a).max(dim)
        ref = torch.tensor(a).max(dim)
        np.testing.assert_array_equal(got.indices.numpy(), ref.indices.numpy())
        assert got.indices.dtype == gf.int64
        np.testing.assert_array_equal(gf.tensor(a).argmax(dim).numpy(), torch.tensor(a).argmax(dim).numpy())
    assert gf.tensor(a).argmax().item() == torch.tensor(a).argmax().item()
