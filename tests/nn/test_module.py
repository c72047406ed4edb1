"""nn.Module and nn.Parameter: registration, traversal, modes, state_dict (incl. torch's layout), devices."""
import collections
import copy
import pickle

import numpy as np
import pytest

import gradflow as gf
import gradflow.nn as nn
from tests.nn.compare import torch


class Block(nn.Module):
    def __init__(self, backend, channels):
        super().__init__()
        self.conv = backend.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn = backend.BatchNorm2d(channels)
        self.relu = backend.ReLU()

    def forward(self, x):
        return self.relu(self.bn(self.conv(x)))


def _build(net, backend):
    net.enc1 = backend.Sequential(backend.Conv2d(3, 4, 3, padding=1), backend.GroupNorm(2, 4), backend.ReLU())
    net.enc2 = backend.Sequential(backend.MaxPool2d(2), backend.Conv2d(4, 6, 3, padding=1),
                                  backend.BatchNorm2d(6), backend.ReLU())
    net.heads = backend.ModuleDict({"score": backend.Conv2d(6, 2, 1), "aux": backend.Conv2d(4, 2, 1)})
    net.up = backend.ConvTranspose2d(2, 2, 4, stride=2, padding=1, bias=False)
    net.blocks = backend.ModuleList([backend.Identity(), backend.Dropout2d(0.1)])


def _forward(net, x):
    f1 = net.enc1(x)
    f2 = net.enc2(f1)
    return net.up(net.heads["score"](f2)) + net.heads["aux"](f1)


class Net(nn.Module):
    """A small FCN-like network; TorchNet is the same in torch.nn (same key layout)."""

    def __init__(self):
        super().__init__()
        _build(self, nn)

    forward = _forward


class TorchNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        _build(self, torch.nn)

    forward = _forward


def make_net(backend):
    return Net() if backend is nn else TorchNet()


def test_named_parameters_buffers_and_state_dict_keys_match_torch():
    ours, theirs = make_net(nn), make_net(torch.nn)
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    assert [n for n, _ in ours.named_buffers()] == [n for n, _ in theirs.named_buffers()]
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert [n for n, _ in ours.named_modules()] == [n for n, _ in theirs.named_modules()]
    assert [n for n, _ in ours.named_children()] == [n for n, _ in theirs.named_children()]
    assert "enc1.0.weight" in ours.state_dict() and "enc2.2.num_batches_tracked" in ours.state_dict()
    assert repr(ours) == repr(theirs).replace("TorchNet(", "Net(", 1)


def test_torch_state_dict_round_trip_and_same_outputs():
    ours, theirs = make_net(nn), make_net(torch.nn)
    theirs.double().eval()
    ours.double().eval()
    with torch.no_grad():   # non-default running statistics, so they visibly travel
        theirs.enc2[2].running_mean.uniform_(-1, 1)
        theirs.enc2[2].running_var.uniform_(0.5, 2)
        theirs.enc2[2].num_batches_tracked.fill_(7)
    assert ours.load_state_dict(theirs.state_dict()) == ([], [])
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8))
    np.testing.assert_allclose(ours(gf.tensor(x)).detach().numpy(), theirs(torch.tensor(x)).detach().numpy(),
                               rtol=1e-10, atol=1e-12)
    # and back: our state_dict (Tensors as numpy) loads strictly into a fresh torch module
    fresh = make_net(torch.nn).double().eval()
    fresh.load_state_dict({k: torch.from_numpy(v.numpy()) for k, v in ours.state_dict().items()})
    for (k, a), (_, b) in zip(fresh.state_dict().items(), theirs.state_dict().items()):
        assert a.dtype == b.dtype, k
        assert torch.equal(a, b), k
    assert ours.state_dict()["enc2.2.num_batches_tracked"].dtype == gf.int64


def test_state_dict_values_are_detached_copies():
    net = make_net(nn)
    state = net.state_dict()
    assert all(type(v) is gf.Tensor and not v.requires_grad for v in state.values())
    state["enc1.0.weight"].data[...] = 123.0
    assert not (net.enc1[0].weight.detach().numpy() == 123.0).any()
    kept = net.state_dict(keep_vars=True)
    assert kept["enc1.0.weight"] is net.enc1[0].weight


def test_load_state_dict_accepts_numpy_and_keeps_dtype_and_identity():
    net = make_net(nn)
    weight = net.enc1[0].weight
    state = {k: v.numpy().astype(np.float64) + 1 for k, v in net.state_dict().items()}
    state["enc2.2.num_batches_tracked"] = 5   # a plain int, as a tensor(5).item() would give
    net.load_state_dict(state)
    assert net.enc1[0].weight is weight and weight.dtype == gf.float32 and weight.requires_grad
    np.testing.assert_allclose(weight.detach().numpy(), state["enc1.0.weight"], rtol=1e-6)
    assert net.enc2[2].num_batches_tracked.item() == 5


