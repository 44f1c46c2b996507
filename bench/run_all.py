"""Run every side-by-side benchmark (``make bench``) and write bench/results.json and
bench/results.md, a table saying for each goal whether it was met, with the ratio.

Each benchmark runs in its own process (fresh allocator and thread pools; one that
fails is reported and the others still run). ``--quick`` lowers repeats and sizes for a
smoke run; ``--device cuda`` is passed through to every benchmark.
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS_JSON, RESULTS_MD = HERE / "results.json", HERE / "results.md"

# (script, extra arguments for a full run, for --quick)
BENCHMARKS = [
    ("bench_backbone.py", ["--repeats", "7"], ["--repeats", "2"]),
    ("bench_detection.py", ["--repeats", "5"], ["--repeats", "2"]),
    ("bench_roi_align.py", ["--repeats", "7"], ["--repeats", "2"]),
    ("bench_coco_eval.py", ["--repeats", "7"], ["--repeats", "2"]),
    ("bench_loading.py", ["--repeats", "5"], ["--repeats", "2", "--images", "50"]),
    (
        "bench_train_step.py",
        ["--repeats", "9", "--batch", "8", "--size", "160"],
        ["--repeats", "2", "--batch", "4", "--size", "128"],
    ),
]


def machine() -> str:
    """The CPU the figures come from, and whether it has the instructions the reduced
    precisions need: the ratios depend on it (sessions have run on AMD and Intel CPUs)."""
    import os
    import platform

    name, flags = platform.processor() or platform.machine(), set()
    try:
        for line in open("/proc/cpuinfo"):
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                name = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
                break
    except OSError:
        pass
    has = [f for f in ("avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16") if f in flags]
    return f"{name}, {os.cpu_count()} logical CPUs, {' '.join(has) or 'no AVX-512'}"


def markdown(rows, title="resdet benchmarks", where=None) -> str:
    """The results table: ratio = resdet's speed / the other's (higher is better)."""
    lines = [
        f"# {title}",
        "",
        *([f"Machine: {where}.", ""] if where else []),
        "ratio = resdet speed / other speed (medians of interleaved repeats).",
        "",
        "| benchmark | vs | ratio | goal | status | details |",
        "|---|---|---|---|---|---|",
    ]
    skip = {"name", "ratio", "goal", "met", "other"}
    for r in rows:
        status = (
            "reference"
            if r.get("goal") is None
            else ("met" if r["met"] else f"MISSED ({r['ratio']:.2f}x)")
        )
        goal = "-" if r.get("goal") is None else f">= {r['goal']}x"
        details = ", ".join(f"{k}={v}" for k, v in r.items() if k not in skip)
        lines.append(
            f"| {r['name']} | {r.get('other', '')} | {r['ratio']:.2f}x | {goal} | "
            f"{status} | {details} |"
        )
    return "\n".join(lines) + "\n"


def run_all(
    device="cpu", quick=False, only=None, results_json=RESULTS_JSON, results_md=RESULTS_MD
) -> list:
    """Run the benchmarks (``only``: script names), return their rows, write both files."""
    results_json, results_md = Path(results_json), Path(results_md)
    if results_json.exists():
        results_json.unlink()  # rows of this run only
    failed = []
    for script, full, fast in BENCHMARKS:
        if only and script not in only:
            continue
        print(f"== {script}", flush=True)
        cmd = [
            sys.executable,
            str(HERE / script),
            "--device",
            device,
            "--output",
            str(results_json),
        ]
        if subprocess.run(cmd + (fast if quick else full)).returncode != 0:
            failed.append(script)
    rows = json.loads(results_json.read_text()) if results_json.exists() else []
    rows += [
        {
            "name": s.removesuffix(".py"),
            "ratio": 0.0,
            "goal": None,
            "met": False,
            "other": "FAILED to run",
        }
        for s in failed
    ]
    results_json.write_text(json.dumps(rows, indent=1))
    title = f"resdet benchmarks ({device}{', quick' if quick else ''})"
    results_md.write_text(markdown(rows, title, machine() if device == "cpu" else device))
    print(results_md.read_text())
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--device", default="cpu", help="cpu or cuda (passed to every benchmark)")
    ap.add_argument("--quick", action="store_true", help="fewer repeats, smaller sizes")
    ap.add_argument("--only", nargs="*", help="run only these scripts, e.g. bench_coco_eval.py")
    ap.add_argument(
        "--output", default=str(RESULTS_JSON), help="results JSON (the table goes beside it as .md)"
    )
    args = ap.parse_args(argv)
    out = Path(args.output)
    rows = run_all(args.device, args.quick, args.only, out, out.with_suffix(".md"))
    return 1 if any(r.get("other") == "FAILED to run" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
