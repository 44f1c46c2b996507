"""The pipeline's report: report.md and report.html over the same content.

Everything in it is read from what the stages wrote (manifest.json, metrics.json,
metrics.json, curves.png, predictions/), so the report cannot claim a number that
was not measured.
"""

import html
import json
import math
from pathlib import Path

from .io import atomic_write

__all__ = ["write_report", "prediction_grid"]

AP50_TARGET = 70.0  # the demo's promise, percent
SECONDS_TARGET = 600.0


def prediction_grid(images, path, columns=4, cell=256):
    """Tile prediction images into one PNG (the report's picture of what the model does)."""
    from PIL import Image

    images = list(images)
    if not images:
        return None
    rows = math.ceil(len(images) / columns)
    grid = Image.new("RGB", (columns * cell, rows * cell), "white")
    for i, p in enumerate(images):
        im = Image.open(p).convert("RGB")
        im.thumbnail((cell, cell))
        grid.paste(im, ((i % columns) * cell, (i // columns) * cell))
    with atomic_write(path) as f:
        grid.save(f, format="PNG")
    return path


def _fmt(v):
    if isinstance(v, float):
        return "n/a" if math.isnan(v) else f"{v:.2f}"
    return "n/a" if v is None else str(v)


def _sections(out: Path, manifest: dict, cfg, elapsed: float, grid):
    """Report content as (kind, payload) items: ("h", text), ("p", text), ("table", (head, rows)),
    ("img", relative path), ("code", text)."""
    stages = manifest.get("stages", {})
    ev_path = out / "evaluate" / "metrics.json"
    ev = json.loads(ev_path.read_text()) if ev_path.is_file() else {}
    coco = ev.get("coco", {})
    ap50 = coco.get("AP50")
    items = [("h", "resdet pipeline report")]
    ok_ap = ap50 is not None and ap50 >= AP50_TARGET
    items.append(
        (
            "table",
            (
                ["measure", "value", "target", "met"],
                [
                    [
                        "detector AP50 (COCO-style, test split)",
                        _fmt(ap50),
                        f">= {AP50_TARGET:.0f}",
                        "yes" if ok_ap else "no",
                    ],
                    ["detector AP@[.5:.95]", _fmt(coco.get("AP")), "", ""],
                    [
                        "detector AP50, VOC2007 11-point",
                        _fmt(ev.get("voc07", {}).get("AP50")),
                        "",
                        "",
                    ],
                    [
                        "elapsed seconds (all stages run this time)",
                        f"{elapsed:.0f}",
                        f"<= {SECONDS_TARGET:.0f}",
                        "yes" if elapsed <= SECONDS_TARGET else "no",
                    ],
                ],
            ),
        )
    )
    items.append(("h", "Stages"))
    items.append(
        (
            "table",
            (
                ["stage", "seconds", "metrics"],
                [
                    [s, _fmt(r.get("seconds")), json.dumps(r.get("metrics"), default=str)[:200]]
                    for s, r in stages.items()
                ],
            ),
        )
    )

    pre = out / "pretrain"
    items.append(("h", "1. Pretraining (resdet classifier)"))
    if (pre / "metrics.json").is_file():  # the evaluation results, as in every run folder
        e = json.loads((pre / "metrics.json").read_text())
        items.append(("p", f"Validation top-1 {e['top1']:.3f}, top-5 {e['top5']:.3f} (fractions)."))
    if (pre / "curves.png").is_file():
        items.append(("img", "pretrain/curves.png"))

    items.append(("h", "2. Conversion to Detectron2"))
    conv = stages.get("convert", {}).get("metrics", {}).get("max_abs_diff_per_stage", {})
    items.append(
        (
            "p",
            "Features of the classifier trunk and of the converted Detectron2 backbone, "
            "max abs difference per stage (must be < 1e-4):",
        )
    )
    items.append(("table", (["stage", "max abs diff"], [[k, f"{v:.2e}"] for k, v in conv.items()])))

    items.append(("h", "3-4. Faster R-CNN fine-tuning and evaluation"))
    if (out / "detect" / "curves.png").is_file():
        items.append(("img", "detect/curves.png"))
    rows = []
    for metric, res in ev.items():
        for k, v in sorted(res.items()):
            rows.append([metric, k, _fmt(v)])
    items.append(("table", (["metric", "name", "value (percent)"], rows)))
    if grid:
        items.append(("h", "Predictions on test images"))
        items.append(("img", str(Path(grid).relative_to(out))))

    items.append(("h", "Configs and versions"))
    items.append(("code", json.dumps(manifest.get("pipeline_config", {}), indent=1)))
    for name in ("pretrain/config.yaml", "detect/config.yaml"):
        if (out / name).is_file():
            items.append(("p", name))
            items.append(("code", (out / name).read_text()))
    versions = next((r.get("versions") for r in stages.values() if r.get("versions")), {})
    items.append(("table", (["package", "version"], [[k, v] for k, v in versions.items()])))
    return items


def _markdown(items):
    lines = []
    for kind, x in items:
        if kind == "h":
            lines += [("# " if x == items[0][1] else "## ") + x, ""]
        elif kind == "p":
            lines += [x, ""]
        elif kind == "table":
            head, rows = x
            lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
            lines += [
                "| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |" for r in rows
            ] + [""]
        elif kind == "img":
            lines += [f"![{x}]({x})", ""]
        elif kind == "code":
            lines += ["```", x.rstrip(), "```", ""]
    return "\n".join(lines)


def _html(items):
    e = html.escape
    body = []
    for kind, x in items:
        if kind == "h":
            body.append(f"<h1>{e(x)}</h1>" if x == items[0][1] else f"<h2>{e(x)}</h2>")
        elif kind == "p":
            body.append(f"<p>{e(x)}</p>")
        elif kind == "table":
            head, rows = x
            body.append(
                "<table><tr>"
                + "".join(f"<th>{e(h)}</th>" for h in head)
                + "</tr>"
                + "".join(
                    "<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in r) + "</tr>" for r in rows
                )
                + "</table>"
            )
        elif kind == "img":
            body.append(f'<img src="{e(x)}" alt="{e(x)}" style="max-width:100%">')
        elif kind == "code":
            body.append(f"<pre>{e(x)}</pre>")
    style = (
        "body{font-family:sans-serif;max-width:60em;margin:auto}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:2px 6px}pre{background:#f4f4f4;overflow:auto}"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>resdet report</title>"
        f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n"
    )


def write_report(out, manifest: dict, cfg, elapsed: float, num_images: int = 8):
    """Write OUTPUT/report.md, report.html and report/predictions.png; return their paths."""
    out = Path(out)
    preds = sorted((out / "detect" / "predictions").glob("*.jpg"))[:num_images]
    grid = prediction_grid(preds, out / "report" / "predictions.png")
    items = _sections(out, manifest, cfg, elapsed, grid)
    with atomic_write(out / "report.md", "w") as f:
        f.write(_markdown(items))
    with atomic_write(out / "report.html", "w") as f:
        f.write(_html(items))
    return [p for p in (out / "report.md", out / "report.html", grid) if p]
