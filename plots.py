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


ROUTE_FIGURES = {}  # route name -> drawer(run_dir) -> list of PNG paths; filled per section


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


# ----------------------------------------------------------------------------- classifier route

def _probit(p):
    """DET axes: the standard normal quantile of an error rate (clipped to 0.1 % .. 99.9 %)."""
    from statistics import NormalDist
    return [NormalDist().inv_cdf(min(max(x, 1e-3), 1 - 1e-3)) for x in p]


def classifier_trajectory(results: dict, png):
    """In-domain vs OOD-average EER along training, one line per method (mean over seeds),
    every line starting at the post-trained model: a method that forgets moves up, one that
    only moves less stays short. Returns {method: (in-domain, OOD avg, steps)}."""
    plt = pyplot()
    runs = results["per_seed"]
    drawn = {}
    for method in runs[0]["trajectories"]:
        t = [r["trajectories"][method] for r in runs]
        mean = lambda k: [sum(x[k][i] for x in t) / len(t) for i in range(len(t[0]["step"]))]  # noqa: E731
        drawn[method] = (mean("in-domain"), mean("OOD avg"), t[0]["step"])
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.2))
    chosen = results["summary"]
    # later methods underneath: sft_grpo's first stage is the sft run itself
    for method, (x, y, steps) in reversed(list(drawn.items())):
        style = dict(ls="--" if "_" in method else "-", lw=1.2)
        line, = ax.plot(x, y, marker="o", ms=3, label=method, **style)
        ax.plot(chosen[method]["in-domain"][0], chosen[method]["OOD avg"][0], marker="s",
                ms=7, color=line.get_color())
        bx.plot(steps, x, color=line.get_color(), lw=1.2, label=method)
        bx.plot(steps, y, color=line.get_color(), lw=1.2, ls=":")
    x0, y0, _ = next(iter(drawn.values()))
    ax.plot(x0[:1], y0[:1], marker="*", ms=14, color="k", ls="", label="post-trained")
    ax.set_xlabel("in-domain EER (%)")
    ax.set_ylabel("OOD average EER (%)")
    ax.set_title(f"mean of {len(runs)} seed(s); square: the checkpoint chosen on dev",
                 fontsize=10)
    ax.legend(fontsize=8)
    bx.set_xlabel("fine-tuning step (sft_grpo: SFT, then GRPO)")
    bx.set_ylabel("EER (%): in-domain solid, OOD avg dotted")
    bx.legend(fontsize=7)
    save(fig, png)
    return drawn


def classifier_det(results: dict, png):
    """DET curves (seed 0) per test set, one curve per model. Returns {set: {model: (frr, far)}}."""
    plt = pyplot()
    models = results["per_seed"][0]["models"]
    sets = list(next(iter(models.values())))
    drawn = {t: {m: tuple(models[m][t]["det"]) for m in models} for t in sets}
    fig, axes = plt.subplots(1, len(sets), figsize=(3.6 * len(sets), 3.6), squeeze=False)
    ticks = [0.01, 0.05, 0.2, 0.5, 0.8]
    for ax, t in zip(axes[0], sets):
        for m, (frr, far) in drawn[t].items():
            ax.plot(_probit(far), _probit(frr), lw=1, label=m)
        ax.set_xticks(_probit(ticks), [f"{100 * v:g}" for v in ticks])
        ax.set_yticks(_probit(ticks), [f"{100 * v:g}" for v in ticks])
        ax.set_title(t)
        ax.set_xlabel("FAR (%)")
    axes[0][0].set_ylabel("FRR (%)")
    axes[0][-1].legend(fontsize=7)
    save(fig, png)
    return drawn


