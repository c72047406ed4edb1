"""Paired transforms move image and mask together.

The check that they stay aligned: write the mask into an extra image channel,
transform, and compare that channel with the transformed mask.
"""
import numpy as np
import pytest
from hypothesis import given, strategies as st

from gradflow.data import transforms as T


def sample(h=11, w=13, seed=0):
    """An image whose channel 0 *is* the mask (class ids as floats), plus that mask."""
    rng = np.random.default_rng(seed)
    mask = rng.integers(0, 4, size=(h, w)).astype(np.int64)
    image = np.stack([mask.astype(np.float32), rng.random((h, w), dtype=np.float32)])
    return image, mask


def assert_aligned(image, mask):
    assert image.shape[1:] == mask.shape
    np.testing.assert_array_equal(image[0], mask.astype(np.float32))


@pytest.mark.parametrize("flip, axis", [(T.RandomHorizontalFlip(p=1.0), 1), (T.RandomVerticalFlip(p=1.0), 0)])
def test_flip_p1_flips_both(flip, axis):
    image, mask = sample()
    out_image, out_mask = flip(image, mask, np.random.default_rng(0))
    np.testing.assert_array_equal(out_mask, np.flip(mask, axis))
    np.testing.assert_array_equal(out_image[1], np.flip(image[1], axis))
    assert_aligned(out_image, out_mask)


@pytest.mark.parametrize("flip", [T.RandomHorizontalFlip(p=0.0), T.RandomVerticalFlip(p=0.0)])
def test_flip_p0_is_identity(flip):
    image, mask = sample()
    out_image, out_mask = flip(image, mask, np.random.default_rng(0))
    np.testing.assert_array_equal(out_image, image)
    np.testing.assert_array_equal(out_mask, mask)


def test_flip_half_the_time():
    image, mask = sample()
    flip = T.RandomHorizontalFlip()
    flipped = sum(not np.array_equal(flip(image, mask, np.random.default_rng(s))[1], mask) for s in range(200))
    assert 60 < flipped < 140


@given(h=st.integers(1, 12), w=st.integers(1, 12), ch=st.integers(1, 12), cw=st.integers(1, 12),
       seed=st.integers(0, 2 ** 16))
def test_crop_with_padding_stays_aligned(h, w, ch, cw, seed):
    image, mask = sample(h, w, seed)
    crop = T.RandomCrop((ch, cw), pad_if_needed=True, fill=255.0, mask_fill=255)   # same fill: channel 0 == mask
    out_image, out_mask = crop(image, mask, np.random.default_rng(seed))
    assert out_image.shape == (2, ch, cw) and out_mask.shape == (ch, cw)
    assert_aligned(out_image, out_mask)
    # the un-padded part is a window of the original
    assert (out_mask != 255).sum() == min(h, ch) * min(w, cw)


def test_crop_is_a_window_of_the_original():
    image, mask = sample(10, 10)
    out_image, out_mask = T.RandomCrop(4)(image, mask, np.random.default_rng(3))
    hits = [(t, l) for t in range(7) for l in range(7) if np.array_equal(mask[t:t + 4, l:l + 4], out_mask)
            and np.array_equal(image[:, t:t + 4, l:l + 4], out_image)]
    assert hits


def test_crop_padding_uses_ignore_for_mask():
    image, mask = sample(2, 2)
    out_image, out_mask = T.RandomCrop(4, pad_if_needed=True)(image, mask, np.random.default_rng(0))
    assert (out_mask == 255).sum() == 12 and (out_image[1][out_mask == 255] == 0).all()


def test_crop_too_small_without_padding_raises():
    image, mask = sample(3, 3)
    with pytest.raises(ValueError, match="pad_if_needed"):
        T.RandomCrop(4)(image, mask, np.random.default_rng(0))


def stripe_sample(axis, stripes=6, width=5, seed=0):
    """Binary mask of ``width``-pixel stripes across ``axis``, encoded in channel 0.

    For a label edge along one axis, round(bilinear) and nearest-exact resizing
    pick the same side of the edge (both put it half-way between the two source
    pixel centres), so the encoded channel must match the mask exactly; a
    misaligned mask (off by a pixel, or a different grid convention) would not.
    """
    labels = np.random.default_rng(seed).integers(0, 2, size=stripes)
    labels[:2] = (0, 1)                               # at least one edge
    line = np.repeat(labels, width)
    mask = np.tile(line[:, None] if axis == 0 else line[None, :], (1, 23) if axis == 0 else (23, 1))
    return np.stack([mask.astype(np.float32), np.ones_like(mask, dtype=np.float32)]), mask.astype(np.int64)


def assert_encoded(image, mask):
    """Channel 0 rounds to the mask everywhere except exact ties (a pixel centre
    exactly on a source edge, bilinear value 0.5), which either side may take."""
    assert image.shape[1:] == mask.shape
    decided = np.abs(image[0] - 0.5) > 1e-4
    np.testing.assert_array_equal(np.round(image[0])[decided], mask[decided].astype(np.float32))
    assert decided.mean() > 0.5


