"""The CUDA confusion-matrix counting and finiteness kernels against NumPy, with more
pixels / elements than the (small) grid has threads. See conftest.py."""
import numpy as np
import pytest

from gradflow import backend
from gradflow.kernels.cuda import finite, launch, metrics

ON_GPU = backend.cuda_available()


def device(array):
    return backend.to_device(array, "cuda") if ON_GPU else array


@pytest.mark.cudasim
@pytest.mark.parametrize("ignore_index", [255, None])
def test_count_pairs_matches_bincount(ignore_index):
    rng = np.random.default_rng(0)
    target = rng.integers(0, 4, 50)
    target[::7] = 255 if ignore_index is not None else 3
    pred = rng.integers(0, 4, 50)
    keep = target != 255
    expected = np.bincount(target[keep] * 4 + pred[keep], minlength=16)
    counts = device(np.zeros(16, np.int64))
    with launch.geometry(threads=4, max_blocks=2):
        bad = metrics.count_pairs(device(pred), device(target), 4, ignore_index, counts)
    np.testing.assert_array_equal(backend.to_numpy(counts), expected)
    assert backend.to_numpy(bad).tolist() == [0, 0]


@pytest.mark.cudasim
def test_count_pairs_flags_out_of_range_ids_without_counting_them():
    target, pred = np.array([0, 1, 4, 1, -1, 2]), np.array([0, 3, 0, 1, 0, 2])
    counts = device(np.zeros(9, np.int64))
    with launch.geometry(threads=2, max_blocks=2):
        bad = metrics.count_pairs(device(pred), device(target), 3, 255, counts)
    assert backend.to_numpy(bad).tolist() == [1, 1]
    assert backend.to_numpy(counts).sum() == 3          # (0,0) (1,1) (2,2)


@pytest.mark.cudasim
@pytest.mark.parametrize("poison", [None, np.nan, np.inf, -np.inf])
def test_any_nonfinite_finds_one_bad_value_anywhere(poison):
    arrays = [np.ones(n, dtype=np.float64 if n % 2 else np.float32) for n in (3, 30, 1, 4, 5, 6, 7, 8, 9, 17)]
    if poison is not None:
        arrays[7][5] = poison                         # in a float32 array
        arrays[1][29] = poison                        # and the last element of a grid-stride loop
    with launch.geometry(threads=4, max_blocks=2):
        flags = backend.to_numpy(finite.nonfinite_each([device(a) for a in arrays]))
    expected = [poison is not None and k in (1, 7) for k in range(len(arrays))]
    assert flags.tolist() == expected


@pytest.mark.cudasim
def test_any_nonfinite_sees_the_last_element_past_several_strides():
    a = np.zeros(37)
    a[36] = np.nan
    with launch.geometry(threads=4, max_blocks=2):
        assert backend.to_numpy(finite.nonfinite_each([device(np.ones(3)), device(a)])).tolist() == [False, True]


@pytest.mark.cudasim
def test_nonfinite_each_chunks_many_arrays_of_mixed_dtypes():
    arrays = [np.ones(3, dtype=np.float32 if k % 3 else np.float64) for k in range(finite.CHUNK + 9)]
    arrays[finite.CHUNK + 4][2] = np.nan
    arrays[0][0] = np.inf
    with launch.geometry(threads=2, max_blocks=1):
        flags = backend.to_numpy(finite.nonfinite_each([device(a) for a in arrays]))
    assert np.flatnonzero(flags).tolist() == [0, finite.CHUNK + 4]


@pytest.mark.cudasim
def test_nonfinite_each_per_array_when_chunked_kernels_do_not_compile(monkeypatch):
    def refuses(*args):
        raise TypeError("no tuple indexing here")
    monkeypatch.setattr(finite, "_nonfinite_chunk", refuses)
    monkeypatch.setattr(finite, "per_array_reason", None)
    arrays = [np.ones(9), np.array([1.0, np.inf]), np.ones(3, np.float32)]
    with launch.geometry(threads=2, max_blocks=2):
        flags = backend.to_numpy(finite.nonfinite_each([device(a) for a in arrays]))
    assert flags.tolist() == [False, True, False] and finite.per_array_reason.startswith("TypeError")
