"""One table of op samples drives every op's gradcheck, PyTorch comparison and error tests.

Each test module lists its ops as OpInfo entries and calls ``op_tests(OPS)``:

    OPS = [OpInfo("conv2d", F.conv2d, torch_op=torch_F.conv2d, samples=conv_samples(), errors=...)]
    test_gradcheck, test_matches_torch, test_errors = op_tests(OPS)

A sample is ``Sample(args, kwargs)``: numpy float arrays in ``args`` become float64
tensors that require grad (those listed in ``grad`` when given), other numpy arrays
become constant tensors, everything else passes through unchanged.
"""
import dataclasses
from typing import Any, Callable, Optional

import numpy as np
import pytest
from hypothesis import given, strategies as st

import gradflow as gf


@dataclasses.dataclass
class Sample:
    args: tuple
    kwargs: dict = dataclasses.field(default_factory=dict)
    grad: Optional[tuple] = None     # indices of args to differentiate; None = all float arrays

    def differentiable(self, i, value):
        return isinstance(value, np.ndarray) and value.dtype.kind == "f" and (self.grad is None or i in self.grad)


@dataclasses.dataclass
class ErrorInput:
    sample: Sample
    error: type                       # ValueError, TypeError or RuntimeError
    match: str                        # regex the message must contain


@dataclasses.dataclass
class OpInfo:
    name: str
    op: Callable                      # gradflow callable taking tensors
    samples: Any                      # hypothesis strategy of Sample
    torch_op: Optional[Callable] = None   # torch callable with the same signature
    errors: tuple = ()
    gradcheck: bool = True
    atol: float = 1e-5                # gradcheck tolerances
    rtol: float = 1e-3
    torch_rtol32: float = 1e-4        # float32 comparison with torch (relative to max |value|)
    output_index: Optional[int] = None    # when op returns a tuple, compare this output only

    def __str__(self):
        return self.name


def to_gf(sample, dtype=np.float64, requires_grad=True):
    args = []
    for i, a in enumerate(sample.args):
        if isinstance(a, np.ndarray):
            if a.dtype.kind == "f":
                a = a.astype(dtype)
            args.append(gf.tensor(a, requires_grad=requires_grad and sample.differentiable(i, a)))
        else:
            args.append(a)
    return args


def to_torch(sample, dtype, requires_grad=True):
    torch = pytest.importorskip("torch")
    tdtype = {np.float64: torch.float64, np.float32: torch.float32}[dtype]
    args = []
    for i, a in enumerate(sample.args):
        if isinstance(a, np.ndarray):
            if a.dtype.kind == "f":
                args.append(torch.tensor(a, dtype=tdtype, requires_grad=requires_grad and sample.differentiable(i, a)))
            else:
                args.append(torch.from_numpy(a.copy()))
        else:
            args.append(a)
    return args


def _pick(out, info):
    if info.output_index is not None:
        return out[info.output_index]
    return out


def check_against_torch(info, sample, dtype):
    """Forward and every input gradient equal to PyTorch's for one sample."""
    torch = pytest.importorskip("torch")
    gf_args = to_gf(sample, dtype)
    t_args = to_torch(sample, dtype)
    out = _pick(info.op(*gf_args, **sample.kwargs), info)
    ref = _pick(info.torch_op(*t_args, **sample.kwargs), info)
    ref_np = ref.detach().numpy()
    assert out.shape == tuple(ref_np.shape), f"{info.name}: shape {out.shape} vs torch {tuple(ref_np.shape)}"
    assert out.dtype == ref_np.dtype, f"{info.name}: dtype {out.dtype} vs torch {ref_np.dtype}"
    tol = 1e-10 if dtype == np.float64 else info.torch_rtol32
    assert_close(out.detach().numpy(), ref_np, tol, f"{info.name} forward")
    # PyTorch decides whether there is a gradient to compare: an output that torch can
    # differentiate must be differentiable here too (and the other way round)
    assert out.requires_grad == ref.requires_grad, \
        f"{info.name}: output requires_grad={out.requires_grad}, torch's {ref.requires_grad}"
    if not ref.requires_grad:
        return
    cotangent = np.random.default_rng(1).standard_normal(ref_np.shape).astype(dtype)
    out.backward(gf.tensor(cotangent))
    ref.backward(torch.tensor(cotangent))
    for i, (g, t) in enumerate(zip(gf_args, t_args)):
        if isinstance(t, torch.Tensor) and t.requires_grad:
            expected = np.zeros(t.shape) if t.grad is None else t.grad.numpy()
            got = np.zeros(t.shape) if g.grad is None else g.grad.numpy()
            assert_close(got, expected, tol * 10, f"{info.name} grad of input {i}")