@given(seed=st.integers(0, 2 ** 16), low=st.floats(0.3, 3.0), axis=st.sampled_from([0, 1]))
def test_scale_keeps_image_and_mask_aligned(seed, low, axis):
    image, mask = stripe_sample(axis, seed=seed)
    out_image, out_mask = T.RandomScale((low, low * 1.5))(image, mask, np.random.default_rng(seed))
    s = out_mask.shape[0] / mask.shape[0]
    assert low - 0.1 <= s <= low * 1.5 + 0.1
    assert_encoded(out_image, out_mask)
    np.testing.assert_allclose(out_image[1], 1.0, atol=1e-6)     # a constant channel stays constant
    assert set(np.unique(out_mask)) <= set(np.unique(mask))      # nearest never invents labels


@pytest.mark.parametrize("axis", [0, 1])
def test_compose_pipeline_keeps_alignment_and_is_seeded(axis):
    pipeline = T.Compose([T.RandomScale((0.6, 1.6)), T.RandomCrop(40, pad_if_needed=True, fill=255.0),
                          T.RandomHorizontalFlip(), T.RandomVerticalFlip()])
    image, mask = stripe_sample(axis)
    outcomes = set()
    for seed in range(20):
        a = pipeline(image, mask, np.random.default_rng(seed))
        b = pipeline(image, mask, np.random.default_rng(seed))
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
        assert a[0].shape == (2, 40, 40)
        assert_encoded(*a)
        outcomes.add(a[1].tobytes())
    assert len(outcomes) > 10     # different seeds, different augmentations


def test_normalize_and_resize():
    image = np.stack([np.full((2, 2), 0.5, np.float32), np.full((2, 2), 1.0, np.float32)])
    mask = np.array([[0, 1], [2, 255]])
    out_image, out_mask = T.Normalize([0.5, 0.0], [0.25, 2.0])(image, mask, None)
    np.testing.assert_allclose(out_image[0], 0.0)
    np.testing.assert_allclose(out_image[1], 0.5)
    assert out_image.dtype == np.float32 and out_mask is mask
    with pytest.raises(ValueError, match="non-zero"):
        T.Normalize([0.0], [0.0])
    out_image, out_mask = T.Resize(4)(image, mask)
    assert out_image.shape == (2, 4, 4)
    np.testing.assert_array_equal(out_mask, np.kron(mask, np.ones((2, 2), dtype=np.int64)))


# ---- 90-degree and small rotations ----------------------------------------------------------------
@pytest.mark.parametrize("k", [0, 1, 2, 3])
def test_rotation90_turns_image_and_mask_together(k):
    image, mask = sample(9, 9)
    seeds = [s for s in range(50) if np.array_equal(T.RandomRotation90()(image, mask, np.random.default_rng(s))[1],
                                                    np.rot90(mask, k))]
    assert len(seeds) > 5                                             # every quarter turn is drawn
    out_image, out_mask = T.RandomRotation90()(image, mask, np.random.default_rng(seeds[0]))
    np.testing.assert_array_equal(out_image[1], np.rot90(image[1], k))
    assert_aligned(out_image, out_mask)


def test_rotation90_keeps_the_shape_of_non_square_samples():
    image, mask = sample(6, 10)
    turned = 0
    for seed in range(40):
        out_image, out_mask = T.RandomRotation90()(image, mask, np.random.default_rng(seed))
        assert out_image.shape == image.shape and out_mask.shape == mask.shape
        assert_aligned(out_image, out_mask)
        turned += np.array_equal(out_mask, mask[::-1, ::-1])
    assert 10 < turned < 30                                           # half of them turned 180 degrees


@pytest.mark.parametrize("interpolation", ["nearest", "bilinear"])
def test_rotation_by_90_degrees_is_rot90(interpolation):
    """Counter-clockwise about the centre, like np.rot90 (and torchvision's positive angles)."""
    image, mask = sample(7, 7)
    out_image, out_mask = T.RandomRotation((90, 90), interpolation=interpolation)(image, mask,
                                                                                  np.random.default_rng(0))
    np.testing.assert_array_equal(out_mask, np.rot90(mask))
    np.testing.assert_allclose(out_image, np.rot90(image, axes=(1, 2)), atol=1e-5)


@given(seed=st.integers(0, 2 ** 16), degrees=st.floats(1, 30))
def test_nearest_rotation_moves_mask_and_image_alike(seed, degrees):
    image, mask = sample(12, 15, seed)
    rotate = T.RandomRotation(degrees, interpolation="nearest", fill=255.0)   # fill = mask_fill: channel 0 == mask
    out_image, out_mask = rotate(image, mask, np.random.default_rng(seed))
    assert_aligned(out_image, out_mask)
    assert set(np.unique(out_mask)) <= set(np.unique(mask)) | {255}


