"""CI's hypothesis seed: derived from the commit, printed, and a run replays from it."""
import os
import subprocess
import sys

from tests.conftest import REPO, commit_seed

DRAWS = '''
import os
from hypothesis import given, strategies as st

@given(st.integers(0, 10**9))
def test_draw(n):
    with open(os.environ["DRAW_LOG"], "a") as f:
        f.write(f"{n}\\n")
'''


def _run(tmp_path, name, **env):
    (tmp_path / "test_draw.py").write_text(DRAWS)
    log = tmp_path / name
    full_env = {k: v for k, v in os.environ.items() if k != "HYPOTHESIS_SEED"}
    full_env.update(PYTHONPATH=str(REPO), DRAW_LOG=str(log), **env)
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "tests.conftest", "--rootdir", str(tmp_path),
                             str(tmp_path / "test_draw.py")], cwd=REPO, env=full_env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout, log.read_text().split()


def test_ci_seed_comes_from_the_commit_is_printed_and_replays(tmp_path):
    seed, source = commit_seed()
    out, draws = _run(tmp_path, "ci", HYPOTHESIS_PROFILE="ci")
    assert f"seed {seed} ({source})" in out and f"HYPOTHESIS_SEED={seed}" in out
    replay_out, replay = _run(tmp_path, "replay", HYPOTHESIS_PROFILE="ci", HYPOTHESIS_SEED=str(seed))
    assert replay == draws            # the printed seed reproduces the run's examples
    _, other = _run(tmp_path, "other", HYPOTHESIS_PROFILE="ci", HYPOTHESIS_SEED=str(seed + 1))
    assert other != draws             # and another commit's seed explores other examples


def test_commit_seed_falls_back_to_the_source_tree_without_git(tmp_path):
    (tmp_path / "gradflow").mkdir()
    (tmp_path / "tests").mkdir()
    (tmp_path / "gradflow" / "a.py").write_text("x = 1\n")
    first = commit_seed(tmp_path)
    assert first == commit_seed(tmp_path) and first[1].startswith("source tree")
    (tmp_path / "gradflow" / "a.py").write_text("x = 2\n")
    assert commit_seed(tmp_path)[0] != first[0]
