"""The training loop shared by every model: train, validate, checkpoint, resume, write run artefacts.

    from models.train import Config, Trainer
    Trainer(Config(model="fcn", dataset="shapes", epochs=2)).fit()

A run directory ``<out>/<name>/`` gets ``last.ckpt`` (every epoch and every
``ckpt_every`` steps; the one before it kept as ``last.ckpt.prev``), ``best.ckpt``
(best validation mIoU), ``metrics.json`` (one entry per epoch), ``curves.png``
and ``predictions.png``.

Resume is exact: a checkpoint holds the weights, optimizer and scheduler state,
the epoch and step within it, the loader's position, every random generator
and the partial epoch's running statistics, so a run stopped at any step and
resumed ends with the same weights, bit for bit, as one never stopped.

Numerical faults stop the run: a non-finite loss or gradient raises
NonFiniteError naming the epoch, the step and the first parameter with a
non-finite gradient, before the optimizer touches the weights; no checkpoint
is ever written from non-finite weights, so the last one stays good.
"""
import dataclasses
import importlib
import json
import math
import os
import sys
import time

import numpy as np

import gradflow as gf
import gradflow.nn
import gradflow.nn.functional as F
import gradflow.optim
from gradflow import backend, checkpoint
from gradflow.data import DataLoader, get_splits
from gradflow.data import transforms as T
from gradflow.metrics import ConfusionMatrix
from models import plots
from models.state import FaultInjector, capture_rng, restore_rng

IGNORE_INDEX = 255
CHECKPOINT_FORMAT = "gradflow-trainer/1"
MODELS = {"fcn": ("models.fcn", "FCN"), "unet": ("models.unet", "UNet")}
OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULERS = ("none", "step", "cosine", "plateau")


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


class NonFiniteError(RuntimeError):
    """Training produced NaN/Inf; the message names epoch, step and (where known) the parameter."""


# ---- building blocks ------------------------------------------------------------------------
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


def make_augment(cfg):
    """Paired flips for shapes and real photos; none for digits (a mirrored 2 is not a 2)."""
    if not cfg.augment or cfg.dataset == "digits":
        return None
    if cfg.dataset == "shapes":
        return T.Compose([T.RandomHorizontalFlip(), T.RandomVerticalFlip()])
    return T.RandomHorizontalFlip()


def load_splits(cfg):
    return get_splits(cfg.dataset, image_size=cfg.image_size, seed=cfg.seed, root=cfg.data_dir,
                      train_size=cfg.train_size, val_size=cfg.val_size, skip_bad=cfg.skip_bad)


def skipped_files(dataset):
    """The (file, reason) list of a folder dataset built with skip_bad (through Subsets too)."""
    while not hasattr(dataset, "skipped") and hasattr(dataset, "dataset"):
        dataset = dataset.dataset
    return list(getattr(dataset, "skipped", []))


def first_nonfinite(named_tensors):
    """Name of the first tensor in (name, tensor) pairs holding NaN/Inf, else None."""
    for name, t in named_tensors:
        if t is not None and not bool(backend.get_array_module(t.data).isfinite(t.data).all()):
            return name
    return None


def evaluate(model, loader, num_classes):
    """Validation metrics (pixel/mean accuracy, per-class IoU, mIoU) and mean loss over a loader."""
    was_training = model.training
    model.eval()
    cm = ConfusionMatrix(num_classes, ignore_index=IGNORE_INDEX)
    loss_sum, pixels = 0.0, 0
    with gf.no_grad():
        for images, masks in loader:
            logits = model(images)
            loss_sum += float(F.cross_entropy(logits, masks, ignore_index=IGNORE_INDEX, reduction="sum").item())
            pixels += int((masks.data != IGNORE_INDEX).sum())
            cm.update(logits, masks)
    model.train(was_training)
    metrics = cm.compute()
    metrics["loss"] = loss_sum / max(pixels, 1)
    return metrics


def predict(model, images):
    """Class ids (N, H, W) numpy for a batch Tensor of images."""
    was_training = model.training
    model.eval()
    with gf.no_grad():
        ids = backend.to_numpy(model(images).data.argmax(axis=1))
    model.train(was_training)
    return ids


def write_json(obj, path):
    """Atomic like the checkpoints: a reader never sees half a file."""
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1, allow_nan=True)
    os.replace(tmp, path)


