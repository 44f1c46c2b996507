"""The degradation study (paper Sec. 4.1-4.2, Figs. 1 and 6): plain vs residual CIFAR nets.

The paper's claim is about optimisation, not capacity: a deeper plain net ends with a
HIGHER training error than a shallower one, while the residual net of the same depth
does not. That is a comparison at equal iterations under one recipe, so the study trains
every net through :class:`resdet.pretrain.PretrainTrainer` with configs/cifar/degradation_study.yaml
(the paper's CIFAR recipe with a linear LR warm-up) and the same SOLVER.MAX_ITER. The
time budget only decides that number: the seconds per iteration of each net are measured
with a few timed steps of the engine itself (data loading included), and the iteration
count is the largest one at which all nets, their evaluations and the layer responses
fit the budget. The paper's LR drops (32k and 48k of 64k) keep their fractions of it;
the warm-up lasts a third of it, at most the paper's 400 iterations.

Output folder::

    plan.json          the request, the calibration and the iteration plan (a rerun reuses it)
    <net>/             one pretraining run per net (plain-20, resnet-20, ...): train_log.json
                       (the training log), metrics.json (the final evaluation), TensorBoard
                       events, curves.png, model_final.pth (contract 1)
    summary.json       {"plain-20": {"train_error", "test_error"}, ...} (fractions)
    curves.png         training error (dashed) and test error (bold) vs iterations
    responses.png/json layer responses of the trained nets (resdet.analysis.responses)
    verdict.json       the paper's three claims checked against the numbers

Each net is resumable: one with model_final.pth is not retrained, one that was killed
continues from its last checkpoint.
"""

import json
import logging
import math
import re
import time
from pathlib import Path

from ..config import merge_overrides
from ..engine.train import TRAIN_LOG
from ..errors import ConfigError
from ..io import atomic_write, safe_torch_load
from ..model_zoo import get_config_file
from ..pretrain import (
    PretrainTrainer,
    build_test_loader,
    evaluate,
    get_pretrain_cfg,
    load_splits,
)
from .responses import run_layer_responses

__all__ = [
    "BASE_CONFIG",
    "net_name",
    "net_cfg",
    "calibrate",
    "plan_iterations",
    "net_errors",
    "plot_study",
    "check_claims",
    "run_study",
]

logger = logging.getLogger(__name__)

BASE_CONFIG = "cifar/degradation_study.yaml"  # a shipped config (resdet.model_zoo)
EVAL_POINTS = 6  # evaluations per net (points of each curve); each is a pass over the test set
CFG_KEY = re.compile(r"^[A-Z][A-Z0-9_]*(\.[A-Z0-9_]+)+$")  # a config key such as SOLVER.BASE_LR
MIN_ITERS = 4  # the least that keeps the two scaled LR steps distinct and inside the run
MAX_WARMUP_ITERS = 400  # the paper's ResNet-110 warm-up length (Sec. 4.2)
# what the study sets itself; an override of these would break the equal-iteration rule
STUDY_KEYS = (
    "SOLVER.MAX_ITER",
    "SOLVER.STEPS",
    "SOLVER.WARMUP_ITERS",
    "TEST.EVAL_PERIOD",
    "SOLVER.CHECKPOINT_PERIOD",
    "PRETRAIN.LOG_PERIOD",
    "OUTPUT_DIR",
    "PRETRAIN.DATA.ROOT",
    "MODEL.RESNETS.DEPTH",
    "MODEL.RESDET.RESIDUAL",
    "SEED",
)


def net_name(depth: int, residual: bool) -> str:
    """``plain-20`` / ``resnet-20``: the names run_layer_responses gives the same nets."""
    return f"{'resnet' if residual else 'plain'}-{depth}"


