"""Config files and KEY VALUE overrides fail in one line that names the file and key."""

import glob

import pytest
from conftest import REPO

from resdet.config import (
    check_solver,
    check_weights_path,
    get_pretrain_cfg,
    get_resdet_cfg,
    load_config,
    merge_config_file,
    merge_overrides,
)
from resdet.engine import load, resolve_device
from resdet.errors import ConfigError


@pytest.mark.parametrize(
    "pattern,base",
    [
        ("*.yaml", get_resdet_cfg),
        ("demo/det_*.yaml", get_resdet_cfg),
        ("imagenet/*.yaml", get_pretrain_cfg),
        ("cifar/*.yaml", get_pretrain_cfg),
    ],
)
def test_checked_merge_equals_detectron2_merge(pattern, base):
    files = sorted(glob.glob(str(REPO / "configs" / pattern)))
    assert files
    for f in files:
        ours, theirs = base(), base()
        merge_config_file(ours, f)
        theirs.merge_from_file(f)
        assert ours.dump() == theirs.dump(), f


@pytest.mark.parametrize(
    "opts,fragment",
    [
        (["SOLVER.MAX_ITERS", "3"], "did you mean SOLVER.MAX_ITER"),
        (["SEED", "abc"], "SEED must be a whole number"),
        (["SOLVER.MAX_ITER"], "'SOLVER.MAX_ITER' has no value"),
        (["MODEL", "3"], "MODEL is a group of keys"),
        (["MODEL.RESNETS.DEPTH", "'fifty'"], "MODEL.RESNETS.DEPTH must be a whole number"),
        (["NOPE.KEY", "1"], "unknown config key NOPE.KEY"),
        # `resdet train --config c.yaml SOLVER.MAX_ITER 2 --eval-only`: argparse hands the
        # flag to the overrides, where it read as "has no value" or as a key
        (["SOLVER.MAX_ITER", "2", "--eval-only"], "'--eval-only' is an option.*before"),
        (["SOLVER.MAX_ITER", "2", "--resume", "x"], "'--resume' is an option"),
    ],
)
def test_bad_overrides(opts, fragment):
    with pytest.raises(ConfigError, match=fragment):
        merge_overrides(get_resdet_cfg(), opts)


def test_numbers_are_coerced_where_the_type_allows():
    cfg = merge_overrides(get_resdet_cfg(), ["SOLVER.BASE_LR", "2", "SOLVER.MAX_ITER", "1e3"])
    assert cfg.SOLVER.BASE_LR == 2.0 and isinstance(cfg.SOLVER.BASE_LR, float)
    assert cfg.SOLVER.MAX_ITER == 1000 and isinstance(cfg.SOLVER.MAX_ITER, int)
    with pytest.raises(ConfigError, match="SOLVER.MAX_ITER must be a whole number"):
        merge_overrides(get_resdet_cfg(), ["SOLVER.MAX_ITER", "2.5"])


@pytest.mark.parametrize(
    "text,fragment",
    [
        ('_BASE_: "nope.yaml"\n', "_BASE_ .*nope.yaml does not exist"),
        ("SOLVER:\n  BASE_LR: [1\n", "not valid YAML at line 3"),
        ("- 1\n- 2\n", "not a config file"),
        (
            "SOLVER:\n  MAX_ITERS: 3\n",
            "unknown config key SOLVER.MAX_ITERS; did you mean SOLVER.MAX_ITER",
        ),
        ("VERSION: 1\n", "VERSION 1"),
    ],
)
def test_bad_config_files(tmp_path, text, fragment):
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=fragment) as e:
        merge_config_file(get_resdet_cfg(), f)
    assert str(f) in str(e.value) and "\n" not in str(e.value)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        merge_config_file(get_resdet_cfg(), tmp_path / "none.yaml")


@pytest.mark.parametrize(
    "opts,fragment",
    [
        (["SOLVER.MAX_ITER", "-5"], "SOLVER.MAX_ITER must be positive, got -5"),
        (["SOLVER.BASE_LR", "0"], "SOLVER.BASE_LR must be a positive number"),
        (["SOLVER.BASE_LR", "float('nan')"], "SOLVER.BASE_LR"),
        (["SOLVER.IMS_PER_BATCH", "0"], "SOLVER.IMS_PER_BATCH must be positive"),
        (["SOLVER.CHECKPOINT_PERIOD", "0"], "SOLVER.CHECKPOINT_PERIOD must be positive"),
    ],
)
def test_unusable_solver_values(opts, fragment):
    cfg = get_resdet_cfg()
    try:
        merge_overrides(cfg, opts)
    except ConfigError as e:  # a value that is not even a literal fails here, also fine
        assert opts[0] in str(e)
        return
    with pytest.raises(ConfigError, match=fragment):
        check_solver(cfg)


