"""gradflow.kernels.cuda.launch: launch geometry, argument views, signatures, and every
CUDA kernel with more elements than threads, so each grid-stride and block-stride
loop runs several iterations (one thread per element would hide a wrong stride).

Runs in Numba's CUDA simulator or on a real GPU; see conftest.py."""
import numpy as np
import pytest

from gradflow import backend
from gradflow.kernels.cpu import conv as cpu_conv, norm as cpu_norm, pool as cpu_pool
from gradflow.kernels.cuda import conv, launch, norm, pool
from gradflow.ops import pool as pool_ops

ON_GPU = backend.cuda_available()
DEVICE = "cuda" if ON_GPU else "cpu"

# 4 threads a block, at most 2 blocks: 8 threads cover every array below several times over
SMALL = dict(threads=4, reduce_threads=4, max_blocks=2)


def device(array):
    return None if array is None else backend.to_device(array, "cuda") if ON_GPU else array


def host(array):
    return backend.to_numpy(array)


def _close(got, expected, dtype):
    tol = 1e-12 if dtype == np.float64 else 2e-5
    for g, e in zip(got, expected):
        assert host(g).dtype == e.dtype
        np.testing.assert_allclose(host(g), e, rtol=tol, atol=tol)


@pytest.mark.cudasim
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("relu", [False, True])
def test_batch_norm_loops_over_more_elements_than_threads(dtype, relu):
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((3, 2, 13)) * 2 + 1).astype(dtype)      # 39 values a channel, 13 a block
    weight, bias = rng.uniform(-1.5, 1.5, 2).astype(dtype), rng.uniform(-1, 1, 2).astype(dtype)
    grad = rng.standard_normal(x.shape).astype(dtype)
    expected = cpu_norm.batch_norm_train_forward(x, weight, bias, 1e-5, relu)
    with launch.geometry(**SMALL):
        got = norm.batch_norm_train_forward(device(x), device(weight), device(bias), 1e-5, relu)
        _close(got, expected, dtype)
        y, mean, _, invstd = expected
        _close([norm.batch_norm_eval_forward(device(x), device(mean), device(invstd), device(weight),
                                             device(bias), relu)],
               [cpu_norm.batch_norm_eval_forward(x, mean, invstd, weight, bias, relu)], dtype)
        relu_output = y if relu else None
        for training in (True, False):
            got = norm.batch_norm_backward(device(grad), device(x), device(mean), device(invstd), device(weight),
                                           training, device(relu_output))
            _close(got, cpu_norm.batch_norm_backward(grad, x, mean, invstd, weight, training, relu_output), dtype)


@pytest.mark.cudasim
def test_batch_norm_statistics_combine_distant_parts():
    """Per-image parts with very different means: the combined variance must not cancel."""
    x = np.stack([np.full((2, 9), 1e6), np.full((2, 9), -1e6)]) + np.linspace(0, 1, 18).reshape(1, 2, 9)
    ones = np.ones(2)
    _, mean, var, invstd = cpu_norm.batch_norm_train_forward(x, ones, ones * 0, 1e-5)
    with launch.geometry(**SMALL):
        _, mean_d, var_d, invstd_d = norm.batch_norm_train_forward(device(x), device(ones), device(ones * 0), 1e-5)
    np.testing.assert_allclose(host(mean_d), mean, rtol=0, atol=1e-9)
    np.testing.assert_allclose(host(var_d), var, rtol=1e-14)
    np.testing.assert_allclose(host(var_d), x.transpose(1, 0, 2).reshape(2, -1).var(axis=1), rtol=1e-14)


@pytest.mark.cudasim
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_group_norm_loops_over_more_elements_than_threads(dtype):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 4, 11)).astype(dtype)
    weight, bias = rng.uniform(-1.5, 1.5, 4).astype(dtype), rng.uniform(-1, 1, 4).astype(dtype)
    grad = rng.standard_normal(x.shape).astype(dtype)
    expected = cpu_norm.group_norm_forward(x, 2, weight, bias, 1e-5, True)
    with launch.geometry(**SMALL):
        _close(norm.group_norm_forward(device(x), 2, device(weight), device(bias), 1e-5, True), expected, dtype)
        y, mean, invstd = expected
        got = norm.group_norm_backward(device(grad), device(x), 2, device(mean), device(invstd), device(weight),
                                       device(y))
    _close(got, cpu_norm.group_norm_backward(grad, x, 2, mean, invstd, weight, y), dtype)


