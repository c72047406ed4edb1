"""Benchmark workloads: each module has `cases(settings) -> [Case]`.

Imported lazily (the compile probe times imports from a near-empty process).
"""
import importlib

MODULES = ("conv", "pool", "norm", "loss", "fcn", "overhead", "memory", "compile")


def all_cases(settings):
    cases = []
    for name in MODULES:
        cases.extend(importlib.import_module(f"bench.workloads.{name}").cases(settings))
    return cases