def format_metrics(metrics, class_names):
    """The metrics table the CLI prints: overall scores, then IoU per class."""
    lines = [f"  pixel accuracy  {metrics['pixel_accuracy']:.4f}",
             f"  mean accuracy   {metrics['mean_accuracy']:.4f}",
             f"  mIoU            {metrics['miou']:.4f}"]
    if "loss" in metrics:
        lines.append(f"  loss            {metrics['loss']:.4f}")
    width = max(len("class"), *(len(str(n)) for n in class_names))
    lines.append(f"  {'class':<{width}}  IoU")
    for name, iou in zip(class_names, metrics["per_class_iou"]):
        lines.append(f"  {str(name):<{width}}  {'  n/a' if math.isnan(iou) else f'{iou:.4f}'}")
    return "\n".join(lines)


def _progress_bar(cfg, total, initial, desc):
    if not cfg.progress:
        return None
    from tqdm import tqdm
    return tqdm(total=total, initial=initial, desc=desc, unit="batch", leave=False, dynamic_ncols=True,
                file=sys.stderr, mininterval=0.5)


# ---- the trainer ----------------------------------------------------------------------------
class Trainer:
    """One training run. ``fit()`` trains to ``cfg.epochs`` and returns the per-epoch history.

    ``resume``: a checkpoint dict (from ``load_checkpoint``) to continue from, exactly where it stopped.
    ``log``: where per-epoch lines go (print by default).
    """

    def __init__(self, cfg, resume=None, run_dir=None, log=print):
        self.cfg = cfg
        self.log = log
        self.run_dir = run_dir or os.path.join(cfg.out, cfg.run_name())
        os.makedirs(self.run_dir, exist_ok=True)
        self._remove_stale_temp_files()
        self.device = resolve_device(cfg.device)
        self.faults = FaultInjector()

        gf.manual_seed(cfg.seed)
        np.random.seed(cfg.seed % 2 ** 32)
        self.train_set, self.val_set = load_splits(cfg)
        for file, why in skipped_files(self.train_set) + skipped_files(self.val_set):
            self.log(f"skipped {file}: {why}")
        self.num_classes = self.train_set.num_classes
        self.class_names = list(self.train_set.class_names)
        sample_image, _ = self.train_set[0]
        self.model_spec = {"name": cfg.model, "num_classes": self.num_classes, "in_channels": sample_image.shape[0],
                           "width": cfg.width, "norm": cfg.norm}
        self.model = build_model(**self.model_spec).to(self.device)
        self.loader = DataLoader(self.train_set, batch_size=cfg.batch_size, shuffle=True, drop_last=True,
                                 seed=cfg.seed, transform=make_augment(cfg), device=self.device)
        if len(self.loader) == 0:
            raise ValueError(f"batch size {cfg.batch_size} is larger than the training set "
                             f"({len(self.train_set)} samples); lower --batch-size or raise --train-size")
        self.val_loader = DataLoader(self.val_set, batch_size=cfg.batch_size, device=self.device)
        self.optimizer = make_optimizer(cfg, self.model.parameters())
        self.scheduler, self.scheduler_mode = make_scheduler(cfg, self.optimizer, len(self.loader))

        self.epoch, self.step, self.global_step = 0, 0, 0
        self.history, self.best_miou = [], -1.0
        self.step_losses = []          # every step's loss, for determinism checks
        self._reset_running()
        if resume is not None:
            self._restore(resume)

    # ---- checkpoint state ---------------------------------------------------------------
    def _remove_stale_temp_files(self):
        """Half-written checkpoints of a killed run (never read; gf.save only renames complete files)."""
        for entry in os.listdir(self.run_dir):
            if entry.endswith((".tmp", ".prevtmp")) and entry.split(".")[0] in ("last", "best", "metrics"):
                os.remove(os.path.join(self.run_dir, entry))
                self.log(f"removed {os.path.join(self.run_dir, entry)} (left by an interrupted write)")

    def _reset_running(self):
        self.running = {"loss_sum": 0.0, "steps": 0, "images": 0, "seconds": 0.0,
                        "confusion": np.zeros((self.num_classes, self.num_classes), dtype=np.int64)}

    def state(self):
        return {
            "format": CHECKPOINT_FORMAT,
            "config": dataclasses.asdict(self.cfg),
            "model_spec": self.model_spec,
            "class_names": self.class_names,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "epoch": self.epoch, "step": self.step, "global_step": self.global_step,
            "loader": self.loader.state_dict(),
            "rng": capture_rng(),
            "history": self.history, "best_miou": self.best_miou,
            "running": {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in self.running.items()},
            "step_losses": list(self.step_losses),
        }

    def _restore(self, state):
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state["scheduler"] is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self.loader.load_state_dict(state["loader"])
        restore_rng(state["rng"])
        self.epoch, self.step, self.global_step = state["epoch"], state["step"], state["global_step"]
        self.history, self.best_miou = list(state["history"]), state["best_miou"]
        self.running = dict(state["running"])
        self.running["confusion"] = np.array(self.running["confusion"], dtype=np.int64)
        self.step_losses = list(state["step_losses"])
        if self.scheduler_mode == "iteration":   # a resume may extend the run: anneal over the new length
            self.scheduler.T_max = max(1, self.cfg.epochs * len(self.loader))

    def save(self, name, keep_previous=True):
        """Write ``run_dir/name``, refusing non-finite weights so the previous checkpoint stays the good one."""
        bad = first_nonfinite(self.model.named_parameters())
        if bad is not None:
            raise NonFiniteError(f"parameter {bad} is non-finite at epoch {self.epoch + 1}, step {self.step}; "
                                 f"not overwriting {os.path.join(self.run_dir, name)}")
        path = os.path.join(self.run_dir, name)
        checkpoint.save(self.state(), path, keep_previous=keep_previous)
        return path

    # ---- training -----------------------------------------------------------------------
    def _nonfinite(self, what, loss_value):
        """Raise NonFiniteError for the current step, naming the culprit parameters when it can."""
        where = f"epoch {self.epoch + 1}, step {self.step + 1} (global step {self.global_step + 1})"
        named = list(self.model.named_parameters())
        weight = first_nonfinite(named)
        bad_grads = [name for name, p in named if first_nonfinite([(name, p.grad)])]
        if weight is not None:
            culprit = f"parameter {weight} already holds NaN/Inf"
        elif bad_grads:
            culprit = (f"{len(bad_grads)} of {len(named)} parameters have NaN/Inf gradients; "
                       f"first: {bad_grads[0]}, last: {bad_grads[-1]} (in model order)")
        else:
            culprit = "every parameter and gradient is finite (the input or the loss overflowed)"
        last = os.path.join(self.run_dir, "last.ckpt")
        saved = f"the last good checkpoint is {last}" if os.path.exists(last) else "no checkpoint was written yet"
        raise NonFiniteError(f"non-finite {what} (loss {loss_value}) at {where}; {culprit}. Training stopped "
                             f"before the update; {saved}. Lower --lr or set --clip-grad.")

    def train_step(self, images, masks):
        """Forward, backward, finiteness checks, clipping, update. Returns (loss, logits)."""
        logits = self.model(images)
        loss = F.cross_entropy(logits, masks, ignore_index=IGNORE_INDEX)
        loss_value = float(loss.item())
        self.optimizer.zero_grad()
        if not math.isfinite(loss_value):
            loss.backward()    # so the message can name the first layer whose gradient broke
            self._nonfinite("loss", loss_value)
        loss.backward()
        if first_nonfinite((n, p.grad) for n, p in self.model.named_parameters()) is not None:
            self._nonfinite("gradient", loss_value)
        if self.cfg.clip_grad:
            gf.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.clip_grad)
        self.optimizer.step()
        if self.scheduler_mode == "iteration":
            self.scheduler.step()
        return loss_value, logits.detach()

    def train_epoch(self):
        cfg, run = self.cfg, self.running
        steps = len(self.loader)
        self.model.train()
        self.loader.set_epoch(self.epoch)
        bar = _progress_bar(cfg, steps, self.step, f"epoch {self.epoch + 1}/{cfg.epochs}")
        cm = ConfusionMatrix(self.num_classes, ignore_index=IGNORE_INDEX)
        cm.matrix[...] = run["confusion"]
        started = time.perf_counter() - run["seconds"]
        for images, masks in self.loader:
            loss_value, logits = self.train_step(images, masks)
            cm.update(logits, masks)
            del logits
            self.step += 1
            self.global_step += 1
            self.step_losses.append(loss_value)
            run["loss_sum"] += loss_value
            run["steps"] += 1
            run["images"] += images.shape[0]
            run["seconds"] = time.perf_counter() - started
            run["confusion"] = cm.matrix
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss_value:.4f}", mIoU=f"{cm.compute()['miou']:.3f}",
                                img_s=f"{run['images'] / max(run['seconds'], 1e-9):.1f}", refresh=False)
            self.faults.after_step(self.global_step)
            if cfg.ckpt_every and self.global_step % cfg.ckpt_every == 0 and self.step < steps:
                self.save("last.ckpt")
        if bar is not None:
            bar.close()
        return cm.compute()

    def end_epoch(self, train_metrics):
        """Validate, log, write artefacts and the epoch-end checkpoint; advance to the next epoch."""
        run = self.running
        val = evaluate(self.model, self.val_loader, self.num_classes)
        lr = self.optimizer.param_groups[0]["lr"]
        record = {
            "epoch": self.epoch + 1, "steps": run["steps"], "lr": lr,
            "train_loss": run["loss_sum"] / max(run["steps"], 1), "train_miou": train_metrics["miou"],
            "train_pixel_accuracy": train_metrics["pixel_accuracy"],
            "val_loss": val["loss"], "val_pixel_accuracy": val["pixel_accuracy"],
            "val_mean_accuracy": val["mean_accuracy"], "val_miou": val["miou"],
            "val_per_class_iou": val["per_class_iou"],
            "seconds": run["seconds"], "images_per_s": run["images"] / max(run["seconds"], 1e-9),
        }
        self.history.append(record)
        if self.scheduler_mode == "epoch":
            self.scheduler.step()
        elif self.scheduler_mode == "plateau":
            self.scheduler.step(val["miou"])
        improved = val["miou"] > self.best_miou
        if improved:
            self.best_miou = val["miou"]
        self.log(f"epoch {record['epoch']}/{self.cfg.epochs}  train loss {record['train_loss']:.4f}  "
                 f"val pixel acc {val['pixel_accuracy']:.4f}  val mIoU {val['miou']:.4f}"
                 f"{'  (best)' if improved else ''}  lr {lr:.2e}  {record['seconds']:.1f}s  "
                 f"{record['images_per_s']:.1f} img/s")
        self.epoch, self.step = self.epoch + 1, 0
        self._reset_running()
        self.save("last.ckpt")
        if improved:
            self.save("best.ckpt", keep_previous=False)
        self.write_artifacts()
        return record

    def fit(self):
        cfg = self.cfg
        if self.epoch >= cfg.epochs:
            self.log(f"nothing to do: the checkpoint already finished {self.epoch} of {cfg.epochs} epochs")
        while self.epoch < cfg.epochs:
            train_metrics = self.train_epoch()
            self.end_epoch(train_metrics)
        return self.history

    # ---- artefacts ----------------------------------------------------------------------
    def write_artifacts(self):
        best = max(self.history, key=lambda h: h["val_miou"]) if self.history else None
        write_json({"config": dataclasses.asdict(self.cfg), "model": self.model_spec,
                    "class_names": self.class_names, "device": self.device,
                    "best_epoch": best and best["epoch"], "best_val_miou": best and best["val_miou"],
                    "epochs": self.history}, os.path.join(self.run_dir, "metrics.json"))
        if not self.cfg.plots or not self.history:
            return
        plots.save_curves(self.history, os.path.join(self.run_dir, "curves.png"))
        count = min(self.cfg.num_predictions, len(self.val_set))
        if count:
            samples = [self.val_set[i] for i in range(count)]
            images = np.stack([s[0] for s in samples])
            masks = np.stack([s[1] for s in samples])
            preds = predict(self.model, gf.tensor(images, device=self.device))
            plots.save_predictions(images, masks, preds, self.num_classes, self.class_names,
                                   os.path.join(self.run_dir, "predictions.png"))


# ---- loading checkpoints back -------------------------------------------------------------
def load_checkpoint(path, fallback=True, log=print):
    """A trainer checkpoint dict; with ``fallback``, ``path.prev`` when ``path`` is damaged (said in the log)."""
    if fallback:
        state, used, problems = checkpoint.load_with_fallback(path)
        for problem in problems:
            log(f"warning: {problem}; falling back to {used}")
    else:
        state = checkpoint.load(path)
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise checkpoint.CheckpointError(f"{path}: not a gradflow trainer checkpoint (no '{CHECKPOINT_FORMAT}' tag)")
    return state


def model_from_checkpoint(state, device="cpu"):
    model = build_model(**state["model_spec"]).to(device)
    model.load_state_dict(state["model"])
    model.eval()
    return model