@pytest.mark.cudasim
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pool_loops_over_more_elements_than_threads(dtype):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 2, 7, 6)).astype(dtype)
    tables = [(pool_ops.sliding_windows(n, 3, 2, 1), pool_ops.sliding_windows(n, 3, 2, 1, device=DEVICE))
              for n in x.shape[2:]]
    (rows, rows_d), (cols, cols_d) = tables
    out, indices = cpu_pool.max_pool2d_forward(x, rows, cols)
    grad = rng.standard_normal(out.shape).astype(dtype)
    with launch.geometry(**SMALL):
        out_d, indices_d = pool.max_pool2d_forward(device(x), rows_d, cols_d)
        back_d = pool.max_pool2d_backward(device(grad), indices_d, rows_d, cols_d)
        avg_d = pool.avg_pool2d_forward(device(x), rows_d, cols_d)
        avg_back_d = pool.avg_pool2d_backward(device(grad), rows_d, cols_d)
    np.testing.assert_array_equal(host(out_d), out)
    np.testing.assert_array_equal(host(indices_d), indices)
    _close([back_d, avg_d, avg_back_d], [cpu_pool.max_pool2d_backward(grad, indices, rows, cols),
                                         cpu_pool.avg_pool2d_forward(x, rows, cols),
                                         cpu_pool.avg_pool2d_backward(grad, rows, cols)], dtype)


@pytest.mark.cudasim
def test_conv_loops_over_more_elements_than_threads():
    rng = np.random.default_rng(6)
    x, weight = rng.standard_normal((2, 2, 5, 6)), rng.standard_normal((3, 2, 3, 3))
    s, p, d = (2, 1), ((1, 1), (0, 2)), (1, 2)
    y = cpu_conv.conv2d(x, weight, None, s, p, d, 1)
    grad = rng.standard_normal(y.shape)
    with launch.geometry(**SMALL):
        y_d = conv.conv2d(device(x), device(weight), None, s, p, d, 1)
        gx_d = conv.conv_transpose2d(device(grad), device(weight), None, s, p, d, 1, x.shape[2:])
        gw_d = conv.conv2d_weight_grad(device(x), device(grad), weight.shape[2:], s, p, d, 1)
    _close([y_d, gx_d, gw_d], [y, cpu_conv.conv_transpose2d(grad, weight, None, s, p, d, 1, x.shape[2:]),
                               cpu_conv.conv2d_weight_grad(x, grad, weight.shape[2:], s, p, d, 1)], np.float64)


@pytest.mark.cudasim
def test_geometry_restores_and_validates():
    before = (launch.GEOMETRY.threads, launch.GEOMETRY.reduce_threads, launch.GEOMETRY.max_blocks)
    with launch.geometry(threads=8, reduce_threads=16, max_blocks=3) as g:
        assert (g.threads, g.reduce_threads, g.max_blocks) == (8, 16, 3)
        assert launch.blocks(1000) == 3 and launch.blocks(9) == 2
    assert (launch.GEOMETRY.threads, launch.GEOMETRY.reduce_threads, launch.GEOMETRY.max_blocks) == before
    assert launch.blocks(0) == 1
    with pytest.raises(ValueError, match="power of two"):
        with launch.geometry(reduce_threads=6):
            pass
    with pytest.raises(ValueError, match="power of two"):
        with launch.geometry(reduce_threads=2 * launch.MAX_REDUCE_THREADS):
            pass
    with pytest.raises(ValueError, match="threads must be positive"):
        with launch.geometry(threads=0):
            pass


class _FakeDeviceArray:
    """A host array dressed as a device array: only __cuda_array_interface__."""

    def __init__(self, array):
        self.array = array
        self.shape = array.shape
        interface = dict(array.__array_interface__)
        self.__cuda_array_interface__ = dict(interface, version=3, stream=None)


