"""The command line (`python models/fcn.py ...`) as a user runs it: help, train, eval, predict, errors."""
import json

import numpy as np
import pytest
from PIL import Image

from gradflow import checkpoint
from gradflow.data import get_dataset
from tests.models.helpers import REPO, TINY, run_cli

TRAIN_RUN = TINY + ["--epochs", "1", "--out", "runs", "--name", "tiny"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny 1-epoch training run that the eval and predict tests reuse."""
    folder = tmp_path_factory.mktemp("cli")
    result = run_cli(TRAIN_RUN, cwd=folder)     # no subcommand: train is the default
    assert result.returncode == 0, result.stderr
    return folder, result


def test_help_lists_commands_and_options(tmp_path):
    top = run_cli(["--help"], cwd=tmp_path)
    assert top.returncode == 0
    for command in ("train", "eval", "predict"):
        assert command in top.stdout
    train = run_cli(["train", "--help"], cwd=tmp_path)
    assert train.returncode == 0
    for option in ("--dataset", "--data-dir", "--image-size", "--epochs", "--batch-size", "--optimizer", "--lr",
                   "--scheduler", "--norm", "--model", "--device", "--seed", "--resume", "--out", "--name",
                   "--clip-grad", "--skip-bad", "--ckpt-every", "--train-size", "--val-size", "--threads"):
        assert option in train.stdout, option
    assert "adamw" in train.stdout and "plateau" in train.stdout and "unet" in train.stdout


def test_train_writes_the_run_folder(trained):
    folder, result = trained
    run = folder / "runs" / "tiny"
    for name in ("last.ckpt", "best.ckpt", "metrics.json", "curves.png", "predictions.png"):
        assert (run / name).is_file(), name
    metrics = json.loads((run / "metrics.json").read_text())
    (epoch,) = metrics["epochs"]
    assert epoch["epoch"] == 1 and epoch["steps"] == 4
    assert len(epoch["val_per_class_iou"]) == 4 and 0 <= epoch["val_miou"] <= 1
    assert metrics["config"]["image_size"] == 16 and metrics["class_names"][1] == "circle"
    assert "epoch 1/1  train loss" in result.stdout and "val mIoU" in result.stdout
    assert "triangle" in result.stdout                       # the final per-class table
    with Image.open(run / "predictions.png") as im:
        assert im.size[0] > 300 and im.size[1] > 300
    state = checkpoint.load(run / "last.ckpt")
    assert {"model", "optimizer", "scheduler", "loader", "rng", "epoch", "step"} <= state.keys()


def test_eval_prints_the_metrics_table_matching_training(trained, tmp_path):
    folder, _ = trained
    out = tmp_path / "eval.json"
    result = run_cli(["eval", "runs/tiny/last.ckpt", "--split", "val", "--json", out], cwd=folder)
    assert result.returncode == 0, result.stderr
    for word in ("pixel accuracy", "mean accuracy", "mIoU", "background", "circle", "square", "triangle"):
        assert word in result.stdout, word
    evaluated = json.loads(out.read_text())
    trained_epoch = json.loads((folder / "runs" / "tiny" / "metrics.json").read_text())["epochs"][-1]
    assert evaluated["miou"] == trained_epoch["val_miou"]                    # same model, same val split
    assert evaluated["pixel_accuracy"] == trained_epoch["val_pixel_accuracy"]


def test_predict_writes_colour_masks_at_each_images_size(trained, tmp_path):
    folder, _ = trained
    paths = []
    for i, (h, w) in enumerate([(16, 16), (20, 28)]):
        image, _ = get_dataset("shapes", "test", image_size=(h, w), seed=5, size=1)[0]
        path = tmp_path / f"img{i}.png"
        Image.fromarray((image.transpose(1, 2, 0) * 255).astype(np.uint8)).save(path)
        paths.append(path)
    result = run_cli(["predict", "runs/tiny/best.ckpt", *paths, "--out", tmp_path / "masks"], cwd=folder)
    assert result.returncode == 0, result.stderr
    for path, size in zip(paths, [(16, 16), (28, 20)]):
        with Image.open(tmp_path / "masks" / f"{path.stem}_mask.png") as mask:
            assert mask.mode == "P" and mask.size == size
            assert np.asarray(mask).max() < 4                                   # class ids, shown in colour
            assert mask.getpalette()[3:6] != [0, 0, 0]


def test_predict_reports_unreadable_images(trained, tmp_path):
    folder, _ = trained
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG not really")
    result = run_cli(["predict", "runs/tiny/best.ckpt", broken, "--out", tmp_path / "masks"], cwd=folder)
    assert result.returncode == 1 and "broken.png: unreadable image" in result.stderr


@pytest.mark.parametrize("extra", [["--model", "unet", "--norm", "batch"],
                                   ["--dataset", "digits", "--optimizer", "sgd", "--scheduler", "plateau"]])
def test_train_other_models_and_datasets(tmp_path, extra):
    result = run_cli([*TRAIN_RUN, "--no-plots", *extra], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    metrics = json.loads((tmp_path / "runs" / "tiny" / "metrics.json").read_text())
    assert metrics["config"]["model"] == ("unet" if "unet" in extra else "fcn")
    assert len(metrics["epochs"][0]["val_per_class_iou"]) == (11 if "digits" in extra else 4)


def test_unet_script_defaults_to_unet(tmp_path):
    result = run_cli([*TRAIN_RUN, "--no-plots"], cwd=tmp_path, script=REPO / "models" / "unet.py")
    assert result.returncode == 0, result.stderr
    assert "training unet" in result.stdout


def test_folder_dataset_with_bad_files(tmp_path):
    """A folder dataset with a bad pair fails with the file named, or trains with --skip-bad."""
    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    shapes = get_dataset("shapes", "train", image_size=16, seed=1, size=8)
    for i in range(8):
        image, mask = shapes[i]
        Image.fromarray((image.transpose(1, 2, 0) * 255).astype(np.uint8)).save(root / "images" / f"{i}.png")
        Image.fromarray(mask.astype(np.uint8)).save(root / "masks" / f"{i}.png")
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(root / "images" / "orphan.png")
    args = ["--dataset", "folder", "--data-dir", root, "--image-size", "16", "--batch-size", "2", "--width", "4",
            "--epochs", "1", "--no-progress", "--no-plots", "--out", "runs"]
    failed = run_cli(args, cwd=tmp_path)
    assert failed.returncode == 1 and "orphan.png: no mask with this name" in failed.stderr
    skipped = run_cli(args + ["--skip-bad"], cwd=tmp_path)
    assert skipped.returncode == 0, skipped.stderr
    assert "skipped" in skipped.stdout and "orphan.png" in skipped.stdout


@pytest.mark.parametrize("args,message", [
    (["--dataset", "folder"], "--dataset folder needs --data-dir"),
    (["--resume", "nowhere/last.ckpt"], "no such checkpoint"),
    (["--device", "cuda"], "CUDA is not usable"),
    (["--batch-size", "64"], "larger than the training set"),
])
def test_bad_arguments_fail_with_a_message(tmp_path, args, message):
    result = run_cli([*TINY, "--epochs", "1", *args], cwd=tmp_path)
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert message in result.stderr and "Traceback" not in result.stderr


def test_argparse_rejects_nonsense(tmp_path):
    result = run_cli(["train", "--lr", "-1"], cwd=tmp_path)
    assert result.returncode == 2 and "must be a positive number" in result.stderr
    result = run_cli(["train", "--optimizer", "lbfgs"], cwd=tmp_path)
    assert result.returncode == 2 and "invalid choice" in result.stderr


def test_threads_option_sets_the_cpu_threads(tmp_path):
    result = run_cli([*TINY, "--epochs", "1", "--no-plots", "--threads", "1", "--out", "runs"], cwd=tmp_path,
                     env_extra={"NUMBA_NUM_THREADS": "2", "OMP_NUM_THREADS": "2"})
    assert result.returncode == 0, result.stderr
    assert "on cpu (1 thread)" in result.stdout


def test_threads_option_rejects_bad_counts(tmp_path):
    result = run_cli(["train", "--threads", "0"], cwd=tmp_path)
    assert result.returncode == 2 and "must be a positive integer" in result.stderr
    result = run_cli([*TINY, "--epochs", "1", "--threads", "3"], cwd=tmp_path, env_extra={"NUMBA_NUM_THREADS": "2"})
    assert result.returncode == 1 and "Numba's thread pool has 2" in result.stderr
