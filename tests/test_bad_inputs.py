"""The bad-input corpus (issue 11): what a hostile but realistic user hands the six tools.

One entry per case: ``C(id, tool, argv, *fragments)``. ``argv`` is split like a shell line,
then ``{name}`` is replaced by a corpus fixture path (tests/bad_inputs_fixtures.py: ``Corpus``
attributes and the ``BUILD`` table), ``{tmp}`` (this case's own folder) or ``{out}`` (the
output path inside it, not created). Every case must end as the design says bad input ends:

- exit status 2 (resdet's errors and argparse's usage errors alike);
- the last non-empty line of stderr is ``error: ...`` (or argparse's ``prog: error: ...``)
  and contains every fragment (a string, or a compiled regex): the file, key or value a
  user has to fix; never resdet.cli's ``unexpected X ... (a resdet bug ...)`` line;
- no "Traceback" on stdout or stderr;
- nothing half-written: no *.tmp left anywhere in the corpus, no 0-byte file in the case's
  folder, no file in ``{out}`` but a log (``started=True``: the run may keep the outputs
  it finished before the failure, never a 0-byte one), the user's files untouched, and
  the malicious checkpoints' marker never created.

Tools run in-process through ``main(argv)``; ``CLI_IDS`` and ``CLI_ONLY`` also run
``python tools/<tool>.py`` to check the real exit status: the hang (a time limit), a full
disk (RLIMIT_FSIZE: a write fails part-way, as on a full disk, and even root cannot
write past it) and $DETECTRON2_DATASETS (read when resdet is imported).
Unwritable outputs: /sys/kernel (exists, not writable) and /proc/... (cannot be
created) refuse even root, which these tests run as. The silent-result tests at the end
assert values (an empty prediction list is AP 0, not NaN).

Grow it: add a line where a new bad input was found.
"""

import importlib.util
import inspect
import json
import os
import re
import runpy
import shlex
import signal
import subprocess
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
import yaml
from bad_inputs_fixtures import Corpus, quiet_logging
from conftest import REPO

CW, EV, TD, PT, PP, LR = (
    "convert_weights",
    "evaluate",
    "train_det",
    "pretrain_imagenet",
    "pipeline",
    "layer_responses",
)
# the good part of each tool's command line; a case adds or replaces one thing
CWA = "{tv18} {out}/r18.pth"
EVA = "--gt {coco} --output {out}/metrics.json --pred"
EVV = "--gt {voc} --output {out}/metrics.json --pred"
EVO = "--gt {coco} --pred {p_perfect} --output"
TDA = "--config {det} OUTPUT_DIR {out}"
TDE = "--eval-only --config {det} OUTPUT_DIR {out}"
PTA = "--config {pre} --output {out}"
PTE = "--eval-only --config {pre} --output {out}"
PPA = "--config {pipe} --output {out}"
LRA = "--data {cf}/test --output {out}"
LRO = "--checkpoints {c8} --data {cf}/test --output"
IN_PROCESS_LIMIT = 240  # seconds; a case running longer counts as a hang
ERROR_LINE = re.compile(r"^(error: |\S+: error: )")
EXC_LINE = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt|Iteration))(?::|$)")
LOG_FILE = re.compile(r"log.*\.txt(\.rank\d+)?|.*\.log")


@dataclass
class Case:
    id: str
    tool: str
    argv: str
    fragments: tuple
    started: bool = False  # fails after training began: finished outputs may stay
    env: dict = field(default_factory=dict)
    fsize: int = 0  # RLIMIT_FSIZE in bytes (command-line cases only)
    timeout: int = 600


def C(id, tool, argv, *fragments, **kw):
    return Case(id, tool, argv, fragments, **kw)


def R(pattern):
    return re.compile(pattern)


MAX_ITER = R(r"SOLVER\.MAX_ITER\b")  # the suggestion for SOLVER.MAX_ITERS
# a CUDA device this machine does not have (on a CPU machine: plain "cuda")
NO_CUDA = f"cuda:{torch.cuda.device_count()}" if torch.cuda.is_available() else "cuda"
LAZY = "--config lazy/faster_rcnn_r50_fpn.py"
IMG9 = "000000000009.jpg"  # the first image of the COCO subset
XML7 = "BloodImage_00007.xml"  # the first annotation of the VOC folder

