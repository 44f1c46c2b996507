"""Weights that do not fit the detector's trunk stop the load (never train from random)."""

import pytest
import torch
from conftest import REPO
from detectron2.modeling import build_model
from test_train_det import _converted, _pretrained

from resdet.checkpoint import ResdetCheckpointer, load_weights
from resdet.config import get_resdet_cfg
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


def test_inference_needs_every_parameter_from_the_file(weights):
    """--eval-only, evaluate_detector, the Predictor and export load under the inference
    policy: a backbone for fine-tuning would leave the heads random."""
    with pytest.raises(CheckpointError, match=r"model parameters are not in the file.*random"):
        load_weights(_model("coco_r50_fpn.yaml", 18), weights["fpn"], "inference")
    with pytest.raises(CheckpointError, match="not converted for Detectron2"):
        load_weights(_model("coco_r50_fpn.yaml", 18), weights["classifier"], "inference")


def test_inference_refuses_a_detector_of_other_classes(tmp_path):
    """Detector weights for 3 classes in an 80-class model: a shape error naming the key."""
    cfg = get_resdet_cfg()
    cfg.merge_from_file(str(REPO / "configs" / "coco_r50_fpn.yaml"))
    cfg.merge_from_list(["MODEL.RESNETS.DEPTH", "18", "MODEL.RESNETS.RES2_OUT_CHANNELS", "64"])
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.ROI_HEADS.NUM_CLASSES", "3"])
    path = tmp_path / "three.pth"
    torch.save({"model": build_model(cfg).state_dict()}, path)
    with pytest.raises(CheckpointError, match=r"roi_heads.box_predictor.* has shape"):
        load_weights(_model("coco_r50_fpn.yaml", 18), path, "inference")
    load_weights(_model("coco_r50_fpn.yaml", 18), path, "fine-tune")  # new heads are fine


def test_class_names_must_match_exactly(tmp_path):
    from resdet.weights import check_class_names

    meta = {"class_names": ["RBC ", "WBC", "Platelets"]}
    check_class_names("w.pth", meta, ["RBC", "WBC", "Platelets"])  # stripped
    with pytest.raises(CheckpointError, match=r"class 1: 'WBC' vs 'wbc'"):
        check_class_names("w.pth", meta, ["RBC", "wbc", "Platelets"])


@pytest.mark.parametrize(
    "content,fragment",
    [
        ([1, 2, 3], "holds a list, not a dict of named weights"),
        (torch.zeros(3), "holds a Tensor, not a dict of named weights"),
        ({"epoch": 3, "w": torch.zeros(2)}, "entry 'epoch' is a int, not a tensor"),
    ],
)
def test_checkpoints_that_hold_no_named_weights(tmp_path, content, fragment):
    path = tmp_path / "odd.pth"
    torch.save(content, path)
    with pytest.raises(CheckpointError, match=fragment):
        load_weights(_model("coco_r50_fpn.yaml", 18), path, "fine-tune")


def test_torchvision_reference_script_checkpoints_load(tmp_path):
    """torchvision's references/classification saves {"model", "optimizer", "epoch",
    "args": Namespace}: the Namespace is plain data, not code, and is read safely."""
    from argparse import Namespace

    from resdet.io import safe_torch_load

    path = tmp_path / "checkpoint.pth"
    torch.save(
        {"model": {"fc.weight": torch.zeros(2, 2)}, "epoch": 3, "args": Namespace(lr=0.1)}, path
    )
    data = safe_torch_load(path)
    assert data["epoch"] == 3 and data["args"].lr == 0.1


@pytest.mark.parametrize(
    "content,fragment",
    [
        (b"my notes: lr 0.02\n", r"not a PyTorch checkpoint: the file is text \(it starts with"),
        (b"<!DOCTYPE html>\n<html></html>\n", "the file is an HTML page"),
        (b'_BASE_: "Base-RCNN-FPN.yaml"\n', "the file is text"),
        (b"\x00\x9f\x01binary", "neither a torch.save zip nor a pickle"),
    ],
)
def test_a_file_that_is_no_checkpoint_is_called_so(tmp_path, content, fragment):
    """torch.load reports any non-checkpoint as a pickle it refused, with advice to load it
    with weights_only=False: "holds objects other than tensors" (and that advice) before."""
    from resdet.io import safe_torch_load

    path = tmp_path / "w.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=fragment) as e:
        safe_torch_load(path)
    assert "weights_only" not in str(e.value) and "\n" not in str(e.value)


def test_a_refused_checkpoint_names_what_it_would_build(tmp_path):
    """Instead of torch's first line (advice to load the file unsafely)."""
    import fractions

    from resdet.io import safe_torch_load

    path = tmp_path / "odd.pth"
    torch.save({"model": {}, "x": fractions.Fraction(1, 3)}, path)
    with pytest.raises(CheckpointError, match=r"other than tensors.*names fractions.Fraction"):
        safe_torch_load(path)
