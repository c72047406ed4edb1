"""Data-parallel scaling on CPU: FCN-bench (GroupNorm) training steps, gradflow and PyTorch side by side.

    python bench/distributed.py                       # global batch 16, 64x64, 20 timed steps
    python bench/distributed.py --batch 16 --steps 30 --out scaling.json

Three configurations, each in fresh worker processes so thread pools are sized once:
  1p x 1t   one process, 1 thread
  1p x 2t   one process, 2 threads (Numba / PyTorch intra-op parallelism)
  2p x 1t   two processes under mpirun, 1 thread each, the global batch split in two:
            gradflow's DistributedDataParallel over MPI, PyTorch's over gloo (loopback)
and reports images/s (global batch x steps / seconds, rank 0's clock between barriers),
speed-up over 1p x 1t, scaling efficiency (2p speed-up / 2) and gradflow / PyTorch
time ratios. The load average is recorded before and after: on a shared machine other
processes take cores away and the 2-process figures suffer first.

Worker mode (internal): bench/distributed.py --worker {gradflow,torch} ...
"""
import argparse
import json
import os
import pathlib
import socket
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
CONFIGS = (("1p x 1t", 1, 1), ("1p x 2t", 1, 2), ("2p x 1t", 2, 1))


# ---- worker: one process of one configuration -----------------------------------------------------
def _gradflow_world():
    if int(os.environ.get("OMPI_COMM_WORLD_SIZE", "1")) <= 1:
        return None, 0, 1
    import gradflow.distributed as dist
    dist.init_process_group(timeout=600)
    return dist, dist.get_rank(), dist.get_world_size()


def run_gradflow(args):
    import gradflow as gf
    from bench.workloads.fcn_net import batch_arrays, make_fcn_bench
    from gradflow.nn.parallel import DistributedDataParallel
    dist, rank, world = _gradflow_world()
    gf.manual_seed(0)
    net = make_fcn_bench(gf.nn, "gn")
    model = DistributedDataParallel(net) if dist else net
    optimizer = gf.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, y = batch_arrays(args.batch, args.size)
    x, y = gf.tensor(x[rank::world]), gf.tensor(y[rank::world])

    def step():
        optimizer.zero_grad()
        loss = gf.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()

    barrier = dist.barrier if dist else (lambda: None)
    return _time(step, barrier, args), rank


def run_torch(args):
    import torch
    import torch.distributed as tdist
    from bench.workloads.fcn_net import batch_arrays, make_fcn_bench
    torch.set_num_threads(args.threads)
    world = int(os.environ.get("OMPI_COMM_WORLD_SIZE", "1"))
    rank = int(os.environ.get("OMPI_COMM_WORLD_RANK", "0"))
    torch.manual_seed(0)
    net = make_fcn_bench(torch.nn, "gn")
    if world > 1:
        tdist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{args.port}", rank=rank, world_size=world)
        model = torch.nn.parallel.DistributedDataParallel(net)
    else:
        model = net
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, y = batch_arrays(args.batch, args.size)
    x, y = torch.tensor(x[rank::world]), torch.tensor(y[rank::world])

    def step():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()

    barrier = tdist.barrier if world > 1 else (lambda: None)
    seconds = _time(step, barrier, args)
    if world > 1:
        tdist.destroy_process_group()
    return seconds, rank


def _time(step, barrier, args):
    for _ in range(args.warmup):
        step()
    barrier()
    start, cpu_start = time.perf_counter(), time.process_time()
    for _ in range(args.steps):
        step()
    cpu = time.process_time() - cpu_start
    barrier()
    return time.perf_counter() - start, cpu


