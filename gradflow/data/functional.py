"""Array-level image/mask operations shared by transforms and datasets.

Images are float (C, H, W), masks integer (H, W). Images resize bilinearly and
masks by nearest neighbour, both on the same half-pixel grid (pixel centres at
``i + 0.5``), so a resized mask stays aligned with its resized image.
"""
import numpy as np


def _size(size):
    """(height, width) from an int or a pair."""
    if isinstance(size, (int, np.integer)):
        return int(size), int(size)
    h, w = size
    return int(h), int(w)


def _source_coords(out_len, in_len):
    """Half-pixel source coordinate of each output pixel centre (align_corners=False)."""
    scale = in_len / out_len
    return (np.arange(out_len, dtype=np.float64) + 0.5) * scale - 0.5


def _linear_taps(out_len, in_len):
    src = np.maximum(_source_coords(out_len, in_len), 0.0)     # PyTorch clamps below at 0
    i0 = np.minimum(np.floor(src).astype(np.intp), in_len - 1)
    i1 = np.minimum(i0 + 1, in_len - 1)
    frac = (src - i0).astype(np.float32)
    return i0, i1, frac


def resize_image(image, size):
    """Bilinear resize of a (C, H, W) image, as F.interpolate(mode='bilinear', align_corners=False)."""
    out_h, out_w = _size(size)
    if out_h < 1 or out_w < 1:
        raise ValueError(f"resize target must be at least 1x1, got {out_h}x{out_w}")
    _, in_h, in_w = image.shape
    if (in_h, in_w) == (out_h, out_w):
        return image
    y0, y1, fy = _linear_taps(out_h, in_h)
    x0, x1, fx = _linear_taps(out_w, in_w)
    image = image.astype(np.float32, copy=False)
    rows = image[:, y0, :] * (1 - fy)[:, None] + image[:, y1, :] * fy[:, None]
    return rows[:, :, x0] * (1 - fx) + rows[:, :, x1] * fx


def resize_mask(mask, size):
    """Nearest-neighbour resize of an (H, W) mask, as F.interpolate(mode='nearest-exact').

    'nearest-exact' picks the source pixel whose centre is nearest, so labels stay
    centred on the same places as the bilinearly resized image.
    """
    out_h, out_w = _size(size)
    if out_h < 1 or out_w < 1:
        raise ValueError(f"resize target must be at least 1x1, got {out_h}x{out_w}")
    in_h, in_w = mask.shape
    if (in_h, in_w) == (out_h, out_w):
        return mask
    ys = np.minimum(np.floor((np.arange(out_h) + 0.5) * (in_h / out_h)).astype(np.intp), in_h - 1)
    xs = np.minimum(np.floor((np.arange(out_w) + 0.5) * (in_w / out_w)).astype(np.intp), in_w - 1)
    return mask[ys[:, None], xs[None, :]]


def hflip(image, mask):
    return image[:, :, ::-1], mask[:, ::-1]


def vflip(image, mask):
    return image[:, ::-1, :], mask[::-1, :]


def pad(image, mask, top, bottom, left, right, fill=0.0, mask_fill=255):
    """Constant padding; the mask is padded with ``mask_fill`` (255 = ignore) so the
    loss never trains on made-up border pixels."""
    image = np.pad(image, ((0, 0), (top, bottom), (left, right)), constant_values=fill)
    mask = np.pad(mask, ((top, bottom), (left, right)), constant_values=mask_fill)
    return image, mask


def crop(image, mask, top, left, height, width):
    return image[:, top:top + height, left:left + width], mask[top:top + height, left:left + width]
