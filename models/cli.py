"""Command line shared by models/fcn.py and models/unet.py: `train` (the default), `eval` and `predict`.

    python models/fcn.py                                   # train FCN on shapes with the defaults
    python models/fcn.py train --dataset digits --epochs 5
    python models/fcn.py train --resume auto               # continue runs/<name>/last.ckpt if it exists
    python models/fcn.py eval runs/fcn-shapes/best.ckpt --split test
    python models/fcn.py predict runs/fcn-shapes/best.ckpt photo1.png photo2.jpg --out masks/
    python models/fcn.py export runs/fcn-shapes/best.ckpt --onnx fcn.onnx

Each subcommand is a module in models/commands/ with ``HELP``, ``add_arguments(parser,
default_model)`` and ``run(args, default_model)``; a new subcommand is a new module
and one entry in COMMANDS.

Exit codes: 0 success, 1 a failure with a message (bad arguments, unreadable data or
checkpoint), 3 training stopped on a non-finite loss or gradient.
"""
import argparse
import sys

import gradflow
from gradflow import checkpoint
from models.commands import EXIT_ERROR, EXIT_NONFINITE, evaluate, export, positive_int, predict, train
from models.distributed import stop_all
from models.utils import NonFiniteError

COMMANDS = {"train": train, "eval": evaluate, "predict": predict, "export": export}   # the first is the default
DEFAULT_COMMAND = "train"


def build_parser(default_model="fcn"):
    parser = argparse.ArgumentParser(
        prog=f"models/{default_model}.py",
        description=f"Train, evaluate and run gradflow segmentation models. With no subcommand: "
                    f"{DEFAULT_COMMAND}.",
        epilog=f"Options of each command: models/{default_model}.py COMMAND --help.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    commands = parser.add_subparsers(dest="command", metavar="{" + ",".join(COMMANDS) + "}")
    for name, command in COMMANDS.items():
        sub = commands.add_parser(name, help=command.HELP, **command.PARSER_OPTIONS)
        command.add_arguments(sub, default_model)
        # not part of a run's config: results are the same bits at any thread count
        sub.add_argument("--threads", type=positive_int,
                         help="CPU threads (default: the usable cores, or OMP_NUM_THREADS when set)")
    return parser


def main(argv=None, default_model="fcn"):
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0] not in COMMANDS and argv[0] not in ("-h", "--help")):
        argv = [DEFAULT_COMMAND] + argv
    args = build_parser(default_model).parse_args(argv)
    try:
        if args.threads is not None:
            gradflow.set_num_threads(args.threads)
        return COMMANDS[args.command].run(args, default_model)
    except NonFiniteError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return stop_all(EXIT_NONFINITE)
    except (checkpoint.CheckpointError, ValueError, RuntimeError, OSError, ImportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return stop_all(EXIT_ERROR)
    except KeyboardInterrupt:
        print("\ninterrupted; resume with --resume auto (the last checkpoint is intact)", file=sys.stderr)
        return 130
