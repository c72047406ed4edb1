"""gf.save_safetensors / gf.load_safetensors: exact round trips, PyTorch reads the same weights, clear errors."""
import numpy as np
import pytest

import gradflow as gf
from gradflow.checkpoint import CheckpointError
from gradflow.serialization import SUPPORTED_DTYPES, load_safetensors_metadata

torch = pytest.importorskip("torch")
safetensors_torch = pytest.importorskip("safetensors.torch")


@pytest.mark.parametrize("dtype", SUPPORTED_DTYPES, ids=str)
def test_round_trip_is_exact_for_every_dtype(tmp_path, dtype):
    rng = np.random.default_rng(0)
    values = {"matrix": (rng.normal(size=(3, 5)) * 50).astype(dtype), "scalar": np.array(7, dtype=dtype),
              "empty": np.zeros((0, 4), dtype=dtype), "strided": (rng.normal(size=(4, 6)) * 9).astype(dtype)[:, ::2]}
    gf.save_safetensors({k: gf.tensor(v) for k, v in values.items()}, tmp_path / "w.safetensors")
    back = gf.load_safetensors(tmp_path / "w.safetensors")
    assert set(back) == set(values)
    for name, value in values.items():
        assert isinstance(back[name], gf.Tensor) and back[name].device == "cpu"
        assert back[name].dtype == value.dtype and back[name].shape == value.shape, name
        assert np.array_equal(back[name].numpy(), value), name


def test_arrays_and_metadata(tmp_path):
    path = tmp_path / "w.safetensors"
    gf.save_safetensors({"a": np.arange(4.0)}, path, metadata={"model": "fcn", "classes": "3"})
    assert np.array_equal(gf.load_safetensors(path)["a"].numpy(), np.arange(4.0))
    assert load_safetensors_metadata(path) == {"model": "fcn", "classes": "3"}


def test_model_weights_load_into_the_pytorch_twin_with_equal_outputs(tmp_path):
    from models.fcn import FCN
    from bench.workloads.fcn_twin import torch_fcn
    gf.manual_seed(3)
    model = FCN(3, width=4, norm="batch")
    rng = np.random.default_rng(1)
    with gf.no_grad():   # non-zero scores and trained-looking BN statistics, so every weight matters
        for name, p in model.named_parameters():
            if name.startswith("score"):
                p.data[...] = rng.normal(0, 0.5, p.shape)
        for name, b in model.named_buffers():
            if "running" in name:
                b.data[...] = rng.uniform(0.5, 1.5, b.shape)
    model.eval()
    path = tmp_path / "fcn.safetensors"
    gf.save_safetensors(model.state_dict(), path)

    twin = torch_fcn(3, 4, "batch")
    missing, unexpected = twin.load_state_dict(safetensors_torch.load_file(str(path)), strict=True)
    assert not missing and not unexpected
    twin.eval()
    x = rng.normal(size=(2, 3, 32, 32)).astype(np.float32)
    with gf.no_grad(), torch.no_grad():
        ours = model(gf.tensor(x)).numpy()
        theirs = twin(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5)

    # and back: a file PyTorch wrote loads into gradflow bit for bit
    safetensors_torch.save_file(twin.state_dict(), str(tmp_path / "torch.safetensors"))
    back = gf.load_safetensors(tmp_path / "torch.safetensors")
    for name, value in model.state_dict().items():
        assert back[name].dtype == value.dtype and np.array_equal(back[name].numpy(), value.numpy()), name


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(TypeError, match="'lr' is a float"):
        gf.save_safetensors({"w": gf.ones(2), "lr": 0.1}, tmp_path / "x.safetensors")
    with pytest.raises(TypeError, match="'z' has dtype complex128"):
        gf.save_safetensors({"z": np.zeros(2, complex)}, tmp_path / "x.safetensors")
    with pytest.raises(TypeError, match="keys must be strings"):
        gf.save_safetensors({0: gf.ones(2)}, tmp_path / "x.safetensors")
    with pytest.raises(TypeError, match="metadata must map str to str"):
        gf.save_safetensors({"w": gf.ones(2)}, tmp_path / "x.safetensors", metadata={"epoch": 3})
    assert not (tmp_path / "x.safetensors").exists() and not list(tmp_path.iterdir())
    with pytest.raises(CheckpointError, match="no such safetensors file"):
        gf.load_safetensors(tmp_path / "missing.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}")
    with pytest.raises(CheckpointError, match="bad.safetensors: not a valid safetensors file"):
        gf.load_safetensors(bad)
