import numpy as np
import pytest

import gradflow as gf
from gradflow.data import Dataset, ShapesDataset, Subset, random_split
from tests.data.test_loader import IndexDataset


def test_dataset_is_abstract():
    with pytest.raises(TypeError):
        Dataset()


def test_subset_views_in_order_and_forwards_classes():
    base = ShapesDataset(10, image_size=16)
    sub = Subset(base, [7, 2, -1])
    assert len(sub) == 3 and sub.indices == [7, 2, 9]
    np.testing.assert_array_equal(sub[0][1], base[7][1])
    np.testing.assert_array_equal(sub[-1][0], base[9][0])
    assert sub.num_classes == 4 and sub.class_names == base.class_names
    with pytest.raises(IndexError):
        sub[3]
    with pytest.raises(IndexError):
        Subset(base, [10])


def members(subset):
    return [int(subset[i][1][0, 0]) for i in range(len(subset))]


def test_random_split_counts_disjoint_and_seeded():
    ds = IndexDataset(10)
    train, val = random_split(ds, [8, 2], seed=0)
    assert len(train) == 8 and len(val) == 2
    assert sorted(members(train) + members(val)) == list(range(10))
    again = random_split(ds, [8, 2], seed=0)
    assert members(again[0]) == members(train)
    assert members(random_split(ds, [8, 2], seed=1)[0]) != members(train)


def test_random_split_fractions_like_pytorch():
    parts = random_split(IndexDataset(10), [0.5, 0.3, 0.2], seed=0)
    assert [len(p) for p in parts] == [5, 3, 2]
    parts = random_split(IndexDataset(11), [0.5, 0.5], seed=0)
    assert [len(p) for p in parts] == [6, 5]       # remainder handed out round-robin
    with pytest.raises(ValueError, match="sum"):
        random_split(IndexDataset(10), [5, 4])
    with pytest.raises(ValueError, match="sum to 1"):
        random_split(IndexDataset(10), [0.5, 0.4])


def test_random_split_seed_none_uses_manual_seed():
    gf.manual_seed(7)
    a = members(random_split(IndexDataset(12), [6, 6])[0])
    gf.manual_seed(7)
    b = members(random_split(IndexDataset(12), [6, 6])[0])
    assert a == b
