import numpy as np
import pytest
from hypothesis import given, strategies as st

import gradflow as gf
from tests.opinfo import ErrorInput, OpInfo, Sample, arrays, broadcastable_pair, op_tests, shapes

torch = pytest.importorskip("torch")


def binary_samples(low=-2.0, high=2.0, b_low=None, b_high=None):
    @st.composite
    def draw(d):
        sa, sb = d(broadcastable_pair())
        a = d(arrays(sa, low, high))
        b = d(arrays(sb, b_low if b_low is not None else low, b_high if b_high is not None else high))
        if d(st.booleans()) and d(st.booleans()):    # tensor op Python scalar
            return Sample((a, float(d(st.floats(0.5, 2.0)))))
        return Sample((a, b))
    return draw()


def unary_samples(low=-2.0, high=2.0, away_from=None):
    return shapes(0, 4, 1, 4).flatmap(lambda s: arrays(s, low, high, away_from)).map(lambda a: Sample((a,)))


def matmul_samples():
    @st.composite
    def draw(d):
        n, k, m = d(st.integers(1, 4)), d(st.integers(1, 4)), d(st.integers(1, 4))
        batch_a, batch_b = d(broadcastable_pair(max_dims=2))
        kind = d(st.sampled_from(["mm", "bmm", "mv", "vm", "vv"]))
        if kind == "mm":
            sa, sb = (n, k), (k, m)
        elif kind == "bmm":
            sa, sb = batch_a + (n, k), batch_b + (k, m)
        elif kind == "mv":
            sa, sb = batch_a + (n, k), (k,)
        elif kind == "vm":
            sa, sb = (k,), batch_b + (k, m)
        else:
            sa, sb = (k,), (k,)
        return Sample((d(arrays(sa)), d(arrays(sb))))
    return draw()


def clamp_tensor_samples():
    """x, min, max on interleaved grids (x = 0.3k, min = 0.3k + 0.1, max = 0.3k + 0.2), so no
    two values are within 0.1 of each other: finite differences never cross a tie, and both
    min < max and min > max (every output is max) occur. Any subset of the three may need grad."""
    def grid(shape, offset):
        return st.integers(0, 2**32 - 1).map(
            lambda seed: np.asarray(np.random.default_rng(seed).integers(-5, 6, size=shape) * 0.3 + offset))

    @st.composite
    def draw(d):
        full = d(shapes(0, 3, 1, 3))
        def sub():   # a shape that broadcasts to `full`
            n = d(st.integers(0, len(full)))
            return tuple(1 if d(st.booleans()) else s for s in full[len(full) - n:])
        x, lo, hi = d(grid(full, 0.0)), d(grid(sub(), 0.1)), d(grid(sub(), 0.2))
        which = d(st.sampled_from(["both", "min", "max"]))
        lo, hi = (lo if which != "max" else None), (hi if which != "min" else None)
        args = (x, lo, hi)
        grad = tuple(i for i, a in enumerate(args) if a is not None and d(st.booleans()))
        return Sample(args, grad=grad or (0,))
    return draw()


OPS = [
    OpInfo("add", lambda a, b: a + b, binary_samples(), torch_op=lambda a, b: a + b),
    OpInfo("sub", lambda a, b: a - b, binary_samples(), torch_op=lambda a, b: a - b),
    OpInfo("rsub", lambda a: 1.5 - a, unary_samples(), torch_op=lambda a: 1.5 - a),
    OpInfo("mul", lambda a, b: a * b, binary_samples(), torch_op=lambda a, b: a * b),
    OpInfo("div", lambda a, b: a / b, binary_samples(b_low=0.5, b_high=2.0), torch_op=lambda a, b: a / b),
    OpInfo("rdiv", lambda b: 2.0 / b, unary_samples(0.5, 2.0), torch_op=lambda b: 2.0 / b),
    OpInfo("pow", lambda a, b: a ** b, binary_samples(0.5, 2.0), torch_op=lambda a, b: a ** b),
    OpInfo("rpow", lambda a: 1.7 ** a, unary_samples(), torch_op=lambda a: 1.7 ** a),
    OpInfo("pow_int", lambda a: a ** 3, unary_samples(), torch_op=lambda a: a ** 3),
    OpInfo("neg", lambda a: -a, unary_samples(), torch_op=lambda a: -a),
    OpInfo("matmul", lambda a, b: a @ b, matmul_samples(), torch_op=lambda a, b: a @ b,
           errors=(ErrorInput(Sample((np.ones((2, 3)), np.ones((2, 3)))), ValueError, r"\(2, 3\) and \(2, 3\)"),)),
    OpInfo("exp", lambda a: a.exp(), unary_samples(), torch_op=torch.exp),
    OpInfo("log", lambda a: a.log(), unary_samples(0.2, 3.0), torch_op=torch.log),
    OpInfo("sqrt", lambda a: a.sqrt(), unary_samples(0.2, 3.0), torch_op=torch.sqrt),
    OpInfo("abs", lambda a: a.abs(), unary_samples(away_from=0.0), torch_op=torch.abs),
    OpInfo("relu", lambda a: a.relu(), unary_samples(away_from=0.0), torch_op=torch.relu),
    OpInfo("sigmoid", lambda a: a.sigmoid(), unary_samples(-6, 6), torch_op=torch.sigmoid),
    OpInfo("tanh", lambda a: a.tanh(), unary_samples(), torch_op=torch.tanh),
    OpInfo("clamp", lambda a, lo=-0.5, hi=0.7: a.clamp(lo, hi), unary_samples(away_from=0.7),
           torch_op=lambda a: a.clamp(-0.5, 0.7),
           errors=(ErrorInput(Sample((np.ones(2),), dict(lo=None, hi=None)), ValueError, "at least one"),)),
    OpInfo("clamp_min", lambda a: a.clamp(min=0.3), unary_samples(away_from=0.3), torch_op=lambda a: a.clamp(min=0.3)),
    OpInfo("clamp_tensor", lambda a, lo, hi: a.clamp(lo, hi), clamp_tensor_samples(),
           torch_op=lambda a, lo, hi: a.clamp(lo, hi),
           errors=(ErrorInput(Sample((np.ones(2), np.ones(3), None)), ValueError, "broadcast"),
                   ErrorInput(Sample((np.ones(2), "a", None)), TypeError, "unsupported operand"))),
    OpInfo("where", lambda a, b, float_condition=False: gf.where(a if float_condition else a > 0, a, b),
           binary_samples().filter(lambda s: isinstance(s.args[1], np.ndarray)),
           torch_op=lambda a, b: torch.where(a > 0, a, b),
           errors=(ErrorInput(Sample((np.ones(2), np.ones(2)), dict(float_condition=True)), TypeError, "bool"),)),
]

