"""Command line: `train` (the default), `eval` and `predict`, shared by models/fcn.py and models/unet.py.

    python models/fcn.py                                   # train FCN on shapes with the defaults
    python models/fcn.py train --dataset digits --epochs 5
    python models/fcn.py train --resume auto               # continue runs/<name>/last.ckpt if it exists
    python models/fcn.py eval runs/fcn-shapes/best.ckpt --split test
    python models/fcn.py predict runs/fcn-shapes/best.ckpt photo1.png photo2.jpg --out masks/

Exit codes: 0 success, 1 a failure with a message (bad arguments, unreadable data or
checkpoint), 3 training stopped on a non-finite loss or gradient.
"""
import argparse
import dataclasses
import os
import sys
import textwrap

import numpy as np

from gradflow import checkpoint
from gradflow.data import DATASETS, DataLoader, get_dataset
from models import train as T
from models.layers import NORMS

EXIT_ERROR, EXIT_NONFINITE = 1, 3
# Options a resumed run may change; everything else comes from the checkpoint so the run stays the same run.
RESUME_OVERRIDES = ("epochs", "device", "ckpt_every", "progress", "plots", "out", "name")
SUBCOMMANDS = ("train", "eval", "predict")


def _positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _non_negative_int(text):
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _positive_float(text):
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def build_parser(default_model="fcn"):
    defaults = T.Config(model=default_model)
    parser = argparse.ArgumentParser(
        prog=f"models/{default_model}.py",
        description="Train, evaluate and run gradflow segmentation models. With no subcommand: train.",
        epilog=f"Options of each command: models/{default_model}.py train --help (eval --help, predict --help).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    commands = parser.add_subparsers(dest="command", metavar="{train,eval,predict}")

    # Training options default to None here so a resumed run can tell what was typed.
    train = commands.add_parser("train", help="train a model (the default command)",
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                description="Train a segmentation model.\n\n" + textwrap.fill(
                                    f"Defaults: {_describe(defaults)}", 78))
    data = train.add_argument_group("data")
    data.add_argument("--dataset", choices=DATASETS, help="built-in shapes/digits, or folder (needs --data-dir)")
    data.add_argument("--data-dir", help="folder dataset root: images/ and masks/ (or train/ and val/ of those)")
    data.add_argument("--image-size", type=_positive_int, help="images are square, this many pixels a side")
    data.add_argument("--train-size", type=_positive_int, help="training samples (shapes/digits) or a cap (folder)")
    data.add_argument("--val-size", type=_positive_int, help="validation samples (shapes/digits) or a cap")
    data.add_argument("--no-augment", dest="augment", action="store_const", const=False,
                      help="no random flips")
    data.add_argument("--skip-bad", action="store_const", const=True,
                      help="folder: skip (and list) unreadable or mismatched files instead of failing")
    model = train.add_argument_group("model")
    model.add_argument("--model", choices=tuple(T.MODELS), help="fcn (FCN-8s) or unet")
    model.add_argument("--norm", choices=NORMS, help="GroupNorm or BatchNorm after each conv")
    model.add_argument("--width", type=_positive_int, help="channels of the first stage")
    opt = train.add_argument_group("optimisation")
    opt.add_argument("--epochs", type=_positive_int)
    opt.add_argument("--batch-size", type=_positive_int)
    opt.add_argument("--optimizer", choices=T.OPTIMIZERS)
    opt.add_argument("--lr", type=_positive_float, help="learning rate")
    opt.add_argument("--momentum", type=float, help="SGD momentum")
    opt.add_argument("--weight-decay", type=float)
    opt.add_argument("--scheduler", choices=T.SCHEDULERS,
                     help="cosine: to 0 over all iterations; step: /10 every third of the epochs; "
                          "plateau: halve when val mIoU stalls 2 epochs")
    opt.add_argument("--clip-grad", type=_positive_float, metavar="MAX_NORM", help="clip the gradient norm")
    run = train.add_argument_group("run")
    run.add_argument("--device", choices=("auto", "cpu", "cuda"), help="auto: cuda when a GPU is usable")
    run.add_argument("--seed", type=int)
    run.add_argument("--out", help="runs folder")
    run.add_argument("--name", help="run name: results go to OUT/NAME (default MODEL-DATASET)")
    run.add_argument("--resume", metavar="PATH|auto",
                     help="continue from a checkpoint; auto: OUT/NAME/last.ckpt if it exists, else start fresh")
    run.add_argument("--ckpt-every", type=_non_negative_int, metavar="STEPS",
                     help="also checkpoint every STEPS steps (0: at epoch ends only)")
    run.add_argument("--no-progress", dest="progress", action="store_const", const=False, help="no progress bar")
    run.add_argument("--no-plots", dest="plots", action="store_const", const=False,
                     help="skip curves.png and predictions.png")

    evaluate = commands.add_parser("eval", help="evaluate a checkpoint on a dataset split",
                                   formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    evaluate.add_argument("checkpoint", help="a .ckpt file written by train")
    evaluate.add_argument("--split", choices=("train", "val", "test"), default="val")
    _data_overrides(evaluate)
    evaluate.add_argument("--size", type=_positive_int, help="samples (shapes/digits) or a cap (folder)")
    evaluate.add_argument("--batch-size", type=_positive_int, default=16)
    evaluate.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    evaluate.add_argument("--json", metavar="PATH", help="also write the metrics as JSON")

    pred = commands.add_parser("predict", help="segment image files into colour mask PNGs",
                               formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    pred.add_argument("checkpoint", help="a .ckpt file written by train")
    pred.add_argument("images", nargs="+", help="PNG/JPEG files")
    pred.add_argument("--out", default="predictions", help="folder for <name>_mask.png files")
    pred.add_argument("--image-size", type=_non_negative_int,
                      help="resize to this size for the model (default: the training size; 0: as is); "
                           "masks are resized back to each image's own size")
    pred.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    return parser


def _data_overrides(parser):
    parser.add_argument("--dataset", choices=DATASETS, help="default: the checkpoint's")
    parser.add_argument("--data-dir", help="default: the checkpoint's")
    parser.add_argument("--image-size", type=_positive_int, help="default: the checkpoint's")


def _describe(cfg):
    fields = ("dataset", "image_size", "train_size", "val_size", "epochs", "batch_size", "optimizer", "lr",
              "weight_decay", "scheduler", "norm", "width", "device", "seed", "out")
    return ", ".join(f"{f.replace('_', '-')}={getattr(cfg, f)}" for f in fields) + "."


def _explicit(args):
    names = {f.name for f in dataclasses.fields(T.Config)}
    return {k: v for k, v in vars(args).items() if k in names and v is not None}


# ---- train ------------------------------------------------------------------------------------
def _resume_path(args, cfg):
    """The checkpoint to resume from, or None to start fresh."""
    if args.resume is None:
        return None
    if args.resume == "auto":
        path = os.path.join(cfg.out, cfg.run_name(), "last.ckpt")
        if os.path.exists(path) or os.path.exists(checkpoint.previous_path(path)):
            return path
        print(f"--resume auto: no checkpoint at {path}; starting a new run")
        return None
    return args.resume


def run_train(args, default_model):
    explicit = _explicit(args)
    cfg = T.Config(model=default_model)
    cfg = dataclasses.replace(cfg, **explicit)
    if cfg.dataset == "folder" and not cfg.data_dir:
        raise ValueError("--dataset folder needs --data-dir (a folder with images/ and masks/)")
    state, run_dir = None, None
    path = _resume_path(args, cfg)
    if path is not None:
        state = T.load_checkpoint(path)
        saved = T.Config.from_dict(state["config"])
        ignored = sorted(k for k, v in explicit.items() if k not in RESUME_OVERRIDES and getattr(saved, k) != v)
        if ignored:
            print(f"note: resuming keeps the checkpoint's {', '.join(ignored)} (only "
                  f"{', '.join(RESUME_OVERRIDES)} can change)")
        cfg = dataclasses.replace(saved, **{k: v for k, v in explicit.items() if k in RESUME_OVERRIDES})
        run_dir = None if ("out" in explicit or "name" in explicit) else os.path.dirname(os.path.abspath(path))
        print(f"resuming from {path}: epoch {state['epoch'] + 1}, step {state['step']} "
              f"(global step {state['global_step']})")
    trainer = T.Trainer(cfg, resume=state, run_dir=run_dir)
    print(f"training {cfg.model} ({cfg.norm} norm, width {cfg.width}) on {cfg.dataset} "
          f"({len(trainer.train_set)} train / {len(trainer.val_set)} val images, {cfg.image_size}px, "
          f"{trainer.num_classes} classes) on {trainer.device}; run folder {trainer.run_dir}")
    trainer.fit()
    if trainer.history:
        last = trainer.history[-1]
        best = max(trainer.history, key=lambda h: h["val_miou"])
        print(f"validation after epoch {last['epoch']}:")
        print(T.format_metrics({"pixel_accuracy": last["val_pixel_accuracy"],
                                "mean_accuracy": last["val_mean_accuracy"], "miou": last["val_miou"],
                                "per_class_iou": last["val_per_class_iou"], "loss": last["val_loss"]},
                               trainer.class_names))
        seconds = sum(h["seconds"] for h in trainer.history)
        images = sum(h["steps"] for h in trainer.history) * cfg.batch_size
        print(f"best val mIoU {best['val_miou']:.4f} (epoch {best['epoch']}); training time {seconds:.1f}s, "
              f"{images / max(seconds, 1e-9):.1f} images/s; wrote {trainer.run_dir}/"
              f"{{last.ckpt,best.ckpt,metrics.json{',curves.png,predictions.png' if cfg.plots else ''}}}")
    return 0


# ---- eval ---------------------------------------------------------------------------------------
def run_eval(args):
    state = T.load_checkpoint(args.checkpoint, fallback=False)
    cfg = T.Config.from_dict(state["config"])
    name = args.dataset or cfg.dataset
    root = args.data_dir or cfg.data_dir
    image_size = args.image_size or cfg.image_size
    device = T.resolve_device(args.device)
    size = args.size if args.size is not None else (cfg.val_size if args.split != "train" else cfg.train_size)
    dataset = get_dataset(name, args.split, image_size=image_size, seed=cfg.seed, root=root, size=size,
                          num_classes=state["model_spec"]["num_classes"])
    model = T.model_from_checkpoint(state, device)
    metrics = T.evaluate(model, DataLoader(dataset, batch_size=args.batch_size, device=device),
                         state["model_spec"]["num_classes"])
    print(f"{args.checkpoint}: {state['model_spec']['name']} after {state['epoch']} epoch(s); "
          f"{name} {args.split} split, {len(dataset)} images, {image_size}px")
    print(T.format_metrics(metrics, state["class_names"]))
    if args.json:
        T.write_json({"checkpoint": args.checkpoint, "dataset": name, "split": args.split, **metrics}, args.json)
    return 0


# ---- predict ------------------------------------------------------------------------------------
def run_predict(args):
    import gradflow as gf
    from gradflow.data.folder import read_image
    from gradflow.data.functional import resize_image, resize_mask
    from models.plots import save_mask_png

    state = T.load_checkpoint(args.checkpoint, fallback=False)
    cfg = T.Config.from_dict(state["config"])
    size = cfg.image_size if args.image_size is None else args.image_size
    device = T.resolve_device(args.device)
    model = T.model_from_checkpoint(state, device)
    num_classes = state["model_spec"]["num_classes"]
    os.makedirs(args.out, exist_ok=True)
    failed = []
    for path in args.images:
        try:
            image = read_image(path)
        except Exception as exc:   # Pillow raises many types for unreadable files
            failed.append(f"{path}: unreadable image ({type(exc).__name__}: {exc})")
            continue
        height, width = image.shape[1:]
        if image.shape[0] != state["model_spec"]["in_channels"]:
            failed.append(f"{path}: {image.shape[0]} channels, the model takes {state['model_spec']['in_channels']}")
            continue
        model_input = resize_image(image, size) if size else image
        ids = T.predict(model, gf.tensor(model_input[None].astype(np.float32), device=device))[0]
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


# ---- entry point --------------------------------------------------------------------------------
def main(argv=None, default_model="fcn"):
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0] not in SUBCOMMANDS and argv[0] not in ("-h", "--help")):
        argv = ["train"] + argv       # train is the default command
    args = build_parser(default_model).parse_args(argv)
    try:
        if args.command == "eval":
            return run_eval(args)
        if args.command == "predict":
            return run_predict(args)
        return run_train(args, default_model)
    except T.NonFiniteError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_NONFINITE
    except (checkpoint.CheckpointError, ValueError, RuntimeError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("\ninterrupted; resume with --resume auto (the last checkpoint is intact)", file=sys.stderr)
        return 130
