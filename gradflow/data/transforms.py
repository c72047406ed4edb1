"""Paired transforms: each acts identically on an image and its mask.

Every transform is called as ``transform(image, mask, rng)`` with numpy arrays
(image float32 (C, H, W), mask int64 (H, W)) and a ``numpy.random.Generator``,
and returns the new ``(image, mask)``. Taking the generator as an argument
(rather than drawing from a global) is what makes augmentation reproducible: the
DataLoader hands each sample a generator seeded from (seed, epoch, index).
"""
import numpy as np

from gradflow.data import functional as DF
from gradflow.data.dataset import IGNORE_INDEX


class Compose:
    """Apply transforms in order, all drawing from the same generator."""

    def __init__(self, transforms):
        self.transforms = list(transforms)

    def __call__(self, image, mask, rng):
        for t in self.transforms:
            image, mask = t(image, mask, rng)
        return image, mask

    def __repr__(self):
        return "Compose([" + ", ".join(repr(t) for t in self.transforms) + "])"


class RandomHorizontalFlip:
    def __init__(self, p=0.5):
        self.p = p

    def __call__(self, image, mask, rng):
        return DF.hflip(image, mask) if rng.random() < self.p else (image, mask)

    def __repr__(self):
        return f"RandomHorizontalFlip(p={self.p})"


class RandomVerticalFlip:
    def __init__(self, p=0.5):
        self.p = p

    def __call__(self, image, mask, rng):
        return DF.vflip(image, mask) if rng.random() < self.p else (image, mask)

    def __repr__(self):
        return f"RandomVerticalFlip(p={self.p})"


class RandomCrop:
    """Crop a random ``size`` window (int or (h, w)).

    With ``pad_if_needed`` an image smaller than the window is first padded on
    both sides (image with ``fill``, mask with ``mask_fill``, 255 = ignore), so
    random scaling followed by a crop always yields batchable sizes.
    """

    def __init__(self, size, pad_if_needed=False, fill=0.0, mask_fill=IGNORE_INDEX):
        self.size = DF._size(size)
        self.pad_if_needed = pad_if_needed
        self.fill = fill
        self.mask_fill = mask_fill

    def __call__(self, image, mask, rng):
        th, tw = self.size
        _, h, w = image.shape
        if h < th or w < tw:
            if not self.pad_if_needed:
                raise ValueError(f"RandomCrop{self.size}: sample is {h}x{w}; pass pad_if_needed=True to pad it")
            dh, dw = max(th - h, 0), max(tw - w, 0)
            image, mask = DF.pad(image, mask, dh // 2, dh - dh // 2, dw // 2, dw - dw // 2,
                                 self.fill, self.mask_fill)
            _, h, w = image.shape
        top = int(rng.integers(0, h - th + 1))
        left = int(rng.integers(0, w - tw + 1))
        return DF.crop(image, mask, top, left, th, tw)

    def __repr__(self):
        return f"RandomCrop(size={self.size}, pad_if_needed={self.pad_if_needed})"


class RandomScale:
    """Rescale by a factor drawn uniformly from ``scale_range`` (bilinear image, nearest mask).

    The output size changes, so follow it with RandomCrop(..., pad_if_needed=True)
    before batching.
    """

    def __init__(self, scale_range=(0.5, 2.0)):
        lo, hi = scale_range
        if not 0 < lo <= hi:
            raise ValueError(f"scale_range must satisfy 0 < low <= high, got {scale_range}")
        self.scale_range = (float(lo), float(hi))

    def __call__(self, image, mask, rng):
        s = rng.uniform(*self.scale_range)
        _, h, w = image.shape
        size = (max(1, int(round(h * s))), max(1, int(round(w * s))))
        return DF.resize_image(image, size), DF.resize_mask(mask, size)

    def __repr__(self):
        return f"RandomScale(scale_range={self.scale_range})"


class Resize:
    """Deterministic resize to ``size`` (int or (h, w)); for data of mixed sizes."""

    def __init__(self, size):
        self.size = DF._size(size)

    def __call__(self, image, mask, rng=None):
        return DF.resize_image(image, self.size), DF.resize_mask(mask, self.size)

    def __repr__(self):
        return f"Resize(size={self.size})"