test_gradcheck, test_matches_torch, test_errors = op_tests(OPS)


@given(broadcastable_pair())
def test_comparisons_match_numpy_and_carry_no_grad(pair):
    a = np.random.default_rng(0).integers(-2, 3, pair[0]).astype(np.float32)
    b = np.random.default_rng(1).integers(-2, 3, pair[1]).astype(np.float32)
    ta = gf.tensor(a, requires_grad=True)
    for got, expected in [(ta < gf.tensor(b), a < b), (ta <= b, a <= b), (ta > b, a > b),
                          (ta >= b, a >= b), (ta == b, a == b), (ta != b, a != b)]:
        assert got.dtype == gf.bool_ and not got.requires_grad
        np.testing.assert_array_equal(got.numpy(), expected)


def test_float32_stays_float32_with_python_scalars():
    x = gf.randn(3, requires_grad=True)
    for y in (x + 1.5, 2 * x, x / 3, x ** 2, 1 - x, x.exp(), x.sigmoid()):
        assert y.dtype == gf.float32


class _ArrayFromCupy(np.ndarray):
    """Stands in for a CuPy array: gradflow tells devices apart by the array type's module."""
    __module__ = "cupy"


def test_mixed_devices_are_refused_with_both_names():
    from gradflow.ops.elementwise import Add
    a, fake = gf.randn(2), gf.randn(2)
    fake.data = fake.data.view(_ArrayFromCupy)
    assert fake.device == "cuda"
    with pytest.raises(RuntimeError, match=r"Add: .* found cpu \(shape \(2,\)\) and cuda"):
        Add.apply(a, fake)
    with pytest.raises(RuntimeError, match=r"found cuda \(shape \(2,\)\) and cpu"):
        Add.apply(fake, a)


def test_unsupported_operand_type():
    with pytest.raises(TypeError, match="unsupported operand"):
        gf.randn(2) + "a"


@pytest.mark.parametrize("which", ["both", "min", "max"])
@pytest.mark.parametrize("needs", [(True, True, True), (False, True, False), (False, False, True), (True, False, False)],
                         ids=["all", "min-only", "max-only", "input-only"])
def test_clamp_tensor_bounds_with_ties_match_torch(which, needs):
    """Ties (x == min, x == max, min == max) and crossed bounds (min > max): who gets the
    gradient is a convention, and it must be PyTorch's (x where min <= x <= max, min where
    x < min < max, max where x > max or max < min)."""
    rng = np.random.default_rng(7)
    x, lo, hi = (rng.integers(-2, 3, size=shape).astype(np.float64) for shape in [(4, 50), (50,), (4, 1)])
    lo = lo if which != "max" else None
    hi = hi if which != "min" else None
    g = rng.standard_normal((4, 50))
    ours = [None if a is None else gf.tensor(a, requires_grad=n) for a, n in zip((x, lo, hi), needs)]
    ref = [None if a is None else torch.tensor(a, requires_grad=n) for a, n in zip((x, lo, hi), needs)]
    out, ref_out = ours[0].clamp(ours[1], ours[2]), ref[0].clamp(ref[1], ref[2])
    np.testing.assert_array_equal(out.detach().numpy(), ref_out.detach().numpy())
    if not any(n for a, n in zip((x, lo, hi), needs) if a is not None):
        return
    out.backward(gf.tensor(g))
    ref_out.backward(torch.tensor(g))
    for name, o, r in zip(("input", "min", "max"), ours, ref):
        if r is not None and r.requires_grad:
            assert o.grad is not None, f"no gradient for {name}"
            np.testing.assert_allclose(o.grad.numpy(), r.grad.numpy(), rtol=1e-12, atol=1e-12, err_msg=name)


def test_clamp_tensor_bound_keeps_float32_and_promotes_like_torch():
    x = gf.randn(3)
    assert x.clamp(gf.zeros(3)).dtype == gf.float32
    assert x.clamp(gf.zeros(3, dtype=gf.float64)).dtype == gf.float64
    assert x.clamp(0.1, 0.2).dtype == gf.float32
