"""Run under ``mpirun -n 2``: every check of the collectives and of DistributedDataParallel that
needs two live processes, in one launch. Any failed assert aborts the job (non-zero exit)."""
import contextlib
import sys

import numpy as np

import gradflow as gf
import gradflow.distributed as dist
from gradflow import nn
from gradflow.data import DistributedSampler
from gradflow.nn.parallel import DistributedDataParallel as DDP

SHAPES = [(), (0,), (1,), (7,), (3, 4), (2, 3, 5), (2, 1, 3, 1, 2, 1, 2)]
DTYPES = [np.float32, np.float64, np.int64]


def values(rank, shape, dtype):
    """Distinct per rank and per element, exactly representable, with negative entries."""
    base = np.arange(int(np.prod(shape)), dtype=np.int64).reshape(shape) - 3
    return (base * (rank + 2) + 5 * rank).astype(dtype)


def check_collectives(rank, world):
    every = [values(r, (2, 3), np.int64) for r in range(world)]
    assert world == 2
    for dtype in DTYPES:
        for shape in SHAPES:
            ranks = [values(r, shape, dtype) for r in range(world)]
            expected = {"sum": ranks[0] + ranks[1], "max": np.maximum(*ranks), "min": np.minimum(*ranks),
                        "product": ranks[0] * ranks[1]}
            total = ranks[0] + ranks[1]
            expected["avg"] = (total / 2).astype(dtype) if dtype != np.int64 else \
                (np.sign(total) * (np.abs(total) // 2)).astype(dtype)
            for op, want in expected.items():
                t = gf.tensor(values(rank, shape, dtype))
                dist.all_reduce(t, op=op)
                assert t.dtype == np.dtype(dtype) and t.shape == shape
                np.testing.assert_array_equal(t.numpy(), want, err_msg=f"all_reduce {op} {dtype} {shape}")
            for src in range(world):
                t = gf.tensor(values(rank, shape, dtype))
                dist.broadcast(t, src=src)
                np.testing.assert_array_equal(t.numpy(), ranks[src], err_msg=f"broadcast {dtype} {shape}")
            outputs = [gf.tensor(np.full(shape, -99, dtype=dtype)) for _ in range(world)]
            dist.all_gather(outputs, gf.tensor(values(rank, shape, dtype)))
            for r in range(world):
                np.testing.assert_array_equal(outputs[r].numpy(), ranks[r], err_msg=f"all_gather {dtype} {shape}")
            flat = gf.tensor(np.zeros((world,) + shape, dtype=dtype))
            dist.all_gather_into_tensor(flat, gf.tensor(values(rank, shape, dtype)))
            np.testing.assert_array_equal(flat.numpy(), np.stack(ranks))
    # the collectives write into the tensor's own array: no copies
    t = gf.tensor(values(rank, (2, 3), np.int64))
    before = t.data
    work = dist.all_reduce(t, async_op=True)
    assert isinstance(work, dist.Work) and work.wait() and work.is_completed()
    assert t.data is before
    np.testing.assert_array_equal(before, every[0] + every[1])
    dist.barrier()
    assert dist.get_rank() == rank and dist.get_world_size() == world


@contextlib.contextmanager
def raises(kind, *fragments):
    try:
        yield
    except kind as exc:
        message = str(exc)
        for fragment in fragments:
            assert fragment in message, f"{fragment!r} not in {message!r}"
    else:
        raise AssertionError(f"{kind.__name__} not raised")


def check_mismatches(rank):
    """Mismatched calls raise the same clear error on every rank, and the group stays usable."""
    with raises(dist.DistributedError, "rank 0: all_reduce of float32 (3,)", "rank 1: all_reduce of float32 (4,)"):
        dist.all_reduce(gf.zeros(3 + rank))
    with raises(dist.DistributedError, "rank 0: all_reduce of float32 (2, 2)", "rank 1: all_reduce of float64 (2, 2)"):
        dist.all_reduce(gf.zeros((2, 2), dtype=gf.float32 if rank == 0 else gf.float64))
    with raises(dist.DistributedError, "rank 0: all_reduce", "rank 1: broadcast"):
        t = gf.zeros(2)
        dist.all_reduce(t) if rank == 0 else dist.broadcast(t, src=0)
    with raises(dist.DistributedError, "src=0", "src=1"):
        dist.broadcast(gf.zeros(2), src=rank)
    with raises(dist.DistributedError, "op=sum", "op=max"):
        dist.all_reduce(gf.zeros(2), op="sum" if rank == 0 else "max")
    t = gf.ones(4)
    dist.all_reduce(t)
    np.testing.assert_array_equal(t.numpy(), np.full(4, 2.0))


def check_sampler(rank, world):
    dataset = list(range(23))
    for shuffle in (False, True):
        for drop_last in (False, True):
            sampler = DistributedSampler(dataset, shuffle=shuffle, seed=7, drop_last=drop_last)
            assert (sampler.rank, sampler.num_replicas) == (rank, world)
            for epoch in (0, 1):
                sampler.set_epoch(epoch)
                mine = np.array(list(sampler), dtype=np.int64)
                shards = [gf.zeros(len(sampler), dtype=gf.int64) for _ in range(world)]
                dist.all_gather(shards, gf.tensor(mine))
                union = np.concatenate([s.numpy() for s in shards])
                if drop_last:
                    assert len(set(union.tolist())) == len(union) == 22
                else:
                    assert set(union.tolist()) == set(dataset) and len(union) == 24


def fcn(seed):
    from models.fcn import FCN
    gf.manual_seed(seed)
    return FCN(num_classes=3, in_channels=3, width=2, norm="group", convs=(1, 1, 1, 1, 1))


def train_steps(model, optimizer, batches):
    for images, masks in batches:
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(gf.tensor(images)), gf.tensor(masks))
        loss.backward()
        optimizer.step()


def data(steps, batch, seed=0):
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal((batch, 3, 16, 16)).astype(np.float32),
             rng.integers(0, 3, (batch, 16, 16)).astype(np.int64)) for _ in range(steps)]


