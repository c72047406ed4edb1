"""A procedural binary segmentation dataset on disk, for trying the folder workflow end to end.

    python -m gradflow.data.make_example DIR [--count 400] [--size 64] [--seed 0]

writes ``DIR/images/NNNN.png`` (RGB) and ``DIR/masks/NNNN.png`` (8-bit grey, 0 =
background, 255 = foreground), the layout ``--dataset folder --data-dir DIR``
reads. Each image is a textured background (random colours, stripes, waves or a
checkerboard) with one to four blobs of wobbly outline in a colour of their own,
and pixel noise; the mask is the blobs. Colours are random for blobs and
backgrounds alike, so the net has to find the blobs by their outline and
uniformity, not by a colour.
"""
import argparse
import os
import pathlib
import sys

import numpy as np

from gradflow.data._canvas import (add_noise, draw_background_spec, pick_contrasting_color, pixel_grid,
                                   render_background)


def blob_mask(rng, h, w):
    """(H, W) bool: a blob whose radius wobbles with the angle, r(a) = r0 (1 + sum of small harmonics)."""
    x, y = pixel_grid(h, w)
    side = min(h, w)
    r0 = rng.uniform(0.08, 0.2) * side
    cx, cy = rng.uniform(r0, w - r0), rng.uniform(r0, h - r0)
    stretch = rng.uniform(0.6, 1.0)                     # an ellipse-like squash, at a random angle
    turn = rng.uniform(0, np.pi)
    dx, dy = x - cx, y - cy
    u = dx * np.cos(turn) + dy * np.sin(turn)
    v = (-dx * np.sin(turn) + dy * np.cos(turn)) / stretch
    angle, distance = np.arctan2(v, u), np.hypot(u, v)
    wobble = sum(rng.uniform(0, 0.18) * np.sin(k * angle + rng.uniform(0, 2 * np.pi)) for k in (2, 3, 5))
    return distance <= r0 * (1 + wobble)


def make_sample(rng, size):
    """(image (H, W, 3) uint8, mask (H, W) uint8 of 0/255)."""
    h = w = size
    spec = draw_background_spec(rng)
    image = render_background(spec, h, w).copy()
    mask = np.zeros((h, w), dtype=bool)
    for _ in range(int(rng.integers(1, 5))):
        blob = blob_mask(rng, h, w)
        colour = pick_contrasting_color(rng, spec["colors"], min_contrast=0.35)
        image[:, blob] = colour[:, None]
        mask |= blob
    image = add_noise(image, rng, sigma=0.04)
    return (image.transpose(1, 2, 0) * 255 + 0.5).astype(np.uint8), (mask * 255).astype(np.uint8)


def make_example(root, count=400, size=64, seed=0, force=False):
    """Write ``count`` image/mask pairs under ``root``; returns the foreground share of all pixels."""
    from PIL import Image
    if count < 2:
        raise ValueError(f"count must be at least 2 (a train and a val image), got {count}")
    if size < 16:
        raise ValueError(f"size must be at least 16 pixels, got {size}")
    root = pathlib.Path(root)
    folders = [root / "images", root / "masks"]
    taken = [str(f) for f in folders if f.is_dir() and any(f.iterdir())]
    if taken and not force:
        raise ValueError(f"{' and '.join(taken)} already hold files; pass --force to write over them")
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
    foreground = 0
    for index in range(count):
        image, mask = make_sample(np.random.default_rng((seed, index)), size)
        Image.fromarray(image, mode="RGB").save(folders[0] / f"{index:04d}.png")
        Image.fromarray(mask, mode="L").save(folders[1] / f"{index:04d}.png")
        foreground += int((mask > 0).sum())
    return foreground / (count * size * size)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m gradflow.data.make_example",
                                     description="Write a procedural binary segmentation dataset as PNG files: "
                                                 "DIR/images/*.png and DIR/masks/*.png (0/255).")
    parser.add_argument("dir", help="output folder (created)")
    parser.add_argument("--count", type=int, default=400, help="image/mask pairs")
    parser.add_argument("--size", type=int, default=64, help="pixels a side")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--force", action="store_true", help="write into folders that already hold files")
    args = parser.parse_args(argv)
    try:
        share = make_example(args.dir, args.count, args.size, args.seed, args.force)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {args.count} images ({args.size}x{args.size}) and 0/255 masks to "
          f"{os.path.join(args.dir, 'images')} and {os.path.join(args.dir, 'masks')}; "
          f"{100 * share:.1f}% of the pixels are foreground")
    print(f"train on it: python models/unet.py train --dataset folder --data-dir {args.dir} --loss bce+dice")
    return 0


if __name__ == "__main__":
    sys.exit(main())
