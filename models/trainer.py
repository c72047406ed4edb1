"""Trainer: one training run's state, its checkpoints, and the epoch loop around models/train.py.

    from models.config import Config
    from models.trainer import Trainer
    Trainer(Config(model="fcn", dataset="shapes", epochs=2)).fit()

A run directory ``<out>/<name>/`` gets ``last.ckpt`` (every epoch and every
``ckpt_every`` steps; the one before it kept as ``last.ckpt.prev``), ``best.ckpt``
(best validation mIoU), ``metrics.json`` (one entry per epoch), ``curves.png``
and ``predictions.png``.

Resume is exact: a checkpoint holds the weights, optimizer and scheduler state,
the epoch and step within it, the loader's position, every random generator
and the partial epoch's running statistics, so a run stopped at any step and
resumed ends with the same weights, bit for bit, as one never stopped. No
checkpoint is ever written from non-finite weights, so the last one stays good.
"""
import dataclasses
import os

import numpy as np

import gradflow as gf
from gradflow import checkpoint
from gradflow.data import DataLoader
from models import plots
from models.checkpoints import CHECKPOINT_FORMAT, capture_rng, restore_rng
from models.factories import (build_model, load_splits, make_augment, make_criterion, make_optimizer,
                              make_scheduler, resolve_device, skipped_files)
from models.train import evaluate, predict, train_one_epoch
from models.utils import NonFiniteError, first_nonfinite, write_json


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
        self.criterion = make_criterion(cfg, self.num_classes)
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

    # ---- the epoch loop -----------------------------------------------------------------
    def fit(self):
        cfg = self.cfg
        if self.epoch >= cfg.epochs:
            self.log(f"nothing to do: the checkpoint already finished {self.epoch} of {cfg.epochs} epochs")
        while self.epoch < cfg.epochs:
            train_metrics = train_one_epoch(self)
            self.end_epoch(train_metrics)
        return self.history

    def end_epoch(self, train_metrics):
        """Validate, log, write artefacts and the epoch-end checkpoint; advance to the next epoch."""
        run = self.running
        val = evaluate(self.model, self.val_loader, self.criterion, self.num_classes)
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