@given(seed=st.integers(0, 2 ** 16), degrees=st.floats(2, 20), axis=st.sampled_from([0, 1]))
def test_bilinear_rotation_keeps_the_nearest_mask_aligned(seed, degrees, axis):
    """Stripes are edges along one source axis, so round(bilinear) and nearest agree on every pixel
    whose source taps all lie inside the image (the constant channel 1 is exactly 1 there)."""
    image, mask = stripe_sample(axis, seed=seed)
    out_image, out_mask = T.RandomRotation(degrees)(image, mask, np.random.default_rng(seed))
    inside = (out_image[1] == 1.0) & (out_mask != 255)
    assert inside.mean() > 0.5
    decided = inside & (np.abs(out_image[0] - 0.5) > 1e-4)
    np.testing.assert_array_equal(np.round(out_image[0])[decided], out_mask[decided].astype(np.float32))
    assert (out_image[1][out_mask == 255] < 1).all()                  # ignored pixels are the made-up corners


def test_rotation_corners_come_from_outside_and_are_ignored():
    image, mask = sample(9, 9)
    out_image, out_mask = T.RandomRotation((45, 45), fill=0.5)(image, mask, np.random.default_rng(0))
    corners = (np.array([0, 0, -1, -1]), np.array([0, -1, 0, -1]))
    assert (out_mask[corners] == 255).all() and (out_image[1][corners] == 0.5).all()
    assert (out_mask[4, 4] == mask[4, 4]) and out_image[1][4, 4] == image[1][4, 4]   # the centre stays


def test_rotation_angle_is_drawn_from_the_range():
    image, mask = sample(9, 9)
    outcomes = {T.RandomRotation(20)(image, mask, np.random.default_rng(s))[1].tobytes() for s in range(20)}
    assert len(outcomes) > 10
    with pytest.raises(ValueError, match="low <= high"):
        T.RandomRotation((10, -10))
    with pytest.raises(ValueError, match="interpolation"):
        T.RandomRotation(10, interpolation="cubic")


# ---- colour jitter ---------------------------------------------------------------------------------
def rgb_sample(seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((3, 8, 9), dtype=np.float32), rng.integers(0, 3, size=(8, 9))


def test_color_jitter_changes_the_image_only():
    image, mask = rgb_sample()
    jitter = T.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1)
    out_image, out_mask = jitter(image, mask, np.random.default_rng(1))
    assert out_mask is mask
    assert out_image.shape == image.shape and out_image.dtype == np.float32
    assert not np.allclose(out_image, image) and 0 <= out_image.min() and out_image.max() <= 1
    again, _ = jitter(image, mask, np.random.default_rng(1))
    np.testing.assert_array_equal(out_image, again)                   # seeded: resume sees the same samples
    np.testing.assert_array_equal(T.ColorJitter()(image, mask, np.random.default_rng(1))[0], image)


def test_color_adjustments_follow_their_definitions():
    from gradflow.data import functional as DF
    image, _ = rgb_sample(2)
    np.testing.assert_allclose(DF.adjust_brightness(image, 0.5), image * 0.5, rtol=1e-6)
    np.testing.assert_allclose(DF.adjust_brightness(image, 3.0), np.clip(image * 3, 0, 1), rtol=1e-6)
    grey = 0.299 * image[0] + 0.587 * image[1] + 0.114 * image[2]
    np.testing.assert_allclose(DF.adjust_saturation(image, 0.0), np.broadcast_to(grey, image.shape), rtol=1e-5)
    np.testing.assert_allclose(DF.adjust_contrast(image, 0.0), np.full(image.shape, grey.mean()), rtol=1e-5)
    np.testing.assert_allclose(DF.adjust_contrast(image, 0.5), 0.5 * image + 0.5 * grey.mean(), rtol=1e-5)


@pytest.mark.parametrize("shift", [0.0, 0.1, -0.25, 0.5])
def test_hue_shift_matches_colorsys(shift):
    import colorsys
    image, _ = rgb_sample(3)
    out = DF_adjust_hue(image, shift)
    for y, x in [(0, 0), (3, 4), (7, 8), (5, 1)]:
        h, s, v = colorsys.rgb_to_hsv(*image[:, y, x].astype(np.float64))
        expected = colorsys.hsv_to_rgb((h + shift) % 1.0, s, v)
        np.testing.assert_allclose(out[:, y, x], expected, atol=1e-6)


def DF_adjust_hue(image, shift):
    from gradflow.data import functional as DF
    return DF.adjust_hue(image, shift)


def test_color_jitter_arguments_are_checked():
    with pytest.raises(ValueError, match="brightness must be non-negative"):
        T.ColorJitter(brightness=-0.1)
    with pytest.raises(ValueError, match="hue range"):
        T.ColorJitter(hue=0.7)
    grey = np.random.default_rng(0).random((1, 4, 4), dtype=np.float32)
    out, _ = T.ColorJitter(saturation=0.5, hue=0.3)(grey, np.zeros((4, 4), np.int64), np.random.default_rng(0))
    np.testing.assert_array_equal(out, grey)                          # 1-channel: saturation and hue do nothing
