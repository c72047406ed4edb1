import os

import pytest
from hypothesis import HealthCheck, settings

# Profiles: "dev" (default) is quick and random; "ci" (what .ci/run uses) draws the same examples
# every run, so a CI result never hinges on a lucky draw; "thorough" for local deep runs.
_common = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                     HealthCheck.filter_too_much])
settings.register_profile("dev", max_examples=10, **_common)
settings.register_profile("ci", max_examples=20, print_blob=True, derandomize=True, **_common)
settings.register_profile("thorough", max_examples=200, **_common)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


def pytest_collection_modifyitems(config, items):
    import gradflow
    if gradflow.cuda.is_available():
        return
    skip = pytest.mark.skip(reason=f"no usable CUDA GPU: {gradflow.cuda.why_unavailable()}")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