CASES = [
    # ---- convert_weights: bad weights files -----------------------------------------------
    C("cw-text-renamed-pth", CW, "{bad}/notes.pth {out}/r18.pth", "notes.pth"),
    C("cw-html-page-as-pth", CW, "{bad}/page.pth {out}/r18.pth", "page.pth"),
    C("cw-json-as-weights", CW, "{bad}/weights.json {out}/r18.pth", "weights.json"),
    C("cw-empty-pth", CW, "{bad}/empty.pth {out}/r18.pth", "empty.pth"),
    C("cw-truncated-pth", CW, "{bad}/truncated.pth {out}/r18.pth", "truncated.pth"),
    C("cw-malicious-pth", CW, "{bad}/evil.pth {out}/r18.pth", "evil.pth"),
    C("cw-malicious-pkl", CW, "{bad}/evil.pkl {out}/r18.pth", "evil.pkl"),
    C("cw-text-renamed-pkl", CW, "{bad}/notes.pkl {out}/r18.pth", "notes.pkl"),
    C("cw-empty-pkl", CW, "{bad}/empty.pkl {out}/r18.pth", "empty.pkl"),
    C("cw-truncated-pkl", CW, "{bad}/truncated.pkl {out}/r18.pth", "truncated.pkl"),
    C("cw-pickle-of-a-list", CW, "{bad}/list.pkl {out}/r18.pth", "list.pkl"),
    C("cw-unknown-format", CW, "{bad}/foo_keys.pth {out}/r18.pth", "foo_keys.pth"),
    C("cw-missing-source", CW, "{tmp}/nope.pth {out}/r18.pth", "nope.pth"),
    C("cw-source-is-a-folder", CW, "{bad}/adir {out}/r18.pth", "adir"),
    C("cw-non-finite-weights", CW, "{bad}/nan_resnet18.pth {out}/r18.pth", "nan_resnet18.pth"),
    C(
        "cw-training-ckpt-without-config",
        CW,
        "{run_noconfig}/model_0000000.pth {out}/r18.pth",
        "--config",
    ),
    C("cw-list-pth", CW, "{bad}/list.pth {out}/r18.pth", "list.pth", "list"),
    C("cw-tensor-pth", CW, "{bad}/tensor.pth {out}/r18.pth", "tensor.pth", "Tensor"),
    C("cw-no-tensors-pth", CW, "{bad}/no_tensors.pth {out}/r18.pth", "no_tensors.pth"),
    C("cw-config-as-source", CW, "{det} {out}/r18.pth", "det.yaml", "not a PyTorch checkpoint"),
    C("cw-depth-mismatch", CW, CWA + " --depth 50", "resnet18.pth"),
    C("cw-depth-unsupported", CW, CWA + " --depth 77", "77"),
    C("cw-from-wrong-kind", CW, CWA + " --from resdet", "resnet18.pth"),
    C("cw-verify-image-missing", CW, CWA + " --verify {tmp}/cat.jpg", "cat.jpg"),
    C("cw-verify-image-is-text", CW, CWA + " --verify {bad}/plain.txt", "plain.txt"),
    C("cw-verify-image-0-bytes", CW, CWA + " --verify {coco_zero}/images/" + IMG9, IMG9),
    # ---- convert_weights: arguments and output paths --------------------------------------
    C("cw-depth-not-a-number", CW, CWA + " --depth fifty", "fifty"),
    C("cw-layout-unknown", CW, CWA + " --layout c5", "c5"),
    C("cw-from-unknown", CW, CWA + " --from caffe", "caffe"),
    C("cw-no-arguments", CW, "", "src"),
    C("cw-missing-out", CW, "{tv18}", "out"),
    C("cw-out-not-pth", CW, "{tv18} {out}/r18.pkl", "r18.pkl"),
    C("cw-out-under-a-file", CW, "{tv18} {bad}/plain.txt/r18.pth", "plain.txt"),
    C("cw-out-is-a-folder", CW, "{tv18} {bad}/adir.pth", "adir.pth"),
    C("cw-out-unwritable", CW, "{tv18} /sys/kernel/r18.pth", "/sys/kernel"),
    C("cw-out-cannot-be-created", CW, "{tv18} /proc/resdet/r18.pth", "/proc/resdet"),
    C("cw-out-is-the-source", CW, "{cls_copy} {cls_copy}", "model_final.pth"),
    # ---- evaluate: bad prediction files ---------------------------------------------------
    C("ev-pred-missing", EV, EVA + " {tmp}/nope.json", "nope.json"),
    C("ev-pred-0-bytes", EV, EVA + " {p_empty_file}", "empty_file.json"),
    C("ev-pred-not-json", EV, EVA + " {p_csv}", "csv.json"),
    C("ev-pred-truncated-json", EV, EVA + " {p_truncated}", "truncated.json"),
    C("ev-pred-is-ground-truth", EV, EVA + " {coco}", "tiny.json"),
    C("ev-pred-wrapped-in-object", EV, EVA + " {p_wrapped}", "wrapped.json"),
    C("ev-pred-list-of-lists", EV, EVA + " {p_lists}", "lists.json"),
    C("ev-pred-negative-width", EV, EVA + " {p_neg_width}", "neg_width.json"),
    C("ev-pred-negative-height", EV, EVA + " {p_neg_height}", "neg_height.json"),
    C("ev-pred-zero-width", EV, EVA + " {p_zero_width}", "zero_width.json"),
    C("ev-pred-nan-score", EV, EVA + " {p_nan_score}", "nan_score.json"),
    C("ev-pred-infinite-box", EV, EVA + " {p_inf_box}", "inf_box.json"),
    C("ev-pred-score-as-string", EV, EVA + " {p_str_score}", "str_score.json"),
    C("ev-pred-no-score", EV, EVA + " {p_no_score}", "no_score.json"),
    C("ev-pred-bbox-of-3", EV, EVA + " {p_bbox3}", "bbox3.json"),
    C("ev-pred-unknown-image-id", EV, EVA + " {p_unknown_image}", "999999"),
    C("ev-pred-file-name-as-image-id", EV, EVA + " {p_file_name_id}", IMG9),
    C("ev-pred-unknown-category-id", EV, EVA + " {p_unknown_cat}", "999"),
    C("ev-voc-json-unknown-category", EV, EVV + " {p_voc_cat4}", "voc_cat4.json"),
    C("ev-pred-boxes-as-corners", EV, EVA + " {p_xyxy}", "xyxy.json", "[x0, y0, x1 - x0, y1 - y0]"),
    C("ev-pred-boxes-normalized", EV, EVA + " {p_normalized}", "normalized.json", "[0, 1]"),
    C("ev-pred-dict-unknown-class", EV, EVA + " {p_dict_unknown_class}", "unknown_class", "persn"),
    C("ev-pred-dict-unknown-file", EV, EVA + " {p_dict_unknown_file}", "unknown_file", "holiday"),
    C("ev-pred-class-names-differ", EV, EVA + " {p_sidecar}", "sidecar.categories.json"),
    C("ev-devkit-for-coco-gt", EV, EVA + " {dk_perfect}", "dk_perfect"),
    C("ev-devkit-class-typo", EV, EVV + " {dk_typo}", "RBCs"),
    C("ev-devkit-bad-file-name", EV, EVV + " {dk_badname}", "results.txt"),
    C("ev-devkit-short-line", EV, EVV + " {dk_short}", "dk_short"),
    C("ev-devkit-negative-width", EV, EVV + " {dk_negw}", "dk_negw"),
    C("ev-devkit-nan-score", EV, EVV + " {dk_nan}", "dk_nan"),
    C("ev-devkit-unknown-image", EV, EVV + " {dk_unknown_img}", "BloodImage_99999"),
    # ---- evaluate: bad ground truth, arguments, output paths -------------------------------
    C("ev-gt-missing", EV, "--gt {tmp}/nope.json --pred {p_perfect}", "nope.json"),
    C("ev-gt-not-json", EV, "--gt {bad}/plain.txt --pred {p_perfect}", "plain.txt"),
    C("ev-gt-and-pred-swapped", EV, "--gt {p_perfect} --pred {coco}", "perfect.json"),
    C("ev-gt-empty-object", EV, "--gt {gt_empty} --pred {p_perfect}", "gt_empty.json"),
    C(
        "ev-gt-image-id-string",
        EV,
        "--gt {gt_str_image_id} --pred {p_perfect}",
        "gt_str_image_id.json",
        "images[0]",
    ),
    C(
        "ev-gt-category-id-string",
        EV,
        "--gt {gt_str_category_id} --pred {p_perfect}",
        "gt_str_category_id.json",
        "categories[0]",
    ),
    C("ev-gt-folder-not-voc", EV, "--gt {bad}/adir --pred {p_perfect}", "adir"),
    C(
        "ev-gt-standard-dataset-absent",
        EV,
        "--gt coco_2017_val --pred {p_perfect}",
        "instances_val2017.json",
        "DETECTRON2_DATASETS",
    ),
    C("ev-gt-voc-malformed-xml", EV, "--gt {voc_badxml} --pred {dk_perfect}", XML7),
    C("ev-gt-voc-split-missing", EV, "--gt {voc} --split test --pred {dk_perfect}", "test.txt"),
    C("ev-metric-unknown", EV, EVA + " {p_perfect} --metric map", "map"),
    # a split names ImageSets/Main/<split>.txt: on a COCO file it was silently ignored
    C("ev-split-on-coco-gt", EV, EVA + " {p_perfect} --split train", "train", "VOC"),
    # --output naming the predictions or the ground truth: the input was overwritten
    C(
        "ev-output-is-the-predictions",
        EV,
        "--gt {coco} --pred {p_self} --output {p_self}",
        "self.json",
    ),
    C(
        "ev-output-is-the-ground-truth",
        EV,
        "--gt {coco} --pred {p_perfect} --output {coco}",
        "tiny.json",
    ),
    C("ev-no-pred-argument", EV, "--gt {coco}", "--pred"),
    C("ev-no-arguments", EV, "", "--gt"),
    C("ev-output-under-a-file", EV, EVO + " {bad}/plain.txt/metrics.json", "plain.txt"),
    C("ev-output-is-a-folder", EV, EVO + " {bad}/adir", "adir"),
    C("ev-output-unwritable", EV, EVO + " /sys/kernel/metrics.json", "/sys/kernel"),
    C("ev-output-cannot-be-created", EV, EVO + " /proc/resdet/metrics.json", "/proc/resdet"),
    # ---- train_det: bad weights -----------------------------------------------------------
    C("td-weights-text-renamed-pth", TD, TDA + " MODEL.WEIGHTS {bad}/notes.pth", "notes.pth"),
    C("td-weights-html-page", TD, TDA + " MODEL.WEIGHTS {bad}/page.pth", "page.pth"),
    C("td-weights-empty", TD, TDA + " MODEL.WEIGHTS {bad}/empty.pth", "empty.pth"),
    C("td-weights-truncated", TD, TDA + " MODEL.WEIGHTS {bad}/truncated.pth", "truncated.pth"),
    C("td-weights-malicious-pth", TD, TDA + " MODEL.WEIGHTS {bad}/evil.pth", "evil.pth"),
    C("td-weights-malicious-pkl", TD, TDA + " MODEL.WEIGHTS {bad}/evil.pkl", "evil.pkl"),
    C("td-weights-text-renamed-pkl", TD, TDA + " MODEL.WEIGHTS {bad}/notes.pkl", "notes.pkl"),
    C("td-weights-missing", TD, TDA + " MODEL.WEIGHTS {tmp}/nope.pth", "nope.pth"),
    C("td-weights-is-a-folder", TD, TDA + " MODEL.WEIGHTS {bad}/adir", "adir"),
    C("td-weights-unknown-format", TD, TDA + " MODEL.WEIGHTS {bad}/foo_keys.pth", "foo_keys.pth"),
    C(
        "td-weights-unconverted-classifier",
        TD,
        TDA + " MODEL.WEIGHTS {cls}",
        "model_final.pth",
        "convert_weights",
    ),
    C(
        "td-weights-unconverted-torchvision",
        TD,
        TDA + " MODEL.WEIGHTS {tv18}",
        "resnet18.pth",
        "convert_weights",
    ),
    C(
        "td-weights-r18-in-r50-config",
        TD,
        "--config {det50} OUTPUT_DIR {out} MODEL.WEIGHTS {nofrag}",
        "r18_fpn.pth",
    ),
    C(
        "td-weights-fragment-broken",
        TD,
        TDA + " MODEL.WEIGHTS {bad}/frag_broken/r18_fpn.pth",
        "r18_fpn.yaml",
    ),
    C(
        "td-weights-fragment-unknown-key",
        TD,
        TDA + " MODEL.WEIGHTS {bad}/frag_unknown/r18_fpn.pth",
        "DEPTHS",
    ),
    C("td-weights-list-pth", TD, TDA + " MODEL.WEIGHTS {bad}/list.pth", "list.pth", "list"),
    C("td-weights-tensor-pth", TD, TDA + " MODEL.WEIGHTS {bad}/tensor.pth", "tensor.pth"),
    C("td-weights-no-tensors", TD, TDA + " MODEL.WEIGHTS {bad}/no_tensors.pth", "no_tensors.pth"),
    # torch.load calls any non-checkpoint a refused pickle and advises loading it unsafely
    C("td-weights-is-the-config", TD, TDA + " MODEL.WEIGHTS {det}", "det.yaml", "text"),
    C(
        "td-weights-data-parallel-classifier",
        TD,
        TDA + " MODEL.WEIGHTS {bad}/module_resnet18.pth",
        "module_resnet18.pth",
        "convert_weights",
    ),
    C(
        "td-weights-relative-missing",
        TD,
        TDA + " MODEL.WEIGHTS weights/nope.pth",
        "MODEL.WEIGHTS weights/nope.pth",
        "working directory",
    ),
    C("td-eval-only-weights-text", TD, TDE + " MODEL.WEIGHTS {bad}/notes.pth", "notes.pth"),
    C("td-eval-only-weights-missing", TD, TDE + " MODEL.WEIGHTS {tmp}/nope.pth", "nope.pth"),
    C(
        "td-eval-only-unconverted-classifier",
        TD,
        TDE + " MODEL.WEIGHTS {cls}",
        "model_final.pth",
        "convert_weights",
    ),
    # the inference policy: every parameter from the file, the classes of the test set
    C("td-eval-only-backbone-weights", TD, TDE + " MODEL.WEIGHTS {r18}", "r18_fpn.pth", "backbone"),
    C(
        "td-eval-only-other-classes",
        TD,
        TDE + " MODEL.WEIGHTS {run}/model_final.pth DATASETS.TRAIN () RESDET.DATA.TEST {voc}",
        "model_final.pth",
        "classes",
        "Platelets",
    ),
    C(
        "td-resume-onto-truncated-only-ckpt",
        TD,
        "--resume --config {det} OUTPUT_DIR {td_resume}",
        "model_0000001.pth",
    ),
    # ---- train_det: config problems -------------------------------------------------------
    C("td-config-missing", TD, "--config {tmp}/nope.yaml OUTPUT_DIR {out}", "nope.yaml"),
    C(
        "td-config-missing-base",
        TD,
        "--config {bad}/missing_base.yaml OUTPUT_DIR {out}",
        "Base-Not-There.yaml",
    ),
    C("td-config-broken-yaml", TD, "--config {bad}/broken.yaml OUTPUT_DIR {out}", "broken.yaml"),
    C("td-config-not-a-mapping", TD, "--config {bad}/list.yaml OUTPUT_DIR {out}", "list.yaml"),
    C("td-config-binary", TD, "--config {bad}/binary.yaml OUTPUT_DIR {out}", "binary.yaml"),
    C("td-config-is-a-folder", TD, "--config {bad}/adir OUTPUT_DIR {out}", "adir"),
    C("td-config-key-twice", TD, "--config {bad}/det_twice.yaml OUTPUT_DIR {out}", "MAX_ITER"),
    C("td-config-base-cycle", TD, "--config {bad}/cycle_a.yaml OUTPUT_DIR {out}", "cycle"),
    C(
        "td-config-empty-value",
        TD,
        "--config {bad}/det_null.yaml OUTPUT_DIR {out}",
        "SOLVER.MAX_ITER",
    ),
    C(
        "td-config-dotted-key",
        TD,
        "--config {bad}/det_dotted.yaml OUTPUT_DIR {out}",
        "SOLVER.BASE_LR",
        "nests",
    ),
    C(
        "td-lazy-unknown-key",
        TD,
        LAZY + " train.max_iters=2 train.output_dir={out}",
        "train.max_iters",
        R(r"train\.max_iter\b"),
    ),
    C("td-unknown-key-override", TD, TDA + " SOLVER.MAX_ITERS 10", "SOLVER.MAX_ITERS", MAX_ITER),
    C(
        "td-unknown-key-in-yaml",
        TD,
        "--config {bad}/det_max_iters.yaml OUTPUT_DIR {out}",
        "SOLVER.MAX_ITERS",
        MAX_ITER,
    ),
    C(
        "td-unknown-key-lowercase",
        TD,
        TDA + " solver.base_lr 0.01",
        "solver.base_lr",
        R(r"SOLVER\.BASE_LR"),
    ),
    C("td-unknown-top-level-key", TD, TDA + " SOLVERS.MAX_ITER 2", "SOLVERS.MAX_ITER"),
    C("td-type-float-for-int", TD, TDA + " SOLVER.MAX_ITER 2.5", "SOLVER.MAX_ITER"),
    C("td-type-word-for-float", TD, TDA + " SOLVER.BASE_LR fast", "SOLVER.BASE_LR"),
    C("td-type-int-for-tuple", TD, TDA + " SOLVER.STEPS 100", "SOLVER.STEPS"),
    C("td-type-word-for-depth", TD, TDA + " MODEL.RESNETS.DEPTH fifty", "MODEL.RESNETS.DEPTH"),
    C("td-type-str-for-datasets", TD, TDA + " DATASETS.TRAIN resdet_train", "DATASETS.TRAIN"),
    C("td-override-unparsable", TD, TDA + " SOLVER.STEPS '(100,'", "SOLVER.STEPS"),
    C("td-odd-number-of-overrides", TD, TDA + " SOLVER.MAX_ITER", "SOLVER.MAX_ITER"),
    C("td-type-strings-for-steps", TD, TDA + " SOLVER.STEPS \"('1',)\"", "SOLVER.STEPS"),
    C(
        "td-type-strings-for-pixel-mean",
        TD,
        TDA + " MODEL.PIXEL_MEAN \"['103','116','123']\"",
        "MODEL.PIXEL_MEAN",
    ),
    C("td-type-flat-anchor-sizes", TD, TDA + " MODEL.ANCHOR_GENERATOR.SIZES [32,64]", "SIZES"),
    C("td-negative-max-iter", TD, TDA + " SOLVER.MAX_ITER -5", "SOLVER.MAX_ITER"),
    C("td-zero-batch", TD, TDA + " SOLVER.IMS_PER_BATCH 0", "SOLVER.IMS_PER_BATCH"),
    C("td-depth-unsupported", TD, TDA + " MODEL.WEIGHTS '' MODEL.RESNETS.DEPTH 77", "77"),
    C("td-device-gpu", TD, TDA + " MODEL.DEVICE gpu", "gpu"),
    C("td-device-cuda-absent", TD, TDA + f" MODEL.DEVICE {NO_CUDA}", "MODEL.DEVICE", NO_CUDA),
    # Detectron2's build asserts, named by their key
    C(
        "td-anchor-levels-vs-features",
        TD,
        TDA + " MODEL.ANCHOR_GENERATOR.SIZES [[32],[64]]",
        "MODEL.ANCHOR_GENERATOR.SIZES",
    ),
    C("td-rpn-feature-unknown", TD, TDA + " MODEL.RPN.IN_FEATURES \"['p2','p9']\"", "p9"),
    C("td-steps-decreasing", TD, TDA + " SOLVER.MAX_ITER 10 SOLVER.STEPS (5,3)", "SOLVER.STEPS"),
    C("td-step-at-max-iter", TD, TDA + " SOLVER.STEPS (2,)", "SOLVER.MAX_ITER 2"),
    # values out of range: silent nonsense, a misleading error or a crash before
    C(
        "td-score-thresh-above-1",
        TD,
        TDA + " MODEL.ROI_HEADS.SCORE_THRESH_TEST 1.5",
        "SCORE_THRESH_TEST 1.5",
    ),
    C("td-nms-thresh-negative", TD, TDA + " MODEL.ROI_HEADS.NMS_THRESH_TEST -0.5", "NMS_THRESH"),
    C("td-detections-per-image-0", TD, TDA + " TEST.DETECTIONS_PER_IMAGE 0", "DETECTIONS_PER"),
    C("td-anchor-size-negative", TD, TDA + " MODEL.ANCHOR_GENERATOR.SIZES [[-32]]", "-32"),
    C("td-freeze-at-too-deep", TD, TDA + " MODEL.BACKBONE.FREEZE_AT 7", "FREEZE_AT"),
    C("td-rpn-batch-zero", TD, TDA + " MODEL.RPN.BATCH_SIZE_PER_IMAGE 0", "RPN.BATCH_SIZE"),
    C("td-fpn-channels-zero", TD, TDA + " MODEL.FPN.OUT_CHANNELS 0", "MODEL.FPN.OUT_CHANNELS"),
    C("td-max-size-negative", TD, TDA + " INPUT.MAX_SIZE_TRAIN -1", "INPUT.MAX_SIZE_TRAIN"),
    C("td-input-format-lowercase", TD, TDA + " INPUT.FORMAT rgb", "INPUT.FORMAT"),
    C("td-vis-thresh-above-1", TD, TDA + " RESDET.EVAL.VIS_THRESH 2.0", "VIS_THRESH"),
    # Detectron2's builders' ValueErrors: "unexpected" before
    C("td-momentum-negative", TD, TDA + " SOLVER.MOMENTUM -0.5", "SOLVER.MOMENTUM"),
    C("td-scheduler-unknown", TD, TDA + " SOLVER.LR_SCHEDULER_NAME Cosine", "Cosine"),
    C("td-sampler-unknown", TD, TDA + " DATALOADER.SAMPLER_TRAIN Random", "Random"),
    C(
        "td-lazy-optimizer-bad-value",
        TD,
        LAZY + " optimizer.momentum=-0.5 train.output_dir={out} train.max_iter=2",
        "optimizer",
    ),
    C("td-dataset-unregistered", TD, TDA + " DATASETS.TRAIN \"('my_train',)\"", "my_train"),
    C(
        "td-standard-dataset-absent",
        TD,
        TDA + " DATASETS.TRAIN \"('coco_2017_train',)\"",
        "instances_train2017.json",
    ),
    C("td-eval-only-no-test-set", TD, TDE + " DATASETS.TEST ()", "DATASETS.TEST"),
    C("td-eval-metric-unknown", TD, TDA + " RESDET.EVAL.METRIC mAP", "mAP"),
    C(
        "td-best-metric-unknown",
        TD,
        TDA + " TEST.EVAL_PERIOD 1 RESDET.EVAL.BEST_METRIC bbox/mAP",
        "bbox/mAP",
    ),
    C(
        "td-diverging-lr",
        TD,
        TDA + " SOLVER.BASE_LR 1e6 SOLVER.MAX_ITER 4",
        "SOLVER.BASE_LR",
        started=True,
    ),
    # ---- train_det: bad training data -----------------------------------------------------
    C(
        "td-image-0-bytes",
        TD,
        TDA + " RESDET.DATA.TRAIN {coco_zero}/train.json "
        "RESDET.DATA.TRAIN_IMAGES {coco_zero}/images",
        IMG9,
    ),
    C(
        "td-image-text-renamed-jpg",
        TD,
        TDA + " RESDET.DATA.TRAIN {coco_text}/train.json "
        "RESDET.DATA.TRAIN_IMAGES {coco_text}/images",
        IMG9,
    ),
    C(
        "td-image-truncated-jpg",
        TD,
        TDA + " RESDET.DATA.TRAIN {coco_trunc}/train.json "
        "RESDET.DATA.TRAIN_IMAGES {coco_trunc}/images",
        IMG9,
    ),
    C(
        "td-image-decompression-bomb",
        TD,
        TDA + " RESDET.DATA.TRAIN {coco_bomb}/train.json "
        "RESDET.DATA.TRAIN_IMAGES {coco_bomb}/images",
        "refused_bomb.png",
        "MAX_IMAGE_PIXELS",
    ),
    C(
        "td-image-over-pixel-limit",
        TD,
        TDA + " RESDET.DATA.TRAIN {coco_over_limit}/train.json "
        "RESDET.DATA.TRAIN_IMAGES {coco_over_limit}/images",
        "warned_bomb.png",
        "MAX_IMAGE_PIXELS",
    ),
    C("td-image-folder-missing", TD, TDA + " RESDET.DATA.TRAIN_IMAGES {tmp}/nope", "nope"),
    C(
        "td-all-boxes-zero-size",
        TD,
        TDA + " RESDET.DATA.TRAIN {coco_zero_boxes}",
        "zero_boxes.json",
    ),
    C(
        "td-all-boxes-negative",
        TD,
        TDA + " RESDET.DATA.TRAIN {coco_neg_boxes}",
        "negative_boxes.json",
    ),
    C(
        "td-no-annotations",
        TD,
        TDA + " RESDET.DATA.TRAIN {coco_no_annotations}",
        "no_annotations.json",
    ),
    C("td-train-json-malformed", TD, TDA + " RESDET.DATA.TRAIN {p_csv}", "csv.json"),
    C("td-train-json-is-predictions", TD, TDA + " RESDET.DATA.TRAIN {p_perfect}", "perfect.json"),
    C("td-train-path-missing", TD, TDA + " RESDET.DATA.TRAIN {tmp}/nope.json", "nope.json"),
    C(
        "td-train-path-relative-missing",
        TD,
        TDA + " RESDET.DATA.TRAIN data/train.json",
        "RESDET.DATA.TRAIN data/train.json",
        "working directory",
    ),
    C(
        "td-train-images-is-a-file",
        TD,
        TDA + " RESDET.DATA.TRAIN_IMAGES {coco}",
        "RESDET.DATA.TRAIN_IMAGES",
        "is a file",
    ),
    C(
        "td-train-images-key-empty",
        TD,
        TDA + " RESDET.DATA.TRAIN_IMAGES ''",
        "RESDET.DATA.TRAIN_IMAGES",
    ),
    C(
        "td-voc-without-annotations",
        TD,
        TDA + " RESDET.DATA.TRAIN {bad}/adir RESDET.DATA.TEST ''",
        "Annotations",
    ),
    C(
        "td-voc-malformed-xml",
        TD,
        TDA + " RESDET.DATA.TRAIN {voc_badxml} RESDET.DATA.TEST ''",
        XML7,
    ),
    C(
        "td-voc-split-not-text",
        TD,
        TDA + " RESDET.DATA.TRAIN {voc_split_binary} RESDET.DATA.TRAIN_SPLIT train"
        " RESDET.DATA.TEST '' DATASETS.TEST ()",
        "train.txt",
    ),
    C(
        "td-holdout-out-of-range",
        TD,
        TDA + " RESDET.DATA.TRAIN {voc} RESDET.DATA.TEST '' RESDET.DATA.HOLDOUT_FRACTION 1.5",
        "HOLDOUT_FRACTION",
    ),
    C("td-train-test-classes-differ", TD, TDA + " RESDET.DATA.TRAIN {voc}", "tiny.json"),
    # ---- train_det: output paths and arguments --------------------------------------------
    C("td-output-under-a-file", TD, "--config {det} OUTPUT_DIR {bad}/plain.txt/run", "plain.txt"),
    C("td-output-is-a-file", TD, "--config {det} OUTPUT_DIR {bad}/plain.txt", "plain.txt"),
    C("td-output-unwritable", TD, "--config {det} OUTPUT_DIR /sys/kernel/run", "/sys/kernel"),
    C("td-output-cannot-be-created", TD, "--config {det} OUTPUT_DIR /proc/resdet", "/proc/resdet"),
    C("td-unknown-flag", TD, "--config {det} --lr 0.1 OUTPUT_DIR {out}", "--lr"),
    C("td-config-flag-without-value", TD, "--config", "--config"),
    C("td-num-gpus-not-a-number", TD, "--num-gpus two " + TDA, "two"),
    # checked before any process starts: an out-of-range rank used to wait forever
    C(
        "td-machine-rank-out-of-range",
        TD,
        "--num-machines 2 --machine-rank 2 " + TDA,
        "--machine-rank 2",
    ),
    C("td-machines-without-dist-url", TD, "--num-machines 2 " + TDA, "--dist-url"),
    C("td-dist-url-not-a-url", TD, "--num-machines 2 --dist-url host:29500 " + TDA, "host:29500"),
    # ---- pretrain_imagenet: config problems -----------------------------------------------
    C("pt-config-missing", PT, "--config {tmp}/nope.yaml --output {out}", "nope.yaml"),
    C(
        "pt-config-missing-base",
        PT,
        "--config {bad}/missing_base.yaml --output {out}",
        "Base-Not-There.yaml",
    ),
    C("pt-config-broken-yaml", PT, "--config {bad}/broken.yaml --output {out}", "broken.yaml"),
    C("pt-config-not-a-mapping", PT, "--config {bad}/list.yaml --output {out}", "list.yaml"),
    C("pt-unknown-key-override", PT, PTA + " SOLVER.MAX_ITERS 10", "SOLVER.MAX_ITERS", MAX_ITER),
    C(
        "pt-unknown-key-in-yaml",
        PT,
        "--config {bad}/pre_max_iters.yaml --output {out}",
        "SOLVER.MAX_ITERS",
        MAX_ITER,
    ),
    C(
        "pt-unknown-key-mixup",
        PT,
        PTA + " PRETRAIN.AUG.MIXUP 0.2",
        "PRETRAIN.AUG.MIXUP",
        "MIXUP_ALPHA",
    ),
    C("pt-config-key-twice", PT, "--config {bad}/pre_twice.yaml --output {out}", "MAX_ITER"),
    C("pt-config-base-cycle", PT, "--config {bad}/cycle_a.yaml --output {out}", "cycle"),
    C("pt-config-empty-value", PT, "--config {bad}/pre_null.yaml --output {out}", "MAX_ITER"),
    C("pt-config-is-detection", PT, "--config {det} --output {out}", "det.yaml", "pretrain"),
    C("pt-steps-decreasing", PT, PTA + " SOLVER.MAX_ITER 10 SOLVER.STEPS (5,3)", "SOLVER.STEPS"),
    C("pt-step-at-max-iter", PT, PTA + " SOLVER.STEPS (2,)", "SOLVER.MAX_ITER 2"),
    C("pt-device-cuda-absent", PT, PTA + f" MODEL.DEVICE {NO_CUDA}", "MODEL.DEVICE", NO_CUDA),
    C("pt-label-smoothing-1", PT, PTA + " PRETRAIN.LABEL_SMOOTHING 1.0", "LABEL_SMOOTHING"),
    C("pt-type-word-for-int", PT, PTA + " SOLVER.MAX_ITER ten", "SOLVER.MAX_ITER"),
    C("pt-type-str-for-list", PT, PTA + " PRETRAIN.TEST.MODES 1crop", "PRETRAIN.TEST.MODES"),
    C("pt-odd-number-of-overrides", PT, PTA + " SOLVER.MAX_ITER", "SOLVER.MAX_ITER"),
    C("pt-negative-max-iter", PT, PTA + " SOLVER.MAX_ITER -5", "SOLVER.MAX_ITER"),
    C("pt-zero-batch", PT, PTA + " SOLVER.IMS_PER_BATCH 0", "SOLVER.IMS_PER_BATCH"),
    C("pt-negative-crop", PT, PTA + " INPUT.CROP_SIZE -32", "INPUT.CROP_SIZE"),
    C("pt-depth-unsupported", PT, PTA + " MODEL.RESNETS.DEPTH 77", "77"),
    C("pt-dataset-family-unknown", PT, PTA + " PRETRAIN.DATASET mnist", "mnist"),
    C("pt-scheduler-unknown", PT, PTA + " SOLVER.LR_SCHEDULER_NAME Cosine", "Cosine"),
    C("pt-test-mode-unknown", PT, PTA + " PRETRAIN.TEST.MODES \"['5crop']\"", "5crop"),
    C(
        "pt-amp-float16-on-cpu",
        PT,
        PTA + " SOLVER.AMP.ENABLED True PRETRAIN.AMP_DTYPE float16",
        "float16",
    ),
    C("pt-device-gpu", PT, PTA + " MODEL.DEVICE gpu", "gpu"),
    C("pt-train-crop-unknown", PT, PTA + " PRETRAIN.AUG.TRAIN_CROP random", "random"),
    C(
        "pt-diverging-lr",
        PT,
        PTA + " SOLVER.BASE_LR 1e30 SOLVER.MAX_ITER 4",
        "SOLVER.BASE_LR",
        started=True,
    ),
    # ---- pretrain_imagenet: data, weights, outputs, arguments -----------------------------
    C("pt-data-missing", PT, PTA + " --data {tmp}/nope", "nope"),
    C("pt-data-is-a-file", PT, PTA + " --data {bad}/plain.txt", "plain.txt"),
    C("pt-data-empty-folder", PT, PTA + " --data {bad}/adir", "adir"),
    C("pt-data-no-test-split", PT, PTA + " --data {cf_notest}", "cf_notest"),
    C("pt-data-flat-train-folder", PT, PTA + " --data {cf_flat}", "cf_flat"),
    C("pt-val-all-unreadable", PT, PTA + " --data {cf_test_zero}", "cf_test_zero", started=True),
    C(
        "pt-data-symlink-loop",
        PT,
        PTA + " --data {cf_link_loop}",
        "cf_link_loop/train/airplane/loop",
    ),
    C("pt-data-train-images-bombs", PT, PTA + " --data {cf_train_bombs}", "MAX_IMAGE_PIXELS"),
    C("pt-eval-only-weights-text", PT, PTE + " MODEL.WEIGHTS {bad}/notes.pth", "notes.pth"),
    C("pt-eval-only-weights-missing", PT, PTE + " MODEL.WEIGHTS {tmp}/nope.pth", "nope.pth"),
    C("pt-eval-only-malicious", PT, PTE + " MODEL.WEIGHTS {bad}/evil.pth", "evil.pth"),
    C("pt-eval-only-detector-weights", PT, PTE + " MODEL.WEIGHTS {r18}", "r18_fpn.pth"),
    C("pt-eval-only-list-pth", PT, PTE + " MODEL.WEIGHTS {bad}/list.pth", "list.pth"),
    C("pt-eval-only-tensor-pth", PT, PTE + " MODEL.WEIGHTS {bad}/tensor.pth", "tensor.pth"),
    C("pt-eval-only-other-classes", PT, PTE + " MODEL.WEIGHTS {cls}", "model_final.pth"),
    C("pt-eval-only-nothing-trained", PT, PTE, "model_final.pth"),
    C(
        "pt-resume-truncated-ckpt",
        PT,
        "--resume --config {pre} --output {pt_resume_trunc}",
        "model_0000002.pth",
    ),
    C(
        "pt-resume-dangling-pointer",
        PT,
        "--resume --config {pre} --output {pt_resume_dangling}",
        "model_0000002.pth",
    ),
    C("pt-output-under-a-file", PT, "--config {pre} --output {bad}/plain.txt/pt", "plain.txt"),
    C("pt-output-is-a-file", PT, "--config {pre} --output {bad}/plain.txt", "plain.txt"),
    C("pt-output-unwritable", PT, "--config {pre} --output /sys/kernel/pt", "/sys/kernel"),
    C("pt-output-cannot-be-created", PT, "--config {pre} --output /proc/resdet", "/proc/resdet"),
    C("pt-no-config-argument", PT, "--data {cf}", "--config"),
    C("pt-num-gpus-not-a-number", PT, "--num-gpus two " + PTA, "two"),
    C(
        "pt-machine-rank-out-of-range",
        PT,
        "--num-machines 2 --machine-rank 5 " + PTA,
        "--machine-rank 5",
    ),
    C("pt-machines-without-dist-url", PT, "--num-machines 3 " + PTA, "--dist-url"),
    C("pt-unknown-flag-first", PT, "--lr 0.1 " + PTA, "--lr"),
    C("pt-unknown-flag-last", PT, PTA + " --lr 0.1", "--lr"),
    # ---- pipeline -------------------------------------------------------------------------
    C("pp-seed-word", PP, PPA + " SEED abc", "SEED"),
    C("pp-seed-float", PP, PPA + " SEED 1.5", "SEED"),
    C("pp-config-missing", PP, "--config {tmp}/nope.yaml --output {out}", "nope.yaml"),
    C(
        "pp-config-missing-base",
        PP,
        "--config {bad}/missing_base.yaml --output {out}",
        "Base-Not-There.yaml",
    ),
    C("pp-config-broken-yaml", PP, "--config {bad}/broken.yaml --output {out}", "broken.yaml"),
    C("pp-config-not-a-mapping", PP, "--config {bad}/list.yaml --output {out}", "list.yaml"),
    C("pp-unknown-key-override", PP, PPA + " DATA.HOLDOUT 0.3", "DATA.HOLDOUT", "HOLDOUT_FRACTION"),
    C(
        "pp-unknown-key-in-yaml",
        PP,
        "--config {bad}/pipe_unknown.yaml --output {out}",
        "DATA.HOLDOUT",
        "HOLDOUT_FRACTION",
    ),
    C("pp-odd-number-of-overrides", PP, PPA + " SEED", "SEED"),
    C("pp-type-str-for-opts", PP, PPA + " PRETRAIN.OPTS SOLVER.MAX_ITER", "PRETRAIN.OPTS"),
    C("pp-pretrain-config-missing", PP, PPA + " PRETRAIN.CONFIG {tmp}/nope.yaml", "nope.yaml"),
    C("pp-detect-config-missing", PP, PPA + " DETECT.CONFIG {tmp}/nope.yaml", "nope.yaml"),
    C(
        "pp-pretrain-opts-unknown-key",
        PP,
        PPA + " PRETRAIN.OPTS \"['SOLVER.MAX_ITERS','2']\"",
        "SOLVER.MAX_ITERS",
    ),
    C("pp-detect-opts-odd", PP, PPA + " DETECT.OPTS \"['SOLVER.MAX_ITER']\"", "SOLVER.MAX_ITER"),
    C("pp-convert-layout-unknown", PP, PPA + " CONVERT.LAYOUT c5", "c5"),
    C("pp-crop-size-zero", PP, PPA + " DATA.CROP_SIZE 0", "DATA.CROP_SIZE"),
    C(
        "pp-detect-opts-bad-value",
        PP,
        PPA + " DETECT.OPTS \"['SOLVER.MOMENTUM','-1']\"",
        "MOMENTUM",
    ),
    C("pp-generate-no-images", PP, PPA + " DATA.GENERATE.NUM_TRAIN 0", "DATA.GENERATE.NUM_TRAIN"),
    C("pp-data-missing", PP, PPA + " --data {tmp}/nope", "nope"),
    C("pp-data-coco-without-images", PP, PPA + " --data {coco}", "tiny.json", "--images"),
    C("pp-data-images-missing", PP, PPA + " --data {coco} --images {tmp}/nope", "nope"),
    C(
        "pp-data-images-is-a-file",
        PP,
        PPA + " --data {coco} --images {coco}",
        "DATA.IMAGES (--images)",
        "is a file",
    ),
    C("pp-data-empty-folder", PP, PPA + " --data {bad}/adir", "Annotations"),
    C("pp-data-is-an-image", PP, PPA + " --data {coco_img}/" + IMG9, IMG9),
    C("pp-data-voc-malformed-xml", PP, PPA + " --data {voc_badxml}", XML7),
    C(
        "pp-holdout-out-of-range",
        PP,
        PPA + " --data {voc} DATA.HOLDOUT_FRACTION 1.0",
        "HOLDOUT_FRACTION",
    ),
    C("pp-output-under-a-file", PP, "--config {pipe} --output {bad}/plain.txt/pipe", "plain.txt"),
    C("pp-output-is-a-file", PP, "--config {pipe} --output {bad}/plain.txt", "plain.txt"),
    C("pp-output-unwritable", PP, "--config {pipe} --output /sys/kernel/pipe", "/sys/kernel"),
    C("pp-output-cannot-be-created", PP, "--config {pipe} --output /proc/resdet", "/proc/resdet"),
    C("pp-unknown-flag", PP, "--seed 3 " + PPA, "--seed"),
    # ---- layer_responses ------------------------------------------------------------------
    C("lr-max-images-negative", LR, LRO + " {out} --max-images -3", "--max-images"),
    C("lr-max-images-zero", LR, LRO + " {out} --max-images 0", "--max-images"),
    C("lr-max-images-word", LR, LRO + " {out} --max-images all", "all"),
    C("lr-ckpt-text-renamed-pth", LR, "--checkpoints {bad}/notes.pth " + LRA, "notes.pth"),
    C("lr-ckpt-truncated", LR, "--checkpoints {bad}/truncated.pth " + LRA, "truncated.pth"),
    C("lr-ckpt-empty", LR, "--checkpoints {bad}/empty.pth " + LRA, "empty.pth"),
    C("lr-ckpt-malicious", LR, "--checkpoints {bad}/evil.pth " + LRA, "evil.pth"),
    C("lr-ckpt-missing", LR, "--checkpoints {tmp}/nope.pth " + LRA, "nope.pth"),
    C("lr-ckpt-is-a-folder", LR, "--checkpoints {bad}/adir " + LRA, "adir"),
    C("lr-ckpt-detector-weights", LR, "--checkpoints {r18} " + LRA, "r18_fpn.pth"),
    C("lr-ckpt-torchvision", LR, "--checkpoints {tv18} " + LRA, "resnet18.pth"),
    C(
        "lr-ckpt-detection-run",
        LR,
        "--checkpoints {run}/model_final.pth " + LRA,
        "model_final.pth",
        "resdet-detector",
    ),
    C("lr-ckpt-meta-empty", LR, "--checkpoints {bad}/meta_empty.pth " + LRA, "meta_empty.pth"),
    C(
        "lr-ckpt-meta-wrong-depth",
        LR,
        "--checkpoints {bad}/meta_depth20.pth " + LRA,
        "meta_depth20.pth",
    ),
    C("lr-second-ckpt-bad", LR, "--checkpoints {c8} {bad}/notes.pth " + LRA, "notes.pth"),
    C("lr-no-checkpoints-argument", LR, LRA, "--checkpoints"),
    C("lr-data-missing", LR, "--checkpoints {c8} --data {tmp}/nope --output {out}", "nope"),
    C("lr-data-empty-folder", LR, "--checkpoints {c8} --data {bad}/adir --output {out}", "adir"),
    C(
        "lr-data-flat-images",
        LR,
        "--checkpoints {c8} --data {cf_flat}/train --output {out}",
        "cf_flat",
    ),
    C(
        "lr-data-all-unreadable",
        LR,
        "--checkpoints {c8} --data {cf_train_zero}/train --output {out}",
        "cf_train_zero",
    ),
    C("lr-output-under-a-file", LR, LRO + " {bad}/plain.txt/lr", "plain.txt"),
    C("lr-output-is-a-file", LR, LRO + " {bad}/plain.txt", "plain.txt"),
    C("lr-output-unwritable", LR, LRO + " /sys/kernel/lr", "/sys/kernel"),
    C("lr-output-cannot-be-created", LR, LRO + " /proc/resdet", "/proc/resdet"),
]

