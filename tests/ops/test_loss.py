import numpy as np
import pytest
from hypothesis import strategies as st

import gradflow as gf
import gradflow.functional as F
from gradflow.ops.loss import CrossEntropy
from tests.opinfo import ErrorInput, OpInfo, Sample, arrays, check_against_torch, op_tests

torch = pytest.importorskip("torch")
TF = torch.nn.functional
REDUCTIONS = ["none", "mean", "sum"]


def _rng(draw):
    return np.random.default_rng(draw(st.integers(0, 2**32 - 1)))


@st.composite
def class_scores(draw, min_classes=1):
    """Scores (C,), (N, C), (N, C, L) or (N, C, H, W), and the class-index target shape."""
    layout = draw(st.sampled_from(["C", "NC", "NCL", "NCHW"]))
    n, c = draw(st.integers(1, 3)), draw(st.integers(min_classes, 4))
    spatial = {"C": (), "NC": (), "NCL": (draw(st.integers(1, 3)),),
               "NCHW": (draw(st.integers(1, 3)), draw(st.integers(1, 3)))}[layout]
    shape = (c,) if layout == "C" else (n, c) + spatial
    target_shape = () if layout == "C" else (n,) + spatial
    return draw(arrays(shape, -3.0, 3.0)), target_shape


@st.composite
def index_target_samples(draw, smoothing=True):
    """Class-index targets with a share (none, some, all) of ignore_index, weights or not."""
    x, target_shape = draw(class_scores())
    c = x.shape[1] if x.ndim > 1 else x.shape[0]
    rng = _rng(draw)
    ignore_index = draw(st.sampled_from([-100, 0, 255]))
    ignored_share = draw(st.sampled_from([0.0, 0.3, 1.0]))   # 1.0: an all-ignored batch
    target = np.where(rng.random(target_shape) < ignored_share, ignore_index,
                      rng.integers(0, c, target_shape)).astype(np.int64)
    weight = rng.uniform(0.2, 2.0, c) if draw(st.booleans()) else None
    kwargs = dict(ignore_index=ignore_index, reduction=draw(st.sampled_from(REDUCTIONS)))
    if smoothing:
        kwargs["label_smoothing"] = draw(st.sampled_from([0.0, 0.2, 1.0]))
    return Sample((x, target, weight), kwargs, grad=(0,))


@st.composite
def probability_target_samples(draw):
    x, _ = draw(class_scores())
    rng = _rng(draw)
    c = x.shape[1] if x.ndim > 1 else x.shape[0]
    weight = rng.uniform(0.2, 2.0, c) if draw(st.booleans()) else None
    kwargs = dict(reduction=draw(st.sampled_from(REDUCTIONS)), label_smoothing=draw(st.sampled_from([0.0, 0.3])))
    return Sample((x, rng.uniform(0, 1, x.shape), weight), kwargs, grad=(0, 1))


@st.composite
def bce_samples(draw):
    rank = draw(st.integers(1, 4))
    shape = tuple(draw(st.integers(1, 3)) for _ in range(rank))
    rng = _rng(draw)
    x = draw(arrays(shape, -4.0, 4.0))
    weight_shape = draw(st.sampled_from([None, shape, shape[-1:], (1,) * rank]))
    # pos_weight: one per class along the last dim, or along dim 1 of an NCHW input
    pos_shapes = [None, shape[-1:]] + ([(shape[1], 1, 1)] if rank == 4 else [])
    pos_shape = draw(st.sampled_from(pos_shapes))
    weight = None if weight_shape is None else rng.uniform(0.2, 2.0, weight_shape)
    pos_weight = None if pos_shape is None else rng.uniform(0.2, 3.0, pos_shape)
    return Sample((x, rng.uniform(0, 1, shape), weight, pos_weight),
                  dict(reduction=draw(st.sampled_from(REDUCTIONS))), grad=(0, 1))


