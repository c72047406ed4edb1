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


def test_mixed_devices_are_refused_with_both_names(monkeypatch):
    from gradflow.ops.elementwise import Add
    a = gf.randn(2)
    fake = gf.randn(2)
    monkeypatch.setattr(type(fake), "device", property(lambda self: "cuda" if self is fake else "cpu"))
    with pytest.raises(RuntimeError, match="cpu.*cuda"):
        Add.apply(a, fake)


def test_unsupported_operand_type():
    with pytest.raises(TypeError, match="unsupported operand"):
        gf.randn(2) + "a"
