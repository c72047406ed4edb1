"""What gets mutated, and which tests judge each mutant.

Every `backward` in gradflow/ops/ and every function of the CPU kernels. Each module
maps to the test files that exercise it (kept small: each mutant runs them once, and a
mutated kernel file is compiled afresh by numba). A module found here but missing from
TESTS is reported, not silently skipped.
"""
import glob

OPS_TESTS = {
    "gradflow/ops/activation.py": ["tests/ops/test_activation.py"],
    "gradflow/ops/bce.py": ["tests/ops/test_loss.py"],
    "gradflow/ops/conv.py": ["tests/ops/test_conv.py"],
    "gradflow/ops/dice.py": ["tests/ops/test_loss.py"],
    "gradflow/ops/dropout.py": ["tests/ops/test_dropout.py"],
    "gradflow/ops/elementwise.py": ["tests/ops/test_elementwise.py"],
    "gradflow/ops/loss.py": ["tests/ops/test_loss.py"],
    "gradflow/ops/norm.py": ["tests/ops/test_norm.py"],
    "gradflow/ops/pool.py": ["tests/ops/test_pool.py"],
    "gradflow/ops/reduce.py": ["tests/ops/test_reduce.py", "tests/ops/test_zero_dim.py"],
    "gradflow/ops/resample.py": ["tests/ops/test_resample.py"],
    "gradflow/ops/shape.py": ["tests/ops/test_shape.py", "tests/ops/test_zero_dim.py"],
    "gradflow/ops/softmax.py": ["tests/ops/test_softmax.py"],
}

KERNEL_TESTS = {
    "gradflow/kernels/cpu/conv.py": ["tests/kernels/cpu/test_conv_kernels.py", "tests/ops/test_conv.py"],
    "gradflow/kernels/cpu/conv_direct.py": ["tests/kernels/cpu/test_conv_kernels.py", "tests/ops/test_conv.py"],
    "gradflow/kernels/cpu/conv_stride2.py": ["tests/kernels/cpu/test_conv_kernels.py", "tests/ops/test_conv.py"],
    "gradflow/kernels/cpu/im2col.py": ["tests/kernels/cpu/test_conv_kernels.py", "tests/ops/test_conv.py"],
    "gradflow/kernels/cpu/norm.py": ["tests/ops/test_norm.py"],
    "gradflow/kernels/cpu/pool.py": ["tests/ops/test_pool.py"],
}


def _is_backward(name):
    return name == "backward" or name.endswith(".backward")


def _any_function(name):
    return True


def targets(root):
    """[(module path, function selector, test files)] for every module to mutate."""
    out = []
    for pattern, tests, select in (("gradflow/ops/*.py", OPS_TESTS, _is_backward),
                                   ("gradflow/kernels/cpu/*.py", KERNEL_TESTS, _any_function)):
        for path in sorted(glob.glob(pattern, root_dir=root)):
            if path.endswith("__init__.py"):
                continue
            out.append((path, select, tests.get(path)))
    return out
