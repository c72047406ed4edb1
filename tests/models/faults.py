"""Fault injection for the crash tests, from outside the trainer (nothing of it is in the production path).

In process, ``crash_after(monkeypatch, steps)`` makes the trainer's step raise Crash
after ``steps`` good steps. For a real SIGKILL the CLI runs in a child through
this file, which patches the trainer before handing over to the script:

    python tests/models/faults.py step:N  models/fcn.py ARGS...   # SIGKILL right after the N-th step's update
    python tests/models/faults.py write:N models/fcn.py ARGS...   # SIGKILL half way through the N-th checkpoint
"""
import os
import pathlib
import runpy
import signal
import sys

REPO = pathlib.Path(__file__).resolve().parents[2]


class Crash(Exception):
    """A simulated crash (an exception no trainer code catches)."""


def _wrap_steps(engine, after_each):
    """Replace engine.train_step by one that calls ``after_each(number of steps so far)`` after each step."""
    real, count = engine.train_step, [0]

    def train_step(*args, **kwargs):
        result = real(*args, **kwargs)
        count[0] += 1
        after_each(count[0])
        return result
    return train_step


def crash_after(monkeypatch, steps):
    """The step after ``steps`` successful ones raises Crash, before its update."""
    import models.train as engine
    real, count = engine.train_step, [0]

    def train_step(*args, **kwargs):
        if count[0] == steps:
            raise Crash()
        count[0] += 1
        return real(*args, **kwargs)
    monkeypatch.setattr(engine, "train_step", train_step)


def _kill_now(*_):
    os.kill(os.getpid(), signal.SIGKILL)


def install_kill(spec):
    """Arm ``step:N`` or ``write:N`` in this process."""
    kind, _, count = spec.partition(":")
    if kind not in ("step", "write") or not count.isdigit():
        raise ValueError(f"fault spec must be step:N or write:N, got {spec!r}")
    at = int(count)
    if kind == "step":
        import models.train as engine
        engine.train_step = _wrap_steps(engine, lambda n: _kill_now() if n == at else None)
    else:
        from gradflow import checkpoint
        writes = [0]

        def on_partial_write(path):
            writes[0] += 1
            if writes[0] == at:
                _kill_now()
        checkpoint._on_partial_write = on_partial_write


if __name__ == "__main__":
    spec, script, *args = sys.argv[1:]
    sys.path.insert(0, str(REPO))
    install_kill(spec)
    sys.argv = [script, *args]
    runpy.run_path(script, run_name="__main__")
