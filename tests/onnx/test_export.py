"""gf.onnx.export: ONNX Runtime agrees with gradflow (1e-4) on single-op models and on FCN-8s / U-Net,
at the traced batch size and at others; unsupported ops and untraceable models fail with clear errors."""
import numpy as np
import pytest

import gradflow as gf
import gradflow.nn as nn
import gradflow.nn.functional as F
from gradflow.onnx import ExportError

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

TOLERANCE = 1e-4


class Op(nn.Module):
    """A model made of one function call (with optional sub-modules holding its weights)."""

    def __init__(self, fn, **modules):
        super().__init__()
        self.fn = fn
        for name, module in modules.items():
            setattr(self, name, module)

    def forward(self, x):
        return self.fn(self, x)


def run_onnx(path, x):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": x})[0]


def reference(model, x):
    with gf.no_grad():
        return model(gf.tensor(x)).numpy()


def check_agreement(model, shape, tmp_path, traced_batch=2, other_batches=(1, 3), seed=0, **export_args):
    """Export at ``traced_batch``; ORT must match gradflow at that batch and every other one."""
    model.eval()
    rng = np.random.default_rng(seed)
    example = gf.tensor(rng.normal(size=(traced_batch, *shape)).astype(np.float32))
    path = tmp_path / "model.onnx"
    proto = gf.onnx.export(model, example, path, **export_args)
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    worst = 0.0
    for batch in (traced_batch, *other_batches):
        x = rng.normal(size=(batch, *shape)).astype(np.float32)
        ours, theirs = reference(model, x), run_onnx(path, x)
        assert theirs.shape == ours.shape, (batch, theirs.shape, ours.shape)
        worst = max(worst, float(np.abs(theirs - ours).max()))
    assert worst <= TOLERANCE, f"max |onnxruntime - gradflow| = {worst:.3g}"
    return proto, worst


def _bn(channels, affine=True):
    bn = nn.BatchNorm2d(channels, affine=affine)
    rng = np.random.default_rng(channels)
    with gf.no_grad():    # statistics and affine far from the defaults, so each one matters
        bn.running_mean.data[...] = rng.normal(size=channels)
        bn.running_var.data[...] = rng.uniform(0.5, 2.0, size=channels)
        if affine:
            bn.weight.data[...] = rng.uniform(0.5, 1.5, size=channels)
            bn.bias.data[...] = rng.normal(size=channels)
    return bn


def _gn(groups, channels):
    gn = nn.GroupNorm(groups, channels)
    with gf.no_grad():
        gn.weight.data[...] = np.linspace(0.5, 1.5, channels)
        gn.bias.data[...] = np.linspace(-1, 1, channels)
    return gn


def seq(*layers):
    return lambda: nn.Sequential(*layers)


def fn(f, **modules):
    return lambda: Op(f, **modules)


