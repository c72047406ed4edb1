"""Array-level image/mask operations shared by transforms and datasets.

Images are float (C, H, W), masks integer (H, W). Images resize bilinearly and
masks by nearest neighbour, both on the same half-pixel grid (pixel centres at
``i + 0.5``), so a resized mask stays aligned with its resized image.
"""
import numpy as np

from gradflow.data.dataset import IGNORE_INDEX


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


def pad(image, mask, top, bottom, left, right, fill=0.0, mask_fill=IGNORE_INDEX):
    """Constant padding; the mask is padded with ``mask_fill`` (255 = ignore) so the
    loss never trains on made-up border pixels."""
    image = np.pad(image, ((0, 0), (top, bottom), (left, right)), constant_values=fill)
    mask = np.pad(mask, ((top, bottom), (left, right)), constant_values=mask_fill)
    return image, mask


def crop(image, mask, top, left, height, width):
    return image[:, top:top + height, left:left + width], mask[top:top + height, left:left + width]


def rot90(image, mask, k):
    """Rotate both by ``k`` quarter turns counter-clockwise (as np.rot90 on the (H, W) axes)."""
    return np.rot90(image, k, axes=(1, 2)), np.rot90(mask, k)


def rotate(image, mask, angle, interpolation="bilinear", fill=0.0, mask_fill=IGNORE_INDEX):
    """Rotate both by ``angle`` degrees counter-clockwise about the image centre, keeping the size.

    Every output pixel reads the source point it came from: the image bilinearly (or by
    ``interpolation="nearest"``), the mask always from the nearest source pixel, so labels are
    never blended. Source points outside the image give ``fill`` (image) and ``mask_fill``
    (mask; 255 = ignore, so the loss never trains on the made-up corners).
    """
    if interpolation not in ("bilinear", "nearest"):
        raise ValueError(f"interpolation must be 'bilinear' or 'nearest', got {interpolation!r}")
    _, h, w = image.shape
    theta = np.deg2rad(float(angle))
    cos, sin = np.cos(theta), np.sin(theta)
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    dy, dx = np.meshgrid(np.arange(h) - cy, np.arange(w) - cx, indexing="ij")
    src_x = cx + dx * cos - dy * sin      # the inverse rotation of each output pixel centre
    src_y = cy + dx * sin + dy * cos
    near_y, near_x = np.floor(src_y + 0.5).astype(np.intp), np.floor(src_x + 0.5).astype(np.intp)
    inside = (near_y >= 0) & (near_y < h) & (near_x >= 0) & (near_x < w)
    out_mask = np.full(mask.shape, mask_fill, dtype=mask.dtype)
    out_mask[inside] = mask[near_y[inside], near_x[inside]]
    if interpolation == "nearest":
        out_image = np.full(image.shape, fill, dtype=np.float32)
        out_image[:, inside] = image[:, near_y[inside], near_x[inside]]
        return out_image, out_mask
    padded = np.pad(image.astype(np.float32, copy=False), ((0, 0), (1, 1), (1, 1)), constant_values=fill)
    # taps outside the image read the fill border; clip so far-away points read it too
    y0 = np.clip(np.floor(src_y), -1, h).astype(np.intp)
    x0 = np.clip(np.floor(src_x), -1, w).astype(np.intp)
    fy = np.clip(src_y - y0, 0, 1).astype(np.float32)
    fx = np.clip(src_x - x0, 0, 1).astype(np.float32)
    y1, x1 = np.minimum(y0 + 1, h) + 1, np.minimum(x0 + 1, w) + 1
    y0, x0 = y0 + 1, x0 + 1
    top = padded[:, y0, x0] * (1 - fx) + padded[:, y0, x1] * fx
    bottom = padded[:, y1, x0] * (1 - fx) + padded[:, y1, x1] * fx
    return (top * (1 - fy) + bottom * fy).astype(np.float32), out_mask


# ---- colour (image only; images are float in [0, 1], as torchvision's float tensors) -------------
def _grayscale(image):
    """ITU-R 601-2 luma of an RGB image, (1, H, W), as torchvision's rgb_to_grayscale."""
    return (0.299 * image[0] + 0.587 * image[1] + 0.114 * image[2])[None].astype(np.float32)


def _blend(image, other, ratio):
    return np.clip(ratio * image + (1.0 - ratio) * other, 0.0, 1.0).astype(np.float32)


def adjust_brightness(image, factor):
    """``factor`` times the image (0: black, 1: unchanged), clipped to [0, 1]."""
    return _blend(image, np.zeros_like(image), factor)


def adjust_contrast(image, factor):
    """Blend with the mean grey level (0: flat grey, 1: unchanged)."""
    mean = _grayscale(image).mean() if image.shape[0] == 3 else image.mean()
    return _blend(image, np.full_like(image, mean), factor)


def adjust_saturation(image, factor):
    """Blend with the image's greyscale (0: grey, 1: unchanged); a 1-channel image is returned as is."""
    return image if image.shape[0] == 1 else _blend(image, _grayscale(image), factor)


def adjust_hue(image, shift):
    """Rotate the hue by ``shift`` turns (in [-0.5, 0.5]) in HSV space; a 1-channel image is returned as is."""
    if not -0.5 <= shift <= 0.5:
        raise ValueError(f"hue shift must be in [-0.5, 0.5], got {shift}")
    if image.shape[0] == 1:
        return image
    r, g, b = np.clip(image, 0.0, 1.0).astype(np.float64)
    value = np.maximum(np.maximum(r, g), b)
    chroma = value - np.minimum(np.minimum(r, g), b)
    safe = np.where(chroma > 0, chroma, 1.0)
    hue = np.where(value == r, ((g - b) / safe) % 6, np.where(value == g, (b - r) / safe + 2, (r - g) / safe + 4))
    hue = np.where(chroma > 0, hue / 6.0, 0.0)
    saturation = np.where(value > 0, chroma / np.where(value > 0, value, 1.0), 0.0)
    hue = (hue + shift) % 1.0
    # HSV -> RGB: each channel is value - chroma * clip(min(k, 4 - k), 0, 1) with k = (n + 6 h) mod 6
    chroma = value * saturation
    channels = []
    for n in (5, 3, 1):
        k = (n + hue * 6.0) % 6
        channels.append(value - chroma * np.clip(np.minimum(k, 4 - k), 0, 1))
    return np.stack(channels).astype(np.float32)
