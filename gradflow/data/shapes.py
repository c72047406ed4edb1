"""ShapesDataset: procedural circles, squares and triangles; needs no download.

Each sample is drawn from its own generator ``default_rng((*seed, index))``, so
sample i is the same whatever order (or process) asks for it. Drawing is
vectorised numpy over a pixel grid: a shape's mask is the set of pixel centres
inside it, and the same boolean array paints the image, so image and mask agree
exactly.
"""
import numpy as np

from gradflow.data import _canvas
from gradflow.data.dataset import Dataset, check_index

CLASS_NAMES = ("background", "circle", "square", "triangle")
CIRCLE, SQUARE, TRIANGLE = 1, 2, 3


def polygon_inside(vertices, x, y):
    """Boolean: pixel centres (x, y) inside (or on) the convex polygon ``vertices`` (K, 2)."""
    v = np.asarray(vertices, dtype=np.float64)
    nxt = np.roll(v, -1, axis=0)
    orientation = float(np.sign(np.sum(v[:, 0] * nxt[:, 1] - nxt[:, 0] * v[:, 1])) or 1.0)
    inside = np.ones(x.shape, dtype=bool)
    for (x0, y0), (x1, y1) in zip(v.tolist(), nxt.tolist()):   # Python floats keep the grid float32
        inside &= orientation * ((x1 - x0) * (y - y0) - (y1 - y0) * (x - x0)) >= 0
    return inside


def shape_box(shape, h, w):
    """Row and column slices that hold every pixel of ``shape`` (a little larger is fine)."""
    if shape["cls"] == CIRCLE:
        (cx, cy), r = shape["center"], shape["radius"]
        x0, x1, y0, y1 = cx - r, cx + r, cy - r, cy + r
    else:
        (x0, y0), (x1, y1) = shape["vertices"].min(axis=0), shape["vertices"].max(axis=0)
    rows = slice(max(0, int(np.floor(y0))), min(h, int(np.ceil(y1)) + 1))
    cols = slice(max(0, int(np.floor(x0))), min(w, int(np.ceil(x1)) + 1))
    return rows, cols


def shape_inside(shape, x, y):
    """Boolean region of one shape from its spec, over pixel-centre grids x, y."""
    if shape["cls"] == CIRCLE:
        cx, cy = (float(c) for c in shape["center"])
        return (x - cx) ** 2 + (y - cy) ** 2 <= float(shape["radius"]) ** 2
    return polygon_inside(shape["vertices"], x, y)


class ShapesDataset(Dataset):
    """``n`` RGB images (3, H, W) in [0, 1] with masks: 0 background, 1 circle, 2 square, 3 triangle.

    Each image has ``min_shapes``..``max_shapes`` shapes of random class, size,
    rotation and colour, possibly overlapping (later ones on top), on a two-colour
    striped/wavy/checkered background with Gaussian noise. Shape and background
    colours come from the same distribution (a shape only keeps ``min_contrast``
    from its own background), so a net has to learn outlines, not colours.

    ``image_size`` is an int or (h, w); shape sizes scale with it. ``seed`` is a
    non-negative int or tuple of ints. ``noise=0, texture=False`` give flat colours,
    which tests use to check that masks sit exactly where the shapes are painted.
    """

    num_classes = len(CLASS_NAMES)
    class_names = CLASS_NAMES

    def __init__(self, n, image_size=64, seed=0, min_shapes=1, max_shapes=3, noise=0.05, texture=True,
                 min_contrast=0.3, size_range=(0.12, 0.25)):
        if n < 0:
            raise ValueError(f"n must be non-negative, got {n}")
        if not 0 <= min_shapes <= max_shapes:
            raise ValueError(f"need 0 <= min_shapes <= max_shapes, got {min_shapes}, {max_shapes}")
        self.n = int(n)
        self.height, self.width = _canvas.image_hw(image_size)
        self.seed = _canvas.seed_entropy(seed)
        self.min_shapes, self.max_shapes = int(min_shapes), int(max_shapes)
        self.noise = float(noise)
        self.texture = bool(texture)
        self.min_contrast = float(min_contrast)
        self.size_range = tuple(size_range)

    def __len__(self):
        return self.n

    def _rng(self, index):
        return np.random.default_rng(self.seed + (check_index(index, self.n),))

    def spec(self, index, rng=None):
        """What sample ``index`` shows: background parameters and a list of shapes, each
        ``{"cls", "center", "radius", "angle", "vertices" (polygons; (K, 2) x/y pixels), "color", "shading"}``."""
        rng = self._rng(index) if rng is None else rng
        h, w = self.height, self.width
        side = min(h, w)
        background = _canvas.draw_background_spec(rng)
        shapes = []
        for _ in range(int(rng.integers(self.min_shapes, self.max_shapes + 1))):
            cls = int(rng.integers(1, len(CLASS_NAMES)))
            radius = rng.uniform(*self.size_range) * side
            center = (rng.uniform(radius, w - radius), rng.uniform(radius, h - radius))
            angle = rng.uniform(0, 2 * np.pi)
            jitter = rng.uniform(0.85, 1.15, size=3)
            shading = rng.normal(0.0, 0.25, size=2).astype(np.float32)
            color = _canvas.pick_contrasting_color(rng, background["colors"], self.min_contrast)
            if cls == SQUARE:       # half side 0.85 r: about the area of the circle
                corners = angle + np.pi / 4 + np.arange(4) * np.pi / 2
                dist = np.full(4, 0.85 * radius * np.sqrt(2))
            elif cls == TRIANGLE:   # circumradius 1.45 r, uneven vertices so not all equilateral
                corners = angle + np.arange(3) * 2 * np.pi / 3
                dist = 1.45 * radius * jitter
            vertices = None
            if cls != CIRCLE:
                vertices = np.stack([center[0] + dist * np.cos(corners), center[1] + dist * np.sin(corners)], axis=1)
            shapes.append({"cls": cls, "center": center, "radius": radius, "angle": angle,
                           "vertices": vertices, "color": color, "shading": shading})
        return {"background": background, "shapes": shapes}

    def __getitem__(self, index):
        rng = self._rng(index)
        spec = self.spec(index, rng)
        h, w = self.height, self.width
        x, y = _canvas.pixel_grid(h, w)
        image = _canvas.render_background(spec["background"], h, w, self.texture)
        mask = np.zeros((h, w), dtype=np.int64)
        side = float(min(h, w))
        for shape in spec["shapes"]:
            rows, cols = shape_box(shape, h, w)          # test only the pixels near the shape
            bx, by = x[rows, cols], y[rows, cols]
            inside = shape_inside(shape, bx, by)
            mask[rows, cols][inside] = shape["cls"]
            fill = shape["color"][:, None]
            if self.texture:   # a gentle linear shading across the shape
                gx, gy = (float(g) / side for g in shape["shading"])
                cx, cy = (float(c) for c in shape["center"])
                fill = fill + (gx * (bx[inside] - cx) + gy * (by[inside] - cy))
            image[:, rows, cols][:, inside] = fill
        return _canvas.add_noise(image, rng, self.noise), mask
