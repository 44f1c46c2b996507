"""LazyConfig: resdet's Python configs build the YAML configs' models, a resdet trunk drops
into a Detectron2 zoo LazyConfig, and the detection trainer trains, checkpoints and
resumes it as it does YAML configs.

The R101-C4 pair is built once; test time keeps 50 proposals per image (the C4 head runs
res5 on every proposal) and a score threshold of 0 so detections exist with random weights.
"""

import json
from collections.abc import Mapping, Sequence

import numpy as np
import pytest
import torch
from detectron2.config import instantiate
from detectron2.data import transforms as T
from detectron2.data.detection_utils import read_image
from detectron2.modeling import build_model
from torch import nn

from resdet import model_zoo
from resdet.detection import evaluate_detector, train_detector
from resdet.engine import load
from resdet.errors import ConfigError
from resdet.lazy import resdet_bottom_up
from resdet.modeling import BottleneckBlock, build_resnet

TEST_PROPOSALS = 16


def _settings(obj, depth=0):
    """A module's hyperparameters: every attribute that is not a parameter, buffer or
    child module, with containers and helper objects (Matcher, Box2BoxTransform, ...)
    turned into plain values, so two models built from different configs compare."""

    def plain(v, d):
        if isinstance(v, (int, float, str, bool, type(None))):
            return v
        if isinstance(v, torch.Tensor):
            return ("tensor", tuple(v.shape), v.flatten().tolist()[:16])
        if isinstance(v, Mapping):
            return {k: plain(x, d) for k, x in v.items()}
        if isinstance(v, Sequence):
            return tuple(plain(x, d) for x in v)
        if isinstance(v, nn.Module) or callable(v) or d > 2 or not hasattr(v, "__dict__"):
            return type(v).__name__
        return type(v).__name__, _settings(v, d + 1)

    skip = {"_parameters", "_buffers", "_modules", "training", "_non_persistent_buffers_set"}
    hooks = ("_forward", "_backward", "_state_dict", "_load_state")
    out = {
        k: plain(v, depth)
        for k, v in vars(obj).items()
        if k not in skip and not k.startswith(hooks)
    }
    if isinstance(out.get("loss_weight"), dict):  # Detectron2 reads a missing loss weight as 1
        weights = out["loss_weight"]
        out["loss_weight"] = {k: weights.get(k, 1.0) for k in ("loss_cls", "loss_box_reg")}
    return out


def _differences(a, b):
    """(module, attribute) pairs where two models differ, and modules only one has."""
    ma, mb = dict(a.named_modules()), dict(b.named_modules())
    diffs = [(n, "<missing>") for n in set(ma) ^ set(mb)]
    for n in set(ma) & set(mb):
        if type(ma[n]) is not type(mb[n]):
            diffs.append((n, f"type {type(ma[n]).__name__} vs {type(mb[n]).__name__}"))
        sa, sb = _settings(ma[n]), _settings(mb[n])
        diffs += [(n, k) for k in set(sa) | set(sb) if sa.get(k) != sb.get(k)]
    return sorted(diffs)


def _pair(lazy_name, yaml_name, opts=(), overrides=()):
    """The YAML model (with ``opts``) and the LazyConfig one (with ``overrides``)."""
    from detectron2.config import LazyConfig

    cfg = model_zoo.get_config(yaml_name)
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", *opts])
    lazy = LazyConfig.apply_overrides(model_zoo.get_config(lazy_name), list(overrides))
    return build_model(cfg).eval(), instantiate(lazy.model).eval()


@pytest.fixture(scope="module")
def r101_c4():
    """The YAML and LazyConfig R101-C4 models at the same test-time settings, yacs first."""
    torch.manual_seed(0)
    return _pair(
        "lazy/faster_rcnn_r101_c4.py",
        "coco_r101.yaml",
        ["MODEL.RPN.POST_NMS_TOPK_TEST", TEST_PROPOSALS, "MODEL.ROI_HEADS.SCORE_THRESH_TEST", 0.0],
        [
            f"model.proposal_generator.post_nms_topk=[2000,{TEST_PROPOSALS}]",
            "model.roi_heads.box_predictor.test_score_thresh=0.0",
        ],
    )


