"""DistributedSampler: shards against PyTorch's, disjoint and complete, reshuffled per epoch, exact resume."""
import numpy as np
import pytest
import torch.utils.data

from gradflow.data import DataLoader, DistributedSampler


@pytest.mark.parametrize("n", [1, 7, 8, 23])
@pytest.mark.parametrize("world", [1, 2, 3, 4])
@pytest.mark.parametrize("drop_last", [False, True])
def test_unshuffled_shards_equal_pytorchs(n, world, drop_last):
    dataset = list(range(n))
    for rank in range(world):
        ours = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=False, drop_last=drop_last)
        ref = torch.utils.data.DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=False,
                                                  drop_last=drop_last)
        assert list(ours) == list(ref)
        assert len(ours) == len(ref)


@pytest.mark.parametrize("n,world", [(24, 2), (23, 2), (10, 3), (5, 4)])
def test_shuffled_shards_are_disjoint_and_cover_the_dataset(n, world):
    for epoch in range(3):
        shards = []
        for rank in range(world):
            sampler = DistributedSampler(range(n), num_replicas=world, rank=rank, seed=3)
            sampler.set_epoch(epoch)
            shards.append(list(sampler))
        flat = sum(shards, [])
        assert len({len(s) for s in shards}) == 1
        assert set(flat) == set(range(n))
        assert len(flat) - len(set(flat)) == (-n) % world      # only the padding repeats
        dropped = [list(DistributedSampler(range(n), num_replicas=world, rank=r, seed=3, drop_last=True))
                   for r in range(world)]
        flat = sum(dropped, [])
        assert len(flat) == len(set(flat)) == n // world * world


def test_same_seed_same_order_new_epoch_new_order():
    a = DistributedSampler(range(50), num_replicas=2, rank=0, seed=5)
    b = DistributedSampler(range(50), num_replicas=2, rank=0, seed=5)
    assert list(a) == list(b)
    first = list(a)
    a.set_epoch(1)
    assert list(a) != first
    assert list(DistributedSampler(range(50), num_replicas=2, rank=0, seed=6)) != first


def test_state_dict_resumes_exactly_mid_epoch():
    sampler = DistributedSampler(range(40), num_replicas=2, rank=1, seed=2)
    sampler.set_epoch(4)
    full = list(sampler.indices(4))
    it = iter(sampler)
    head = [next(it) for _ in range(7)]
    state = sampler.state_dict()
    resumed = DistributedSampler(range(40), num_replicas=2, rank=1, seed=2)
    resumed.load_state_dict(state)
    resumed.set_epoch(4)        # a trainer's per-epoch call keeps the restored position
    assert head + list(resumed) == full
    with pytest.raises(ValueError, match="num_replicas=2 but this sampler has num_replicas=4"):
        DistributedSampler(range(40), num_replicas=4, rank=0).load_state_dict(state)


def test_loader_with_sampler_resumes_exactly():
    data = [(np.full((1, 2, 2), i, np.float32), np.zeros((2, 2), np.int64)) for i in range(22)]

    def loader():
        return DataLoader(data, batch_size=3, sampler=DistributedSampler(data, num_replicas=2, rank=1, seed=9))

    def ids(batch):
        return batch[0].numpy()[:, 0, 0, 0].astype(int).tolist()

    whole = loader()
    assert len(whole) == 4
    epoch0 = [ids(b) for b in whole]
    assert sum(epoch0, []) == whole.sampler.indices(0).tolist()
    epoch1 = [ids(b) for b in whole]
    assert sum(epoch1, []) == whole.sampler.indices(1).tolist() != sum(epoch0, [])
    interrupted = loader()
    it = iter(interrupted)
    first = [ids(next(it)) for _ in range(2)]
    state = interrupted.state_dict()
    resumed = loader()
    resumed.load_state_dict(state)
    assert first + [ids(b) for b in resumed] == epoch0


def test_errors():
    with pytest.raises(ValueError, match="Invalid rank 2"):
        DistributedSampler(range(4), num_replicas=2, rank=2)
    with pytest.raises(ValueError, match="num_replicas must be a positive integer"):
        DistributedSampler(range(4), num_replicas=0, rank=0)
    with pytest.raises(RuntimeError, match="init_process_group"):
        DistributedSampler(range(4))
    sampler = DistributedSampler(range(4), num_replicas=2, rank=0)
    with pytest.raises(ValueError, match="mutually exclusive with shuffle"):
        DataLoader(list(range(4)), sampler=sampler, shuffle=True)
    with pytest.raises(TypeError, match="indices"):
        DataLoader(list(range(4)), sampler=[0, 1])
    plain = DataLoader([(np.zeros((1, 2, 2), np.float32), np.zeros((2, 2), np.int64))] * 4)
    with pytest.raises(ValueError, match="without a sampler"):
        DataLoader(list(range(4)), sampler=sampler).load_state_dict(plain.state_dict())


def test_ranks_batches_together_are_the_one_process_loaders_batches():
    """What makes N processes train like one: same seed, per-rank batch B/N, drop_last."""
    data = [(np.full((1, 1, 1), i, np.float32), np.zeros((1, 1), np.int64)) for i in range(19)]
    world, batch = 2, 4
    single = DataLoader(data, batch_size=batch, shuffle=True, drop_last=True, seed=11)
    ranks = [DataLoader(data, batch_size=batch // world, drop_last=True, seed=11,
                        sampler=DistributedSampler(data, num_replicas=world, rank=r, seed=11, drop_last=True))
             for r in range(world)]
    for _ in range(2):   # two epochs
        expected = [sorted(b[0].numpy().ravel().tolist()) for b in single]
        together = [sorted(sum((b[0].numpy().ravel().tolist() for b in step), []))
                    for step in zip(*[list(loader) for loader in ranks])]
        assert together == expected and len(expected) == 4
