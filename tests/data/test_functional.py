"""Resizing matches PyTorch's F.interpolate (bilinear, align_corners=False / nearest-exact)."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

from gradflow.data import functional as DF

torch = pytest.importorskip("torch")

sizes = st.integers(1, 12)


@given(in_h=sizes, in_w=sizes, out_h=sizes, out_w=sizes, seed=st.integers(0, 2 ** 16))
def test_resize_image_matches_torch_bilinear(in_h, in_w, out_h, out_w, seed):
    image = np.random.default_rng(seed).random((2, in_h, in_w)).astype(np.float32)
    expected = torch.nn.functional.interpolate(torch.from_numpy(image)[None], size=(out_h, out_w),
                                               mode="bilinear", align_corners=False)[0].numpy()
    got = DF.resize_image(image, (out_h, out_w))
    assert got.dtype == np.float32 and got.shape == (2, out_h, out_w)
    np.testing.assert_allclose(got, expected, atol=1e-5)


@given(in_h=sizes, in_w=sizes, out_h=sizes, out_w=sizes, seed=st.integers(0, 2 ** 16))
def test_resize_mask_matches_torch_nearest_exact(in_h, in_w, out_h, out_w, seed):
    mask = np.random.default_rng(seed).integers(0, 5, size=(in_h, in_w))
    expected = torch.nn.functional.interpolate(torch.from_numpy(mask)[None, None].double(), size=(out_h, out_w),
                                               mode="nearest-exact")[0, 0].long().numpy()
    got = DF.resize_mask(mask, (out_h, out_w))
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, expected)


def test_resize_rejects_empty_target():
    with pytest.raises(ValueError, match="at least 1x1"):
        DF.resize_image(np.zeros((1, 4, 4), np.float32), (0, 3))
    with pytest.raises(ValueError, match="at least 1x1"):
        DF.resize_mask(np.zeros((4, 4), np.int64), (3, 0))


def test_pad_fills_mask_with_ignore():
    image, mask = DF.pad(np.ones((1, 2, 2), np.float32), np.zeros((2, 2), np.int64), 1, 0, 0, 2)
    assert image.shape == (1, 3, 4) and mask.shape == (3, 4)
    assert (mask[0] == 255).all() and (mask[:, 2:] == 255).all() and (mask[1:, :2] == 0).all()
    assert image[0, 0].sum() == 0 and image[0, 1:, :2].min() == 1
