"""Folding frozen BN into convs changes speed, not results."""

import copy

import pytest
import torch

from resdet.model_zoo import get_config_file
from resdet.modeling import build_resnet, fold_frozen_batchnorm, prepare_for_inference


def _randomize_norms(model):
    g = torch.Generator().manual_seed(3)
    for name, t in model.state_dict().items():
        if ".norm." in name:
            t.copy_(
                torch.rand(t.shape, generator=g) + 0.5
                if ("var" in name or name.endswith("weight"))
                else torch.randn(t.shape, generator=g) * 0.2
            )


@pytest.mark.parametrize("depth,norm", [(50, "FrozenBN"), (18, "BN")])
def test_folded_model_matches_unfolded(depth, norm):
    model = build_resnet(depth, num_classes=None, norm=norm, out_features=["res2", "res5"]).eval()
    _randomize_norms(model)
    folded = fold_frozen_batchnorm(copy.deepcopy(model))
    assert not any(
        getattr(m, "norm", None) is not None for m in folded.modules() if hasattr(m, "norm")
    )
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        a, b = model(x), folded(x.contiguous(memory_format=torch.channels_last))
    for k in a:
        assert torch.allclose(a[k], b[k], rtol=1e-4, atol=1e-4 * a[k].abs().max().item()), k


def test_trainable_bn_in_train_mode_is_not_folded():
    model = build_resnet(18, num_classes=None, norm="BN").train()
    fold_frozen_batchnorm(model)
    assert model.res2[0].conv1.norm is not None


def test_compiled_inference_matches_eager():
    """The compiled path (Inductor freezing, fused conv+add+ReLU) gives the eager features."""
    model = build_resnet(
        18, num_classes=None, norm="FrozenBN", out_features=["res2", "res5"]
    ).eval()
    _randomize_norms(model)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        want = model(x)
        fast = prepare_for_inference(copy.deepcopy(model), compile=True)
        got = fast(x.contiguous(memory_format=torch.channels_last))
    assert fast._compiled_call_impl is not None  # compiled in place: parameter names unchanged
    assert not any("_orig_mod" in k for k in fast.state_dict())
    for k in want:
        assert torch.allclose(want[k], got[k], rtol=1e-4, atol=1e-4 * want[k].abs().max().item()), k


def test_prepared_detector_gives_the_eager_detections():
    """A Faster R-CNN R18-FPN: folded + channels_last + compiled backbone and RPN head
    (what --eval-only with RESDET.EVAL.COMPILE runs) detects the same boxes and scores."""
    from detectron2.modeling import build_model

    import resdet

    cfg = resdet.get_resdet_cfg()
    cfg.merge_from_file(str(get_config_file("Base-RCNN-FPN.yaml")))
    cfg.merge_from_list(
        [
            "MODEL.RESNETS.DEPTH",
            18,
            "MODEL.RESNETS.RES2_OUT_CHANNELS",
            64,
            "MODEL.FPN.OUT_CHANNELS",
            32,
            "MODEL.ROI_HEADS.SCORE_THRESH_TEST",
            0.0,
            "MODEL.DEVICE",
            "cpu",
        ]
    )
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    _randomize_norms(model)
    inputs = [
        {
            "image": torch.randint(0, 255, (3, 96, 128), dtype=torch.uint8),
            "height": 96,
            "width": 128,
        }
    ]
    with torch.no_grad():
        want = model(inputs)[0]["instances"]
        fast = prepare_for_inference(copy.deepcopy(model), compile=True)
        got = fast(inputs)[0]["instances"]
    assert fast.backbone._compiled_call_impl is not None
    assert fast.proposal_generator.rpn_head._compiled_call_impl is not None
    assert len(want) > 10 and len(got) == len(want)
    assert torch.allclose(got.scores, want.scores, atol=1e-4)
    assert torch.allclose(got.pred_boxes.tensor, want.pred_boxes.tensor, atol=1e-2)
