"""Shared pieces of the synthetic datasets: seeds, pixel grids and textured backgrounds."""
import functools

import numpy as np


def seed_entropy(seed):
    """A dataset seed (int or tuple of non-negative ints) as a tuple, so the per-sample
    generator can be ``default_rng((*seed, index))``: one independent stream per sample."""
    entropy = tuple(int(s) for s in np.atleast_1d(np.asarray(seed, dtype=object)))
    if any(s < 0 for s in entropy):
        raise ValueError(f"seeds must be non-negative integers, got {seed!r}")
    return entropy


def image_hw(image_size):
    """(height, width) from an int or a pair, validated."""
    if isinstance(image_size, (int, np.integer)):
        h = w = int(image_size)
    else:
        h, w = (int(v) for v in image_size)
    if h < 4 or w < 4:
        raise ValueError(f"image_size must be at least 4x4, got {h}x{w}")
    return h, w


@functools.lru_cache(maxsize=8)
def pixel_grid(h, w):
    """Pixel-centre coordinates (x, y), each (H, W) float32; cached per size (read-only)."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32) + 0.5
    x.flags.writeable = False
    y.flags.writeable = False
    return x, y


TEXTURES = ("stripes", "waves", "checker")


def draw_background_spec(rng):
    """Random parameters of a two-colour textured background."""
    return {
        "colors": rng.random((2, 3)).astype(np.float32),
        "texture": TEXTURES[int(rng.integers(len(TEXTURES)))],
        "freq": rng.uniform(1.5, 5.0, size=3),          # cycles per image side
        "angle": rng.uniform(0, np.pi, size=3),
        "phase": rng.uniform(0, 2 * np.pi, size=3),
        "contrast": float(rng.uniform(0.3, 1.0)),
    }


def texture_field(spec, h, w):
    """Blend weight t in [0, 1] (H, W) for the background's texture."""
    x, y = pixel_grid(h, w)
    side = float(min(h, w))

    def wave(k):   # Python-float coefficients keep the float32 grid float32 (NEP 50)
        angle, freq, phase = float(spec["angle"][k]), float(spec["freq"][k]), float(spec["phase"][k])
        k_x, k_y = 2 * np.pi * freq * np.cos(angle) / side, 2 * np.pi * freq * np.sin(angle) / side
        return np.sin(k_x * x + k_y * y + phase)

    kind = spec["texture"]
    if kind == "stripes":
        t = 0.5 + 0.5 * wave(0)
    elif kind == "waves":
        t = 0.5 + (wave(0) + wave(1) + wave(2)) / 6.0
    else:   # soft checkerboard: product of two orthogonal waves, squashed
        freq, phase = [float(f) for f in spec["freq"]], [float(p) for p in spec["phase"]]
        u = np.sin((2 * np.pi * freq[0] / side) * x + phase[0])
        v = np.sin((2 * np.pi * freq[1] / side) * y + phase[1])
        t = 0.5 + 0.5 * np.tanh(4.0 * u * v)
    return (spec["contrast"] * t).astype(np.float32, copy=False)


def render_background(spec, h, w, texture=True):
    """(3, H, W) float32 background: colour a blended towards colour b by the texture."""
    a, b = spec["colors"]
    if not texture:
        return np.broadcast_to(a[:, None, None], (3, h, w)).astype(np.float32)
    t = texture_field(spec, h, w)
    return (a[:, None, None] + (b - a)[:, None, None] * t[None]).astype(np.float32)


def pick_contrasting_color(rng, avoid, min_contrast, tries=16):
    """A random RGB colour at least ``min_contrast`` (Euclidean) from every colour in
    ``avoid``. Colours are otherwise uniform, the same for every class and for
    backgrounds, so colour alone never tells the class: the net has to see shape.
    Always draws ``tries`` candidates, so the stream stays aligned whatever is picked."""
    candidates = rng.random((tries, 3)).astype(np.float32)
    dist = np.linalg.norm(candidates[:, None, :] - np.asarray(avoid)[None, :, :], axis=-1).min(axis=1)
    ok = np.flatnonzero(dist >= min_contrast)
    return candidates[ok[0] if ok.size else int(np.argmax(dist))]


def add_noise(image, rng, sigma):
    """Gaussian pixel noise, then clip to the [0, 1] range of every built-in image."""
    if sigma > 0:
        image = image + sigma * rng.standard_normal(image.shape, dtype=np.float32)
    return np.clip(image, 0.0, 1.0).astype(np.float32, copy=False)
