import os
import subprocess
import sys

import numpy as np

from gradflow import backend


def _run(code, **env):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=120)


def test_numpy_is_the_array_module_on_cpu():
    assert backend.get_array_module(np.zeros(1)) is np
    assert backend.device_of(np.zeros(1)) == "cpu"


def test_gradflow_device_cpu_disables_cuda():
    out = _run("import gradflow as gf; print(gf.cuda.is_available(), gf.cuda.why_unavailable())",
               GRADFLOW_DEVICE="cpu")
    assert out.stdout.startswith("False GRADFLOW_DEVICE=cpu"), out.stderr


def test_asking_for_cuda_without_gpu_says_why():
    out = _run("import gradflow as gf\n"
               "if gf.cuda.is_available(): print('has gpu')\n"
               "else: gf.zeros(1, device='cuda')", GRADFLOW_DEVICE="")
    if "has gpu" not in out.stdout:
        assert "CUDA requested but not available" in out.stderr


def test_gradflow_device_cuda_makes_default_device_fail_clearly_without_gpu():
    out = _run("import gradflow as gf\n"
               "if gf.cuda.is_available(): print('has gpu')\n"
               "else: gf.zeros(1)", GRADFLOW_DEVICE="cuda")
    if "has gpu" not in out.stdout:
        assert "CUDA requested but not available" in out.stderr


def test_import_needs_no_cupy():
    out = _run("import sys, gradflow as gf; x = gf.randn(3, 4, requires_grad=True); (x*x).sum().backward();"
               "print('cupy' in sys.modules and not gf.cuda.is_available())")
    assert out.returncode == 0, out.stderr
