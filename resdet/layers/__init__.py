"""resdet layers: the ROI heads' CPU paths, a multi-threaded ROIAlign equal to
torchvision's and a oneDNN box-head linear."""

from .linear import PackedLinear, use_fast_box_head  # noqa: F401
from .roi_align import FastROIPooler, ROIAlign, roi_align, use_fast_roi_align  # noqa: F401


def use_fast_roi_heads(model):
    """:func:`use_fast_roi_align` and :func:`use_fast_box_head` on ``model``: what
    ``resdet.modeling.prepare_for_inference`` does to the ROI heads. Returns the model."""
    return use_fast_box_head(use_fast_roi_align(model))
