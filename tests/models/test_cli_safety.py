"""No crafted checkpoint runs code through the command line: every subcommand that opens one refuses it."""
import os

import pytest

import gradflow as gf
from tests.models.helpers import FCN_SCRIPT, run_cli, tiny_config


class RunsShell:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture(scope="module")
def crafted(tmp_path_factory):
    """A real trainer checkpoint with a shell command tucked into its history, as last.ckpt of a run."""
    from models.trainer import Trainer
    folder = tmp_path_factory.mktemp("crafted")
    cfg = tiny_config(folder, epochs=1)
    state = Trainer(cfg).state()
    marker = folder / "pwned"
    state["history"] = [{"epoch": 1, "note": RunsShell(marker)}]
    path = folder / "run" / "last.ckpt"
    gf.save(state, path)
    image = folder / "img.png"
    from PIL import Image
    Image.new("RGB", (16, 16)).save(image)
    return folder, path, marker, image


COMMANDS = {
    "train --resume": lambda path, image, folder: ["train", "--resume", path, "--epochs", "2"],
    "train --resume auto": lambda path, image, folder: ["train", "--resume", "auto", "--out", folder, "--name",
                                                        "run", "--image-size", "16", "--train-size", "16",
                                                        "--val-size", "4", "--batch-size", "4", "--width", "4",
                                                        "--no-progress", "--seed", "0"],
    "eval": lambda path, image, folder: ["eval", path],
    "predict": lambda path, image, folder: ["predict", path, image, "--out", folder / "masks"],
    "export": lambda path, image, folder: ["export", path, "--onnx", folder / "model.onnx"],
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_cli_refuses_a_crafted_checkpoint(crafted, command):
    folder, path, marker, image = crafted
    result = run_cli(COMMANDS[command](path, image, folder), cwd=folder)
    assert result.returncode != 0
    assert "refused global" in result.stderr and "system" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert not marker.exists(), f"{command} ran the checkpoint's shell command"


def test_data_parallel_resume_refuses_a_crafted_checkpoint(crafted):
    from tests.distributed.helpers import mpirun, mpirun_path
    if mpirun_path() is None:
        pytest.skip("mpirun not installed (pip install gradflow[distributed])")
    folder, path, marker, _ = crafted
    result = mpirun([FCN_SCRIPT, "train", "--resume", path, "--epochs", "2"], cwd=folder, timeout=120)
    assert result.returncode != 0
    assert "refused global" in result.stderr, result.stderr[-2000:]
    assert not marker.exists(), "a rank ran the checkpoint's shell command"
