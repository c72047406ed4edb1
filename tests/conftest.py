import hashlib
import os
import pathlib
import random
import subprocess

import pytest
from hypothesis import HealthCheck, core, settings

# Profiles: "dev" (default) is quick and random; "ci" (what .ci/run uses) draws from a seed
# derived from the commit, so a run is reproducible yet every commit explores new cases;
# "thorough" for deep runs, from a fresh random seed. The seed in use is printed in the
# header of every ci/thorough run; HYPOTHESIS_SEED=<that number> replays it (with the same
# HYPOTHESIS_PROFILE), as does pytest's --hypothesis-seed=<number>.
_common = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                     HealthCheck.filter_too_much])
settings.register_profile("dev", max_examples=10, **_common)
settings.register_profile("ci", max_examples=20, print_blob=True, **_common)
settings.register_profile("thorough", max_examples=200, print_blob=True, **_common)
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "dev")
settings.load_profile(PROFILE)

REPO = pathlib.Path(__file__).resolve().parent.parent


def commit_seed(repo=REPO):
    """A 32-bit seed from the checked-out commit (`git rev-parse HEAD`), or, without git,
    from the content of the package and its tests: the same code draws the same examples."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
        source = f"commit {head}"
    except (OSError, subprocess.SubprocessError):
        digest = hashlib.sha256()
        for path in sorted(p for folder in ("gradflow", "tests") for p in (repo / folder).rglob("*.py")):
            digest.update(str(path.relative_to(repo)).encode() + b"\0" + path.read_bytes())
        source = f"source tree {digest.hexdigest()[:12]}"
    return int(hashlib.sha256(source.encode()).hexdigest()[:8], 16), source


def _choose_seed(config):
    """(seed, where it came from), or (None, why not) when hypothesis stays unseeded."""
    given = config.getoption("--hypothesis-seed", default=None)
    if given is not None:
        return int(given), "--hypothesis-seed"
    if os.environ.get("HYPOTHESIS_SEED"):
        return int(os.environ["HYPOTHESIS_SEED"]), "HYPOTHESIS_SEED"
    if PROFILE == "ci":
        return commit_seed()
    if PROFILE == "thorough":
        return random.SystemRandom().randrange(2**32), "random"
    return None, "unseeded (dev profile: fresh random examples each run)"


def pytest_configure(config):
    # every test runs with autograd's debug checks (a backward returning None for an input
    # that needs a gradient is an error, not a silent zero)
    import gradflow
    gradflow.autograd.set_debug(True)

    if hasattr(config, "workerinput"):   # an xdist worker: the controller chose the seed
        seed = config.workerinput.get("hypothesis_seed")
        config.hypothesis_seed = (seed, "controller")
    else:
        config.hypothesis_seed = _choose_seed(config)
    if config.hypothesis_seed[0] is not None:
        core.global_force_seed = config.hypothesis_seed[0]


try:
    import xdist  # noqa: F401 - pytest_configure_node is an xdist hook
except ImportError:
    pass
else:
    def pytest_configure_node(node):   # xdist controller -> each worker: one seed for the run
        node.workerinput["hypothesis_seed"] = node.config.hypothesis_seed[0]


def pytest_report_header(config):
    seed, source = config.hypothesis_seed
    if seed is None:
        return f"hypothesis profile {PROFILE!r}, {source}"
    return (f"hypothesis profile {PROFILE!r}, seed {seed} ({source}); reproduce with: "
            f"HYPOTHESIS_PROFILE={PROFILE} HYPOTHESIS_SEED={seed} python -m pytest ...")


def pytest_sessionstart(session):
    # the header is hidden under -q (CI's mode), so say it once more where -q still shows it
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None and session.config.option.verbose < 0 and not hasattr(session.config, "workerinput"):
        reporter.write_line(pytest_report_header(session.config))


def pytest_collection_modifyitems(config, items):
    import gradflow
    if gradflow.cuda.is_available():
        return
    skip = pytest.mark.skip(reason=f"no usable CUDA GPU: {gradflow.cuda.why_unavailable()}")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
