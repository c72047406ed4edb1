import numpy as np
import pytest

import gradflow as gf


def test_dtypes_follow_pytorch():
    assert gf.tensor(np.zeros(2)).dtype == gf.float64
    assert gf.tensor(np.zeros(2, dtype=np.int64)).dtype == gf.int64
    assert gf.tensor([1.0, 2.0]).dtype == gf.float32
    assert gf.tensor(1.5).dtype == gf.float32
    assert gf.tensor([1, 2]).dtype == gf.int64
    assert gf.zeros(2, 3).dtype == gf.float32 and gf.randn(2).dtype == gf.float32
    assert gf.arange(3).dtype == gf.int64 and gf.arange(0.0, 1.0, 0.5).dtype == gf.float32
    assert gf.full((2,), 7).dtype == gf.int64 and gf.full((2,), 7.0).dtype == gf.float32
    assert gf.zeros(2, dtype=gf.float64).dtype == gf.float64


def test_tensor_copies_its_input():
    a = np.zeros(3)
    t = gf.tensor(a)
    a[0] = 1
    assert t.numpy()[0] == 0


def test_basic_properties_and_conversions():
    x = gf.randn(2, 3, requires_grad=True)
    assert x.shape == (2, 3) and x.ndim == 2 and x.numel() == 6 and len(x) == 2
    assert x.device == "cpu" and x.is_leaf
    with pytest.raises(RuntimeError, match="detach"):
        x.numpy()
    assert isinstance(x.detach().numpy(), np.ndarray)
    assert gf.tensor([3.5]).item() == 3.5
    with pytest.raises(ValueError, match="one element"):
        x.item()
    assert x.to(gf.float64).dtype == gf.float64
    assert x.double().to("cpu").dtype == gf.float64
    assert "requires_grad=True" in repr(x) and "grad_fn=<Mul>" in repr(x * 2)


def test_cast_is_differentiable():
    x = gf.randn(3, requires_grad=True)
    x.double().sum().backward()
    assert x.grad.dtype == gf.float32


def test_only_float_tensors_require_grad():
    with pytest.raises(RuntimeError, match="floating point"):
        gf.tensor([1, 2], requires_grad=True)


def test_inplace_refused_on_tensors_that_need_grad():
    x = gf.randn(3, requires_grad=True)
    with pytest.raises(RuntimeError, match="in place"):
        x.zero_()
    with pytest.raises(RuntimeError, match="in place"):
        x[0] = 1.0
    with gf.no_grad():
        x.fill_(2.0)
    np.testing.assert_array_equal(x.detach().numpy(), [2, 2, 2])
    y = x * 1
    with gf.no_grad(), pytest.raises(RuntimeError, match="in place"):
        y.zero_()


def test_manual_seed_makes_factories_deterministic():
    gf.manual_seed(3)
    a = gf.randn(4).numpy()
    gf.manual_seed(3)
    np.testing.assert_array_equal(a, gf.randn(4).numpy())


def test_factories_validate_sizes():
    with pytest.raises(ValueError, match="invalid size"):
        gf.zeros(2, -1)
    assert gf.zeros((2, 3)).shape == (2, 3)
    assert gf.ones_like(gf.zeros(2, dtype=gf.float64)).dtype == gf.float64


def test_unknown_device_and_cuda_request_explain_themselves():
    with pytest.raises(ValueError, match="unknown device"):
        gf.zeros(2, device="tpu")
    if not gf.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA requested but not available"):
            gf.zeros(2, device="cuda")


def test_readme_one_liner():
    x = gf.randn(3, 4, requires_grad=True)
    (x * x).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), 2 * x.detach().numpy(), rtol=1e-6)


def test_finiteness_queries():
    x = gf.tensor([1.0, float("nan"), float("inf")])
    np.testing.assert_array_equal(gf.isfinite(x).numpy(), [True, False, False])
    np.testing.assert_array_equal(x.isnan().numpy(), [False, True, False])
    assert x.isnan().any().item() and not x.isfinite().all().item()


@pytest.mark.parametrize("data", ["abc", b"ab", object(), ["a", "b"], [1, "a"], [[object()]], None, {1: 2},
                                  np.array(["x", "y"]), np.array([1, None], dtype=object)],
                         ids=["str", "bytes", "object", "str-list", "mixed-list", "nested-object", "None", "dict",
                              "str-array", "object-array"])
def test_non_numeric_data_is_a_type_error(data):
    with pytest.raises(TypeError, match="tensor"):
        gf.tensor(data)
    with pytest.raises(TypeError, match="tensor"):
        gf.tensor(data, dtype=gf.float32)    # not parsed as numbers, as numpy would for "1.5"
    with pytest.raises(TypeError, match="tensor"):
        gf.Tensor(data)


def test_numeric_strings_are_not_parsed():
    with pytest.raises(TypeError, match="str"):
        gf.tensor(["1.5", "2"], dtype=gf.float32)
    with pytest.raises(TypeError, match="str"):
        gf.as_tensor("3")


def test_non_numeric_dtype_is_a_type_error():
    with pytest.raises(TypeError, match="dtype"):
        gf.tensor([1.0], dtype=str)
    with pytest.raises(TypeError, match="dtype"):
        gf.zeros(2, dtype=object)


def test_from_numpy_refuses_object_arrays():
    with pytest.raises(TypeError, match="tensor"):
        gf.from_numpy(np.array(["a"], dtype=object))
