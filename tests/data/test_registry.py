import numpy as np
import pytest

from gradflow.data import DATASETS, DigitsDataset, ShapesDataset, get_dataset, get_splits
from tests.data.test_folder import write_pair


def test_names():
    assert DATASETS == ("shapes", "digits", "folder")
    with pytest.raises(ValueError, match="unknown dataset"):
        get_dataset("cifar", "train")
    with pytest.raises(ValueError, match="unknown split"):
        get_dataset("shapes", "dev")


@pytest.mark.parametrize("name, cls, classes", [("shapes", ShapesDataset, 4), ("digits", DigitsDataset, 11)])
def test_synthetic_splits_sizes_and_seeds(name, cls, classes):
    train = get_dataset(name, "train", image_size=24, seed=3)
    val = get_dataset(name, "val", image_size=24, seed=3)
    assert isinstance(train, cls) and len(train) == 2000 and len(val) == 200
    assert train.num_classes == val.num_classes == classes
    assert not np.array_equal(train[0][0], val[0][0])
    again = get_dataset(name, "train", image_size=24, seed=3, size=5)
    assert len(again) == 5
    np.testing.assert_array_equal(again[4][0], train[4][0])
    assert not np.array_equal(get_dataset(name, "train", image_size=24, seed=4, size=1)[0][0], train[0][0])
    with pytest.raises(ValueError, match="classes"):
        get_dataset(name, "train", num_classes=classes + 1)


def test_digits_val_uses_unseen_glyphs():
    assert get_dataset("digits", "train").glyphs == "train"
    assert get_dataset("digits", "val").glyphs == "val"


def test_get_splits_sizes():
    train, val = get_splits("shapes", image_size=16, train_size=12, val_size=3)
    assert (len(train), len(val)) == (12, 3)


def test_folder_single_root_is_split_consistently(tmp_path):
    for i in range(10):
        write_pair(tmp_path, f"s{i}", labels=(0, 1, 2), seed=i)
    train = get_dataset("folder", "train", image_size=8, seed=1, root=tmp_path, val_fraction=0.2)
    val = get_dataset("folder", "val", image_size=8, seed=1, root=tmp_path, val_fraction=0.2)
    assert (len(train), len(val)) == (8, 2)
    assert not set(train.indices) & set(val.indices)
    assert train.num_classes == 3 and train[0][0].shape == (3, 8, 8)
    with pytest.raises(ValueError, match="root"):
        get_dataset("folder", "train")
    with pytest.raises(ValueError, match="test"):
        get_dataset("folder", "test", root=tmp_path)


def test_folder_split_dirs_share_train_classes(tmp_path):
    for i in range(3):
        write_pair(tmp_path / "train", f"t{i}", labels=(0, 1, 4), seed=i)
    write_pair(tmp_path / "val", "v0", labels=(0, 1), seed=9)
    train, val = get_splits("folder", image_size=None, root=tmp_path)
    assert len(train) == 3 and len(val) == 1
    assert train.num_classes == val.num_classes == 5
    assert get_dataset("folder", "val", root=tmp_path).num_classes == 5   # inferred from train
