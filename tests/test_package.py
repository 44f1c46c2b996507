"""resdet as an installed package: configs ship inside it and nothing needs a checkout.

The wheel is built once per session from a copy of this checkout, installed with
--no-deps into a fresh virtual environment that sees this environment's packages
(torch, Detectron2, ...) but not this checkout, and used from an empty folder: weight
conversion with verification, a 2-iteration detection run on coco128, every shipped
config, and the degradation study's config.
"""

import json
import os
import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO

from resdet import model_zoo
from resdet.config import configs_root, resolve_config_file
from resdet.errors import ConfigError

# Run by the installed resdet in an empty folder; prints one JSON line of what it saw.
SCRIPT = r"""
import json, sys
from pathlib import Path

import torch, torchvision
import resdet
from resdet import model_zoo
from resdet.config import configs_root, resolve_config_file
from resdet.convert import convert

data, out = Path(sys.argv[1]), Path(sys.argv[2])
report = {"resdet": resdet.__file__, "configs_root": str(configs_root())}

# 1. conversion with --verify of a torchvision ResNet-18 (random weights: no download)
out.mkdir(parents=True)
torch.save(torchvision.models.resnet18(weights=None).state_dict(), out / "tv_r18.pth")
conv = convert(out / "tv_r18.pth", out / "r18_fpn.pth", layout="fpn", verify_features=True)
report["verify"] = {s: max(d.values()) for s, d in conv.diffs.items()}

# 2. every shipped config, by name
report["configs"] = {}
for name in model_zoo.list_configs():
    cfg = model_zoo.get_config(name)
    from resdet.config import kind_of
    report["configs"][name] = [kind_of(cfg), type(cfg).__name__]

# 3. the degradation study's config
from resdet.analysis.degradation import net_cfg
cfg = net_cfg(20, False, data / "cifar10-mini", out / "study")
report["study"] = [cfg.PRETRAIN.DATASET, cfg.MODEL.RESNETS.DEPTH, cfg.MODEL.RESDET.RESIDUAL,
                   cfg.SOLVER.WARMUP_METHOD]

# 4. two iterations of Faster R-CNN R18-FPN on coco128 at 128 px from the converted weights
from resdet.detection import DetectionTrainer
from resdet.engine import load
coco = data / "coco128"
opts = ["MODEL.WEIGHTS", str(out / "r18_fpn.pth"),
        "MODEL.FPN.OUT_CHANNELS", "64", "MODEL.ROI_BOX_HEAD.FC_DIM", "128",
        "RESDET.DATA.TRAIN", str(coco / "annotations/instances_train2017.json"),
        "RESDET.DATA.TRAIN_IMAGES", str(coco / "train2017"),
        "DATASETS.TRAIN", "('resdet_train',)", "DATASETS.TEST", "()",
        "INPUT.MIN_SIZE_TRAIN", "(128,)", "INPUT.MAX_SIZE_TRAIN", "224",
        "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "64", "SOLVER.IMS_PER_BATCH", "2",
        "SOLVER.BASE_LR", "0.005", "SOLVER.STEPS", "()", "SOLVER.MAX_ITER", "2",
        "DATALOADER.NUM_WORKERS", "0", "SEED", "0", "OUTPUT_DIR", str(out / "det")]
setup = load("coco_r50_fpn.yaml", overrides=opts, datasets=True)
with setup.run() as run:
    trainer = DetectionTrainer(setup, run)
    trainer.resume_or_load(resume=False)
    trainer.train()
final = torch.load(out / "det" / "model_final.pth", weights_only=True)
report["det"] = {"iteration": final["iteration"], "depth": setup.cfg.MODEL.RESNETS.DEPTH,
                 "loss": [v for v, _ in trainer.trainer.storage.history("total_loss").values()]}
print("REPORT " + json.dumps(report))
"""