# (id, model factory, input shape without the batch)
SINGLE_OPS = [
    ("conv2d", seq(nn.Conv2d(3, 5, 3)), (3, 9, 11)),
    ("conv2d_stride_pad_dilation", seq(nn.Conv2d(4, 6, 3, stride=2, padding=2, dilation=2)), (4, 12, 13)),
    ("conv2d_groups_nobias", seq(nn.Conv2d(4, 6, (3, 1), padding=(1, 0), groups=2, bias=False)), (4, 8, 8)),
    ("conv2d_same", fn(lambda m, x: F.conv2d(x, m.c.weight, m.c.bias, padding="same"), c=nn.Conv2d(3, 4, 4)),
     (3, 7, 7)),
    ("conv_transpose2d", seq(nn.ConvTranspose2d(3, 4, 3)), (3, 5, 6)),
    ("conv_transpose2d_stride_outpad", seq(nn.ConvTranspose2d(4, 2, 3, stride=2, padding=1, output_padding=1)),
     (4, 5, 5)),
    ("conv_transpose2d_groups_dilation", seq(nn.ConvTranspose2d(4, 6, 3, stride=2, groups=2, dilation=2,
                                                                bias=False)), (4, 4, 5)),
    ("conv_transpose2d_k4s2", seq(nn.ConvTranspose2d(3, 3, 4, stride=2, padding=1, bias=False)), (3, 4, 4)),
    ("max_pool2d", seq(nn.MaxPool2d(2)), (3, 8, 10)),
    ("max_pool2d_pad_stride", seq(nn.MaxPool2d(3, stride=2, padding=1)), (2, 9, 8)),
    ("max_pool2d_ceil_dilation", seq(nn.MaxPool2d(2, stride=2, dilation=2, ceil_mode=True)), (2, 9, 10)),
    ("avg_pool2d", seq(nn.AvgPool2d(2)), (3, 8, 6)),
    ("avg_pool2d_pad", seq(nn.AvgPool2d(3, stride=2, padding=1)), (2, 9, 8)),
    ("avg_pool2d_pad_exclude", seq(nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False, ceil_mode=True)),
     (2, 8, 9)),
    ("avg_pool2d_divisor", fn(lambda m, x: F.avg_pool2d(x, 2, divisor_override=3)), (2, 6, 6)),
    ("adaptive_avg_pool2d_1", seq(nn.AdaptiveAvgPool2d(1)), (3, 7, 5)),
    ("adaptive_avg_pool2d_uneven", seq(nn.AdaptiveAvgPool2d((3, 4))), (2, 7, 9)),
    ("adaptive_max_pool2d", fn(lambda m, x: F.adaptive_max_pool2d(x, (3, 2))), (2, 7, 5)),
    ("batch_norm", seq(_bn(3)), (3, 5, 4)),
    ("batch_norm_no_affine", seq(_bn(3, affine=False)), (3, 5, 4)),
    ("group_norm", seq(_gn(2, 6)), (6, 5, 4)),
    ("group_norm_per_channel", seq(_gn(4, 4)), (4, 3, 5)),
    ("group_norm_no_affine", seq(nn.GroupNorm(2, 4, affine=False)), (4, 3, 5)),
    ("group_norm_relu", fn(lambda m, x: gf.ops.norm.group_norm_relu(x, 2, m.g.weight, m.g.bias), g=_gn(2, 4)),
     (4, 3, 3)),
    ("batch_norm_relu", fn(lambda m, x: gf.ops.norm.batch_norm_relu(x, m.b.running_mean, m.b.running_var,
                                                                    m.b.weight, m.b.bias), b=_bn(3)), (3, 4, 4)),
    ("relu", seq(nn.ReLU()), (3, 4, 4)),
    ("sigmoid", seq(nn.Sigmoid()), (3, 4, 4)),
    ("tanh", seq(nn.Tanh()), (3, 4, 4)),
    ("add_mul_scalars", fn(lambda m, x: (x + 1.5) * 2 - 0.5 / (x * x + 1)), (3, 4)),
    ("add_mul_broadcast", fn(lambda m, x: x * m.w.weight.reshape(1, 3, 1, 1) + m.w.bias.reshape(3, 1, 1),
                             w=nn.Conv2d(1, 3, 1)), (3, 4, 5)),
    ("rsub_rdiv_pow_neg", fn(lambda m, x: -(1 - x) ** 2 + 3 / (x.abs() + 1)), (5, 2)),
    ("exp_log_sqrt_clamp", fn(lambda m, x: (x.exp() + 1).log() + x.clamp(-0.5, 0.5) + (x * x + 1).sqrt()), (4, 3)),
    ("cat", fn(lambda m, x: gf.cat([x, x * 2, x[:, :1]], dim=1)), (3, 4, 4)),
    ("stack", fn(lambda m, x: gf.stack([x, x + 1], dim=2)), (3, 4)),
    ("interpolate_nearest_scale", seq(nn.Upsample(scale_factor=2)), (3, 4, 5)),
    ("interpolate_nearest_size", fn(lambda m, x: F.interpolate(x, size=(7, 3))), (2, 5, 6)),
    ("interpolate_nearest_fraction", fn(lambda m, x: F.interpolate(x, scale_factor=1.7)), (2, 5, 6)),
    ("interpolate_bilinear", seq(nn.Upsample(scale_factor=2, mode="bilinear")), (3, 4, 5)),
    ("interpolate_bilinear_align_corners", seq(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)),
     (3, 4, 5)),
    ("interpolate_bilinear_down", fn(lambda m, x: F.interpolate(x, size=(3, 7), mode="bilinear")), (2, 8, 9)),
    ("interpolate_bilinear_down_corners",
     fn(lambda m, x: F.interpolate(x, size=(3, 4), mode="bilinear", align_corners=True)), (2, 8, 9)),
    ("softmax", seq(nn.Softmax(dim=1)), (5, 3, 3)),
    ("log_softmax", seq(nn.LogSoftmax(dim=-1)), (4, 6)),
    ("reshape_permute_flatten", fn(lambda m, x: x.permute(0, 2, 3, 1).reshape(x.shape[0], -1, 3).flatten(1)),
     (3, 4, 5)),
    ("transpose_unsqueeze_squeeze", fn(lambda m, x: x.transpose(1, 2).unsqueeze(1).squeeze(1)), (3, 4)),
    ("expand", fn(lambda m, x: x.expand(-1, 3, -1) + 1), (1, 4)),
    ("linear", seq(nn.Flatten(), nn.Linear(12, 5)), (3, 4)),
    ("linear_3d", seq(nn.Linear(4, 3, bias=False)), (2, 4)),
    ("pad_constant", fn(lambda m, x: F.pad(x, (1, 2, 0, 3), value=0.5)), (2, 4, 4)),
    ("pad_reflect", fn(lambda m, x: F.pad(x, (2, 1, 1, 2), mode="reflect")), (2, 4, 5)),
    ("pad_replicate", fn(lambda m, x: F.pad(x, (3, 0, 0, 2), mode="replicate")), (2, 4, 5)),
    ("pad_circular", fn(lambda m, x: F.pad(x, (1, 2, 2, 1), mode="circular")), (2, 4, 5)),
    ("getitem_slices", fn(lambda m, x: x[:, 1:, ::2, -3:]), (3, 5, 6)),
    ("getitem_int_none_ellipsis", fn(lambda m, x: x[:, 1, None, ..., 2]), (3, 5, 6)),
    ("getitem_negative_step", fn(lambda m, x: x[:, :, ::-1]), (2, 5)),
    ("getitem_array", fn(lambda m, x: x[:, :, gf.tensor(np.array([3, 0, 3]))]), (2, 5)),
    ("sum_mean_max_min", fn(lambda m, x: x.sum(dim=1) + x.mean(dim=2) * x.max() - x.min()
                             + x.mean(dim=(1, 2), keepdim=True)[:, :, 0]), (3, 3)),
    ("dropout_eval", seq(nn.Dropout(0.5), nn.Dropout2d(0.3)), (3, 4, 4)),
    ("to_dtype_and_back", fn(lambda m, x: x.double().float() * 2), (3,)),
]


