"""The CLI's subcommands, one module each (see models/cli.py), and the argparse types they share."""
import argparse


def positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def non_negative_int(text):
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def positive_float(text):
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


DEVICES = ("auto", "cpu", "cuda")
EXIT_ERROR, EXIT_NONFINITE = 1, 3
