"""Everything a run is built from, each made from the Config: model, device, data, loss, optimizer, scheduler."""
import importlib

import gradflow as gf
import gradflow.nn.functional as F
import gradflow.optim
from gradflow import backend
from gradflow.data import IGNORE_INDEX, get_splits
from gradflow.data import transforms as T
from models.config import MODELS, OPTIMIZERS, SCHEDULERS


def build_model(name, num_classes, in_channels=3, width=16, norm="group"):
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    module, cls = MODELS[name]
    return getattr(importlib.import_module(module), cls)(num_classes, in_channels=in_channels, width=width,
                                                          norm=norm)


def resolve_device(name):
    """'auto' -> 'cuda' when a GPU is usable, else 'cpu'. Asking for cuda without one says why."""
    if name in (None, "auto"):
        return "cuda" if gf.cuda.is_available() else "cpu"
    if name == "cuda" and not gf.cuda.is_available():
        raise RuntimeError(f"--device cuda requested but CUDA is not usable: {gf.cuda.why_unavailable()}")
    return backend.check_device(name)


def load_splits(cfg):
    return get_splits(cfg.dataset, image_size=cfg.image_size, seed=cfg.seed, root=cfg.data_dir,
                      train_size=cfg.train_size, val_size=cfg.val_size, skip_bad=cfg.skip_bad)


def skipped_files(dataset):
    """The (file, reason) list of a folder dataset built with skip_bad (through Subsets too)."""
    while not hasattr(dataset, "skipped") and hasattr(dataset, "dataset"):
        dataset = dataset.dataset
    return list(getattr(dataset, "skipped", []))


def make_augment(cfg):
    """Paired flips for shapes and real photos; none for digits (a mirrored 2 is not a 2)."""
    if not cfg.augment or cfg.dataset == "digits":
        return None
    if cfg.dataset == "shapes":
        return T.Compose([T.RandomHorizontalFlip(), T.RandomVerticalFlip()])
    return T.RandomHorizontalFlip()


def make_criterion(cfg, num_classes):
    """``criterion(logits, masks) -> scalar loss Tensor`` (mean over the counted pixels)."""
    def cross_entropy(logits, masks):
        return F.cross_entropy(logits, masks, ignore_index=IGNORE_INDEX)
    return cross_entropy


def make_optimizer(cfg, params):
    if cfg.optimizer == "sgd":
        return gf.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return gf.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return gf.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")


def make_scheduler(cfg, optimizer, steps_per_epoch):
    """(scheduler or None, when it steps: "iteration", "epoch" or "plateau").

    cosine anneals to 0 over every iteration of the run (smooth even for few epochs);
    step divides the lr by 10 after each third of the epochs; plateau halves it when
    validation mIoU has not improved for 2 epochs.
    """
    sched = gf.optim.lr_scheduler
    if cfg.scheduler == "none":
        return None, None
    if cfg.scheduler == "cosine":
        return sched.CosineAnnealingLR(optimizer, T_max=max(1, cfg.epochs * steps_per_epoch)), "iteration"
    if cfg.scheduler == "step":
        return sched.StepLR(optimizer, step_size=max(1, cfg.epochs // 3), gamma=0.1), "epoch"
    if cfg.scheduler == "plateau":
        return sched.ReduceLROnPlateau(optimizer, mode="max", factor=0.5, patience=2), "plateau"
    raise ValueError(f"unknown scheduler {cfg.scheduler!r}; choose one of {', '.join(SCHEDULERS)}")
