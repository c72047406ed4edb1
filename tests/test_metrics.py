import math
import warnings

import numpy as np
import pytest
from hypothesis import given, strategies as st

import gradflow as gf
from gradflow.metrics import (ConfusionMatrix, confusion_matrix, mean_accuracy, mean_iou, per_class_accuracy,
                              per_class_iou, pixel_accuracy)

# A hand-worked example (C = 3, 255 = ignore):
#   target  0 0 1      pred  0 1 1
#           1 2 255          1 0 2
# counted pixels (t, p): (0,0) (0,1) (1,1) (1,1) (2,0); the (255, 2) pixel is ignored.
TARGET = np.array([[0, 0, 1], [1, 2, 255]])
PRED = np.array([[0, 1, 1], [1, 0, 2]])
CM = np.array([[1, 1, 0],      # true 0: one right, one called 1
               [0, 2, 0],      # true 1: both right
               [1, 0, 0]])     # true 2: called 0


def test_hand_worked_confusion_matrix_and_scores():
    cm = confusion_matrix(PRED, TARGET, 3)
    np.testing.assert_array_equal(cm, CM)
    assert cm.dtype == np.int64
    assert pixel_accuracy(cm) == pytest.approx(3 / 5)
    np.testing.assert_allclose(per_class_accuracy(cm), [1 / 2, 2 / 2, 0 / 1])
    assert mean_accuracy(cm) == pytest.approx(0.5)
    # IoU = TP / (TP + FP + FN): class 0: 1/(1+1+1), class 1: 2/(2+1+0), class 2: 0/(0+0+1)
    np.testing.assert_allclose(per_class_iou(cm), [1 / 3, 2 / 3, 0.0])
    assert mean_iou(cm) == pytest.approx(1 / 3)


def test_absent_class_is_nan_and_left_out_of_means():
    # C = 4: class 3 appears nowhere; class 2 only as a (wrong) prediction
    target = np.array([0, 0, 1, 1])
    pred = np.array([0, 2, 1, 1])
    cm = confusion_matrix(pred, target, 4, ignore_index=None)
    iou = per_class_iou(cm)
    # class 0: 1/(1+0+1); class 1: 2/2; class 2: 0/(0+1+0) = 0 (it counts); class 3: undefined
    np.testing.assert_allclose(iou[:3], [0.5, 1.0, 0.0])
    assert math.isnan(iou[3])
    assert mean_iou(cm) == pytest.approx((0.5 + 1.0 + 0.0) / 3)
    # mean accuracy averages classes present in the target only: (1/2 + 2/2) / 2
    assert mean_accuracy(cm) == pytest.approx(0.75)
    result = ConfusionMatrix(4).update(pred, target).compute()
    assert math.isnan(result["per_class_iou"][3]) and result["miou"] == pytest.approx(0.5)


def test_logits_tensors_and_accumulation():
    logits = np.zeros((2, 3, 1, 3), np.float32)           # batch of two rows of the example
    for n in range(2):
        for j in range(3):
            logits[n, PRED[n, j], 0, j] = 5.0
    target = TARGET[:, None, :]                            # (N, H, W) = (2, 1, 3)
    meter = ConfusionMatrix(3)
    meter.update(gf.tensor(logits, requires_grad=True), gf.tensor(target))   # logits: argmax over dim 1
    np.testing.assert_array_equal(meter.matrix, CM)
    meter.update(PRED, TARGET)                              # class ids, numpy: counts add up
    np.testing.assert_array_equal(meter.matrix, 2 * CM)
    out = meter.compute()
    assert set(out) == {"pixel_accuracy", "mean_accuracy", "per_class_iou", "miou"}
    assert out["pixel_accuracy"] == pytest.approx(0.6) and out["miou"] == pytest.approx(1 / 3)
    assert isinstance(out["per_class_iou"], list) and isinstance(out["miou"], float)
    meter.reset()
    assert meter.matrix.sum() == 0


def test_empty_matrix_gives_nan_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = ConfusionMatrix(2).compute()
        assert all(math.isnan(out[k]) for k in ("pixel_accuracy", "mean_accuracy", "miou"))
        out = ConfusionMatrix(2).update(np.array([0]), np.array([255])).compute()   # only ignored pixels
        assert math.isnan(out["pixel_accuracy"])


@pytest.mark.filterwarnings("ignore:A single label was found")     # sklearn, although labels= is given
@given(n=st.integers(1, 3), hw=st.integers(1, 6), classes=st.integers(1, 6), seed=st.integers(0, 2 ** 32),
       ignore_share=st.floats(0, 0.5), batches=st.integers(1, 3))
def test_matches_sklearn_with_ignored_pixels(n, hw, classes, seed, ignore_share, batches):
    sk_confusion = pytest.importorskip("sklearn.metrics").confusion_matrix
    rng = np.random.default_rng(seed)
    meter = ConfusionMatrix(classes, ignore_index=255)
    all_pred, all_target = [], []
    for _ in range(batches):
        target = rng.integers(0, classes, size=(n, hw, hw))
        target[rng.random(target.shape) < ignore_share] = 255
        logits = rng.standard_normal((n, classes, hw, hw))
        meter.update(logits, target)
        all_pred.append(logits.argmax(1).ravel())
        all_target.append(target.ravel())
    pred, target = np.concatenate(all_pred), np.concatenate(all_target)
    keep = target != 255
    if not keep.any():      # sklearn refuses empty input; nothing was counted
        assert meter.matrix.sum() == 0
        return
    expected = sk_confusion(target[keep], pred[keep], labels=list(range(classes)))
    np.testing.assert_array_equal(meter.matrix, expected)
    assert meter.compute()["pixel_accuracy"] == pytest.approx((pred[keep] == target[keep]).mean())


@pytest.mark.parametrize("target, match", [(np.array([0, 7]), r"\[7\]"), (np.array([-1, 0]), r"\[-1\]")])
def test_bad_target_values_are_named(target, match):
    with pytest.raises(ValueError, match=match):
        confusion_matrix(np.array([0, 0]), target, 3)


def test_other_bad_inputs():
    with pytest.raises(ValueError, match=r"pred has class ids \[3\]"):
        confusion_matrix(np.array([3, 0]), np.array([0, 0]), 3)
    with pytest.raises(ValueError, match="255"):       # without ignore_index, 255 is just a bad id
        confusion_matrix(np.array([0, 0]), np.array([0, 255]), 3, ignore_index=None)
    with pytest.raises(ValueError, match="shape"):
        confusion_matrix(np.zeros((2, 3), np.int64), np.zeros((3, 2), np.int64), 3)
    with pytest.raises(ValueError, match="integer class ids"):
        confusion_matrix(np.zeros((2, 2), np.float32), np.zeros((2, 2), np.int64), 3)
    with pytest.raises(ValueError, match="positive"):
        ConfusionMatrix(0)


@pytest.mark.gpu
def test_cuda_tensors_match_cpu():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((2, 4, 8, 8)).astype(np.float32)
    target = rng.integers(0, 4, size=(2, 8, 8))
    target[0, 0] = 255
    gpu = confusion_matrix(gf.tensor(logits, device="cuda"), gf.tensor(target, device="cuda"), 4)
    np.testing.assert_array_equal(gpu, confusion_matrix(logits, target, 4))