# Also run through `python tools/<tool>.py`: the real exit status, nothing printed after.
CLI_IDS = [
    "cw-text-renamed-pth",
    "cw-malicious-pkl",
    "ev-pred-negative-width",
    "ev-output-unwritable",
    "td-weights-text-renamed-pth",
    "td-unknown-key-override",
    "pt-unknown-key-override",
    "pt-output-cannot-be-created",
    "pp-seed-word",
    "pp-config-missing",
    "pp-odd-number-of-overrides",
    "lr-max-images-negative",
    "lr-ckpt-truncated",
    "lr-data-missing",
]
CLI_ONLY = [
    # every training image unreadable: must stop within seconds, not loop forever
    C(
        "pt-all-train-images-unreadable",
        PT,
        PTA + " --data {cf_train_zero}",
        "cf_train_zero",
        timeout=60,
    ),
    # the VOC class list of voc_2007_trainval is fixed: a misspelt class is an error
    C(
        "td-voc-class-typo-fixed-list",
        TD,
        TDA + " DATASETS.TRAIN \"('voc_2007_trainval',)\" DATASETS.TEST ()",
        "persn",
        XML7,
        env={"DETECTRON2_DATASETS": "{d2ds}"},
    ),
    # a full disk: the write of the result fails part-way
    C("cw-disk-full", CW, CWA, "r18.pth", fsize=1 << 20),
    C("ev-disk-full", EV, EVO + " {out}/metrics.json", "metrics.json", fsize=64),
    # whichever checkpoint is written first when the limit is reached
    C(
        "td-disk-full",
        TD,
        TDA,
        R(r"model_(best|final)\.pth: cannot be written"),
        fsize=1 << 20,
        started=True,
    ),
]
CASES_BY_ID = {c.id: c for c in CASES}
assert len(CASES_BY_ID) == len(CASES), "duplicate case id"
assert all(i in CASES_BY_ID for i in CLI_IDS)


