"""The upstream tests of the op resdet replaces, run with resdet's op in place.

torchvision's ``TestRoIAlign`` (test/test_ops.py, with its base ``RoIOpTester``) on
:func:`resdet.layers.roi_align` and on resdet's ``ROIAlign`` module (a Detectron2
``ROIAlign`` swapped by ``use_fast_roi_align``), and the ROIAlign cases of Detectron2's
tests/modeling/test_roi_pooler.py and test_roi_heads.py on modules built by Detectron2
and swapped by ``use_fast_roi_align``. Same inputs, parameters and assertions as
upstream, plus: values against torchvision's op, and which path ran (resdet's gather or
threaded kernel, or torchvision's op: the modes resdet's op does not serve fall back
visibly).

Left out: the CUDA and MPS cases (no such device here), and test_roialignv2_roialignrotated
(ROIAlignRotated needs Detectron2's compiled ops, absent here; resdet leaves it alone).
Run although upstream skips them on a CPU: the ``deterministic=True`` cases of
test_forward and test_backward.
"""

import copy
import importlib
from typing import List

import numpy as np
import pytest
import torch
import torch.fx
from detectron2.config import get_cfg
from detectron2.export.torchscript_patch import freeze_training_mode, patch_instances
from detectron2.layers import ROIAlign as D2ROIAlign
from detectron2.layers import ShapeSpec
from detectron2.modeling.poolers import ROIPooler
from detectron2.modeling.roi_heads import StandardROIHeads
from detectron2.structures import Boxes, ImageList, Instances
from detectron2.utils.testing import assert_instances_allclose, random_boxes
from torch import Tensor, nn
from torch.autograd import gradcheck
from torchvision import ops
from torchvision.models.feature_extraction import get_graph_node_names

from resdet.layers import FastROIPooler, ROIAlign, roi_align, use_fast_roi_align

fast_module = importlib.import_module("resdet.layers.roi_align")

ROIS = [[0, 0, 0, 9, 9], [0, 0, 5, 4, 9], [0, 5, 5, 9, 9], [1, 0, 0, 9, 9]]  # upstream's
POOL = 5


@pytest.fixture
def paths(monkeypatch):
    """Which op ran: resdet's ``gather`` (inference) or ``threaded`` (autograd) path, or
    ``torchvision``'s op. Not for tests that script (TorchScript would compile the spy)."""
    seen = {"gather": 0, "threaded": 0, "torchvision": 0}

    def spy(name, fn):
        def wrapped(*args, **kwargs):
            seen[name] += 1
            return fn(*args, **kwargs)

        return wrapped

    monkeypatch.setattr(fast_module, "_gather_forward", spy("gather", fast_module._gather_forward))
    monkeypatch.setattr(fast_module, "_run_parallel", spy("threaded", fast_module._run_parallel))
    monkeypatch.setattr(fast_module, "tv_roi_align", spy("torchvision", fast_module.tv_roi_align))
    return seen


def _fast_module(output_size=(POOL, POOL), spatial_scale=1.0, sampling_ratio=-1, aligned=False):
    """resdet's ROIAlign as a model gets it: Detectron2's, swapped by use_fast_roi_align."""
    holder = nn.ModuleDict(
        {"op": D2ROIAlign(output_size, spatial_scale, sampling_ratio, aligned=aligned)}
    )
    op = use_fast_roi_align(holder)["op"]
    assert type(op) is ROIAlign
    return op


def _call(how, x, rois, pool_h, pool_w, spatial_scale=1, sampling_ratio=-1, aligned=False):
    """Upstream's ``fn``: the op as a function or as a module."""
    if how == "function":
        return roi_align(x, rois, (pool_h, pool_w), spatial_scale, sampling_ratio, aligned)
    return _fast_module((pool_h, pool_w), spatial_scale, sampling_ratio, aligned)(x, rois)


def _bilinear(data, y, x):
    """Upstream's ``bilinear_interpolate`` (snap_border=True), over all channels at once."""
    _, height, width = data.shape
    if -1 < y <= 0:
        y = 0
    elif height - 1 <= y < height:
        y = height - 1
    if -1 < x <= 0:
        x = 0
    elif width - 1 <= x < width:
        x = width - 1
    y_low, x_low = int(np.floor(y)), int(np.floor(x))
    wy_h, wx_h = y - y_low, x - x_low
    val = 0
    for wx, xp in ((1 - wx_h, x_low), (wx_h, x_low + 1)):
        for wy, yp in ((1 - wy_h, y_low), (wy_h, y_low + 1)):
            if 0 <= yp < height and 0 <= xp < width:
                val = val + wx * wy * data[:, yp, xp]
    return val


