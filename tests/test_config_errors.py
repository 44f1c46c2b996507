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
