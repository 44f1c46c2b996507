"""Weights that do not fit the detector's trunk stop the load (never train from random)."""

import pytest
import torch
from conftest import REPO
from detectron2.modeling import build_model
from test_train_det import _converted, _pretrained

from resdet.config import get_resdet_cfg
from resdet.detection import ResdetCheckpointer
from resdet.errors import CheckpointError


def _model(config, depth):
    cfg = get_resdet_cfg()
    cfg.merge_from_file(str(REPO / "configs" / config))
    cfg.merge_from_list(
        [
            "MODEL.RESNETS.DEPTH",
            str(depth),
            "MODEL.DEVICE",
            "cpu",
            "MODEL.RESNETS.RES2_OUT_CHANNELS",
            "64" if depth < 50 else "256",
        ]
    )
    return build_model(cfg)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("strict")
    return {
        "fpn": _converted(tmp, layout="fpn"),
        "c4": _converted(tmp, layout="c4"),
        "classifier": _pretrained(tmp / "classifier.pth"),
    }


@pytest.mark.parametrize("layout,config", [("fpn", "coco_r50_fpn.yaml"), ("c4", "coco_r50.yaml")])
def test_fitting_weights_load_every_trunk_parameter(weights, layout, config):
    model = _model(config, 18)
    ResdetCheckpointer(model).load(str(weights[layout]))
    src = torch.load(weights[layout], weights_only=True)["model"]
    state = model.state_dict()
    trunk = [
        k
        for k in state
        if k.startswith(("backbone.bottom_up.", "roi_heads.res5."))
        or (layout == "c4" and k.startswith("backbone."))
    ]
    assert trunk and all(torch.equal(state[k], src[k]) for k in trunk)


def test_r18_weights_in_an_r50_model_are_an_error(weights):
    with pytest.raises(
        CheckpointError,
        match=r"does not fit the model: \d+ trunk parameters have other "
        r"shapes \(backbone.bottom_up.res2.0.conv1.weight",
    ):
        ResdetCheckpointer(_model("coco_r50_fpn.yaml", 50)).load(str(weights["fpn"]))


def test_fpn_weights_in_a_c4_model_are_an_error(weights):
    with pytest.raises(CheckpointError, match="trunk parameters are missing"):
        ResdetCheckpointer(_model("coco_r50.yaml", 18)).load(str(weights["fpn"]))


def test_unconverted_classifier_names_the_convert_command(weights):
    path = str(weights["classifier"])
    with pytest.raises(
        CheckpointError,
        match=r"not converted for Detectron2.*tools/convert_weights.py "
        rf"{path} .*--layout fpn --verify",
    ):
        ResdetCheckpointer(_model("coco_r50_fpn.yaml", 18)).load(path)


def test_strict_false_loads_what_fits(weights):
    model = _model("coco_r50_fpn.yaml", 50)
    with torch.no_grad():
        model.backbone.bottom_up.stem.conv1.weight.zero_()
    ResdetCheckpointer(model, strict=False).load(
        str(weights["fpn"])
    )  # stem fits, the rest does not
    src = torch.load(weights["fpn"], weights_only=True)["model"]
    assert torch.equal(
        src["backbone.bottom_up.stem.conv1.weight"], model.backbone.bottom_up.stem.conv1.weight
    )
