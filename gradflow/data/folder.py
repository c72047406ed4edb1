"""FolderDataset: real images and masks from ``root/images`` and ``root/masks``.

Every file is opened and checked when the dataset is built, so a bad file fails
the run before training starts, with one error that lists every problem at
once, instead of crashing an epoch in.
"""
import pathlib

import numpy as np

from gradflow.data.dataset import IGNORE_INDEX, Dataset, check_index
from gradflow.data.functional import _size, resize_image, resize_mask

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
MASK_MODES = ("L", "P", "1", "I", "I;16", "I;16L", "I;16B")   # single-channel: one class id per pixel


def _pil():
    try:
        from PIL import Image
    except ImportError as exc:   # Pillow is in the [data] extra, not a core dependency
        raise ImportError("FolderDataset needs Pillow: pip install gradflow[data]") from exc
    return Image


def _list_images(directory):
    """{stem: path} of the image files in ``directory``, plus (path, reason) for duplicate stems."""
    found, problems = {}, []
    for path in sorted(directory.iterdir()):
        if not path.is_file() or path.suffix.lower() not in IMAGE_EXTENSIONS:
            continue
        if path.stem in found:
            problems.append((str(path), f"duplicate name: {found[path.stem].name} has the same stem"))
            continue
        found[path.stem] = path
    return found, problems


def read_image(path):
    """(3, H, W) float32 RGB in [0, 1]; grey and RGBA images are converted to RGB."""
    with _pil().open(path) as im:
        return (np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0).transpose(2, 0, 1)


def read_mask(path):
    """(H, W) int64 class ids from a single-channel image (palette images give their indices)."""
    with _pil().open(path) as im:
        if im.mode not in MASK_MODES:
            raise ValueError(f"mask must be single-channel ({', '.join(MASK_MODES)}), got mode {im.mode}")
        return np.asarray(im).astype(np.int64)


def _image_size(path):
    """(H, W) of an image, decoding it fully so truncated files are caught here."""
    with _pil().open(path) as im:
        im.load()
        return im.height, im.width


class FolderDataset(Dataset):
    """Pairs ``root/images/NAME.{png,jpg,jpeg}`` with ``root/masks/NAME.*`` (same stem).

    Masks hold class ids; 255 marks pixels to ignore. ``num_classes`` is checked
    against every mask (None: inferred as the largest id + 1). ``image_size``
    (int or (h, w)) resizes on load, bilinear for images and nearest for masks,
    so images of mixed sizes can be batched.

    Checked at construction: both folders exist; every image has a mask and every
    mask an image; each file decodes; each mask is single-channel and as large as
    its image; mask ids are < num_classes or 255. Problems raise one ValueError
    naming each file and why; with ``skip_bad=True`` the bad pairs are left out
    and listed in ``self.skipped`` as ``(file, reason)``.
    """

    def __init__(self, root, image_size=None, num_classes=None, skip_bad=False):
        self.root = pathlib.Path(root)
        self.image_size = None if image_size is None else _size(image_size)
        self.skipped = []
        image_dir, mask_dir = self.root / "images", self.root / "masks"
        missing = [str(d) for d in (image_dir, mask_dir) if not d.is_dir()]
        if missing:
            raise ValueError(f"FolderDataset needs {image_dir} and {mask_dir}; missing: {', '.join(missing)}")

        images, problems = _list_images(image_dir)
        masks, mask_problems = _list_images(mask_dir)
        problems += mask_problems
        problems += [(str(images[s]), "no mask with this name in masks/") for s in sorted(images.keys() - masks.keys())]
        problems += [(str(masks[s]), "no image with this name in images/") for s in sorted(masks.keys() - images.keys())]

        pairs, labels = [], {}
        for stem in sorted(images.keys() & masks.keys()):
            problem, mask_labels = self._check_pair(images[stem], masks[stem])
            if problem:
                problems.append(problem)
            else:
                pairs.append((images[stem], masks[stem]))
                labels[stem] = mask_labels

        largest = max((int(v.max()) for v in labels.values() if v.size), default=-1)
        self.num_classes = int(num_classes) if num_classes is not None else largest + 1
        if num_classes is not None:
            kept = []
            for image_path, mask_path in pairs:
                bad = labels[image_path.stem][labels[image_path.stem] >= self.num_classes]
                if bad.size:
                    problems.append((str(mask_path), f"mask values {bad.tolist()} >= num_classes={self.num_classes} "
                                                     f"(and not the ignore value {IGNORE_INDEX})"))
                else:
                    kept.append((image_path, mask_path))
            pairs = kept

        if problems and not skip_bad:
            listing = "\n".join(f"  {f}: {why}" for f, why in problems)
            raise ValueError(f"{len(problems)} problem(s) in {self.root} (pass skip_bad=True to skip them):\n{listing}")
        self.skipped = problems
        if not pairs:
            raise ValueError(f"no usable image/mask pairs in {self.root}"
                             + (f" ({len(problems)} skipped)" if problems else ""))
        self.samples = [(str(i), str(m)) for i, m in pairs]
        self.class_names = tuple(str(c) for c in range(self.num_classes))

    @staticmethod
    def _check_pair(image_path, mask_path):
        """(None, label ids in the mask other than 255) or ((file, reason), None)."""
        try:
            image_hw = _image_size(image_path)
        except Exception as exc:   # Pillow raises many types for bad files
            return (str(image_path), f"unreadable image ({type(exc).__name__}: {exc})"), None
        try:
            mask = read_mask(mask_path)
        except Exception as exc:
            return (str(mask_path), f"unreadable mask ({type(exc).__name__}: {exc})"), None
        if mask.shape != image_hw:
            return (str(mask_path), f"mask is {mask.shape[0]}x{mask.shape[1]} (HxW) but its image "
                                    f"{image_path.name} is {image_hw[0]}x{image_hw[1]}"), None
        values = np.unique(mask)
        if values.size and values[0] < 0:
            return (str(mask_path), f"negative mask values {values[values < 0].tolist()}"), None
        return None, values[values != IGNORE_INDEX]

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, index):
        image_path, mask_path = self.samples[check_index(index, len(self))]
        image, mask = read_image(image_path), read_mask(mask_path)
        if self.image_size is not None:
            image, mask = resize_image(image, self.image_size), resize_mask(mask, self.image_size)
        return image, mask
