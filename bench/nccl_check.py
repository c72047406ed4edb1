"""The NCCL path on a real GPU: one process, world_size 1 (run where CuPy, NCCL and a GPU are present).

    pip install -e ".[gpu,distributed]"
    OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 mpirun -n 1 python bench/nccl_check.py

With one process every collective is an identity (all_reduce sum/max = the input, avg
= the input, broadcast and all-gather copy it), so the results are known exactly; what
runs is the real thing: the NCCL unique id made on rank 0 and broadcast over MPI, the
communicator, allReduce/bcast/allGather on the arrays' device pointers on CuPy's
current stream, the event-polled waits, and DistributedDataParallel on CUDA
parameters (its steps must equal the same steps without DDP). With more GPUs,
``mpirun -n <GPUs>`` checks the sums too. Prints one line per check; exit 1 on the first failure.
"""
import sys
import time

import numpy as np

import gradflow as gf
import gradflow.distributed as dist
from gradflow import backend
from gradflow.nn.parallel import DistributedDataParallel


def check(name, ok, detail=""):
    print(f"{'ok  ' if ok else 'FAIL'} {name}{': ' + detail if detail else ''}", flush=True)
    if not ok:
        sys.exit(1)


def main():
    start = time.perf_counter()
    group = dist.init_process_group(backend="nccl", timeout=120)
    world, rank = group.world_size, group.rank
    nccl = group.nccl()
    check("NCCL communicator", True, f"rank {rank} of {world} on GPU {nccl.device}, "
          f"made in {time.perf_counter() - start:.2f} s")
    for dtype in ("float32", "float64", "int64"):
        for shape in ((), (7,), (3, 5), (2, 3, 4)):
            base = (np.arange(int(np.prod(shape))).reshape(shape) - 2).astype(dtype)
            mine = base * (rank + 1)
            everyone = [base * (r + 1) for r in range(world)]
            total = sum(everyone)
            for op, want in (("sum", total), ("max", np.max(everyone, axis=0)),
                             ("avg", total / world if dtype != "int64" else np.sign(total) * (np.abs(total) // world))):
                t = gf.tensor(mine, device="cuda")
                pointer = t.data.data.ptr
                dist.all_reduce(t, op=op)
                same = np.array_equal(backend.to_numpy(t.data), np.asarray(want, dtype=dtype))
                check(f"all_reduce {op} {dtype} {shape}", same and t.data.data.ptr == pointer)
            t = gf.tensor(mine, device="cuda")
            dist.broadcast(t, src=0)
            check(f"broadcast {dtype} {shape}", np.array_equal(backend.to_numpy(t.data), everyone[0]))
            out = gf.zeros((world,) + shape, dtype=dtype, device="cuda")
            dist.all_gather_into_tensor(out, gf.tensor(mine, device="cuda"))
            check(f"all_gather {dtype} {shape}", np.array_equal(backend.to_numpy(out.data), np.stack(everyone)))

    def train(wrap):
        gf.manual_seed(0)
        net = gf.nn.Sequential(gf.nn.Conv2d(3, 8, 3, padding=1), gf.nn.GroupNorm(2, 8), gf.nn.ReLU(),
                               gf.nn.Conv2d(8, 4, 1)).to("cuda")
        model = DistributedDataParallel(net, bucket_cap_mb=0.001) if wrap else net
        optimizer = gf.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        rng = np.random.default_rng(0)
        for _ in range(3):
            x = gf.tensor(rng.standard_normal((2, 3, 8, 8)).astype(np.float32), device="cuda")
            y = gf.tensor(rng.integers(0, 4, (2, 8, 8)), device="cuda")
            optimizer.zero_grad()
            gf.nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
        return [backend.to_numpy(p.data) for p in net.parameters()]

    if world == 1:
        plain, ddp = train(False), train(True)
        worst = max(float(np.abs(a - b).max()) for a, b in zip(plain, ddp))
        check("DistributedDataParallel on CUDA = the same steps without it", worst <= 1e-6, f"max diff {worst:.2e}")
    print(f"all NCCL checks passed in {time.perf_counter() - start:.1f} s", flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
