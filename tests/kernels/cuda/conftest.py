"""tests/kernels/cuda run the CUDA kernels: in Numba's simulator (own pytest process,
`NUMBA_ENABLE_CUDASIM=1 pytest tests/kernels/cuda`, set before numba is imported) or on
a real GPU. Anywhere else this folder is not collected."""
import os


def _runnable():
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        return True
    import gradflow
    return gradflow.cuda.is_available()


if not _runnable():
    collect_ignore_glob = ["test_*.py"]
