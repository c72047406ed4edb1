"""Trainer checkpoints: what one holds besides the weights, and loading one back.

Resuming "exactly where training stopped" needs every source of randomness
restored: gradflow's generator (init, dropout), NumPy's and Python's global
generators (anything a user transform might draw from). The DataLoader's
order and augmentation are derived from (seed, epoch, sample) and travel in its
own state_dict.
"""
import random

import numpy as np

from gradflow import checkpoint
from gradflow import random as gf_random
from models.factories import build_model

CHECKPOINT_FORMAT = "gradflow-trainer/1"


def capture_rng():
    return {"gradflow": gf_random.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def restore_rng(state):
    gf_random.set_rng_state(state["gradflow"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


def load_checkpoint(path, fallback=True, log=print):
    """A trainer checkpoint dict; with ``fallback``, ``path.prev`` when ``path`` is damaged (said in the log)."""
    if fallback:
        state, used, problems = checkpoint.load_with_fallback(path)
        for problem in problems:
            log(f"warning: {problem}; falling back to {used}")
    else:
        state = checkpoint.load(path)
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise checkpoint.CheckpointError(f"{path}: not a gradflow trainer checkpoint (no '{CHECKPOINT_FORMAT}' tag)")
    return state


def model_from_checkpoint(state, device="cpu"):
    """The checkpoint's model, built from its spec, weights loaded, in eval mode."""
    model = build_model(**state["model_spec"]).to(device)
    model.load_state_dict(state["model"])
    model.eval()
    return model