def net_cfg(depth: int, residual: bool, data, output_dir, seed: int = 0, opts=()):
    """The paper's CIFAR recipe for one net of the study (before the iteration plan)."""
    opts = list(opts)
    if len(opts) % 2:
        raise ConfigError(f"overrides must be KEY VALUE pairs, got {opts}")
    for key in opts[::2]:
        if key in STUDY_KEYS:
            raise ConfigError(
                f"override {key}: set by the study itself (--depths, --data, --output, --seed, "
                f"--budget-minutes); remove it"
            )
    cfg = get_pretrain_cfg()
    cfg.merge_from_file(str(get_config_file(BASE_CONFIG)))
    cfg.DATALOADER.NUM_WORKERS = 0  # the study runs the nets one after another on few cores
    merge_overrides(cfg, opts, "override")
    cfg.merge_from_list(
        [
            "PRETRAIN.DATA.ROOT",
            str(data),
            "OUTPUT_DIR",
            str(Path(output_dir) / net_name(depth, residual)),
            "MODEL.RESNETS.DEPTH",
            depth,
            "MODEL.RESDET.RESIDUAL",
            residual,
            "SEED",
            seed,
        ]
    )
    return cfg


def calibrate(cfg, iters: int = 3) -> dict:
    """Seconds per training iteration (loader + step, after one warm-up step) and seconds
    per evaluation pass over the validation split, measured with the engine's own parts."""
    trainer = PretrainTrainer(cfg)
    trainer.run_step()  # warm-up; each step draws the next batch from the training loader
    tick = time.perf_counter()
    for _ in range(iters):
        trainer.run_step()
    sec_per_iter = (time.perf_counter() - tick) / iters
    val = trainer.val_samples
    subset = val[: max(1, cfg.PRETRAIN.TEST.IMS_PER_BATCH)]
    tick = time.perf_counter()
    evaluate(trainer.model, build_test_loader(cfg, subset, "1crop"), "1crop", trainer.autocast)
    eval_sec = (time.perf_counter() - tick) * len(val) / len(subset)
    return {"sec_per_iter": sec_per_iter, "eval_sec": eval_sec}


