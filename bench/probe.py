"""Run a measurement in a fresh Python process and read back its JSON result.

Used where the measurement needs a clean process: resident memory (RSS) and
first-call compile time with a chosen Numba cache directory.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MARK = "RESULT "


def run_probe(module, args, env=None, timeout=600):
    """`python -m bench.workloads.<module> args` -> the dict it printed as `RESULT {...}`."""
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = str(ROOT) + os.pathsep + full_env.get("PYTHONPATH", "")
    full_env.update(env or {})
    proc = subprocess.run([sys.executable, "-m", f"bench.workloads.{module}", *map(str, args)],
                          cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=timeout)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(MARK):
            return json.loads(line[len(MARK):])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-6:]
    raise RuntimeError(f"probe {module} {' '.join(map(str, args))} exited {proc.returncode}: "
                       + " | ".join(tail))


def emit(result):
    """Called by the probe process: print the result line run_probe looks for."""
    print(MARK + json.dumps(result), flush=True)


def probe_error(result):
    """A probe reports a missing op/module as {"not_available": reason}; turn it back into NotAvailable."""
    from bench.harness import NotAvailable
    if "not_available" in result:
        raise NotAvailable(result["not_available"])
    return result
