"""The ROI heads' two big CPU costs at inference, R50-FPN at 480x640 with 1000 proposals:
ROIAlign and the box head's fully connected layers.

ROIAlign: resdet's ``FastROIPooler`` (each level's samples gathered by one weighted
``embedding_bag``, on ``torch.get_num_threads()`` threads) against Detectron2's
``ROIPooler`` (torchvision's ``roi_align``, one level after the other, on one thread),
per thread count; and the issue's single-level setting (1000 p2-sized boxes on one
256x120x160 map) against ``torchvision.ops.roi_align`` itself. Outputs must agree to 1e-5
of the feature maps' scale (the largest difference is reported).

Box head: Detectron2's ``FastRCNNConvFCHead`` (FC 12544->1024->1024 on 1000 boxes) with
resdet's oneDNN ``PackedLinear`` layers against the same head as built (MKL sgemm).

The boxes are coco128's annotated boxes, each image's scaled to the 480x640 frame and
jittered as an RPN's proposals are; the feature maps are channels_last, as resdet's
prepared detector makes them. Every ratio comes with its range over the repeats (each
repeat runs both candidates back to back) and the CPU time per call.
"""

import copy
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torchvision
from detectron2.layers import ShapeSpec
from detectron2.modeling.poolers import ROIPooler, assign_boxes_to_levels
from detectron2.modeling.roi_heads.box_head import FastRCNNConvFCHead
from detectron2.structures import Boxes

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SHARED_DATA, emit, parser, result  # noqa: E402

from resdet.layers import FastROIPooler, roi_align, use_fast_box_head  # noqa: E402

H, W, PROPOSALS, CHANNELS = 480, 640, 1000, 256
SCALES = (1 / 4, 1 / 8, 1 / 16, 1 / 32)


def proposals(n=PROPOSALS, seed=0, max_side=None) -> torch.Tensor:
    """``n`` boxes in a 480x640 frame from coco128's annotations, jittered by up to 20% of
    their size, as an RPN's proposals around the objects are; ``max_side``: only boxes
    of at most that sqrt(area) (112: those FPN pools from p2)."""
    ann = SHARED_DATA / "coco128" / "annotations" / "instances_train2017.json"
    meta = json.loads(ann.read_text())
    size = {im["id"]: (im["height"], im["width"]) for im in meta["images"]}
    boxes = []
    for a in meta["annotations"]:
        h, w = size[a["image_id"]]
        s = min(H / h, W / w)
        x, y, bw, bh = a["bbox"]
        boxes.append([x * s, y * s, (x + bw) * s, (y + bh) * s])
    boxes = torch.tensor(boxes)
    if max_side:
        boxes = boxes[((boxes[:, 2:] - boxes[:, :2]).prod(1).sqrt() < max_side)]
    g = torch.Generator().manual_seed(seed)
    pick = boxes[torch.randint(len(boxes), (n,), generator=g)]
    wh = (pick[:, 2:] - pick[:, :2]).repeat(1, 2)
    pick = pick + wh * (torch.rand(pick.shape, generator=g) - 0.5) * 0.4
    return pick.clamp(min=0).minimum(torch.tensor([W, H, W, H]))


