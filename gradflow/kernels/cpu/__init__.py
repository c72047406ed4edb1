"""CPU kernels (numba.njit, parallel over fixed blocks; see gradflow.threads)."""
from gradflow import threads

threads.configure()
