"""Every op that takes a dim, on a 0-dim tensor, against PyTorch.

PyTorch treats a scalar as having one addressable dim: 0 and -1 are accepted (and mean
"the whole scalar"), anything else is an IndexError. The same call is made on both
libraries; either both raise the same exception type, or the results (value, shape,
dtype) and the gradient of the input agree.
"""
import numpy as np
import pytest

import gradflow as gf
import gradflow.functional as F

torch = pytest.importorskip("torch")
TF = torch.nn.functional

DIMS = [0, -1, 1, -2]


def _case(name, call):
    return pytest.param(call, id=name)


def _cases():
    cases = []
    for d in DIMS:
        for keepdim in (False, True):
            for op in ("sum", "mean", "argmax", "argmin"):
                cases.append(_case(f"{op}-{d}-keep{keepdim}",
                                   lambda lib, x, op=op, d=d, k=keepdim: getattr(x, op)(dim=d, keepdim=k)))
            for op in ("max", "min"):
                cases.append(_case(f"{op}-{d}-keep{keepdim}",
                                   lambda lib, x, op=op, d=d, k=keepdim: tuple(getattr(x, op)(d, k))))
        cases += [
            _case(f"sum-tuple-{d}", lambda lib, x, d=d: x.sum(dim=(d,))),
            _case(f"softmax-{d}", lambda lib, x, d=d: x.softmax(d)),
            _case(f"log_softmax-{d}", lambda lib, x, d=d: x.log_softmax(d)),
            _case(f"F.softmax-{d}", lambda lib, x, d=d: (F if lib is gf else TF).softmax(x, dim=d)),
            _case(f"F.log_softmax-{d}", lambda lib, x, d=d: (F if lib is gf else TF).log_softmax(x, dim=d)),
            _case(f"squeeze-{d}", lambda lib, x, d=d: x.squeeze(d)),
            _case(f"unsqueeze-{d}", lambda lib, x, d=d: x.unsqueeze(d)),
            _case(f"flatten-start{d}", lambda lib, x, d=d: x.flatten(d)),
            _case(f"flatten-end{d}", lambda lib, x, d=d: x.flatten(0, d)),
            _case(f"permute-{d}", lambda lib, x, d=d: x.permute(d)),
            _case(f"size-{d}", lambda lib, x, d=d: x.size(d)),
            _case(f"cat-{d}", lambda lib, x, d=d: lib.cat([x, x], dim=d)),
            _case(f"stack-{d}", lambda lib, x, d=d: lib.stack([x, x], dim=d)),
        ]
        for d1 in DIMS:
            cases.append(_case(f"transpose-{d}-{d1}", lambda lib, x, d=d, d1=d1: x.transpose(d, d1)))
    cases.append(_case("squeeze-all", lambda lib, x: x.squeeze()))
    cases.append(_case("flatten-default", lambda lib, x: x.flatten()))
    cases.append(_case("max-all", lambda lib, x: x.max()))
    return cases


def _run(call, lib, x):
    try:
        return call(lib, x), None
    except Exception as exc:   # noqa: BLE001 - the exception type is what is compared
        return None, exc


def _as_list(out):
    return list(out) if isinstance(out, tuple) else [out]


@pytest.mark.parametrize("call", _cases())
def test_zero_dim_matches_torch(call):
    value = 1.25
    x = gf.tensor(np.array(value), requires_grad=True)
    tx = torch.tensor(value, dtype=torch.float64, requires_grad=True)
    ours, our_error = _run(call, gf, x)
    ref, ref_error = _run(call, torch, tx)
    if ref_error is not None:
        assert our_error is not None, f"PyTorch raises {type(ref_error).__name__} ({ref_error}) but gradflow returned"
        # an out-of-range dim is an IndexError in both; PyTorch's RuntimeError for a call it
        # refuses otherwise may be gradflow's ValueError (its error for an invalid shape)
        allowed = (RuntimeError, ValueError) if type(ref_error) is RuntimeError else type(ref_error)
        assert isinstance(our_error, allowed), \
            f"gradflow raised {type(our_error).__name__} ({our_error}); PyTorch raises {type(ref_error).__name__}"
        assert str(our_error)
        return
    assert our_error is None, f"gradflow raised {type(our_error).__name__}: {our_error}; PyTorch returns {ref}"
    if not isinstance(ref, (tuple, torch.Tensor)):   # size(d): a plain int
        assert ours == ref
        return
    ours, ref = _as_list(ours), _as_list(ref)
    assert len(ours) == len(ref)
    for o, r in zip(ours, ref):
        assert o.shape == tuple(r.shape)
        assert o.dtype == np.dtype(str(r.dtype).replace("torch.", ""))
        np.testing.assert_allclose(o.detach().numpy(), r.detach().numpy(), rtol=1e-12)
    float_pairs = [(o, r) for o, r in zip(ours, ref) if r.requires_grad]
    assert [o.requires_grad for o, _ in float_pairs] == [True] * len(float_pairs)
    if float_pairs:
        sum(((o * 3.0).sum() for o, _ in float_pairs), gf.tensor(np.array(0.0))).backward()
        sum((r * 3.0).sum() for _, r in float_pairs).backward()
        np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy(), rtol=1e-12)