def _expected(x, rois, pool_h, pool_w, spatial_scale=1, sampling_ratio=-1, aligned=False):
    """Upstream's ``expected_fn``, in float64 numpy (its loop over channels vectorised)."""
    data = x.double().numpy()
    out = np.zeros((len(rois), x.shape[1], pool_h, pool_w))
    offset = 0.5 if aligned else 0.0
    for r, roi in enumerate(rois.double().tolist()):
        batch = int(roi[0])
        j_begin, i_begin, j_end, i_end = (v * spatial_scale - offset for v in roi[1:])
        bin_h, bin_w = (i_end - i_begin) / pool_h, (j_end - j_begin) / pool_w
        grid_h = sampling_ratio if sampling_ratio > 0 else int(np.ceil(bin_h))
        grid_w = sampling_ratio if sampling_ratio > 0 else int(np.ceil(bin_w))
        for i in range(pool_h):
            for j in range(pool_w):
                val = 0
                for iy in range(grid_h):
                    y = i_begin + i * bin_h + (iy + 0.5) * bin_h / grid_h
                    for ix in range(grid_w):
                        xx = j_begin + j * bin_w + (ix + 0.5) * bin_w / grid_w
                        val = val + _bilinear(data[batch], y, xx)
                out[r, :, i, j] = val / (grid_h * grid_w)
    return torch.from_numpy(out)


def _forward(how, contiguous, x_dtype, rois_dtype=None, deterministic=False, aligned=False):
    """Upstream's ``RoIOpTester.test_forward`` (CPU): output dtype and values against the
    reference, plus values against torchvision's op under the same settings."""
    rois_dtype = x_dtype if rois_dtype is None else rois_dtype
    tol = {torch.half: 4e-3, torch.bfloat16: 5e-3}.get(x_dtype, 1e-5)
    x = torch.rand(2, 2 * POOL**2, 10, 10, dtype=x_dtype)
    if not contiguous:
        x = x.permute(0, 1, 3, 2)
    rois = torch.tensor(ROIS, dtype=rois_dtype)
    restore = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(deterministic)
    try:
        y = _call(how, x, rois, POOL, POOL, aligned=aligned)
    finally:
        torch.use_deterministic_algorithms(restore)
    assert y.dtype == x.dtype  # whether autocast is on or not, as upstream asserts
    want = _expected(x, rois, POOL, POOL, aligned=aligned)
    torch.testing.assert_close(want.to(y), y, rtol=tol, atol=tol)
    tv = ops.RoIAlign((POOL, POOL), 1, -1, aligned)(
        x, rois.to(x.dtype) if how == "module" else rois
    )
    torch.testing.assert_close(y, tv, rtol=tol, atol=tol)