def _copy_checkout(dst: Path) -> Path:
    """The files git would commit (tracked or not ignored), links kept as links."""
    files = (
        subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=REPO,
            capture_output=True,
            check=True,
        )
        .stdout.decode()
        .split("\0")
    )
    for rel in filter(None, files):
        src, out = REPO / rel, dst / rel
        if not os.path.lexists(src):
            continue  # deleted but not yet committed
        out.parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            os.symlink(os.readlink(src), out)
        else:
            shutil.copy2(src, out)
    return dst


@pytest.fixture(scope="session")
def installed(tmp_path_factory):
    """A virtual environment holding the resdet wheel and seeing this environment's
    packages through a .pth file (which, unlike site-packages itself, runs no other
    .pth, so an editable resdet of this environment stays out)."""
    work = tmp_path_factory.mktemp("package")
    src = _copy_checkout(work / "src")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(work / "dist"),
            str(src),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = (work / "dist").glob("resdet-*.whl")
    venv = work / "venv"
    subprocess.run(
        [sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)],
        check=True,
    )
    python = venv / "bin" / "python"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--no-deps",
            "--no-index",
            "-q",
            str(wheel),
        ],
        check=True,
        capture_output=True,
    )
    code = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    purelib = subprocess.run(
        [str(python), "-c", code], check=True, capture_output=True, text=True
    ).stdout.strip()
    Path(purelib, "zz_test_environment.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    return python, wheel


def _clean_env():
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PYTHON", "RESDET_", "DETECTRON2_"))
    }
    env["PYTHONNOUSERSITE"] = "1"
    return env


def test_installed_wheel_works_outside_a_checkout(installed, shared_data, tmp_path):
    python, wheel = installed
    empty = tmp_path / "elsewhere"
    empty.mkdir()
    r = subprocess.run(
        [str(python), "-c", SCRIPT, str(shared_data), str(tmp_path / "out")],
        cwd=empty,
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    line = next(line for line in r.stdout.splitlines() if line.startswith("REPORT "))
    report = json.loads(line[len("REPORT ") :])
    venv = python.parent.parent
    # the wheel's resdet and its own copies of the configs, not this checkout
    assert Path(report["resdet"]).is_relative_to(venv)
    assert Path(report["configs_root"]).is_relative_to(venv)
    assert not (Path(report["configs_root"]).is_symlink())
    assert set(report["verify"]) == {"res2", "res3", "res4", "res5"}
    assert max(report["verify"].values()) < 1e-4
    assert sorted(report["configs"]) == model_zoo.list_configs()
    assert report["configs"]["coco_r101.yaml"] == ["detection", "CfgNode"]
    assert report["configs"]["imagenet/r50.yaml"] == ["pretrain", "CfgNode"]
    assert report["configs"]["lazy/faster_rcnn_r101_c4.py"] == ["lazy", "DictConfig"]
    assert report["study"] == ["cifar", 20, False, "linear"]
    det = report["det"]
    assert det["iteration"] == 1
    assert det["depth"] == 18  # what the converted weights carry
    assert len(det["loss"]) == 2 and all(0 < v < 100 for v in det["loss"])
    assert not any(empty.iterdir())  # nothing written where it was run but what it was told


def test_every_base_resolves_inside_the_shipped_configs():
    root = configs_root()
    for name in model_zoo.list_configs():
        path = root / name
        while path.suffix == ".yaml":
            base = (yaml.safe_load(path.read_text()) or {}).get("_BASE_")
            if base is None:
                break
            path = (path.parent / base).resolve()
            assert path.is_file() and path.is_relative_to(root), f"{name}: _BASE_ {base}"


def test_in_a_checkout_the_configs_are_the_top_level_folder():
    assert configs_root() == (REPO / "configs").resolve()
    want = REPO / "configs" / "coco_r101.yaml"
    # a str, as Detectron2's: LazyConfig.load(model_zoo.get_config_file(name)) works
    assert model_zoo.get_config_file("configs/coco_r101.yaml") == str(want)
    assert {
        "coco_r101.yaml",
        "imagenet/r50.yaml",
        "cifar/degradation_study.yaml",
        "lazy/faster_rcnn_r101_c4.py",
        "lazy/faster_rcnn_r50_fpn.py",
    } <= set(model_zoo.list_configs())


def test_get_config_gives_unfrozen_configs_of_the_right_kind():
    det = model_zoo.get_config("coco_r101.yaml")
    assert det.MODEL.RESNETS.DEPTH == 101 and det.MODEL.RESDET.SHORTCUT == "B"
    assert not det.is_frozen()
    pre = model_zoo.get_config("demo/pretrain_r18.yaml")  # a pretraining config outside imagenet/
    assert pre.PRETRAIN.RECIPE == "demo" and pre.INPUT.CROP_SIZE == 64
    cifar = model_zoo.get_config("cifar/resnet110.yaml")
    assert cifar.PRETRAIN.DATASET == "cifar" and cifar.MODEL.RESNETS.DEPTH == 110


def test_unknown_config_name_is_one_line_with_close_names(tmp_path):
    with pytest.raises(
        ConfigError,
        match=r"'coco_r100.yaml' is not a shipped resdet config; "
        r"close names: coco_r101.yaml",
    ) as e:
        model_zoo.get_config("coco_r100.yaml")
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="no such file, and"):
        resolve_config_file(tmp_path / "nope.yaml")
    mine = tmp_path / "mine.yaml"
    mine.write_text("MODEL:\n  RESNETS:\n    DEPTH: 50\n")
    assert resolve_config_file(mine) == mine  # an existing file is used as given


