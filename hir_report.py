"""HIR-SDD route: the tables beside the paper's numbers, results.json, figures, the summary line.

    Table 1    Test-1-HL: acc / balanced acc / F1 (bona fide positive) / AUC of every model,
               the paper's Table 1 beside (SALMONN-7B rows next to the Qwen2-Audio ones)
    Reasoning  Test-2-R: Jaccard of the tags, judge score (0-10) and its rubric, diversity
    Hard       the hard / out-of-distribution clips: balanced acc, AUC, right verdicts per family
    Learning   per stage, on the validation split: the selected step, its balanced accuracy,
               answer NLL beside the prior's entropy (equal: nothing learned from the audio)
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

import plots
import train
from eval import format_table

TESTS = {"hl": "Test-1-HL", "r": "Test-2-R", "hard": "hard"}  # dataset -> test set name
PRETRAIN_ROW = "audio pre-training stand-in"
PAPER = {  # Dvirniak et al. 2026, Table 1 (Test-1-HL: acc, bacc, F1) and Sec. 5; SALMONN-7B
    "table1": {"Wav2Vec2-AASIST: Train-1-HL": (92.3, 81.3, 76.7),
               "Wav2Vec2-AASIST: Train-2-HL": (92.9, 84.0, 76.7),
               "Wav2Vec2-AASIST: Train-1-HL + Train-2-HL": (92.3, 83.9, 76.6),
               "Qwen2-Audio: Train-1-HL": (93.4, 89.3, 84.5),
               "Qwen2-Audio: Train-2-HL": (94.5, 88.6, 85.7),
               "Qwen2-Audio: Train-1-HL + Train-2-HL": (93.1, 83.8, 80.4),
               "Qwen2-Audio: Train-2-R": (92.9, 86.7, 81.4),
               "Qwen2-Audio: Train-2-R + GRPO": (93.6, 89.6, 85.0)},
    "jaccard": {"sft": 0.6264, "grpo": 0.6468},  # Test-2-R, Sec. 5
    "judge": {"sft": 5.12, "grpo": 5.74},  # 0-10, five runs on 1,000 samples (repo README)
}


def summarize(per_seed: list) -> dict:
    """{row: {test: {metric: (mean, std)}}} over seeds, for the rows and metrics every seed has."""
    out = {}
    for row in per_seed[0]:
        if not all(row in r for r in per_seed):
            continue
        out[row] = {}
        for test, metrics in per_seed[0][row].items():
            out[row][test] = {k: (float(np.nanmean(v)), float(np.nanstd(v))) if not np.isnan(v).all()
                              else (float("nan"), float("nan"))
                              for k in metrics if isinstance(metrics[k], (int, float))
                              for v in [np.array([r[row][test].get(k, np.nan) for r in per_seed],
                                                 dtype=float)]}
    return out


def _cell(summary, row, test, key, digits, seeds):
    m = summary.get(row, {}).get(test, {}).get(key)
    if m is None or np.isnan(m[0]):
        return "-"
    return f"{m[0]:.{digits}f}" + (f" ± {m[1]:.{digits}f}" if seeds > 1 else "")


def _table(summary, rows, test, keys, seeds, extra=None):
    headers = ["model: training"] + [k for k, _ in keys] + ([extra[0]] if extra else [])
    body = [[r] + [_cell(summary, r, test, k, d, seeds) for k, d in keys]
            + ([extra[1](r)] if extra else []) for r in rows]
    return format_table(headers, body)


def tables(summary: dict, seeds: int, sizes: dict, what: str) -> str:
    """Every table as one printable text; `what` names the model and the data in the title."""
    rows = sorted((r for r in summary if r != PRETRAIN_ROW), key=lambda r: not r.startswith("Wav2"))
    cot = [r for r in rows if "Test-2-R" in summary[r]]
    paper = PAPER["table1"]
    out = [f"HIR-SDD ({what}), mean ± std over {seeds} seed(s). Test sets: " + ", ".join(
        f"{t} n = {sizes[t]['n']} ({sizes[t]['real']:.0f} % bona fide)" for t in sizes)]
    if PRETRAIN_ROW in summary:
        out.append(f"Audio pre-training stand-in: training accuracy on the family "
                   f"{_cell(summary, PRETRAIN_ROW, 'train', 'acc', 1, seeds)} %")
    keys = [("acc", 1), ("bacc", 1), ("f1", 1), ("auc", 3), ("malformed", 1)]
    out += ["\nTable 1: Test-1-HL (paper: SALMONN-7B and Wav2Vec2-AASIST, acc / bacc / F1)",
            _table(summary, [r for r in rows if "Test-1-HL" in summary[r]], "Test-1-HL", keys,
                   seeds, ("paper", lambda r: " / ".join(map(str, paper[r])) if r in paper else ""))]
    if cot:
        keys = [("acc", 1), ("bacc", 1), ("jaccard", 3), ("judge", 2), ("detail", 2),
                ("relevance", 2), ("logic", 2), ("helpfulness", 2), ("distinct", 2),
                ("think_words", 1), ("false_grounding", 1), ("malformed", 1)]
        j, g = PAPER["jaccard"], PAPER["judge"]
        out += ["\nReasoning: Test-2-R (judge 0-10; distinct: share of unique <think>; false "
                "grounding: % of traces naming a perturbation the clean test audio lacks)",
                _table(summary, cot, "Test-2-R", keys, seeds),
                f"always '[]' scores Jaccard {sizes['Test-2-R']['real'] / 100:.3f} (the bona "
                f"fide share). Paper, SALMONN-7B: Jaccard SFT {j['sft']} vs GRPO {j['grpo']}; "
                f"judge SFT {g['sft']} vs GRPO {g['grpo']}"]
    hard = [r for r in rows if "hard" in summary[r]]
    if hard:
        fams = sorted(k for k in summary[hard[0]]["hard"] if k.startswith("family_"))
        out += ["\nHard / out-of-distribution families (none in any training set): right "
                "verdicts % per family", _table(summary, hard, "hard", [("bacc", 1), ("auc", 3)]
                                                + [(f, 1) for f in fams], seeds)]
    learned = [r for r in rows if summary[r].get("val")]
    if learned:
        keys = [("step", 0), ("bacc", 1), ("answer_nll", 3), ("prior_entropy", 3),
                ("skeptic_kept", 2)]
        out += ["\nLearning: the selected validation step per stage; answer NLL (nats) at the "
                "prior's entropy = nothing learned from the audio", _table(summary, learned, "val",
                                                                         keys, seeds)]
    return "\n".join(out)


def summary_line(summary: dict, out: Path, seeds: int) -> str:
    """One line per run: each stage's key metric, and where checkpoints and results are."""
    parts = []
    for row, tests in summary.items():
        if "Test-2-R" in tests:
            parts.append(f"{row}: Jaccard {tests['Test-2-R']['jaccard'][0]:.3f}, "
                         f"Test-1-HL bacc {tests['Test-1-HL']['bacc'][0]:.1f}")
        elif "Test-1-HL" in tests:
            parts.append(f"{row}: Test-1-HL bacc {tests['Test-1-HL']['bacc'][0]:.1f}")
    return (f"hir, {seeds} seed(s): " + "; ".join(parts) + f". Checkpoints: {out}/seed*/<stage>/"
            f"best (selected) and last; results: {out}/results.json, tables: {out}/tables.md, "
            f"figures: {out}/figures/")


def report(cfg, per_seed: list, splits: dict) -> dict:
    """Tables (printed and kept), results.json, the figures, the summary line -> summary."""
    out = Path(cfg.out_dir)
    summary = summarize(per_seed)
    sizes = {name: dict(n=len(splits[d, "test"]), real=100 * float(np.mean(
        [r["label"] == "real" for r in splits[d, "test"]]))) for d, name in TESTS.items()
        if splits[d, "test"]}
    train.save_config(cfg, out)
    (out / "results.json").write_text(json.dumps(dict(
        route="hir", seeds=[cfg.seed + k for k in range(len(per_seed))], per_seed=per_seed,
        summary=summary, paper=PAPER, sizes=sizes, config=dataclasses.asdict(cfg)), indent=1) + "\n")
    what = ("CPU miniature: tiny Qwen2-Audio" if cfg.model == "tiny" else cfg.model) + ", " + (
        cfg.manifest or "synthetic speech")
    train.write_report(out, tables(summary, len(per_seed), sizes, what))
    if plots.pyplot() is None:
        print(plots.MISSING.format(run_dir=out))
    else:
        plots.ROUTE_FIGURES["hir"](out)
    print(summary_line(summary, out, len(per_seed)))
    return summary
