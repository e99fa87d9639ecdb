"""The classifier route's experiment: the speech paper's Table 1 in miniature (or at full size).

    pre-trained SSL model --(SFT on the post-training pool)--> post-trained detector
    post-trained detector --(SFT | GRPO | SFT->GRPO | GRPO without negative reward ...)--> fine-tuned
    every model -> EER on the target domain's test set (in-domain) and on each out-of-domain set,
                -> drift: Wasserstein distance between the pooled embeddings of each test set
                   and those of the reference set.

With no data sets given, the synthetic corpora of synth_speech.py are built (or reused) and used;
with a recipe that names real protocols the same code runs the paper's set-up.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

import train
from eval import compute_eer, format_table, wasserstein_drift, write_score_file
from synth_speech import make_speech_corpora
from train_classifier import AudioSet, ClassifierConfig, build_model, finetune, run_method, score_set

# --quick: the same pipeline at toy size, under a minute on 2 CPU cores (a test runs it).
QUICK = dict(steps=6, post_steps=10, batch_size=4, num_generations=8, eval_every=3,
             train_min_sec=0.5, train_max_sec=0.8, old_refresh=3)


def corpus_sets(cfg: ClassifierConfig) -> dict:
    """Data sets by role: from the recipe when it names them, else the synthetic corpora."""
    if cfg.train_set:
        return {"post": None, "target_train": cfg.train_set, "target_dev": cfg.dev_set,
                "tests": cfg.test_sets, "reference": cfg.reference_set}
    # the quick corpus gets its own folder, so a quick run never replaces the full corpus
    root, size = (cfg.corpus_root + "_quick", "quick") if cfg.quick else (cfg.corpus_root, "default")
    index = make_speech_corpora(root, seed=0, size=size)
    by_role = {}
    for name, spec in index.items():
        by_role.setdefault(spec["role"], []).append(dict(spec, name=name))
    tests = [dict(s, domain="in") for s in by_role["target_test"]]
    tests += [dict(s, domain="out") for s in by_role["ood_test"]]
    return {"post": by_role["post"][0], "target_train": by_role["target_train"][0],
            "target_dev": by_role["target_dev"][0], "tests": tests,
            "reference": by_role["reference"][0]}


def evaluate_model(cfg, folder: Path, tests: list, reference: AudioSet, score_dir: Path) -> dict:
    """EER on every test set (score files written, overwritten) and drift to the reference set."""
    device = train.pick_device(cfg.device)
    bf16 = cfg.bf16 and device.type == "cuda"
    model = build_model(cfg, str(folder)).to(device)
    _, ref_emb = score_set(model, reference, device, cfg.eval_batch_size, bf16)
    result = {}
    for test in tests:
        scores, emb = score_set(model, test, device, cfg.eval_batch_size, bf16)
        real = test.labels.numpy() == 1
        write_score_file(score_dir / f"{test.name}.tsv", [s.path for s in test.samples], scores)
        result[test.name] = {"eer": 100 * compute_eer(scores[real], scores[~real])[0],
                             "drift": wasserstein_drift(emb, ref_emb)}
    return result


def run_seed(cfg: ClassifierConfig, roles: dict, sets: dict) -> dict:
    """Post-train (if the corpus has a pool), fine-tune with every method, evaluate everything."""
    out = Path(cfg.out_dir) / f"seed{cfg.seed}"
    start = cfg.init or cfg.model
    if roles["post"] is not None and not cfg.init:
        pre = out / "pretrained"
        build_model(cfg, cfg.model).save_pretrained(pre)
        post_cfg = dataclasses.replace(cfg, lr=cfg.post_lr, steps=cfg.post_steps,
                                       eval_every=max(1, cfg.post_steps // 3))
        start = str(finetune(post_cfg, "sft", out / "post_train", sets["post"], sets["reference"],
                             str(pre)))
    models = {"post-trained": Path(start)}
    for method in cfg.methods:
        models[method] = run_method(cfg, method, out / method, sets["target_train"],
                                    sets["target_dev"], start)
    return {name: evaluate_model(cfg, folder, sets["tests"], sets["reference"],
                                 out / "scores" / name) for name, folder in models.items()}


def summarize(results: list[dict], tests: list[AudioSet]) -> dict:
    """Per model: in-domain EER, each OOD EER, OOD average, drift; mean and std over seeds."""
    rows = {}
    for model in results[0]:
        per_seed = []
        for r in results:
            ins = [r[model][t.name]["eer"] for t in tests if t.domain == "in"]
            ood = [r[model][t.name]["eer"] for t in tests if t.domain == "out"]
            row = {"in-domain": float(np.mean(ins))}
            row.update({t.name: r[model][t.name]["eer"] for t in tests if t.domain == "out"})
            row["OOD avg"] = float(np.mean(ood)) if ood else float("nan")
            row.update({f"drift {t.name}": r[model][t.name]["drift"] for t in tests})
            per_seed.append(row)
        rows[model] = {k: (float(np.mean([p[k] for p in per_seed])),
                           float(np.std([p[k] for p in per_seed]))) for k in per_seed[0]}
    return rows


def print_tables(summary: dict, n_seeds: int) -> None:
    def cell(mean_std):
        mean, std = mean_std
        return f"{mean:.2f} ± {std:.2f}" if n_seeds > 1 else f"{mean:.2f}"
    models = list(summary)
    keys = [k for k in summary[models[0]] if not k.startswith("drift")]
    drift = [k for k in summary[models[0]] if k.startswith("drift")]
    print(f"\nEER (%) — CPU miniature, {n_seeds} seed(s); lower is better")
    print(format_table(["model"] + keys, [[m] + [cell(summary[m][k]) for k in keys] for m in models]))
    print("\nDrift: mean per-dimension Wasserstein-1 between pooled embeddings of each test set "
          "and the reference set")
    print(format_table(["model"] + [k[6:] for k in drift],
                       [[m] + [cell(summary[m][k]) for k in drift] for m in models]))


def run_score(cfg: ClassifierConfig) -> dict:
    """Score one checkpoint (`--init`) on the test sets: score files, EER and drift tables."""
    if not cfg.init:
        raise ValueError("mode=score needs --init: the SSLClassifier folder to score")
    tests = [AudioSet(spec, cfg.sample_rate) for spec in cfg.test_sets]
    reference = AudioSet(cfg.reference_set, cfg.sample_rate)
    out = Path(cfg.out_dir)
    result = {"checkpoint": evaluate_model(cfg, Path(cfg.init), tests, reference, out / "scores")}
    summary = summarize([result], tests)
    print_tables(summary, 1)
    (out / "results.json").write_text(json.dumps({"per_seed": [result], "summary": summary},
                                                 indent=2) + "\n")
    return summary


def run_experiment(cfg: ClassifierConfig) -> dict:
    if cfg.quick:
        cfg = dataclasses.replace(cfg, **QUICK)
    roles = corpus_sets(cfg)
    sets = {role: AudioSet(spec, cfg.sample_rate) for role, spec in roles.items()
            if role != "tests" and spec}
    sets["tests"] = [AudioSet(spec, cfg.sample_rate) for spec in roles["tests"]]
    results = [run_seed(dataclasses.replace(cfg, seed=cfg.seed + k), roles, sets)
               for k in range(cfg.seeds)]
    summary = summarize(results, sets["tests"])
    print_tables(summary, cfg.seeds)
    out = Path(cfg.out_dir)
    train.save_config(cfg, out)
    (out / "results.json").write_text(json.dumps({"per_seed": results, "summary": summary},
                                                 indent=2) + "\n")
    return summary