def assert_close(got, expected, rtol, what):
    got = np.asarray(got, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert np.array_equal(np.isnan(got), np.isnan(expected)), f"{what}: NaN pattern differs"
    got, expected = got[~np.isnan(expected)], expected[~np.isnan(expected)]   # equal NaNs agree
    scale = max(1.0, float(np.abs(expected).max())) if expected.size else 1.0
    err = float(np.abs(got - expected).max()) if expected.size else 0.0
    assert err <= rtol * scale, f"{what}: max abs error {err:.3g} > {rtol:.1g} x {scale:.3g}"


def op_tests(ops):
    """Three parametrized tests over the table: gradcheck, torch comparison, error inputs."""

    @pytest.mark.parametrize("info", [o for o in ops if o.gradcheck], ids=[o.name for o in ops if o.gradcheck])
    @given(data=st.data())
    def test_gradcheck(info, data):
        sample = data.draw(info.samples)
        args = to_gf(sample)
        gf.gradcheck(lambda *a: _pick(info.op(*a, **sample.kwargs), info), args, atol=info.atol, rtol=info.rtol)

    torch_ops = [o for o in ops if o.torch_op is not None]

    @pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
    @pytest.mark.parametrize("info", torch_ops, ids=[o.name for o in torch_ops])
    @given(data=st.data())
    def test_matches_torch(info, dtype, data):
        check_against_torch(info, data.draw(info.samples), dtype)

    error_cases = [(o, e) for o in ops for e in o.errors]

    @pytest.mark.parametrize("info,case", error_cases,
                             ids=[f"{o.name}-{i}" for i, (o, _) in enumerate(error_cases)])
    def test_errors(info, case):
        args = to_gf(case.sample, requires_grad=False)
        with pytest.raises(case.error, match=case.match):
            info.op(*args, **case.sample.kwargs)

    # a table with no torch references (or no error inputs) gets no such test, not an empty one
    return test_gradcheck, (test_matches_torch if torch_ops else None), (test_errors if error_cases else None)


# ---- strategies shared by op tables --------------------------------------------------

def arrays(shape, low=-2.0, high=2.0, away_from=None):
    """Strategy: a float64 array of `shape` drawn from a seed (fast, shrinks well)."""
    def make(seed):
        a = np.random.default_rng(seed).uniform(low, high, size=shape)
        if away_from is not None:   # keep kinks (relu at 0, abs at 0) out of the finite-difference step
            a = np.where(np.abs(a - away_from) < 0.05, a + 0.1, a)
        return a
    return st.integers(0, 2**32 - 1).map(make)


def shapes(min_dims=0, max_dims=4, min_side=1, max_side=4):
    return st.lists(st.integers(min_side, max_side), min_size=min_dims, max_size=max_dims).map(tuple)


def broadcastable_pair(max_dims=3, max_side=3):
    """Two shapes that broadcast together, including size-1 dims and differing ranks."""
    @st.composite
    def pair(draw):
        full = draw(shapes(0, max_dims, 1, max_side))
        def sub(draw_):
            n = draw_(st.integers(0, len(full)))
            tail = full[len(full) - n:]
            return tuple(1 if draw_(st.booleans()) else s for s in tail)
        return sub(draw), sub(draw) if draw(st.booleans()) else full
    return pair()
