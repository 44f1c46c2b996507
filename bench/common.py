"""Side-by-side timing: candidates run interleaved in one process, repeated, medians.

These machines are noisy (2 shared cores), so every benchmark alternates resdet and the
alternative within each repeat and reports medians and their ratio rather than a single
wall-clock figure.
"""

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results.json"
# the real datasets (../shared/data beside the checkout, as for the tests)
SHARED_DATA = Path(
    os.environ.get("RESDET_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)


def parser(description):
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument(
        "--output", default=None, help="append the results to this JSON list (default: print)"
    )
    return ap


def sync(device):
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def interleaved(
    fns: dict, repeats: int, device="cpu", warmup: int = 1, stat=statistics.median
) -> dict:
    """Median (or ``stat``) seconds per call of each fn in ``fns``, measured in alternation;
    ``stat=list`` gives every time."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    sync(device)
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            sync(device)
            times[k].append(time.perf_counter() - t)
    return {k: stat(v) for k, v in times.items()}


def result(name, ours_s, other_s, goal, other_name, **extra):
    """One results.json row; ratio = resdet's speed over the other's (higher is better).
    ``goal`` None: a reference measurement, ``met`` None."""
    # The ratio and the verdict come from the times as stored, so every row checks by hand.
    ours_s, other_s = round(ours_s, 5), round(other_s, 5)
    ratio = round(other_s / ours_s, 3)
    row = {
        "name": name,
        "ratio": ratio,
        "goal": goal,
        "met": None if goal is None else bool(ratio >= goal),
        "resdet_s": ours_s,
        "other_s": other_s,
        "other": other_name,
    }
    row.update(extra)
    return row


def emit(rows, output):
    for r in rows:
        print(json.dumps(r))
    if output:
        path = Path(output)
        prev = json.loads(path.read_text()) if path.exists() else []
        names = {r["name"] for r in rows}
        path.write_text(json.dumps([p for p in prev if p["name"] not in names] + rows, indent=1))
