"""gradflow.transfer: one counted door for device-to-host reads, batched fetches, queued
checks, the fused finiteness flag; and the metrics that read back only when asked."""
import numpy as np
import pytest

import gradflow as gf
from gradflow import transfer
from gradflow.metrics import ConfusionMatrix
from tests.test_metrics import CM, PRED, TARGET


def test_to_host_counts_every_call_and_passes_numpy_through():
    a, b = np.arange(3), np.ones((2, 2))
    with transfer.counting() as calls:
        assert transfer.to_host(a) is a
        got_a, got_b = transfer.to_host(a, b)
        assert got_a is a and got_b is b
        assert calls() == 2


def test_tensor_reads_go_through_to_host():
    t = gf.tensor([1.5])
    with transfer.counting() as calls:
        assert t.item() == 1.5 and float(t) == 1.5
        assert t.tolist() == [1.5] and t.numpy().tolist() == [1.5]
        assert calls() == 4


def test_check_later_raises_at_once_for_host_flags():
    raised = []
    transfer.check_later(np.array(False), lambda: raised.append(1))
    assert not raised
    with pytest.raises(RuntimeError, match="bad"):
        transfer.check_later(np.array(True), _raise("bad"))


def _raise(message):
    def raise_error():
        raise RuntimeError(message)
    return raise_error


def test_nonfinite_each_on_host_arrays():
    flags = transfer.nonfinite_each([np.ones(3), None, np.array([1.0, np.inf]), np.array([np.nan], np.float32)])
    assert flags.tolist() == [False, False, True, True]
    assert not bool(transfer.any_nonfinite([np.ones(3), None])) and bool(transfer.any_nonfinite([np.array(np.nan)]))
    assert transfer.nonfinite_each([]).shape == (0,)


def test_confusion_matrix_reads_back_only_when_asked():
    meter = ConfusionMatrix(3)
    with transfer.counting() as calls:
        for _ in range(4):
            meter.update(PRED, TARGET)
        assert calls() == 0
        np.testing.assert_array_equal(meter.matrix, 4 * CM)
        assert calls() == 1
        meter.compute()
        assert calls() == 2


def test_confusion_matrix_can_be_replaced_not_written_through():
    meter = ConfusionMatrix(3)
    meter.matrix = CM
    np.testing.assert_array_equal(meter.update(PRED, TARGET).matrix, 2 * CM)
    with pytest.raises(ValueError, match="read-only"):
        meter.matrix[...] = 0
    with pytest.raises(ValueError, match=r"shape \(3, 3\)"):
        meter.matrix = np.zeros((2, 2))


@pytest.mark.gpu
def test_cuda_reads_are_batched_and_checks_queued():
    cupy = pytest.importorskip("cupy")
    a, b = cupy.arange(5), cupy.array([[1.5, 2.5]], dtype=cupy.float32)
    with transfer.counting() as calls:
        got_a, got_b = transfer.to_host(a, b)
    assert calls() == 1 and got_a.tolist() == list(range(5)) and got_b.dtype == np.float32
    transfer.check_later(cupy.array(True), _raise("queued"))
    with pytest.raises(RuntimeError, match="queued"):
        transfer.to_host(a)
    assert not transfer._pending
    grads = [cupy.ones(100), None, cupy.ones(7, dtype=cupy.float32), cupy.array([1.0, cupy.nan])]
    assert transfer.to_host(transfer.nonfinite_each(grads)).tolist() == [False, False, False, True]


@pytest.mark.gpu
def test_cuda_confusion_matrix_stays_on_device_and_reports_bad_ids_later():
    meter = ConfusionMatrix(3)
    pred, target = gf.tensor(PRED, device="cuda"), gf.tensor(TARGET, device="cuda")
    with transfer.counting() as calls:
        meter.update(pred, target).update(pred, target)
        assert calls() == 0
    np.testing.assert_array_equal(meter.matrix, 2 * CM)
    meter.update(gf.tensor(np.array([0, 5]), device="cuda"), gf.tensor(np.array([0, 1]), device="cuda"))
    with pytest.raises(ValueError, match=r"pred has class ids \[5\]"):
        meter.compute()
