import numpy as np
import pytest
from hypothesis import given, strategies as st
from matplotlib.path import Path

from gradflow.data import ShapesDataset
from gradflow.data.shapes import CIRCLE


def test_sample_shape_dtype_range():
    ds = ShapesDataset(5, image_size=(48, 80))
    image, mask = ds[0]
    assert image.shape == (3, 48, 80) and image.dtype == np.float32
    assert mask.shape == (48, 80) and mask.dtype == np.int64
    assert 0.0 <= image.min() and image.max() <= 1.0
    assert ds.num_classes == 4 and ds.class_names[1:] == ("circle", "square", "triangle")


@given(seed=st.integers(0, 2 ** 32), size=st.integers(8, 40))
def test_deterministic_per_seed_and_index_whatever_the_order(seed, size):
    a, b = ShapesDataset(6, size, seed=seed), ShapesDataset(6, size, seed=seed)
    forward = [a[i] for i in range(6)]
    backward = [b[i] for i in reversed(range(6))][::-1]
    for (ia, ma), (ib, mb) in zip(forward, backward):
        np.testing.assert_array_equal(ia, ib)
        np.testing.assert_array_equal(ma, mb)
    np.testing.assert_array_equal(a[3][0], a[3][0])      # repeat access too
    np.testing.assert_array_equal(a[-1][1], a[5][1])


def test_different_seeds_and_indices_differ():
    a, b = ShapesDataset(3, seed=0), ShapesDataset(3, seed=1)
    assert not np.array_equal(a[0][0], b[0][0])
    assert not np.array_equal(a[0][0], a[1][0])
    assert not np.array_equal(ShapesDataset(1, seed=(0, 0))[0][0], ShapesDataset(1, seed=(0, 1))[0][0])


def test_index_and_argument_errors():
    ds = ShapesDataset(3)
    with pytest.raises(IndexError):
        ds[3]
    with pytest.raises(IndexError):
        ds[-4]
    assert len(list(ds)) == 3          # the sequence protocol stops at the end
    with pytest.raises(ValueError, match="non-negative"):
        ShapesDataset(3, seed=-1)
    with pytest.raises(ValueError, match="at least 4x4"):
        ShapesDataset(3, image_size=2)


def reference_mask(spec, h, w):
    """Rasterise the spec with matplotlib's point-in-path test at pixel centres
    (i + 0.5), independently of our drawing code; shapes painted in order."""
    points = np.stack(np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5), axis=-1).reshape(-1, 2)
    mask = np.zeros(h * w, dtype=np.int64)
    for shape in spec["shapes"]:
        if shape["cls"] == CIRCLE:
            t = np.linspace(0, 2 * np.pi, 4000, endpoint=False)     # a fine polygon: within 1e-6 r of the circle
            path = Path(np.stack([shape["center"][0] + shape["radius"] * np.cos(t),
                                  shape["center"][1] + shape["radius"] * np.sin(t)], axis=1))
        else:
            path = Path(np.asarray(shape["vertices"]))
        mask[path.contains_points(points)] = shape["cls"]
    return mask.reshape(h, w)


@pytest.mark.parametrize("size", [64, (40, 72)])
def test_masks_are_where_the_shapes_are(size):
    ds = ShapesDataset(30, image_size=size, seed=7, noise=0.0, texture=False)
    for i in range(len(ds)):
        _, mask = ds[i]
        spec = ds.spec(i)
        expected = reference_mask(spec, ds.height, ds.width)
        # the reference circle is a polygon, so pixel centres that graze a circle's rim
        # may go either way; every other pixel must agree
        ys, xs = np.nonzero(mask != expected)
        for y, x in zip(ys + 0.5, xs + 0.5):
            rim = [abs(np.hypot(x - s["center"][0], y - s["center"][1]) - s["radius"])
                   for s in spec["shapes"] if s["cls"] == CIRCLE]
            assert rim and min(rim) < 1e-3, (i, y, x)


def test_image_is_painted_where_the_mask_says():
    """With flat colours, a pixel of class k shows the colour of a class-k shape and a
    background pixel the background colour: the mask is aligned with the image."""
    ds = ShapesDataset(20, image_size=32, seed=3, noise=0.0, texture=False)
    for i in range(len(ds)):
        image, mask = ds[i]
        spec = ds.spec(i)
        pixels = image.reshape(3, -1).T
        labels = mask.ravel()
        np.testing.assert_allclose(pixels[labels == 0], np.broadcast_to(spec["background"]["colors"][0],
                                                                        pixels[labels == 0].shape), atol=1e-6)
        for k in range(1, 4):
            colours = np.array([s["color"] for s in spec["shapes"] if s["cls"] == k]).reshape(-1, 3)
            if (labels == k).any():
                dist = np.abs(pixels[labels == k][:, None, :] - colours[None]).max(axis=2).min(axis=1)
                assert dist.max() < 1e-6


def test_classes_balanced_enough_and_colour_is_not_the_answer():
    ds = ShapesDataset(60, image_size=32, seed=11)
    masks = np.stack([ds[i][1] for i in range(len(ds))])
    share = np.bincount(masks.ravel(), minlength=4) / masks.size
    assert 0.6 < share[0] < 0.95 and (share[1:] > 0.02).all()
    # mean shape colour per class is about the same: colour does not give the class away
    colours = {k: [] for k in (1, 2, 3)}
    for i in range(len(ds)):
        for s in ds.spec(i)["shapes"]:
            colours[s["cls"]].append(s["color"])
    means = np.array([np.mean(colours[k], axis=0) for k in (1, 2, 3)])
    assert np.abs(means - means.mean(axis=0)).max() < 0.15
