"""nn.BatchNorm2d and nn.GroupNorm against torch.nn: outputs, grads, running statistics, modes."""
import numpy as np
import pytest

import gradflow as gf
import gradflow.nn as nn
from tests.nn.compare import assert_close, assert_matches_torch, torch


def _input(seed, shape=(3, 4, 5, 5)):
    # scale and shift per channel so statistics are far from 0 and 1 (variance well away from zero)
    rng = np.random.default_rng(seed)
    per_channel = (1, shape[1], 1, 1)
    return rng.standard_normal(shape) * rng.uniform(0.5, 3, per_channel) + rng.uniform(-2, 2, per_channel)


@pytest.mark.parametrize("kwargs", [
    dict(),
    dict(momentum=None),
    dict(momentum=0.3, eps=1e-3),
    dict(affine=False),
    dict(bias=False),
    dict(track_running_stats=False),
])
def test_batch_norm_training_steps_match_torch(kwargs):
    ours, theirs = nn.BatchNorm2d(4, **kwargs), torch.nn.BatchNorm2d(4, **kwargs)
    if ours.weight is not None:   # non-trivial affine parameters
        with torch.no_grad():
            theirs.weight.uniform_(0.5, 1.5)
            if theirs.bias is not None:
                theirs.bias.uniform_(-1, 1)
    ours.load_state_dict(theirs.state_dict())
    for step in range(3):
        # each step: outputs, grads and running statistics (compared after each forward)
        assert_matches_torch(ours, theirs, _input(step), seed=step, load=False)
        for p in list(ours.parameters()) + list(theirs.parameters()):
            p.grad = None
    if kwargs.get("track_running_stats", True):
        assert ours.num_batches_tracked.item() == 3 and ours.num_batches_tracked.dtype == gf.int64
    ours.eval(), theirs.eval()
    assert_matches_torch(ours, theirs, _input(10), seed=10, load=False)


def test_batch_norm_eval_uses_loaded_running_stats():
    theirs = torch.nn.BatchNorm2d(4).double()
    with torch.no_grad():
        theirs.running_mean.uniform_(-1, 1)
        theirs.running_var.uniform_(0.5, 2)
        theirs.weight.uniform_(0.5, 1.5)
    ours = nn.BatchNorm2d(4)
    ours.eval(), theirs.eval()
    assert_matches_torch(ours, theirs, _input(0))


def test_batch_norm_without_running_stats_uses_batch_stats_in_eval():
    ours, theirs = nn.BatchNorm2d(4, track_running_stats=False), torch.nn.BatchNorm2d(4, track_running_stats=False)
    ours.eval(), theirs.eval()
    assert ours.running_mean is None and "running_mean" not in ours.state_dict()
    assert_matches_torch(ours, theirs, _input(1))


def test_batch_norm_rejects_non_4d_input():
    with pytest.raises(ValueError, match=r"expected 4D input \(got 3D input\)"):
        nn.BatchNorm2d(4)(gf.zeros(2, 4, 5))


def test_batch_norm_state_dict_layout_and_defaults():
    bn = nn.BatchNorm2d(3)
    state = bn.state_dict()
    assert list(state) == list(torch.nn.BatchNorm2d(3).state_dict())
    np.testing.assert_array_equal(state["weight"].numpy(), np.ones(3))
    np.testing.assert_array_equal(state["bias"].numpy(), np.zeros(3))
    np.testing.assert_array_equal(state["running_var"].numpy(), np.ones(3))
    assert state["num_batches_tracked"].dtype == gf.int64 and state["num_batches_tracked"].shape == ()


def test_batch_norm_loads_old_checkpoint_without_num_batches_tracked():
    # PyTorch loads pre-version-2 state_dicts (no num_batches_tracked, no metadata) strictly.
    bn = nn.BatchNorm2d(2)
    state = {k: v for k, v in nn.BatchNorm2d(2).state_dict().items() if k != "num_batches_tracked"}
    assert bn.load_state_dict(state) == ([], [])
    versioned = nn.BatchNorm2d(2).state_dict()
    del versioned["num_batches_tracked"]
    with pytest.raises(RuntimeError, match='Missing key\\(s\\) in state_dict: "num_batches_tracked"'):
        bn.load_state_dict(versioned)


@pytest.mark.parametrize("num_groups, channels, kwargs", [
    (1, 4, {}), (2, 4, {}), (4, 4, {}), (3, 6, dict(eps=1e-3)), (2, 4, dict(affine=False)), (2, 4, dict(bias=False)),
])
def test_group_norm_matches_torch(num_groups, channels, kwargs):
    ours, theirs = nn.GroupNorm(num_groups, channels, **kwargs), torch.nn.GroupNorm(num_groups, channels, **kwargs)
    if theirs.weight is not None:
        with torch.no_grad():
            theirs.weight.uniform_(0.5, 1.5)
            if theirs.bias is not None:
                theirs.bias.uniform_(-1, 1)
    assert_matches_torch(ours, theirs, _input(3, (2, channels, 4, 3)))
    assert repr(ours) == repr(theirs)


@pytest.mark.parametrize("num_groups", [3, 0, -2])
def test_group_norm_requires_a_positive_divisor_of_the_channels(num_groups):
    with pytest.raises(ValueError, match=f"num_groups must be positive and divide num_channels "
                                         f"\\(num_channels=4, num_groups={num_groups}\\)"):
        nn.GroupNorm(num_groups, 4)


def test_norm_reprs_match_torch():
    for kwargs in (dict(), dict(momentum=None, affine=False), dict(track_running_stats=False, eps=1e-3)):
        assert repr(nn.BatchNorm2d(5, **kwargs)) == repr(torch.nn.BatchNorm2d(5, **kwargs))


def test_batch_norm_momentum_none_is_cumulative_average():
    bn = nn.BatchNorm2d(2, momentum=None).double()
    batches = [_input(i, (4, 2, 3, 3)) for i in range(3)]
    for x in batches:
        bn(gf.tensor(x))
    means = [x.mean(axis=(0, 2, 3)) for x in batches]
    assert_close(bn.running_mean, np.mean(means, axis=0), "cumulative running mean")