def test_weights_must_be_a_local_file(tmp_path):
    cfg = get_resdet_cfg()
    cfg.MODEL.WEIGHTS = str(tmp_path / "missing.pth")
    with pytest.raises(ConfigError, match="missing.pth: no such file"):
        check_weights_path(cfg)
    cfg.MODEL.WEIGHTS = "detectron2://ImageNetPretrained/MSRA/R-50.pkl"
    with pytest.raises(ConfigError, match="local files only"):
        check_weights_path(cfg)


def test_a_key_written_twice_is_an_error(tmp_path):
    """PyYAML keeps the last of two equal keys without a word: one of two settings a user
    wrote would be ignored."""
    f = tmp_path / "twice.yaml"
    f.write_text("SOLVER:\n  BASE_LR: 0.1\n  MAX_ITER: 10\n  BASE_LR: 0.01\n")
    with pytest.raises(ConfigError, match=r"key BASE_LR is written twice \(lines 2 and 4\)") as e:
        load_config(f)
    assert str(e.value).startswith(str(f))


def test_a_base_cycle_is_an_error(tmp_path):
    (tmp_path / "a.yaml").write_text('_BASE_: "b.yaml"\nSEED: 1\n')
    (tmp_path / "b.yaml").write_text('_BASE_: "a.yaml"\nSEED: 2\n')
    with pytest.raises(
        ConfigError, match=r"_BASE_ files form a cycle \(a.yaml -> b.yaml -> a.yaml\)"
    ):
        load_config(tmp_path / "a.yaml")


@pytest.mark.parametrize(
    "overrides",
    [
        {"SOLVER.MAX_ITER": 7, "SOLVER.BASE_LR": 0.5},
        {"SOLVER": {"MAX_ITER": 7, "BASE_LR": 0.5}},
        ["SOLVER.MAX_ITER", "7", "SOLVER.BASE_LR", "0.5"],
        ["SOLVER.MAX_ITER=7", "SOLVER.BASE_LR=0.5"],
    ],
)
def test_overrides_as_a_dict_or_a_list(overrides):
    cfg = load_config("coco_r50_fpn.yaml", overrides).cfg
    assert cfg.SOLVER.MAX_ITER == 7 and cfg.SOLVER.BASE_LR == 0.5


@pytest.mark.parametrize(
    "overrides,fragment",
    [
        (["train.max_iters=2"], "unknown config key train.max_iters; did you mean train.max_iter"),
        ({"train.max_iters": 2}, "unknown config key train.max_iters; did you mean train.max_iter"),
        (["optimizer.lrr=0.1"], "unknown config key optimizer.lrr; did you mean optimizer.lr"),
        (["model.backbone.bottom_upp.depth=18"], "unknown config key model.backbone.bottom_upp"),
        (["train.max_iter"], "'train.max_iter' is not KEY=VALUE"),
        ("train.max_iter=2", "not the string"),
    ],
)
def test_lazyconfig_overrides_are_checked(overrides, fragment):
    """Detectron2's apply_overrides creates any key: train.max_iters=2 would start a
    90,000-iteration run."""
    with pytest.raises(ConfigError, match=fragment):
        load_config("lazy/faster_rcnn_r50_fpn.py", overrides)


def test_lazyconfig_overrides_apply_and_take_a_callables_keywords():
    cfg = load_config(
        "lazy/faster_rcnn_r50_fpn.py",
        {"train.max_iter": 3, "model.backbone.bottom_up.zero_init_residual": True},
    ).cfg
    assert cfg.train.max_iter == 3 and cfg.model.backbone.bottom_up.zero_init_residual is True
    cfg = load_config("lazy/faster_rcnn_r50_fpn.py", ["train.max_iter=4"]).cfg
    assert cfg.train.max_iter == 4


