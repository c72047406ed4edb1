import numpy as np
import pytest
from hypothesis import strategies as st

import gradflow as gf
import gradflow.functional as F
from tests.opinfo import ErrorInput, OpInfo, Sample, arrays, op_tests, shapes


def reseeded(fn):
    """fn with the RNG reset before each call, so gradcheck's many forwards share one mask."""
    def call(x, p, **kwargs):
        gf.manual_seed(1234)
        return fn(x, p, **kwargs)
    return call


@st.composite
def dropout_samples(draw, min_dims=1):
    shape = draw(shapes(min_dims, 4, 1, 4))
    return Sample((draw(arrays(shape)), draw(st.sampled_from([0.0, 0.2, 0.5, 0.9, 1.0]))),
                  dict(training=draw(st.booleans())))


BAD_P = tuple(ErrorInput(Sample((np.ones((2, 3, 2, 2)), p)), ValueError,
                         f"dropout probability has to be between 0 and 1, but got {p}") for p in (-0.1, 1.5))
OPS = [
    OpInfo("dropout", reseeded(F.dropout), dropout_samples(), errors=BAD_P),
    OpInfo("dropout2d", reseeded(F.dropout2d), dropout_samples(min_dims=4),
           errors=BAD_P + (ErrorInput(Sample((np.ones(3), 0.5)), ValueError, "channel dim"),)),
]
test_gradcheck, test_matches_torch, test_errors = op_tests(OPS)


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_dropout_drops_a_share_p_and_scales_survivors_by_1_over_1_minus_p(p):
    gf.manual_seed(0)
    x = gf.tensor(np.random.default_rng(0).uniform(1, 2, (400, 500)).astype(np.float32))
    out = F.dropout(x, p).numpy()
    dropped = out == 0
    n = dropped.size
    assert abs(dropped.mean() - p) < 5 * np.sqrt(p * (1 - p) / n)   # 5 sigma
    kept = ~dropped
    np.testing.assert_allclose(out[kept], x.numpy()[kept] / (1 - p), rtol=1e-6)
    # the expectation is preserved: mean of out / x is 1 within 5 sigma
    ratio = out / x.numpy()
    assert abs(ratio.mean() - 1) < 5 * np.sqrt(p / (1 - p) / n)


def test_dropout2d_drops_whole_channels():
    gf.manual_seed(0)
    p = 0.3
    x = gf.ones(50, 40, 3, 4)
    out = F.dropout2d(x, p).numpy()
    per_channel = out.reshape(50, 40, -1)
    assert (per_channel.min(axis=2) == per_channel.max(axis=2)).all()   # constant per (n, c) plane
    values = np.unique(per_channel)
    np.testing.assert_allclose(values, [0.0, 1 / (1 - p)], rtol=1e-6)
    dropped = (per_channel[:, :, 0] == 0).mean()
    assert abs(dropped - p) < 5 * np.sqrt(p * (1 - p) / 2000)


def test_dropout2d_on_3d_input_warns_and_drops_channels_of_n_c_l():
    gf.manual_seed(0)
    with pytest.warns(UserWarning, match="3D input"):
        out = F.dropout2d(gf.ones(20, 30, 5), 0.5).numpy()
    assert (out.min(axis=2) == out.max(axis=2)).all()


@pytest.mark.parametrize("fn", [F.dropout, F.dropout2d])
def test_eval_mode_and_p_zero_are_the_identity(fn):
    x = gf.randn(2, 3, 4, 4)
    assert fn(x, 0.5, training=False) is x
    assert fn(x, 0.0) is x


@pytest.mark.parametrize("fn", [F.dropout, F.dropout2d])
def test_p_one_gives_zeros_and_zero_grads(fn):
    x = gf.tensor(np.random.default_rng(0).standard_normal((2, 3, 4, 4)), requires_grad=True)
    out = fn(x, 1.0)
    np.testing.assert_array_equal(out.detach().numpy(), 0)
    out.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), 0)


@pytest.mark.parametrize("fn", [F.dropout, F.dropout2d])
def test_same_seed_same_mask_other_seed_other_mask(fn):
    x = gf.ones(4, 8, 6, 6)
    gf.manual_seed(7)
    first = fn(x, 0.5).numpy()
    second = fn(x, 0.5).numpy()
    gf.manual_seed(7)
    again = fn(x, 0.5).numpy()
    gf.manual_seed(8)
    other = fn(x, 0.5).numpy()
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, second)   # the stream moves on between calls
    assert not np.array_equal(first, other)


@pytest.mark.parametrize("fn", [F.dropout, F.dropout2d])
def test_gradient_is_the_scaled_mask(fn):
    gf.manual_seed(3)
    p = 0.4
    x = gf.tensor(np.random.default_rng(0).uniform(1, 2, (3, 4, 5, 5)), requires_grad=True)
    out = fn(x, p)
    cot = np.random.default_rng(1).standard_normal(out.shape)
    out.backward(gf.tensor(cot))
    mask = out.detach().numpy() / x.detach().numpy()   # 0 or 1 / (1 - p)
    assert set(np.round(np.unique(mask), 12)) <= {0.0, round(1 / (1 - p), 12)}
    np.testing.assert_allclose(x.grad.numpy(), cot * mask, rtol=1e-12)


def test_float32_stays_float32():
    assert F.dropout(gf.ones(3, 3), 0.5).dtype == gf.float32
    assert F.dropout2d(gf.ones(1, 3, 2, 2, dtype=gf.float64), 0.5).dtype == gf.float64


@pytest.mark.gpu
@pytest.mark.parametrize("fn", [F.dropout, F.dropout2d])
def test_cuda_statistics_scaling_and_determinism(fn):
    p = 0.25
    x = gf.ones(64, 64, 8, 8, device="cuda", requires_grad=True)
    gf.manual_seed(5)
    out = fn(x, p)
    gf.manual_seed(5)
    again = fn(x, p)
    assert out.device == "cuda"
    values = out.detach().cpu().numpy()
    np.testing.assert_array_equal(values, again.detach().cpu().numpy())
    np.testing.assert_allclose(np.unique(values), [0.0, 1 / (1 - p)], rtol=1e-6)
    assert abs((values == 0).mean() - p) < 0.02
    out.sum().backward()
    np.testing.assert_array_equal(x.grad.cpu().numpy(), values)
