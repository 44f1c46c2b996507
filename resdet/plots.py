"""The curves every long resdet job leaves behind, drawn one way.

Jobs log Detectron2-style JSON lines (one dict per logged iteration); a figure is a row of
panels, each plotting some keys of those lines against the iteration.
"""

import json
from pathlib import Path

from .io import atomic_write

__all__ = ["read_json_lines", "save_figure", "plot_json_lines"]


def read_json_lines(path):
    """Rows of a JSON-lines log; a line cut short by a crash is skipped, not fatal."""
    rows = []
    for line in Path(path).read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def save_figure(fig, path) -> None:
    """Write a matplotlib figure as PNG atomically and release it."""
    import matplotlib.pyplot as plt

    with atomic_write(path) as f:
        fig.savefig(f, format="png", dpi=100)
    plt.close(fig)


def plot_json_lines(log_path, png_path, panels) -> bool:
    """Draw ``panels`` = [(ylabel, [keys...]), ...] from a JSON-lines log into a PNG.

    Later rows for the same iteration replace earlier ones (a resumed run rewrites its
    tail). Returns False, drawing nothing, when no key has a value yet.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    log_path = Path(log_path)
    rows = read_json_lines(log_path) if log_path.is_file() else []
    series = {k: {} for _, keys in panels for k in keys}
    for r in rows:
        for k in series:
            if k in r and "iteration" in r:
                series[k][r["iteration"] + 1] = r[k]
    if not any(series.values()):
        return False
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    for ax, (ylabel, keys) in zip(axes[0], panels):
        for k in keys:
            pts = sorted(series[k].items())
            if pts:
                ax.plot(*zip(*pts), marker="." if len(pts) < 50 else None, label=k)
        ax.set(xlabel="iteration", ylabel=ylabel)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend()
    fig.tight_layout()
    save_figure(fig, png_path)
    return True
