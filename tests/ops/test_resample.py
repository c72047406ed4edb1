import numpy as np
import pytest
from hypothesis import strategies as st

import gradflow as gf
import gradflow.functional as F
from gradflow.ops import resample
from tests.opinfo import ErrorInput, OpInfo, Sample, arrays, op_tests

torch = pytest.importorskip("torch")

# non-integer factors too: PyTorch then indexes with 1/scale_factor, not in/out
SCALES = [0.5, 0.7, 1.0, 1.3, 1.5, 2.0, 2.5, 3.0, 1 / 3, 4.0]


@st.composite
def interpolate_samples(draw):
    shape = (draw(st.integers(1, 2)), draw(st.integers(1, 2)), draw(st.integers(1, 5)), draw(st.integers(1, 5)))
    x = draw(arrays(shape))
    mode = draw(st.sampled_from(["nearest", "bilinear"]))
    kwargs = dict(mode=mode)
    if mode == "bilinear":
        kwargs["align_corners"] = draw(st.sampled_from([None, False, True]))
    how = draw(st.sampled_from(["size", "size_pair", "scale", "scale_pair", "recompute"]))
    if how == "size":
        kwargs["size"] = draw(st.integers(1, 9))
    elif how == "size_pair":
        kwargs["size"] = (draw(st.integers(1, 9)), draw(st.integers(1, 9)))
    else:
        factors = (draw(st.sampled_from(SCALES)), draw(st.sampled_from(SCALES)))
        if how == "scale":
            factors = (factors[0], factors[0])
        factors = tuple(max(f, 1.0 / n) for f, n in zip(factors, shape[2:]))   # output >= 1 pixel
        kwargs["scale_factor"] = factors[0] if how == "scale" and factors[0] == factors[1] else factors
        if how == "recompute":
            kwargs["recompute_scale_factor"] = True
    return Sample((x,), kwargs)


X = np.zeros((1, 1, 3, 3))
ERRORS = (
    ErrorInput(Sample((X,), dict(size=4, mode="bicubic")), ValueError, "mode must be one of"),
    ErrorInput(Sample((np.zeros((1, 3, 3)),), dict(size=4)), ValueError, r"4-D input \(N, C, H, W\), got shape \(1, 3, 3\)"),
    ErrorInput(Sample((X,), dict(size=4, scale_factor=2.0)), ValueError, "only one of size or scale_factor"),
    ErrorInput(Sample((X,), dict()), ValueError, "either size or scale_factor"),
    ErrorInput(Sample((X,), dict(size=4, align_corners=True)), ValueError, "align_corners option can only be set"),
    ErrorInput(Sample((X,), dict(size=(4, 4, 4))), ValueError, "pair"),
    ErrorInput(Sample((X,), dict(size=2.5)), TypeError, "size must be an int"),
    ErrorInput(Sample((X,), dict(scale_factor=0.2)), ValueError, r"greater than 0.*output \(H: 0, W: 0\)"),
    ErrorInput(Sample((X,), dict(size=4, recompute_scale_factor=True)), ValueError, "recompute_scale_factor"),
    ErrorInput(Sample((np.zeros((1, 1, 2, 2), dtype=np.int64),), dict(size=4, mode="bilinear")), TypeError, "floating point"),
)

OPS = [OpInfo("interpolate", F.interpolate, interpolate_samples(), torch_op=torch.nn.functional.interpolate,
              errors=ERRORS)]
test_gradcheck, test_matches_torch, test_errors = op_tests(OPS)


