"""Figures: every table and training curve of a run folder, as PNGs beside its results.

    python plots.py RUN_DIR      # (re)draw every figure of a run folder from its saved numbers

matplotlib is the optional `plots` extra (`pip install -e ".[plots]"`). Without it every run
still works: it prints MISSING once and the figures can be drawn later with the command above.
Each figure function reads only numbers a run saved (results.json, metrics.jsonl, config.json),
draws them, saves a PNG and returns the series it plotted, so a test can check that what is drawn
equals what was saved (tests/test_plots.py) without reading pixels.

Sections: shared helpers and the GRPO diagnostics of any run; then one section per route; then
`redraw`, which finds a run folder's route in its results.json and calls that route's drawer.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

MISSING = ("figures skipped: matplotlib is not installed. pip install -e \".[plots]\", then "
           "python plots.py {run_dir}")


def pyplot():
    """matplotlib.pyplot on the headless Agg backend, or None when matplotlib is absent."""
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")  # no display needed: files only
    import matplotlib.pyplot as plt
    return plt


def save(fig, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt
    plt.close(fig)
    return path


def read_jsonl(path) -> list[dict]:
    """The rows of a metrics.jsonl (blank lines skipped)."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def series(rows: list[dict], key: str) -> tuple[list, list]:
    """(steps, values) of one logged key, skipping rows that lack it (e.g. dev-only rows)."""
    pts = [(r["step"], r[key]) for r in rows if r.get(key) is not None]
    return [s for s, _ in pts], [v for _, v in pts]


def expected_equal_share(p: float, N: int) -> float:
    """Share of all-equal groups when each of N 1/0 rewards is 1 with probability p:
    p^N + (1 - p)^N (every draw right, or every draw wrong)."""
    return p ** N + (1 - p) ** N


# ----------------------------------------------------------------------------- GRPO diagnostics

GRPO_PANELS = ("reward", "kl", "clip_frac", "completion_length", "equal_share")


def grpo_diagnostics(metrics_path, png, N: int, accuracy_key: str = "reward", title: str = ""):
    """One figure of a GRPO run's per-step log: reward (and each reward_<part>), KL, clip
    fraction, mean completion length, and the share of all-equal groups beside its expected
    value p^N + (1 - p)^N with p the step's mean of `accuracy_key` (a 1/0 correctness reward).

    Returns {panel: {line label: (steps, values)}} -- what was drawn. None without matplotlib.
    """
    plt = pyplot()
    if plt is None:
        return None
    rows = read_jsonl(metrics_path)
    parts = sorted({k for r in rows for k in r if k.startswith("reward_")})
    drawn = {"reward": {k: series(rows, k) for k in ["reward", *parts]},
             "kl": {"kl": series(rows, "kl")},
             "clip_frac": {"clip_frac": series(rows, "clip_frac")},
             "completion_length": {"completion_length": series(rows, "completion_length")}}
    steps, acc = series(rows, accuracy_key)
    drawn["equal_share"] = {"equal_share": series(rows, "equal_share"),
                            f"p^N + (1-p)^N, p = {accuracy_key}":
                                (steps, [expected_equal_share(p, N) for p in acc])}
    fig, axes = plt.subplots(1, len(GRPO_PANELS), figsize=(4 * len(GRPO_PANELS), 3.2))
    for ax, panel in zip(axes, GRPO_PANELS):
        for label, (x, y) in drawn[panel].items():
            ax.plot(x, y, label=label, lw=1)
        ax.set_title(panel)
        ax.set_xlabel("step")
        if len(drawn[panel]) > 1:
            ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    save(fig, png)
    return drawn


# ----------------------------------------------------------------------------- redraw

ROUTE_FIGURES = {}  # route name -> drawer(run_dir) -> list of PNG paths; filled per section


def redraw(run_dir) -> list:
    """Draw every figure of a run folder again from its saved numbers."""
    run_dir = Path(run_dir)
    results = run_dir / "results.json"
    if not results.is_file():
        raise FileNotFoundError(f"{results} not found: not a run folder")
    route = json.loads(results.read_text()).get("route")
    if route not in ROUTE_FIGURES:
        raise ValueError(f"{results}: route {route!r} has no figures; known: {sorted(ROUTE_FIGURES)}")
    if pyplot() is None:
        raise SystemExit(MISSING.format(run_dir=run_dir))
    return ROUTE_FIGURES[route](run_dir)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python plots.py RUN_DIR")
    for p in redraw(sys.argv[1]):
        print(p)