@st.composite
def dice_samples(draw):
    rng = _rng(draw)
    n, h, w = draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    kind = draw(st.sampled_from(["binary3d", "binary4d", "binary4d_nhw_target", "multiclass"]))
    ignore_index = draw(st.sampled_from([None, 255]))
    if kind == "multiclass":
        c = draw(st.integers(2, 3))
        x = draw(arrays((n, c, h, w), -3.0, 3.0))
        target = rng.integers(0, c, (n, h, w))
    else:
        x = draw(arrays((n, h, w) if kind == "binary3d" else (n, 1, h, w), -3.0, 3.0))
        target_shape = x.shape if kind != "binary4d_nhw_target" else (n, h, w)
        target = (rng.integers(0, 2, target_shape) if ignore_index is not None or draw(st.booleans())
                  else rng.uniform(0, 1, target_shape))   # soft labels
    if ignore_index is not None:
        target = np.where(rng.random(target.shape) < 0.3, ignore_index, target)
    kwargs = dict(smooth=draw(st.sampled_from([1.0, 0.1])), ignore_index=ignore_index,
                  reduction=draw(st.sampled_from(REDUCTIONS)))
    return Sample((x, target), kwargs, grad=(0,))


def _ce(x, target, weight, **kwargs):
    return F.cross_entropy(x, target, weight, **kwargs)


def _torch_ce(x, target, weight, **kwargs):
    return TF.cross_entropy(x, target, weight, **kwargs)


X23 = np.zeros((2, 3))
CE_ERRORS = (
    ErrorInput(Sample((X23, np.array([0, 5]), None)), ValueError, r"target value 5 at index \(1,\) is out of range for 3 classes"),
    ErrorInput(Sample((X23, np.array([-1, 0]), None)), ValueError, r"target value -1 at index \(0,\)"),
    ErrorInput(Sample((np.zeros((1, 3, 2, 2)), np.array([[[0, 1], [7, 2]]]), None)), ValueError,
               r"target value 7 at index \(0, 1, 0\)"),
    ErrorInput(Sample((X23, np.array([0, 255]), None), dict(ignore_index=-100)), ValueError, r"target value 255"),
    ErrorInput(Sample((X23, np.array([0.0, 1.0]), None)), TypeError, "integer"),
    ErrorInput(Sample((X23, np.zeros((2, 3), dtype=np.int64), None)), TypeError, "class probabilities and must be floating point"),
    ErrorInput(Sample((X23, np.array([0, 1, 2]), None)), ValueError, r"target of shape \(3,\) does not match input of shape \(2, 3\)"),
    ErrorInput(Sample((X23, np.array([0, 1]), np.ones(4))), ValueError, r"weight of shape \(4,\).*\(3,\)"),
    ErrorInput(Sample((X23, np.array([0, 1]), None), dict(reduction="avg")), ValueError, "reduction"),
    ErrorInput(Sample((X23, np.array([0, 1]), None), dict(label_smoothing=1.5)), ValueError, "label_smoothing"),
    ErrorInput(Sample((X23, np.full((2, 3), 0.3), None), dict(ignore_index=1)), ValueError, "ignore_index=1 is not supported"),
    ErrorInput(Sample((np.zeros((2, 3), dtype=np.int64), np.array([0, 1]), None)), TypeError, "floating point"),
)
NLL_ERRORS = (
    ErrorInput(Sample((X23, np.array([3, 0]), None)), ValueError, r"target value 3 at index \(0,\) is out of range"),
    ErrorInput(Sample((X23, np.array([0.0, 1.0]), None)), TypeError, "integer"),
    ErrorInput(Sample((X23, np.array([[0, 1]]), None)), ValueError, r"\(1, 2\) does not match input of shape \(2, 3\)"),
    ErrorInput(Sample((X23, np.array([0, 1]), np.ones((3, 1)))), ValueError, "weight of shape"),
)
BCE_ERRORS = (
    ErrorInput(Sample((X23, np.zeros((2, 2)), None, None)), ValueError, r"target of shape \(2, 2\) must have the input's shape \(2, 3\)"),
    ErrorInput(Sample((X23, np.zeros((2, 3), dtype=np.int64), None, None)), TypeError, "floating point"),
    ErrorInput(Sample((X23, np.zeros((2, 3)), np.ones(2), None)), ValueError, r"weight of shape \(2,\) does not broadcast"),
    ErrorInput(Sample((X23, np.zeros((2, 3)), None, np.ones((2, 3, 1)))), ValueError, "pos_weight of shape"),
    ErrorInput(Sample((X23, np.zeros((2, 3)), None, None), dict(reduction="max")), ValueError, "reduction"),
)
DICE_ERRORS = (
    ErrorInput(Sample((np.zeros((1, 3, 2, 2)), np.zeros((1, 2, 2)))), TypeError, "integer"),
    ErrorInput(Sample((np.zeros((1, 3, 2, 2)), np.array([[[0, 1], [3, 2]]]))), ValueError,
               r"target value 3 at index \(0, 1, 0\) is out of range for 3 classes"),
    ErrorInput(Sample((np.zeros((1, 2, 2)), np.array([[[0, 1], [2, 1]]]))), ValueError, r"target value 2 at index \(0, 1, 0\) is outside \[0, 1\]"),
    ErrorInput(Sample((np.zeros((1, 3, 2, 2)), np.zeros((1, 3, 2), dtype=np.int64))), ValueError, r"\(1, 3, 2\) does not match"),
    ErrorInput(Sample((np.zeros((1, 3, 2, 2)), np.zeros((1, 2, 2), dtype=np.int64)), dict(num_classes=4)), ValueError, "num_classes=4"),
)

