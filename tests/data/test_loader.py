import numpy as np
import pytest
from hypothesis import given, strategies as st

import gradflow as gf
from gradflow.data import DataLoader, Dataset


class IndexDataset(Dataset):
    """Sample i is an image and mask filled with i, so batches show which samples they hold."""

    def __init__(self, n, hw=(2, 3)):
        self.n, self.hw = n, hw

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return np.full((1,) + self.hw, i, np.float32), np.full(self.hw, i, np.int64)


def jitter(image, mask, rng):
    """A random transform: the draw shows up in the image, so replays can be compared."""
    return image + rng.random(), mask


def ids(batch):
    return batch[1].numpy()[:, 0, 0].tolist()


def epoch_ids(loader):
    return [ids(b) for b in loader]


def test_batches_dtypes_and_shapes():
    loader = DataLoader(IndexDataset(5), batch_size=2)
    batches = list(loader)
    assert len(loader) == 3 and [b[0].shape for b in batches] == [(2, 1, 2, 3), (2, 1, 2, 3), (1, 1, 2, 3)]
    images, masks = batches[0]
    assert isinstance(images, gf.Tensor) and images.dtype == gf.float32 and masks.dtype == gf.int64
    assert images.device == "cpu" and images.data.flags.c_contiguous and masks.shape == (2, 2, 3)
    assert [ids(b) for b in batches] == [[0, 1], [2, 3], [4]]
    np.testing.assert_array_equal(images.numpy()[:, 0, 0, 0], [0.0, 1.0])


def test_drop_last():
    loader = DataLoader(IndexDataset(5), batch_size=2, drop_last=True)
    assert len(loader) == 2 and epoch_ids(loader) == [[0, 1], [2, 3]]
    assert list(DataLoader(IndexDataset(1), batch_size=2, drop_last=True)) == []
    with pytest.raises(ValueError, match="batch_size"):
        DataLoader(IndexDataset(1), batch_size=0)