@pytest.mark.parametrize(
    "overrides,fragment",
    [
        (
            {"MODEL.ANCHOR_GENERATOR.SIZES": [[32], [64], [128]]},
            "MODEL.ANCHOR_GENERATOR.SIZES has 3 levels but MODEL.RPN.IN_FEATURES 5",
        ),
        (
            {"MODEL.RPN.IN_FEATURES": ["p2", "p3", "p4", "p5", "p7"]},
            "MODEL.RPN.IN_FEATURES: 'p7' is not a feature of the backbone",
        ),
        (
            {"MODEL.ROI_HEADS.IN_FEATURES": ["res4"]},
            "MODEL.ROI_HEADS.IN_FEATURES: 'res4' is not a feature of the backbone",
        ),
    ],
)
def test_detectron2_build_assertions_name_the_key(overrides, fragment):
    setup = load("coco_r50_fpn.yaml", overrides=overrides, device="cpu")
    with pytest.raises(ConfigError, match=fragment):
        setup.build_model()


def test_decreasing_steps_are_an_error():
    cfg = merge_overrides(get_resdet_cfg(), {"SOLVER.STEPS": (300, 200)})
    with pytest.raises(ConfigError, match=r"SOLVER.STEPS must be increasing iterations"):
        check_solver(cfg)
    cfg = merge_overrides(get_resdet_cfg(), {"SOLVER.STEPS": (2, 4), "SOLVER.MAX_ITER": 4})
    with pytest.raises(ConfigError, match=r"a step at SOLVER.MAX_ITER 4 changes no iteration"):
        check_solver(cfg)


def test_one_device_policy():
    import torch

    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == "cpu"
    with pytest.raises(ConfigError, match="MODEL.DEVICE 'gpu' is not a device"):
        resolve_device("gpu")
    if not torch.cuda.is_available():
        # named, not there: one line, the same from a config key and from an argument
        with pytest.raises(ConfigError, match="MODEL.DEVICE 'cuda': CUDA is not available"):
            load("coco_r50_fpn.yaml", overrides={"MODEL.DEVICE": "cuda"})
        with pytest.raises(ConfigError, match="device 'cuda:1': CUDA is not available"):
            load("coco_r50_fpn.yaml", device="cuda:1")
        with pytest.raises(ConfigError, match="train.device 'cuda': CUDA is not available"):
            load("lazy/faster_rcnn_r50_fpn.py", overrides=["train.device=cuda"])


def test_a_config_of_another_kind_is_an_error():
    with pytest.raises(ConfigError, match="a pretrain config, but a detection config is needed"):
        load("imagenet/r18.yaml", kind="detection")


# ---- issue 17 item 7: the kinds of mistake a new user makes that were not one line -------
@pytest.mark.parametrize(
    "opts,fragment",
    [
        # strings where numbers belong: an "unexpected TypeError" later, or silently kept
        (["SOLVER.STEPS", "('100',)"], "SOLVER.STEPS must be a list of numbers"),
        (["MODEL.PIXEL_MEAN", "['103', '116', '123']"], "MODEL.PIXEL_MEAN must be a list of num"),
        (["MODEL.ANCHOR_GENERATOR.SIZES", "[32, 64]"], "SIZES must be a list of lists"),
        (["MODEL.RPN.IN_FEATURES", "[2, 3]"], "IN_FEATURES must be a list of strings"),
        # values no run can use (silent nonsense, a misleading error or a crash before)
        (["MODEL.ROI_HEADS.SCORE_THRESH_TEST", "1.5"], r"SCORE_THRESH_TEST 1.5: must be in"),
        (["TEST.DETECTIONS_PER_IMAGE", "0"], "TEST.DETECTIONS_PER_IMAGE 0: must be at least 1"),
        (["MODEL.BACKBONE.FREEZE_AT", "7"], r"FREEZE_AT 7: must be in \[0, 5\]"),
        (["MODEL.RPN.BATCH_SIZE_PER_IMAGE", "0"], "BATCH_SIZE_PER_IMAGE 0: must be positive"),
        (["MODEL.FPN.OUT_CHANNELS", "0"], "MODEL.FPN.OUT_CHANNELS 0: must be positive"),
        (["MODEL.ANCHOR_GENERATOR.SIZES", "[[32, -64]]"], r"each value must be positive \(-64"),
        (["MODEL.ANCHOR_GENERATOR.SIZES", "[[]]"], "holds no value"),
        (["MODEL.PIXEL_STD", "[0.0, 1.0, 1.0]"], "MODEL.PIXEL_STD"),
        (["INPUT.FORMAT", "rgb"], "INPUT.FORMAT 'rgb': must be one of BGR, RGB"),
        (["SOLVER.MOMENTUM", "-0.5"], r"SOLVER.MOMENTUM -0.5: must be in \[0.0, 1.0\)"),
        (["SOLVER.LR_SCHEDULER_NAME", "Cosine"], "'Cosine': must be one of WarmupMultiStepLR"),
        (["DATALOADER.SAMPLER_TRAIN", "Random"], "'Random': must be one of TrainingSampler"),
    ],
)
def test_values_of_the_wrong_shape_or_range_are_one_line(opts, fragment):
    with pytest.raises(ConfigError, match=fragment):
        load_config("coco_r50_fpn.yaml", opts)


