"""Strict weight loading: weights that do not fit the detector's trunk stop the run.

Detectron2 loads what matches and logs "Skip loading parameter" for the rest, so a depth
or layout mistake trains from random initialisation with exit status 0. resdet checks
what the checkpointer reports instead: every trunk parameter (the ResNet of the backbone,
and the res5 stage that C4 detectors keep in their ROI head) must come from the file with
its shape, and the file must hold no trunk parameter the model lacks (R101 weights in an
R50 model). Heads that are new when fine-tuning (FPN, RPN, box predictor) may be missing
or reshaped. RESDET.WEIGHTS.STRICT False turns the error into Detectron2's warnings.
"""

from ..errors import CheckpointError

__all__ = ["is_trunk_key", "looks_like_classifier", "check_loaded_weights"]

# trunk parameters: the ResNet (FPN: under backbone.bottom_up) and the C4 head's res5
_TRUNK = ("backbone.", "roi_heads.res5.")
# parts of backbone.* that a classifier never has: FPN's lateral/output convs, top block
_NOT_TRUNK = ("backbone.fpn_", "backbone.top_block.")
# first names of classifier state dicts: resdet/Detectron2 ResNet, torchvision, timm
_CLASSIFIER_ROOTS = ("stem.", "res2.", "res3.", "conv1.", "bn1.", "layer1.", "linear.", "fc.")
SHOWN = 4  # keys listed in an error


def is_trunk_key(key: str) -> bool:
    return key.startswith(_TRUNK) and not key.startswith(_NOT_TRUNK)


def looks_like_classifier(keys) -> bool:
    """A state dict of a ResNet classifier (nothing of a detector in it)."""
    keys = list(keys)
    return (
        bool(keys)
        and not any(k.startswith(("backbone.", "roi_heads.", "proposal_generator.")) for k in keys)
        and any(k.startswith(_CLASSIFIER_ROOTS) for k in keys)
    )


def _layout(model_keys):
    return "fpn" if any(k.startswith("backbone.bottom_up.") for k in model_keys) else "c4"


def check_loaded_weights(path, model_keys, checkpoint_keys, incompatible, strict=True):
    """Raise CheckpointError when the loaded ``path`` does not fill the model's trunk.

    Args:
        model_keys: the model's state-dict keys; checkpoint_keys: the file's (after
            Detectron2's name matching); incompatible: fvcore's ``_IncompatibleKeys``.
    Returns the list of problems (empty when the weights fit); with ``strict`` False they
    are returned for logging instead of raised.
    """
    model_keys, checkpoint_keys = list(model_keys), list(checkpoint_keys)
    if looks_like_classifier(checkpoint_keys) and any(is_trunk_key(k) for k in model_keys):
        layout = _layout(model_keys)
        out = str(path).rsplit(".", 1)[0] + f"_{layout}.pth"
        msg = (
            f"{path}: a classifier checkpoint, not converted for Detectron2 (no 'backbone.' "
            f"keys); run `python tools/convert_weights.py {path} {out} --layout {layout} "
            f"--verify` and set MODEL.WEIGHTS {out}"
        )
        if strict:
            raise CheckpointError(msg)
        return [msg]
    problems = []
    shapes = [(k, ck, mk) for k, ck, mk in incompatible.incorrect_shapes if is_trunk_key(k)]
    if shapes:
        listed = ", ".join(
            f"{k} {tuple(ck)} in the file vs {tuple(mk)} in the model"
            for k, ck, mk in shapes[:SHOWN]
        )
        problems.append(
            f"{len(shapes)} trunk parameters have other shapes ({listed}"
            f"{', ...' if len(shapes) > SHOWN else ''})"
        )
    missing = [k for k in incompatible.missing_keys if is_trunk_key(k)]
    if missing:
        problems.append(
            f"{len(missing)} trunk parameters are missing ({', '.join(missing[:SHOWN])}"
            f"{', ...' if len(missing) > SHOWN else ''})"
        )
    extra = [k for k in incompatible.unexpected_keys if is_trunk_key(k)]
    if extra:
        problems.append(
            f"{len(extra)} trunk parameters of the file are not in the model "
            f"({', '.join(extra[:SHOWN])}{', ...' if len(extra) > SHOWN else ''})"
        )
    if problems and strict:
        raise CheckpointError(
            f"{path}: does not fit the model: {'; '.join(problems)}. Use the config the weights "
            "were made for (converted weights come with an OUT.yaml fragment beside them; "
            "MODEL.RESNETS.DEPTH, RES2_OUT_CHANNELS and the layout must match), or set "
            "RESDET.WEIGHTS.STRICT False to load what fits"
        )
    return problems
