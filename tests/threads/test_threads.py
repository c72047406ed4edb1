"""gf.set_num_threads / gf.get_num_threads, as torch's: the default from the process's
usable cores or OMP_NUM_THREADS / NUMBA_NUM_THREADS; BLAS held to one thread."""
import ctypes
import ctypes.util
import os
import subprocess
import sys

import pytest

import gradflow as gf
from gradflow import threads


def _in_subprocess(code, **env):
    full_env = {k: v for k, v in os.environ.items()
                if k not in ("OMP_NUM_THREADS", "NUMBA_NUM_THREADS", "NUMBA_THREADING_LAYER")}
    full_env.update(env)
    done = subprocess.run([sys.executable, "-c", code], env=full_env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip()


def test_default_is_the_usable_cores():
    out = _in_subprocess("import os, gradflow as gf; print(gf.get_num_threads(), len(os.sched_getaffinity(0)))")
    got, cores = map(int, out.split())
    assert got == cores


def test_default_honours_omp_then_numba_env():
    assert _in_subprocess("import gradflow as gf; print(gf.get_num_threads())",
                          OMP_NUM_THREADS="1", NUMBA_NUM_THREADS="3") == "1"
    assert _in_subprocess("import gradflow as gf; print(gf.get_num_threads())", NUMBA_NUM_THREADS="3") == "3"


def test_set_num_threads_reaches_numba_and_blas_stays_at_one():
    code = """
import numba, numpy as np, gradflow as gf
from threadpoolctl import threadpool_info
import gradflow.functional as F
gf.set_num_threads(2)
x = gf.randn(2, 3, 8, 8)
F.max_pool2d(x, 2)          # a parallel kernel: runs with gradflow's count
numpy_blas = lambda: sorted({p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"
                             and "numpy" in p["filepath"]})     # the BLAS under np.matmul
print(gf.get_num_threads(), numba.get_num_threads(), numpy_blas(), numba.threading_layer())
gf.set_num_threads(1)
F.max_pool2d(x, 2)
every_blas = sorted({p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"})
print(gf.get_num_threads(), numba.get_num_threads(), numpy_blas(), every_blas)
"""
    first, second = _in_subprocess(code, NUMBA_NUM_THREADS="3").splitlines()
    assert first == f"2 2 [1] {_expected_layer()}"
    assert second == "1 1 [1] [1]"


def _expected_layer():
    """omp where the GNU OpenMP runtime loads, else workqueue."""
    try:
        ctypes.CDLL(ctypes.util.find_library("gomp") or "libgomp.so.1")
        return "omp"
    except OSError:
        return "workqueue"


def test_threading_layer_is_omp_then_workqueue_unless_the_env_names_one(monkeypatch):
    from numba.core import config
    monkeypatch.setattr(config, "THREADING_LAYER", "default")
    monkeypatch.setattr(config, "THREADING_LAYER_PRIORITY", ["tbb", "omp", "workqueue"])
    monkeypatch.delenv("NUMBA_THREADING_LAYER", raising=False)
    monkeypatch.delenv("NUMBA_THREADING_LAYER_PRIORITY", raising=False)
    threads.configure()
    assert (config.THREADING_LAYER, config.THREADING_LAYER_PRIORITY) == ("default", ["omp", "workqueue", "tbb"])
    monkeypatch.setattr(config, "THREADING_LAYER", "omp")        # what Numba reads from the variable
    monkeypatch.setenv("NUMBA_THREADING_LAYER", "omp")
    threads.configure()
    assert config.THREADING_LAYER == "omp"


def test_bad_counts_raise_clear_errors():
    with pytest.raises(ValueError, match="must be positive"):
        gf.set_num_threads(0)
    with pytest.raises(TypeError, match="expected an int"):
        gf.set_num_threads(1.5)
    with pytest.raises(TypeError, match="expected an int"):
        gf.set_num_threads(True)
    with pytest.raises(ValueError, match="NUMBA_NUM_THREADS"):
        gf.set_num_threads(threads.pool_size() + 1)


def test_bad_environment_is_named():
    code = "import gradflow as gf; gf.get_num_threads()"
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS",)}
    env["OMP_NUM_THREADS"] = "many"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0 and "OMP_NUM_THREADS='many'" in done.stderr


def test_set_then_get_in_process():
    before = gf.get_num_threads()
    try:
        gf.set_num_threads(1)
        assert gf.get_num_threads() == 1
    finally:
        gf.set_num_threads(before)