def test_detectron2_value_conventions_stay_valid():
    """0 turns the test resize off (Detectron2's convention), sizes may be fractional
    (RetinaNet's octave scales), ints are numbers in a list of floats."""
    cfg = load_config(
        "coco_r50_fpn.yaml",
        {
            "INPUT.MIN_SIZE_TEST": 0,
            "MODEL.ANCHOR_GENERATOR.SIZES": [[32, 40.3, 50.8], [64], [128], [256], [512]],
            "MODEL.PIXEL_MEAN": [103, 116, 123],
        },
    ).cfg
    assert cfg.INPUT.MIN_SIZE_TEST == 0
    assert cfg.MODEL.PIXEL_MEAN == [103.0, 116.0, 123.0]
    assert all(isinstance(v, float) for v in cfg.MODEL.PIXEL_MEAN)
    # pretraining has schedulers of its own: a detection-only choice does not apply there
    cfg = load_config("imagenet/r18.yaml", {"SOLVER.LR_SCHEDULER_NAME": "ReduceLROnPlateau"})
    assert cfg.cfg.SOLVER.LR_SCHEDULER_NAME == "ReduceLROnPlateau"


def test_an_empty_yaml_value_and_a_dotted_key_are_one_line(tmp_path):
    empty = tmp_path / "empty.yaml"
    empty.write_text("SOLVER:\n  MAX_ITER:\n")  # YAML reads null: a TypeError later before
    with pytest.raises(ConfigError, match=r"empty.yaml: SOLVER.MAX_ITER has no value"):
        load_config(empty)
    dotted = tmp_path / "dotted.yaml"
    dotted.write_text("SOLVER.BASE_LR: 0.01\n")  # "did you mean SOLVER.BASE_LR?" before
    with pytest.raises(ConfigError, match=r"SOLVER.BASE_LR is written as one dotted key"):
        load_config(dotted)


def test_overrides_as_key_value_tuples():
    """[(KEY, VALUE)]: what dict.items() gives (and Setup.overrides holds)."""
    cfg = load_config("coco_r50_fpn.yaml", [("SOLVER.MAX_ITER", 7), ("SEED", 3)]).cfg
    assert (cfg.SOLVER.MAX_ITER, cfg.SEED) == (7, 3)
    lazy = load_config("lazy/faster_rcnn_r50_fpn.py", [("train.max_iter", 7)]).cfg
    assert lazy.train.max_iter == 7


