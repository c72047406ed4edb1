"""`eval`: a checkpoint's metrics on a dataset split, as a table and optionally JSON."""
import argparse

from gradflow.data import DATASETS, DataLoader, get_dataset
from models.checkpoints import load_checkpoint, model_from_checkpoint
from models.commands import DEVICES, positive_int
from models.config import Config
from models.factories import make_criterion, resolve_device
from models.train import evaluate
from models.utils import format_metrics, write_json

HELP = "evaluate a checkpoint on a dataset split"
PARSER_OPTIONS = {"formatter_class": argparse.ArgumentDefaultsHelpFormatter}


def add_arguments(parser, default_model):
    parser.add_argument("checkpoint", help="a .ckpt file written by train")
    parser.add_argument("--split", choices=("train", "val", "test"), default="val")
    parser.add_argument("--dataset", choices=DATASETS, help="default: the checkpoint's")
    parser.add_argument("--data-dir", help="default: the checkpoint's")
    parser.add_argument("--image-size", type=positive_int, help="default: the checkpoint's")
    parser.add_argument("--size", type=positive_int, help="samples (shapes/digits) or a cap (folder)")
    parser.add_argument("--batch-size", type=positive_int, default=16)
    parser.add_argument("--device", choices=DEVICES, default="auto")
    parser.add_argument("--json", metavar="PATH", help="also write the metrics as JSON")


def run(args, default_model):
    state = load_checkpoint(args.checkpoint, fallback=False)
    cfg = Config.from_dict(state["config"])
    name = args.dataset or cfg.dataset
    root = args.data_dir or cfg.data_dir
    image_size = args.image_size or cfg.image_size
    device = resolve_device(args.device)
    num_classes = state["model_spec"]["num_classes"]
    size = args.size if args.size is not None else (cfg.val_size if args.split != "train" else cfg.train_size)
    dataset = get_dataset(name, args.split, image_size=image_size, seed=cfg.seed, root=root, size=size,
                          num_classes=num_classes)
    model = model_from_checkpoint(state, device)
    metrics = evaluate(model, DataLoader(dataset, batch_size=args.batch_size, device=device),
                       make_criterion(cfg, num_classes), num_classes)
    print(f"{args.checkpoint}: {state['model_spec']['name']} after {state['epoch']} epoch(s); "
          f"{name} {args.split} split, {len(dataset)} images, {image_size}px")
    print(format_metrics(metrics, state["class_names"]))
    if args.json:
        write_json({"checkpoint": args.checkpoint, "dataset": name, "split": args.split, **metrics}, args.json)
    return 0
