"""Trainer checkpoints: what one holds besides the weights, and loading one back.

Resuming "exactly where training stopped" needs every source of randomness
restored: gradflow's generator (init, dropout), NumPy's and Python's global
generators (anything a user transform might draw from). The DataLoader's
order and augmentation are derived from (seed, epoch, sample) and travel in its
own state_dict.
"""
import json
import os
import random

import numpy as np

import gradflow as gf
from gradflow import checkpoint
from gradflow import random as gf_random
from models.factories import build_model

CHECKPOINT_FORMAT = "gradflow-trainer/2"


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


def save_best_weights(model, model_spec, class_names, config, path):
    """The model's weights as safetensors; the header holds what rebuilding it needs (spec, classes, config)."""
    gf.save_safetensors(model.state_dict(), path, metadata={
        "format": CHECKPOINT_FORMAT, "model_spec": json.dumps(model_spec), "class_names": json.dumps(class_names),
        "config": json.dumps(config)})


def load_weights_file(path):
    """A .ckpt written by train, or a best.safetensors, as a dict with "model_spec", "model", "class_names"
    and "config" (a .ckpt has more)."""
    if os.fspath(path).endswith(".safetensors"):
        from gradflow.serialization import load_safetensors_metadata
        meta = load_safetensors_metadata(path)
        if meta.get("format") != CHECKPOINT_FORMAT or "model_spec" not in meta:
            raise checkpoint.CheckpointError(f"{path}: not a gradflow trainer weights file (its header has no "
                                             f"'{CHECKPOINT_FORMAT}' model spec)")
        return {"model_spec": json.loads(meta["model_spec"]), "class_names": json.loads(meta["class_names"]),
                "config": json.loads(meta["config"]), "model": gf.load_safetensors(path)}
    return load_checkpoint(path, fallback=False)


def model_from_checkpoint(state, device="cpu"):
    """The checkpoint's model, built from its spec, weights loaded, in eval mode."""
    model = build_model(**state["model_spec"]).to(device)
    model.load_state_dict(state["model"])
    model.eval()
    return model
