"""gf.cuda: is a real GPU usable here?"""
from gradflow import backend


def is_available():
    """True when cupy imports, a CUDA device exists and a tiny allocation works."""
    return backend.cuda_available()


def why_unavailable():
    return backend._probe_cuda()[1]


def synchronize():
    if backend.cuda_available():
        backend.cupy_module().cuda.get_current_stream().synchronize()
