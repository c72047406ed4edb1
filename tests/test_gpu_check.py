"""bench/gpu_check.sh --dry-run: the GPU check's plumbing, on the CPU (the simulator stands in
for Numba's CUDA target). Every stage must run and pass, within limits that fit the GPU budget;
missing packages skip their stages instead of failing them."""
import os
import pathlib
import re
import shutil
import subprocess

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = REPO / "bench" / "gpu_check.sh"
STAGES = ("probe", "env", "bench", "numba-cuda", "launch", "optim", "agreement", "gpu-tests", "kernel-tests",
          "train")

pytestmark = pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None,
                                reason="needs bash and coreutils timeout")


def _run(tmp_path, *args, env=None):
    environ = dict(os.environ, OUT=str(tmp_path / "out"), GRADFLOW_DEVICE="cpu", **(env or {}))
    environ.pop("NUMBA_ENABLE_CUDASIM", None)
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=tmp_path, env=environ, capture_output=True,
                          text=True, timeout=900)


def _summary(stdout):
    tail = stdout.split("=== summary", 1)[1]
    return {m.group(1): m.group(2).strip() for m in re.finditer(r"^  (\S+)\s+(.+?)\s+\d+ s$", tail, re.M)}


def test_dry_run_passes_every_stage_within_the_budget(tmp_path):
    result = _run(tmp_path, "--dry-run")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    plan = re.search(r"GPU budget (\d+)s; stage limits add up to (\d+)s", result.stdout)
    assert plan and int(plan.group(2)) <= int(plan.group(1)) <= 540
    summary = _summary(result.stdout)
    assert {stage: summary.get(stage) for stage in STAGES} == {stage: "ok" for stage in STAGES}
    assert summary.get("nccl", "").startswith("skipped (dry run"), summary
    out = tmp_path / "out"
    for name in ("gpu_check.log", "bench_cuda.json", "launch.json", "optim.json", "train_metrics.json"):
        assert (out / name).is_file(), name
    assert "libdevice" in result.stdout and "nvvm" in result.stdout
    assert result.stdout.index("=== [bench]") < result.stdout.index("=== [numba-cuda]")   # benchmark first


def test_missing_packages_skip_their_stages_and_training_drops_plots(tmp_path):
    result = _run(tmp_path, "--dry-run", env={"GPU_CHECK_PRETEND_MISSING": "torch matplotlib hypothesis"})
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    summary = _summary(result.stdout)
    for stage in ("bench", "optim"):
        assert summary[stage] == "skipped (no torch)", (stage, summary)
    for stage in ("agreement", "gpu-tests", "kernel-tests"):
        assert summary[stage].startswith("skipped (no pytest_and_hypothesis"), (stage, summary)
    assert summary["train"] == "ok" and "--no-plots" in result.stdout
    assert not (tmp_path / "out" / "train_curves.png").exists()


def test_limits_over_the_budget_are_refused_before_anything_runs(tmp_path):
    result = _run(tmp_path, env={"GPU_CHECK_BUDGET": "300"})
    assert result.returncode == 2
    assert "over the 300s budget" in result.stderr and not (tmp_path / "out").exists()