def check_ddp_matches_one_process(rank, world, bucket_cap_mb):
    """N SGD steps of a GroupNorm FCN on 2 ranks x 2 images = the same steps on 1 process x 4 images."""
    steps, global_batch = 3, 4
    batches = data(steps, global_batch)
    model = DDP(fcn(seed=rank), bucket_cap_mb=bucket_cap_mb)      # rank 1 starts different: DDP copies rank 0's
    if bucket_cap_mb < 1:
        assert len(model._buckets) > 3
    optimizer = gf.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    local = [(x[rank::world], y[rank::world]) for x, y in batches]
    train_steps(model, optimizer, local)
    reference = fcn(seed=0)
    ref_optimizer = gf.optim.SGD(reference.parameters(), lr=0.1, momentum=0.9)
    train_steps(reference, ref_optimizer, batches)
    moved = 0
    for (name, p), q in zip(model.module.named_parameters(), reference.parameters()):
        np.testing.assert_allclose(p.data, q.data, rtol=2e-4, atol=2e-6, err_msg=name)
        gathered = [gf.zeros_like(p.detach()) for _ in range(world)]
        dist.all_gather(gathered, p.detach())
        np.testing.assert_array_equal(gathered[0].numpy(), gathered[1].numpy(), err_msg=name)
        moved += not np.array_equal(p.data, fcn_initial[name])
    assert moved > 0.5 * len(fcn_initial), "training did not change the weights: the comparison proves nothing"


def check_no_sync(rank, world):
    """Two micro-batches under no_sync plus one synced backward = gradient of all of them, averaged."""
    gf.manual_seed(rank)
    model = DDP(nn.Linear(5, 3))
    gf.manual_seed(0)
    reference = nn.Linear(5, 3)
    rng = np.random.default_rng(1)
    micro = [[rng.standard_normal((2, 5)) .astype(np.float32) for _ in range(3)] for _ in range(world)]
    with model.no_sync():
        for x in micro[rank][:2]:
            (model(gf.tensor(x)) ** 2).mean().backward()
        local_only = model.module.weight.grad.numpy().copy()
    (model(gf.tensor(micro[rank][2])) ** 2).mean().backward()
    for r in range(world):
        for x in micro[r]:
            ((reference(gf.tensor(x)) ** 2).mean() / world).backward()
    for p, q in zip(model.module.parameters(), reference.parameters()):
        np.testing.assert_allclose(p.grad.numpy(), q.grad.numpy(), rtol=1e-5, atol=1e-6)
    other = gf.tensor(local_only.copy())
    dist.broadcast(other, src=1)
    if rank == 0:
        assert not np.allclose(other.numpy(), local_only), "no_sync did not keep the gradients local"


