"""What leaves a training run: best.safetensors (PyTorch loads it, same outputs) and `export --onnx`."""

import numpy as np
import pytest

import gradflow as gf
from models.checkpoints import load_checkpoint, load_weights_file, model_from_checkpoint
from tests.models.helpers import TINY, run_cli

torch = pytest.importorskip("torch")
safetensors_torch = pytest.importorskip("safetensors.torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("export")
    result = run_cli(TINY + ["--epochs", "1", "--out", "runs", "--name", "tiny", "--no-plots"], cwd=folder)
    assert result.returncode == 0, result.stderr
    assert "best.safetensors" in result.stdout
    return folder, folder / "runs" / "tiny"


def _images(n, size=16, seed=3):
    return np.random.default_rng(seed).uniform(0, 1, (n, 3, size, size)).astype(np.float32)


def test_best_safetensors_loads_into_the_pytorch_twin_with_equal_outputs(run_folder):
    from bench.workloads.fcn_twin import torch_fcn
    _, run = run_folder
    state = load_checkpoint(run / "best.ckpt", fallback=False)
    ours = model_from_checkpoint(state)
    spec = state["model_spec"]
    twin = torch_fcn(spec["num_classes"], spec["width"], spec["norm"])
    twin.load_state_dict(safetensors_torch.load_file(str(run / "best.safetensors")), strict=True)
    twin.eval()
    x = _images(3, size=32)     # a multiple of 32: the twin has no pad-and-crop
    with gf.no_grad(), torch.no_grad():
        np.testing.assert_allclose(twin(torch.from_numpy(x)).numpy(), ours(gf.tensor(x)).numpy(),
                                   rtol=1e-4, atol=1e-5)
    weights = load_weights_file(run / "best.safetensors")
    assert weights["model_spec"] == spec and weights["class_names"] == state["class_names"]
    for name, value in state["model"].items():
        assert np.array_equal(weights["model"][name].numpy(), value.numpy()), name


@pytest.mark.parametrize("source", ["best.ckpt", "best.safetensors"])
def test_export_writes_an_onnx_model_that_onnxruntime_runs(run_folder, tmp_path, source):
    folder, run = run_folder
    out = tmp_path / "fcn.onnx"
    result = run_cli(["export", run / source, "--onnx", out], cwd=folder)
    assert result.returncode == 0, result.stderr
    assert "checked with ONNX Runtime" in result.stdout and "(batch, 3, 16, 16)" in result.stdout
    onnx.checker.check_model(onnx.load(str(out)), full_check=True)
    model = model_from_checkpoint(load_checkpoint(run / "best.ckpt", fallback=False))
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    for batch in (1, 5):
        x = _images(batch)
        with gf.no_grad():
            expected = model(gf.tensor(x)).numpy()
        np.testing.assert_allclose(session.run(None, {"input": x})[0], expected, atol=1e-4, rtol=0)


def test_export_with_another_size_and_a_fixed_batch(run_folder, tmp_path):
    folder, run = run_folder
    out = tmp_path / "fixed.onnx"
    result = run_cli(["export", run / "last.ckpt", "--onnx", out, "--image-size", "24", "--fixed-batch", "2",
                      "--opset", "18"], cwd=folder)
    assert result.returncode == 0, result.stderr
    proto = onnx.load(str(out))
    assert [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim] == [2, 3, 24, 24]
    assert proto.opset_import[0].version == 18


def test_export_errors_are_one_line(run_folder, tmp_path):
    folder, run = run_folder
    missing = run_cli(["export", tmp_path / "nope.ckpt", "--onnx", tmp_path / "x.onnx"], cwd=folder)
    assert missing.returncode == 1 and "no such checkpoint" in missing.stderr and "Traceback" not in missing.stderr
    bad_opset = run_cli(["export", run / "best.ckpt", "--onnx", tmp_path / "x.onnx", "--opset", "9"], cwd=folder)
    assert bad_opset.returncode == 1 and "opset_version must be between" in bad_opset.stderr
    plain = tmp_path / "plain.safetensors"
    gf.save_safetensors({"w": gf.ones(2)}, plain)
    foreign = run_cli(["export", plain, "--onnx", tmp_path / "x.onnx"], cwd=folder)
    assert foreign.returncode == 1 and "not a gradflow trainer weights file" in foreign.stderr