# ---- driver ------------------------------------------------------------------------------------------
def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(side, processes, threads, args):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
               GRADFLOW_DEVICE="cpu", NUMBA_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads),
               OPENBLAS_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    worker = [sys.executable, str(pathlib.Path(__file__).resolve()), "--worker", side, "--batch", str(args.batch),
              "--size", str(args.size), "--steps", str(args.steps), "--warmup", str(args.warmup),
              "--threads", str(threads), "--port", str(_free_port())]
    if processes > 1:
        mpirun = pathlib.Path(sys.executable).parent / "mpirun"
        env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMPI_MCA_btl="self,sm",
                   OMPI_MCA_pml="ob1")
        # --bind-to none: with 2 processes Open MPI would pin each to a core, which is right on an idle
        # machine, but on a shared one a pinned rank cannot move away from a busy core
        worker = [str(mpirun if mpirun.exists() else "mpirun"), "-n", str(processes), "--oversubscribe",
                  "--bind-to", "none"] + worker
    result = subprocess.run(worker, env=env, capture_output=True, text=True, timeout=1800)
    if result.returncode != 0:
        raise RuntimeError(f"{side} {processes}p x {threads}t failed:\n{result.stdout}\n{result.stderr}")
    ranks = [json.loads(s) for s in result.stdout.splitlines() if s.startswith("{")]
    wall = [r["seconds"] for r in ranks if r["rank"] == 0][0]
    return wall, sum(r["cpu_seconds"] for r in ranks)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=16, help="global batch (split over the processes)")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2, help="every configuration this many times, interleaved; "
                                                              "the best is kept")
    parser.add_argument("--sides", default="gradflow,torch")
    parser.add_argument("--out", help="write the figures as JSON here")
    parser.add_argument("--worker", choices=("gradflow", "torch"), help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        (seconds, cpu), rank = (run_gradflow if args.worker == "gradflow" else run_torch)(args)
        print(json.dumps({"rank": rank, "seconds": seconds, "cpu_seconds": cpu}), flush=True)
        return

    sys.path.insert(0, str(ROOT))
    from bench.machine import cpu_model
    sides = args.sides.split(",")
    load_before = [round(x, 2) for x in os.getloadavg()]
    best, cpu = {}, {}
    for _ in range(args.rounds):
        for name, processes, threads in CONFIGS:
            for side in sides:
                seconds, cpu_seconds = _launch(side, processes, threads, args)
                key = (side, name)
                if seconds < best.get(key, float("inf")):
                    best[key], cpu[key] = seconds, cpu_seconds
    load_after = [round(x, 2) for x in os.getloadavg()]
    images = args.batch * args.steps
    rows = []
    print(f"FCN-bench GN training, global batch {args.batch}, {args.size}x{args.size}, {args.steps} steps "
          f"(best of {args.rounds}); {cpu_model()}")
    print(f"load average before {load_before}, after {load_after}")
    print(f"{'config':<9} " + " ".join(f"{s + ' img/s':>14} {'speed-up':>8}" for s in sides)
          + ("  gradflow/torch time" if len(sides) == 2 else ""))
    for name, processes, _ in CONFIGS:
        row = {"config": name}
        cells = []
        for side in sides:
            rate = images / best[(side, name)]
            speedup = best[(side, "1p x 1t")] / best[(side, name)]
            row[side] = {"images_per_s": rate, "speedup": speedup,
                         "efficiency": speedup / processes if processes > 1 else None,
                         "cpu_ms_per_image": 1e3 * cpu[(side, name)] / images}
            cells.append(f"{rate:>14.1f} {speedup:>7.2f}x")
        ratio = ""
        if len(sides) == 2:
            row["time_ratio"] = best[(sides[0], name)] / best[(sides[1], name)]
            ratio = f"  {row['time_ratio']:.2f}"
        rows.append(row)
        print(f"{name:<9} " + " ".join(cells) + ratio)
    print("CPU time per image (all processes; busy cores elsewhere do not inflate it): " + "; ".join(
        f"{side} " + ", ".join(f"{r['config']} {r[side]['cpu_ms_per_image']:.1f} ms" for r in rows) for side in sides))
    for side in sides:
        eff = rows[2][side]["efficiency"]
        print(f"{side}: 2 processes = {rows[2][side]['speedup']:.2f}x one process at 1 thread "
              f"(scaling efficiency {eff:.0%}), {best[(side, '1p x 2t')] / best[(side, '2p x 1t')]:.2f}x "
              "one process at 2 threads")
    if args.out:
        pathlib.Path(args.out).write_text(json.dumps(
            {"batch": args.batch, "size": args.size, "steps": args.steps, "rounds": args.rounds,
             "cpu": cpu_model(), "loadavg_before": load_before, "loadavg_after": load_after, "rows": rows},
            indent=1))


if __name__ == "__main__":
    main()