def check_batchnorm_buffers(rank, broadcast_buffers):
    """Each forward starts from rank 0's running statistics when broadcast_buffers is on."""
    gf.manual_seed(0)
    inner = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.BatchNorm2d(3))
    seen = []
    inner.register_forward_pre_hook(lambda module, args: seen.append(module[1].running_mean.numpy().copy()))
    model = DDP(inner, broadcast_buffers=broadcast_buffers)
    rng = np.random.default_rng(10 + rank)
    for _ in range(2):
        model(gf.tensor(rng.standard_normal((2, 2, 4, 4)).astype(np.float32) * (rank + 1))).sum().backward()
    started = gf.tensor(seen[1])
    gathered = [gf.zeros_like(started) for _ in range(2)]
    dist.all_gather(gathered, started)
    assert np.array_equal(gathered[0].numpy(), gathered[1].numpy()) == broadcast_buffers


def check_unused_parameters(rank):
    gf.manual_seed(0)

    class TwoHeads(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.never = nn.Linear(3, 2), nn.Linear(3, 2), nn.Linear(3, 2)

        def forward(self, x, use_b):
            return self.a(x).sum() + (self.b(x).sum() if use_b else 0)

    model = DDP(TwoHeads(), find_unused_parameters=True)
    x = gf.tensor(np.arange(6, dtype=np.float32).reshape(2, 3))
    model(x, use_b=(rank == 0)).backward()
    np.testing.assert_allclose(model.module.b.weight.grad.numpy(), np.tile(x.numpy().sum(0), (2, 1)) / 2)
    np.testing.assert_allclose(model.module.a.weight.grad.numpy(), np.tile(x.numpy().sum(0), (2, 1)))
    assert model.module.never.weight.grad is None
    # without find_unused_parameters, a parameter no rank used leaves the reduction unfinished
    plain = DDP(TwoHeads())
    plain(x, use_b=True).backward()
    with raises(RuntimeError, "did not finish", "find_unused_parameters=True"):
        plain(x, use_b=True)


def check_buckets_start_during_backward(rank):
    """The last layers' buckets are launched before backward reaches the first layers."""
    seen = []

    class Spy(gf.autograd.Function):
        @staticmethod
        def forward(ctx, a):
            return a.copy()

        @staticmethod
        def backward(ctx, g):
            seen.append((model._next_bucket, [b.work is not None for b in model._buckets]))
            return g

    class Probe(nn.Module):
        def forward(self, x):
            return Spy.apply(x)

    gf.manual_seed(0)
    model = DDP(nn.Sequential(nn.Linear(4, 64), nn.ReLU(), Probe(), nn.Linear(64, 64), nn.ReLU(),
                              nn.Linear(64, 2)), bucket_cap_mb=0.01)
    assert len(model._buckets) >= 3
    model(gf.tensor(np.ones((3, 4), np.float32))).sum().backward()
    launched, started = seen[0]
    assert 0 < launched < len(model._buckets), seen       # some, not all, all-reduces in flight
    assert started[:launched] == [True] * launched and not any(started[launched:])
    assert model._next_bucket == 0 and model.module[0].weight.grad is not None   # all done and reset after


def check_model_mismatch(rank):
    with raises(dist.DistributedError, "parameters differ across ranks", "rank 0: 2 parameters",
                "rank 1: 4 parameters"):
        DDP(nn.Linear(2, 2) if rank == 0 else nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2)))


if __name__ == "__main__":
    dist.init_process_group(timeout=60)
    rank, world = dist.get_rank(), dist.get_world_size()
    fcn_initial = {name: p.data.copy() for name, p in fcn(seed=0).named_parameters()}
    checks = [("collectives", lambda: check_collectives(rank, world)),
              ("mismatches", lambda: check_mismatches(rank)),
              ("sampler", lambda: check_sampler(rank, world)),
              ("ddp = one process (one bucket)", lambda: check_ddp_matches_one_process(rank, world, 25)),
              ("ddp = one process (many buckets)", lambda: check_ddp_matches_one_process(rank, world, 0.0005)),
              ("no_sync", lambda: check_no_sync(rank, world)),
              ("batchnorm buffers broadcast", lambda: check_batchnorm_buffers(rank, True)),
              ("batchnorm buffers local", lambda: check_batchnorm_buffers(rank, False)),
              ("unused parameters", lambda: check_unused_parameters(rank)),
              ("buckets start during backward", lambda: check_buckets_start_during_backward(rank)),
              ("model mismatch", lambda: check_model_mismatch(rank))]
    only = sys.argv[1:]
    for name, check in checks:
        if only and name not in only:
            continue
        check()
        dist.barrier()
        if rank == 0:
            print("passed:", name, flush=True)
    if rank == 0:
        print("ALL CHECKS PASSED", flush=True)
