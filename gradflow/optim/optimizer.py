"""Optimizer base: parameter groups, per-parameter state, zero_grad and PyTorch-layout state_dicts.

Subclasses implement ``_step_group(group, params, states)``: one update of a group's
parameters that have gradients, in place on their arrays (SGD and Adam use the fused
kernels of optim/fused.py), building no graph. The default calls
``_update(group, param, grad, state)`` on raw arrays per parameter. State values are arrays on the parameter's device (and Python
numbers); ``state_dict()`` returns numpy copies so a checkpoint pickles anywhere.
"""
import collections
import copy
import itertools
import warnings

import numpy as np

from gradflow import autograd, backend
from gradflow.tensor import Tensor


def _to_array(value):
    """An array from a gradflow Tensor, numpy/cupy array or torch tensor; None for anything else."""
    if isinstance(value, Tensor):
        return value.data
    if isinstance(value, np.ndarray) or backend.is_cuda_array(value):
        return value
    if all(hasattr(value, name) for name in ("detach", "cpu", "numpy")):   # torch, without importing it
        return value.detach().cpu().numpy()
    return None


class Optimizer:
    def __init__(self, params, defaults):
        self.defaults = defaults
        if isinstance(params, Tensor):
            raise TypeError("params argument given to the optimizer should be an iterable of Tensors or dicts, "
                            f"but got {type(params).__name__}")
        self.state = collections.defaultdict(dict)
        self.param_groups = []
        param_groups = list(params)
        if not param_groups:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(param_groups[0], dict):
            param_groups = [{"params": param_groups}]
        for group in param_groups:
            self.add_param_group(group)

    def add_param_group(self, param_group):
        """Add a group of parameters with its own options (missing options take the defaults)."""
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, but got {type(param_group).__name__}")
        params = param_group["params"]
        if isinstance(params, Tensor):
            params = [params]
        elif isinstance(params, set):
            raise TypeError("optimizer parameters need to be organized in ordered collections, but the ordering "
                            "of tensors in sets will change between runs. Please use a list instead.")
        param_group["params"] = params = list(params)
        for param in params:
            if not isinstance(param, Tensor):
                raise TypeError(f"optimizer can only optimize Tensors, but one of the params is {type(param).__name__}")
            if not param.is_leaf:
                raise ValueError("can't optimize a non-leaf Tensor")
        for name, default in self.defaults.items():
            param_group.setdefault(name, default)
        if len({id(p) for p in params}) != len(params):
            warnings.warn("optimizer contains a parameter group with duplicate parameters; each is updated once "
                          "per occurrence", stacklevel=3)
        existing = {id(p) for group in self.param_groups for p in group["params"]}
        if any(id(p) in existing for p in params):
            raise ValueError("some parameters appear in more than one parameter group")
        self.param_groups.append(param_group)

    def zero_grad(self, set_to_none=True):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if set_to_none:
                    p.grad = None
                else:
                    p.grad.data[...] = 0

    def step(self, closure=None):
        """One update of every parameter that has a gradient; returns closure() when given."""
        self._opt_called = True   # lets a scheduler warn when it is stepped before the optimizer
        loss = None
        if closure is not None:
            with autograd.enable_grad():
                loss = closure()
        with autograd.no_grad():
            for group in self.param_groups:
                params = [p for p in group["params"] if p.grad is not None]
                if params:
                    self._step_group(group, params, [self.state[p] for p in params])
        return loss

    def _step_group(self, group, params, states):
        for p, state in zip(params, states):
            self._update(group, p.data, p.grad.data, state)

    def _update(self, group, param, grad, state):
        raise NotImplementedError(f"{type(self).__name__} does not implement _update")

    # ---- state_dict ---------------------------------------------------------------------
    def state_dict(self):
        """{'state': {param index: {name: numpy copy or number}}, 'param_groups': [{..., 'params': [indices]}]}."""
        index_of = {}
        param_groups = []
        for group in self.param_groups:
            packed = {k: copy.deepcopy(v) for k, v in group.items() if k != "params"}
            for p in group["params"]:
                index_of.setdefault(id(p), len(index_of))
            packed["params"] = [index_of[id(p)] for p in group["params"]]
            param_groups.append(packed)
        state = {}
        for p, values in self.state.items():
            if id(p) in index_of:
                state[index_of[id(p)]] = {k: _host_copy(v) for k, v in values.items()}
        return {"state": state, "param_groups": param_groups}

    def load_state_dict(self, state_dict):
        """Restore state saved by state_dict() (ours, or torch's with tensors or arrays as values).

        Arrays go to each parameter's device; floating state takes the parameter's dtype
        (except 'step'), as PyTorch does.
        """
        saved_groups = copy.deepcopy(state_dict["param_groups"])
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(f"loaded state dict has a different number of parameter groups "
                             f"({len(saved_groups)}) than the optimizer ({len(self.param_groups)})")
        for saved, group in zip(saved_groups, self.param_groups):
            if len(saved["params"]) != len(group["params"]):
                raise ValueError(f"loaded state dict contains a parameter group of {len(saved['params'])} "
                                 "parameters that doesn't match the size of optimizer's group "
                                 f"({len(group['params'])})")
        param_of = dict(zip(itertools.chain.from_iterable(g["params"] for g in saved_groups),
                            itertools.chain.from_iterable(g["params"] for g in self.param_groups)))
        self.state = collections.defaultdict(dict)
        for index, values in state_dict["state"].items():
            if index not in param_of:
                continue
            param = param_of[index]
            self.state[param] = {key: _restore(value, param, key) for key, value in values.items()}
        for saved, group in zip(saved_groups, self.param_groups):
            saved["params"] = group["params"]
        self.param_groups[:] = saved_groups

    def __repr__(self):
        text = type(self).__name__ + " ("
        for i, group in enumerate(self.param_groups):
            text += f"\nParameter Group {i}"
            for key in sorted(group):
                if key != "params":
                    text += f"\n    {key}: {group[key]}"
        return text + "\n)"

    def __getstate__(self):
        return {"defaults": self.defaults, "state": self.state, "param_groups": self.param_groups}

    def __setstate__(self, state):
        self.__dict__.update(state)


def _host_copy(value):
    array = _to_array(value)
    if array is not None:
        return np.array(backend.to_numpy(array), copy=True)
    return copy.deepcopy(value)


def _restore(value, param, key):
    array = _to_array(value)
    if array is None:
        return copy.deepcopy(value)
    if key == "step":   # a counter, whatever container it came in
        return float(array.reshape(()))
    array = backend.to_device(np.array(array, copy=True) if not backend.is_cuda_array(array) else array.copy(),
                              param.device)
    if array.dtype.kind == "f" and param.dtype.kind == "f":
        array = array.astype(param.dtype, copy=False)
    return array
