"""Two processes under mpirun: the collectives, DDP and the failure modes (each launch bounded in time)."""
import time

from tests.distributed.helpers import HERE, mpirun, needs_mpi

pytestmark = needs_mpi


def _explain(result):
    return f"exit {result.returncode}\n--- stdout\n{result.stdout[-4000:]}\n--- stderr\n{result.stderr[-4000:]}"


def test_collectives_sampler_and_ddp_on_two_processes():
    """worker_checks.py: every dtype/shape/op, mismatch errors, sampler shards, DDP = one process
    (GroupNorm FCN, one and many buckets), no_sync, BatchNorm buffers, unused parameters."""
    result = mpirun([HERE / "worker_checks.py"], timeout=300)
    assert result.returncode == 0, _explain(result)
    assert "ALL CHECKS PASSED" in result.stdout, _explain(result)


def test_a_stuck_rank_makes_the_others_stop_with_a_clear_error():
    start = time.monotonic()
    result = mpirun([HERE / "worker_faults.py", "stuck", "2"], timeout=90)
    elapsed = time.monotonic() - start
    assert result.returncode != 0, _explain(result)
    assert "rank 1 stuck at step 3" in result.stdout
    assert "DistributedTimeoutError" in result.stderr, _explain(result)
    assert "did not finish within 2 s on rank 0 of 2" in result.stderr, _explain(result)
    assert "aborting all ranks" in result.stderr, _explain(result)
    assert "finished all steps" not in result.stdout
    assert elapsed < 60, f"took {elapsed:.0f} s: the 2 s deadline did not stop the job"


def test_a_killed_rank_stops_the_job_without_hanging():
    start = time.monotonic()
    result = mpirun([HERE / "worker_faults.py", "killed", "30"], timeout=90)
    elapsed = time.monotonic() - start
    assert result.returncode != 0, _explain(result)
    assert "rank 1 killed at step 3" in result.stdout
    assert "exited on" in result.stderr and "signal 9" in result.stderr, _explain(result)
    assert "finished all steps" not in result.stdout
    assert elapsed < 60, f"took {elapsed:.0f} s"