@pytest.mark.cudasim
@pytest.mark.parametrize("make", [lambda a: a, lambda a: a[:, ::2], lambda a: a.T])
def test_device_view_reads_pointer_shape_strides(make):
    array = make(np.arange(24, dtype=np.float32).reshape(4, 6))
    view = launch.DeviceView.of(_FakeDeviceArray(array))
    assert view.ptr == array.__array_interface__["data"][0] == view.device_ctypes_pointer.value
    assert view.shape == array.shape and view.strides == array.strides and view.ndim == array.ndim
    assert view.size == array.size and view.dtype == array.dtype
    assert view.c_contiguous == array.flags.c_contiguous
    assert view._strided_memory_view_shim is view and view._layout.strides_in_bytes == array.strides
    assert view.__cuda_memory__


@pytest.mark.cudasim
def test_numba_type_gives_explicit_signature_types():
    from numba import typeof
    a = np.zeros((2, 3), dtype=np.float32)
    assert launch.numba_type(a) == typeof(a)                             # C-contiguous: layout 'C'
    assert launch.numba_type(a[:, ::2]).layout == "A"
    assert launch.numba_type(launch.DeviceView.of(_FakeDeviceArray(a))) == typeof(a)
    assert launch.numba_type(np.zeros(4, np.int64)) == typeof(np.zeros(4, np.int64))
    assert [str(launch.numba_type(v)) for v in (True, 3, 2.5, np.float32(1))] == \
        ["bool", "int64", "float64", "float32"]


@pytest.mark.cudasim
def test_constant_views_are_built_once(monkeypatch):
    monkeypatch.setattr(launch, "SIMULATOR", False)
    monkeypatch.setitem(launch._fast_path_state, "ok", True)
    monkeypatch.setattr(launch, "_constants", {})
    table = _FakeDeviceArray(np.arange(5, dtype=np.int64))
    first = launch.constant(table)
    assert launch.constant(table) is first and first.owner is table
    other = _FakeDeviceArray(np.arange(5, dtype=np.int64))
    assert launch.constant(other) is not first


@pytest.mark.skipif(not ON_GPU, reason="the direct launch path runs on a real GPU only")
def test_fast_path_works_on_this_gpu():
    ok, why = launch.fast_path()
    assert ok, why


@pytest.mark.cudasim
def test_arguments_convert_for_the_direct_launch_inside_tuples(monkeypatch):
    a = _FakeDeviceArray(np.zeros(3, np.float32))
    view = launch.DeviceView.of(a)
    converted = launch._convert((a, view), public=False)
    assert isinstance(converted[0], launch.DeviceView) and converted[0].owner is a and converted[1] is view
    for scalar in (1, 2.5, True, np.float32(3)):
        assert launch._convert(scalar, public=False) is scalar
    monkeypatch.setattr(launch, "_public_view", lambda array: ("public", array))
    assert launch._convert(view, public=True) == ("public", view)
    assert launch.numba_type(converted) == launch.types.UniTuple(launch.numba_type(view), 2)


@pytest.mark.cudasim
def test_kernels_depending_on_other_modules_cache_by_their_source(tmp_path, monkeypatch):
    """Numba's disk cache checks only the kernel's own file: a kernel compiling in functions
    of other modules caches in a folder named after their source, so editing them recompiles."""
    import importlib
    import types as pytypes
    configs = []
    for name in ("numba.cuda.core.config", "numba.core.config"):   # numba-cuda has its own
        try:
            configs.append(importlib.import_module(name))
        except ImportError:
            pass
    for c in configs:
        monkeypatch.setattr(c, "CACHE_DIR", str(tmp_path))
    config = configs[-1]
    module = pytypes.ModuleType("rules_like")
    module.__file__ = str(tmp_path / "rules_like.py")
    folders = []
    for source in ("x = 1\n", "x = 2\n", "x = 1\n"):
        (tmp_path / "rules_like.py").write_text(source)
        with launch._cache_folder_for((module,)):
            folders.append(config.CACHE_DIR)
        assert config.CACHE_DIR == str(tmp_path)
    assert folders[0] == folders[2] != folders[1] and folders[0].startswith(str(tmp_path))
    with launch._cache_folder_for(()):
        assert config.CACHE_DIR == str(tmp_path)
