"""BLAS's matrix product, callable from inside Numba kernels (CPU).

conv_gemm runs one GEMM per chunk of images in a prange loop, so that the chunks run on
Numba's own threads. On Python threads (NumPy's matmul releases the GIL) they had to share
the cores with the OpenMP workers, which spin for milliseconds after every parallel
kernel before they sleep: at 2 threads, 3x3 128 -> 128 channels at 8x8, batch 16, ran no
faster than at 1 (3.8 ms either way; 2.1 ms when no parallel kernel had run just before).

NumPy's wheels bundle OpenBLAS built with 64-bit integers; threadpoolctl finds the library
(the one gradflow.threads holds to one thread), ctypes its cblas_sgemm / cblas_dgemm.
GEMM_ADDRESSES maps a dtype to the function's address, which a kernel receives as a plain
integer argument, so the kernel itself stays cacheable. Where there is no such library
(another BLAS, another NumPy build) GEMM_ADDRESSES is empty and conv_gemm falls back to
NumPy's matmul.
"""
import ctypes

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

ROW_MAJOR, NO_TRANS, TRANS = 101, 111, 112          # CBLAS enum values
_SYMBOLS = ("scipy_cblas_{}gemm64_", "cblas_{}gemm64_")     # NumPy >= 2.0 wheels, NumPy 1.2x wheels


def _find_gemm():
    from threadpoolctl import threadpool_info
    for info in threadpool_info():
        if info.get("internal_api") != "openblas":
            continue
        try:
            library = ctypes.CDLL(info["filepath"])
        except OSError:
            continue
        for pattern in _SYMBOLS:
            try:
                functions = [getattr(library, pattern.format(kind)) for kind in "sd"]
            except AttributeError:
                continue
            addresses = [ctypes.cast(f, ctypes.c_void_p).value for f in functions]
            return {np.dtype(np.float32): addresses[0], np.dtype(np.float64): addresses[1]}
    return {}


GEMM_ADDRESSES = _find_gemm()


@intrinsic
def _call_cblas_gemm(typingctx, address, order, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
    """cblas_?gemm(order, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc) through
    the function at `address`: enums int32, sizes int64, alpha and beta of the matrices'
    type, the matrices as addresses (uintp)."""
    signature = types.void(address, order, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)

    def codegen(context, builder, sig, args):
        argument_types = [context.get_value_type(t) for t in sig.args[1:]]
        function = builder.inttoptr(args[0], ir.FunctionType(ir.VoidType(), argument_types).as_pointer())
        builder.call(function, args[1:])
    return signature, codegen


@njit(inline="always")
def gemm(address, a, b, c, transpose_b):
    """c = a @ b (or a @ b.T) for 2-D arrays whose rows are contiguous (any row pitch),
    a (M, K), b (K, N) or (N, K), c (M, N), all of one float type."""
    m, k = a.shape
    n = c.shape[1]
    one, zero = a.dtype.type(1), a.dtype.type(0)
    _call_cblas_gemm(address, np.int32(ROW_MAJOR), np.int32(NO_TRANS), np.int32(TRANS if transpose_b else NO_TRANS),
                     np.int64(m), np.int64(n), np.int64(k), one, a.ctypes.data, np.int64(a.strides[0] // a.itemsize),
                     b.ctypes.data, np.int64(b.strides[0] // b.itemsize), zero, c.ctypes.data,
                     np.int64(c.strides[0] // c.itemsize))
