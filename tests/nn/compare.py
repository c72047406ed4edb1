"""Run a gradflow module and its PyTorch twin on the same weights and inputs; compare everything.

The torch module's state_dict is loaded into ours (so the key layouts must agree),
both run in float64 on the same inputs, then the outputs, the gradients of every
float input and parameter (for a random upstream gradient) and the buffers after
the forward (running statistics) must match.
"""
import numpy as np
import pytest

import gradflow as gf

torch = pytest.importorskip("torch")


def _gf_input(x):
    if isinstance(x, np.ndarray):
        return gf.tensor(x, requires_grad=x.dtype.kind == "f")
    return x


def _torch_input(x):
    if isinstance(x, np.ndarray):
        return torch.tensor(x, requires_grad=x.dtype.kind == "f")
    return x


def assert_close(ours, theirs, what, rtol=1e-9, atol=1e-11):
    ours = ours.detach().numpy() if isinstance(ours, gf.Tensor) else np.asarray(ours)
    theirs = theirs.detach().numpy() if isinstance(theirs, torch.Tensor) else np.asarray(theirs)
    assert ours.shape == theirs.shape, f"{what}: shape {ours.shape} != torch's {theirs.shape}"
    np.testing.assert_allclose(ours, theirs, rtol=rtol, atol=atol, err_msg=what)


def assert_matches_torch(ours, theirs, *inputs, seed=0, rtol=1e-9, atol=1e-11, load=True):
    """Copy theirs' weights into ours, run both on inputs (numpy arrays), compare outputs and grads.

    Returns (our output, torch output).
    """
    theirs.double()
    ours.double()
    assert list(ours.state_dict()) == list(theirs.state_dict()), "state_dict keys differ from torch's"
    if load:
        ours.load_state_dict(theirs.state_dict())
    gf_inputs = [_gf_input(x) for x in inputs]
    torch_inputs = [_torch_input(x) for x in inputs]
    out, tout = ours(*gf_inputs), theirs(*torch_inputs)
    assert_close(out, tout, f"{type(ours).__name__} output", rtol, atol)
    for (name, b), (tname, tb) in zip(ours.named_buffers(), theirs.named_buffers()):
        assert name == tname
        assert_close(b, tb, f"buffer {name}", rtol, atol)
    if tout.requires_grad:
        upstream = np.random.default_rng(seed).standard_normal(tuple(tout.shape))
        out.backward(gf.tensor(upstream) if out.ndim else None)
        tout.backward(torch.tensor(upstream) if tout.ndim else None)
        for i, (x, tx) in enumerate(zip(gf_inputs, torch_inputs)):
            if isinstance(tx, torch.Tensor) and tx.requires_grad:
                assert_close(x.grad, tx.grad, f"grad of input {i}", rtol, atol)
        tparams = dict(theirs.named_parameters())
        for name, p in ours.named_parameters():
            if tparams[name].grad is None:
                assert p.grad is None, f"{name} has a grad but torch's has none"
            else:
                assert_close(p.grad, tparams[name].grad, f"grad of {name}", rtol, atol)
    return out, tout