OPS = [
    OpInfo("cross_entropy", _ce, index_target_samples(), torch_op=_torch_ce, errors=CE_ERRORS),
    OpInfo("cross_entropy_probabilities", _ce, probability_target_samples(), torch_op=_torch_ce),
    OpInfo("nll_loss", F.nll_loss, index_target_samples(smoothing=False), torch_op=TF.nll_loss, errors=NLL_ERRORS),
    OpInfo("binary_cross_entropy_with_logits",
           lambda x, t, w, pw, **kw: F.binary_cross_entropy_with_logits(x, t, w, pw, **kw), bce_samples(),
           torch_op=lambda x, t, w, pw, **kw: TF.binary_cross_entropy_with_logits(x, t, w, pos_weight=pw, **kw),
           errors=BCE_ERRORS),
    OpInfo("dice_loss", F.dice_loss, dice_samples(), errors=DICE_ERRORS),
]
test_gradcheck, test_matches_torch, test_errors = op_tests(OPS)


# ---- what the table cannot express ------------------------------------------------------------

@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_all_ignored_batch_gives_nan_mean_zero_sum_and_zero_grads_like_torch(weighted, label_smoothing):
    a = np.random.default_rng(0).standard_normal((2, 3, 2, 2))
    target = np.full((2, 2, 2), 255)
    weight = np.array([0.5, 1.0, 2.0]) if weighted else None
    for reduction in REDUCTIONS:
        x = gf.tensor(a, requires_grad=True)
        t = torch.tensor(a, requires_grad=True)
        kwargs = dict(ignore_index=255, reduction=reduction, label_smoothing=label_smoothing)
        with np.errstate(invalid="raise", divide="raise"):   # nan without numpy warnings
            out = F.cross_entropy(x, gf.tensor(target), None if weight is None else gf.tensor(weight), **kwargs)
        ref = TF.cross_entropy(t, torch.tensor(target), None if weight is None else torch.tensor(weight), **kwargs)
        np.testing.assert_array_equal(out.detach().numpy(), ref.detach().numpy())
        if reduction == "mean":
            assert np.isnan(out.item())
        with np.errstate(invalid="raise", divide="raise"):
            out.sum().backward()
        ref.sum().backward()
        np.testing.assert_array_equal(x.grad.numpy(), np.zeros_like(a))
        np.testing.assert_array_equal(t.grad.numpy(), np.zeros_like(a))


def test_cross_entropy_is_one_fused_function():
    x = gf.tensor(np.zeros((2, 3, 4, 4), dtype=np.float32), requires_grad=True)
    loss = F.cross_entropy(x, gf.tensor(np.zeros((2, 4, 4), dtype=np.int64)), label_smoothing=0.1)
    assert loss.grad_fn is CrossEntropy
    assert loss.dtype == gf.float32