def test_home_folder_in_paths(tmp_path, monkeypatch):
    """ "~" in a config's paths (YAML, a quoted override, an argument) is the home folder,
    never a folder named "~" in the working directory."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    import torch

    weights = tmp_path / "w.pth"
    torch.save({"model": {}}, weights)
    setup = load(
        "coco_r50_fpn.yaml", overrides={"MODEL.WEIGHTS": "~/w.pth", "OUTPUT_DIR": "~/runs/a"}
    )
    assert setup.weights == str(weights) and setup.output_dir == tmp_path / "runs" / "a"
    assert load("coco_r50_fpn.yaml", output_dir="~/runs/b").output_dir == tmp_path / "runs/b"
    lazy = load("lazy/faster_rcnn_r50_fpn.py", overrides=["train.output_dir='~/runs/c'"])
    assert lazy.output_dir == tmp_path / "runs" / "c"


def test_a_relative_path_not_found_says_where_it_was_looked_for(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=f"from the working directory {tmp_path}"):
        load("coco_r50_fpn.yaml", overrides={"MODEL.WEIGHTS": "weights/r50.pth"})


def test_the_config_yaml_a_lazyconfig_run_saved_loads(tmp_path):
    """LazyConfig.save writes the heads' input_shape as a Python-object tag (ShapeSpec):
    "not valid YAML" before. It is plain data and loads; other Python tags are refused,
    and nothing runs (LazyConfig.load would yaml.unsafe_load it)."""
    from detectron2.config import LazyConfig

    saved = tmp_path / "config.yaml"
    LazyConfig.save(load_config("lazy/faster_rcnn_r50_fpn.py").cfg, str(saved))
    assert "!!python/object:detectron2.layers.shape_spec.ShapeSpec" in saved.read_text()
    setup = load(str(saved), overrides=["train.max_iter=3"], device="cpu")
    assert setup.kind == "lazy" and setup.cfg.train.max_iter == 3
    assert type(setup.build_model()).__name__ == "GeneralizedRCNN"
    marker = tmp_path / "PWNED"
    evil = tmp_path / "evil.yaml"
    evil.write_text(
        f"model:\n  x: !!python/object/apply:os.system ['touch {marker}']\ntrain: {{}}\n"
    )
    with pytest.raises(ConfigError, match="evil.yaml"):
        load_config(evil)
    assert not marker.exists()
    other = tmp_path / "other.yaml"
    other.write_text("model:\n  x: !!python/object:collections.OrderedDict {}\n")
    with pytest.raises(ConfigError, match="collections.OrderedDict is not plain data"):
        load_config(other)


def test_detectron2_builders_name_their_keys():
    """A value Detectron2's solver builders refuse that no check here knows (a LazyConfig's
    optimizer) is one line naming what was built, not "unexpected ValueError"."""
    setup = load("lazy/faster_rcnn_r50_fpn.py", overrides=["optimizer.momentum=-0.5"])
    model = setup.build_model()
    with pytest.raises(ConfigError, match=r"the optimizer cannot be built .*check optimizer"):
        setup.build_optimizer(model)


@pytest.mark.parametrize(
    "override,fragment",
    [
        # hydra's lexer stops at "~" and non-ASCII letters: a LexerNoViableAltException before
        ("train.output_dir=~/runs", "quote it: train.output_dir='~/runs'"),
        ("train.output_dir=runs/über", "quote it"),
        # a comma makes a multirun sweep object, which was stored in the config silently
        ("train.output_dir=runs,1", r"reads as a hydra sweep .*train.output_dir=\[runs,1\]"),
    ],
)
def test_lazyconfig_values_hydra_cannot_read_say_how_to_quote(override, fragment):
    with pytest.raises(ConfigError, match=fragment):
        load_config("lazy/faster_rcnn_r50_fpn.py", [override])
    quoted = override.replace("=", "='", 1) + "'"
    assert load_config("lazy/faster_rcnn_r50_fpn.py", [quoted]).cfg.train.output_dir


@pytest.mark.parametrize(
    "opts,fragment",
    [
        # pretraining's own builders raised a bare ValueError: an "unexpected" line
        (["MODEL.RESNETS.DEPTH", "77"], r"MODEL.RESNETS.DEPTH 77 \(PRETRAIN.DATASET cifar\)"),
        (["PRETRAIN.DATASET", "mnist"], "PRETRAIN.DATASET 'mnist': must be one of imagenet"),
        (["SOLVER.LR_SCHEDULER_NAME", "Cosine"], "ReduceLROnPlateau"),
        (["PRETRAIN.AUG.TRAIN_CROP", "random"], "TRAIN_CROP 'random': must be one of scale"),
    ],
)
def test_pretraining_values_are_checked_when_loading(opts, fragment):
    with pytest.raises(ConfigError, match=fragment):
        load("cifar/resnet20.yaml", overrides=opts)


def test_the_pretraining_crop_choices_are_pretrainings():
    from resdet.config.values import RULES
    from resdet.pretrain.transforms import TRAIN_CROPS

    rule = RULES["PRETRAIN.AUG.TRAIN_CROP"]
    assert all(rule.ok(c) for c in TRAIN_CROPS) and not rule.ok("random")
    assert rule.text == f"one of {', '.join(TRAIN_CROPS)}"