# ---------------------------------------------------------------------------- machinery


class _Lookup(dict):
    def __init__(self, corpus, tmp):
        super().__init__(tmp=tmp, out=tmp / "out")
        self.corpus = corpus

    def __missing__(self, name):
        return self.corpus.get(name)


def _argv(case, corpus, tmp):
    lookup = _Lookup(corpus, tmp)
    return [tok.format_map(lookup) for tok in shlex.split(case.argv)]


@pytest.fixture(scope="session")
def corpus(shared_data, tmp_path_factory):
    return Corpus(tmp_path_factory.mktemp("corpus"), shared_data)


@pytest.fixture(autouse=True)
def _no_debug(monkeypatch):
    """The corpus checks what users see by default; RESDET_DEBUG=1 would add tracebacks."""
    monkeypatch.delenv("RESDET_DEBUG", raising=False)


_tools = {}


def _tool(name):
    if name not in _tools:
        path = REPO / "tools" / f"{name}.py"
        spec = importlib.util.spec_from_file_location(f"_resdet_tool_{name}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _tools[name] = module
    return _tools[name]


def _takes_argv(fn):
    try:
        return "argv" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def _call(tool, argv):
    """Run ``tools/<tool>.py`` in this process as its command line would; the exit status,
    or "hang". ``main(argv)`` where the tool has it (it returns the status or calls
    sys.exit), else the file as __main__; an exception escaping is printed as Python would."""
    path = REPO / "tools" / f"{tool}.py"
    timed_out = []

    def alarm(*_):  # a flag, not only an exception: a catch-all handler may swallow it
        timed_out.append(True)
        raise TimeoutError(f"{tool} ran past {IN_PROCESS_LIMIT} s")

    old_handler = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(IN_PROCESS_LIMIT)
    old_argv = sys.argv
    try:
        with quiet_logging():
            main = getattr(_tool(tool), "main", None)
            if main is not None and _takes_argv(main):
                rc = main(list(argv))
            else:  # the tool still works only as a script
                sys.argv = [str(path)] + list(argv)
                runpy.run_path(str(path), run_name="__main__")
                rc = 0
    except SystemExit as e:
        rc = e.code
        if rc is not None and not isinstance(rc, int):
            print(rc, file=sys.stderr)
            rc = 1
    except BaseException:  # noqa: BLE001 - what an uncaught exception does to a command
        traceback.print_exc()
        rc = 1
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old_handler)
        sys.argv = old_argv
    if timed_out:
        return "hang"
    return 0 if rc is None else rc