@pytest.mark.parametrize("mode,align_corners", [("nearest", None), ("bilinear", False), ("bilinear", True)])
def test_fcn_sized_upsampling_matches_torch_in_float32(mode, align_corners):
    # the FCN's 8x upsampling of score maps: larger than the table's shapes
    rng = np.random.default_rng(0)
    a = rng.standard_normal((2, 5, 8, 8)).astype(np.float32)
    x, t = gf.tensor(a, requires_grad=True), torch.tensor(a, requires_grad=True)
    out = F.interpolate(x, scale_factor=8, mode=mode, align_corners=align_corners)
    ref = torch.nn.functional.interpolate(t, scale_factor=8, mode=mode, align_corners=align_corners)
    cot = rng.standard_normal(ref.shape).astype(np.float32)
    out.backward(gf.tensor(cot))
    ref.backward(torch.tensor(cot))
    np.testing.assert_allclose(out.detach().numpy(), ref.detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(x.grad.numpy(), t.grad.numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode,align_corners", [("nearest", None), ("bilinear", False), ("bilinear", True)])
def test_source_index_rules_match_torch_on_a_grid_of_sizes_and_scales(mode, align_corners):
    # corner cases a few random draws may miss: 1/scale_factor vs in/out (they differ when
    # in * scale is not an integer), an unchanged size with a scale != 1 (PyTorch copies),
    # float32 index arithmetic, recompute_scale_factor
    rng = np.random.default_rng(0)
    for n_in in (1, 2, 3, 5, 7):
        a = rng.standard_normal((1, 2, n_in, 6)).astype(np.float32)
        for scale in (0.7, 1.3, 1.5, 2.0, 2.2, 3.0, 1 / 3):
            if int(n_in * scale) < 1:
                continue
            for recompute in (None, True):
                kwargs = dict(scale_factor=(scale, 1.7), mode=mode, align_corners=align_corners,
                              recompute_scale_factor=recompute)
                got = F.interpolate(gf.tensor(a), **kwargs).numpy()
                ref = torch.nn.functional.interpolate(torch.tensor(a), **kwargs).numpy()
                np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-6, err_msg=str((n_in, kwargs)))


def test_nearest_keeps_integer_dtype_like_torch():
    a = np.arange(6, dtype=np.uint8).reshape(1, 1, 2, 3)   # e.g. a label map
    out = F.interpolate(gf.tensor(a), size=(3, 5))
    assert out.dtype == gf.uint8
    np.testing.assert_array_equal(out.numpy(), torch.nn.functional.interpolate(torch.tensor(a), size=(3, 5)).numpy())


def test_backward_tables_are_the_transpose_of_the_forward_ones():
    # the gather tables of the backward pass describe exactly A^T for each axis
    for mode, align_corners in [("nearest", None), ("bilinear", False), ("bilinear", True)]:
        for n_in, n_out, scale in [(5, 12, None), (7, 3, None), (4, 10, 2.5), (6, 6, 1.3)]:
            rows, weights, cols, col_weights = resample.axis_tables(n_in, n_out, mode, align_corners, scale, "<f8", "cpu")
            weights = np.ones(rows.shape) if weights is None else weights
            dense = np.zeros((n_out, n_in))
            np.add.at(dense, (np.arange(n_out)[:, None].repeat(rows.shape[1], 1), rows), weights)
            dense_t = np.zeros((n_in, n_out))
            np.add.at(dense_t, (np.arange(n_in)[:, None].repeat(cols.shape[1], 1), cols), col_weights)
            np.testing.assert_allclose(dense_t, dense.T, atol=1e-15)
            np.testing.assert_allclose(dense.sum(1), 1.0, atol=1e-12)   # every output is a convex mix


@pytest.mark.gpu
@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-10), (np.float32, 1e-4)])
def test_cuda_matches_cpu(dtype, tol):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((2, 3, 7, 5)).astype(dtype)
    for kwargs in [dict(scale_factor=2.5), dict(size=(3, 11)),
                   dict(scale_factor=(1.5, 3.0), mode="bilinear"),
                   dict(size=(16, 4), mode="bilinear", align_corners=True)]:
        results = []
        for device in ("cpu", "cuda"):
            x = gf.tensor(a, device=device, requires_grad=True)
            out = F.interpolate(x, **kwargs)
            cot = np.random.default_rng(1).standard_normal(out.shape).astype(dtype)
            out.backward(gf.tensor(cot, device=device))
            results.append((out.detach().cpu().numpy(), x.grad.cpu().numpy()))
        for got, ref in zip(results[1], results[0]):
            np.testing.assert_allclose(got, ref, rtol=tol, atol=tol, err_msg=str(kwargs))
