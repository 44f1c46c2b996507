"""The ResNet family of the paper: sizes, shortcut options, plain nets, init, errors."""

import pytest
import torch
from fvcore.nn import FlopCountAnalysis

from resdet.modeling import build_resnet
from resdet.modeling.resnet import BasicBlock, BottleneckBlock, _ShortcutA


def n_params(m):
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize(
    "depth,millions", [(18, 11.69), (34, 21.80), (50, 25.56), (101, 44.55), (152, 60.19)]
)
def test_imagenet_param_counts_match_paper(depth, millions):
    assert n_params(build_resnet(depth)) / 1e6 == pytest.approx(millions, rel=0.01)


@pytest.mark.parametrize("depth,millions", [(110, 1.7), (1202, 19.4)])
def test_cifar_option_a_param_counts_match_paper(depth, millions):
    m = build_resnet(depth, dataset="cifar", shortcut="A", num_classes=10)
    assert n_params(m) / 1e6 == pytest.approx(millions, rel=0.02)


def test_r200_layout_and_forward_shape():
    m = build_resnet(200, num_classes=None, out_features=["res5"]).eval()
    assert [len(m.get_submodule(s)) for s in ("res2", "res3", "res4", "res5")] == [3, 24, 36, 3]
    with torch.no_grad():
        assert m(torch.randn(1, 3, 64, 64))["res5"].shape == (1, 2048, 2, 2)


def test_r50_flops_about_4_1_gmacs():
    m = build_resnet(50).eval()
    flops = FlopCountAnalysis(m, torch.randn(1, 3, 224, 224))
    flops.unsupported_ops_warnings(False)
    assert flops.total() / 1e9 == pytest.approx(4.1, rel=0.03)


def test_cifar_structure_6n_plus_2():
    m = build_resnet(20, dataset="cifar", num_classes=10)
    convs = [
        mod
        for name, mod in m.named_modules()
        if isinstance(mod, torch.nn.Conv2d) and "shortcut" not in name
    ]
    assert len(convs) + 1 == 20  # 19 weighted conv layers + fc
    assert m.stem.conv1.weight.shape == (16, 3, 3, 3)
    assert [m.get_submodule(s)[0].out_channels for s in ("res2", "res3", "res4")] == [16, 32, 64]
    out = m(torch.randn(2, 3, 32, 32))["linear"]
    assert out.shape == (2, 10)


def test_option_a_adds_no_parameters_over_plain():
    a = build_resnet(32, dataset="cifar", shortcut="A", num_classes=10)
    plain = build_resnet(32, dataset="cifar", residual=False, num_classes=10)
    assert n_params(a) == n_params(plain)
    assert any(isinstance(mod, _ShortcutA) for mod in a.modules())


def test_option_a_pads_zeros_and_subsamples():
    s = _ShortcutA(16, 32, 2)
    x = torch.randn(1, 16, 8, 8)
    y = s(x)
    assert y.shape == (1, 32, 4, 4)
    assert torch.equal(y[:, :16], x[:, :, ::2, ::2])
    assert torch.count_nonzero(y[:, 16:]) == 0


@pytest.mark.parametrize("depth", [18, 50])
def test_option_c_projects_every_block_and_b_only_where_shape_changes(depth):
    c = build_resnet(depth, shortcut="C", num_classes=None)
    b = build_resnet(depth, shortcut="B", num_classes=None)
    blocks_c = [m for m in c.modules() if isinstance(m, (BasicBlock, BottleneckBlock))]
    blocks_b = [m for m in b.modules() if isinstance(m, (BasicBlock, BottleneckBlock))]
    assert all(blk.shortcut is not None for blk in blocks_c)
    assert [blk.shortcut is not None for blk in blocks_b] == [
        blk.in_channels != blk.out_channels or blk.stride != 1 for blk in blocks_b
    ]
    assert n_params(c) > n_params(b)


def test_plain_net_output_does_not_depend_on_a_shortcut_path():
    plain = build_resnet(18, residual=False, num_classes=None, out_features=["res5"]).eval()
    assert all(
        blk.shortcut is None and blk.shortcut_a is None
        for blk in plain.modules()
        if isinstance(blk, BasicBlock)
    )
    # Zero the last conv of a block's branch: a plain block then outputs relu(0) = 0,
    # whereas a residual block would still pass its input through.
    blk = plain.res3[1]
    with torch.no_grad():
        blk.conv2.weight.zero_()
        blk.conv2.norm.bias.zero_()
        blk.conv2.norm.running_mean.zero_()
        x = torch.randn(1, 128, 8, 8).relu()
        assert torch.count_nonzero(blk(x)) == 0
    residual = build_resnet(18, num_classes=None).eval()
    rb = residual.res3[1]
    with torch.no_grad():
        rb.conv2.weight.zero_()
        rb.conv2.norm.bias.zero_()
        rb.conv2.norm.running_mean.zero_()
        assert torch.allclose(rb(x), x)