# Runs a tool with its file size limited: RLIMIT_FSIZE and an ignored SIGXFSZ survive exec,
# and setting them here, not in a preexec_fn, is safe in a parent that runs threads (torch).
_LIMITED = (
    "import os, resource, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
    "n = int(sys.argv[1]); resource.setrlimit(resource.RLIMIT_FSIZE, (n, n)); "
    "os.execv(sys.executable, [sys.executable] + sys.argv[2:])"
)


def _run_cli(case, argv, env_extra):
    """``python tools/<tool>.py argv`` in its own session; the exit status or "hang"."""
    path = [str(REPO)] + [p for p in [os.environ.get("PYTHONPATH")] if p]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(path), **env_extra)
    cmd = [sys.executable, str(REPO / "tools" / f"{case.tool}.py"), *argv]
    if case.fsize:
        cmd = [sys.executable, "-c", _LIMITED, str(case.fsize)] + cmd[1:]
    proc = subprocess.Popen(
        cmd,
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=case.timeout)
        return proc.returncode, out, err
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the tool and any data-loader workers it started
        out, err = proc.communicate()
        return "hang", out, err


def _last_line(text):
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


def outcome(rc, out, err):
    """One line for the report: what the command did."""
    if rc == "hang":
        return "hang"
    if "Traceback" in out + err:
        tb = (err if "Traceback" in err else out).split("Traceback")[-1]
        exc = next((m.group(1) for m in map(EXC_LINE.match, reversed(tb.splitlines())) if m), "?")
        return f"traceback: {exc} ({_last_line(err)[:160]!r})"
    if rc == 0:
        return "exit 0"
    return f"exit {rc}: {_last_line(err)[:300]}"


