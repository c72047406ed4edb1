"""`predict`: segment image files into colour mask PNGs at each image's own size."""
import argparse
import os
import sys

import numpy as np

import gradflow as gf
from gradflow.data.folder import read_image
from gradflow.data.functional import resize_image, resize_mask
from models.checkpoints import load_checkpoint, model_from_checkpoint
from models.commands import DEVICES, EXIT_ERROR, non_negative_int
from models.config import Config
from models.factories import resolve_device
from models.plots import save_mask_png
from models.train import predict

HELP = "segment image files into colour mask PNGs"
PARSER_OPTIONS = {"formatter_class": argparse.ArgumentDefaultsHelpFormatter}


def add_arguments(parser, default_model):
    parser.add_argument("checkpoint", help="a .ckpt file written by train")
    parser.add_argument("images", nargs="+", help="PNG/JPEG files")
    parser.add_argument("--out", default="predictions", help="folder for <name>_mask.png files")
    parser.add_argument("--image-size", type=non_negative_int,
                        help="resize to this size for the model (default: the training size; 0: as is); "
                             "masks are resized back to each image's own size")
    parser.add_argument("--device", choices=DEVICES, default="auto")


def run(args, default_model):
    state = load_checkpoint(args.checkpoint, fallback=False)
    cfg = Config.from_dict(state["config"])
    size = cfg.image_size if args.image_size is None else args.image_size
    device = resolve_device(args.device)
    model = model_from_checkpoint(state, device)
    num_classes, in_channels = state["model_spec"]["num_classes"], state["model_spec"]["in_channels"]
    os.makedirs(args.out, exist_ok=True)
    failed = []
    for path in args.images:
        try:
            image = read_image(path)
        except Exception as exc:   # Pillow raises many types for unreadable files
            failed.append(f"{path}: unreadable image ({type(exc).__name__}: {exc})")
            continue
        height, width = image.shape[1:]
        if image.shape[0] != in_channels:
            failed.append(f"{path}: {image.shape[0]} channels, the model takes {in_channels}")
            continue
        model_input = resize_image(image, size) if size else image
        ids = predict(model, gf.tensor(model_input[None].astype(np.float32), device=device))[0]
        if ids.shape != (height, width):
            ids = resize_mask(ids, (height, width))
        target = os.path.join(args.out, os.path.splitext(os.path.basename(path))[0] + "_mask.png")
        save_mask_png(ids, num_classes, target)
        counts = np.bincount(ids.ravel(), minlength=num_classes)
        share = ", ".join(f"{state['class_names'][c]} {100 * n / ids.size:.1f}%" for c, n in enumerate(counts) if n)
        print(f"{path} -> {target} ({share})")
    for message in failed:
        print(f"error: {message}", file=sys.stderr)
    return EXIT_ERROR if failed else 0
