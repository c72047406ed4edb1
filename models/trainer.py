"""Trainer: one training run's state, its checkpoints, and the epoch loop around models/train.py.

    from models.config import Config
    from models.trainer import Trainer
    Trainer(Config(model="fcn", dataset="shapes", epochs=2)).fit()

A run directory ``<out>/<name>/`` gets ``last.ckpt`` (every epoch and every
``ckpt_every`` steps; the one before it kept as ``last.ckpt.prev``), ``best.ckpt``
(best validation score: mIoU, or foreground IoU for binary tasks) and its weights alone
as ``best.safetensors`` (no pickle: safe to share, and PyTorch reads it), ``metrics.json``
(one entry per epoch), ``curves.png`` and ``predictions.png``.

Early stopping (``early_stop`` = patience): after each epoch without a better
validation score a counter grows; when it reaches the patience the run stops,
says why in the log and in metrics.json, and best.ckpt holds the best epoch.
The counter is in the checkpoint, so a resumed run stops where an unbroken one
would.

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
from models.checkpoints import CHECKPOINT_FORMAT, capture_rng, restore_rng, save_best_weights
from models.distributed import Parallel
from models.factories import (build_model, load_splits, make_optimizer, make_scheduler, resolve_device,
                              skipped_files)
from models.losses import make_criterion, resolve_class_weights
from models.presets import make_augment
from models.task import detect_task
from models.train import evaluate, predict, train_one_epoch
from models.utils import NonFiniteError, first_nonfinite, write_json


class Trainer:
    """One training run. ``fit()`` trains to ``cfg.epochs`` and returns the per-epoch history.

    ``resume``: a checkpoint dict (from ``load_checkpoint``) to continue from, exactly where it stopped.
    ``log``: where per-epoch lines go (print by default).
    ``parallel``: this process's part of a data-parallel run (models/distributed.py); default one process.
    """

    def __init__(self, cfg, resume=None, run_dir=None, log=print, parallel=None):
        self.cfg = cfg
        self.parallel = parallel = parallel or Parallel()
        self.log = log if parallel.is_main else (lambda *args, **kwargs: None)
        self.run_dir = run_dir or os.path.join(cfg.out, cfg.run_name())
        os.makedirs(self.run_dir, exist_ok=True)
        if parallel.is_main:
            self._remove_stale_temp_files()
        self.device = resolve_device(cfg.device)

        gf.manual_seed(cfg.seed)
        np.random.seed(cfg.seed % 2 ** 32)
        train_set, val_set = load_splits(cfg)
        for file, why in skipped_files(train_set) + skipped_files(val_set):
            self.log(f"skipped {file}: {why}")
        self.task = detect_task(cfg.loss, cfg.dataset, train_set)
        self.train_set, self.val_set = self.task.wrap(train_set), self.task.wrap(val_set)
        self.num_classes = self.task.num_classes
        self.class_names = list(self.task.class_names)
        self.class_weights = resolve_class_weights(cfg.class_weights, self.task, self.train_set)
        if cfg.class_weights == "auto":
            self.log("class weights (inverse frequency): " + ", ".join(
                f"{name} {w:.3g}" for name, w in zip(self.class_names, self.class_weights)))
        sample_image, _ = self.train_set[0]
        self.model_spec = {"name": cfg.model, "num_classes": self.task.output_channels,
                           "in_channels": sample_image.shape[0], "width": cfg.width, "norm": cfg.norm}
        self.model = build_model(**self.model_spec).to(self.device)
        self.train_model = parallel.wrap(self.model)    # what the steps call: the model, or DDP around it
        self.criterion = make_criterion(cfg.loss, self.task, self.class_weights, self.device)
        self.loader = parallel.train_loader(self.train_set, cfg.batch_size, cfg.seed,
                                            make_augment(cfg.augment, cfg.dataset, cfg.image_size), self.device)
        if len(self.loader) == 0:
            raise ValueError(f"batch size {cfg.batch_size} is larger than the training set "
                             f"({len(self.train_set)} samples); lower --batch-size or raise --train-size")
        self.val_loader = DataLoader(parallel.shard(self.val_set), batch_size=cfg.batch_size, device=self.device)
        self.optimizer = make_optimizer(cfg, self.model.parameters())
        self.scheduler, self.scheduler_mode = make_scheduler(cfg, self.optimizer, len(self.loader))

        self.epoch, self.step, self.global_step = 0, 0, 0
        self.history, self.best_score, self.bad_epochs = [], -1.0, 0   # bad: epochs since the best one
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
            "world_size": self.parallel.world_size,
            "config": dataclasses.asdict(self.cfg),
            "model_spec": self.model_spec,
            "task": dataclasses.asdict(self.task),
            "class_names": self.class_names,
            "class_weights": self.class_weights,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "epoch": self.epoch, "step": self.step, "global_step": self.global_step,
            "loader": self.loader.state_dict(),
            "rng": capture_rng(),
            "history": self.history, "best_score": self.best_score, "bad_epochs": self.bad_epochs,
            "running": {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in self.running.items()},
            "step_losses": list(self.step_losses),
        }

    def _restore(self, state):
        saved_world = state.get("world_size", 1)
        if saved_world != self.parallel.world_size:
            raise ValueError(f"the checkpoint was written by a run on {saved_world} process(es) and this run has "
                             f"{self.parallel.world_size}; resume it with the same count (mpirun -n {saved_world}) "
                             "so the data order continues exactly")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state["scheduler"] is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self.loader.load_state_dict(state["loader"])
        restore_rng(state["rng"])
        self.epoch, self.step, self.global_step = state["epoch"], state["step"], state["global_step"]
        self.history, self.best_score = list(state["history"]), state["best_score"]
        self.bad_epochs = state["bad_epochs"]
        self.running = dict(state["running"])
        self.running["confusion"] = np.array(self.running["confusion"], dtype=np.int64)
        self.step_losses = list(state["step_losses"])
        if self.scheduler_mode == "iteration":   # a resume may extend the run: anneal over the new length
            self.scheduler.T_max = max(1, self.cfg.epochs * len(self.loader))

    def save(self, name, keep_previous=True):
        """Write ``run_dir/name``, refusing non-finite weights so the previous checkpoint stays the good one.
        In a data-parallel run only rank 0 writes (returns None elsewhere)."""
        if not self.parallel.is_main:
            return None
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
        if self.stopped_early():
            self.log(f"nothing to do: the run stopped early after epoch {self.epoch} ({self.stop_reason()})")
        elif self.epoch >= cfg.epochs:
            self.log(f"nothing to do: the checkpoint already finished {self.epoch} of {cfg.epochs} epochs")
        while self.epoch < cfg.epochs and not self.stopped_early():
            train_metrics = train_one_epoch(self)
            self.end_epoch(train_metrics)
        return self.history

    def stopped_early(self):
        return bool(self.cfg.early_stop) and self.bad_epochs >= self.cfg.early_stop

    def stop_reason(self):
        best = self.best_record()
        return (f"val {self.task.monitor} has not improved on {self.best_score:.4f} (epoch {best['epoch']}) for "
                f"{self.bad_epochs} epoch{'s' if self.bad_epochs != 1 else ''}, patience {self.cfg.early_stop}; "
                f"best.ckpt holds epoch {best['epoch']}")

    def best_record(self):
        key = f"val_{self.task.monitor}"
        return max(self.history, key=lambda h: h[key]) if self.history else None

    def end_epoch(self, train_metrics):
        """Validate, log, write artefacts and the epoch-end checkpoint; advance to the next epoch."""
        run, monitor = self.running, self.task.monitor
        self.parallel.sync_buffers(self.train_model)
        val = evaluate(self.model, self.val_loader, self.criterion, self.task, self.parallel)
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
        if self.task.binary:
            record.update(train_foreground_iou=train_metrics["foreground_iou"],
                          val_foreground_iou=val["foreground_iou"], val_foreground_dice=val["foreground_dice"])
        self.history.append(record)
        score = val[monitor] if val[monitor] == val[monitor] else 0.0     # NaN (nothing to score) counts as 0
        if self.scheduler_mode == "epoch":
            self.scheduler.step()
        elif self.scheduler_mode == "plateau":
            self.scheduler.step(score)
        improved = score > self.best_score
        self.best_score, self.bad_epochs = (score, 0) if improved else (self.best_score, self.bad_epochs + 1)
        binary = f"  val fg IoU {val['foreground_iou']:.4f}  fg Dice {val['foreground_dice']:.4f}" \
            if self.task.binary else ""
        self.log(f"epoch {record['epoch']}/{self.cfg.epochs}  train loss {record['train_loss']:.4f}  "
                 f"val pixel acc {val['pixel_accuracy']:.4f}  val mIoU {val['miou']:.4f}{binary}"
                 f"{'  (best)' if improved else ''}  lr {lr:.2e}  {record['seconds']:.1f}s  "
                 f"{record['images_per_s']:.1f} img/s")
        self.epoch, self.step = self.epoch + 1, 0
        self._reset_running()
        self.save("last.ckpt")
        if improved:
            self.save("best.ckpt", keep_previous=False)
            if self.parallel.is_main:
                save_best_weights(self.model, self.model_spec, self.class_names, dataclasses.asdict(self.cfg),
                                  os.path.join(self.run_dir, "best.safetensors"))
        if self.stopped_early():
            self.log(f"early stop after epoch {self.epoch} of {self.cfg.epochs}: {self.stop_reason()}")
        self.write_artifacts()
        return record

    # ---- artefacts ----------------------------------------------------------------------
    def write_artifacts(self):
        if not self.parallel.is_main:
            return
        best, monitor = self.best_record(), self.task.monitor
        write_json({"config": dataclasses.asdict(self.cfg), "model": self.model_spec,
                    "task": dataclasses.asdict(self.task), "class_names": self.class_names,
                    "class_weights": self.class_weights, "device": self.device, "monitor": f"val_{monitor}",
                    "best_epoch": best and best["epoch"], f"best_val_{monitor}": best and best[f"val_{monitor}"],
                    "stopped_early": self.stop_reason() if self.stopped_early() else None,
                    "epochs": self.history}, os.path.join(self.run_dir, "metrics.json"))
        if not self.cfg.plots or not self.history:
            return
        plots.save_curves(self.history, os.path.join(self.run_dir, "curves.png"))
        count = min(self.cfg.num_predictions, len(self.val_set))
        if count:
            samples = [self.val_set[i] for i in range(count)]
            images = np.stack([s[0] for s in samples])
            masks = np.stack([s[1] for s in samples])
            preds = predict(self.model, gf.tensor(images, device=self.device), self.task)
            plots.save_predictions(images, masks, preds, self.num_classes, self.class_names,
                                   os.path.join(self.run_dir, "predictions.png"))
