"""CPU and CUDA compute the same thing: every op, same inputs on both devices, float64
and float32, forward and every input gradient (float64 to 1e-10, float32 to 1e-4,
relative to the larger of 1 and the largest CPU value, as tests/opinfo.assert_close).

Two sources of inputs:
* every OpInfo table under tests/ops (each op's own hypothesis samples: tiny shapes,
  every argument combination its tests draw), found at import time, so ops that land
  later are covered without editing this file;
* MEDIUM below: hand-written cases with odd, medium shapes (many thread blocks, partial
  blocks, long reductions), which the tiny samples cannot reach.

Marked `gpu`: skipped unless gf.cuda.is_available(). With GRADFLOW_AGREEMENT_DRY_RUN=1
the "GPU" side is the CPU again and the mark is dropped: bench/gpu_check.sh --dry-run
uses that to exercise this file's plumbing (signatures, conversions) on a machine
without a GPU. A dry run proves nothing about the GPU.
"""
import importlib
import os
import pkgutil

import numpy as np
import pytest
from hypothesis import given, strategies as st

import gradflow as gf
import gradflow.functional as F
from tests.opinfo import assert_close

DRY_RUN = os.environ.get("GRADFLOW_AGREEMENT_DRY_RUN") == "1"
OTHER = "cpu" if DRY_RUN else "cuda"
pytestmark = [] if DRY_RUN else [pytest.mark.gpu]

DTYPES = [np.float64, np.float32]
TOL = {np.float64: 1e-10, np.float32: 1e-4}
# Ops whose results depend on a device's random stream: equal by construction only in law.
RANDOM_OPS = ("dropout",)


# ---- running one op on one device -------------------------------------------------------

def _convert(value, dtype, device, requires_grad):
    if isinstance(value, np.ndarray):
        if value.dtype.kind == "f":
            return gf.tensor(value.astype(dtype), device=device, requires_grad=requires_grad)
        return gf.tensor(value, device=device)
    return value


def _outputs(result):
    return list(result) if isinstance(result, (tuple, list)) else [result]


def run_on(device, fn, args, kwargs, grad_indices, dtype):
    """fn(*args, **kwargs) with numpy arrays turned into tensors on `device`; returns
    (outputs, gradients of the differentiable inputs, the input tensors) as numpy."""
    with pytest.MonkeyPatch.context() as m:
        m.setenv("GRADFLOW_DEVICE", device)     # factories inside an op default to this device
        tensors = [_convert(a, dtype, device, i in grad_indices) for i, a in enumerate(args)]
        kw = {k: _convert(v, dtype, device, False) for k, v in kwargs.items()}
        outs = _outputs(fn(*tensors, **kw))
        for o in outs:
            if isinstance(o, gf.Tensor):
                assert o.device == device, f"output on {o.device}, inputs on {device}"
        float_outs = [o for o in outs if isinstance(o, gf.Tensor) and o.requires_grad]
        if float_outs:
            rng = np.random.default_rng(7)
            cotangents = [gf.tensor(rng.standard_normal(o.shape).astype(o.dtype), device=device)
                          for o in float_outs]
            gf.autograd.backward(float_outs, cotangents)
        grads = []
        for i in sorted(grad_indices):
            g = tensors[i].grad
            if g is not None:
                assert g.device == device, f"gradient of input {i} on {g.device}, input on {device}"
            grads.append(None if g is None else g.detach().numpy())
        return ([o.detach().numpy() if isinstance(o, gf.Tensor) else np.asarray(o) for o in outs],
                grads, [t.detach().numpy() if isinstance(t, gf.Tensor) else t for t in tensors])


