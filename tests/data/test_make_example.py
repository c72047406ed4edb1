"""`python -m gradflow.data.make_example DIR`: a binary folder dataset of PNGs that the trainer reads."""
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from gradflow.data import get_dataset
from gradflow.data.make_example import make_example


def test_writes_pairs_of_images_and_0_255_masks(tmp_path):
    share = make_example(tmp_path, count=6, size=24, seed=1)
    images, masks = sorted((tmp_path / "images").iterdir()), sorted((tmp_path / "masks").iterdir())
    assert [p.name for p in images] == [p.name for p in masks] == [f"{i:04d}.png" for i in range(6)]
    total = 0
    for image_path, mask_path in zip(images, masks):
        with Image.open(image_path) as image, Image.open(mask_path) as mask:
            assert image.mode == "RGB" and mask.mode == "L" and image.size == mask.size == (24, 24)
            values = np.asarray(mask)
            assert set(np.unique(values)) == {0, 255}                 # every image has a blob and background
            total += (values == 255).sum()
    assert share == pytest.approx(total / (6 * 24 * 24))
    dataset = get_dataset("folder", "train", image_size=24, root=tmp_path)
    assert dataset.num_classes == 1                                    # 0 is the only non-ignore id: 0/255 masks


def test_same_seed_same_files_and_refuses_to_overwrite(tmp_path):
    make_example(tmp_path / "a", count=3, size=16, seed=7)
    make_example(tmp_path / "b", count=3, size=16, seed=7)
    make_example(tmp_path / "c", count=3, size=16, seed=8)
    read = lambda root: np.asarray(Image.open(root / "images" / "0002.png"))
    assert np.array_equal(read(tmp_path / "a"), read(tmp_path / "b"))
    assert not np.array_equal(read(tmp_path / "a"), read(tmp_path / "c"))
    with pytest.raises(ValueError, match="already hold files; pass --force"):
        make_example(tmp_path / "a", count=3, size=16)
    make_example(tmp_path / "a", count=3, size=16, seed=8, force=True)
    assert np.array_equal(read(tmp_path / "a"), read(tmp_path / "c"))
    for bad, message in [(dict(count=1), "count must be at least 2"), (dict(size=8), "size must be at least 16")]:
        with pytest.raises(ValueError, match=message):
            make_example(tmp_path / "d", **bad)


def test_command_line(tmp_path):
    run = subprocess.run([sys.executable, "-m", "gradflow.data.make_example", str(tmp_path / "ex"), "--count", "4",
                          "--size", "16"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "wrote 4 images (16x16)" in run.stdout and "--loss bce+dice" in run.stdout
    again = subprocess.run([sys.executable, "-m", "gradflow.data.make_example", str(tmp_path / "ex")],
                           capture_output=True, text=True)
    assert again.returncode == 1 and "already hold files" in again.stderr and "Traceback" not in again.stderr