@pytest.mark.parametrize("how", ["function", "module"])
@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("x_dtype", [torch.float16, torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("contiguous", [True, False])
@pytest.mark.parametrize("deterministic", [True, False])
def test_forward(paths, how, contiguous, deterministic, aligned, x_dtype):
    _forward(how, contiguous, x_dtype, deterministic=deterministic, aligned=aligned)
    # float16 goes to torchvision (its kernel computes in half); float32/64 is resdet's
    if x_dtype is torch.float16:
        assert paths["gather"] == 0 and paths["torchvision"] == 1
    else:
        assert paths["gather"] == 1 and paths["torchvision"] == 0


@pytest.mark.parametrize("how", ["function", "module"])
@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("deterministic", [True, False])
@pytest.mark.parametrize("x_dtype", [torch.float, torch.bfloat16], ids=str)
@pytest.mark.parametrize("rois_dtype", [torch.float, torch.bfloat16], ids=str)
def test_autocast_cpu(paths, how, aligned, deterministic, x_dtype, rois_dtype):
    """torchvision runs roi_align in float32 under CPU autocast and returns the input's
    dtype; resdet does the same on its own path (it raised a dtype mismatch for float32
    features with bfloat16 boxes)."""
    with torch.autocast("cpu"):
        _forward(how, False, x_dtype, rois_dtype, deterministic, aligned)
    assert paths["gather"] == 1 and paths["torchvision"] == 0


def test_autocast_cpu_rule_is_torchvisions():
    """Same dtypes and values as torchvision's autocast kernel, float64 left uncast
    (torchvision's rule), dtype mismatches raising as torchvision's do."""
    x = torch.rand(2, 3, 10, 10)
    rois = torch.tensor(ROIS, dtype=torch.float)
    for x_dtype in (torch.float32, torch.bfloat16, torch.float16, torch.float64):
        for r_dtype in (torch.float32, torch.bfloat16, torch.float64):
            xx, rr = x.to(x_dtype), rois.to(r_dtype)
            with torch.autocast("cpu"):
                try:
                    want = ops.roi_align(xx, rr, POOL)
                except RuntimeError:
                    with pytest.raises(RuntimeError):
                        roi_align(xx, rr, POOL)
                    continue
                got = roi_align(xx, rr, POOL)
            assert got.dtype == want.dtype == x_dtype
            torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize("contiguous", [True, False])
@pytest.mark.parametrize("deterministic", [True, False])
def test_backward(seed, contiguous, deterministic, monkeypatch):
    """Upstream's gradcheck (float64) of the op and of the op compiled by TorchScript."""
    torch.random.manual_seed(seed)
    pool_size = 2
    x = torch.rand(1, 2 * pool_size**2, 5, 5, dtype=torch.float64, requires_grad=True)
    if not contiguous:
        x = x.permute(0, 1, 3, 2)
    rois = torch.tensor([[0, 0, 0, 4, 4], [0, 0, 2, 3, 4], [0, 2, 2, 4, 4]], dtype=torch.float64)

    scripted = torch.jit.script(roi_align)  # before the spy below replaces a global

    def func(z):
        return roi_align(z, rois, pool_size, spatial_scale=1, sampling_ratio=1)

    threaded = []
    real = fast_module._ROIAlignFunction.apply
    monkeypatch.setattr(
        fast_module._ROIAlignFunction, "apply", lambda *a: threaded.append(1) or real(*a)
    )
    restore = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(deterministic)
    try:
        assert gradcheck(func, (x,), atol=1e-5)
    finally:
        torch.use_deterministic_algorithms(restore)
    assert threaded  # the analytical gradient came through resdet's autograd function
    assert gradcheck(lambda z: scripted(z, rois, pool_size), (x,), atol=1e-5)


def test_scripted_function_is_torchvisions():
    """torch.jit.script compiles roi_align to torchvision's op (it failed on ``_pair`` of
    a traced value); its outputs equal torchvision's exactly."""
    scripted = torch.jit.script(roi_align)
    assert "torchvision::roi_align" in str(scripted.inlined_graph)
    x = torch.rand(2, 4, 10, 10)
    rois = torch.tensor(ROIS, dtype=torch.float)
    for size, aligned in ((POOL, False), ((3, 4), True)):
        want = ops.roi_align(x, rois, size, 0.5, 2, aligned)
        assert torch.equal(scripted(x, rois, size, 0.5, 2, aligned), want)
        boxes = [rois[rois[:, 0] == i, 1:] for i in range(2)]
        assert torch.equal(scripted(x, boxes, size, 0.5, 2, aligned), want)


class _Wrapper(nn.Module):
    """Upstream's RoIOpTesterModuleWrapper."""

    def __init__(self, obj):
        super().__init__()
        self.layer = obj
        self.n_inputs = 2

    def forward(self, a, b):
        self.layer(a, b)


def test_is_leaf_node():
    op_obj = _Wrapper(_fast_module())
    graph_node_names = get_graph_node_names(op_obj)
    assert len(graph_node_names) == 2
    assert len(graph_node_names[0]) == len(graph_node_names[1])
    assert len(graph_node_names[0]) == 1 + op_obj.n_inputs
    assert graph_node_names[0][-1].startswith("layer")  # the op is that one node


class _FunctionModule(nn.Module):
    def forward(self, x, rois):
        # roi_align is torch.fx.wrap'ped in its module, as torchvision's is in its own
        return fast_module.roi_align(x, rois, (POOL, POOL), 1, -1)


@pytest.mark.parametrize("how", ["function", "module"])
def test_torch_fx_trace(paths, how):
    """The op is one node of the FX graph; running the graph runs resdet's path."""
    op_obj = _fast_module() if how == "module" else _FunctionModule()
    graph_module = torch.fx.symbolic_trace(op_obj)
    calls = [n for n in graph_module.graph.nodes if n.op == "call_function"]
    assert len(calls) == 1
    x = torch.rand(2, 2 * POOL**2, 5, 5)
    rois = torch.tensor(ROIS, dtype=torch.float)
    output_gt = op_obj(x, rois)
    assert output_gt.dtype == x.dtype
    output_fx = graph_module(x, rois)
    assert output_fx.dtype == x.dtype
    torch.testing.assert_close(output_gt, output_fx, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(output_fx, ops.roi_align(x, rois, POOL), rtol=1e-5, atol=1e-5)
    assert paths["gather"] == 2 and paths["torchvision"] == 0


def test_boxes_shape():
    a = torch.linspace(1, 8 * 8, 8 * 8).reshape(1, 1, 8, 8)
    with pytest.raises(AssertionError):  # boxes as Tensor[N, 5]
        roi_align(a, torch.tensor([[0, 0, 3, 3]], dtype=a.dtype), output_size=(2, 2))
    with pytest.raises(AssertionError):  # boxes as List[Tensor[N, 4]]
        roi_align(a, [torch.tensor([[0, 0, 3]], dtype=a.dtype)], output_size=(2, 2))


class _PoolWrapper(nn.Module):
    """Upstream's PoolWrapper."""

    def __init__(self, pool: nn.Module):
        super().__init__()
        self.pool = pool

    def forward(self, imgs: Tensor, boxes: List[Tensor]) -> Tensor:
        return self.pool(imgs, boxes)


def test_jit_boxes_list():
    """A module holding resdet's ROIAlign, scripted, takes torchvision's list of boxes;
    eager and scripted give torchvision's values."""
    model = _PoolWrapper(_fast_module([3, 3], 1.0, -1))
    x = torch.rand(2, 1, 10, 10)
    roi = torch.tensor(ROIS, dtype=torch.float).t()
    rois = [roi, roi]
    scripted = torch.jit.script(model)
    y = scripted(x, rois)
    assert y.shape == (10, 1, 3, 3)
    want = ops.roi_align(x, rois, 3)
    assert torch.equal(y, want)
    torch.testing.assert_close(model(x, rois), want, rtol=0, atol=1e-6)


def _make_rois(img_size, num_imgs, dtype, num_rois=1000):
    rois = torch.randint(0, img_size // 2, size=(num_rois, 5)).to(dtype)
    rois[:, 0] = torch.randint(0, num_imgs, size=(num_rois,))  # set batch index
    rois[:, 3:] += rois[:, 1:3]  # make sure boxes aren't degenerate
    return rois


@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("scale, zero_point", [(1, 0), (2, 10), (0.1, 50)])
@pytest.mark.parametrize("qdtype", [torch.qint8, torch.quint8, torch.qint32])
def test_qroialign(paths, aligned, scale, zero_point, qdtype):
    """Quantized input goes to torchvision's quantized kernel: the output is quantized and
    equal to torchvision's; upstream's comparison with the float op (resdet's) holds."""
    x = torch.randint(50, 100, size=(1, 2, 10, 10)).to(torch.float)
    qx = torch.quantize_per_tensor(x, scale=scale, zero_point=zero_point, dtype=qdtype)
    rois = _make_rois(10, 1, torch.float)
    qrois = torch.quantize_per_tensor(rois, scale=scale, zero_point=zero_point, dtype=qdtype)
    x, rois = qx.dequantize(), qrois.dequantize()
    y = roi_align(x, rois, output_size=POOL, spatial_scale=1, sampling_ratio=-1, aligned=aligned)
    qy = roi_align(qx, qrois, output_size=POOL, spatial_scale=1, sampling_ratio=-1, aligned=aligned)
    assert paths == {"gather": 1, "threaded": 0, "torchvision": 1}
    assert qy.is_quantized and torch.equal(
        qy.int_repr(), ops.roi_align(qx, qrois, POOL, 1, -1, aligned).int_repr()
    )
    quantized_float_y = torch.quantize_per_tensor(
        y, scale=scale, zero_point=zero_point, dtype=qdtype
    )
    diff_idx = torch.where(qy != quantized_float_y)
    # upstream: rare rounding differences (under 5%), each of exactly one scale step
    assert diff_idx[0].numel() / qy.numel() < 0.05
    abs_diff = torch.abs(qy[diff_idx].dequantize() - quantized_float_y[diff_idx].dequantize())
    t_scale = torch.full_like(abs_diff, fill_value=scale)
    torch.testing.assert_close(abs_diff, t_scale, rtol=1e-5, atol=1e-5)


def test_qroi_align_multiple_images():
    x = torch.randint(50, 100, size=(2, 3, 10, 10)).to(torch.float)
    qx = torch.quantize_per_tensor(x, scale=1, zero_point=0, dtype=torch.qint8)
    rois = _make_rois(img_size=10, num_imgs=2, dtype=torch.float, num_rois=10)
    qrois = torch.quantize_per_tensor(rois, scale=1, zero_point=0, dtype=torch.qint8)
    with pytest.raises(RuntimeError, match="Only one image per batch is allowed"):
        roi_align(qx, qrois, output_size=5)


def test_quantized_map_in_module_is_detectron2s():
    """Detectron2's ROIAlign dequantizes a quantized map and pools it with torchvision's
    op; resdet's module does exactly that."""
    x = torch.rand(1, 3, 10, 10) * 10
    qx = torch.quantize_per_tensor(x, scale=0.1, zero_point=0, dtype=torch.quint8)
    rois = torch.tensor(ROIS[:3], dtype=torch.float)
    want = D2ROIAlign((POOL, POOL), 1.0, 0, aligned=True)(qx, rois)
    got = _fast_module((POOL, POOL), 1.0, 0, aligned=True)(qx, rois)
    assert not got.is_quantized and torch.equal(got, want)


def test_which_modes_use_torchvision(paths):
    """The modes resdet's op serves, and those it hands to torchvision's op as is (scripting:
    test_scripted_function_is_torchvisions; a GPU: not testable here)."""
    x = torch.rand(2, 8, 12, 12)
    rois = torch.tensor(ROIS, dtype=torch.float)
    want = ops.roi_align(x, rois, POOL, 1.0, 0, True)

    def ran(fn):
        snapshot = dict(paths)
        out = fn()
        return out, [k for k in paths if paths[k] > snapshot[k]]

    def check(fn, path, atol=1e-6):
        out, taken = ran(fn)
        assert taken == [path]
        torch.testing.assert_close(out.float(), want, rtol=0, atol=atol)

    with torch.no_grad():
        check(lambda: roi_align(x, rois, POOL, 1.0, 0, True), "gather")
        check(lambda: roi_align(x.double(), rois.double(), POOL, 1.0, 0, True), "gather")
        with torch.autocast("cpu"):  # in float32, as torchvision does
            check(lambda: roi_align(x, rois.bfloat16(), POOL, 1.0, 0, True), "gather")
        # float16: torchvision's kernel, which computes in it; bfloat16 outside autocast
        # raises torchvision's error
        check(lambda: roi_align(x.half(), rois.half(), POOL, 1.0, 0, True), "torchvision", 4e-3)
        for op in (roi_align, ops.roi_align):
            with pytest.raises(RuntimeError, match="not implemented for 'BFloat16'"):
                op(x.bfloat16(), rois.bfloat16(), POOL, 1.0, 0, True)
        # no boxes: nothing to gain
        out, taken = ran(lambda: roi_align(x, rois[:0], POOL, 1.0, 0, True))
        assert taken == ["torchvision"] and out.shape == (0, 8, POOL, POOL)
        # torch.jit.trace records torchvision's op (the gather is data-dependent Python;
        # trace's check then reruns the function eagerly)
        traced = torch.jit.trace(lambda a, b: roi_align(a, b, POOL, 1.0, 0, True), (x, rois))
        graph = str(traced.inlined_graph)
        assert "torchvision::roi_align" in graph and "embedding_bag" not in graph
        torch.testing.assert_close(traced(x, rois), want, rtol=0, atol=0)
        # torch.compile: dynamo records torchvision's op, for the same reason
        compiled = torch.compile(
            lambda a, b: roi_align(a, b, POOL, 1.0, 0, True), backend="eager", fullgraph=True
        )
        check(lambda: compiled(x, rois), "torchvision", 0)
    # autograd: torchvision's kernel on runs of the boxes in parallel
    check(lambda: roi_align(x.clone().requires_grad_(), rois, POOL, 1.0, 0, True), "threaded", 0)


def test_pooler_under_cpu_autocast(paths):
    """Under CPU autocast resdet's pooler gives Detectron2's dtypes and values: float32
    maps gathered in float32 (what torchvision's op does), bfloat16 maps through
    Detectron2's forward and resdet's ROIAlign (in float32, output bfloat16)."""
    features = [torch.rand(2, 4, 16, 16), torch.rand(2, 4, 8, 8)]
    # boxes for both levels (FPN sends those under 224 px to the first here)
    small = torch.tensor([[0, 0, 40, 60], [5, 5, 100, 90], [0, 0, 120, 128]], dtype=torch.float)
    big = torch.tensor([[0, 0, 300, 250], [10, 20, 128, 100]], dtype=torch.float)
    rois = [Boxes(small), Boxes(big)]
    args = dict(output_size=7, scales=(1 / 8, 1 / 16), sampling_ratio=0, pooler_type="ROIAlignV2")
    fast, d2 = _fast_pooler(**args), ROIPooler(**args)
    with torch.no_grad(), torch.autocast("cpu"):
        for dtype in (torch.float32, torch.bfloat16):
            maps = [f.to(dtype) for f in features]
            got, want = fast(maps, rois), d2(maps, rois)
            assert got.dtype == want.dtype == dtype
            torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    assert paths == {"gather": 4, "threaded": 0, "torchvision": 0}  # two levels, twice


# Detectron2's tests/modeling/test_roi_pooler.py


def _one_level_inputs(device="cpu"):
    """test_roi_pooler.py's inputs: one 2x4x10x8 map at scale 1/16, 10 boxes per image."""
    n, w = 2, 8
    feature = (torch.rand(n, 4, 10, w) - 0.5) * 2 * 11
    rois = [Boxes(random_boxes(10, w * 16)).to(device) for _ in range(n)]
    return [feature.to(device)], rois


def _fast_pooler(*args, **kwargs):
    pooler = use_fast_roi_align(ROIPooler(*args, **kwargs))
    assert isinstance(pooler, FastROIPooler)
    return pooler


def test_roi_pooler_scriptability():
    """Scripted, the pooler is Detectron2's forward on torchvision's op: bit-identical to
    Detectron2's pooler; resdet's eager pooler equals it to float rounding (upstream's
    torch.equal compares one implementation with itself). Scripting leaves the eager pooler
    as it was."""
    features, rois = _one_level_inputs()
    fast = _fast_pooler(
        output_size=14, scales=(1 / 16,), sampling_ratio=0, pooler_type="ROIAlignV2"
    )
    d2 = ROIPooler(output_size=14, scales=(1 / 16,), sampling_ratio=0, pooler_type="ROIAlignV2")
    scripted = torch.jit.script(fast)
    eager = fast(features, rois)
    want = d2(features, rois)
    assert torch.equal(scripted(features, rois), want)
    torch.testing.assert_close(eager, want, rtol=0, atol=1e-5 * features[0].abs().max().item())
    assert type(fast) is FastROIPooler and type(fast.level_poolers[0]) is ROIAlign


def test_multilevel_pooler_scriptability():
    features = [torch.rand(2, 4, 16, 16), torch.rand(2, 4, 8, 8)]
    rois = [Boxes(random_boxes(10, 128)), Boxes(random_boxes(10, 256))]
    args = dict(output_size=7, scales=(1 / 8, 1 / 16), sampling_ratio=0, pooler_type="ROIAlignV2")
    fast, d2 = _fast_pooler(**args), ROIPooler(**args)
    assert torch.equal(torch.jit.script(fast)(features, rois), d2(features, rois))


def test_no_images():
    c = 32
    pooler = _fast_pooler(
        output_size=14, scales=(1.0,), sampling_ratio=0.0, pooler_type="ROIAlignV2"
    )
    output = pooler.forward([torch.rand(0, c, 32, 32) - 0.5], [])
    assert output.shape == (0, c, 14, 14)


def test_roi_pooler_tracing():
    """torch.jit.trace over resdet's pooler records torchvision's op (Detectron2's forward);
    the trace generalises to other box counts as upstream asserts, with Detectron2's values."""

    class Model(nn.Module):
        def __init__(self, roi):
            super().__init__()
            self.roi = roi

        def forward(self, x, boxes):
            return self.roi(x, [Boxes(boxes)])

    feature = (torch.rand(1, 4, 10, 8) - 0.5) * 2 * 11
    feature = [feature, feature]
    rois = random_boxes(10, 8 * 16)
    rois = torch.cat([rois, torch.tensor([[0, 0, 448, 448]])])  # a level with one box
    args = dict(output_size=14, scales=(1 / 16, 0.5 / 16), sampling_ratio=0, pooler_type="ROIAlign")
    model = Model(_fast_pooler(**args))
    d2 = Model(ROIPooler(**args))
    with torch.no_grad():
        func = torch.jit.trace(model, (feature, rois))
        graph = str(func.inlined_graph)
        assert "torchvision::roi_align" in graph and "embedding_bag" not in graph
        for boxes, n in ((rois, 11), (rois[:5], 5), (random_boxes(20, 8 * 16), 20)):
            o = func(feature, boxes)
            assert o.shape == (n, 4, 14, 14)
            assert torch.equal(o, d2(feature, boxes))


# Detectron2's tests/modeling/test_roi_heads.py


def test_StandardROIHeads_scriptability():
    """StandardROIHeads (box and mask poolers resdet's) scripted: upstream's comparison of
    eager and scripted detections holds; scripting leaves the eager heads resdet's."""
    cfg = get_cfg()
    cfg.MODEL.ROI_BOX_HEAD.NAME = "FastRCNNConvFCHead"
    cfg.MODEL.ROI_BOX_HEAD.NUM_FC = 2
    cfg.MODEL.ROI_BOX_HEAD.POOLER_TYPE = "ROIAlignV2"
    cfg.MODEL.ROI_BOX_HEAD.BBOX_REG_WEIGHTS = (10, 10, 5, 5)
    cfg.MODEL.MASK_ON = True
    cfg.MODEL.ROI_HEADS.NMS_THRESH_TEST = 0.01
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.01
    images = ImageList(torch.rand(2, 20, 30), [(10, 10), (20, 30)])
    features = {"res4": torch.rand(2, 1024, 1, 2)}
    feature_shape = {"res4": ShapeSpec(channels=1024, stride=16)}

    d2_heads = StandardROIHeads(cfg, feature_shape).eval()
    roi_heads = use_fast_roi_align(copy.deepcopy(d2_heads))
    assert isinstance(roi_heads.box_pooler, FastROIPooler)
    assert isinstance(roi_heads.mask_pooler, FastROIPooler)

    proposal0 = Instances((10, 10))
    proposal0.proposal_boxes = Boxes(torch.tensor([[1, 1, 3, 3], [2, 2, 6, 6]], dtype=torch.float))
    proposal0.objectness_logits = torch.tensor([0.5, 0.7], dtype=torch.float32)
    proposal1 = Instances((20, 30))
    proposal1.proposal_boxes = Boxes(torch.tensor([[1, 5, 2, 8], [7, 3, 10, 5]], dtype=torch.float))
    proposal1.objectness_logits = torch.tensor([0.1, 0.9], dtype=torch.float32)
    proposals = [proposal0, proposal1]

    pred_instances, _ = roi_heads(images, features, proposals)
    d2_instances, _ = d2_heads(images, features, proposals)
    fields = {
        "objectness_logits": torch.Tensor,
        "proposal_boxes": Boxes,
        "pred_classes": torch.Tensor,
        "scores": torch.Tensor,
        "pred_masks": torch.Tensor,
        "pred_boxes": Boxes,
        "pred_keypoints": torch.Tensor,
        "pred_keypoint_heatmaps": torch.Tensor,
    }
    with freeze_training_mode(roi_heads), patch_instances(fields) as new_instances:
        proposals = [new_instances.from_instances(p) for p in proposals]
        scripted_roi_heads = torch.jit.script(roi_heads)
        scripted_pred_instances, _ = scripted_roi_heads(images, features, proposals)

    assert sum(len(i) for i in pred_instances) > 0
    for instance, scripted_instance in zip(pred_instances, scripted_pred_instances):
        assert_instances_allclose(instance, scripted_instance, rtol=0)
    for instance, d2_instance in zip(pred_instances, d2_instances):
        assert_instances_allclose(instance, d2_instance, rtol=0)
    assert isinstance(roi_heads.box_pooler, FastROIPooler)
    assert all(type(p) is ROIAlign for p in roi_heads.mask_pooler.level_poolers)