def _files(folder):
    for base, dirs, files in os.walk(folder):
        for f in files:
            yield Path(base) / f


def _check_failure(case, rc, out, err, tmp, corpus):
    what = outcome(rc, out, err)
    assert rc != "hang", what
    assert "Traceback" not in out + err, what
    assert rc == 2, what
    last = _last_line(err)
    assert ERROR_LINE.match(last), what
    # a user's mistake is never reported as resdet's own bug (resdet.cli's catch-all line)
    assert "(a resdet bug" not in last, what
    for frag in case.fragments:
        found = frag.search(last) if isinstance(frag, re.Pattern) else frag in last
        assert found, f"{what}  [missing {getattr(frag, 'pattern', frag)!r}]"
    _check_nothing_half_written(case, tmp, corpus, what)


def _check_nothing_half_written(case, tmp, corpus, what):
    assert not corpus.marker.exists(), f"a malicious checkpoint ran code; {what}"
    leftovers = [p for p in [*_files(corpus.root), *_files(tmp)] if p.name.endswith(".tmp")]
    assert not leftovers, f"temporary files left: {leftovers}; {what}"
    empty = [
        p
        for p in _files(tmp)
        if not p.is_symlink() and p.stat().st_size == 0 and not LOG_FILE.fullmatch(p.name)
    ]
    assert not empty, f"0-byte files written: {empty}; {what}"
    out = tmp / "out"
    if not case.started:
        written = [p for p in _files(out) if not LOG_FILE.fullmatch(p.name)]
        names = sorted(str(p.relative_to(out)) for p in written)
        assert not written, f"a failed run left {names}; {what}"
    if "p_self" in corpus.built:  # predictions that --output also named are still there
        assert isinstance(json.loads(corpus.get("p_self").read_text()), list), what
    if "coco" in corpus.built:
        assert "images" in json.loads(corpus.coco.read_text()), what
    if "bad" in corpus.built:  # the user's own files are untouched
        bad = corpus.bad
        assert (bad / "plain.txt").read_text() == "a file where a folder is expected\n", what
        assert not any((bad / "adir").iterdir()) and not any((bad / "adir.pth").iterdir()), what


