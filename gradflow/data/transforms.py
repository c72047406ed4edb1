"""Paired transforms: each acts identically on an image and its mask.

Every transform is called as ``transform(image, mask, rng)`` with numpy arrays
(image float32 (C, H, W), mask int64 (H, W)) and a ``numpy.random.Generator``,
and returns the new ``(image, mask)``. Taking the generator as an argument
(rather than drawing from a global) is what makes augmentation reproducible: the
DataLoader hands each sample a generator seeded from (seed, epoch, index).
"""
import numpy as np

from gradflow.data import functional as DF


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

    def __init__(self, size, pad_if_needed=False, fill=0.0, mask_fill=255):
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
