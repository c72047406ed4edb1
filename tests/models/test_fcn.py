"""FCN and U-Net models, and the trainer end to end in process: the loss falls, resume is exact, runs repeat."""
import numpy as np
import pytest

import gradflow as gf
from models.checkpoints import load_checkpoint
from models.fcn import FCN
from models.layers import BatchNormReLU, GroupNormReLU
from models.trainer import Trainer
from models.unet import UNet
from tests.models.faults import Crash, crash_after
from tests.models.helpers import assert_same_weights, tiny_config

torch = pytest.importorskip("torch")
from bench.workloads.fcn_twin import TorchBatchNormReLU, TorchGroupNormReLU, torch_fcn  # noqa: E402


# ---- models --------------------------------------------------------------------------------------
@pytest.mark.parametrize("model_cls", [FCN, UNet])
@pytest.mark.parametrize("hw", [(32, 32), (20, 28)])
def test_logits_have_input_resolution(model_cls, hw):
    gf.manual_seed(0)
    model = model_cls(5, in_channels=2, width=4)
    out = model(gf.randn(2, 2, *hw))
    assert out.shape == (2, 5, *hw)


@pytest.mark.parametrize("model_cls", [FCN, UNet])
def test_models_reject_wrong_input(model_cls):
    model = model_cls(3, width=4)
    with pytest.raises(ValueError, match="input channels"):
        model(gf.randn(1, 1, 32, 32))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        model(gf.randn(3, 32, 32))


def test_fcn_starts_as_bilinear_fusion():
    """Score layers start at zero (logits 0) and every transposed conv at bilinear upsampling."""
    model = FCN(3, width=4)
    assert np.all(model(gf.randn(1, 3, 32, 32)).detach().numpy() == 0)
    ones = gf.ones(1, 3, 4, 4)
    with gf.no_grad():
        up = model.up32(ones).numpy()
    # bilinear 2x upsampling of a constant map is constant away from the zero-padded border
    assert np.allclose(up[:, :, 1:-1, 1:-1], 1.0)
    assert model.up8.weight.shape == (3, 3, 16, 16)