def check_agreement(name, fn, args, kwargs, grad_indices, dtype):
    tol = TOL[dtype]
    ref_out, ref_grads, ref_inputs = run_on("cpu", fn, args, kwargs, grad_indices, dtype)
    out, grads, inputs = run_on(OTHER, fn, args, kwargs, grad_indices, dtype)
    assert len(out) == len(ref_out), f"{name}: {len(out)} outputs on {OTHER}, {len(ref_out)} on cpu"
    for k, (a, b) in enumerate(zip(out, ref_out)):
        assert a.shape == b.shape, f"{name} output {k}: shape {a.shape} on {OTHER}, {b.shape} on cpu"
        assert a.dtype == b.dtype, f"{name} output {k}: dtype {a.dtype} on {OTHER}, {b.dtype} on cpu"
        if b.dtype.kind in "iub":
            np.testing.assert_array_equal(a, b, err_msg=f"{name} output {k}")
        else:
            assert_close(a, b, tol, f"{name} output {k} ({np.dtype(dtype).name})")
    for i, a, b in zip(sorted(grad_indices), grads, ref_grads):
        assert (a is None) == (b is None), f"{name}: gradient of input {i} is None on one device only"
        if b is not None:
            assert_close(a, b, tol, f"{name} gradient of input {i} ({np.dtype(dtype).name})")
    # in-place side effects (batch norm's running statistics) agree too
    for i, (a, b) in enumerate(zip(inputs, ref_inputs)):
        if isinstance(b, np.ndarray) and i not in grad_indices and b.dtype.kind == "f":
            assert_close(a, b, tol, f"{name} input {i} after the call")


# ---- 1. every OpInfo table under tests/ops -------------------------------------------------

def _op_tables():
    import tests.ops as package
    infos = []
    for module in pkgutil.iter_modules(package.__path__):
        if not module.name.startswith("test_") or module.name == "test_cuda_agreement":
            continue
        try:
            mod = importlib.import_module(f"tests.ops.{module.name}")
        except pytest.skip.Exception:          # e.g. importorskip("torch") without torch
            continue
        infos.extend((module.name, info) for info in getattr(mod, "OPS", ()))
    return infos


OPINFOS = [(m, i) for m, i in _op_tables() if not any(r in i.name for r in RANDOM_OPS)]


@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
@pytest.mark.parametrize("module,info", OPINFOS, ids=[f"{m[5:]}.{i.name}" for m, i in OPINFOS])
@given(data=st.data())
def test_opinfo_agrees(module, info, dtype, data):
    sample = data.draw(info.samples)
    grad_indices = {i for i, a in enumerate(sample.args) if sample.differentiable(i, a)}

    def fn(*args, **kwargs):
        out = info.op(*args, **kwargs)
        return out[info.output_index] if info.output_index is not None else out

    check_agreement(info.name, fn, sample.args, sample.kwargs, grad_indices, dtype)


def test_every_op_module_has_a_table():
    """The op modules the agreement tables cover: a new tests/ops module without OPS is a gap."""
    covered = {m for m, _ in _op_tables()}
    assert {"test_elementwise", "test_reduce", "test_shape"} <= covered, covered


# ---- 2. medium shapes --------------------------------------------------------------------

def _rng(seed):
    return np.random.default_rng(seed)


def _normal(seed, *shape, scale=1.0, shift=0.0):
    return _rng(seed).standard_normal(shape) * scale + shift


def _distinct(seed, *shape):
    """No ties (max-pool and max pick the same element on both devices)."""
    n = int(np.prod(shape))
    return _rng(seed).permutation(np.linspace(-3.0, 3.0, n)).reshape(shape)


def _target(seed, shape, classes, ignore=None, fraction=0.1):
    t = _rng(seed).integers(0, classes, size=shape)
    if ignore is not None:
        t[_rng(seed + 1).random(shape) < fraction] = ignore
    return t.astype(np.int64)


def _norm_fused(name):
    def call(*args, **kwargs):
        from gradflow.ops import norm
        return getattr(norm, name)(*args, **kwargs)
    return call


def _case(name, fn, args, grad=None, **kwargs):
    grad = tuple(i for i, a in enumerate(args) if isinstance(a, np.ndarray) and a.dtype.kind == "f") \
        if grad is None else grad
    return pytest.param(fn, args, kwargs, grad, id=name)