def plan_iterations(
    calibration: dict,
    budget_s: float,
    base_steps,
    base_max_iter: int,
    eval_points: int = EVAL_POINTS,
) -> dict:
    """The one iteration count N every net trains for, and the schedule scaled to it.

    ``calibration``: ``{net: {"sec_per_iter", "eval_sec"}}``. All nets together must fit
    ``budget_s``: N * sum(sec_per_iter) for training plus, per net, at most
    ``eval_points`` evaluations during training, the final one and the layer responses
    (one more pass). N is at least MIN_ITERS, whatever the budget.
    """
    train_s = sum(c["sec_per_iter"] for c in calibration.values())
    eval_s = sum(c["eval_sec"] for c in calibration.values()) * (eval_points + 2)
    n = max(MIN_ITERS, math.floor((budget_s - eval_s) / train_s))
    eval_period = math.ceil(n / eval_points)
    return {
        "iterations": n,
        "steps": [n * s // base_max_iter for s in base_steps],
        # ends before the first LR drop (at n/2), whatever n
        "warmup_iters": min(n // 3, MAX_WARMUP_ITERS),
        "eval_period": eval_period,
        # a multiple of the eval period: a resumed run's training-error windows stay whole
        "checkpoint_period": 2 * eval_period,
        "estimated_s": n * train_s + eval_s,
    }


def _history(net_dir: Path):
    """The net's training log (the JSON-lines train_log.json)."""
    return [
        json.loads(line) for line in (net_dir / TRAIN_LOG).read_text().splitlines() if line.strip()
    ]


def net_errors(net_dir) -> dict:
    """``train_error``: the training-batch top-1 error over the last evaluation interval
    (the engine's ``train/top1_err`` in train_log.json); ``test_error``: final val top-1
    error (metrics.json, the final evaluation)."""
    net_dir = Path(net_dir)
    train = [r["train/top1_err"] for r in _history(net_dir) if "train/top1_err" in r]
    if not train:
        raise ConfigError(
            f"{net_dir / TRAIN_LOG}: no train/top1_err entry (the run logged no evaluation)"
        )
    top1 = json.loads((net_dir / "metrics.json").read_text())["top1"]
    return {"train_error": train[-1], "test_error": 1 - top1}


def plot_study(output_dir, names, png_path) -> None:
    """The paper's Figs. 1/6: plain nets left, ResNets right; training error dashed,
    test error bold, one colour per depth, in percent against iterations."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    depths = sorted({int(n.split("-")[1]) for n in names})
    colors = dict(
        zip(
            depths, plt.cm.viridis([i / max(len(depths) - 1, 1) * 0.85 for i in range(len(depths))])
        )
    )
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, kind in zip(axes, ("plain", "resnet")):
        for d in depths:
            rows = _history(Path(output_dir) / f"{kind}-{d}")
            for key, style, width, label in (
                ("train/top1_err", "--", 1.0, "train"),
                ("val/top1_err", "-", 2.5, "test"),
            ):
                pts = [(r["iteration"] + 1, 100 * r[key]) for r in rows if key in r]
                ax.plot(*zip(*pts), style, lw=width, color=colors[d], label=f"{kind}-{d} {label}")
        ax.set(title="plain networks" if kind == "plain" else "ResNets", xlabel="iteration")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_ylabel("top-1 error (%)")
    fig.tight_layout()
    with atomic_write(png_path) as f:
        fig.savefig(f, format="png", dpi=100)
    plt.close(fig)


def check_claims(summary: dict, responses: dict, depths) -> dict:
    """The paper's claims against the measured numbers: deepest plain net trains worse
    than the shallowest (degradation), the deepest ResNet trains better than the plain
    net of its depth, and residual layer responses are smaller at every depth."""
    lo, hi = min(depths), max(depths)
    p_lo, p_hi, r_hi = (
        summary[n]["train_error"] for n in (f"plain-{lo}", f"plain-{hi}", f"resnet-{hi}")
    )
    std = {n: r["mean_std"] for n, r in responses.items()}
    smaller = {d: std[f"resnet-{d}"] < std[f"plain-{d}"] for d in depths}
    yes = {True: "yes", False: "NO"}
    lines = [
        f"degradation (plain-{hi} train error {p_hi:.4f} "
        f"> plain-{lo} {p_lo:.4f}): {yes[p_hi > p_lo]}",
        f"residual learning (resnet-{hi} train error {r_hi:.4f} "
        f"< plain-{hi} {p_hi:.4f}): {yes[r_hi < p_hi]}",
    ]
    lines += [
        f"smaller responses (resnet-{d} mean std {std[f'resnet-{d}']:.4f} < plain-{d} "
        f"{std[f'plain-{d}']:.4f}): {yes[smaller[d]]}"
        for d in depths
    ]
    return {
        "degradation": p_hi > p_lo,
        "resnet_beats_plain": r_hi < p_hi,
        "responses_smaller": {str(d): s for d, s in smaller.items()},
        "lines": lines,
    }


def _check_depths(depths):
    for d in depths:
        if d < 8 or (d - 2) % 6:
            raise ConfigError(
                f"--depths {d}: CIFAR nets have 6n+2 layers (8, 14, 20, 32, 44, 56, 110, ...)"
            )
    if len(set(depths)) < 2:
        raise ConfigError(
            f"--depths {' '.join(map(str, depths))}: give at least two different depths to compare"
        )
    return sorted(set(depths))


def _load_or_make_plan(
    output_dir: Path, request: dict, nets, budget_s: float, started: float
) -> dict:
    """plan.json: made once (calibration), then reused so that every net of the study,
    also one trained by a later run, gets the same number of iterations."""
    path = output_dir / "plan.json"
    if path.is_file():
        plan = json.loads(path.read_text())
        for key, value in request.items():
            if plan["request"].get(key) != value:
                raise ConfigError(
                    f"{path}: planned with {key}={plan['request'].get(key)!r}, not {value!r}; "
                    f"rerun with the same arguments or use a new --output"
                )
        logger.info("reusing %s: %d iterations per net", path, plan["iterations"])
        return plan
    calibration = {}
    for name, cfg in nets.items():
        calibration[name] = calibrate(cfg)
        logger.info(
            "calibration %s: %.3f s/iteration, %.1f s per evaluation",
            name,
            calibration[name]["sec_per_iter"],
            calibration[name]["eval_sec"],
        )
    cfg = next(iter(nets.values()))
    left = budget_s - (time.perf_counter() - started)
    plan = plan_iterations(calibration, left, cfg.SOLVER.STEPS, cfg.SOLVER.MAX_ITER)
    if plan["estimated_s"] > left:
        logger.warning(
            "the budget leaves %.0f s after calibration; the minimum of %d iterations needs"
            " about %.0f s",
            left,
            plan["iterations"],
            plan["estimated_s"],
        )
    plan.update(request=request, calibration=calibration)
    output_dir.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "w") as f:
        json.dump(plan, f, indent=1)
    logger.info(
        "plan: %d iterations per net (LR warm-up %d, steps %s, evaluation every %d), about"
        " %.0f s of training",
        plan["iterations"],
        plan["warmup_iters"],
        plan["steps"],
        plan["eval_period"],
        plan["estimated_s"],
    )
    return plan


def run_study(
    depths, data, output_dir, budget_minutes: float = 20.0, seed: int = 0, opts=()
) -> dict:
    """Train plain and residual nets of each depth at equal iterations within the budget;
    write summary.json, curves.png, responses.png/json and verdict.json; return
    ``{"summary", "responses", "verdict", "plan"}``."""
    from detectron2.utils.logger import setup_logger

    setup_logger(name="detectron2")  # each net's progress lines (once: setup_logger is cached)

    started = time.perf_counter()
    output_dir = Path(output_dir)
    depths = _check_depths(depths)
    if budget_minutes <= 0:
        raise ConfigError(f"--budget-minutes {budget_minutes}: must be positive")
    nets = {
        net_name(d, r): net_cfg(d, r, data, output_dir, seed, opts)
        for d in depths
        for r in (False, True)
    }
    first = next(iter(nets.values()))
    _, _, val = load_splits(first)  # a bad --data stops here, before anything is written
    request = {
        "depths": depths,
        "data": str(Path(data).resolve()),
        "seed": seed,
        "opts": [str(o) for o in opts],
        "budget_minutes": budget_minutes,
    }
    plan = _load_or_make_plan(output_dir, request, nets, budget_minutes * 60, started)

    for i, (name, cfg) in enumerate(nets.items(), 1):
        cfg.merge_from_list(
            [
                "SOLVER.MAX_ITER",
                plan["iterations"],
                "SOLVER.STEPS",
                tuple(plan["steps"]),
                # a plan.json from before the warm-up trained its nets without one
                "SOLVER.WARMUP_ITERS",
                plan.get("warmup_iters", 0),
                "TEST.EVAL_PERIOD",
                plan["eval_period"],
                "SOLVER.CHECKPOINT_PERIOD",
                plan["checkpoint_period"],
                "PRETRAIN.LOG_PERIOD",
                min(cfg.PRETRAIN.LOG_PERIOD, plan["eval_period"]),
            ]
        )
        final = Path(cfg.OUTPUT_DIR) / "model_final.pth"
        if final.is_file():
            done = safe_torch_load(final)["meta"]["metrics"]["iterations"]
            if done != plan["iterations"]:
                raise ConfigError(
                    f"{final}: trained {done} iterations, the plan says {plan['iterations']}; "
                    f"remove it or use a new --output"
                )
            logger.info("[%d/%d] %s: %s exists, not retrained", i, len(nets), name, final)
            continue
        logger.info("[%d/%d] %s: training %d iterations", i, len(nets), name, plan["iterations"])
        cfg.freeze()
        # in the study's folder, not a run folder of its own: a killed net continues
        PretrainTrainer(cfg, resume=True).train()

    summary = {name: net_errors(cfg.OUTPUT_DIR) for name, cfg in nets.items()}
    with atomic_write(output_dir / "summary.json", "w") as f:
        json.dump(summary, f, indent=1)
    plot_study(output_dir, list(nets), output_dir / "curves.png")
    responses = run_layer_responses(
        [Path(cfg.OUTPUT_DIR) / "model_final.pth" for cfg in nets.values()],
        Path(data) / first.PRETRAIN.DATA.VAL_SPLIT,
        output_dir,
        max_images=len(val),
    )
    verdict = check_claims(summary, responses, depths)
    with atomic_write(output_dir / "verdict.json", "w") as f:
        json.dump(verdict, f, indent=1)
    logger.info(
        "study done in %.0f s (budget %.0f s)", time.perf_counter() - started, budget_minutes * 60
    )
    return {"summary": summary, "responses": responses, "verdict": verdict, "plan": plan}
