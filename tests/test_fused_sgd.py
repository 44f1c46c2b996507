"""The pretraining engine's fused SGD gives the update Detectron2's plain SGD gives."""

import copy

import torch
from detectron2.solver import build_optimizer

from resdet.modeling import build_resnet
from resdet.pretrain import get_pretrain_cfg
from resdet.pretrain.engine import build_sgd


def test_fused_sgd_matches_plain_sgd():
    cfg = get_pretrain_cfg()
    cfg.SOLVER.BASE_LR, cfg.SOLVER.MOMENTUM, cfg.SOLVER.WEIGHT_DECAY = 0.1, 0.9, 1e-4
    cfg.SOLVER.WEIGHT_DECAY_NORM, cfg.SOLVER.BIAS_LR_FACTOR = 0.0, 2.0  # per-group rules matter
    a = build_resnet(20, dataset="cifar", num_classes=10)
    b, initial = copy.deepcopy(a), copy.deepcopy(a)
    opt_a, opt_b = build_optimizer(cfg, a), build_sgd(cfg, b)
    assert all(g["fused"] for g in opt_b.param_groups)
    # the same parameter groups (learning rate, weight decay) as Detectron2's
    assert [(g["lr"], g["weight_decay"], len(g["params"])) for g in opt_a.param_groups] == [
        (g["lr"], g["weight_decay"], len(g["params"])) for g in opt_b.param_groups
    ]
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    for _ in range(3):
        for model, opt in ((a, opt_a), (b, opt_b)):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x)["linear"], y).backward()
            opt.step()
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.allclose(p, q, rtol=1e-5, atol=1e-6), name
    assert not torch.equal(b.linear.weight, initial.linear.weight)  # the steps did update
