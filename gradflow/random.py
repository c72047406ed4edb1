"""gradflow's own random state: parameter init, dropout, data order and augmentation."""
import numpy as np

from gradflow import backend

_generator = np.random.default_rng()
_cuda_seed = None


def manual_seed(seed):
    """Seed every random draw gradflow makes (CPU generator and, if used, the CUDA one)."""
    global _generator, _cuda_seed
    _generator = np.random.default_rng(seed)
    _cuda_seed = seed
    if backend.cuda_available():
        backend.cupy_module().random.seed(seed)


def generator():
    return _generator


def get_rng_state():
    return _generator.bit_generator.state


def set_rng_state(state):
    _generator.bit_generator.state = state


def xp_random(device):
    """The random module that draws on `device` (numpy Generator or cupy.random)."""
    if device == "cuda":
        return backend.cupy_module().random
    return _generator