def test_lazy_r101_c4_has_the_yaml_models_keys_and_shapes(r101_c4):
    yacs, lazy = r101_c4
    a, b = yacs.state_dict(), lazy.state_dict()
    assert list(a) == list(b)
    assert {k: v.shape for k, v in a.items()} == {k: v.shape for k, v in b.items()}
    assert any(k.startswith("roi_heads.res5.2.conv3") for k in a)  # the paper's C4 head
    res4_blocks = sum(k.startswith("backbone.res4.") and k.endswith("conv1.weight") for k in a)
    assert res4_blocks == 23  # R101


def test_lazy_r101_c4_is_the_yaml_model_setting_for_setting(r101_c4):
    yacs, lazy = r101_c4
    assert _differences(yacs, lazy) == []
    # and the comparison sees a difference when there is one
    lazy.roi_heads.box_predictor.test_nms_thresh = 0.6
    assert _differences(yacs, lazy) == [("roi_heads.box_predictor", "test_nms_thresh")]
    lazy.roi_heads.box_predictor.test_nms_thresh = 0.5


def test_lazy_r50_fpn_is_the_yaml_model():
    torch.manual_seed(0)
    yacs, lazy = _pair("lazy/faster_rcnn_r50_fpn.py", "coco_r50_fpn.yaml")
    shapes = [{k: v.shape for k, v in m.state_dict().items()} for m in (yacs, lazy)]
    assert shapes[0] == shapes[1]
    assert _differences(yacs, lazy) == []


def test_lazy_and_yaml_r101_c4_give_the_same_detections_on_a_coco_image(r101_c4, shared_data):
    yacs, lazy = r101_c4
    # random weights that keep activations finite (each residual branch damped, as
    # trained nets are) and scores spread out (no ties for the ranking to break)
    weights = yacs.state_dict()
    for k, v in weights.items():
        if k.endswith("conv3.norm.weight"):
            v.mul_(0.1)
    g = torch.Generator().manual_seed(0)
    weights["roi_heads.box_predictor.cls_score.weight"].normal_(0, 0.5, generator=g)
    yacs.load_state_dict(weights)
    lazy.load_state_dict(weights)
    first = sorted((shared_data / "coco128" / "train2017").glob("*.jpg"))[0]
    image = read_image(str(first), format="RGB")
    h, w = image.shape[:2]
    resized = T.ResizeShortestEdge(256, 448).get_transform(image).apply_image(image)
    chw = torch.as_tensor(np.ascontiguousarray(resized.transpose(2, 0, 1)))
    inputs = [{"image": chw, "height": h, "width": w}]
    with torch.no_grad():
        a, b = yacs(inputs)[0]["instances"], lazy(inputs)[0]["instances"]
    assert len(a) > 10 and len(a) == len(b) and a.scores.unique().numel() == len(a)
    assert torch.equal(a.pred_classes, b.pred_classes)
    torch.testing.assert_close(a.pred_boxes.tensor, b.pred_boxes.tensor, rtol=0, atol=1e-4)
    torch.testing.assert_close(a.scores, b.scores, rtol=0, atol=1e-6)
    assert a.pred_boxes.tensor[:, 2].max() > 0.5 * w  # in original image coordinates


def test_resdet_trunk_drops_into_a_detectron2_zoo_lazyconfig():
    from detectron2 import model_zoo as d2_zoo

    cfg = d2_zoo.get_config("new_baselines/mask_rcnn_R_50_FPN_100ep_LSJ.py")
    cfg.model.backbone.bottom_up = resdet_bottom_up(50, norm="SyncBN", freeze_at=0)  # the one line
    torch.manual_seed(0)
    model = instantiate(cfg.model).eval()
    trunk = model.backbone.bottom_up
    assert isinstance(trunk.res3[0], BottleneckBlock) and trunk.arch["depth"] == 50
    # weights converted with --layout fpn carry exactly these keys (the resdet trunk's)
    ours = build_resnet(
        50, num_classes=None, norm="SyncBN", out_features=["res2", "res3", "res4", "res5"]
    )
    prefix = "backbone.bottom_up."
    trunk_keys = {k[len(prefix) :] for k in model.state_dict() if k.startswith(prefix)}
    assert trunk_keys == set(ours.state_dict())
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (3, 160, 224), dtype=torch.uint8, generator=g)
    with torch.no_grad():
        features = model.backbone(model.preprocess_image([{"image": x}]).tensor)
        out = model([{"image": x, "height": 160, "width": 224}])[0]["instances"]
    assert [f.shape[1] for f in features.values()] == [256] * 5
    assert out.image_size == (160, 224) and out.has("pred_masks")


