"""gradflow.data: datasets of (image, mask) pairs, paired transforms and the DataLoader.

    from gradflow.data import DataLoader, get_dataset, transforms as T
    train = get_dataset("shapes", "train", image_size=64, seed=0)
    aug = T.Compose([T.RandomScale((0.75, 1.25)), T.RandomCrop(64, pad_if_needed=True), T.RandomHorizontalFlip()])
    for images, masks in DataLoader(train, batch_size=16, shuffle=True, seed=0, transform=aug):
        ...   # images float32 (N, 3, H, W), masks int64 (N, H, W)
"""
from gradflow.data import functional, transforms
from gradflow.data.dataset import IGNORE_INDEX, Dataset, Subset, random_split
from gradflow.data.digits import DigitsDataset
from gradflow.data.folder import FolderDataset
from gradflow.data.loader import DataLoader, collate
from gradflow.data.registry import DATASETS, get_dataset, get_splits
from gradflow.data.shapes import ShapesDataset
from gradflow.data.transforms import (Compose, Normalize, RandomCrop, RandomHorizontalFlip, RandomScale,
                                      RandomVerticalFlip, Resize)

__all__ = ["Dataset", "Subset", "random_split", "DataLoader", "collate", "ShapesDataset", "DigitsDataset",
           "FolderDataset", "IGNORE_INDEX", "DATASETS", "get_dataset", "get_splits", "Compose", "Normalize",
           "RandomCrop", "RandomHorizontalFlip", "RandomScale", "RandomVerticalFlip", "Resize", "functional",
           "transforms"]
