import warnings

import numpy as np
import pytest
from hypothesis import strategies as st

import gradflow as gf
import gradflow.functional as F
from tests.opinfo import ErrorInput, OpInfo, Sample, arrays, op_tests, shapes

torch = pytest.importorskip("torch")


@st.composite
def softmax_samples(draw):
    shape = draw(shapes(0, 4, 1, 4))
    # an offset of 1000 would overflow exp() without the max shift
    a = np.asarray(draw(arrays(shape, -3.0, 3.0)) + draw(st.sampled_from([0.0, 1000.0, -1000.0])))
    ndim = max(len(shape), 1)
    return Sample((a,), dict(dim=draw(st.integers(-ndim, ndim - 1))))


ERRORS = (
    ErrorInput(Sample((np.ones((2, 3)),), dict(dim=2)), IndexError, "dim 2 is out of range"),
    ErrorInput(Sample((np.ones((2, 3)),), dict(dim=-3)), IndexError, "out of range"),
    ErrorInput(Sample((np.ones((2, 3), dtype=np.int64),), dict(dim=1)), TypeError, "floating point"),
    ErrorInput(Sample((np.ones((2, 3)),), dict(dim=1.0)), TypeError, "dim must be an int"),
)

OPS = [
    OpInfo("softmax", F.softmax, softmax_samples(), torch_op=torch.softmax, errors=ERRORS),
    OpInfo("log_softmax", F.log_softmax, softmax_samples(), torch_op=torch.log_softmax, errors=ERRORS),
    OpInfo("Tensor.softmax", lambda a, dim: a.softmax(dim), softmax_samples(), torch_op=lambda a, dim: a.softmax(dim)),
    OpInfo("Tensor.log_softmax", lambda a, dim: a.log_softmax(dim), softmax_samples(),
           torch_op=lambda a, dim: a.log_softmax(dim)),
]
test_gradcheck, test_matches_torch, test_errors = op_tests(OPS)


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_float32_logits_of_1e4_stay_finite_and_match_torch(name):
    a = np.array([[1e4, -1e4, 0.0, 9999.0], [-1e4, -1e4, -1e4, -1e4]], dtype=np.float32)
    x = gf.tensor(a, requires_grad=True)
    t = torch.tensor(a, requires_grad=True)
    out = getattr(F, name)(x, 1)
    ref = getattr(torch, name)(t, 1)
    assert np.isfinite(out.detach().numpy()).all()
    np.testing.assert_allclose(out.detach().numpy(), ref.detach().numpy(), rtol=1e-6)
    cot = np.arange(8, dtype=np.float32).reshape(2, 4)
    out.backward(gf.tensor(cot))
    ref.backward(torch.tensor(cot))
    assert np.isfinite(x.grad.numpy()).all()
    np.testing.assert_allclose(x.grad.numpy(), t.grad.numpy(), rtol=1e-5, atol=1e-6)


def test_all_minus_inf_slice_gives_nan_like_torch():
    a = np.array([[-np.inf, -np.inf], [-np.inf, 1.0]])
    for name in ("softmax", "log_softmax"):
        with np.errstate(invalid="ignore"):
            got = getattr(F, name)(gf.tensor(a), 1).numpy()
        np.testing.assert_array_equal(got, getattr(torch, name)(torch.tensor(a), 1).numpy())


def test_dtype_argument_casts_first_like_torch():
    a = np.array([[1, 2, 3]], dtype=np.int64)
    out = F.softmax(gf.tensor(a), 1, dtype=gf.float64)
    assert out.dtype == gf.float64
    np.testing.assert_allclose(out.numpy(), torch.softmax(torch.tensor(a), 1, dtype=torch.float64).numpy())


def test_implicit_dim_warns_and_picks_torchs_dim():
    a = np.random.default_rng(0).standard_normal((2, 3, 4))
    with pytest.warns(UserWarning, match="Implicit dimension"):
        got = F.softmax(gf.tensor(a))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = torch.nn.functional.softmax(torch.tensor(a))
    np.testing.assert_allclose(got.numpy(), ref.numpy())


def test_empty_tensor_passes_through():
    assert F.softmax(gf.zeros(0, 3), 1).shape == (0, 3)
    assert F.log_softmax(gf.zeros(2, 0), 1).shape == (2, 0)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-10), (np.float32, 1e-4)])
def test_cuda_matches_cpu(dtype, tol):
    a = np.random.default_rng(0).standard_normal((2, 5, 3, 4)).astype(dtype)
    cot = np.random.default_rng(1).standard_normal(a.shape).astype(dtype)
    for name in ("softmax", "log_softmax"):
        results = []
        for device in ("cpu", "cuda"):
            x = gf.tensor(a, device=device, requires_grad=True)
            out = getattr(F, name)(x, 1)
            out.backward(gf.tensor(cot, device=device))
            results.append((out.detach().cpu().numpy(), x.grad.cpu().numpy()))
        for got, ref in zip(results[1], results[0]):
            np.testing.assert_allclose(got, ref, rtol=tol, atol=tol)
