"""Launching test scripts under mpirun: bounded in time, fast on one machine, allowed as root (CI)."""
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
HERE = pathlib.Path(__file__).resolve().parent


def mpirun_path():
    found = shutil.which("mpirun", path=os.pathsep.join([str(pathlib.Path(sys.executable).parent),
                                                         os.environ.get("PATH", "")]))
    return found


needs_mpi = pytest.mark.skipif(mpirun_path() is None, reason="mpirun not installed (pip install gradflow[distributed])")


def mpi_env(extra=None):
    env = dict(os.environ)
    env.update({
        "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",   # CI containers run as root
        "OMPI_MCA_btl": "self,sm",          # shared memory only: no network probing on one machine
        "OMPI_MCA_pml": "ob1",
        "PRTE_MCA_rmaps_default_mapping_policy": ":oversubscribe",
        "PYTHONPATH": os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]),
        "GRADFLOW_DEVICE": "cpu",
        "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1",
    })
    env.update(extra or {})
    return env


def mpirun(args, n=2, timeout=120, env=None, cwd=None):
    """``mpirun -n N python ARGS``; the subprocess timeout makes a hang a test failure, never a stuck CI."""
    command = [mpirun_path(), "-n", str(n), "--oversubscribe", sys.executable, *map(str, args)]
    return subprocess.run(command, env=mpi_env(env), cwd=cwd or REPO, capture_output=True, text=True,
                          timeout=timeout)
