"""--augment presets: what each holds, that every one keeps masks aligned, and that resume stays exact."""
import numpy as np
import pytest

from gradflow.data import transforms as T
from models.checkpoints import load_checkpoint
from models.presets import make_augment
from models.trainer import Trainer
from tests.models.faults import Crash, crash_after
from tests.models.helpers import assert_same_weights, tiny_config


def kinds(transform):
    return [] if transform is None else [type(t) for t in transform.transforms]


def test_presets_hold_what_they_say():
    assert make_augment("none", "shapes", 64) is None
    light = [T.RandomHorizontalFlip, T.RandomVerticalFlip, T.RandomRotation90]
    assert kinds(make_augment("light", "shapes", 64)) == light
    assert kinds(make_augment("strong", "folder", 64)) == light + [T.RandomScale, T.RandomCrop, T.RandomRotation,
                                                                  T.ColorJitter]
    assert make_augment("light", "digits", 64) is None                # a mirrored 2 is not a 2
    assert kinds(make_augment("strong", "digits", 64)) == [T.RandomScale, T.RandomCrop, T.RandomRotation,
                                                           T.ColorJitter]
    with pytest.raises(ValueError, match="unknown augmentation preset 'heavy'"):
        make_augment("heavy", "shapes", 64)


@pytest.mark.parametrize("preset", ["light", "strong"])
def test_presets_keep_masks_on_their_objects(preset):
    """A mask pixel of class c must still sit on pixels of that class's colour: the image is a flat
    colour per class (so bilinear resampling cannot blend inside a region) and jitter moves colours only
    a little, so a misplaced mask shows up as a label on another class's colour."""
    palette = np.array([[0.1, 0.1, 0.1], [0.9, 0.2, 0.2], [0.2, 0.9, 0.2]], np.float32)
    mask = np.zeros((32, 32), np.int64)
    mask[4:14, 6:20] = 1
    mask[18:30, 12:28] = 2
    image = palette[mask].transpose(2, 0, 1).copy()
    transform = make_augment(preset, "shapes", 32)
    for seed in range(20):
        out_image, out_mask = transform(image, mask, np.random.default_rng(seed))
        again = transform(image, mask, np.random.default_rng(seed))
        np.testing.assert_array_equal(out_image, again[0])            # seeded: the same sample every time
        np.testing.assert_array_equal(out_mask, again[1])
        assert out_image.shape == (3, 32, 32) and out_mask.shape == (32, 32)
        labelled = out_mask != 255
        colour = out_image.transpose(1, 2, 0)[labelled]
        nearest = np.argmin(((colour[:, None, :] - _jittered(out_image, out_mask, palette)[None]) ** 2).sum(-1), 1)
        interior = _interior(out_mask)[labelled]
        assert (nearest[interior] == out_mask[labelled][interior]).all(), f"seed {seed}"


def _jittered(image, mask, palette):
    """Each class's colour after the jitter: the median over its interior pixels (the jitter is global)."""
    inner = _interior(mask)
    return np.stack([np.median(image[:, inner & (mask == c)], axis=1) if (inner & (mask == c)).any() else palette[c]
                     for c in range(len(palette))])


def _interior(mask):
    """Pixels whose 3x3 neighbourhood has one label (edges may blend under bilinear resampling; so may the
    image border, where taps read the fill from outside)."""
    padded = np.pad(mask, 1, constant_values=255)
    same = np.ones(mask.shape, bool)
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            same &= padded[dy:dy + mask.shape[0], dx:dx + mask.shape[1]] == mask
    return same & (mask != 255)


def test_strong_augmentation_resumes_exactly(tmp_path, monkeypatch):
    """Crash mid-epoch, resume: the same augmented samples, so the same weights as an unbroken run."""
    reference = Trainer(tiny_config(tmp_path, name="ref", augment="strong", ckpt_every=3, epochs=2),
                        log=lambda *_: None)
    reference.fit()
    cfg = tiny_config(tmp_path, name="crashed", augment="strong", ckpt_every=3, epochs=2)
    broken = Trainer(cfg, log=lambda *_: None)
    with monkeypatch.context() as patch:
        crash_after(patch, 5)
        with pytest.raises(Crash):
            broken.fit()
    resumed = Trainer(cfg, resume=load_checkpoint(tmp_path / "crashed" / "last.ckpt"), log=lambda *_: None)
    resumed.fit()
    assert resumed.step_losses == reference.step_losses
    assert_same_weights({k: v.numpy() for k, v in resumed.model.state_dict().items()},
                        {k: v.numpy() for k, v in reference.model.state_dict().items()})
    unaugmented = Trainer(tiny_config(tmp_path, name="plain", augment="none", epochs=2), log=lambda *_: None)
    unaugmented.fit()
    assert unaugmented.step_losses != reference.step_losses          # the augmentation did change the samples
