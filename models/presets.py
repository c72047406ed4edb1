"""Augmentation presets (`--augment none|light|strong`), as torchvision's reference presets.py.

    light   flips and 90-degree rotations: free for data without a preferred orientation
    strong  light, then random scale (0.75-1.25x) + crop back to the training size, a small
            rotation (up to 15 degrees; nearest-neighbour mask), and colour jitter (image only)

Digits are not orientation-free (a mirrored or turned 2 is not a 2), so they get
no flips or quarter turns; strong keeps its scale, small rotation and colour
jitter for them. Every random choice comes from the generator the DataLoader
gives each sample (from seed, epoch and index), so a resumed run sees the same
augmented samples as one never stopped.
"""
from gradflow.data import transforms as T

AUGMENTS = ("none", "light", "strong")
ORIENTATION_BOUND = ("digits",)


def make_augment(name, dataset, image_size):
    """The paired transform of preset ``name`` for ``dataset`` at ``image_size``, or None for none."""
    if name not in AUGMENTS:
        raise ValueError(f"unknown augmentation preset {name!r}; choose one of {', '.join(AUGMENTS)}")
    steps = []
    if name in ("light", "strong") and dataset not in ORIENTATION_BOUND:
        steps += [T.RandomHorizontalFlip(), T.RandomVerticalFlip(), T.RandomRotation90()]
    if name == "strong":
        steps += [T.RandomScale((0.75, 1.25)), T.RandomCrop(image_size, pad_if_needed=True),
                  T.RandomRotation(15), T.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.3, hue=0.05)]
    return T.Compose(steps) if steps else None
