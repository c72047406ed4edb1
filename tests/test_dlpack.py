"""DLPack: gradflow tensors share memory with NumPy and PyTorch both ways, and refuse what they cannot share."""
import numpy as np
import pytest

import gradflow as gf
from gradflow.utils.dlpack import from_dlpack, to_dlpack

torch = pytest.importorskip("torch")

DTYPES = ["float32", "float64", "float16", "int64", "int32", "uint8", "bool"]


@pytest.mark.parametrize("dtype", DTYPES)
def test_numpy_to_gradflow_shares_memory(dtype):
    array = np.zeros((3, 4), dtype=dtype)
    t = gf.from_dlpack(array)
    assert t.dtype == array.dtype and t.shape == (3, 4) and t.device == "cpu" and not t.requires_grad
    array[1, 2] = 1                        # write through NumPy ...
    assert t.numpy()[1, 2] == 1            # ... read through gradflow
    t.data[0, 0] = 1                       # and the other way
    assert array[0, 0] == 1
    assert np.shares_memory(t.data, array)


@pytest.mark.parametrize("dtype", DTYPES)
def test_gradflow_to_numpy_and_torch_share_memory(dtype):
    t = gf.zeros(2, 5, dtype=np.dtype(dtype))
    as_numpy = np.from_dlpack(t)
    as_torch = torch.from_dlpack(t)
    assert as_torch.dtype == getattr(torch, dtype) and tuple(as_torch.shape) == (2, 5)
    with gf.no_grad():
        t[1, 3] = 1
    assert as_numpy[1, 3] == 1 and as_torch[1, 3].item() == 1
    as_torch[0, 4] = 1
    assert t.numpy()[0, 4] == 1 and as_numpy[0, 4] == 1
    assert as_torch.data_ptr() == t.data.ctypes.data


def test_torch_to_gradflow_shares_memory_and_keeps_strides():
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    view = base[:, 1::2]                   # non-contiguous: shared, not copied
    t = gf.from_dlpack(view)
    assert t.shape == (4, 3) and np.array_equal(t.numpy(), view.numpy())
    base[2, 3] = -1.0
    assert t.numpy()[2, 1] == -1.0
    t.data[0, 0] = 100.0
    assert base[0, 1].item() == 100.0


def test_legacy_capsules_both_ways():
    source = torch.ones(3, dtype=torch.float64)
    t = from_dlpack(torch.utils.dlpack.to_dlpack(source))
    source[1] = 5
    assert t.numpy()[1] == 5 and t.dtype == gf.float64
    g = gf.zeros(4)
    back = torch.utils.dlpack.from_dlpack(to_dlpack(g))
    back[2] = 7
    assert g.numpy()[2] == 7


def test_gradflow_results_flow_into_torch_and_back():
    a = gf.randn(3, 3)
    b = torch.from_dlpack(a) * 2           # torch computes on gradflow's memory
    c = gf.from_dlpack(b)
    np.testing.assert_array_equal(c.numpy(), a.numpy() * 2)


def test_errors_name_the_problem():
    with pytest.raises(RuntimeError, match="requires grad.*detach"):
        torch.from_dlpack(gf.ones(2, requires_grad=True))
    with pytest.raises(TypeError, match="bfloat16"):
        gf.from_dlpack(torch.zeros(2, dtype=torch.bfloat16))
    with pytest.raises(TypeError, match="got list"):
        gf.from_dlpack([1, 2])
    with pytest.raises(TypeError, match="gradflow Tensor"):
        to_dlpack(np.zeros(2))
    capsule = torch.utils.dlpack.to_dlpack(torch.zeros(2))
    from_dlpack(capsule)
    with pytest.raises(TypeError, match="consumed"):
        from_dlpack(capsule)
    readonly = gf.Tensor(np.broadcast_to(np.zeros(1, np.float32), (3,)))
    with pytest.raises(BufferError, match=r"float32 tensor of shape \(3,\).*clone"):
        to_dlpack(readonly)     # an unversioned capsule cannot say "read-only"


class _OnDevice:
    """An array-like that claims to live on another accelerator."""

    def __init__(self, device_type):
        self.device_type = device_type

    def __dlpack__(self, **kwargs):
        raise AssertionError("must not be asked for its memory")

    def __dlpack_device__(self):
        return (self.device_type, 0)


@pytest.mark.parametrize("device_type, name", [(10, "ROCm"), (8, "Metal"), (14, "oneAPI"), (99, "DLPack device type 99")])
def test_unsupported_devices_are_named(device_type, name):
    with pytest.raises(RuntimeError, match=f"memory on {name} is not supported"):
        gf.from_dlpack(_OnDevice(device_type))


def test_cuda_memory_without_a_gpu_says_why(monkeypatch):
    monkeypatch.setenv("GRADFLOW_DEVICE", "cpu")
    gf.backend._probe_cuda.cache_clear()
    try:
        with pytest.raises(RuntimeError, match="CUDA requested but not available"):
            gf.from_dlpack(_OnDevice(2))
    finally:
        gf.backend._probe_cuda.cache_clear()


@pytest.mark.gpu
def test_cupy_and_torch_cuda_share_memory():
    if not gf.backend.cuda_available():
        pytest.skip("needs a CUDA GPU")
    cupy = gf.backend.cupy_module()
    array = cupy.zeros((2, 3), dtype=cupy.float32)
    t = gf.from_dlpack(array)
    assert t.device == "cuda"
    array[1, 1] = 4
    assert t.numpy()[1, 1] == 4
    if torch.cuda.is_available():
        as_torch = torch.from_dlpack(t)
        assert as_torch.is_cuda
        as_torch[0, 2] = 3
        assert float(array[0, 2]) == 3
        back = gf.from_dlpack(torch.ones(2, device="cuda"))
        assert back.device == "cuda" and back.numpy().tolist() == [1, 1]
