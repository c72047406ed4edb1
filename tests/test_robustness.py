"""Arbitrary (often invalid) arguments to the functional API: gradflow must either agree
with PyTorch's result or raise a clear ValueError/TypeError/RuntimeError where PyTorch
refuses too; never an internal exception, never a silent answer PyTorch would refuse."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

import gradflow as gf
import gradflow.functional as F

torch = pytest.importorskip("torch")
TF = torch.nn.functional
CLEAR_ERRORS = (ValueError, TypeError, RuntimeError)

small = st.integers(-1, 4)
pair_or_int = st.one_of(small, st.tuples(small, small))


def _outcome(fn):
    try:
        return fn(), None
    except Exception as exc:   # noqa: BLE001 - classifying every failure is the point
        return None, exc


def check_agrees(gf_call, torch_call, what, degenerate=False):
    """`degenerate`: an empty tensor or a non-positive size/stride/dilation, which
    gradflow may refuse with a clear error even where PyTorch returns an empty result."""
    ours, our_error = _outcome(gf_call)
    ref, ref_error = _outcome(torch_call)
    if our_error is not None:
        assert isinstance(our_error, CLEAR_ERRORS), f"{what}: internal error {type(our_error).__name__}: {our_error}"
        assert str(our_error), f"{what}: error without a message"
        assert ref_error is not None or degenerate, f"{what}: gradflow refused ({our_error}) but PyTorch accepts"
        return
    assert ref_error is None, f"{what}: PyTorch refuses ({ref_error}) but gradflow returned a result"
    ours = ours[0] if isinstance(ours, tuple) else ours
    ref = ref[0] if isinstance(ref, tuple) else ref
    assert ours.shape == tuple(ref.shape), f"{what}: shape {ours.shape} vs PyTorch {tuple(ref.shape)}"
    np.testing.assert_allclose(ours.detach().numpy(), ref.detach().numpy(), rtol=1e-8, atol=1e-10, err_msg=what)


def _degenerate(shapes, *params):
    def values(p):
        return p if isinstance(p, tuple) else (p,)
    return (any(0 in s for s in shapes)
            or any(isinstance(v, int) and v <= 0 for p in params for v in values(p)))


def _pair(tensors):
    arrays = [np.random.default_rng(i).standard_normal(s) for i, s in enumerate(tensors)]
    return [gf.tensor(a) for a in arrays], [torch.tensor(a) for a in arrays]


@given(shape=st.lists(st.integers(0, 5), min_size=2, max_size=5), out_ch=st.integers(0, 4),
       in_ch=st.integers(0, 4), kernel=st.tuples(st.integers(0, 4), st.integers(1, 4)),
       stride=pair_or_int, padding=st.one_of(pair_or_int, st.sampled_from(["same", "valid", "bogus"])),
       dilation=pair_or_int, groups=st.integers(0, 3))
def test_conv2d(shape, out_ch, in_ch, kernel, stride, padding, dilation, groups):
    (x, w), (tx, tw) = _pair([shape, (out_ch, in_ch) + kernel])
    check_agrees(lambda: F.conv2d(x, w, None, stride, padding, dilation, groups),
                 lambda: TF.conv2d(tx, tw, None, stride, padding, dilation, groups),
                 f"conv2d x{shape} w{(out_ch, in_ch) + kernel} s{stride} p{padding} d{dilation} g{groups}",
                 _degenerate([shape, kernel, (out_ch, in_ch)], stride, dilation, groups))


@given(shape=st.lists(st.integers(0, 4), min_size=3, max_size=5), in_ch=st.integers(0, 4),
       out_ch=st.integers(0, 3), kernel=st.tuples(st.integers(1, 4), st.integers(1, 4)),
       stride=pair_or_int, padding=pair_or_int, output_padding=pair_or_int,
       dilation=pair_or_int, groups=st.integers(0, 3))
def test_conv_transpose2d(shape, in_ch, out_ch, kernel, stride, padding, output_padding, dilation, groups):
    (x, w), (tx, tw) = _pair([shape, (in_ch, out_ch) + kernel])
    check_agrees(lambda: F.conv_transpose2d(x, w, None, stride, padding, output_padding, groups, dilation),
                 lambda: TF.conv_transpose2d(tx, tw, None, stride, padding, output_padding, groups, dilation),
                 f"conv_transpose2d x{shape} w{(in_ch, out_ch) + kernel} s{stride} p{padding} "
                 f"op{output_padding} d{dilation} g{groups}",
                 _degenerate([shape, kernel, (out_ch, in_ch)], stride, dilation, groups))


@given(shape=st.lists(st.integers(0, 6), min_size=2, max_size=5), kernel=pair_or_int,
       stride=st.one_of(st.none(), pair_or_int), padding=pair_or_int, dilation=pair_or_int,
       ceil_mode=st.booleans(), is_max=st.booleans())
def test_pooling(shape, kernel, stride, padding, dilation, ceil_mode, is_max):
    (x,), (tx,) = _pair([shape])
    if is_max:
        check_agrees(lambda: F.max_pool2d(x, kernel, stride, padding, dilation, ceil_mode),
                     lambda: TF.max_pool2d(tx, kernel, stride, padding, dilation, ceil_mode),
                     f"max_pool2d x{shape} k{kernel} s{stride} p{padding} d{dilation} ceil{ceil_mode}",
                     _degenerate([shape], kernel, stride, dilation))
    else:
        check_agrees(lambda: F.avg_pool2d(x, kernel, stride, padding, ceil_mode),
                     lambda: TF.avg_pool2d(tx, kernel, stride, padding, ceil_mode),
                     f"avg_pool2d x{shape} k{kernel} s{stride} p{padding} ceil{ceil_mode}",
                     _degenerate([shape], kernel, stride))


@given(shape=st.lists(st.integers(1, 4), min_size=1, max_size=5), groups=st.integers(-1, 5),
       affine_len=st.integers(0, 5))
def test_group_norm(shape, groups, affine_len):
    (x, w, b), (tx, tw, tb) = _pair([shape, (affine_len,), (affine_len,)])
    check_agrees(lambda: F.group_norm(x, groups, w, b), lambda: TF.group_norm(tx, groups, tw, tb),
                 f"group_norm x{shape} groups {groups} affine {affine_len}")


@given(shape=st.lists(st.integers(1, 4), min_size=1, max_size=5), stats_len=st.integers(1, 5),
       training=st.booleans())
def test_batch_norm(shape, stats_len, training):
    (x, w, b), (tx, tw, tb) = _pair([shape, (stats_len,), (stats_len,)])
    mean, var = gf.zeros(stats_len, dtype=gf.float64), gf.ones(stats_len, dtype=gf.float64)
    tmean, tvar = torch.zeros(stats_len, dtype=torch.float64), torch.ones(stats_len, dtype=torch.float64)
    check_agrees(lambda: F.batch_norm(x, mean, var, w, b, training),
                 lambda: TF.batch_norm(tx, tmean, tvar, tw, tb, training),
                 f"batch_norm x{shape} stats {stats_len} training {training}")


@given(n=st.integers(0, 3), c=st.integers(1, 4), spatial=st.lists(st.integers(1, 3), max_size=2),
       target_high=st.integers(1, 6), ignore_index=st.sampled_from([-100, 0, 255]),
       reduction=st.sampled_from(["mean", "sum", "none", "avg"]), target_shape_off=st.booleans())
def test_cross_entropy(n, c, spatial, target_high, ignore_index, reduction, target_shape_off):
    (x,), (tx,) = _pair([(n, c, *spatial)])
    tshape = (n, *spatial) if not target_shape_off else (n + 1, *spatial)
    target = np.random.default_rng(5).integers(-1, target_high, tshape)
    check_agrees(lambda: F.cross_entropy(x, gf.tensor(target), ignore_index=ignore_index, reduction=reduction),
                 lambda: TF.cross_entropy(tx, torch.tensor(target), ignore_index=ignore_index, reduction=reduction),
                 f"cross_entropy x{(n, c, *spatial)} target {tshape} max {target_high - 1} "
                 f"ignore {ignore_index} {reduction}", _degenerate([(n, c, *spatial)]))


def test_cross_entropy_names_the_bad_target():
    target = gf.tensor(np.array([[0, 1], [7, 2]]))
    with pytest.raises(ValueError, match="7"):
        F.cross_entropy(gf.randn(2, 3, 2), target)


def test_non_tensor_input_is_a_type_error():
    with pytest.raises(TypeError):
        F.conv2d(np.ones((1, 1, 3, 3)), gf.randn(1, 1, 1, 1))


def _module_pair(gf_factory, torch_factory, shape, what, degenerate):
    """Construct both modules (same weights when both exist), run both on one input."""
    ours, our_error = _outcome(gf_factory)
    ref, ref_error = _outcome(torch_factory)
    if our_error is not None or ref_error is not None:
        check_agrees(gf_factory, torch_factory, what + " (construction)", degenerate)
        return
    ours.load_state_dict({k: v.detach().numpy() for k, v in ref.double().state_dict().items()})
    ours.double()
    (x,), (tx,) = _pair([shape])
    check_agrees(lambda: ours(x), lambda: ref(tx), what, degenerate)


@given(shape=st.lists(st.integers(0, 5), min_size=3, max_size=5), in_ch=small, out_ch=small,
       kernel=pair_or_int, stride=pair_or_int, padding=st.one_of(pair_or_int, st.just("same")),
       dilation=pair_or_int, groups=st.integers(0, 2), bias=st.booleans(), transposed=st.booleans())
def test_conv_modules(shape, in_ch, out_ch, kernel, stride, padding, dilation, groups, bias, transposed):
    if transposed:
        if padding == "same":
            padding = 0
        build = (lambda lib: lib.ConvTranspose2d(in_ch, out_ch, kernel, stride, padding, 0, groups, bias, dilation))
    else:
        build = (lambda lib: lib.Conv2d(in_ch, out_ch, kernel, stride, padding, dilation, groups, bias))
    _module_pair(lambda: build(gf.nn), lambda: build(torch.nn), shape,
                 f"{'ConvTranspose2d' if transposed else 'Conv2d'}({in_ch}, {out_ch}, k{kernel}, s{stride}, "
                 f"p{padding}, d{dilation}, g{groups}) on {shape}",
                 _degenerate([shape], in_ch, out_ch, kernel, stride, dilation, groups))


@given(shape=st.lists(st.integers(1, 4), min_size=2, max_size=5), groups=st.integers(-1, 4),
       channels=st.integers(0, 4), batch=st.booleans())
def test_norm_modules(shape, groups, channels, batch):
    if batch:
        build = (lambda lib: lib.BatchNorm2d(channels))
    else:
        build = (lambda lib: lib.GroupNorm(groups, channels))
    _module_pair(lambda: build(gf.nn), lambda: build(torch.nn), shape,
                 f"{'BatchNorm2d' if batch else 'GroupNorm'}(groups {groups}, channels {channels}) on {shape}",
                 _degenerate([shape], channels, groups))
