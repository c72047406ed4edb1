"""get_dataset: one entry point from a dataset name to train/val datasets, for the trainer CLI."""
import pathlib

from gradflow.data.dataset import Subset, random_split
from gradflow.data.digits import DigitsDataset
from gradflow.data.folder import FolderDataset
from gradflow.data.shapes import ShapesDataset

DATASETS = ("shapes", "digits", "folder")
SPLITS = ("train", "val", "test")
DEFAULT_SIZES = {"train": 2000, "val": 200, "test": 200}


def _check(name, split):
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")


def get_dataset(name, split="train", image_size=64, seed=0, root=None, size=None, num_classes=None,
                val_fraction=0.1, skip_bad=False):
    """The ``split`` ("train", "val" or "test") of dataset ``name``.

    shapes / digits: ``size`` samples (default 2000 train, 200 val/test), generated
    from seed ``(seed, split number)`` so the splits never share a sample; digits'
    val/test draw on handwritten glyphs that train never shows.

    folder: ``root/<split>/{images,masks}`` when that folder exists; otherwise
    ``root/{images,masks}`` split at random into train and val (``val_fraction``,
    permutation from ``seed``, so both calls agree). ``image_size`` resizes images
    (None keeps their size). With ``num_classes=None`` a val/test split takes its
    class count from the train data (reading those masks once more); pass the
    train dataset's ``num_classes`` to skip that. ``size`` caps the number of samples.

    Every returned dataset has ``num_classes`` and ``class_names``.
    """
    _check(name, split)
    if name in ("shapes", "digits"):
        n = DEFAULT_SIZES[split] if size is None else int(size)
        split_seed = (int(seed), SPLITS.index(split))
        if name == "shapes":
            dataset = ShapesDataset(n, image_size=image_size, seed=split_seed)
        else:
            dataset = DigitsDataset(n, image_size=image_size, seed=split_seed,
                                    glyphs="train" if split == "train" else "val")
        if num_classes is not None and int(num_classes) != dataset.num_classes:
            raise ValueError(f"{name} has {dataset.num_classes} classes, got num_classes={num_classes}")
        return dataset

    if root is None:
        raise ValueError("the folder dataset needs root= (a folder with images/ and masks/)")
    root = pathlib.Path(root)
    if (root / split).is_dir():
        if num_classes is None and split != "train" and (root / "train").is_dir():
            num_classes = FolderDataset(root / "train", skip_bad=skip_bad).num_classes
        dataset = FolderDataset(root / split, image_size=image_size, num_classes=num_classes, skip_bad=skip_bad)
    elif split == "test":
        raise ValueError(f"no test split: {root / 'test'} does not exist")
    else:
        whole = FolderDataset(root, image_size=image_size, num_classes=num_classes, skip_bad=skip_bad)
        if len(whole) < 2:
            raise ValueError(f"{root} has {len(whole)} usable pair(s); need at least 2 to split train/val")
        n_val = min(max(1, round(len(whole) * val_fraction)), len(whole) - 1)
        train, val = random_split(whole, [len(whole) - n_val, n_val], seed=seed)
        dataset = train if split == "train" else val
    if size is not None and int(size) < len(dataset):
        dataset = Subset(dataset, range(int(size)))
    return dataset


def get_splits(name, image_size=64, seed=0, root=None, train_size=None, val_size=None, **kwargs):
    """``(train, val)`` datasets of ``name``; val shares train's class count."""
    train = get_dataset(name, "train", image_size=image_size, seed=seed, root=root, size=train_size, **kwargs)
    kwargs["num_classes"] = train.num_classes
    val = get_dataset(name, "val", image_size=image_size, seed=seed, root=root, size=val_size, **kwargs)
    return train, val