def test_segmentation_shape_float32_with_ignored_pixels_matches_torch():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((8, 5, 16, 16)).astype(np.float32)
    target = rng.integers(0, 5, (8, 16, 16))
    target[rng.random(target.shape) < 0.05] = 255
    weight = rng.uniform(0.5, 2, 5).astype(np.float32)
    x, t = gf.tensor(a, requires_grad=True), torch.tensor(a, requires_grad=True)
    out = F.cross_entropy(x, gf.tensor(target), gf.tensor(weight), ignore_index=255, label_smoothing=0.05)
    ref = TF.cross_entropy(t, torch.tensor(target), torch.tensor(weight), ignore_index=255, label_smoothing=0.05)
    out.backward()
    ref.backward()
    np.testing.assert_allclose(out.item(), ref.item(), rtol=1e-5)
    np.testing.assert_allclose(x.grad.numpy(), t.grad.numpy(), rtol=1e-4, atol=1e-8)


@pytest.mark.parametrize("loss", ["cross_entropy", "nll_loss", "bce", "dice_binary", "dice_multiclass"])
def test_float32_logits_of_1e4_give_finite_loss_and_grads(loss):
    a = np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 1e4]], dtype=np.float32)
    x = gf.tensor(a, requires_grad=True)
    if loss == "cross_entropy":
        out = F.cross_entropy(x, gf.tensor(np.array([1, 0])), label_smoothing=0.1)
        ref = TF.cross_entropy(torch.tensor(a), torch.tensor([1, 0]), label_smoothing=0.1)
        np.testing.assert_allclose(out.item(), ref.item(), rtol=1e-6)
    elif loss == "nll_loss":
        out = F.nll_loss(F.log_softmax(x, 1), gf.tensor(np.array([1, 0])))
    elif loss == "bce":
        target = np.array([[0, 1, 0.5], [1, 0, 1]], dtype=np.float32)
        out = F.binary_cross_entropy_with_logits(x, gf.tensor(target), pos_weight=gf.tensor(np.float32([2, 1, 3])))
        ref = TF.binary_cross_entropy_with_logits(torch.tensor(a), torch.tensor(target), pos_weight=torch.tensor([2.0, 1, 3]))
        np.testing.assert_allclose(out.item(), ref.item(), rtol=1e-6)
    elif loss == "dice_binary":
        out = F.dice_loss(x.reshape(1, 2, 3), gf.tensor(np.array([[[0, 1, 1], [0, 1, 0]]])))
    else:
        out = F.dice_loss(x.reshape(1, 2, 3, 1), gf.tensor(np.array([[[0], [1], [1]]])))
    out.backward()
    assert np.isfinite(out.item())
    assert np.isfinite(x.grad.numpy()).all()


def test_dice_binary_matches_hand_computation():
    # p = sigmoid([0, ln 3]) = [0.5, 0.75], target [1, 0]:
    # dice = (2 * 0.5 + 1) / (0.5 + 0.75 + 1 + 1) = 2 / 3.25
    x = gf.tensor(np.array([[[0.0, np.log(3.0)]]]), requires_grad=True)
    out = F.dice_loss(x, gf.tensor(np.array([[[1.0, 0.0]]])))
    np.testing.assert_allclose(out.item(), 1 - 2 / 3.25, rtol=1e-12)
    # d loss / d x = -d dice / d p * p (1 - p); with I = 0.5, U = 2.25:
    # d dice / d p_j = (2 t_j (U + 1) - (2 I + 1)) / (U + 1)^2
    out.backward()
    p, t = np.array([0.5, 0.75]), np.array([1.0, 0.0])
    expected = -(2 * t * 3.25 - 2.0) / 3.25 ** 2 * p * (1 - p)
    np.testing.assert_allclose(x.grad.numpy().ravel(), expected, rtol=1e-12)


def test_dice_multiclass_matches_hand_computation_and_ignores_pixels():
    # two classes, p = softmax([0, ln 3]) = [0.25, 0.75] at each pixel, targets [0, 1]:
    # class 0: (2 * 0.25 + 1) / (0.5 + 1 + 1) = 0.6; class 1: (2 * 0.75 + 1) / (1.5 + 1 + 1) = 2.5 / 3.5
    logits = np.zeros((1, 2, 1, 3))
    logits[:, 1] = np.log(3.0)
    expected = 1 - (0.6 + 2.5 / 3.5) / 2
    out = F.dice_loss(gf.tensor(logits[..., :2]), gf.tensor(np.array([[[0, 1]]])), num_classes=2)
    np.testing.assert_allclose(out.item(), expected, rtol=1e-12)
    # a third pixel with the ignored label changes nothing
    out = F.dice_loss(gf.tensor(logits), gf.tensor(np.array([[[0, 1, 255]]])), ignore_index=255)
    np.testing.assert_allclose(out.item(), expected, rtol=1e-12)
    per_sample = F.dice_loss(gf.tensor(np.concatenate([logits, -logits])), gf.tensor(np.array([[[0, 1, 1]]] * 2)),
                             reduction="none")
    assert per_sample.shape == (2,)
    np.testing.assert_allclose(F.dice_loss(gf.tensor(np.concatenate([logits, -logits])), gf.tensor(np.array([[[0, 1, 1]]] * 2)),
                                           reduction="sum").item(), per_sample.numpy().sum(), rtol=1e-12)


