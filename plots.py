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


ROUTE_FIGURES = {}  # route name -> drawer(run_dir) -> list of PNG paths; filled per section


# ----------------------------------------------------------------------------- face route (fas)

def fas_seed_dirs(run_dir) -> list[Path]:
    """The seed folders of a face run folder: its `runs` (a summary folder) or itself (a seed)."""
    run_dir = Path(run_dir)
    results = json.loads((run_dir / "results.json").read_text())
    return [run_dir / r for r in results["runs"]] if "runs" in results else [run_dir]


def _mean(rows: list[list]) -> list:
    return [sum(v) / len(v) for v in zip(*rows)]


def fas_curves(run_dir, png):
    """Source vs target HTER along training, one panel per (method, source) that logged a
    curve: the source dev set (the checkpoint choice), the source test set and each target
    test set, mean over the seeds, from the rows of each seed's <method>/<source>/dev.jsonl
    that hold test scores (every `curve_every` steps).

    Returns {panel title: {line label: (steps, HTER %)}}.
    """
    plt = pyplot()
    seeds = fas_seed_dirs(run_dir)
    logs = sorted(p.relative_to(seeds[0]).parent for p in seeds[0].glob("*/*/dev.jsonl"))
    drawn = {}
    for rel in logs:
        runs = [[r for r in read_jsonl(d / rel / "dev.jsonl") if "test_hter" in r] for d in seeds]
        if not runs[0]:
            continue
        steps = [r["step"] for r in runs[0]]
        lines = {"source dev": _mean([[100 * r["dev_hter"] for r in run] for run in runs])}
        for domain in runs[0][0]["test_hter"]:
            lines[f"{domain} test"] = _mean([[100 * r["test_hter"][domain] for r in run]
                                             for run in runs])
        drawn[f"{rel.parts[0]}, source {rel.parts[1]}"] = {k: (steps, v) for k, v in lines.items()}
    fig, axes = plt.subplots(1, max(1, len(drawn)), figsize=(4.2 * max(1, len(drawn)), 3.4),
                             squeeze=False)
    for ax, (title, lines) in zip(axes[0], drawn.items()):
        for label, (x, y) in lines.items():
            ax.plot(x, y, label=label, lw=1.2, ls="--" if "dev" in label else "-")
        ax.set(title=title, xlabel="step", ylabel="HTER %", ylim=(0, 60))
        ax.legend(fontsize=7)
    fig.suptitle(f"HTER along training, mean over {len(seeds)} seed(s)")
    save(fig, png)
    return drawn


def _seed_results(seeds) -> list[dict]:
    return [json.loads((d / "results.json").read_text())["results"] for d in seeds]


def fas_hter_bars(run_dir, png):
    """Target HTER % per protocol and method (bars: mean over seeds, whiskers: std, ddof 1).

    Returns {protocol: {method: (mean %, std %)}}."""
    plt = pyplot()
    reports = _seed_results(fas_seed_dirs(run_dir))
    drawn = {}
    for proto, by_method in reports[0].items():
        for method in by_method:
            v = [100 * r[proto][method]["hter"] for r in reports]
            mean = sum(v) / len(v)
            std = (sum((x - mean) ** 2 for x in v) / (len(v) - 1)) ** 0.5 if len(v) > 1 else 0.0
            drawn.setdefault(proto, {})[method] = (mean, std)
    methods = list(dict.fromkeys(m for by in drawn.values() for m in by))
    fig, ax = plt.subplots(figsize=(1.6 + 1.8 * len(drawn), 3.4))
    width = 0.8 / len(methods)
    for j, m in enumerate(methods):
        xs = [i + j * width for i, p in enumerate(drawn) if m in drawn[p]]
        ys = [drawn[p][m] for p in drawn if m in drawn[p]]
        ax.bar(xs, [y for y, _ in ys], width, yerr=[e for _, e in ys], label=m, capsize=2)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(drawn))], list(drawn), fontsize=8)
    ax.set(ylabel="target HTER %", title="HTER per protocol and method")
    ax.legend(fontsize=7)
    save(fig, png)
    return drawn


def fas_attack_errors(run_dir, png):
    """Error rate % per face type on each target (one panel per protocol, bars per method,
    mean over seeds): the paper's Fig. 6. Returns {protocol: {method: {type: mean %}}}."""
    plt = pyplot()
    reports = _seed_results(fas_seed_dirs(run_dir))
    drawn = {p: {m: {a: 100 * sum(r[p][m]["per_attack"][a] for r in reports) / len(reports)
                     for a in reports[0][p][m]["per_attack"]} for m in by}
             for p, by in reports[0].items()}
    fig, axes = plt.subplots(1, len(drawn), figsize=(4.6 * len(drawn), 3.4), squeeze=False)
    for ax, (proto, by_method) in zip(axes[0], drawn.items()):
        types = sorted({a for rates in by_method.values() for a in rates})
        width = 0.8 / len(by_method)
        for j, (m, rates) in enumerate(by_method.items()):
            ax.bar([i + j * width for i in range(len(types))],
                   [rates.get(a, 0.0) for a in types], width, label=m)
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(types))], types, rotation=60,
                      fontsize=7)
        ax.set(title=proto, ylabel="error rate %", ylim=(0, 100))
        ax.legend(fontsize=6)
    save(fig, png)
    return drawn


FAS_FIGURES = {"fas_curves.png": fas_curves, "fas_hter.png": fas_hter_bars,
               "fas_attack_errors.png": fas_attack_errors}


def draw_fas(run_dir) -> list:
    """Every figure of a face run folder (a seed folder or the summary of several), into
    run_dir/figures/; plus the GRPO diagnostics of each seed's GRPO runs, into its figures/."""
    run_dir = Path(run_dir)
    paths = []
    for name, figure in FAS_FIGURES.items():
        figure(run_dir, run_dir / "figures" / name)
        paths.append(run_dir / "figures" / name)
    for seed in fas_seed_dirs(run_dir):
        N = json.loads((seed / "results.json").read_text())["config"]["num_generations"]
        for log in sorted(seed.glob("grpo*/*/metrics.jsonl")):
            method, source = log.parent.parent.name, log.parent.name
            png = seed / "figures" / f"{method}_{source}_diagnostics.png"
            grpo_diagnostics(log, png, N, "reward_cls", f"{seed.name}: {method} on {source}")
            paths.append(png)
    return paths


ROUTE_FIGURES["fas"] = draw_fas


# ----------------------------------------------------------------------------- redraw

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