# ---------------------------------------------------------------------------- the corpus


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in CASES])
def test_bad_input(case, corpus, tmp_path, capfd):
    argv = _argv(case, corpus, tmp_path)
    capfd.readouterr()  # building fixtures may print; only the command's output counts
    rc = _call(case.tool, argv)
    out, err = capfd.readouterr()
    _check_failure(case, rc, out, err, tmp_path, corpus)


@pytest.mark.parametrize(
    "case",
    [pytest.param(CASES_BY_ID[i], id=i) for i in CLI_IDS]
    + [pytest.param(c, id=c.id) for c in CLI_ONLY],
)
def test_bad_input_command_line(case, corpus, tmp_path):
    argv = _argv(case, corpus, tmp_path)
    env = {k: v.format_map(_Lookup(corpus, tmp_path)) for k, v in case.env.items()}
    rc, out, err = _run_cli(case, argv, env)
    _check_failure(case, rc, out, err, tmp_path, corpus)


# ---------------------------------------------------------------------------- silent results


def _ok(tool, argv, capfd):
    capfd.readouterr()
    rc = _call(tool, argv)
    out, err = capfd.readouterr()
    what = outcome(rc, out, err)
    return rc, out, err, what


@pytest.mark.parametrize(
    "gt,pred", [("coco", "p_empty_list"), ("voc", "p_empty_list"), ("voc", "dk_empty")]
)
def test_no_predictions_score_ap_zero_not_nan(corpus, tmp_path, capfd, gt, pred):
    """13 ground-truth boxes and no detections is AP 0: nothing was found."""
    metrics = tmp_path / "metrics.json"
    rc, out, err, what = _ok(
        EV,
        ["--gt", str(corpus.get(gt)), "--pred", str(corpus.get(pred)), "--output", str(metrics)],
        capfd,
    )
    assert rc == 0 and "Traceback" not in out + err, what
    bbox = json.loads(metrics.read_text())["bbox"]
    assert bbox["AP50"] == 0.0 and bbox["AP"] == 0.0, bbox


