"""Top-1/top-5 evaluation of a classifier: centre crop, the paper's 10-crop, and
multi-scale fully-convolutional testing.

Multi-scale testing needs no conv-ified FC layer: the resdet classifier ends in global
average pooling followed by ``linear``, which is exactly the paper's fully-convolutional
form (the FC applied at every position, scores averaged) evaluated on the whole image.
Scores (softmax) are averaged over crops or scales. Works across processes: each rank
evaluates its shard (Detectron2's InferenceSampler) and the counts are summed.
"""

import torch
from detectron2.data.samplers import InferenceSampler
from detectron2.utils import comm
from timm.utils import accuracy
from torch.utils.data import DataLoader

from ..errors import DatasetError
from .data import ClassFolder, collate_skip_bad
from .transforms import build_test_transform, test_decode_size

__all__ = ["predict", "topk_correct", "evaluate", "evaluate_modes", "build_test_loader"]


def _probs(model, x):
    logits = model(x)["linear"]  # softmax in at least fp32, also under autocast
    return logits.to(torch.promote_types(logits.dtype, torch.float32)).softmax(dim=1)


@torch.no_grad()
def predict(model, images, mode: str = "1crop", autocast=None):
    """Class scores (N, K), softmax averaged over the crops/scales of each image.

    ``images``: (N,C,H,W) for 1crop, (N,10,C,H,W) for 10crop, a list of per-image lists
    of (C,H_s,W_s) tensors for multiscale. ``autocast``: kwargs for torch.autocast.
    """
    param = next(model.parameters())
    device, dtype = param.device, param.dtype
    with torch.autocast(device.type, **(autocast or {"enabled": False})):
        if mode == "multiscale":
            return torch.stack(
                [
                    torch.stack([_probs(model, s.to(device, dtype)[None])[0] for s in scales]).mean(
                        0
                    )
                    for scales in images
                ]
            )
        images = images.to(device, dtype)
        if mode == "10crop":
            n, k = images.shape[:2]
            return _probs(model, images.flatten(0, 1)).view(n, k, -1).mean(1)
        return _probs(model, images)


def topk_correct(scores, labels, ks=(1, 5)):
    """Number of samples whose label is among the top-k scores, per k (k capped at K):
    timm's ``accuracy`` (a percentage of the batch) as counts, which sum over batches."""
    n = len(labels)
    if n == 0:
        return [0 for _ in ks]
    return [round(float(a) * n / 100) for a in accuracy(scores, labels.to(scores.device), topk=ks)]


def build_test_loader(cfg, samples, mode: str):
    dataset = ClassFolder(samples, build_test_transform(cfg, mode), test_decode_size(cfg, mode))
    batch = (
        1
        if mode == "multiscale"
        else max(1, cfg.PRETRAIN.TEST.IMS_PER_BATCH // (10 if mode == "10crop" else 1))
    )
    return DataLoader(
        dataset,
        batch_size=batch,
        sampler=InferenceSampler(len(dataset)),
        num_workers=max(cfg.DATALOADER.NUM_WORKERS, 0),
        collate_fn=collate_skip_bad,
    )


@torch.no_grad()
def evaluate(model, loader, mode: str = "1crop", autocast=None):
    """``{"top1", "top5"}`` fractions over the readable images, plus ``images`` and
    ``bad_images`` counts (summed over processes)."""
    was_training = model.training
    model.eval()
    counts = torch.zeros(4, dtype=torch.long)  # top1, top5, images, bad
    try:
        for images, labels, num_bad in loader:
            counts[3] += num_bad
            if labels is None:
                continue
            c1, c5 = topk_correct(predict(model, images, mode, autocast), labels)
            counts += torch.tensor([c1, c5, len(labels), 0])
    finally:
        model.train(was_training)
    counts = sum(comm.all_gather(counts))
    if int(counts[2]) == 0:  # a top-1 over no images is no result
        raise DatasetError(
            f"no readable image in the evaluation set ({int(counts[3])} unreadable); "
            "check PRETRAIN.DATA.VAL_SPLIT's images"
        )
    n = int(counts[2])
    return {
        "top1": int(counts[0]) / n,
        "top5": int(counts[1]) / n,
        "images": int(counts[2]),
        "bad_images": int(counts[3]),
    }


def evaluate_modes(cfg, model, samples, modes=None, autocast=None):
    """Evaluate ``model`` on ``samples`` in each of ``modes`` (default PRETRAIN.TEST.MODES)."""
    modes = list(modes or cfg.PRETRAIN.TEST.MODES)
    return {m: evaluate(model, build_test_loader(cfg, samples, m), m, autocast) for m in modes}
