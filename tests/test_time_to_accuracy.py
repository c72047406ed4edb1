"""bench/time_to_accuracy.py trains the same model from the same weights on the same batches in
both engines: a few steps of each must give the same validation curve (float rounding aside)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
ROOT = Path(__file__).resolve().parent.parent


def test_both_engines_follow_the_same_curve(tmp_path):
    out = tmp_path / "result.json"
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "time_to_accuracy.py"), "--worker", str(out),
                           "--threads", "1", "--train-size", "48", "--val-size", "16", "--batch", "8",
                           "--eval-every", "3", "--target", "1.01", "--epochs", "1"],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    ours, theirs = result["engines"]["gradflow"], result["engines"]["torch"]
    assert ours["seconds_to_target"] is None and theirs["seconds_to_target"] is None   # 1.01: unreachable
    assert ours["steps"] == theirs["steps"] == 6                                        # one epoch of 48 / 8
    assert [c[0] for c in ours["curve"]] == [c[0] for c in theirs["curve"]] == [3, 6]
    for (_, _, miou, loss), (_, _, their_miou, their_loss) in zip(ours["curve"], theirs["curve"]):
        assert abs(miou - their_miou) < 0.02 and loss == pytest.approx(their_loss, rel=1e-3), (ours, theirs)
    assert ours["curve"][0][3] != ours["curve"][1][3]      # the weights moved between the two points
