"""Shared pieces of the model/trainer tests: tiny configs and a CLI runner."""
import os
import pathlib
import subprocess
import sys

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[2]
FCN_SCRIPT = REPO / "models" / "fcn.py"
FAULTS = REPO / "tests" / "models" / "faults.py"

# A run small enough for a test: 16 training images of 16x16, batches of 4 -> 4 steps an epoch.
TINY = ["--image-size", "16", "--train-size", "16", "--val-size", "4", "--batch-size", "4", "--width", "4",
        "--no-progress", "--seed", "0"]


def tiny_config(tmp_path, **overrides):
    from models.config import Config
    values = dict(image_size=16, train_size=16, val_size=4, batch_size=4, width=4, epochs=2, progress=False,
                  plots=False, seed=0, out=str(tmp_path), name="run")
    values.update(overrides)
    return Config(**values)


def run_cli(args, cwd, env_extra=None, timeout=300, script=FCN_SCRIPT, kill_at=None):
    """Run `python models/fcn.py ARGS` in ``cwd``; returns the CompletedProcess (text output).

    ``kill_at`` ("step:N" or "write:N") runs it through tests/models/faults.py, which SIGKILLs it there."""
    env = dict(os.environ)
    env.update(env_extra or {})
    env.setdefault("GRADFLOW_DEVICE", "cpu")
    command = [sys.executable, str(script)] if kill_at is None else [sys.executable, str(FAULTS), kill_at, str(script)]
    return subprocess.run([*command, *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def model_weights(path):
    """{name: numpy array} of the model in a trainer checkpoint."""
    from gradflow import checkpoint
    state = checkpoint.load(path)
    return {k: np.asarray(v.data) for k, v in state["model"].items()}


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].dtype == b[name].dtype and a[name].shape == b[name].shape, name
        assert np.array_equal(a[name], b[name]), f"{name} differs (max |diff| {np.abs(a[name] - b[name]).max()})"
