"""The functional API and its modules under random arguments, against PyTorch.

Each property draws a *valid* call first (shapes, channels, groups and geometry that fit
together); its separate "invalid" stream then perturbs one argument of that call into
something invalid or degenerate. Either way gradflow must agree with PyTorch: the same output and the same gradients of the input, weight and bias where
PyTorch accepts the call, or a clear ValueError/TypeError/RuntimeError where it refuses
(never an internal exception, never a silent answer PyTorch would refuse). The valid
stream asserts that at least half of its draws were calls PyTorch accepts, so comparing
results and gradients is what it exercises.
"""
import functools

import numpy as np
import pytest
from hypothesis import given, strategies as st

import gradflow as gf
import gradflow.functional as F

torch = pytest.importorskip("torch")
TF = torch.nn.functional
CLEAR_ERRORS = (ValueError, TypeError, RuntimeError)
MIN_VALID_SHARE = 0.5


def _outcome(fn):
    try:
        return fn(), None
    except Exception as exc:   # noqa: BLE001 - classifying every failure is the point
        return None, exc


def _first(out):
    return out[0] if isinstance(out, tuple) else out


def _grad(t):
    return None if t is None or t.grad is None else t.grad.numpy()


def check_agrees(gf_call, torch_call, what, degenerate=False, grads=()):
    """Run both calls; returns True when PyTorch accepted (and then everything matched).

    `degenerate`: an empty tensor or a non-positive size/stride/dilation, which gradflow
    may refuse with a clear error even where PyTorch returns an empty result.
    `grads`: (name, gradflow tensor, torch tensor) whose gradients must agree after both
    outputs are back-propagated with one random cotangent."""
    ours, our_error = _outcome(gf_call)
    ref, ref_error = _outcome(torch_call)
    if our_error is not None:
        assert isinstance(our_error, CLEAR_ERRORS), f"{what}: internal error {type(our_error).__name__}: {our_error}"
        assert str(our_error), f"{what}: error without a message"
        assert ref_error is not None or degenerate, f"{what}: gradflow refused ({our_error}) but PyTorch accepts"
        return ref_error is None
    assert ref_error is None, f"{what}: PyTorch refuses ({ref_error}) but gradflow returned a result"
    ours, ref = _first(ours), _first(ref)
    assert ours.shape == tuple(ref.shape), f"{what}: shape {ours.shape} vs PyTorch {tuple(ref.shape)}"
    np.testing.assert_allclose(ours.detach().numpy(), ref.detach().numpy(), rtol=1e-8, atol=1e-10, err_msg=what)
    if grads and ref.requires_grad:
        assert ours.requires_grad, f"{what}: PyTorch's output requires grad, gradflow's does not"
        cotangent = np.random.default_rng(3).standard_normal(tuple(ref.shape))
        ours.backward(gf.tensor(cotangent))
        ref.backward(torch.tensor(cotangent))
        for name, o, r in grads:
            if r is None or not r.requires_grad:
                continue
            expected, got = _grad(r), _grad(o)
            expected = np.zeros(r.shape) if expected is None else expected
            assert got is not None, f"{what}: no gradient for {name}"
            np.testing.assert_allclose(got, expected, rtol=1e-7, atol=1e-9, err_msg=f"{what}: gradient of {name}")
    return True


def fuzz(cases):
    """Run the decorated check over hypothesis draws of `cases(invalid)`, as two streams:
    "valid" draws calls that should work (at least MIN_VALID_SHARE of them must be calls
    PyTorch accepts, so results and gradients are what gets compared), "invalid" perturbs
    one argument of such a call (both libraries must refuse it, or agree)."""
    def decorate(check):
        @pytest.mark.parametrize("stream", ["valid", "invalid"])
        def test(stream):
            counts = {"valid": 0, "total": 0}

            @given(cases(stream == "invalid"))
            def run(case):
                counts["total"] += 1
                counts["valid"] += bool(check(case))

            run()
            share = counts["valid"] / max(counts["total"], 1)
            print(f"{check.__name__}[{stream}]: {counts['valid']} of {counts['total']} draws valid ({share:.0%})")
            if stream == "valid":
                assert share >= MIN_VALID_SHARE, (f"{check.__name__}: only {counts['valid']} of {counts['total']} "
                                                  "draws were valid calls; the strategy must mostly draw valid ones")
        # named like the check (not functools.wraps: pytest would then ask for its `case` argument)
        test.__name__, test.__qualname__, test.__doc__ = check.__name__, check.__qualname__, check.__doc__
        test.check, test.cases = check, cases   # for replaying one draw by hand
        return test
    return decorate


