"""nn.Sequential, nn.ModuleList and nn.ModuleDict: indexing, mutation, keys and reprs as torch.nn."""
import collections

import numpy as np
import pytest

import gradflow as gf
import gradflow.nn as nn
from tests.nn.compare import assert_matches_torch, torch


def _layers(backend):
    return [backend.Linear(3, 4), backend.ReLU(), backend.Linear(4, 2), backend.Tanh()]


def test_sequential_forward_matches_torch():
    ours, theirs = nn.Sequential(*_layers(nn)), torch.nn.Sequential(*_layers(torch.nn))
    assert_matches_torch(ours, theirs, np.random.default_rng(0).standard_normal((5, 3)))


def test_sequential_indexing_and_mutation_match_torch():
    for backend in (nn, torch.nn):
        seq = backend.Sequential(*_layers(backend))
        assert len(seq) == 4 and isinstance(seq[-1], backend.Tanh)
        assert isinstance(seq[1:3], backend.Sequential) and len(seq[1:3]) == 2
        assert [type(m).__name__ for m in seq] == ["Linear", "ReLU", "Linear", "Tanh"]
        seq[1] = backend.Sigmoid()
        del seq[0]
        assert list(seq._modules) == ["0", "1", "2"]   # renumbered after deletion
        seq.append(backend.Identity())
        seq.insert(0, backend.ReLU())
        popped = seq.pop(1)
        assert isinstance(popped, backend.Sigmoid)
        seq.extend([backend.Tanh()])
        seq += backend.Sequential(backend.ReLU())
        with pytest.raises(IndexError):
            seq[10]
    summary = [type(m).__name__ for m in seq]
    assert summary == ["ReLU", "Linear", "Tanh", "Identity", "Tanh", "ReLU"]


def test_sequential_with_ordered_dict_keys_and_state_dict():
    def build(backend):
        return backend.Sequential(collections.OrderedDict([("conv", backend.Conv2d(1, 2, 3)),
                                                           ("act", backend.ReLU())]))
    ours, theirs = build(nn), build(torch.nn)
    assert list(ours.state_dict()) == list(theirs.state_dict()) == ["conv.weight", "conv.bias"]
    assert ours[0] is ours.conv
    assert repr(ours) == repr(theirs)
    combined = ours + nn.Sequential(nn.Identity())
    assert len(combined) == 3 and list(combined._modules) == ["0", "1", "2"]


def test_module_list_registers_and_indexes():
    layers = nn.ModuleList([nn.Linear(2, 2) for _ in range(3)])
    tlayers = torch.nn.ModuleList([torch.nn.Linear(2, 2) for _ in range(3)])
    assert len(list(layers.parameters())) == 6
    assert list(layers.state_dict()) == list(tlayers.state_dict())
    assert repr(layers) == repr(tlayers)   # "(0-2): 3 x Linear(...)"
    assert isinstance(layers[-1], nn.Linear) and isinstance(layers[:2], nn.ModuleList) and len(layers[:2]) == 2
    layers.append(nn.ReLU())
    layers.insert(1, nn.Tanh())
    del layers[0]
    assert [type(m).__name__ for m in layers] == ["Tanh", "Linear", "Linear", "ReLU"]
    layers[0] = nn.Identity()
    assert isinstance(layers.pop(0), nn.Identity) and len(layers) == 3
    layers += [nn.Sigmoid()]
    assert len(layers + nn.ModuleList([nn.ReLU()])) == 5
    mixed = nn.ModuleList([nn.ReLU(), nn.ReLU(), nn.Tanh()])
    tmixed = torch.nn.ModuleList([torch.nn.ReLU(), torch.nn.ReLU(), torch.nn.Tanh()])
    assert repr(mixed) == repr(tmixed) and repr(nn.ModuleList()) == repr(torch.nn.ModuleList())
    with pytest.raises(TypeError, match="should be called with an iterable"):
        layers.extend(nn.ReLU())
    with pytest.raises(IndexError, match="index 9 is out of range"):
        layers[9]


def test_module_dict_behaves_like_an_ordered_dict_of_modules():
    heads = nn.ModuleDict({"a": nn.Linear(2, 1)})
    heads["b"] = nn.Linear(2, 3)
    heads.update([("c", nn.ReLU())])
    assert list(heads) == ["a", "b", "c"] and "b" in heads and len(heads) == 3
    assert list(heads.keys()) == ["a", "b", "c"] and isinstance(heads["b"], nn.Linear)
    assert [k for k, _ in heads.items()] == ["a", "b", "c"] and len(list(heads.values())) == 3
    assert list(heads.state_dict()) == ["a.weight", "a.bias", "b.weight", "b.bias"]
    assert isinstance(heads.pop("c"), nn.ReLU)
    del heads["a"]
    assert list(heads) == ["b"]
    heads.clear()
    assert len(heads) == 0
    with pytest.raises(ValueError, match="should be a \\(key, module\\) pair"):
        heads.update([nn.ReLU()])
    theirs = torch.nn.ModuleDict({"x": torch.nn.ReLU(), "y": torch.nn.Conv2d(1, 1, 1)})
    assert repr(nn.ModuleDict({"x": nn.ReLU(), "y": nn.Conv2d(1, 1, 1)})) == repr(theirs)


def test_container_rejects_non_modules():
    with pytest.raises(TypeError, match="int is not a Module subclass"):
        nn.Sequential(nn.ReLU(), 3)
    x = gf.ones(2, 3)
    assert nn.Sequential()(x) is x
