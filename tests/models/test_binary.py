"""--loss and --class-weights: task detection, the criteria against PyTorch, binary runs end to end."""
import json

import numpy as np
import pytest
from PIL import Image

import gradflow as gf
from gradflow import checkpoint
from gradflow.data import get_dataset
from gradflow.data.make_example import make_example
from models.losses import class_frequencies, make_criterion, parse_class_weights, resolve_class_weights
from models.task import BinaryMasks, Task, detect_task
from models.trainer import Trainer
from tests.models.helpers import run_cli, tiny_config

torch = pytest.importorskip("torch")
BINARY = Task(2, ("background", "foreground"), binary=True)
FOUR = Task(4, ("background", "circle", "square", "triangle"))


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    """A tiny dataset of 0/255 masks, as `python -m gradflow.data.make_example` writes it."""
    root = tmp_path_factory.mktemp("example")
    make_example(root, count=20, size=16, seed=3)
    return root


# ---- which task -----------------------------------------------------------------------------------
def test_tasks_follow_the_loss_and_the_masks(example):
    shapes = get_dataset("shapes", "train", image_size=16, size=4)
    folder = get_dataset("folder", "train", image_size=16, root=example)
    assert folder.num_classes == 1                                   # 255 is "ignore" to the folder reader...
    task = detect_task("ce", "folder", folder)
    assert task.foreground_255 and task.num_classes == 2 and not task.binary   # ...but 0/255 masks are binary
    assert detect_task("bce+dice", "folder", folder).output_channels == 1
    assert detect_task("dice", "shapes", shapes).output_channels == 4  # multi-class Dice: the softmax
    with pytest.raises(ValueError, match="needs masks of 0/1 or 0/255, but this dataset has 4 classes"):
        detect_task("bce", "shapes", shapes)
    image, mask = BinaryMasks(folder)[0]
    _, raw = folder[0]
    assert set(np.unique(raw)) == {0, 255} and np.array_equal(mask, (raw == 255).astype(np.int64))


def test_class_weights_parse_and_resolve(example):
    assert parse_class_weights("auto") == "auto" and parse_class_weights("1,2.5") == [1.0, 2.5]
    for bad in ("one,two", "-1,2", "0,0"):
        with pytest.raises(ValueError, match="class weights|comma-separated"):
            parse_class_weights(bad)
    with pytest.raises(ValueError, match="gives 3 weights but the data has 2 classes"):
        resolve_class_weights([1, 2, 3], BINARY, None)
    folder = get_dataset("folder", "train", image_size=16, root=example)
    task = detect_task("bce", "folder", folder)
    shares = class_frequencies(task.wrap(folder), 2)
    masks = np.stack([task.wrap(folder)[i][1] for i in range(len(folder))])
    np.testing.assert_allclose(shares, [(masks == 0).mean(), (masks == 1).mean()])
    weights = resolve_class_weights("auto", task, folder)
    np.testing.assert_allclose(weights, 1 / (2 * shares))            # sklearn's "balanced"
    assert weights[1] > 1 > weights[0]                               # the small foreground weighs more


# ---- the criteria against PyTorch -----------------------------------------------------------------
def _binary_batch(seed=0):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(3, 1, 5, 6))
    masks = (rng.random((3, 5, 6)) < 0.4).astype(np.int64)
    masks[0, 0] = 255
    return logits, masks


@pytest.mark.parametrize("weights", [None, [0.375, 2.5]])   # float32-exact weights
def test_bce_matches_pytorch_with_ignore_and_weights(weights):
    logits, masks = _binary_batch()
    x = gf.tensor(logits, requires_grad=True)
    loss = make_criterion("bce", BINARY, weights)(x, gf.tensor(masks))
    loss.backward()
    keep = torch.tensor(masks != 255)
    tx = torch.tensor(logits, requires_grad=True)
    target = torch.tensor(masks == 1, dtype=torch.float64)
    w = torch.ones_like(target) if weights is None else torch.tensor(weights, dtype=torch.float64)[
        torch.tensor(np.where(masks == 255, 0, masks))]
    expected = torch.nn.functional.binary_cross_entropy_with_logits(tx[:, 0][keep], target[keep], weight=w[keep],
                                                                    reduction="sum") / w[keep].sum()
    expected.backward()
    assert float(loss.item()) == pytest.approx(float(expected.detach()), rel=1e-10)
    np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy(), rtol=1e-9, atol=1e-12)