def classifier_drift(results: dict, png):
    """Drift to the reference set per test set and model (mean over seeds), as bars.
    Returns {model: {set: drift}}."""
    plt = pyplot()
    summary = results["summary"]
    keys = [k for k in next(iter(summary.values())) if k.startswith("drift ")]
    drawn = {m: {k[6:]: summary[m][k][0] for k in keys} for m in summary}
    fig, ax = plt.subplots(figsize=(1.2 + 1.3 * len(keys), 3.6))
    width = 0.8 / len(drawn)
    for j, (m, d) in enumerate(drawn.items()):
        ax.bar([i + j * width for i in range(len(keys))], list(d.values()), width, label=m)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(keys))], [k[6:] for k in keys])
    ax.set_ylabel("mean per-dimension W1 to the reference set")
    ax.legend(fontsize=7)
    save(fig, png)
    return drawn


def classifier_figures(run_dir) -> list:
    """Every figure of a classifier run folder: trajectory, DET, drift, GRPO diagnostics."""
    run_dir = Path(run_dir)
    results = json.loads((run_dir / "results.json").read_text())
    paths = []
    if results["per_seed"][0].get("trajectories"):
        classifier_trajectory(results, run_dir / "trajectory.png")
        paths.append(run_dir / "trajectory.png")
    classifier_det(results, run_dir / "det.png")
    paths.append(run_dir / "det.png")
    if any(k.startswith("drift ") for k in next(iter(results["summary"].values()))):
        classifier_drift(results, run_dir / "drift.png")
        paths.append(run_dir / "drift.png")
    seed = results["per_seed"][0].get("seed", 0)
    for metrics in sorted((run_dir / f"seed{seed}").glob("*/metrics.jsonl")) + sorted(
            (run_dir / f"seed{seed}").glob("*/grpo/metrics.jsonl")):
        config = json.loads((metrics.parent / "config.json").read_text())
        if any("reward" in r for r in read_jsonl(metrics)):  # a GRPO stage
            stage = metrics.parent.relative_to(run_dir / f"seed{seed}").as_posix()
            png = run_dir / f"grpo_{stage.replace('/', '_')}.png"
            grpo_diagnostics(metrics, png, config["num_generations"], title=str(metrics.parent))
            paths.append(png)
    return paths


ROUTE_FIGURES["classifier"] = classifier_figures


# ----------------------------------------------------------------------------- HIR-SDD route

HIR_BARS = (("Test-1-HL", "acc", "accuracy %"), ("Test-1-HL", "bacc", "balanced accuracy %"),
            ("Test-2-R", "jaccard", "Jaccard of the tags"))


def hir_stage_bars(results: dict, png) -> dict | None:
    """Accuracy and balanced accuracy on Test-1-HL and tag Jaccard on Test-2-R per model (mean
    ± std over seeds, from results.json's summary). Returns {panel: {row: (mean, std)}}."""
    plt = pyplot()
    if plt is None:
        return None
    summary = results["summary"]
    drawn = {f"{test} {key}": {row: tuple(t[test][key]) for row, t in summary.items()
                                if key in t.get(test, {})} for test, key, _ in HIR_BARS}
    fig, axes = plt.subplots(1, len(HIR_BARS), figsize=(5.5 * len(HIR_BARS), 4.2))
    for ax, (panel, bars), (test, _, label) in zip(axes, drawn.items(), HIR_BARS):
        names = list(bars)
        ax.barh(range(len(names)), [m for m, _ in bars.values()],
                xerr=[s for _, s in bars.values()], alpha=0.8,
                color=["tab:gray" if "AASIST" in n else "tab:blue" for n in names])
        ax.set_yticks(range(len(names)), [n.replace("Wav2Vec2-AASIST", "AASIST").replace(
            "Qwen2-Audio", "LALM") for n in names], fontsize=7)
        ax.invert_yaxis()
        ax.set_title(f"{label} ({test})", fontsize=9)
    save(fig, png)
    return drawn


