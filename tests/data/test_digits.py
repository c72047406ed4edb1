import numpy as np
import pytest
from hypothesis import given, strategies as st
from sklearn.datasets import load_digits

from gradflow.data import DigitsDataset


def test_sample_shape_dtype_and_classes():
    ds = DigitsDataset(20, image_size=(40, 56))
    image, mask = ds[0]
    assert image.shape == (3, 40, 56) and image.dtype == np.float32
    assert mask.shape == (40, 56) and mask.dtype == np.int64
    assert 0.0 <= image.min() and image.max() <= 1.0
    assert ds.num_classes == 11 and ds.class_names[1] == "0" and ds.class_names[10] == "9"
    labels = np.unique(np.concatenate([ds[i][1].ravel() for i in range(len(ds))]))
    assert labels.min() == 0 and labels.max() <= 10 and len(labels) > 5


@given(seed=st.integers(0, 2 ** 32))
def test_deterministic_per_seed_and_index(seed):
    a, b = DigitsDataset(4, 32, seed=seed), DigitsDataset(4, 32, seed=seed)
    for i in reversed(range(4)):
        np.testing.assert_array_equal(a[i][0], b[i][0])
        np.testing.assert_array_equal(a[i][1], b[i][1])
    assert not np.array_equal(a[0][0], DigitsDataset(4, 32, seed=seed + 1)[0][0])


def test_mask_labels_the_digit_shown():
    """Each labelled pixel lies in the box of a digit of that class (class = digit + 1,
    digit read from scikit-learn's own targets), and the topmost digit keeps its label."""
    targets = load_digits().target
    ds = DigitsDataset(30, image_size=48, seed=5, noise=0.0, texture=False)
    for i in range(len(ds)):
        image, mask = ds[i]
        spec = ds.spec(i)
        covered = np.zeros(mask.shape, dtype=bool)
        for d in spec["digits"]:
            assert d["digit"] == targets[d["glyph"]]
            box = np.zeros(mask.shape, dtype=bool)
            box[d["top"]:d["top"] + d["size"], d["left"]:d["left"] + d["size"]] = True
            covered |= box
        for label in np.unique(mask[mask > 0]):
            boxes = np.zeros(mask.shape, dtype=bool)
            for d in spec["digits"]:
                if d["digit"] + 1 == label:
                    boxes[d["top"]:d["top"] + d["size"], d["left"]:d["left"] + d["size"]] = True
            assert (boxes[mask == label]).all()
        top = spec["digits"][-1]
        ink = ds.ink(top) > ds.threshold
        region = mask[top["top"]:top["top"] + top["size"], top["left"]:top["left"] + top["size"]]
        assert (region[ink] == top["digit"] + 1).all() and ink.any()
        # outside every digit box the image is the flat background
        np.testing.assert_allclose(image[:, ~covered].T, np.broadcast_to(spec["background"]["colors"][0],
                                                                         (int((~covered).sum()), 3)), atol=1e-6)


def test_glyph_pools_are_disjoint():
    train = DigitsDataset(40, 32, glyphs="train")
    val = DigitsDataset(40, 32, glyphs="val")
    assert not set(train.glyph_pool) & set(val.glyph_pool)
    assert len(train.glyph_pool) + len(val.glyph_pool) == len(load_digits().target)
    used = {d["glyph"] for i in range(len(val)) for d in val.spec(i)["digits"]}
    assert used <= set(val.glyph_pool)
    with pytest.raises(ValueError, match="glyphs"):
        DigitsDataset(1, glyphs="test")
