"""`mpirun -n 2 python models/fcn.py train`: trains like one process, rank 0 alone writes, a killed rank
stops the run without a hang and `--resume auto` continues it exactly."""
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from gradflow import checkpoint
from tests.distributed.helpers import HERE, REPO, mpi_env, mpirun, needs_mpi
from tests.models.helpers import FCN_SCRIPT, TINY, model_weights

pytestmark = needs_mpi
# 16 images, global batch 4: 4 steps an epoch, 2 per process per step; a checkpoint every 2 steps.
# SGD: Adam divides by sqrt(second moment), which magnifies rounding where a gradient is near zero.
# lr 0.02: at 0.05 this tiny run is chaotic (its loss jumps up and down), so float32 rounding
# differences of one ulp grow to 1e-4 within 8 steps and the comparison would measure chaos
RUN = ["train", *TINY, "--epochs", "2", "--ckpt-every", "2", "--no-plots", "--optimizer", "sgd", "--lr", "0.02"]


def _explain(result):
    return f"exit {result.returncode}\n--- stdout\n{result.stdout[-3000:]}\n--- stderr\n{result.stderr[-3000:]}"


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("two")
    result = mpirun([FCN_SCRIPT, *RUN, "--out", out], timeout=240)
    assert result.returncode == 0, _explain(result)
    return out / "fcn-shapes", result


def test_two_processes_train_the_same_model_as_one(two_process_run, tmp_path):
    run_dir, result = two_process_run
    single = subprocess.run([sys.executable, FCN_SCRIPT, *RUN, "--out", tmp_path], env=mpi_env(), cwd=REPO,
                            capture_output=True, text=True, timeout=240)
    assert single.returncode == 0, _explain(single)
    ours, ref = model_weights(run_dir / "last.ckpt"), model_weights(tmp_path / "fcn-shapes" / "last.ckpt")
    assert ours.keys() == ref.keys()
    # float32 rounding differs (sums over 2 images twice vs 4 once) and 8 steps carry it along; the
    # last two steps alone moved the weights by 50 times the tolerance or more
    earlier = model_weights(run_dir / "last.ckpt.prev")
    assert max(np.abs(ours[n] - earlier[n]).max() for n in ref) > 50 * 2e-5
    for name in ref:
        np.testing.assert_allclose(ours[name], ref[name], rtol=1e-4, atol=2e-5, err_msg=name)
    two, one = (json.loads((d / "metrics.json").read_text()) for d in (run_dir, tmp_path / "fcn-shapes"))
    for a, b in zip(two["epochs"], one["epochs"]):
        assert a["steps"] == b["steps"] == 4
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-4)
        assert a["val_miou"] == pytest.approx(b["val_miou"], rel=1e-4)   # confusion matrices summed over ranks
    # rank 0 alone logs and writes
    assert result.stdout.count("training fcn") == 1 and "on 2 processes" in result.stdout
    assert result.stdout.count("epoch 2/2") == 1
    assert sorted(os.listdir(run_dir)) == ["best.ckpt", "best.safetensors", "last.ckpt", "last.ckpt.prev", "metrics.json"]


def test_killed_rank_stops_the_run_and_resume_auto_finishes_it_exactly(two_process_run, tmp_path):
    uninterrupted, _ = two_process_run
    start = time.monotonic()
    # rank 1 dies right after its 5th step's update (a checkpoint was written after step 4)
    killed = mpirun([HERE / "kill_rank.py", "1", "step:5", FCN_SCRIPT, *RUN, "--out", tmp_path], timeout=240)
    assert killed.returncode != 0, _explain(killed)
    assert "signal 9" in killed.stderr, _explain(killed)
    assert time.monotonic() - start < 200
    last = tmp_path / "fcn-shapes" / "last.ckpt"
    state = checkpoint.load(last)            # intact: its checksum verifies
    assert state["global_step"] == 4 and state["world_size"] == 2
    # one process cannot continue a two-process run's data order
    single = subprocess.run([sys.executable, FCN_SCRIPT, *RUN, "--out", tmp_path, "--resume", "auto"],
                            env=mpi_env(), cwd=REPO, capture_output=True, text=True, timeout=120)
    assert single.returncode == 1 and "written by a run on 2 process(es)" in single.stderr, _explain(single)
    resumed = mpirun([FCN_SCRIPT, *RUN, "--out", tmp_path, "--resume", "auto"], timeout=240)
    assert resumed.returncode == 0, _explain(resumed)
    assert "resuming from" in resumed.stdout and "step 0 (global step 4)" in resumed.stdout
    ours, ref = model_weights(last), model_weights(uninterrupted / "last.ckpt")
    for name in ref:
        np.testing.assert_array_equal(ours[name], ref[name], err_msg=name)
