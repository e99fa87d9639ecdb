"""The face route's numbers and tables: HTER split by attack group, the per-seed tables
(Tables 1-3 and Fig. 6 of the face paper as text), the mean ± std over seeds, and the one-line
summary every run ends with. Pure functions of saved results: no model, no training.
"""
from __future__ import annotations

import numpy as np

from eval import format_table, frr_far_hter

RATES = ("frr", "far", "hter", "hter_shared", "hter_unseen", "source_hter")


def group_hter(preds, labels, attacks, shared) -> dict:
    """HTER on the attack types the source has and on the others (issue 10's split):

        HTER_g = (FRR + FAR_g) / 2,  FAR_g = share of the fakes of group g let through,
    FRR over all real faces (they belong to no attack group). A group without fakes gives None.
    """
    out = {}
    for group, inside in (("shared", True), ("unseen", False)):
        keep = [i for i, (y, a) in enumerate(zip(labels, attacks))
                if y == "real" or (a in shared) == inside]
        if all(labels[i] == "real" for i in keep):
            out[f"hter_{group}"] = None
            continue
        rates = frr_far_hter([preds[i] for i in keep], [labels[i] for i in keep])
        out[f"hter_{group}"], out[f"far_{group}"] = rates.hter, rates.far
    return out


def pct(x):
    return "-" if x is None else f"{100 * x:.2f}"


def tables(results: dict) -> str:
    """Tables 1-3 as one long table (protocol, method: FRR, FAR, HTER % on the target test
    set, split into shared / unseen attack types, the source test HTER and the source-dev
    choice), then Fig. 6: the error rate per face type of GRPO (or the first method run)."""
    head = ["protocol", "method", "FRR", "FAR", "HTER", "HTER shared", "HTER unseen",
            "malformed", "source HTER", "dev HTER", "step"]
    rows = [[proto, m, *[pct(r.get(k)) for k in ("frr", "far", "hter", "hter_shared",
                                                  "hter_unseen", "malformed", "source_hter",
                                                  "dev_hter")], r.get("best_step", "-")]
            for proto, by_method in results.items() for m, r in by_method.items()]
    text = ["Target test sets, % (Tables 1-3). HTER shared / unseen: the real faces with the "
            "fakes of the attack types the source has / has not; source HTER: the source's own "
            "test set; dev HTER, step: the source-dev choice", format_table(head, rows)]
    protos = list(results)
    methods = list(dict.fromkeys(m for p in protos for m in results[p]))
    fig6 = next((m for m in ("grpo", *methods) if all(m in results[p] for p in protos)), None)
    if fig6:
        per = {p: results[p][fig6]["per_attack"] for p in protos}
        attacks = sorted({a for p in protos for a in per[p]})
        rows = [[a] + [pct(per[p].get(a)) for p in protos] for a in attacks]
        text += [f"\nError rate (%) per face type, {fig6} (Fig. 6)",
                 format_table(["type"] + protos, rows)]
    return "\n".join(text)


def mean_std(values) -> tuple[float, float]:
    """Mean and sample std (ddof = 1; 0 for a single value)."""
    v = np.asarray(values, dtype=float)
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


def summarize(reports: list) -> tuple[dict, str]:
    """{protocol: {method: {rate: (mean, std)}}} over the seed reports, and its text: HTER on
    the target test sets (all, shared, unseen attack types), on the source test sets, and the
    FRR / FAR behind the target HTER."""
    summary = {}
    for proto, by_method in reports[0]["results"].items():
        for method, first in by_method.items():
            for k in RATES:
                if first.get(k) is not None:
                    summary.setdefault(proto, {}).setdefault(method, {})[k] = mean_std(
                        [r["results"][proto][method][k] for r in reports])
    protos = list(summary)
    methods = list(dict.fromkeys(m for p in protos for m in summary[p]))
    seeds = [r["seed"] for r in reports]

    def cell(p, m, key):
        if key not in summary[p].get(m, {}):
            return "-"
        mean, std = summary[p][m][key]
        return f"{pct(mean)} ± {pct(std)}"
    text = []
    for key, what in (("hter", "target test"), ("hter_shared", "target test, attack types the "
                                                               "source has"),
                      ("hter_unseen", "target test, attack types the source lacks"),
                      ("source_hter", "source test (in-domain)")):
        rows = [[m] + [cell(p, m, key) for p in protos] for m in methods]
        text += [f"HTER (%) on the {what}, mean ± std over seeds {seeds}",
                 format_table(["method"] + protos, rows), ""]
    rows = [[m] + [f"{cell(p, m, 'frr').split(' ±')[0]} / {cell(p, m, 'far').split(' ±')[0]}"
                   if m in summary[p] else "-" for p in protos] for m in methods]
    text += ["FRR / FAR (%) behind the target HTER, mean over seeds",
             format_table(["method"] + protos, rows), ""]
    return summary, "\n".join(text)


def summary_line(reports: list, out_dir) -> str:
    """The line a run ends with: per trained method and source, the best source-dev HTER
    (mean over seeds) and the step chosen in each seed; where checkpoints and results are."""
    parts = []
    first = reports[0]["results"]
    for proto, by_method in first.items():
        for method, r in by_method.items():
            if "dev_hter" not in r:
                continue
            source = reports[0]["config"]["protocols"][proto][0]
            label = f"{method}/{source}"
            if any(p.startswith(label + " ") for p in parts):
                continue                                       # one model serves two protocols
            devs = [rep["results"][proto][method]["dev_hter"] for rep in reports]
            steps = "/".join(str(rep["results"][proto][method]["best_step"]) for rep in reports)
            parts.append(f"{label} {100 * np.mean(devs):.1f} % @ step {steps}")
    seeds = [r["seed"] for r in reports]
    return (f"fas done, seeds {seeds}. Best source-dev HTER (mean; chosen step per seed): "
            f"{'; '.join(parts)}. Checkpoints: {out_dir}/seed<S>/<method>/<source>/best; "
            f"results: {out_dir}/results.json, tables: {out_dir}/tables.md, "
            f"figures: {out_dir}/figures/")
