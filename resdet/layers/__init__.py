"""resdet layers: a multi-threaded CPU ROIAlign equal to torchvision's."""
from .roi_align import FastROIPooler, ROIAlign, roi_align, use_fast_roi_align  # noqa: F401