@pytest.mark.parametrize("norm", ["group", "batch"])
def test_fused_norm_relu_layers_match_pytorch(norm):
    """Forward, every gradient, and (batch norm) the running statistics in training and eval mode."""
    rng = np.random.default_rng(3)
    ours = GroupNormReLU(2, 4).double() if norm == "group" else BatchNormReLU(4).double()
    theirs = (TorchGroupNormReLU(2, 4) if norm == "group" else TorchBatchNormReLU(4)).double()
    with gf.no_grad():
        ours.weight.data[...] = rng.normal(size=4)
        ours.bias.data[...] = rng.normal(size=4)
    theirs.load_state_dict({k: torch.from_numpy(np.asarray(v.data).copy()) for k, v in ours.state_dict().items()})
    for training in (True, False):
        ours.train(training)
        theirs.train(training)
        x = rng.normal(size=(3, 4, 5, 6))
        ours_x, theirs_x = gf.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
        out, expected = ours(ours_x), theirs(theirs_x)
        np.testing.assert_allclose(out.detach().numpy(), expected.detach().numpy(), rtol=1e-10, atol=1e-12)
        assert (out.detach().numpy() >= 0).all() and (out.detach().numpy() == 0).any()
        g = rng.normal(size=x.shape)
        (out * gf.tensor(g)).sum().backward()
        (expected * torch.tensor(g)).sum().backward()
        np.testing.assert_allclose(ours_x.grad.numpy(), theirs_x.grad.numpy(), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(ours.weight.grad.numpy(), theirs.weight.grad.numpy(), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(ours.bias.grad.numpy(), theirs.bias.grad.numpy(), rtol=1e-9, atol=1e-12)
        for name, value in theirs.state_dict().items():     # running statistics follow the same updates
            np.testing.assert_allclose(np.asarray(ours.state_dict()[name].data), value.numpy(), rtol=1e-12)


@pytest.mark.parametrize("norm", ["group", "batch"])
def test_fcn_matches_pytorch_twin(norm):
    """Our FCN's state_dict loads into a PyTorch FCN-8s by key; outputs and input gradients agree (float64)."""
    gf.manual_seed(1)
    model = FCN(3, width=4, norm=norm).double()
    rng = np.random.default_rng(0)
    with gf.no_grad():   # non-zero score layers, so every path of the fusion is exercised
        for name, p in model.named_parameters():
            if name.startswith("score"):
                p.data[...] = rng.normal(0, 0.5, p.shape)
    twin = torch_fcn(3, 4, norm).double()
    twin.load_state_dict({k: torch.from_numpy(np.asarray(v.data)) for k, v in model.state_dict().items()})
    x = rng.normal(size=(2, 3, 32, 32))
    ours_x = gf.tensor(x, requires_grad=True)
    theirs_x = torch.tensor(x, requires_grad=True)
    ours, theirs = model(ours_x), twin(theirs_x)
    np.testing.assert_allclose(ours.detach().numpy(), theirs.detach().numpy(), rtol=1e-9, atol=1e-10)
    weights = rng.normal(size=ours.shape)
    (ours * gf.tensor(weights)).sum().backward()
    (theirs * torch.tensor(weights)).sum().backward()
    np.testing.assert_allclose(ours_x.grad.numpy(), theirs_x.grad.numpy(), rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(model.stages[0][0].weight.grad.numpy(), twin.stages[0][0].weight.grad.numpy(),
                               rtol=1e-8, atol=1e-10)


def test_unet_state_dict_keys_and_skip_concat():
    model = UNet(4, width=4, depth=2)
    keys = list(model.state_dict())
    assert "down.0.0.weight" in keys and "up.1.3.bias" in keys and "upsample.0.weight" in keys
    assert model.up[0][0].weight.shape[1] == 2 * 8   # decoder block sees upsampled + skip channels


# ---- training end to end -------------------------------------------------------------------------
def test_loss_falls(tmp_path):
    trainer = Trainer(tiny_config(tmp_path, epochs=6, train_size=8, lr=1e-2, augment="none", scheduler="none"),
                      log=lambda *_: None)
    history = trainer.fit()
    first, last = history[0]["train_loss"], history[-1]["train_loss"]
    assert last < 0.7 * first, [h["train_loss"] for h in history]
    assert (tmp_path / "run" / "best.ckpt").exists() and (tmp_path / "run" / "metrics.json").exists()


@pytest.mark.parametrize("norm,crash_at,saved_at", [("group", 7, (1, 2)), ("batch", 10, (2, 1))])
def test_resume_mid_epoch_gives_identical_weights(tmp_path, monkeypatch, norm, crash_at, saved_at):
    """Crash mid-epoch, resume from the last step checkpoint: same weights and losses as an unbroken run."""
    reference = Trainer(tiny_config(tmp_path, name="ref", norm=norm, ckpt_every=3, epochs=3), log=lambda *_: None)
    reference.fit()

    cfg = tiny_config(tmp_path, name="crashed", norm=norm, ckpt_every=3, epochs=3)
    broken = Trainer(cfg, log=lambda *_: None)
    with monkeypatch.context() as patch:
        crash_after(patch, crash_at)
        with pytest.raises(Crash):
            broken.fit()
    state = load_checkpoint(tmp_path / "crashed" / "last.ckpt")
    # 4 steps an epoch, a checkpoint every 3 global steps: the crash loses the steps after the last one
    assert (state["epoch"], state["step"]) == saved_at
    resumed = Trainer(cfg, resume=state, log=lambda *_: None)
    resumed.fit()

    assert resumed.step_losses == reference.step_losses
    ours = {k: v.numpy() for k, v in resumed.model.state_dict().items()}
    assert_same_weights(ours, {k: v.numpy() for k, v in reference.model.state_dict().items()})
    assert [h["val_miou"] for h in resumed.history] == [h["val_miou"] for h in reference.history]


def test_same_seed_same_losses_bit_for_bit(tmp_path):
    runs = [Trainer(tiny_config(tmp_path, name=f"r{i}", seed=seed), log=lambda *_: None) for i, seed in
            enumerate((3, 3, 4))]
    for trainer in runs:
        trainer.fit()
    assert len(runs[0].step_losses) == 8
    assert runs[0].step_losses == runs[1].step_losses
    assert_same_weights({k: v.numpy() for k, v in runs[0].model.state_dict().items()},
                        {k: v.numpy() for k, v in runs[1].model.state_dict().items()})
    assert runs[0].step_losses != runs[2].step_losses    # the seed matters, so the equality above means something