def test_load_state_dict_errors_name_keys_and_shapes():
    net = make_net(nn)
    state = net.state_dict()
    del state["up.weight"]
    state["extra.weight"] = gf.zeros(2)
    with pytest.raises(RuntimeError) as info:
        net.load_state_dict(state)
    message = str(info.value)
    assert 'Error(s) in loading state_dict for Net' in message
    assert 'Missing key(s) in state_dict: "up.weight"' in message
    assert 'Unexpected key(s) in state_dict: "extra.weight"' in message
    result = net.load_state_dict(state, strict=False)
    assert result.missing_keys == ["up.weight"] and result.unexpected_keys == ["extra.weight"]

    state = net.state_dict()
    state["enc1.0.weight"] = np.zeros((4, 3, 5, 5))
    with pytest.raises(RuntimeError, match=r"size mismatch for enc1\.0\.weight: copying a param with shape "
                                           r"\(4, 3, 5, 5\) from checkpoint, the shape in current model is "
                                           r"\(4, 3, 3, 3\)"):
        net.load_state_dict(state, strict=False)
    state["enc1.0.weight"] = "not a tensor"
    with pytest.raises(RuntimeError, match='While copying the parameter named "enc1.0.weight"'):
        net.load_state_dict(state)


def test_shared_modules_and_parameters_are_listed_once():
    shared = nn.Linear(2, 2)
    net = nn.Sequential(shared, nn.ReLU(), shared)
    assert len(list(net.parameters())) == 2
    assert len(list(net.named_parameters(remove_duplicate=False))) == 4
    assert len(list(net.modules())) == 3
    assert list(net.state_dict()) == ["0.weight", "0.bias", "2.weight", "2.bias"]   # as torch: every path
    net.load_state_dict(net.state_dict())