def test_model_zoo_is_detectron2s_idiom_after_import_resdet():
    """``import resdet`` then ``resdet.model_zoo``, and Detectron2's own idiom
    ``LazyConfig.load(model_zoo.get_config_file(name))`` (a str path, as Detectron2's)."""
    from detectron2.config import LazyConfig

    import resdet

    path = resdet.model_zoo.get_config_file("lazy/faster_rcnn_r50_fpn.py")
    assert isinstance(path, str)
    assert LazyConfig.load(path).model.backbone.bottom_up.depth == 50


@pytest.mark.parametrize(
    "require, outcome, rc",
    [
        ({}, "1 skipped", 0),
        ({"RESDET_REQUIRE_DATA": "1"}, "1 error", 1),
        ({"CI": "true"}, "1 error", 1),
    ],
)
def test_missing_shared_data_skips_for_a_newcomer_and_fails_in_ci(tmp_path, require, outcome, rc):
    """tests/conftest.py's shared_data fixture, run on a one-line test that uses it."""
    shutil.copy(REPO / "tests" / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_needs_data.py").write_text(
        "def test_it(shared_data):\n    assert shared_data.is_dir()\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "RESDET_REQUIRE_DATA")}
    env.update(require, RESDET_SHARED_DATA=str(tmp_path / "no-data"))
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-rs",
            "-p",
            "no:cacheprovider",
            "test_needs_data.py",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert outcome in r.stdout and r.returncode == rc, r.stdout[-2000:]
    assert "set RESDET_SHARED_DATA" in r.stdout  # the one line says what to do


# Run by the installed resdet: every command's --help through the dispatcher, in one process
HELP_SCRIPT = r"""
import contextlib, io, json
from resdet.tools import COMMANDS, main

seen = {}
for command in COMMANDS:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            main([command, "--help"])
        except SystemExit as e:
            seen[command] = [e.code, out.getvalue().splitlines()[0]]
print("HELP " + json.dumps(seen))
"""


def _detector_checkpoint(path):
    """A tiny R18-FPN detector (160 px, random weights) whose checkpoint carries its config,
    as a resdet training run's does."""
    import torch
    from detectron2.modeling import build_model

    from resdet.engine import load

    setup = load(
        "coco_r50_fpn.yaml",
        overrides=[
            "MODEL.RESNETS.DEPTH", "18", "MODEL.RESNETS.RES2_OUT_CHANNELS", "64",
            "MODEL.FPN.OUT_CHANNELS", "64", "MODEL.ROI_BOX_HEAD.FC_DIM", "128",
            "INPUT.MIN_SIZE_TEST", "160", "INPUT.MAX_SIZE_TEST", "256", "MODEL.DEVICE", "cpu",
        ],
        kind="detection",
    )  # fmt: skip
    torch.manual_seed(0)
    model = build_model(setup.cfg)
    torch.save({"model": model.state_dict(), "meta": setup.checkpoint_meta()}, path)
    return path


def test_installed_commands_run_from_an_empty_folder(installed, shared_data, tmp_path):
    """`resdet ...` (the console script) and `python -m resdet ...` of the wheel, outside
    the checkout: the command list, every command's help, and real commands with their
    exit status and outputs: convert, predict, evaluate, a bad source."""
    import torch
    import torchvision

    python, _ = installed
    script = python.parent / "resdet"
    empty = tmp_path / "elsewhere"
    empty.mkdir()
    coco = shared_data / "coco128"
    gt = coco / "annotations" / "instances_train2017.json"

    def run(*argv):
        return subprocess.run(
            [str(a) for a in argv],
            cwd=empty,
            env=_clean_env(),
            capture_output=True,
            text=True,
            timeout=300,
        )

    r = run(script, "--help")
    assert r.returncode == 0 and r.stdout.startswith("usage: resdet ")
    r = run(python, "-c", HELP_SCRIPT)
    assert r.returncode == 0, r.stderr[-2000:]
    helps = json.loads(next(s for s in r.stdout.splitlines() if s.startswith("HELP "))[5:])
    from resdet.tools import COMMANDS

    assert list(helps) == list(COMMANDS)
    for command, (code, usage) in helps.items():
        assert code == 0 and usage.startswith(f"usage: resdet {command} "), (command, usage)

    # convert: torchvision's ResNet-18 (random weights) into a verified FPN backbone
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), tmp_path / "tv.pth")
    r = run(
        script, "convert", tmp_path / "tv.pth", tmp_path / "r18.pth", "--layout", "fpn", "--verify"
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"wrote {tmp_path / 'r18.pth'}" in r.stdout and "MODEL.RESNETS.DEPTH 18" in r.stdout
    assert torch.load(tmp_path / "r18.pth", weights_only=True)["meta"]["depth"] == 18

    # predict: two coco128 images with a detector whose checkpoint carries its config
    weights = _detector_checkpoint(tmp_path / "det.pth")
    images = [coco / "train2017" / n for n in ("000000000009.jpg", "000000000025.jpg")]
    out = tmp_path / "pred"
    r = run(script, "predict", *images, "--weights", weights, "--output", out, "--threshold", "0")
    assert r.returncode == 0, r.stderr[-2000:]
    results = json.loads((out / "predictions.json").read_text())
    assert [im["file_name"] for im in results["images"]] == [p.name for p in images]
    assert r.stdout.startswith(f"2 images: {len(results['annotations'])} detections")
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [p.name for p in images] + ["predictions.json"]
    )

    # evaluate, through `python -m resdet`: the ground truth itself as predictions (AP 100;
    # tests/test_predict.py scores predict's own file)
    truth = json.loads(gt.read_text())["annotations"]
    perfect = [dict(a, score=1.0) for a in truth if not a["iscrowd"]]
    (tmp_path / "perfect.json").write_text(json.dumps(perfect))
    r = run(
        python,
        "-m",
        "resdet",
        "evaluate",
        "--gt",
        gt,
        "--pred",
        tmp_path / "perfect.json",
        "--output",
        tmp_path / "m.json",
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads((tmp_path / "m.json").read_text())["bbox"]["AP"] == pytest.approx(100.0)

    # a bad source: one line, exit 2
    r = run(script, "predict", "missing.jpg", "--weights", weights, "--output", tmp_path / "p2")
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        "error: missing.jpg: no such file or folder"
    ]
    assert not any(empty.iterdir())  # nothing written where it ran but what it was told
