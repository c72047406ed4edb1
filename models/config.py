"""What defines a training run: the Config dataclass, the choices each option takes, per-model recipes.

A new option is one field here (with its default and a comment), one flag in
models/commands/train.py, and whatever code reads it.
"""
import dataclasses

MODELS = {"fcn": ("models.fcn", "FCN"), "unet": ("models.unet", "UNet")}
OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULERS = ("none", "step", "cosine", "plateau")
# Each model's default recipe: the Config fields where it differs from the dataclass defaults (FCN's).
RECIPES = {"fcn": {}, "unet": {}}


@dataclasses.dataclass
class Config:
    """Everything that defines a run. Defaults are what `python models/fcn.py` trains."""
    model: str = "fcn"
    dataset: str = "shapes"
    data_dir: str = None
    image_size: int = 64
    train_size: int = 8000          # shapes/digits samples per epoch (procedural; folder: a cap)
    val_size: int = 200
    epochs: int = 5
    batch_size: int = 16
    optimizer: str = "adamw"
    lr: float = 3e-3
    momentum: float = 0.9           # sgd only
    weight_decay: float = 1e-4
    scheduler: str = "cosine"       # cosine and step count iterations/epochs as documented in make_scheduler
    norm: str = "group"
    width: int = 16
    device: str = "auto"
    seed: int = 0
    augment: bool = True
    clip_grad: float = None         # max gradient norm (clip_grad_norm_); None: no clipping
    skip_bad: bool = False          # folder datasets: skip (and list) bad files instead of failing
    ckpt_every: int = 0             # also checkpoint every N steps (0: only at epoch ends)
    out: str = "runs"
    name: str = None                # default "<model>-<dataset>"
    progress: bool = True           # tqdm bar on stderr
    plots: bool = True              # curves.png / predictions.png each epoch
    num_predictions: int = 4

    def run_name(self):
        return self.name or f"{self.model}-{self.dataset}"

    @classmethod
    def from_dict(cls, values):
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


def default_config(model="fcn", **overrides):
    """The Config `python models/<model>.py` trains with: the model's recipe, then ``overrides``."""
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; choose one of {', '.join(MODELS)}")
    return Config(**{"model": model, **RECIPES[model], **overrides})