def test_non_differentiable_weights_raise_like_torch():
    x = gf.tensor(np.zeros((2, 3)), requires_grad=True)
    w = gf.tensor(np.ones(3), requires_grad=True)
    with pytest.raises(RuntimeError, match="weight is not differentiable"):
        F.cross_entropy(x, gf.tensor(np.array([0, 1])), w)
    with pytest.raises(RuntimeError, match="pos_weight is not differentiable"):
        F.binary_cross_entropy_with_logits(x, gf.tensor(np.zeros((2, 3))), pos_weight=w)
    with gf.no_grad():
        F.cross_entropy(x, gf.tensor(np.array([0, 1])), w)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-10), (np.float32, 1e-4)])
def test_cuda_matches_cpu(dtype, tol):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((2, 4, 5, 3)).astype(dtype)
    target = rng.integers(0, 4, (2, 5, 3))
    target[0, 0] = 255
    weight = rng.uniform(0.5, 2, 4).astype(dtype)
    bce_target = rng.uniform(0, 1, a.shape).astype(dtype)
    pos_weight = rng.uniform(0.5, 2, (4, 1, 1)).astype(dtype)
    cases = {
        "ce": lambda x, d: F.cross_entropy(x, gf.tensor(target, device=d), gf.tensor(weight, device=d),
                                           ignore_index=255, label_smoothing=0.1),
        "ce_none": lambda x, d: F.cross_entropy(x, gf.tensor(target, device=d), ignore_index=255, reduction="none"),
        "ce_prob": lambda x, d: F.cross_entropy(x, gf.tensor(bce_target, device=d), label_smoothing=0.2),
        "nll": lambda x, d: F.nll_loss(x, gf.tensor(target, device=d), ignore_index=255, reduction="sum"),
        "bce": lambda x, d: F.binary_cross_entropy_with_logits(x, gf.tensor(bce_target, device=d),
                                                               pos_weight=gf.tensor(pos_weight, device=d)),
        "dice": lambda x, d: F.dice_loss(x, gf.tensor(target, device=d), ignore_index=255),
    }
    for name, fn in cases.items():
        results = []
        for device in ("cpu", "cuda"):
            x = gf.tensor(a, device=device, requires_grad=True)
            out = fn(x, device)
            out.sum().backward()
            results.append((out.detach().cpu().numpy(), x.grad.cpu().numpy()))
        for got, ref in zip(results[1], results[0]):
            np.testing.assert_allclose(got, ref, rtol=tol, atol=tol, err_msg=name)
    bad = target.copy()
    bad[1, 2, 1] = 9
    with pytest.raises(ValueError, match=r"target value 9 at index \(1, 2, 1\)"):
        F.cross_entropy(gf.tensor(a, device="cuda"), gf.tensor(bad, device="cuda"), ignore_index=255)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("smoothing", [0.0, 0.3])
def test_probability_targets_mean_over_batch_and_pixels(dtype, smoothing):
    """"mean" divides by batch x pixels: a batch > 1 and an image > 1 pixel, so dividing
    by only one of them shows in both gradients (input and target)."""
    rng = np.random.default_rng(11)
    x, target = rng.standard_normal((3, 4, 2, 2)), rng.uniform(0, 1, (3, 4, 2, 2))
    info = next(o for o in OPS if o.name == "cross_entropy_probabilities")
    check_against_torch(info, Sample((x, target, None), dict(reduction="mean", label_smoothing=smoothing),
                                     grad=(0, 1)), dtype)
