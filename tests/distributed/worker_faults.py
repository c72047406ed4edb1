"""Run under ``mpirun -n 2``: one rank fails while the other is inside a collective.

mode "stuck": rank 1 stops calling collectives (alive, sleeping); rank 0's all-reduce must
hit the group's deadline, raise DistributedTimeoutError and abort the job.
mode "killed": rank 1 is SIGKILLed in the middle of DDP training; the launcher must stop
rank 0, which is waiting on a gradient bucket.
"""
import os
import signal
import sys
import time

import numpy as np

import gradflow as gf
import gradflow.distributed as dist
from gradflow import nn
from gradflow.nn.parallel import DistributedDataParallel as DDP

mode = sys.argv[1]
dist.init_process_group(timeout=float(sys.argv[2]) if len(sys.argv) > 2 else None)
rank = dist.get_rank()
model = DDP(nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2)))
optimizer = gf.optim.SGD(model.parameters(), lr=0.1)
x = gf.tensor(np.ones((4, 8), dtype=np.float32))
for step in range(1000):
    if step == 3 and rank == 1:
        print(f"rank 1 {mode} at step {step}", flush=True)
        if mode == "killed":
            os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(120)
    optimizer.zero_grad()
    model(x).sum().backward()
    optimizer.step()
print(f"rank {rank} finished all steps, which it must not", flush=True)