def test_voc_class_names_are_stripped(corpus, tmp_path, capfd):
    """'RBC ' in an annotation is class RBC, not a new class: perfect detections score 100."""
    metrics = tmp_path / "metrics.json"
    rc, out, err, what = _ok(
        EV,
        [
            "--gt",
            str(corpus.get("voc_space")),
            "--pred",
            str(corpus.get("dk_perfect")),
            "--output",
            str(metrics),
        ],
        capfd,
    )
    assert rc == 0 and "Traceback" not in out + err, what
    bbox = json.loads(metrics.read_text())["bbox"]
    per_class = sorted(k for k in bbox if k.startswith("AP50-"))
    assert per_class == ["AP50-Platelets", "AP50-RBC", "AP50-WBC"], per_class
    assert bbox["AP50"] == pytest.approx(100.0), bbox


def _id_maps(obj):
    """Every {category id: class name} a JSON document states (as a mapping either way
    round, or as a list of {"id", "name"} objects)."""
    if isinstance(obj, dict):
        items = list(obj.items())
        if items and all(isinstance(v, str) for _, v in items):
            yield {str(k): v for k, v in items}
        if items and all(isinstance(v, int) and not isinstance(v, bool) for _, v in items):
            yield {str(v): k for k, v in items}
        for v in obj.values():
            yield from _id_maps(v)
    elif isinstance(obj, list):
        if obj and all(isinstance(x, dict) and "id" in x and "name" in x for x in obj):
            yield {str(x["id"]): x["name"] for x in obj}
        for v in obj:
            yield from _id_maps(v)


def test_voc_json_category_ids_are_written_down(corpus, tmp_path, capfd):
    """JSON predictions on VOC data number classes 1..K in sorted-name order, so a misspelt
    class ('RBc') shifts the ids after it. The mapping used must be in the written output
    (metrics.json's per-class keys are in id order)."""
    out = tmp_path / "out"
    rc, o, e, what = _ok(
        EV,
        [
            "--gt",
            str(corpus.get("voc_typo")),
            "--pred",
            str(corpus.get("p_voc_perfect")),
            "--output",
            str(out / "metrics.json"),
        ],
        capfd,
    )
    assert "Traceback" not in o + e, what
    if rc != 0:  # refusing the typo outright is fine too, if it names it
        assert rc == 2 and "RBc" in _last_line(e), what
        return
    expected = {"1": "Platelets", "2": "RBC", "3": "RBc", "4": "WBC"}
    maps = [m for p in out.glob("*.json") for m in _id_maps(json.loads(p.read_text()))]
    # metrics.json names the classes in its per-class keys, in category-id order (1..K)
    metrics = json.loads((out / "metrics.json").read_text())["bbox"]
    per_class = [k.split("-", 1)[1] for k in metrics if k.startswith("AP50-")]
    maps.append({str(i + 1): name for i, name in enumerate(per_class)})
    assert any(all(m.get(k) == v for k, v in expected.items()) for m in maps), (
        f"no category id -> class mapping in {sorted(p.name for p in out.glob('*.json'))}"
    )


def test_training_checkpoint_converts_with_its_runs_settings(corpus, tmp_path, capfd):
    """A training checkpoint of a resdet detector carries its run's settings (RGB, its
    pixel statistics); the conversion takes them from it, never from a guess."""
    run_cfg = yaml.safe_load((corpus.run / "config.yaml").read_text())
    argv = [str(corpus.run / "model_0000000.pth"), str(tmp_path / "r18.pth")]
    rc, out, err, what = _ok(CW, argv, capfd)
    assert rc == 0 and "Traceback" not in out + err, what
    meta = torch.load(tmp_path / "r18.pth", weights_only=True)["meta"]
    assert meta["input_format"] == run_cfg["INPUT"]["FORMAT"] == "RGB", meta
    assert meta["pixel_std"] == pytest.approx(run_cfg["MODEL"]["PIXEL_STD"]), meta
    assert meta["pixel_mean"] == pytest.approx(run_cfg["MODEL"]["PIXEL_MEAN"]), meta
    # one without the settings converts when given the config it was trained with
    argv = [
        str(corpus.get("run_noconfig") / "model_0000000.pth"),
        str(tmp_path / "given.pth"),
        "--config",
        str(corpus.run / "config.yaml"),
    ]
    rc, out, err, what = _ok(CW, argv, capfd)
    assert rc == 0, what
    given = torch.load(tmp_path / "given.pth", weights_only=True)["meta"]
    assert given["pixel_std"] == pytest.approx(meta["pixel_std"]) and given["input_format"] == "RGB"


@pytest.mark.parametrize(
    "source", ["tv_reference", "bad/module_resnet18.pth", "bad/lightning.ckpt"]
)
def test_torchvision_training_checkpoints_convert(corpus, tmp_path, capfd, source):
    """torchvision's reference-script checkpoint ({"model", "optimizer", "epoch", "args":
    Namespace}), a state dict saved from a DataParallel wrapper ("module." names) and a
    Lightning checkpoint ("model." names; both an unknown format before) convert to
    exactly what the bare state dict converts to."""
    src = corpus.get("tv_reference") if source == "tv_reference" else corpus.bad / source[4:]
    rc, out, err, what = _ok(CW, [str(corpus.tv18), str(tmp_path / "plain.pth")], capfd)
    assert rc == 0, what
    rc, out, err, what = _ok(CW, [str(src), str(tmp_path / "r18.pth"), "--verify"], capfd)
    assert rc == 0 and "Traceback" not in out + err, what
    plain = torch.load(tmp_path / "plain.pth", weights_only=True)
    got = torch.load(tmp_path / "r18.pth", weights_only=True)
    assert got["meta"]["source"] == "torchvision" and got["meta"]["depth"] == 18
    assert got["model"].keys() == plain["model"].keys()
    assert all(torch.equal(got["model"][k], plain["model"][k]) for k in plain["model"])


@pytest.mark.parametrize("tool,base", [(PT, PTA), (TD, TDA)])
def test_int_for_a_float_key_is_taken_as_float(corpus, tmp_path, capfd, tool, base):
    """SOLVER.WEIGHT_DECAY 0 means 0.0: Detectron2's type is float, the user's intent clear."""
    argv = _argv(C("x", tool, base + " SOLVER.WEIGHT_DECAY 0"), corpus, tmp_path)
    rc, out, err, what = _ok(tool, argv, capfd)
    assert rc == 0 and "Traceback" not in out + err, what
    used = yaml.safe_load((tmp_path / "out" / "config.yaml").read_text())
    decay = used["SOLVER"]["WEIGHT_DECAY"]
    assert decay == 0.0 and isinstance(decay, float), decay


def test_one_unreadable_training_image_is_named(corpus, tmp_path, capfd):
    """A 0-byte image among good ones: refused at start, or skipped and counted where the
    user sees it; never a crash at iteration 0, never silently dropped."""
    bad = corpus.get("coco_onebad")
    data = f" RESDET.DATA.TRAIN {bad}/train.json RESDET.DATA.TRAIN_IMAGES {bad}/images"
    argv = _argv(C("x", TD, TDA + data), corpus, tmp_path)
    rc, out, err, what = _ok(TD, argv, capfd)
    assert "Traceback" not in out + err, what
    if rc != 0:
        assert rc == 2 and "000000000025.jpg" in _last_line(err), what
    else:
        assert "000000000025.jpg" in out + err, "the skipped image is not named"


def test_corpus_is_large_and_covers_every_tool():
    by_tool = {t: sum(c.tool == t for c in CASES + CLI_ONLY) for t in (CW, EV, TD, PT, PP, LR)}
    assert len(CASES) + len(CLI_ONLY) >= 130 and min(by_tool.values()) >= 15, by_tool
    assert len({(c.tool, c.argv) for c in CASES}) == len(CASES), "two cases, one command line"
    assert all(c.fragments for c in CASES + CLI_ONLY)