class Normalize:
    """``(image - mean) / std`` per channel; the mask passes through unchanged."""

    def __init__(self, mean, std):
        self.mean = np.asarray(mean, dtype=np.float32).reshape(-1, 1, 1)
        self.std = np.asarray(std, dtype=np.float32).reshape(-1, 1, 1)
        if np.any(self.std == 0):
            raise ValueError(f"Normalize std must be non-zero, got {std}")

    def __call__(self, image, mask, rng=None):
        return ((image - self.mean) / self.std).astype(np.float32, copy=False), mask

    def __repr__(self):
        return f"Normalize(mean={self.mean.ravel().tolist()}, std={self.std.ravel().tolist()})"


class RandomRotation90:
    """Rotate by a random number of quarter turns (0-3, uniform), image and mask alike.

    A non-square sample only gets 0 or 2 quarter turns, so it keeps its shape and
    still batches with the others.
    """

    def __call__(self, image, mask, rng):
        square = image.shape[1] == image.shape[2]
        k = int(rng.integers(0, 4)) if square else 2 * int(rng.integers(0, 2))
        return DF.rot90(image, mask, k) if k else (image, mask)

    def __repr__(self):
        return "RandomRotation90()"


class RandomRotation:
    """Rotate by an angle drawn uniformly from ``degrees`` (d: [-d, d]; or (low, high)), counter-clockwise.

    The image is resampled bilinearly (or ``interpolation="nearest"``), the mask by
    nearest neighbour so labels are never blended; corners that come from outside
    the image get ``fill`` and, in the mask, ``mask_fill`` (255 = ignore).
    """

    def __init__(self, degrees, interpolation="bilinear", fill=0.0, mask_fill=IGNORE_INDEX):
        if isinstance(degrees, (int, float)):
            if degrees < 0:
                raise ValueError(f"degrees must be non-negative when a single number, got {degrees}")
            degrees = (-degrees, degrees)
        low, high = degrees
        if low > high:
            raise ValueError(f"degrees must be (low, high) with low <= high, got {degrees}")
        if interpolation not in ("bilinear", "nearest"):
            raise ValueError(f"interpolation must be 'bilinear' or 'nearest', got {interpolation!r}")
        self.degrees = (float(low), float(high))
        self.interpolation, self.fill, self.mask_fill = interpolation, fill, mask_fill

    def __call__(self, image, mask, rng):
        angle = rng.uniform(*self.degrees)
        return DF.rotate(image, mask, angle, self.interpolation, self.fill, self.mask_fill)

    def __repr__(self):
        return f"RandomRotation(degrees={self.degrees}, interpolation={self.interpolation!r})"


def _jitter_range(value, name, center=1.0, bound=None):
    """torchvision's ColorJitter arguments: v -> [center - v, center + v] (clipped at 0), or (low, high)."""
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError(f"{name} must be non-negative, got {value}")
        low, high = center - value, center + value
        if center == 1.0:
            low = max(low, 0.0)
    else:
        low, high = value
    if low > high or (bound is not None and not (bound[0] <= low and high <= bound[1])):
        raise ValueError(f"{name} range {(low, high)} is invalid" + (f"; it must lie in {bound}" if bound else ""))
    return None if low == high == center else (float(low), float(high))


class ColorJitter:
    """Random brightness, contrast, saturation and hue, in a random order; the image only.

    As torchvision.transforms.ColorJitter: each factor is drawn uniformly from
    [max(0, 1 - v), 1 + v] (hue: a shift in [-v, v] turns, v <= 0.5), or from a
    given (low, high). Images are float in [0, 1] and stay so. Saturation and hue
    leave 1-channel images unchanged.
    """

    def __init__(self, brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0):
        self.brightness = _jitter_range(brightness, "brightness")
        self.contrast = _jitter_range(contrast, "contrast")
        self.saturation = _jitter_range(saturation, "saturation")
        self.hue = _jitter_range(hue, "hue", center=0.0, bound=(-0.5, 0.5))

    def __call__(self, image, mask, rng):
        adjust = ((self.brightness, DF.adjust_brightness), (self.contrast, DF.adjust_contrast),
                  (self.saturation, DF.adjust_saturation), (self.hue, DF.adjust_hue))
        for index in rng.permutation(4):
            bounds, function = adjust[index]
            if bounds is not None:
                image = function(image, rng.uniform(*bounds))
        return image, mask

    def __repr__(self):
        return (f"ColorJitter(brightness={self.brightness}, contrast={self.contrast}, "
                f"saturation={self.saturation}, hue={self.hue})")