def paired(fns: dict, repeats: int, warmup: int = 1) -> dict:
    """Wall and process CPU seconds per call of each fn, measured in alternation:
    {name: [(wall, cpu) per repeat]}."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t, c = time.perf_counter(), time.process_time()
            fn()
            times[k].append((time.perf_counter() - t, time.process_time() - c))
    return times


def compare(name, times, ours, other, goal, other_name, **extra):
    """A results row from paired times, with the per-repeat ratio range and the CPU time
    per call (on a machine shared with other jobs the wall ratio of a threaded path
    drops while its CPU time does not; the CPU time shows the work it adds)."""
    ratios = [b[0] / a[0] for a, b in zip(times[ours], times[other])]
    med = {k: [statistics.median(x[i] for x in times[k]) for i in (0, 1)] for k in (ours, other)}
    return result(
        name,
        med[ours][0],
        med[other][0],
        goal,
        other_name,
        ratio_range=[round(min(ratios), 3), round(max(ratios), 3)],
        repeats=len(ratios),
        cpu_s_resdet=round(med[ours][1], 4),
        cpu_s_other=round(med[other][1], 4),
        **extra,
    )


def main(argv=None):
    ap = parser(__doc__)
    ap.add_argument(
        "--threads",
        type=int,
        nargs="+",
        default=[1, 2],
        help="thread counts to measure; the goal row is at 2",
    )
    args = ap.parse_args(argv)
    if args.device != "cpu":
        print(
            "bench_roi_align: the threaded ROIAlign is a CPU path; on",
            args.device,
            "it is torchvision's op, nothing to compare",
            file=sys.stderr,
        )
        emit([], args.output)
        return
    torch.manual_seed(0)
    feats = [
        torch.randn(1, CHANNELS, H // int(1 / s), W // int(1 / s)).contiguous(
            memory_format=torch.channels_last
        )
        for s in SCALES
    ]
    box_lists = [Boxes(proposals())]
    levels = assign_boxes_to_levels(box_lists, 2, 5, 224, 4)
    per_level = torch.bincount(levels, minlength=4).tolist()
    d2 = ROIPooler(7, SCALES, 0, "ROIAlignV2")
    fast = FastROIPooler.from_pooler(d2)
    rois = torch.cat([torch.zeros(PROPOSALS, 1), proposals(max_side=112)], 1)
    p2 = feats[0].contiguous()
    rows = []
    with torch.no_grad():
        for n in args.threads:
            torch.set_num_threads(n)
            diff = max(
                (fast(feats, box_lists) - d2(feats, box_lists)).abs().max().item(),
                (
                    roi_align(p2, rois, 7, 0.25, 0, True)
                    - torchvision.ops.roi_align(p2, rois, 7, 0.25, 0, True)
                )
                .abs()
                .max()
                .item(),
            )
            if diff > 1e-5 * max(f.abs().max().item() for f in feats):
                raise SystemExit(f"resdet's ROIAlign differs from torchvision's by {diff}")
            t = paired(
                {
                    "resdet": lambda: fast(feats, box_lists),
                    "d2": lambda: d2(feats, box_lists),
                    "resdet_p2": lambda: roi_align(p2, rois, 7, 0.25, 0, True),
                    "tv_p2": lambda: torchvision.ops.roi_align(p2, rois, 7, 0.25, 0, True),
                },
                args.repeats,
            )
            suffix = "" if n == 2 else f"_{n}threads"
            rows.append(
                compare(
                    "roi_align_vs_torchvision" + suffix,
                    t,
                    "resdet",
                    "d2",
                    1.7 if n == 2 else None,
                    "Detectron2 ROIPooler (torchvision roi_align per level)",
                    threads=n,
                    boxes=PROPOSALS,
                    boxes_per_level_p2_p5=per_level,
                    image=f"{H}x{W}",
                    sampling_ratio=0,
                    max_abs_diff=float(f"{diff:.2g}"),
                )
            )
            rows.append(
                compare(
                    "roi_align_single_level_vs_torchvision" + suffix,
                    t,
                    "resdet_p2",
                    "tv_p2",
                    None,
                    "torchvision.ops.roi_align",
                    threads=n,
                    boxes=PROPOSALS,
                    level=f"{CHANNELS}x{H // 4}x{W // 4}",
                    box_sides="< 112 px (p2's)",
                    note="reference: the issue's setting",
                )
            )
        torch.set_num_threads(max(args.threads))
        head = FastRCNNConvFCHead(
            ShapeSpec(channels=CHANNELS, height=7, width=7), conv_dims=[], fc_dims=[1024, 1024]
        ).eval()
        packed = use_fast_box_head(copy.deepcopy(head))
        x = fast(feats, box_lists)
        diff = (packed(x) - head(x)).abs().max().item()
        t = paired({"packed": lambda: packed(x), "default": lambda: head(x)}, args.repeats)
        rows.append(
            compare(
                "box_head_fc_vs_default",
                t,
                "packed",
                "default",
                None,
                "Detectron2 FastRCNNConvFCHead as built (nn.Linear, MKL sgemm)",
                threads=max(args.threads),
                boxes=PROPOSALS,
                fc="12544-1024-1024",
                max_abs_diff=float(f"{diff:.2g}"),
                note="reference: resdet.layers.PackedLinear (oneDNN, packed weight)",
            )
        )
    emit(rows, args.output)


if __name__ == "__main__":
    main()
