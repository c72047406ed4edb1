"""What a resumable checkpoint holds besides weights: random state, and the fault-injection hooks.

Resuming "exactly where training stopped" needs every source of randomness
restored: gradflow's generator (init, dropout), NumPy's and Python's global
generators (anything a user transform might draw from). The DataLoader's
order and augmentation are derived from (seed, epoch, sample) and travel in its
own state_dict.

Fault injection for the crash tests (never set in normal use):
``GRADFLOW_TEST_KILL_AT=step:N`` SIGKILLs the trainer right after global step N's
update; ``write:N`` SIGKILLs it halfway through writing its N-th checkpoint file.
"""
import os
import random
import signal

import numpy as np

from gradflow import checkpoint
from gradflow import random as gf_random

KILL_ENV = "GRADFLOW_TEST_KILL_AT"


def capture_rng():
    return {"gradflow": gf_random.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def restore_rng(state):
    gf_random.set_rng_state(state["gradflow"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


def _kill_now():
    os.kill(os.getpid(), signal.SIGKILL)


class FaultInjector:
    """Reads GRADFLOW_TEST_KILL_AT once; the trainer calls ``after_step(global_step)``."""

    def __init__(self, spec=None):
        spec = os.environ.get(KILL_ENV, "") if spec is None else spec
        self.kind, self.at = None, None
        if spec:
            kind, _, count = spec.partition(":")
            if kind not in ("step", "write") or not count.isdigit():
                raise ValueError(f"{KILL_ENV} must be step:N or write:N, got {spec!r}")
            self.kind, self.at = kind, int(count)
        self.writes = 0
        if self.kind == "write":
            checkpoint._on_partial_write = self._on_write

    def _on_write(self, path):
        self.writes += 1
        if self.writes == self.at:
            _kill_now()

    def after_step(self, global_step):
        if self.kind == "step" and global_step == self.at:
            _kill_now()
