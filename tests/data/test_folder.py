import numpy as np
import pytest
from PIL import Image

from gradflow.data import DataLoader, FolderDataset


def write_pair(root, stem, h=6, w=8, labels=(0, 1, 2), image_ext=".png", mask_ext=".png", seed=0,
               mask_mode="L", mask_hw=None):
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    rgb = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(root / "images" / f"{stem}{image_ext}")
    mh, mw = mask_hw or (h, w)
    mask = rng.choice(np.asarray(labels, dtype=np.uint8), size=(mh, mw))
    m = Image.fromarray(mask)
    if mask_mode == "RGB":
        m = m.convert("RGB")
    m.save(root / "masks" / f"{stem}{mask_ext}")
    return rgb, mask


def test_happy_path(tmp_path):
    rgb_a, mask_a = write_pair(tmp_path, "a", labels=(0, 1, 255), seed=1)
    rgb_b, mask_b = write_pair(tmp_path, "b", labels=(0, 3), seed=2)
    write_pair(tmp_path, "c", image_ext=".jpg", seed=3)
    (tmp_path / "images" / "notes.txt").write_text("not an image, ignored")
    ds = FolderDataset(tmp_path)
    assert len(ds) == 3 and ds.num_classes == 4 and ds.skipped == []
    image, mask = ds[0]
    assert image.shape == (3, 6, 8) and image.dtype == np.float32 and mask.dtype == np.int64
    np.testing.assert_allclose(image, rgb_a.transpose(2, 0, 1) / 255.0, atol=1e-6)
    np.testing.assert_array_equal(mask, mask_a)                   # 255 (ignore) kept as is
    np.testing.assert_array_equal(ds[1][1], mask_b)
    assert ds[2][0].shape == (3, 6, 8)                            # the JPEG decodes
    images, masks = next(iter(DataLoader(ds, batch_size=3)))
    assert images.shape == (3, 3, 6, 8) and masks.shape == (3, 6, 8)


def test_num_classes_given_and_resize(tmp_path):
    _, mask = write_pair(tmp_path, "a", h=4, w=4, labels=(0, 1))
    ds = FolderDataset(tmp_path, image_size=8, num_classes=5)
    image, resized = ds[0]
    assert ds.num_classes == 5 and image.shape == (3, 8, 8)
    np.testing.assert_array_equal(resized, np.kron(mask, np.ones((2, 2), dtype=np.int64)))


def test_palette_and_grey_images(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    Image.fromarray(np.full((3, 3), 128, np.uint8)).save(tmp_path / "images" / "g.png")     # greyscale
    palette = Image.fromarray(np.array([[0, 1, 2], [2, 1, 0], [0, 0, 1]], np.uint8), mode="L").convert("P")
    palette.save(tmp_path / "masks" / "g.png")
    ds = FolderDataset(tmp_path)
    image, mask = ds[0]
    assert image.shape == (3, 3, 3) and np.allclose(image, 128 / 255)
    np.testing.assert_array_equal(mask, [[0, 1, 2], [2, 1, 0], [0, 0, 1]])


def test_mixed_sizes_need_image_size(tmp_path):
    write_pair(tmp_path, "a", h=4, w=4)
    write_pair(tmp_path, "b", h=6, w=5)
    with pytest.raises(ValueError, match="image_size"):
        next(iter(DataLoader(FolderDataset(tmp_path), batch_size=2)))
    images, masks = next(iter(DataLoader(FolderDataset(tmp_path, image_size=(5, 7)), batch_size=2)))
    assert images.shape == (2, 3, 5, 7) and masks.shape == (2, 5, 7)


def test_missing_folders(tmp_path):
    (tmp_path / "images").mkdir()
    with pytest.raises(ValueError, match="masks"):
        FolderDataset(tmp_path)


def make_faulty(root):
    """One good pair plus one of each fault; returns {file name: words its reason must contain}."""
    write_pair(root, "good", labels=(0, 1, 2, 255))
    write_pair(root, "nomask")
    (root / "masks" / "nomask.png").unlink()
    write_pair(root, "noimage")
    (root / "images" / "noimage.png").unlink()
    write_pair(root, "mismatch", h=6, w=8, mask_hw=(5, 8))
    write_pair(root, "bigvalue", labels=(0, 7, 9))
    write_pair(root, "rgbmask", mask_mode="RGB")
    write_pair(root, "garbage")
    (root / "images" / "garbage.png").write_bytes(b"this is not a png")
    write_pair(root, "truncated")
    data = (root / "images" / "truncated.png").read_bytes()
    (root / "images" / "truncated.png").write_bytes(data[:len(data) // 2])
    write_pair(root, "badmask")
    (root / "masks" / "badmask.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    write_pair(root, "dup")
    write_pair(root, "dup", image_ext=".jpg")
    return {"nomask.png": "no mask", "noimage.png": "no image", "mismatch.png": "5x8",
            "bigvalue.png": "[7, 9] >= num_classes=3", "rgbmask.png": "mode RGB", "garbage.png": "unreadable image",
            "truncated.png": "unreadable image", "badmask.png": "unreadable mask", "dup.png": "duplicate"}


def test_every_fault_is_reported_at_once(tmp_path):
    expected = make_faulty(tmp_path)
    with pytest.raises(ValueError) as info:
        FolderDataset(tmp_path, num_classes=3)
    message = str(info.value)
    assert f"{len(expected)} problem(s)" in message and "skip_bad=True" in message
    lines = message.splitlines()[1:]
    for name, reason in expected.items():
        assert any(name in line and reason in line for line in lines), (name, reason, message)
    assert not any("good.png" in line for line in lines)


def test_skip_bad_keeps_the_good_and_records_the_rest(tmp_path):
    expected = make_faulty(tmp_path)
    ds = FolderDataset(tmp_path, num_classes=3, skip_bad=True)
    kept = sorted(p.rsplit("/", 1)[-1] for p, _ in ds.samples)
    # "dup" keeps its first file (dup.jpg sorts first); only the duplicate is skipped
    assert kept == ["dup.jpg", "good.png"]
    skipped = {f.rsplit("/", 1)[-1]: why for f, why in ds.skipped}
    assert set(skipped) == set(expected)
    for name, reason in expected.items():
        assert reason in skipped[name]
    assert ds[1][1].max() == 255


def test_nothing_usable(tmp_path):
    write_pair(tmp_path, "a", labels=(5,))
    with pytest.raises(ValueError, match="no usable"):
        FolderDataset(tmp_path, num_classes=2, skip_bad=True)
    (tmp_path / "masks" / "a.png").unlink()
    (tmp_path / "images" / "a.png").unlink()
    with pytest.raises(ValueError, match="no usable"):
        FolderDataset(tmp_path)