def test_buffers_persistent_flag_and_registration():
    class WithBuffers(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("kept", gf.ones(2))
            self.register_buffer("scratch", gf.zeros(3), persistent=False)
            self.register_buffer("nothing", None)
            self.scale = nn.Parameter(gf.ones(1))

    m = WithBuffers()
    assert [n for n, _ in m.named_buffers()] == ["kept", "scratch"]
    assert list(m.state_dict()) == ["scale", "kept"]
    m.kept = gf.full((2,), 3.0)   # assigning to a buffer name replaces the buffer
    assert m.state_dict()["kept"].numpy().tolist() == [3.0, 3.0]
    with pytest.raises(TypeError, match="cannot assign 'list' as buffer 'kept'"):
        m.kept = [1, 2]
    with pytest.raises(TypeError, match="cannot assign 'Tensor' as parameter 'scale'"):
        m.scale = gf.ones(1)
    with pytest.raises(KeyError, match="attribute 'kept' already exists"):
        m.register_parameter("kept", nn.Parameter(gf.ones(1)))
    with pytest.raises(KeyError, match="buffer name can"):
        m.register_buffer("a.b", gf.ones(1))
    with pytest.raises(TypeError, match="cannot assign 'ndarray' object to buffer 'raw'"):
        m.register_buffer("raw", np.ones(2))
    with pytest.raises(ValueError, match="non-leaf"):
        m.register_parameter("derived", _non_leaf_parameter())
    del m.kept
    assert "kept" not in m.state_dict()
    with pytest.raises(AttributeError, match="'WithBuffers' object has no attribute 'missing'"):
        m.missing


def _non_leaf_parameter():
    # a Parameter that came out of an op (what register_parameter rejects)
    result = nn.Parameter(gf.ones(2)) * 2
    return nn.Parameter._from_op(result.data, result._ctx, 0)


def test_reassigning_an_attribute_moves_it_between_registries():
    m = nn.Module()
    m.x = nn.Linear(1, 1)
    m.x = nn.Parameter(gf.ones(1))   # a Parameter replaces a child module of that name, as in torch
    assert "x" not in m._modules and m._parameters["x"] is m.x
    with pytest.raises(TypeError, match="cannot assign 'Linear' as parameter 'x'"):
        m.x = nn.Linear(1, 1)
    m.x = None
    assert m._parameters["x"] is None and list(m.parameters()) == []
    m.child = nn.ReLU()
    m.child = None
    assert m._modules["child"] is None and list(m.children()) == []


def test_train_eval_propagate_and_validate():
    net = make_net(nn)
    assert net.training and all(m.training for m in net.modules())
    assert net.eval() is net
    assert not any(m.training for m in net.modules())
    net.train()
    assert all(m.training for m in net.modules())
    with pytest.raises(ValueError, match="training mode is expected to be boolean"):
        net.train("yes")


def test_zero_grad_requires_grad_and_apply():
    net = nn.Linear(3, 2)
    net(gf.ones(1, 3)).sum().backward()
    assert net.weight.grad is not None
    net.zero_grad(set_to_none=False)
    assert (net.weight.grad.numpy() == 0).all()
    net.zero_grad()
    assert net.weight.grad is None
    net.requires_grad_(False)
    assert not any(p.requires_grad for p in net.parameters())
    visited = []
    make_net(nn).apply(lambda m: visited.append(type(m).__name__))
    assert visited[-1] == "Net" and visited[0] == "Conv2d"


def test_to_dtype_keeps_parameter_identity_and_integer_buffers():
    net = make_net(nn)
    params = list(net.parameters())
    assert net.double() is net
    assert all(a is b for a, b in zip(params, net.parameters()))
    assert all(p.dtype == gf.float64 for p in net.parameters())
    assert net.enc2[2].running_mean.dtype == gf.float64
    assert net.enc2[2].num_batches_tracked.dtype == gf.int64
    net.to(gf.float32)
    assert all(p.dtype == gf.float32 for p in net.parameters())
    net.to("cpu", dtype=np.float64)
    assert net.enc1[0].weight.dtype == gf.float64 and net.enc1[0].weight.device == "cpu"
    net.float()
    net.to(gf.zeros(1, dtype=gf.float64))
    assert net.enc1[0].weight.dtype == gf.float64
    with pytest.raises(TypeError, match="only accepts floating point or complex dtypes"):
        net.to(gf.int64)


def test_to_moves_grads_with_parameters():
    net = nn.Linear(2, 2)
    net(gf.ones(1, 2)).sum().backward()
    net.double()
    assert net.weight.grad.dtype == gf.float64


def test_forward_hooks_and_missing_forward():
    layer = nn.Identity()
    seen = []
    handle = layer.register_forward_hook(lambda module, args, output: output * 2)
    pre = layer.register_forward_pre_hook(lambda module, args: seen.append(args) or None)
    assert layer(gf.ones(1)).item() == 2.0 and len(seen) == 1
    handle.remove()
    pre.remove()
    assert layer(gf.ones(1)).item() == 1.0 and len(seen) == 1
    with pytest.raises(NotImplementedError, match='Module \\[Module\\] is missing the required "forward" function'):
        nn.Module()(gf.ones(1))


def test_get_submodule_parameter_buffer():
    net = make_net(nn)
    assert net.get_submodule("enc2.2") is net.enc2[2]
    assert net.get_parameter("heads.score.weight") is net.heads["score"].weight
    assert net.get_buffer("enc2.2.running_var") is net.enc2[2].running_var
    with pytest.raises(AttributeError, match="has no submodule `nope`"):
        net.get_submodule("enc1.nope")


def test_pickle_and_deepcopy_keep_parameters_and_values():
    net = make_net(nn)
    for clone in (pickle.loads(pickle.dumps(net)), copy.deepcopy(net)):
        assert all(isinstance(p, nn.Parameter) and p.requires_grad for p in clone.parameters())
        for (k, a), (_, b) in zip(clone.state_dict().items(), net.state_dict().items()):
            np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=k)
        assert clone.enc1[0].weight is not net.enc1[0].weight


def test_parameter_is_a_tensor_that_requires_grad_and_shares_data():
    data = gf.ones(2, 3)
    p = nn.Parameter(data)
    assert isinstance(p, gf.Tensor) and p.requires_grad and p.is_leaf
    assert p.data is data.data
    assert not nn.Parameter(gf.ones(1), requires_grad=False).requires_grad
    assert repr(p).startswith("Parameter containing:\ntensor(")
    with pytest.raises(RuntimeError, match="only floating point tensors can require gradients"):
        nn.Parameter(gf.tensor([1, 2]))


def test_state_dict_has_torch_style_metadata_and_ordered_keys():
    state = make_net(nn).state_dict()
    assert isinstance(state, collections.OrderedDict)
    assert state._metadata["enc2.2"]["version"] == 2


@pytest.mark.gpu
def test_to_cuda_moves_everything_in_place():
    net = make_net(nn)
    params = list(net.parameters())
    x = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)
    expected = net.eval()(gf.tensor(x)).detach().numpy()
    net.to("cuda")
    assert all(p.device == "cuda" for p in net.parameters()) and all(b.device == "cuda" for b in net.buffers())
    assert all(a is b for a, b in zip(params, net.parameters()))
    out = net(gf.tensor(x, device="cuda"))
    np.testing.assert_allclose(out.detach().cpu().numpy(), expected, rtol=1e-4, atol=1e-5)
    state = net.state_dict()
    assert all(v.device == "cuda" for v in state.values())
    net.cpu().load_state_dict(state)
    assert net.enc1[0].weight.device == "cpu"