@given(n=st.integers(1, 30), batch_size=st.integers(1, 8), drop_last=st.booleans(), seed=st.integers(0, 2 ** 40))
def test_each_epoch_visits_every_sample_once(n, batch_size, drop_last, seed):
    loader = DataLoader(IndexDataset(n), batch_size=batch_size, shuffle=True, drop_last=drop_last, seed=seed)
    for _ in range(2):
        seen = [i for b in epoch_ids(loader) for i in b]
        assert len(seen) == (n // batch_size * batch_size if drop_last else n)
        assert len(set(seen)) == len(seen) and set(seen) <= set(range(n))     # no repeats
        if not drop_last:
            assert set(seen) == set(range(n))
    assert loader.epoch == 2


def test_shuffle_is_seeded_and_changes_per_epoch():
    make = lambda seed: DataLoader(IndexDataset(20), batch_size=20, shuffle=True, seed=seed)   # noqa: E731
    a, b, c = make(1), make(1), make(2)
    ea = [epoch_ids(a)[0] for _ in range(3)]
    eb = [epoch_ids(b)[0] for _ in range(3)]
    assert ea == eb
    assert ea[0] != ea[1] != ea[2]
    assert epoch_ids(c)[0] != ea[0]
    assert sorted(ea[0]) == list(range(20))
    b.set_epoch(1)
    assert epoch_ids(b)[0] == ea[1]
    assert DataLoader(IndexDataset(20), batch_size=20, seed=1).order().tolist() == list(range(20))


def test_seed_none_follows_manual_seed():
    gf.manual_seed(123)
    a = epoch_ids(DataLoader(IndexDataset(30), batch_size=30, shuffle=True))
    gf.manual_seed(123)
    b = epoch_ids(DataLoader(IndexDataset(30), batch_size=30, shuffle=True))
    gf.manual_seed(124)
    c = epoch_ids(DataLoader(IndexDataset(30), batch_size=30, shuffle=True))
    assert a == b and a != c


def test_transform_randomness_is_per_sample_not_per_batch():
    """Sample i in epoch e gets the same augmentation whatever the batch size or order."""
    def per_sample(loader):
        out = {}
        for images, masks in loader:
            for image, i in zip(images.numpy()[:, 0, 0, 0], masks.numpy()[:, 0, 0]):
                out[int(i)] = float(image) - i
        return out
    one = per_sample(DataLoader(IndexDataset(7), batch_size=1, seed=5, transform=jitter))
    three = per_sample(DataLoader(IndexDataset(7), batch_size=3, shuffle=True, seed=5, transform=jitter))
    assert one == pytest.approx(three)
    assert len(set(one.values())) == 7


@given(n=st.integers(2, 25), batch_size=st.integers(1, 6), shuffle=st.booleans(), drop_last=st.booleans(),
       stop_after=st.integers(0, 8), seed=st.integers(0, 2 ** 40))
def test_resume_mid_epoch_replays_exactly(n, batch_size, shuffle, drop_last, stop_after, seed):
    def make():
        return DataLoader(IndexDataset(n), batch_size=batch_size, shuffle=shuffle, drop_last=drop_last,
                          seed=seed, transform=jitter)
    reference = make()
    uninterrupted = [[b[0].numpy() for b in reference] for _ in range(3)]
    flat = [b for epoch in uninterrupted for b in epoch]

    first = make()
    done, state = [], first.state_dict()
    for images, _ in first:            # train a few batches, checkpointing after each
        done.append(images.numpy())
        state = first.state_dict()
        if len(done) == stop_after:
            break
    resumed = make()
    resumed.load_state_dict(state)
    rest = [b[0].numpy() for b in resumed]
    while resumed.epoch < 3:
        rest += [b[0].numpy() for b in resumed]
    replay = done + rest
    assert len(replay) == len(flat)
    for got, want in zip(replay, flat):
        np.testing.assert_array_equal(got, want)


def test_state_after_last_batch_points_at_next_epoch():
    loader = DataLoader(IndexDataset(4), batch_size=2, shuffle=True, seed=0)
    states = [loader.state_dict() for _ in loader]
    assert [(s["epoch"], s["position"]) for s in states] == [(0, 2), (1, 0)]


def test_abandoned_iteration_starts_a_new_epoch():
    loader = DataLoader(IndexDataset(6), batch_size=2, shuffle=True, seed=0)
    next(iter(loader))
    assert (loader.epoch, loader.position) == (0, 2)
    batches = epoch_ids(loader)
    assert loader.epoch == 2 and len(batches) == 3
    assert batches == epoch_ids(_at_epoch(DataLoader(IndexDataset(6), batch_size=2, shuffle=True, seed=0), 1))


def _at_epoch(loader, epoch):
    loader.set_epoch(epoch)
    return loader


def test_set_epoch_after_resume_keeps_position_other_epoch_resets():
    loader = DataLoader(IndexDataset(6), batch_size=2, shuffle=True, seed=3)
    full = epoch_ids(_at_epoch(loader, 4))
    state = {"seed": 3, "epoch": 4, "position": 2}
    resumed = DataLoader(IndexDataset(6), batch_size=2, shuffle=True, seed=99)
    resumed.load_state_dict(state)
    resumed.set_epoch(4)               # a trainer calling set_epoch at the top of the resumed epoch
    assert epoch_ids(resumed) == full[1:]
    resumed.load_state_dict(state)
    resumed.set_epoch(5)
    assert resumed.position == 0 and len(epoch_ids(resumed)) == 3
    resumed.set_epoch(4)
    assert epoch_ids(resumed) == full


def test_load_state_for_another_dataset_size_fails():
    state = DataLoader(IndexDataset(6), seed=0).state_dict()
    with pytest.raises(ValueError, match="6 samples"):
        DataLoader(IndexDataset(7)).load_state_dict(state)
    with pytest.raises(ValueError, match="shuffle"):
        DataLoader(IndexDataset(6), shuffle=True).load_state_dict(state)


def test_samples_of_different_sizes_fail_with_a_hint():
    class Mixed(IndexDataset):
        def __getitem__(self, i):
            hw = (2, 2 + i)
            return np.zeros((1,) + hw, np.float32), np.zeros(hw, np.int64)
    with pytest.raises(ValueError, match="RandomCrop"):
        next(iter(DataLoader(Mixed(2), batch_size=2)))


@pytest.mark.gpu
def test_cuda_device_batches():
    images, masks = next(iter(DataLoader(IndexDataset(3), batch_size=2, device="cuda")))
    assert images.device == masks.device == "cuda"
    assert images.dtype == gf.float32 and masks.dtype == gf.int64
    np.testing.assert_array_equal(masks.numpy()[:, 0, 0], [0, 1])
