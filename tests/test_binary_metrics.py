"""Binary segmentation metrics: thresholded sigmoid predictions, foreground IoU and Dice (vs sklearn)."""
import numpy as np
import pytest
from sklearn.metrics import f1_score, jaccard_score

import gradflow as gf
from gradflow.metrics import BinaryMetrics, per_class_dice, sigmoid_predictions


def test_sigmoid_predictions_threshold_the_probability():
    logits = np.array([[[-2.0, -0.1, 0.0, 0.1, 3.0]]])                         # (N=1, 1, 5)
    np.testing.assert_array_equal(sigmoid_predictions(logits), [[0, 0, 0, 1, 1]])   # p > 0.5, as p = 0.5 is not
    probs = 1 / (1 + np.exp(-logits))
    for threshold in (0.2, 0.7):
        np.testing.assert_array_equal(sigmoid_predictions(logits, threshold), (probs[:, 0] > threshold).astype(int))
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        sigmoid_predictions(logits, 1.0)


def test_binary_metrics_match_sklearn_over_batches():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(6, 1, 9, 7)).astype(np.float32)
    target = (rng.random((6, 9, 7)) < 0.3).astype(np.int64)
    target[0, :2] = 255                                                          # ignored pixels
    metrics = BinaryMetrics()
    for lo, hi in [(0, 2), (2, 3), (3, 6)]:                                      # batching does not matter
        metrics.update(gf.tensor(logits[lo:hi]), gf.tensor(target[lo:hi]))
    out = metrics.compute()
    keep = target != 255
    pred = (logits[:, 0] > 0)[keep].astype(int)
    true = target[keep]
    assert out["foreground_iou"] == pytest.approx(jaccard_score(true, pred))
    assert out["foreground_dice"] == pytest.approx(f1_score(true, pred))
    assert out["per_class_dice"][0] == pytest.approx(f1_score(true, pred, pos_label=0))
    assert out["miou"] == pytest.approx((jaccard_score(true, pred) + jaccard_score(true, pred, pos_label=0)) / 2)
    assert metrics.matrix.sum() == keep.sum()


def test_binary_metrics_take_class_ids_too_and_reset():
    metrics = BinaryMetrics().update(np.array([[1, 1, 0, 0]]), np.array([[1, 0, 0, 1]]))
    out = metrics.compute()
    assert out["foreground_iou"] == pytest.approx(1 / 3) and out["foreground_dice"] == pytest.approx(0.5)
    metrics.reset()
    assert np.isnan(metrics.compute()["foreground_iou"])                        # nothing counted: undefined


def test_per_class_dice_of_a_confusion_matrix():
    cm = np.array([[5, 1, 0], [2, 3, 0], [0, 0, 0]])
    np.testing.assert_allclose(per_class_dice(cm)[:2], [10 / 13, 6 / 9])
    assert np.isnan(per_class_dice(cm)[2])
