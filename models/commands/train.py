"""`train`: the options of a run (one per Config field) and running it, fresh or resumed."""
import argparse
import dataclasses
import os
import textwrap

import gradflow
from gradflow import checkpoint
from gradflow.data import DATASETS
from models.checkpoints import load_checkpoint
from models.commands import DEVICES, non_negative_int, positive_float, positive_int
from models.config import MODELS, OPTIMIZERS, SCHEDULERS, Config, default_config
from models.distributed import Parallel
from models.layers import NORMS
from models.losses import LOSSES, parse_class_weights
from models.presets import AUGMENTS
from models.trainer import Trainer
from models.utils import format_metrics

HELP = "train a model (the default command)"
PARSER_OPTIONS = {"formatter_class": argparse.RawDescriptionHelpFormatter}
# Options a resumed run may change; everything else comes from the checkpoint so the run stays the same run.
RESUME_OVERRIDES = ("epochs", "early_stop", "device", "ckpt_every", "log_every", "progress", "plots", "out", "name")


def _class_weights(text):
    try:
        return parse_class_weights(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_arguments(parser, default_model):
    """Training options default to None here so a resumed run can tell what was typed."""
    parser.description = "Train a segmentation model.\n\n" + textwrap.fill(
        f"Defaults: {_describe(default_config(default_model))}", 78)
    data = parser.add_argument_group("data")
    data.add_argument("--dataset", choices=DATASETS, help="built-in shapes/digits, or folder (needs --data-dir)")
    data.add_argument("--data-dir", help="folder dataset root: images/ and masks/ (or train/ and val/ of those)")
    data.add_argument("--image-size", type=positive_int, help="images are square, this many pixels a side")
    data.add_argument("--train-size", type=positive_int, help="training samples (shapes/digits) or a cap (folder)")
    data.add_argument("--val-size", type=positive_int, help="validation samples (shapes/digits) or a cap")
    data.add_argument("--augment", choices=AUGMENTS,
                      help="light: flips and 90-degree turns; strong: also scale+crop, small rotations, colour "
                           "jitter (digits: no flips or turns)")
    data.add_argument("--no-augment", dest="augment", action="store_const", const="none", help="--augment none")
    data.add_argument("--skip-bad", action="store_const", const=True,
                      help="folder: skip (and list) unreadable or mismatched files instead of failing")
    model = parser.add_argument_group("model")
    model.add_argument("--model", choices=tuple(MODELS), help="fcn (FCN-8s) or unet")
    model.add_argument("--norm", choices=NORMS, help="GroupNorm or BatchNorm after each conv")
    model.add_argument("--width", type=positive_int, help="channels of the first stage")
    opt = parser.add_argument_group("optimisation")
    opt.add_argument("--loss", choices=LOSSES,
                     help="ce: softmax cross-entropy; bce, bce+dice: binary masks (0/1 or 0/255), one sigmoid "
                          "channel; dice: soft Dice (binary on two-class data, else of the softmax)")
    opt.add_argument("--class-weights", type=_class_weights, metavar="auto|W0,W1,...",
                     help="weigh the cross-entropy per class; auto: inverse class frequency")
    opt.add_argument("--early-stop", type=non_negative_int, metavar="PATIENCE",
                     help="stop when the validation score (mIoU; binary: foreground IoU) has not improved for "
                          "PATIENCE epochs (0: never)")
    opt.add_argument("--epochs", type=positive_int)
    opt.add_argument("--batch-size", type=positive_int)
    opt.add_argument("--optimizer", choices=OPTIMIZERS)
    opt.add_argument("--lr", type=positive_float, help="learning rate")
    opt.add_argument("--momentum", type=float, help="SGD momentum")
    opt.add_argument("--weight-decay", type=float)
    opt.add_argument("--scheduler", choices=SCHEDULERS,
                     help="cosine: to 0 over all iterations; step: /10 every third of the epochs; "
                          "plateau: halve when val mIoU stalls 2 epochs")
    opt.add_argument("--clip-grad", type=positive_float, metavar="MAX_NORM", help="clip the gradient norm")
    run = parser.add_argument_group("run")
    run.add_argument("--device", choices=DEVICES, help="auto: cuda when a GPU is usable")
    run.add_argument("--seed", type=int)
    run.add_argument("--out", help="runs folder")
    run.add_argument("--name", help="run name: results go to OUT/NAME (default MODEL-DATASET)")
    run.add_argument("--resume", metavar="PATH|auto",
                     help="continue from a checkpoint; auto: OUT/NAME/last.ckpt if it exists, else start fresh")
    run.add_argument("--ckpt-every", type=non_negative_int, metavar="STEPS",
                     help="also checkpoint every STEPS steps (0: at epoch ends only)")
    run.add_argument("--log-every", type=positive_int, metavar="STEPS",
                     help="read losses, metrics and NaN checks back every STEPS steps (the only GPU syncs of a "
                          "step; also at checkpoints and epoch ends)")
    run.add_argument("--no-progress", dest="progress", action="store_const", const=False, help="no progress bar")
    run.add_argument("--no-plots", dest="plots", action="store_const", const=False,
                     help="skip curves.png and predictions.png")


def _describe(cfg):
    fields = ("dataset", "image_size", "train_size", "val_size", "augment", "epochs", "batch_size", "loss",
              "optimizer", "lr", "weight_decay", "scheduler", "norm", "width", "device", "seed", "out")
    return ", ".join(f"{f.replace('_', '-')}={getattr(cfg, f)}" for f in fields) + "."


def _explicit(args):
    """The Config fields given on the command line."""
    names = {f.name for f in dataclasses.fields(Config)}
    return {k: v for k, v in vars(args).items() if k in names and v is not None}


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


def configure(args, default_model):
    """(Config, checkpoint state or None, run folder or None) from the parsed arguments."""
    explicit = _explicit(args)
    cfg = default_config(**{"model": default_model, **explicit})   # --model picks that model's recipe
    if cfg.dataset == "folder" and not cfg.data_dir:
        raise ValueError("--dataset folder needs --data-dir (a folder with images/ and masks/)")
    path = _resume_path(args, cfg)
    if path is None:
        return cfg, None, None
    state = load_checkpoint(path)
    saved = Config.from_dict(state["config"])
    ignored = sorted(k for k, v in explicit.items() if k not in RESUME_OVERRIDES and getattr(saved, k) != v)
    if ignored:
        print(f"note: resuming keeps the checkpoint's {', '.join(ignored)} (only "
              f"{', '.join(RESUME_OVERRIDES)} can change)")
    cfg = dataclasses.replace(saved, **{k: v for k, v in explicit.items() if k in RESUME_OVERRIDES})
    run_dir = None if ("out" in explicit or "name" in explicit) else os.path.dirname(os.path.abspath(path))
    print(f"resuming from {path}: epoch {state['epoch'] + 1}, step {state['step']} "
          f"(global step {state['global_step']})")
    return cfg, state, run_dir


def run(args, default_model):
    parallel = Parallel.from_launcher()     # under mpirun -n N: join the other N - 1 processes
    cfg, state, run_dir = configure(args, default_model)
    trainer = Trainer(cfg, resume=state, run_dir=run_dir, parallel=parallel)
    on = f"{parallel.world_size} processes, each on {_where(trainer.device)}" if parallel.enabled \
        else _where(trainer.device)
    print(f"training {cfg.model} ({cfg.norm} norm, width {cfg.width}) on {cfg.dataset} "
          f"({len(trainer.train_set)} train / {len(trainer.val_set)} val images, {cfg.image_size}px, "
          f"{trainer.num_classes} classes) on {on}; run folder {trainer.run_dir}")
    trainer.fit()
    if trainer.history:
        summarize(trainer)
    return 0


def _where(device):
    if device != "cpu":
        return device
    threads = gradflow.get_num_threads()
    return f"cpu ({threads} thread{'s' if threads > 1 else ''})"


def summarize(trainer):
    """The final validation table, the best epoch and the throughput."""
    cfg, history, monitor = trainer.cfg, trainer.history, trainer.task.monitor
    last, best = history[-1], trainer.best_record()
    print(f"validation after epoch {last['epoch']}:")
    print(format_metrics({key[len("val_"):]: value for key, value in last.items() if key.startswith("val_")},
                         trainer.class_names))
    seconds = sum(h["seconds"] for h in history)
    images = sum(h["steps"] for h in history) * cfg.batch_size
    print(f"best val {monitor} {best[f'val_{monitor}']:.4f} (epoch {best['epoch']}); training time {seconds:.1f}s, "
          f"{images / max(seconds, 1e-9):.1f} images/s; wrote {trainer.run_dir}/"
          f"{{last.ckpt,best.ckpt,best.safetensors,metrics.json{',curves.png,predictions.png' if cfg.plots else ''}}}")