def hir_grpo_rewards(run_dir, seeds: list, png) -> dict | None:
    """The GRPO stage's reward and each reward part over steps: one thin line per seed and
    their mean. Returns {part: {"seed S" | "mean": (steps, values)}}."""
    plt = pyplot()
    if plt is None:
        return None
    logs = {s: read_jsonl(Path(run_dir) / f"seed{s}" / "grpo" / "metrics.jsonl") for s in seeds}
    parts = sorted({k for rows in logs.values() for r in rows for k in r
                    if k == "reward" or k.startswith("reward_")})
    drawn = {}
    fig, axes = plt.subplots(1, len(parts), figsize=(3.6 * len(parts), 3.2), squeeze=False)
    for ax, part in zip(axes[0], parts):
        drawn[part] = {f"seed {s}": series(rows, part) for s, rows in logs.items()}
        steps = sorted(set.intersection(*(set(x) for x, _ in drawn[part].values())))
        by_step = [dict(zip(*xy)) for xy in drawn[part].values()]
        drawn[part]["mean"] = (steps, [sum(d[k] for d in by_step) / len(by_step) for k in steps])
        for label, (x, y) in drawn[part].items():
            ax.plot(x, y, lw=2 if label == "mean" else 0.7, label=label,
                    color="black" if label == "mean" else None)
        ax.set_title(part, fontsize=9)
        ax.set_xlabel("GRPO step")
    axes[0][0].legend(fontsize=7)
    save(fig, png)
    return drawn


def hir_learning(run_dir, seeds: list, stages: list, png) -> dict | None:
    """Per stage, over its steps, on the validation split: the answer NLL beside the training
    prior's entropy (top), balanced accuracy and 100 x AUC (bottom), every seed.
    Returns {stage: {"seed S <key>": (steps, values)}}."""
    plt = pyplot()
    if plt is None:
        return None
    drawn = {}
    for stage in stages:
        lines = {}
        for s in seeds:
            path = Path(run_dir) / f"seed{s}" / stage / "metrics.jsonl"
            rows = read_jsonl(path) if path.is_file() else []
            for key in ("val_answer_nll", "prior_entropy", "val_bacc", "val_auc"):
                if any(key in r for r in rows):
                    lines[f"seed {s} {key}"] = series(rows, key)
        if lines:
            drawn[stage] = lines
    if not drawn:
        return {}
    fig, axes = plt.subplots(2, len(drawn), figsize=(3.6 * len(drawn), 5.4), squeeze=False)
    for col, (stage, lines) in enumerate(drawn.items()):
        for label, (x, y) in lines.items():
            top = "nll" in label or "entropy" in label
            scale = 100 if label.endswith("val_auc") else 1
            colour = f"C{seeds.index(int(label.split()[1]))}"  # one per seed
            axes[0 if top else 1][col].plot(x, [v * scale for v in y], lw=1, label=label,
                                            color=colour,  # dashed: entropy, AUC
                                            ls="--" if "entropy" in label or "auc" in label else "-")
        axes[0][col].set_title(stage, fontsize=9)
        axes[1][col].set_xlabel("step")
    axes[0][0].set_ylabel("answer NLL / prior entropy (nats)")
    axes[1][0].set_ylabel("val bacc % / 100 AUC")
    axes[0][0].legend(fontsize=6)
    axes[1][0].legend(fontsize=6)
    save(fig, png)
    return drawn


def draw_hir(run_dir) -> list:
    """Every figure of an HIR run folder: the bars, the learning curves, the GRPO rewards and
    each seed's GRPO diagnostics."""
    run_dir = Path(run_dir)
    results = json.loads((run_dir / "results.json").read_text())
    figs, seeds = run_dir / "figures", results["seeds"]
    stages = results["config"]["stages"]
    pngs = [figs / "hir_stages.png", figs / "hir_learning.png"]
    hir_stage_bars(results, pngs[0])
    hir_learning(run_dir, seeds, ["format", *stages], pngs[1])
    if "grpo" in stages:
        pngs.append(figs / "hir_grpo_rewards.png")
        hir_grpo_rewards(run_dir, seeds, pngs[-1])
        for s in seeds:
            pngs.append(figs / f"hir_grpo_seed{s}.png")
            grpo_diagnostics(run_dir / f"seed{s}" / "grpo" / "metrics.jsonl", pngs[-1],
                             results["config"]["num_generations"], "reward_correctness",
                             f"HIR-SDD GRPO, seed {s}")
    return [p for p in pngs if p.is_file()]


ROUTE_FIGURES["hir"] = draw_hir


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