def _tensors(shapes, grad=True):
    """Same random float64 values in both libraries; None shapes give None."""
    ours, refs = [], []
    for i, s in enumerate(shapes):
        if s is None:
            ours.append(None)
            refs.append(None)
            continue
        a = np.random.default_rng(i).standard_normal(s)
        req = grad and 0 not in s
        ours.append(gf.tensor(a, requires_grad=req))
        refs.append(torch.tensor(a, requires_grad=req))
    return ours, refs


def _degenerate(shapes, *params):
    def values(p):
        return p if isinstance(p, tuple) else (p,)
    return (any(s is not None and 0 in s for s in shapes)
            or any(isinstance(v, int) and v <= 0 for p in params for v in values(p)))


def _pair_or_int(draw, values):
    return draw(values) if draw(st.booleans()) else (draw(values), draw(values))


def _per_dim(value):
    return value if isinstance(value, tuple) else (value, value)


def perturb(draw, config, options, invalid):
    """(config, None) in the valid stream; in the invalid one, one field replaced by a bad
    value, and that field's name."""
    if not invalid:
        return config, None
    field, bad = draw(st.sampled_from(sorted(options.items())))
    value = draw(bad) if isinstance(bad, st.SearchStrategy) else bad
    return {**config, field: value}, field


BAD_SIZE = st.sampled_from([0, -1, (1, 0), (2, -1)])


# ---- convolution -------------------------------------------------------------------