def _coco_subset(shared_data, path, n):
    full = json.loads((shared_data / "coco128/annotations/instances_train2017.json").read_text())
    ids = {im["id"] for im in full["images"][:n]}
    annotations = [a for a in full["annotations"] if a["image_id"] in ids]
    path.write_text(json.dumps(dict(full, images=full["images"][:n], annotations=annotations)))
    return path


def _tiny_fpn_overrides(train_name, test_name, max_iter):
    """R18-FPN with narrow heads at 128 px, batch 2, no workers: seconds per iteration."""
    return [
        "model.backbone.bottom_up.depth=18",
        "model.backbone.out_channels=64",
        "model.proposal_generator.head.in_channels=64",
        "model.proposal_generator.post_nms_topk=[200,50]",
        "model.roi_heads.box_head.input_shape.channels=64",
        "model.roi_heads.box_head.fc_dims=[128,128]",
        "model.roi_heads.box_predictor.input_shape.channels=128",
        "model.roi_heads.batch_size_per_image=64",
        "model.roi_heads.box_predictor.test_score_thresh=0.0",
        f"dataloader.train.dataset.names={train_name}",
        f"dataloader.test.dataset.names={test_name}",
        "dataloader.train.total_batch_size=2",
        "dataloader.train.num_workers=0",
        "dataloader.test.num_workers=0",
        "dataloader.train.mapper.augmentations.0.short_edge_length=[128]",
        "dataloader.train.mapper.augmentations.0.max_size=224",
        "dataloader.test.mapper.augmentations.0.short_edge_length=128",
        "dataloader.test.mapper.augmentations.0.max_size=224",
        f"train.max_iter={max_iter}",
        "train.checkpointer.period=1000",
        "train.log_period=1",
        "train.eval_period=0",
        "optimizer.lr=0.005",
    ]


def test_train_lazy_trains_checkpoints_resumes_and_evaluates(shared_data, tmp_path):
    from resdet.data import register_coco_json

    images = shared_data / "coco128" / "train2017"
    full = shared_data / "coco128/annotations/instances_train2017.json"
    register_coco_json("lazy_test_train", full, images)
    val4 = _coco_subset(shared_data, tmp_path / "val4.json", 4)
    register_coco_json("lazy_test_val4", val4, images)
    out = tmp_path / "run"
    overrides = _tiny_fpn_overrides("lazy_test_train", "lazy_test_val4", 2)
    results = train_detector("lazy/faster_rcnn_r50_fpn.py", overrides=overrides, output_dir=out)

    final = torch.load(out / "model_final.pth", weights_only=True)
    assert final["iteration"] == 1 and (out / "last_checkpoint").read_text() == "model_final.pth"
    assert final["model"]["backbone.bottom_up.res2.0.conv1.weight"].shape == (64, 64, 3, 3)  # R18
    log = [json.loads(line) for line in (out / "train_log.json").read_text().splitlines()]
    assert [r["iteration"] for r in log if "total_loss" in r] == [0, 1]
    assert all(np.isfinite(r["total_loss"]) for r in log if "total_loss" in r)
    assert set(results["bbox"]) >= {"AP", "AP50"}  # the final evaluation, returned and written
    assert json.loads((out / "metrics.json").read_text())["bbox"].keys() == results["bbox"].keys()
    assert (out / "inference" / "predictions.json").is_file() and (out / "curves.png").is_file()

    overrides[overrides.index("train.max_iter=2")] = "train.max_iter=3"
    train_detector("lazy/faster_rcnn_r50_fpn.py", overrides=overrides, output_dir=out, resume=True)
    log = [json.loads(line) for line in (out / "train_log.json").read_text().splitlines()]
    assert [r["iteration"] for r in log if "total_loss" in r] == [0, 1, 2]  # one more, not three
    resumed = torch.load(out / "model_final.pth", weights_only=True)
    assert resumed["iteration"] == 2
    assert not torch.equal(
        resumed["model"]["roi_heads.box_predictor.cls_score.weight"],
        final["model"]["roi_heads.box_predictor.cls_score.weight"],
    )

    # --eval-only of the final weights (BN folded) finds what the run's last evaluation found
    ev = tmp_path / "eval"
    results = evaluate_detector(
        "lazy/faster_rcnn_r50_fpn.py", out / "model_final.pth", overrides=overrides, output_dir=ev
    )
    assert json.loads((ev / "metrics.json").read_text())["bbox"].keys() == results["bbox"].keys()
    assert not (ev / "model_final.pth").exists()

    def best(run):
        preds = json.loads((run / "inference" / "predictions.json").read_text())
        return {
            i: max((p for p in preds if p["image_id"] == i), key=lambda p: p["score"])
            for i in {p["image_id"] for p in preds}
        }

    trained, evaluated = best(out), best(ev)
    assert len(trained) == 4 and trained.keys() == evaluated.keys()
    for i, p in trained.items():
        assert abs(p["score"] - evaluated[i]["score"]) < 1e-3, (p, evaluated[i])
        assert np.allclose(p["bbox"], evaluated[i]["bbox"], atol=0.1), (p, evaluated[i])


