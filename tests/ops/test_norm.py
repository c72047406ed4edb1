"""batch_norm / group_norm (and their fused-ReLU forms) against finite differences and
PyTorch (the op table), plus running statistics, which the table cannot express."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

import gradflow as gf
from gradflow.ops import norm
from tests.opinfo import ErrorInput, OpInfo, Sample, op_tests

torch = pytest.importorskip("torch")
torch_F = torch.nn.functional


def spread(rng, n_sets, set_size):
    """n_sets rows of set_size values with variance well away from zero: a shuffled even
    spread over [-2, 2] plus noise, scaled and shifted per row (so no row is centred)."""
    rows = np.linspace(-2, 2, set_size)[np.argsort(rng.random((n_sets, set_size)), axis=1)]
    rows = rows + rng.uniform(-0.05, 0.05, rows.shape)
    return rows * rng.uniform(0.5, 2, (n_sets, 1)) + rng.uniform(-1, 1, (n_sets, 1))


@st.composite
def input_shapes(draw, min_per_set=3):
    n = draw(st.integers(1, 3))
    channels = draw(st.integers(1, 4))
    spatial = draw(st.sampled_from([(), (3,), (2, 3), (3, 2), (1, 1)]))
    return (n, channels) + spatial


@st.composite
def batch_norm_samples(draw, training=None):
    shape = draw(input_shapes())
    n, channels, size = shape[0], shape[1], int(np.prod(shape[2:]))
    if n * size < 3:                       # keep >= 3 values per channel so the variance is not tiny
        shape, n = (3,) + shape[1:], 3
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    per_channel = spread(rng, channels, n * size)                        # (C, N*S)
    # C-contiguous: gradcheck perturbs x through a flat view
    x = np.ascontiguousarray(per_channel.reshape(channels, n, size).transpose(1, 0, 2).reshape(shape))
    weight = rng.uniform(0.5, 1.5, channels) * rng.choice([-1, 1], channels) if draw(st.booleans()) else None
    bias = rng.uniform(-1, 1, channels) if draw(st.booleans()) else None
    running_mean, running_var = rng.uniform(-1, 1, channels), rng.uniform(0.5, 2, channels)
    training = draw(st.booleans()) if training is None else training
    kwargs = dict(training=training, momentum=draw(st.sampled_from([0.1, 0.5, 1.0])),
                  eps=draw(st.sampled_from([1e-5, 1e-3])))
    return Sample((x, running_mean, running_var, weight, bias), kwargs, grad=(0, 3, 4))


@st.composite
def group_norm_samples(draw):
    n = draw(st.integers(1, 3))
    groups = draw(st.integers(1, 3))
    channels = groups * draw(st.integers(1, 3))
    spatial = draw(st.sampled_from([(), (3,), (2, 3), (1, 1), (2, 2)]))
    size = int(np.prod(spatial))
    if (channels // groups) * size < 3:    # keep >= 3 values per group
        spatial, size = (3,), 3
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    per_group = spread(rng, n * groups, channels // groups * size)
    x = per_group.reshape((n, channels) + spatial)
    weight = rng.uniform(0.5, 1.5, channels) * rng.choice([-1, 1], channels) if draw(st.booleans()) else None
    bias = rng.uniform(-1, 1, channels) if draw(st.booleans()) else None
    return Sample((x, groups, weight, bias), dict(eps=draw(st.sampled_from([1e-5, 1e-3]))))


def torch_group_norm(x, num_groups, weight=None, bias=None, eps=1e-5):
    # PyTorch 2.13's group-norm backward fails ("tensor does not have a device") for a
    # bias without a weight; a weight of ones is the same function
    if weight is None and bias is not None:
        weight = torch.ones(x.shape[1], dtype=x.dtype)
    return torch_F.group_norm(x, num_groups, weight, bias, eps)


def _relu_of(fn):
    return lambda *args, **kwargs: torch_F.relu(fn(*args, **kwargs))


def _ones(*shape):
    return np.random.default_rng(0).standard_normal(shape)


BN_ERRORS = (
    ErrorInput(Sample((_ones(4, 3), np.zeros(3), np.ones(3), np.ones(4), None), dict(training=True)),
               ValueError, r"weight must have shape \(3,\) .* got shape \(4,\)"),
    ErrorInput(Sample((_ones(4, 3), np.zeros(2), np.ones(3)), dict(training=True)), ValueError, "running_mean must have shape"),
    ErrorInput(Sample((_ones(1, 3), np.zeros(3), np.ones(3)), dict(training=True)), ValueError, "more than 1 value per channel"),
    ErrorInput(Sample((_ones(4, 3), None, None), dict(training=False)), RuntimeError, "must be defined in evaluation mode"),
    ErrorInput(Sample((_ones(4, 3), np.zeros(3), None), dict(training=True)), ValueError, "both running_mean and running_var"),
    ErrorInput(Sample((_ones(4), np.zeros(4), np.ones(4)), dict(training=True)), ValueError, "at least 2 dims"),
    ErrorInput(Sample((_ones(4, 3), np.zeros(3), np.ones(3)), dict(training=True, momentum=None)), TypeError, "momentum"),
    ErrorInput(Sample((_ones(4, 3), np.zeros(3), np.ones(3)), dict(training=True, eps=-1.0)), ValueError, "eps"),
)
GN_ERRORS = (
    ErrorInput(Sample((_ones(2, 6, 3), 4)), ValueError, r"num_groups=4 must .* divide the number of channels C=6"),
    ErrorInput(Sample((_ones(2, 6, 3), 0)), ValueError, "num_groups=0"),
    ErrorInput(Sample((_ones(2, 6, 3), 2.0)), TypeError, "num_groups must be an int"),
    ErrorInput(Sample((_ones(2, 6, 3), 2, np.ones(3))), ValueError, r"weight must have shape \(6,\)"),
    ErrorInput(Sample((_ones(2, 6, 3), 2, None, np.ones(2))), ValueError, r"bias must have shape \(6,\)"),
    ErrorInput(Sample((_ones(6), 2)), ValueError, "at least 2 dims"),
)

OPS = [
    OpInfo("batch_norm", norm.batch_norm, batch_norm_samples(), torch_op=torch_F.batch_norm, errors=BN_ERRORS),
    OpInfo("batch_norm_relu", norm.batch_norm_relu, batch_norm_samples(), torch_op=_relu_of(torch_F.batch_norm),
           errors=BN_ERRORS[:1]),
    OpInfo("group_norm", norm.group_norm, group_norm_samples(), torch_op=torch_group_norm, errors=GN_ERRORS),
    OpInfo("group_norm_relu", norm.group_norm_relu, group_norm_samples(), torch_op=_relu_of(torch_group_norm),
           errors=GN_ERRORS[:1]),
]
test_gradcheck, test_matches_torch, test_errors = op_tests(OPS)


# ---- running statistics ---------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@given(sample=batch_norm_samples(training=True))
def test_running_stats_update_like_torch(dtype, sample):
    """Several training steps update running_mean/var as PyTorch does (unbiased variance,
    momentum); eval then normalises with them, as PyTorch does."""
    x, running_mean, running_var, weight, bias = sample.args
    momentum, eps = sample.kwargs["momentum"], sample.kwargs["eps"]
    ours = gf.tensor(running_mean.astype(dtype)), gf.tensor(running_var.astype(dtype))
    theirs = torch.tensor(running_mean.astype(dtype)), torch.tensor(running_var.astype(dtype))
    rng = np.random.default_rng(0)
    for step in range(3):
        batch = (x * (1 + step) + rng.uniform(-1, 1)).astype(dtype)
        norm.batch_norm(gf.tensor(batch), *ours, training=True, momentum=momentum, eps=eps)
        torch_F.batch_norm(torch.tensor(batch), *theirs, training=True, momentum=momentum, eps=eps)
    tol = 1e-12 if dtype == np.float64 else 1e-5
    for got, expected in zip(ours, theirs):
        assert got.dtype == np.dtype(dtype)
        np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=tol, atol=tol)
    out = norm.batch_norm(gf.tensor(x.astype(dtype)), *ours, training=False, eps=eps)
    ref = torch_F.batch_norm(torch.tensor(x.astype(dtype)), *theirs, training=False, eps=eps)
    np.testing.assert_allclose(out.numpy(), ref.numpy(), rtol=tol * 10, atol=tol * 10)


def test_eval_leaves_running_stats_alone_and_training_works_without_them():
    x = np.random.default_rng(1).standard_normal((4, 3, 2, 2))
    mean, var = gf.tensor(np.full(3, 0.5)), gf.tensor(np.full(3, 2.0))
    norm.batch_norm(gf.tensor(x), mean, var, training=False)
    np.testing.assert_array_equal(mean.numpy(), 0.5)
    np.testing.assert_array_equal(var.numpy(), 2.0)
    out = norm.batch_norm(gf.tensor(x), None, None, training=True)
    ref = torch_F.batch_norm(torch.tensor(x), None, None, training=True)
    np.testing.assert_allclose(out.numpy(), ref.numpy(), rtol=1e-12, atol=1e-12)


def test_running_stats_update_is_not_recorded_in_the_graph():
    x = gf.tensor(np.random.default_rng(2).standard_normal((4, 3)), requires_grad=True)
    mean, var = gf.zeros(3, dtype=gf.float64), gf.ones(3, dtype=gf.float64)
    norm.batch_norm(x, mean, var, training=True).sum().backward()
    assert not mean.requires_grad and not var.requires_grad and mean.grad is None
    with pytest.raises(RuntimeError, match="must not require grad"):
        norm.batch_norm(x, mean.requires_grad_(), var, training=True)


# ---- precision ------------------------------------------------------------------------

@pytest.mark.parametrize("fn", [lambda x: norm.batch_norm(x, None, None, training=True),
                                lambda x: norm.group_norm(x, 2)], ids=["batch_norm", "group_norm"])
def test_float32_statistics_survive_a_large_mean(fn):
    """float32 input with mean 1e4 and std 1: the statistics are accumulated in float64
    (two-pass), so the result matches the float64 computation on the same values; a
    float32 sum of squares would lose the variance entirely."""
    a = (1e4 + np.random.default_rng(3).standard_normal((4, 4, 8, 8))).astype(np.float32)
    x32 = gf.tensor(a, requires_grad=True)
    x64 = gf.tensor(a.astype(np.float64), requires_grad=True)
    out32, out64 = fn(x32), fn(x64)
    assert out32.dtype == gf.float32
    np.testing.assert_allclose(out32.detach().numpy(), out64.detach().numpy(), atol=2e-3)
    cotangent = np.random.default_rng(4).standard_normal(a.shape)
    out32.backward(gf.tensor(cotangent.astype(np.float32)))
    out64.backward(gf.tensor(cotangent))
    np.testing.assert_allclose(x32.grad.numpy(), x64.grad.numpy(), atol=2e-3)


def test_batch_norm_accepts_3d_and_5d_inputs_like_torch():
    rng = np.random.default_rng(5)
    for shape in [(3, 2, 5), (2, 2, 2, 3, 2)]:
        a = rng.standard_normal(shape)
        out = norm.batch_norm(gf.tensor(a), None, None, training=True)
        ref = torch_F.batch_norm(torch.tensor(a), None, None, training=True)
        np.testing.assert_allclose(out.numpy(), ref.numpy(), rtol=1e-12, atol=1e-12)
        out = norm.group_norm(gf.tensor(a), 2)
        np.testing.assert_allclose(out.numpy(), torch_F.group_norm(torch.tensor(a), 2).numpy(), rtol=1e-12, atol=1e-12)
