"""CPU kernels (numba.njit, parallel over fixed blocks; see gradflow.threads).

Vector width: on a CPU with AVX-512, LLVM's tuning for most Intel cores ("prefer-256-bit")
makes the loop vectoriser emit 256-bit code even though 512-bit instructions and 32 vector
registers are available. gradflow's kernels are register-blocked loops whose loads and
stores per multiply-add halve with 512-bit vectors: measured on a 2-vCPU Rocket Lake
Xeon at 1 thread, the 4x4-band 3x3 convolution ran 1.3-1.5x faster (conv 3x3 64 -> 64
channels at 16x16, batch 32: 8.5 -> 5.8 ms) and the FCN-bench BatchNorm batch-32 step
went from 1.14x to 1.04x PyTorch's time. So unless the user chose a target
(NUMBA_CPU_NAME or NUMBA_CPU_FEATURES set), Numba compiles for the host's features with
that preference switched off. This must happen before Numba compiles anything in the
process; if something else compiled first, Numba keeps the target it already built
(correct, only slower). Vector width changes the order of some fastmath sums, so results
differ in the last bits between machines (as they do between CPUs anyway), never between
thread counts.
"""
import os

from gradflow import threads


def _prefer_full_vectors():
    if os.environ.get("NUMBA_CPU_NAME") or os.environ.get("NUMBA_CPU_FEATURES") is not None:
        return
    import llvmlite.binding as llvm
    from numba.core import config
    try:
        features = llvm.get_host_cpu_features()
    except RuntimeError:                # not every platform reports its features
        return
    if features.get("avx512f") and config.CPU_FEATURES is None:
        config.CPU_FEATURES = features.flatten() + ",-prefer-256-bit"


def _wide_vectors():
    """Whether Numba's code for this process has 512-bit vectors (and AVX-512's 32 vector
    registers): the target's feature list, as Numba passes it to LLVM, has AVX-512 and no
    256-bit preference. The 4x4-band convolution depends on it (conv_direct.BANDS)."""
    from numba.core import config
    features = config.CPU_FEATURES
    if features is None:                # Numba's default: the host's features
        import llvmlite.binding as llvm
        try:
            features = llvm.get_host_cpu_features().flatten()
        except RuntimeError:
            return False
    flags = set(features.split(","))
    return "+avx512f" in flags and "+prefer-256-bit" not in flags


_prefer_full_vectors()
WIDE_VECTORS = _wide_vectors()
threads.configure()