@st.composite
def conv_cases(draw, invalid, transposed=False):
    groups = draw(st.integers(1, 3))
    in_ch, out_ch = groups * draw(st.integers(1, 2)), groups * draw(st.integers(1, 2))
    kernel = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    stride = _pair_or_int(draw, st.integers(1, 3))
    dilation = _pair_or_int(draw, st.integers(1, 2))
    s, d = _per_dim(stride), _per_dim(dilation)
    if transposed:
        padding = _pair_or_int(draw, st.integers(0, 2))
        output_padding = tuple(draw(st.integers(0, max(s[i], d[i]) - 1)) for i in range(2))
        size = [draw(st.integers(1, 5)) for _ in range(2)]
        p = tuple(min(_per_dim(padding)[i], ((size[i] - 1) * s[i] + d[i] * (kernel[i] - 1) + output_padding[i]) // 2)
                  for i in range(2))
        padding = p
    else:
        padding = draw(st.one_of(st.integers(0, 2), st.tuples(st.integers(0, 2), st.integers(0, 2)),
                                 st.sampled_from(["valid", "same"])))
        if padding == "same" and s != (1, 1):
            padding = "valid"
        pad = (0, 0) if isinstance(padding, str) else _per_dim(padding)
        size = [max(1, d[i] * (kernel[i] - 1) + 1 - 2 * pad[i]) + draw(st.integers(0, 4)) for i in range(2)]
        output_padding = 0
    batch = draw(st.sampled_from([None, 1, 2, 3]))   # None: an unbatched (C, H, W) input
    config = dict(x=((batch,) if batch else ()) + (in_ch, *size),
                  w=((in_ch, out_ch // groups) if transposed else (out_ch, in_ch // groups)) + kernel,
                  b=(out_ch,) if draw(st.booleans()) else None,
                  stride=stride, padding=padding, output_padding=output_padding, dilation=dilation, groups=groups,
                  in_ch=in_ch, out_ch=out_ch, kernel=kernel)
    bad = dict(x=st.sampled_from([(2, in_ch + 1, 5, 5), (in_ch, 5), (1, 1, in_ch, 5, 5), (0, in_ch, 5, 5),
                                  (1, in_ch, 0, 5)]),
               w=st.sampled_from([(out_ch, in_ch), (0, in_ch) + kernel, (out_ch, in_ch + 2) + kernel]),
               b=st.sampled_from([(out_ch + 1,), (out_ch, 1)]),
               stride=BAD_SIZE, dilation=BAD_SIZE, groups=st.sampled_from([0, -1, groups + 1]),
               padding=st.sampled_from([-1, (0, -2), "bogus"] + ([] if transposed else ["same"])),
               in_ch=st.sampled_from([0, in_ch + 1]), out_ch=st.sampled_from([0, out_ch + 1]),
               kernel=st.sampled_from([(0, 1), (1, -1), (9, 9)]))
    if transposed:
        bad["output_padding"] = st.sampled_from([max(max(s), max(d)), -1])
    return perturb(draw, config, bad, invalid)


@fuzz(conv_cases)
def test_conv2d(case):
    c, bad = case
    (x, w, b), (tx, tw, tb) = _tensors([c["x"], c["w"], c["b"]])
    args = (c["stride"], c["padding"], c["dilation"], c["groups"])
    return check_agrees(lambda: F.conv2d(x, w, b, *args), lambda: TF.conv2d(tx, tw, tb, *args),
                        f"conv2d {c} (perturbed: {bad})",
                        _degenerate([c["x"], c["w"]], c["stride"], c["dilation"], c["groups"]),
                        grads=[("input", x, tx), ("weight", w, tw), ("bias", b, tb)])


@fuzz(functools.partial(conv_cases, transposed=True))
def test_conv_transpose2d(case):
    c, bad = case
    (x, w, b), (tx, tw, tb) = _tensors([c["x"], c["w"], c["b"]])
    args = (c["stride"], c["padding"], c["output_padding"], c["groups"], c["dilation"])
    return check_agrees(lambda: F.conv_transpose2d(x, w, b, *args), lambda: TF.conv_transpose2d(tx, tw, tb, *args),
                        f"conv_transpose2d {c} (perturbed: {bad})",
                        _degenerate([c["x"], c["w"]], c["stride"], c["dilation"], c["groups"]),
                        grads=[("input", x, tx), ("weight", w, tw), ("bias", b, tb)])


def _module_pair(gf_factory, torch_factory, shape, what, degenerate):
    """Construct both modules (PyTorch's weights copied into ours), run both on one input
    and compare the output and the gradients of the input and of every parameter."""
    ours, our_error = _outcome(gf_factory)
    ref, ref_error = _outcome(torch_factory)
    (x,), (tx,) = _tensors([shape])
    if our_error is not None and ref_error is None:
        # refusing a bad argument at construction is fine where PyTorch refuses it on the first call
        ref.double()
        return check_agrees(gf_factory, lambda: ref(tx), what + " (refused at construction)", degenerate) and False
    if our_error is not None or ref_error is not None:
        return check_agrees(gf_factory, torch_factory, what + " (construction)", degenerate) and False
    ours.load_state_dict({k: v.detach().numpy() for k, v in ref.double().state_dict().items()})
    ours.double()
    our_params, ref_params = dict(ours.named_parameters()), dict(ref.named_parameters())
    assert sorted(our_params) == sorted(ref_params), f"{what}: parameters {sorted(our_params)} vs {sorted(ref_params)}"
    return check_agrees(lambda: ours(x), lambda: ref(tx), what, degenerate,
                        grads=[("input", x, tx)] + [(n, our_params[n], ref_params[n]) for n in sorted(ref_params)])


@fuzz(lambda invalid: st.tuples(conv_cases(invalid), st.booleans()))
def test_conv2d_module(case):
    (c, bad), bias = case
    in_ch, out_ch = c["in_ch"], c["out_ch"]
    build = (lambda lib: lib.Conv2d(in_ch, out_ch, c["kernel"], c["stride"], c["padding"], c["dilation"],
                                    c["groups"], bias))
    return _module_pair(lambda: build(gf.nn), lambda: build(torch.nn), c["x"], f"Conv2d {c} bias {bias} ({bad})",
                        _degenerate([c["x"], c["w"]], c["stride"], c["dilation"], c["groups"], in_ch, out_ch))


@fuzz(lambda invalid: st.tuples(conv_cases(invalid, transposed=True), st.booleans()))
def test_conv_transpose2d_module(case):
    (c, bad), bias = case
    in_ch, out_ch = c["in_ch"], c["out_ch"]
    build = (lambda lib: lib.ConvTranspose2d(in_ch, out_ch, c["kernel"], c["stride"], c["padding"],
                                             c["output_padding"], c["groups"], bias, c["dilation"]))
    return _module_pair(lambda: build(gf.nn), lambda: build(torch.nn), c["x"],
                        f"ConvTranspose2d {c} bias {bias} ({bad})",
                        _degenerate([c["x"], c["w"]], c["stride"], c["dilation"], c["groups"], in_ch, out_ch))


# ---- pooling -----------------------------------------------------------------------

@st.composite
def pool_cases(draw, invalid):
    is_max = draw(st.booleans())
    kernel = _pair_or_int(draw, st.integers(1, 3))
    k = _per_dim(kernel)
    stride = draw(st.one_of(st.none(), st.integers(1, 3), st.tuples(st.integers(1, 3), st.integers(1, 3))))
    dilation = _pair_or_int(draw, st.integers(1, 2)) if is_max else 1
    d = _per_dim(dilation)
    padding = tuple(draw(st.integers(0, k[i] // 2)) for i in range(2))   # PyTorch: at most half the kernel
    size = tuple(max(1, d[i] * (k[i] - 1) + 1 - 2 * padding[i]) + draw(st.integers(0, 4)) for i in range(2))
    lead = draw(st.sampled_from([(1,), (2,), (1, 2), (2, 3)]))   # unbatched (C, H, W) or (N, C, H, W)
    config = dict(x=lead + size, kernel=kernel, stride=stride, padding=padding, dilation=dilation,
                  ceil_mode=draw(st.booleans()), is_max=is_max)
    bad = dict(x=st.sampled_from([(4, 4), (1, 1, 1, 4, 4), (0, 2, 4, 4), (1, 2, 0, 3)]),
               kernel=BAD_SIZE, stride=BAD_SIZE, padding=st.sampled_from([-1, (k[0] + 1, 0)]))
    if is_max:
        bad["dilation"] = BAD_SIZE
    return perturb(draw, config, bad, invalid)


def _torch_max_pool_backward_is_safe(tx, args):
    """A window that dilation places wholly in the padding gives -inf, and PyTorch's CPU
    backward then scatters through a garbage index, out of bounds (heap corruption that
    aborts the process): compare only the forward for such calls."""
    try:
        return bool(torch.isfinite(TF.max_pool2d(tx.detach(), *args)).all())
    except Exception:   # noqa: BLE001 - refused calls are check_agrees' business
        return True


@fuzz(pool_cases)
def test_pooling(case):
    c, bad = case
    (x,), (tx,) = _tensors([c["x"]])
    degenerate = _degenerate([c["x"]], c["kernel"], c["stride"], c["dilation"])
    if c["is_max"]:
        args = (c["kernel"], c["stride"], c["padding"], c["dilation"], c["ceil_mode"])
        return check_agrees(lambda: F.max_pool2d(x, *args), lambda: TF.max_pool2d(tx, *args),
                            f"max_pool2d {c} ({bad})", degenerate,
                            grads=[("input", x, tx)] if _torch_max_pool_backward_is_safe(tx, args) else ())
    args = (c["kernel"], c["stride"], c["padding"], c["ceil_mode"])
    return check_agrees(lambda: F.avg_pool2d(x, *args), lambda: TF.avg_pool2d(tx, *args),
                        f"avg_pool2d {c} ({bad})", degenerate, grads=[("input", x, tx)])


# ---- normalisation -----------------------------------------------------------------

@st.composite
def norm_cases(draw, invalid):
    groups = draw(st.integers(1, 3))
    channels = groups * draw(st.integers(1, 3))
    spatial = tuple(draw(st.lists(st.integers(1, 3), max_size=2)))
    batch = draw(st.integers(1, 3))
    if batch * int(np.prod(spatial)) == 1:   # batch norm in training needs 2 values per channel
        batch = 2
    affine = draw(st.booleans())
    config = dict(x=(batch, channels) + spatial, groups=groups, channels=channels, affine=affine,
                  training=draw(st.booleans()))
    bad = dict(x=st.sampled_from([(channels,), (1, channels), (batch, channels + 1) + spatial]),
               groups=st.sampled_from([0, -1, channels + 1]), channels=st.sampled_from([channels + 1, 0]))
    return perturb(draw, config, bad, invalid)


@fuzz(norm_cases)
def test_group_norm(case):
    c, bad = case
    affine_shape = (c["channels"],) if c["affine"] else None
    (x, w, b), (tx, tw, tb) = _tensors([c["x"], affine_shape, affine_shape])
    return check_agrees(lambda: F.group_norm(x, c["groups"], w, b), lambda: TF.group_norm(tx, c["groups"], tw, tb),
                        f"group_norm {c} ({bad})",
                        grads=[("input", x, tx), ("weight", w, tw), ("bias", b, tb)])


@fuzz(norm_cases)
def test_batch_norm(case):
    c, bad = case
    n = c["channels"]
    affine_shape = (n,) if c["affine"] else None
    (x, w, b), (tx, tw, tb) = _tensors([c["x"], affine_shape, affine_shape])
    (mean, var), (tmean, tvar) = _tensors([(n,), (n,)], grad=False)
    var.data[...] = np.abs(var.data) + 0.5
    tvar.data[...] = torch.tensor(var.data)
    valid = check_agrees(lambda: F.batch_norm(x, mean, var, w, b, c["training"]),
                         lambda: TF.batch_norm(tx, tmean, tvar, tw, tb, c["training"]),
                         f"batch_norm {c} ({bad})", grads=[("input", x, tx), ("weight", w, tw), ("bias", b, tb)])
    if valid:   # training updated both running statistics the same way
        np.testing.assert_allclose(mean.numpy(), tmean.numpy(), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(var.numpy(), tvar.numpy(), rtol=1e-10, atol=1e-12)
    return valid


@fuzz(lambda invalid: st.tuples(norm_cases(invalid), st.booleans()))
def test_norm_modules(case):
    (c, bad), batch = case
    build = ((lambda lib: lib.BatchNorm2d(c["channels"], affine=c["affine"])) if batch else
             (lambda lib: lib.GroupNorm(c["groups"], c["channels"], affine=c["affine"])))
    shape = c["x"]
    if batch and len(shape) != 4:    # BatchNorm2d takes (N, C, H, W) only
        shape = shape[:2] + (2, 2) if bad is None else shape
    return _module_pair(lambda: build(gf.nn), lambda: build(torch.nn), shape,
                        f"{'BatchNorm2d' if batch else 'GroupNorm'} {c} on {shape} ({bad})",
                        _degenerate([shape], c["channels"], c["groups"]))


# ---- cross entropy -----------------------------------------------------------------

@st.composite
def cross_entropy_cases(draw, invalid):
    n, c = draw(st.integers(1, 3)), draw(st.integers(1, 4))
    spatial = tuple(draw(st.lists(st.integers(1, 3), max_size=2)))
    ignore_index = draw(st.sampled_from([-100, 0, 255]))
    config = dict(x=(n, c) + spatial, target=(n,) + spatial, low=0, high=c, ignore_index=ignore_index,
                  reduction=draw(st.sampled_from(["mean", "sum", "none"])), seed=draw(st.integers(0, 99)))
    bad = dict(target=st.sampled_from([(n + 1,) + spatial, (n, 2, 2, 2)]), high=st.just(c + 2), low=st.just(-1),
               reduction=st.just("avg"), x=st.just((0, c) + spatial))
    return perturb(draw, config, bad, invalid)


@fuzz(cross_entropy_cases)
def test_cross_entropy(case):
    c, bad = case
    (x,), (tx,) = _tensors([c["x"]])
    target = np.random.default_rng(c["seed"]).integers(c["low"], c["high"], c["target"])
    kwargs = dict(ignore_index=c["ignore_index"], reduction=c["reduction"])
    return check_agrees(lambda: F.cross_entropy(x, gf.tensor(target), **kwargs),
                        lambda: TF.cross_entropy(tx, torch.tensor(target), **kwargs),
                        f"cross_entropy {c} ({bad})", _degenerate([c["x"]]), grads=[("input", x, tx)])


def test_cross_entropy_names_the_bad_target():
    target = gf.tensor(np.array([[0, 1], [7, 2]]))
    with pytest.raises(ValueError, match="7"):
        F.cross_entropy(gf.randn(2, 3, 2), target)


def test_non_tensor_input_is_a_type_error():
    with pytest.raises(TypeError):
        F.conv2d(np.ones((1, 1, 3, 3)), gf.randn(1, 1, 1, 1))