@pytest.mark.parametrize("name, factory, shape", SINGLE_OPS, ids=[case[0] for case in SINGLE_OPS])
def test_single_op_models_agree_with_onnxruntime(name, factory, shape, tmp_path):
    gf.manual_seed(0)
    check_agreement(factory(), shape, tmp_path)


def _randomised(model):
    """Non-zero score layers and BN statistics away from (0, 1), so every weight shows in the output."""
    rng = np.random.default_rng(7)
    with gf.no_grad():
        for name, p in model.named_parameters():
            if name.startswith("score"):
                p.data[...] = rng.normal(0, 0.5, p.shape)
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.data[...] = rng.normal(0, 0.2, b.shape)
            elif name.endswith("running_var"):
                b.data[...] = rng.uniform(0.5, 1.5, b.shape)
    return model


@pytest.mark.parametrize("norm", ["group", "batch"])
@pytest.mark.parametrize("arch", ["fcn", "unet"])
def test_segmentation_models_agree_with_onnxruntime(arch, norm, tmp_path):
    from models.fcn import FCN
    from models.unet import UNet
    gf.manual_seed(1)
    model = _randomised((FCN if arch == "fcn" else UNet)(3, width=4, norm=norm))
    # traced at batch 1, checked at 1 and 3; H, W not multiples of 32: the pad and crop are in the graph
    _, worst = check_agreement(model, (3, 20, 28), tmp_path, traced_batch=1, other_batches=(3,))
    proto = onnx.load(str(tmp_path / "model.onnx"))
    ops = {node.op_type for node in proto.graph.node}
    # the FCN upsamples with transposed convolutions, the U-Net with 1x1 convolutions + nearest 2x
    upsampling = {"ConvTranspose"} if arch == "fcn" else {"Gather"}
    assert {"Conv", "MaxPool", "Relu", "Pad", "Slice"} | upsampling <= ops
    assert ("InstanceNormalization" if norm == "group" else "BatchNormalization") in ops
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and [d.dim_value for d in dims[1:]] == [3, 20, 28]
    weights = {k for k in model.state_dict() if not k.endswith("num_batches_tracked")}
    assert {init.name for init in proto.graph.initializer} >= weights     # named by their state_dict keys


def test_model_left_in_training_mode_is_exported_in_eval_mode_and_restored(tmp_path):
    model = nn.Sequential(nn.Conv2d(2, 3, 3), _bn(3), nn.Dropout(0.5))
    model.train()
    check_agreement(model, (2, 6, 6), tmp_path)        # check_agreement sets eval; train again:
    model.train()
    gf.onnx.export(model, gf.randn(2, 2, 6, 6), tmp_path / "m.onnx")
    assert all(m.training for m in model.modules())


def test_fixed_batch_export_has_static_shapes(tmp_path):
    model = nn.Sequential(nn.Conv2d(3, 2, 3), nn.Flatten())
    path = tmp_path / "fixed.onnx"
    proto = gf.onnx.export(model, gf.randn(2, 3, 5, 5), path, dynamic_batch=False)
    assert [d.dim_value for d in proto.graph.output[0].type.tensor_type.shape.dim] == [2, 18]
    x = np.random.default_rng(0).normal(size=(2, 3, 5, 5)).astype(np.float32)
    np.testing.assert_allclose(run_onnx(path, x), reference(model, x), atol=TOLERANCE)
    with pytest.raises(Exception, match="(?i)dimension|shape"):
        run_onnx(path, np.zeros((3, 3, 5, 5), np.float32))