def test_zero_init_residual_makes_blocks_identity_at_init():
    m = build_resnet(50, zero_init_residual=True, num_classes=None)
    for blk in m.modules():
        if isinstance(blk, BottleneckBlock):
            assert torch.count_nonzero(blk.conv3.norm.weight) == 0
    blk = m.res3[1].eval()
    x = torch.randn(1, 512, 8, 8).relu()
    with torch.no_grad():
        assert torch.allclose(blk(x), x)


def test_he_init_std():
    m = build_resnet(50, num_classes=None)
    w = m.res4[0].conv2.weight  # 3x3, fan_out = 256 * 9
    assert w.std().item() == pytest.approx((2.0 / (256 * 9)) ** 0.5, rel=0.05)


@pytest.mark.parametrize(
    "stride_in_1x1,strides", [(True, ((2, 2), (1, 1))), (False, ((1, 1), (2, 2)))]
)
def test_stride_placement(stride_in_1x1, strides):
    m = build_resnet(50, stride_in_1x1=stride_in_1x1, num_classes=None)
    blk = m.res3[0]
    assert (blk.conv1.stride, blk.conv2.stride) == strides


@pytest.mark.parametrize(
    "norm,cls",
    [("BN", torch.nn.BatchNorm2d), ("GN", torch.nn.GroupNorm), ("SyncBN", torch.nn.SyncBatchNorm)],
)
def test_norms(norm, cls):
    m = build_resnet(18, norm=norm, num_classes=None)
    assert isinstance(m.res2[0].conv1.norm, cls)
    assert isinstance(m.stem.conv1.norm, cls)


def test_frozen_bn_has_no_trainable_parameters_and_fixed_statistics():
    from detectron2.layers import FrozenBatchNorm2d

    m = build_resnet(18, norm="FrozenBN", num_classes=None, out_features=["res5"])
    assert isinstance(m.res2[0].conv1.norm, FrozenBatchNorm2d)
    before = m.res2[0].conv1.norm.running_mean.clone()
    m.train()
    m(torch.randn(2, 3, 64, 64))
    assert torch.equal(before, m.res2[0].conv1.norm.running_mean)
    assert not any(n.endswith("norm.weight") and p.requires_grad for n, p in m.named_parameters())


def test_freeze_at_freezes_stem_and_res2():
    m = build_resnet(18, num_classes=None, freeze_at=2, out_features=["res5"])
    trainable = {n.split(".")[0] for n, p in m.named_parameters() if p.requires_grad}
    assert trainable == {"res3", "res4", "res5"}


def test_detectron2_parameter_names():
    keys = set(build_resnet(50).state_dict())
    for k in (
        "stem.conv1.weight",
        "stem.conv1.norm.weight",
        "res2.0.conv1.weight",
        "res2.0.conv1.norm.running_var",
        "res2.0.shortcut.weight",
        "res2.0.shortcut.norm.bias",
        "res5.2.conv3.weight",
        "linear.weight",
        "linear.bias",
    ):
        assert k in keys, k


def test_out_features_dict():
    m = build_resnet(18, num_classes=None, out_features=["res2", "res3", "res4", "res5"]).eval()
    out = m(torch.randn(1, 3, 64, 64))
    assert {k: v.shape[1] for k, v in out.items()} == {
        "res2": 64,
        "res3": 128,
        "res4": 256,
        "res5": 512,
    }
    assert {k: s.stride for k, s in m.output_shape().items()} == {
        "res2": 4,
        "res3": 8,
        "res4": 16,
        "res5": 32,
    }


@pytest.mark.parametrize(
    "kwargs,bad,allowed",
    [
        (dict(depth=42), "42", "18, 34, 50, 101, 152, 200"),
        (dict(depth=21, dataset="cifar"), "21", "6n+2"),
        (dict(depth=50, shortcut="D"), "'D'", "A, B, C"),
        (dict(depth=18, res5_dilation=2), "res5_dilation=2", "allowed: 1"),
        (dict(depth=50, norm="LN"), "'LN'", "BN, FrozenBN, SyncBN, GN"),
        (dict(depth=50, dataset="coco"), "'coco'", "imagenet, cifar"),
    ],
)
def test_bad_arguments_name_value_and_allowed(kwargs, bad, allowed):
    with pytest.raises(ValueError) as e:
        build_resnet(**kwargs)
    assert bad in str(e.value) and allowed in str(e.value)
