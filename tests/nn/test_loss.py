"""nn.CrossEntropyLoss, nn.NLLLoss and nn.BCEWithLogitsLoss against torch.nn."""
import warnings

import numpy as np
import pytest

import gradflow as gf
import gradflow.nn as nn
from tests.nn.compare import assert_matches_torch, torch


def _torch_kwargs(kwargs):
    return {k: torch.tensor(v) if isinstance(v, np.ndarray) else v for k, v in kwargs.items()}


def _gf_kwargs(kwargs):
    return {k: gf.tensor(v) if isinstance(v, np.ndarray) else v for k, v in kwargs.items()}


def _logits_and_target(spatial, seed=0, classes=4, ignore=None):
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((3, classes, *spatial))
    target = rng.integers(0, classes, (3, *spatial))
    if ignore is not None:
        target[0, ...] = ignore   # a whole sample ignored, plus a scattered few
        target.flat[-1] = ignore
    return logits, target


@pytest.mark.parametrize("spatial", [(), (4, 5)])
@pytest.mark.parametrize("kwargs", [
    dict(),
    dict(reduction="sum"),
    dict(reduction="none"),
    dict(weight=np.array([0.2, 1.0, 2.0, 0.7])),
    dict(ignore_index=2),
    dict(ignore_index=255, weight=np.array([0.2, 1.0, 2.0, 0.7])),
    dict(label_smoothing=0.1),
    dict(label_smoothing=0.2, weight=np.array([0.2, 1.0, 2.0, 0.7]), ignore_index=255),
])
def test_cross_entropy_loss_matches_torch(spatial, kwargs):
    ignore = kwargs.get("ignore_index")
    logits, target = _logits_and_target(spatial, ignore=ignore)
    ours, theirs = nn.CrossEntropyLoss(**_gf_kwargs(kwargs)), torch.nn.CrossEntropyLoss(**_torch_kwargs(kwargs))
    assert_matches_torch(ours, theirs, logits, target)


@pytest.mark.parametrize("kwargs", [dict(), dict(reduction="sum"), dict(weight=np.array([0.5, 1.0, 3.0])),
                                    dict(ignore_index=1, reduction="none")])
def test_nll_loss_matches_torch(kwargs):
    rng = np.random.default_rng(1)
    log_probs = np.log(rng.dirichlet(np.ones(3), size=(2, 4, 4))).transpose(0, 3, 1, 2).copy()
    target = rng.integers(0, 3, (2, 4, 4))
    ours, theirs = nn.NLLLoss(**_gf_kwargs(kwargs)), torch.nn.NLLLoss(**_torch_kwargs(kwargs))
    assert_matches_torch(ours, theirs, log_probs, target)


@pytest.mark.parametrize("kwargs", [
    dict(), dict(reduction="sum"), dict(reduction="none"),
    dict(weight=np.array([[0.5], [2.0], [1.0], [0.0]])),
    dict(pos_weight=np.array([1.0, 3.0, 0.5])),
    dict(weight=np.array([1.0, 0.1, 2.0]), pos_weight=np.array([2.0, 1.0, 0.5]), reduction="sum"),
])
def test_bce_with_logits_loss_matches_torch(kwargs):
    rng = np.random.default_rng(2)
    logits = rng.standard_normal((2, 4, 3)) * 3
    target = (rng.random((2, 4, 3)) > 0.5).astype(np.float64)
    ours = nn.BCEWithLogitsLoss(**_gf_kwargs(kwargs))
    theirs = torch.nn.BCEWithLogitsLoss(**_torch_kwargs(kwargs))
    out, tout = ours(gf.tensor(logits, requires_grad=True), gf.tensor(target)), theirs(
        torch.tensor(logits, requires_grad=True), torch.tensor(target))
    np.testing.assert_allclose(out.detach().numpy(), tout.detach().numpy(), rtol=1e-10)
    # the target is a float array here, so compare the logits' gradient directly
    x, tx = gf.tensor(logits, requires_grad=True), torch.tensor(logits, requires_grad=True)
    ours(x, gf.tensor(target)).sum().backward()
    theirs(tx, torch.tensor(target)).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy(), rtol=1e-9, atol=1e-12)


def test_loss_weights_are_buffers_in_state_dict_like_torch():
    weight = np.array([1.0, 2.0, 3.0])
    ours, theirs = nn.CrossEntropyLoss(weight=gf.tensor(weight)), torch.nn.CrossEntropyLoss(weight=torch.tensor(weight))
    assert list(ours.state_dict()) == list(theirs.state_dict()) == ["weight"]
    ours = nn.BCEWithLogitsLoss(pos_weight=gf.tensor(weight))
    theirs = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor(weight))
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert repr(ours) == repr(theirs) == "BCEWithLogitsLoss()"


@pytest.mark.parametrize("size_average, reduce, expected", [
    (None, None, "mean"), (False, None, "sum"), (True, False, "none"), (None, False, "none"), (False, True, "sum")])
def test_legacy_reduction_flags(size_average, reduce, expected):
    legacy = size_average is not None or reduce is not None
    with pytest.warns(UserWarning, match=f"please use reduction='{expected}'") if legacy else warnings.catch_warnings():
        assert nn.CrossEntropyLoss(size_average=size_average, reduce=reduce).reduction == expected
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert torch.nn.CrossEntropyLoss(size_average=size_average, reduce=reduce).reduction == expected


def test_invalid_reduction_and_label_smoothing():
    with pytest.raises(ValueError, match="'average' is not a valid value for reduction"):
        nn.CrossEntropyLoss(reduction="average")
    with pytest.raises(ValueError, match="label_smoothing must be between 0.0 and 1.0, got 1.5"):
        nn.CrossEntropyLoss(label_smoothing=1.5)