X = _normal(0, 2, 8, 17, 19)
MEDIUM = [
    # convolution
    _case("conv2d_3x3_pad1", F.conv2d, (X, _normal(1, 12, 8, 3, 3, scale=0.2), _normal(2, 12)), padding=1),
    _case("conv2d_3x3_stride2", F.conv2d, (X, _normal(1, 12, 8, 3, 3, scale=0.2), _normal(2, 12)),
          stride=2, padding=1),
    _case("conv2d_dilation2_groups2", F.conv2d, (X, _normal(3, 6, 4, 3, 3, scale=0.2), None),
          padding=2, dilation=2, groups=2),
    _case("conv2d_1x1", F.conv2d, (X, _normal(4, 5, 8, 1, 1), _normal(5, 5))),
    _case("conv2d_5x5_stride3_rect", F.conv2d, (X, _normal(6, 4, 8, 5, 3, scale=0.1), None),
          stride=(3, 2), padding=(2, 1)),
    _case("conv2d_bench_block", F.conv2d, (_normal(7, 4, 32, 32, 32), _normal(8, 32, 32, 3, 3, scale=0.06),
                                           _normal(9, 32)), padding=1),
    _case("conv_transpose2d_k4s2p1", F.conv_transpose2d, (X, _normal(10, 8, 5, 4, 4, scale=0.2), _normal(11, 5)),
          stride=2, padding=1),
    _case("conv_transpose2d_outpad_groups", F.conv_transpose2d,
          (X, _normal(12, 8, 3, 3, 3, scale=0.2), None), stride=3, padding=1, output_padding=2, groups=2),
    _case("conv_transpose2d_dilation", F.conv_transpose2d, (X, _normal(13, 8, 4, 3, 3, scale=0.2), _normal(14, 4)),
          dilation=2),
    # pooling
    _case("max_pool2d_2x2", F.max_pool2d, (_distinct(20, 2, 5, 17, 19),), kernel_size=2),
    _case("max_pool2d_3x3_s2_p1_ceil", F.max_pool2d, (_distinct(21, 2, 5, 17, 19),), kernel_size=3, stride=2,
          padding=1, ceil_mode=True),
    _case("max_pool2d_dilation2", F.max_pool2d, (_distinct(22, 2, 5, 17, 19),), kernel_size=2, dilation=2),
    _case("avg_pool2d_2x2", F.avg_pool2d, (X,), kernel_size=2),
    _case("avg_pool2d_3x3_s2_p1_exclude_pad", F.avg_pool2d, (X,), kernel_size=3, stride=2, padding=1,
          count_include_pad=False, ceil_mode=True),
    _case("adaptive_avg_pool2d", F.adaptive_avg_pool2d, (X,), output_size=(5, 7)),
    _case("adaptive_max_pool2d", F.adaptive_max_pool2d, (_distinct(23, 2, 5, 17, 19),), output_size=(4, 6)),
    # normalisation (variance well away from zero)
    _case("batch_norm_train", F.batch_norm,
          (_normal(30, 4, 12, 9, 11, scale=2.0, shift=0.5), np.zeros(12), np.ones(12),
           _normal(31, 12, scale=0.1, shift=1.0), _normal(32, 12, scale=0.1)),
          grad=(0, 3, 4), training=True, momentum=0.1),
    _case("batch_norm_eval", F.batch_norm,
          (_normal(33, 4, 12, 9, 11), _normal(34, 12, scale=0.1), 1 + _rng(35).random(12),
           _normal(36, 12, scale=0.1, shift=1.0), _normal(37, 12, scale=0.1)),
          grad=(0, 3, 4), training=False),
    _case("batch_norm_relu_train", _norm_fused("batch_norm_relu"),
          (_normal(38, 4, 12, 9, 11, scale=2.0), np.zeros(12), np.ones(12), None, None),
          grad=(0,), training=True),
    _case("group_norm_4groups", F.group_norm, (_normal(40, 3, 12, 9, 11, scale=3.0, shift=-1.0), 4,
                                               _normal(41, 12, scale=0.1, shift=1.0), _normal(42, 12))),
    _case("group_norm_per_channel", F.group_norm, (_normal(43, 3, 12, 9, 11), 12, None, None)),
    _case("group_norm_one_group_big", F.group_norm, (_normal(44, 2, 32, 33, 31), 1, None, None)),
    _case("group_norm_relu", _norm_fused("group_norm_relu"), (_normal(45, 3, 12, 9, 11), 4,
                                                               _normal(46, 12, shift=1.0), _normal(47, 12))),
    # softmax family (long reductions)
    _case("softmax_channels", F.softmax, (_normal(50, 3, 7, 9, 11, scale=3.0),), dim=1),
    _case("log_softmax_long_row", F.log_softmax, (_normal(51, 5, 1000, scale=5.0),), dim=-1),
    # losses
    _case("cross_entropy_2d_ignore", F.cross_entropy,
          (_normal(60, 3, 7, 9, 11, scale=2.0), _target(61, (3, 9, 11), 7, ignore=255)), ignore_index=255),
    _case("cross_entropy_weight_sum", F.cross_entropy,
          (_normal(62, 3, 7, 9, 11), _target(63, (3, 9, 11), 7, ignore=-100), 0.5 + _rng(64).random(7)),
          grad=(0,), reduction="sum"),
    _case("cross_entropy_none_smoothing", F.cross_entropy, (_normal(65, 64, 10), _target(66, (64,), 10)),
          reduction="none", label_smoothing=0.1),
    _case("nll_loss", F.nll_loss, (_normal(67, 3, 7, 9, 11), _target(68, (3, 9, 11), 7, ignore=-100))),
    _case("bce_with_logits", F.binary_cross_entropy_with_logits,
          (_normal(70, 3, 4, 9, 11, scale=3.0), _rng(71).random((3, 4, 9, 11)), _rng(72).random((4, 1, 1)),
           0.5 + _rng(73).random((11,))), grad=(0, 1)),
    # resampling
    _case("interpolate_bilinear_x2", F.interpolate, (X,), scale_factor=2, mode="bilinear", align_corners=False),
    _case("interpolate_bilinear_corners_size", F.interpolate, (X,), size=(13, 29), mode="bilinear",
          align_corners=True),
    _case("interpolate_nearest_size", F.interpolate, (X,), size=(40, 7), mode="nearest"),
    # core: elementwise with broadcasting, reductions, matmul, shape
    _case("broadcast_arith", lambda a, b, c: ((a * b + c) / (1.5 + b.abs())).tanh() - a.sigmoid() * c.exp(),
          (_normal(80, 64, 257), _normal(81, 257), _normal(82, 64, 1))),
    _case("pow_log_sqrt", lambda a: (a ** 1.7).log() + a.sqrt() * 2.0, (1.0 + _rng(83).random((37, 129)),)),
    _case("sum_mean_dims", lambda a: a.sum(dim=(0, 2)) + a.mean(dim=(0, 2)) * 3.0, (_normal(84, 8, 33, 65),)),
    _case("max_min_dim", lambda a: (a.max(dim=1).values - a.min(), a.max(dim=1).indices),
          (_distinct(85, 8, 513),)),
    _case("full_sum_long", lambda a: a.sum() * a.mean(), (_normal(86, 100_003),)),
    _case("matmul_batched", lambda a, b: a @ b, (_normal(87, 3, 65, 33), _normal(88, 33, 47))),
    _case("shape_ops", lambda a, b: gf.cat([a.permute(0, 2, 1).reshape(4, -1), b[:, 1:7]], 1).transpose(0, 1),
          (_normal(89, 4, 5, 6), _normal(90, 4, 9))),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
@pytest.mark.parametrize("fn,args,kwargs,grad", MEDIUM)
def test_medium_shapes_agree(fn, args, kwargs, grad, dtype, request):
    check_agreement(request.node.callspec.id, fn, args, kwargs, set(grad), dtype)