@pytest.mark.parametrize("opset", [13, 17, 18, 20])
def test_opsets(opset, tmp_path):
    model = Op(lambda m, x: F.max_pool2d(x, 3, 2, 1).mean(dim=(2, 3)) + F.adaptive_max_pool2d(x, 2).sum(dim=(2, 3)))
    proto, _ = check_agreement(model, (2, 7, 7), tmp_path, opset_version=opset)
    assert proto.opset_import[0].version == opset


def test_names_and_several_inputs_and_outputs(tmp_path):
    class TwoInOut(nn.Module):
        def forward(self, a, b):
            return a + b, a * b

    model = TwoInOut()
    a, b = gf.randn(2, 3), gf.randn(2, 3)
    path = tmp_path / "two.onnx"
    gf.onnx.export(model, (a, b), path, input_names=["a", "b"], output_names=["sum", "product"])
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x, y = np.ones((4, 3), np.float32), np.full((4, 3), 2, np.float32)
    total, product = session.run(["sum", "product"], {"a": x, "b": y})
    assert np.all(total == 3) and np.all(product == 2)


# ---- errors -------------------------------------------------------------------------------------------
def test_unsupported_op_is_named(tmp_path):
    model = Op(lambda m, x: F.cross_entropy(x, gf.zeros(x.shape[0], dtype=gf.int64)))
    with pytest.raises(ExportError, match="does not support the op CrossEntropy.*supported: .*Conv2d"):
        gf.onnx.export(model, gf.randn(2, 3), tmp_path / "x.onnx")
    with pytest.raises(ExportError, match="does not support the op MaxDim"):
        gf.onnx.export(Op(lambda m, x: x.max(dim=1)[0]), gf.randn(2, 3), tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()


def test_values_computed_outside_the_ops_are_refused(tmp_path):
    # x > 0 is a comparison (no graph): as a constant it would freeze the example's signs
    model = Op(lambda m, x: gf.where(x > 0, x, x * 0.1))
    with pytest.raises(ExportError, match="computed outside gradflow's ops.*changes with the input"):
        gf.onnx.export(model, gf.tensor([[1.0, -1.0, 2.0], [-3.0, 4.0, -5.0]]), tmp_path / "x.onnx",
                       dynamic_batch=False)


def test_data_dependent_control_flow_is_refused(tmp_path):
    model = Op(lambda m, x: x.relu() if x.shape[0] < 3 else x.sigmoid().exp())
    with pytest.raises(ExportError, match="control flow that depends on the batch"):
        gf.onnx.export(model, gf.randn(2, 3), tmp_path / "x.onnx")


def test_batch_mixing_reshape_is_refused_only_with_a_free_batch(tmp_path):
    model = Op(lambda m, x: x.reshape(-1) * 2)
    with pytest.raises(ExportError, match="several axes|follows the batch|batch"):
        gf.onnx.export(Op(lambda m, x: x.reshape(x.shape[0], x.shape[0], -1)), gf.randn(2, 2, 3),
                       tmp_path / "x.onnx")
    # flattening the batch into one axis keeps a single free axis: fine at every batch size
    check_agreement(model, (3,), tmp_path)
    with pytest.raises(ExportError, match="slicing acts on axis 0"):
        gf.onnx.export(Op(lambda m, x: x[:1]), gf.randn(2, 3), tmp_path / "x.onnx")
    gf.onnx.export(Op(lambda m, x: x[:1]), gf.randn(2, 3), tmp_path / "x.onnx", dynamic_batch=False)


def test_batch_statistics_in_eval_mode_are_refused(tmp_path):
    model = nn.Sequential(nn.BatchNorm2d(3, track_running_stats=False))
    with pytest.raises(ExportError, match="batch norm in training mode"):
        gf.onnx.export(model, gf.randn(2, 3, 4, 4), tmp_path / "x.onnx")


def test_bad_arguments(tmp_path):
    model = nn.Linear(2, 2)
    with pytest.raises(TypeError, match="example_input must be a Tensor"):
        gf.onnx.export(model, np.zeros((1, 2), np.float32), tmp_path / "x.onnx")
    with pytest.raises(ValueError, match="opset_version must be between 13"):
        gf.onnx.export(model, gf.randn(1, 2), tmp_path / "x.onnx", opset_version=11)
    with pytest.raises(ValueError, match="expected 1 distinct input names"):
        gf.onnx.export(model, gf.randn(1, 2), tmp_path / "x.onnx", input_names=["a", "b"])
    with pytest.raises(ExportError, match="must return a Tensor"):
        gf.onnx.export(Op(lambda m, x: {"y": x}), gf.randn(1, 2), tmp_path / "x.onnx")
