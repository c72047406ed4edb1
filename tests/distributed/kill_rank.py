"""``mpirun -n N python tests/distributed/kill_rank.py RANK SPEC models/fcn.py ARGS...``: SIGKILL only rank
RANK at SPEC (step:N or write:N, as tests/models/faults.py), the other ranks run normally."""
import os
import pathlib
import runpy
import sys

REPO = pathlib.Path(__file__).resolve().parents[2]

if __name__ == "__main__":
    rank, spec, script, *args = sys.argv[1:]
    sys.path.insert(0, str(REPO))
    if os.environ.get("OMPI_COMM_WORLD_RANK", os.environ.get("PMI_RANK")) == rank:
        from tests.models.faults import install_kill
        install_kill(spec)
    sys.argv = [script, *args]
    runpy.run_path(script, run_name="__main__")
