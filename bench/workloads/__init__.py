"""Benchmark workloads: each module has `cases(settings) -> [Case]`.

Imported lazily (the compile probe times imports from a near-empty process).
"""
import importlib

# FCN-bench first: if a time limit cuts a run short, the headline rows are already written
MODULES = ("fcn", "conv", "pool", "norm", "loss", "optim", "overhead", "memory", "compile")


def all_cases(settings):
    cases = []
    for name in MODULES:
        cases.extend(importlib.import_module(f"bench.workloads.{name}").cases(settings))
    return cases
