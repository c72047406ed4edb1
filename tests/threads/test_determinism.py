"""Results do not depend on the thread count: every parallel CPU kernel (through its op,
forward and gradients) and three FCN training steps, run in subprocesses at 1, 2 and 3
threads, agree bit for bit. The thread count is fixed when a process starts, so each
count gets its own process (tests/threads/probe.py); CI's exported single thread does
not limit them."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

PROBE = Path(__file__).with_name("probe.py")
THREAD_COUNTS = (1, 2, 3)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("threads")
    results = {}
    for threads in THREAD_COUNTS:       # one after another: the first fills Numba's cache for the rest
        env = dict(os.environ, NUMBA_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads),
                   OPENBLAS_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
        path = folder / f"threads{threads}.npz"
        done = subprocess.run([sys.executable, str(PROBE), str(path)], env=env, capture_output=True, text=True,
                              timeout=600)
        assert done.returncode == 0, f"probe at {threads} threads failed:\n{done.stderr[-3000:]}"
        with np.load(path) as data:
            results[threads] = {name: data[name] for name in data.files}
    return results


def test_each_run_used_its_thread_count(runs):
    for threads, result in runs.items():
        assert int(result["threads/gradflow"]) == threads
        assert int(result["threads/numba"]) == threads


def test_every_kernel_and_training_step_is_bit_identical(runs):
    reference = runs[1]
    names = [n for n in reference if not n.startswith("threads/")]
    assert any(n.startswith("fcn_gn/") for n in names) and any(n.startswith("conv3x3_stride2/") for n in names)
    for case in ("optim_sgd/", "optim_adam/", "optim_adamw_amsgrad/", "cross_entropy_large/",
                 "cross_entropy_large_weighted_smoothed/"):
        assert any(n.startswith(case) for n in names), case
    for threads in THREAD_COUNTS[1:]:
        other = runs[threads]
        assert sorted(n for n in other if not n.startswith("threads/")) == sorted(names)
        differing = [n for n in names if reference[n].dtype != other[n].dtype or reference[n].shape != other[n].shape
                     or reference[n].tobytes() != other[n].tobytes()]
        assert not differing, f"at {threads} threads these differ from 1 thread: {differing}"


def test_results_are_finite_and_not_trivial(runs):
    """The comparison means something only if the probe computed real values."""
    for name, value in runs[1].items():
        if name.startswith("threads/"):
            continue
        if not name.startswith("relu_add_large/"):        # that case has NaN and inf on purpose
            assert np.isfinite(value).all(), name
        if name.endswith("/out") or "/grad_" in name:
            assert np.nanmax(np.abs(value)) > 0, f"{name} is all zeros"