def test_lazy_run_bad_input_is_one_line(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(ConfigError, match=r"'train.max_iter' is not KEY=VALUE") as e:
        train_detector("lazy/faster_rcnn_r50_c4.py", overrides=["train.max_iter"], output_dir=out)
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match=r"close names: lazy/faster_rcnn_r50_c4.py"):
        train_detector("lazy/faster_rcnn_r50_c5.py", output_dir=out)
    with pytest.raises(ConfigError, match="unknown config key train.max_iters"):
        train_detector(
            "lazy/faster_rcnn_r50_c4.py", overrides=["train.max_iters=2"], output_dir=out
        )
    assert not out.exists()  # nothing written before the config is known good


def test_converted_weights_set_what_they_need(tmp_path):
    """torchvision R18 weights into resdet's R50-FPN config and into a Detectron2 zoo
    config (BGR, Caffe2 means): the depth, input format and statistics the converted
    weights carry win, and each change is said."""
    import torchvision
    from detectron2 import model_zoo as d2_zoo

    from resdet.convert import convert

    torch.save(torchvision.models.resnet18(weights=None).state_dict(), tmp_path / "tv.pth")
    weights = tmp_path / "r18_fpn.pth"
    convert(tmp_path / "tv.pth", weights, layout="fpn")
    tv_mean, tv_std = [123.675, 116.28, 103.53], [58.395, 57.12, 57.375]

    assert load("lazy/faster_rcnn_r50_fpn.py").notes == []  # no weights, nothing to merge
    setup = load("lazy/faster_rcnn_r50_fpn.py", weights)
    assert [msg for _, msg in setup.notes] == [
        f"model.backbone.bottom_up.depth: 50 -> 18 (what {weights} need)"
    ]
    model = instantiate(setup.cfg.model)
    assert model.backbone.bottom_up.res5[0].conv1.weight.shape == (512, 256, 3, 3)

    zoo = d2_zoo.get_config("new_baselines/mask_rcnn_R_50_FPN_100ep_LSJ.py")
    zoo.model.backbone.bottom_up = resdet_bottom_up(50, norm="SyncBN", freeze_at=0)
    setup = load(zoo, weights, device="cpu")
    changed = {msg.split(":")[0] for _, msg in setup.notes if " -> " in msg}
    assert changed == {
        "model.input_format",
        "dataloader.train.mapper.image_format",
        "model.pixel_mean",
        "model.pixel_std",
        "model.backbone.bottom_up.depth",
    }
    zoo = setup.cfg
    assert (zoo.model.input_format, zoo.dataloader.test.mapper.image_format) == ("RGB", "RGB")
    assert list(zoo.model.pixel_mean) == tv_mean and list(zoo.model.pixel_std) == tv_std