def test_dice_criteria_are_soft_dice_of_sigmoid_and_softmax():
    logits, masks = _binary_batch(1)
    keep = masks != 255
    p = 1 / (1 + np.exp(-logits[:, 0]))
    t = (masks == 1) * keep
    dice = [(2 * (p[n] * t[n] * keep[n]).sum() + 1) / ((p[n] * keep[n]).sum() + t[n].sum() + 1) for n in range(3)]
    got = make_criterion("dice", BINARY)(gf.tensor(logits), gf.tensor(masks))
    assert float(got.item()) == pytest.approx(1 - np.mean(dice), rel=1e-10)
    both = make_criterion("bce+dice", BINARY)(gf.tensor(logits), gf.tensor(masks))
    bce = make_criterion("bce", BINARY)(gf.tensor(logits), gf.tensor(masks))
    assert float(both.item()) == pytest.approx(float(bce.item()) + float(got.item()), rel=1e-12)
    # multi-class Dice from the softmax of C channels
    rng = np.random.default_rng(2)
    logits4, masks4 = rng.normal(size=(2, 4, 5, 5)), rng.integers(0, 4, size=(2, 5, 5))
    soft = torch.softmax(torch.tensor(logits4), 1).numpy()
    onehot = np.eye(4)[masks4].transpose(0, 3, 1, 2)
    per = (2 * (soft * onehot).sum((2, 3)) + 1) / (soft.sum((2, 3)) + onehot.sum((2, 3)) + 1)
    got4 = make_criterion("dice", FOUR)(gf.tensor(logits4), gf.tensor(masks4))
    assert float(got4.item()) == pytest.approx(1 - per.mean(), rel=1e-10)


def test_weighted_cross_entropy_matches_pytorch():
    rng = np.random.default_rng(4)
    logits, masks = rng.normal(size=(2, 4, 5, 5)), rng.integers(0, 4, size=(2, 5, 5))
    masks[1, 0] = 255
    weights = [0.5, 1.0, 2.0, 3.0]
    got = make_criterion("ce", FOUR, weights)(gf.tensor(logits), gf.tensor(masks))
    expected = torch.nn.functional.cross_entropy(torch.tensor(logits), torch.tensor(masks),
                                                 weight=torch.tensor(weights, dtype=torch.float64), ignore_index=255)
    assert float(got.item()) == pytest.approx(float(expected), rel=1e-6)
    with pytest.raises(ValueError, match="binary task takes bce, dice or bce\\+dice"):
        make_criterion("ce", BINARY)
    with pytest.raises(ValueError, match="unknown loss"):
        make_criterion("focal", FOUR)


# ---- binary runs end to end -----------------------------------------------------------------------
def test_binary_training_run(example, tmp_path):
    cfg = tiny_config(tmp_path, dataset="folder", data_dir=str(example), loss="bce+dice", class_weights="auto",
                      epochs=3, lr=1e-2, plots=True, model="unet", augment="strong")
    logs = []
    trainer = Trainer(cfg, log=logs.append)
    assert trainer.model_spec["num_classes"] == 1 and trainer.model.head.out_channels == 1
    assert any(line.startswith("class weights (inverse frequency): background 0.") for line in logs)
    history = trainer.fit()
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert all(0 <= h["val_foreground_iou"] <= 1 and 0 <= h["val_foreground_dice"] <= 1 for h in history)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["monitor"] == "val_foreground_iou" and metrics["task"]["binary"]
    assert metrics["best_val_foreground_iou"] == max(h["val_foreground_iou"] for h in history)
    best = checkpoint.load(tmp_path / "run" / "best.ckpt")
    assert best["history"][-1]["val_foreground_iou"] == metrics["best_val_foreground_iou"]
    assert "fg IoU" in logs[-1] or any("fg IoU" in line for line in logs)
    assert (tmp_path / "run" / "predictions.png").is_file()


def test_binary_eval_and_predict_from_the_command_line(example, tmp_path):
    args = ["--dataset", "folder", "--data-dir", example, "--image-size", "16", "--batch-size", "4", "--width", "4",
            "--epochs", "1", "--no-progress", "--no-plots", "--out", "runs", "--name", "bin", "--loss", "bce"]
    trained = run_cli(args, cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr
    assert "foreground IoU" in trained.stdout and "best val foreground_iou" in trained.stdout
    out = tmp_path / "eval.json"
    evaluated = run_cli(["eval", "runs/bin/last.ckpt", "--json", out], cwd=tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr
    epoch = json.loads((tmp_path / "runs" / "bin" / "metrics.json").read_text())["epochs"][-1]
    assert json.loads(out.read_text())["foreground_iou"] == epoch["val_foreground_iou"]
    image = next((example / "images").iterdir())
    predicted = run_cli(["predict", "runs/bin/last.ckpt", image, "--out", tmp_path / "masks"], cwd=tmp_path)
    assert predicted.returncode == 0, predicted.stderr
    with Image.open(tmp_path / "masks" / f"{image.stem}_mask.png") as mask:
        assert set(np.unique(np.asarray(mask))) <= {0, 1} and mask.size == (16, 16)


def test_binary_loss_on_multi_class_data_fails_clearly(tmp_path):
    result = run_cli(["--image-size", "16", "--train-size", "8", "--epochs", "1", "--loss", "bce", "--no-progress"],
                     cwd=tmp_path)
    assert result.returncode == 1 and "needs masks of 0/1 or 0/255" in result.stderr
