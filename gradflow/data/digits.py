"""DigitsDataset: scikit-learn's bundled 8x8 digits composited on noisy canvases.

The glyphs ship inside scikit-learn (``sklearn.datasets.load_digits``), so nothing
is downloaded. Each sample has 1-3 upscaled digits, possibly overlapping, on a
textured background; the mask labels a pixel d+1 where digit d's ink covers it
(0 is background), 11 classes in all.
"""
import functools

import numpy as np

from gradflow.data import _canvas
from gradflow.data.dataset import Dataset, check_index
from gradflow.data.functional import resize_image

CLASS_NAMES = ("background",) + tuple(str(d) for d in range(10))
GLYPH_SPLITS = ("all", "train", "val")


@functools.lru_cache(maxsize=1)
def load_glyphs():
    """(images (1797, 8, 8) float32 ink in [0, 1], labels (1797,) int64) from scikit-learn."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:   # scikit-learn is in the [data] extra, not a core dependency
        raise ImportError("DigitsDataset needs scikit-learn: pip install gradflow[data]") from exc
    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)
    images.flags.writeable = False
    return images, digits.target.astype(np.int64)


class DigitsDataset(Dataset):
    """``n`` RGB images (3, H, W) in [0, 1] with 11-class masks (0 background, digit d -> d + 1).

    ``glyphs`` picks which of scikit-learn's 1797 handwritten glyphs may appear:
    "all", or the disjoint "train" (4/5) and "val" (1/5) pools, so validation
    images show handwriting the model never trained on. A pixel is labelled
    with a digit where its upscaled ink exceeds ``threshold``; later digits
    cover earlier ones. Deterministic per ``(seed, index)`` like ShapesDataset.
    """

    num_classes = len(CLASS_NAMES)
    class_names = CLASS_NAMES

    def __init__(self, n, image_size=64, seed=0, min_digits=1, max_digits=3, noise=0.05, texture=True,
                 glyphs="all", size_range=(0.35, 0.6), threshold=0.5, min_contrast=0.35):
        if n < 0:
            raise ValueError(f"n must be non-negative, got {n}")
        if not 0 <= min_digits <= max_digits:
            raise ValueError(f"need 0 <= min_digits <= max_digits, got {min_digits}, {max_digits}")
        if glyphs not in GLYPH_SPLITS:
            raise ValueError(f"glyphs must be one of {GLYPH_SPLITS}, got {glyphs!r}")
        self.n = int(n)
        self.height, self.width = _canvas.image_hw(image_size)
        self.seed = _canvas.seed_entropy(seed)
        self.min_digits, self.max_digits = int(min_digits), int(max_digits)
        self.noise = float(noise)
        self.texture = bool(texture)
        self.glyphs = glyphs
        self.size_range = tuple(size_range)
        self.threshold = float(threshold)
        self.min_contrast = float(min_contrast)
        every = np.arange(len(load_glyphs()[1]))
        self.glyph_pool = {"all": every, "train": every[every % 5 != 0], "val": every[every % 5 == 0]}[glyphs]

    def __len__(self):
        return self.n

    def _rng(self, index):
        return np.random.default_rng(self.seed + (check_index(index, self.n),))

    def spec(self, index, rng=None):
        """Background parameters and a list of digits ``{"glyph", "digit", "top", "left", "size", "color"}``."""
        rng = self._rng(index) if rng is None else rng
        h, w = self.height, self.width
        labels = load_glyphs()[1]
        background = _canvas.draw_background_spec(rng)
        digits = []
        for _ in range(int(rng.integers(self.min_digits, self.max_digits + 1))):
            glyph = int(self.glyph_pool[rng.integers(len(self.glyph_pool))])
            size = max(4, int(round(rng.uniform(*self.size_range) * min(h, w))))
            top = int(rng.integers(0, h - size + 1))
            left = int(rng.integers(0, w - size + 1))
            color = _canvas.pick_contrasting_color(rng, background["colors"], self.min_contrast)
            digits.append({"glyph": glyph, "digit": int(labels[glyph]), "top": top, "left": left,
                           "size": size, "color": color})
        return {"background": background, "digits": digits}

    def ink(self, digit):
        """The upscaled ink (alpha) of one digit spec, (size, size) in [0, 1]."""
        glyph = load_glyphs()[0][digit["glyph"]]
        return resize_image(glyph[None], digit["size"])[0]

    def __getitem__(self, index):
        rng = self._rng(index)
        spec = self.spec(index, rng)
        h, w = self.height, self.width
        image = _canvas.render_background(spec["background"], h, w, self.texture)
        mask = np.zeros((h, w), dtype=np.int64)
        for digit in spec["digits"]:
            alpha = self.ink(digit)
            rows = slice(digit["top"], digit["top"] + digit["size"])
            cols = slice(digit["left"], digit["left"] + digit["size"])
            region = image[:, rows, cols]
            image[:, rows, cols] = region * (1 - alpha) + digit["color"][:, None, None] * alpha
            mask[rows, cols][alpha > self.threshold] = digit["digit"] + 1
        return _canvas.add_noise(image, rng, self.noise), mask
