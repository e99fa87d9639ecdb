"""The classifier route's experiment: the speech paper's Table 1 in miniature (or at full size).

    pre-trained SSL model --(SFT on the post-training pool)--> post-trained detector
    post-trained detector --(SFT | GRPO | SFT->GRPO | GRPO without negative reward ...)--> fine-tuned
    every model -> EER on the target domain's test set (in-domain) and on each out-of-domain set,
                -> drift: Wasserstein distance between the pooled embeddings of each test set
                   and those of the reference set (when one is given),
                -> a trajectory: in-domain and OOD-average EER at every evaluation step, so
                   "forgets less" can be told apart from "moves less".

With no data sets given, the synthetic corpora of synth_speech.py are built (or reused) and used;
with a recipe that names real protocols the same code runs the paper's set-up. A test set with
"segments": [4, 10, 13, 30, 50] is scored once per segment length (every clip cut into segments
of that length, the last one kept at its length) and its EER is the mean over the lengths, as
the paper evaluates Deepfake-Eval-2024.

Modes (`--mode`): experiment (the whole table), finetune (one method on train_set, selected on
dev_set), score (one checkpoint, `--init`, on test_sets; the reference set is optional).
"""
from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path

import numpy as np
from tqdm import tqdm

import distributed
import plots
import train
from eval import compute_eer, det_curve, format_table, wasserstein_drift, write_score_file
from synth_speech import make_speech_corpora
from classifier_data import AudioSet, score_set
from train_classifier import ClassifierConfig, build_model, finetune, run_method

# --quick: the same pipeline at toy size, under a minute on 2 CPU cores (a test runs it);
# train.main puts these between the recipe and the command-line flags.
QUICK = dict(steps=6, post_steps=10, batch_size=4, num_generations=8, eval_every=3,
             train_min_sec=0.5, train_max_sec=0.8, old_refresh=3)
DET_POINTS = 200  # DET curve points kept per set in results.json (for the figure)


# ----------------------------------------------------------------------------- data sets

def expand_segments(spec: dict) -> list:
    """A test-set spec with "segments": [s1, s2, ...] -> one spec per segment length, named
    "<name>@<s>s" and grouped under the set's name; any other spec -> [spec]."""
    if not spec.get("segments"):
        return [spec]
    name = spec.get("name", Path(spec["path"]).stem)
    base = {k: v for k, v in spec.items() if k != "segments"}
    return [dict(base, name=f"{name}@{s:g}s", segment=s, group=name) for s in spec["segments"]]


def corpus_sets(cfg: ClassifierConfig) -> dict:
    """Data-set specs by role: from the recipe when it names them, else the synthetic corpora."""
    if cfg.train_set:
        return {"post": None, "target_train": cfg.train_set, "target_dev": cfg.dev_set,
                "tests": cfg.test_sets, "reference": cfg.reference_set or None}
    # the quick corpus gets its own folder, so a quick run never replaces the full corpus
    root, size = (cfg.corpus_root + "_quick", "quick") if cfg.quick else (cfg.corpus_root, "default")
    with distributed.setup().main_first():  # dist: rank 0 builds, the others reuse it
        index = make_speech_corpora(root, seed=0, size=size, annotate=False)
    by_role = {}
    for name, e in index.items():
        spec = dict(kind=e["kind"], path=e["path"], audio_dir=e["audio_dir"], name=name)
        by_role.setdefault(e["role"], []).append(spec)
    tests = [dict(s, domain="in") for s in by_role["target_test"]]
    tests += [dict(s, domain="out") for s in by_role["ood_test"]]
    return {"post": by_role["post"][0], "target_train": by_role["target_train"][0],
            "target_dev": by_role["target_dev"][0], "tests": tests,
            "reference": by_role["reference"][0]}


def load_tests(cfg: ClassifierConfig, specs: list) -> list:
    return [AudioSet(s, cfg.sample_rate) for spec in specs for s in expand_segments(spec)]


# ----------------------------------------------------------------------------- scoring

def score_model(cfg, model, tests: list, reference: AudioSet | None,
                score_dir: Path | None = None) -> dict:
    """EER (%) of every test set (score files written when score_dir is given), the drift to
    the reference set (when there is one) and a thinned DET curve."""
    device = train.pick_device(cfg.device)
    bf16 = cfg.bf16 and device.type == "cuda"
    args = (device, cfg.eval_batch_size, bf16, cfg.eval_max_sec)
    ref_emb = score_set(model, reference, *args)[1] if reference is not None else None
    result = {}
    for test in tests:
        scores, emb = score_set(model, test, *args)
        real = test.labels.numpy() == 1
        if score_dir is not None and distributed.setup().is_main:  # dist: rank 0 writes
            write_score_file(score_dir / f"{test.name}.tsv",
                             [test.name_of(i) for i in range(len(scores))], scores)
        frr, far, _ = det_curve(scores[real], scores[~real])
        keep = np.unique(np.linspace(0, len(frr) - 1, DET_POINTS).round().astype(int))
        result[test.name] = {"eer": 100 * compute_eer(scores[real], scores[~real])[0],
                             "group": test.group, "domain": test.domain,
                             "det": [frr[keep].tolist(), far[keep].tolist()]}
        if ref_emb is not None:
            result[test.name]["drift"] = wasserstein_drift(emb, ref_emb)
    return result


def domain_means(result: dict) -> dict:
    """{group: EER} with a segmented set's EER the mean over its lengths, plus "in-domain"
    (mean over the in-domain groups) and "OOD avg" (mean over the out-of-domain groups), each
    only when there is such a group."""
    groups, domain = {}, {}
    for r in result.values():
        groups.setdefault(r["group"], []).append(r["eer"])
        domain[r["group"]] = r["domain"]
    eer = {g: float(np.mean(v)) for g, v in groups.items()}
    ins, ood = ([g for g in eer if domain[g] == d] for d in ("in", "out"))
    out = {"in-domain": float(np.mean([eer[g] for g in ins]))} if ins else {}
    out.update({g: eer[g] for g in ood})
    if ood:  # no set of a kind: no column for it (not NaN)
        out["OOD avg"] = float(np.mean([eer[g] for g in ood]))
    return out


def trajectory_monitor(cfg, tests: list):
    """finetune's monitor: every test set's EER at each evaluation step, logged as eer_<set>."""
    def monitor(model):
        return {f"eer_{k}": v["eer"] for k, v in score_model(cfg, model, tests, None).items()}
    return monitor


def trajectory(folders: list, tests: list, start: dict) -> dict:
    """In-domain / OOD-avg EER along training, from the eer_<set> rows of each stage's
    metrics.jsonl (stages one after another: SFT then GRPO); step 0 is the start model."""
    steps, points, offset = [0], [start], 0
    for folder in folders:
        rows = [r for r in plots.read_jsonl(Path(folder) / "metrics.jsonl")
                if f"eer_{tests[0].name}" in r]
        for r in rows:
            res = {t.name: {"eer": r[f"eer_{t.name}"], "group": t.group, "domain": t.domain}
                   for t in tests}
            steps.append(offset + r["step"])
            points.append(domain_means(res))
        offset = steps[-1]
    return {"step": steps, **{k: [p.get(k) for p in points] for k in points[0]}}


# ----------------------------------------------------------------------------- jobs

def _evaluate(cfg: ClassifierConfig, sets: dict, folder, name: str) -> dict:
    """Score the checkpoint in `folder` on every test set (score files under scores/<name>)."""
    model = build_model(cfg, str(folder)).to(train.pick_device(cfg.device))
    out = Path(cfg.out_dir) / f"seed{cfg.seed}"
    return score_model(cfg, model, sets["tests"], sets["reference"], out / "scores" / name)


def post_job(cfg: ClassifierConfig, roles: dict, sets: dict) -> dict:
    """Post-train one seed's detector (if the corpus has a pool) and score it."""
    out = Path(cfg.out_dir) / f"seed{cfg.seed}"
    start = cfg.init or cfg.model
    if roles["post"] is not None and not cfg.init:
        pre, dist = out / "pretrained", distributed.setup()
        with dist.main_first():  # dist: rank 0 writes the start model, the others read it
            if dist.is_main:
                build_model(cfg, cfg.model).save_pretrained(pre)
        post_cfg = dataclasses.replace(cfg, lr=cfg.post_lr, steps=cfg.post_steps,
                                       eval_every=max(1, cfg.post_steps // 3))
        start = str(finetune(post_cfg, "sft", out / "post_train", sets["post"], sets["reference"],
                             str(pre)))
    return dict(start=start, result=_evaluate(cfg, sets, start, "post-trained"))


def reuses_sft(cfg: ClassifierConfig, method: str) -> bool:
    """sft_grpo's SFT stage is the sft method's run to the bit (same seed, data, steps), so
    when both are compared the GRPO stage starts from the sft method's checkpoint."""
    return method == "sft_grpo" and "sft" in cfg.methods and not cfg.sft_steps


def method_job(cfg: ClassifierConfig, method: str, post: dict, sets: dict) -> dict:
    """Fine-tune one seed's post-trained detector by one method; score its chosen checkpoint;
    its trajectory (test EERs at every evaluation step, from the post-trained point on)."""
    seed_dir = Path(cfg.out_dir) / f"seed{cfg.seed}"
    out, monitor = seed_dir / method, trajectory_monitor(cfg, sets["tests"])
    args = (sets["target_train"], sets["target_dev"])
    if reuses_sft(cfg, method):  # the GRPO stage alone; its reference is the start model
        folder = finetune(cfg, "grpo", out / "grpo", *args, str(seed_dir / "sft" / "best"),
                          reference=post["start"], monitor=monitor)
        stages = [seed_dir / "sft", out / "grpo"]
    else:
        folder = run_method(cfg, method, out, *args, post["start"], monitor)
        stages = [out / "sft", out / "grpo"] if method == "sft_grpo" else [out]
    return dict(result=_evaluate(cfg, sets, folder, method),
                trajectory=trajectory(stages, sets["tests"], domain_means(post["result"])),
                best=json.loads((Path(folder).parent / "best.json").read_text()))


_SETS = {}  # a worker process's data sets, handed over once (fork) by _worker_init


def _worker_init(sets):
    _SETS.update(sets)
    # two workers' step bars would garble the terminal: the parent's bar counts the jobs
    os.environ["TQDM_DISABLE"] = "1"


def _in_worker(job, *args):
    return job(*args, _SETS)


def run_seeds(cfg: ClassifierConfig, roles: dict, sets: dict) -> list:
    """Every seed: post-training, then every method from it. With workers > 1 the jobs run in
    that many processes side by side (each single-threaded): post-trainings first, each seed's
    methods as soon as its post-trained model exists. Every job is seeded by itself, so the
    results do not depend on how many workers ran them."""
    cfgs = [dataclasses.replace(cfg, seed=cfg.seed + k) for k in range(cfg.seeds)]
    # sft_grpo waits for its seed's sft when it reuses it; the other methods need only the post
    first = [m for m in cfg.methods if not reuses_sft(cfg, m)]
    if cfg.workers > 1 and distributed.setup().world > 1:
        raise ValueError("under torchrun the processes share each job: use --workers 1")
    if cfg.workers <= 1:
        posts = [post_job(c, roles, sets) for c in cfgs]
        runs = [{m: method_job(c, m, p, sets) for m in first + [m for m in cfg.methods
                                                               if m not in first]}
                for c, p in zip(cfgs, posts)]
    else:
        ctx = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(cfg.workers, mp_context=ctx, initializer=_worker_init,
                                 initargs=(sets,)) as pool, \
                tqdm(total=len(cfgs) * (1 + len(cfg.methods)), desc="post-training and methods") as bar:
            pending = {pool.submit(_in_worker, post_job, c, roles): ("post", k)
                       for k, c in enumerate(cfgs)}
            posts, runs = [None] * len(cfgs), [{} for _ in cfgs]
            while pending:
                for done in wait(pending, return_when=FIRST_COMPLETED).done:
                    what, k = pending.pop(done)
                    bar.update()
                    if what == "post":  # its methods can start
                        posts[k] = done.result()
                        ready = first
                    else:
                        runs[k][what] = done.result()
                        ready = ["sft_grpo"] if what == "sft" and reuses_sft(cfg, "sft_grpo") \
                            else []
                    pending.update({pool.submit(_in_worker, method_job, cfgs[k], m, posts[k]):
                                    (m, k) for m in ready})
    return [dict(seed=c.seed, models={"post-trained": p["result"],
                                      **{m: r[m]["result"] for m in cfg.methods}},
                 trajectories={m: r[m]["trajectory"] for m in cfg.methods},
                 best={m: r[m]["best"] for m in cfg.methods})
            for c, p, r in zip(cfgs, posts, runs)]


# ----------------------------------------------------------------------------- reports

def summarize(per_seed: list) -> dict:
    """{model: {column: (mean, std)}} over seeds: in-domain, each OOD set, OOD avg, drift."""
    summary = {}
    for model in per_seed[0]["models"]:
        rows = []
        for r in per_seed:
            res = r["models"][model]
            row = domain_means(res)
            row.update({f"drift {k}": v["drift"] for k, v in res.items() if "drift" in v})
            rows.append(row)
        summary[model] = {k: (float(np.mean([row[k] for row in rows])),
                              float(np.std([row[k] for row in rows]))) for k in rows[0]}
    return summary


def in_domain_sets(result: dict) -> list:
    """The names of the in-domain test sets (groups) of one model's scores, in order."""
    return list(dict.fromkeys(r["group"] for r in result.values() if r["domain"] == "in"))


def tables(summary: dict, n_seeds: int, what: str, in_domain: list = ()) -> str:
    """The EER table (and the drift table, when there is a reference set) as text; the
    in-domain column names the sets it averages (`in_domain`), as the drift table does."""
    def cell(mean_std):
        mean, std = mean_std
        return f"{mean:.2f} ± {std:.2f}" if n_seeds > 1 else f"{mean:.2f}"
    models = list(summary)
    keys = [k for k in summary[models[0]] if not k.startswith("drift")]
    drift = [k for k in summary[models[0]] if k.startswith("drift")]
    head = {"in-domain": "in-domain: " + ", ".join(in_domain)} if in_domain else {}
    text = [f"EER (%) — {what}, {n_seeds} seed(s); lower is better",
            format_table(["model"] + [head.get(k, k) for k in keys],
                         [[m] + [cell(summary[m][k]) for k in keys] for m in models])]
    if drift:
        text += ["", "Drift: mean per-dimension Wasserstein-1 between pooled embeddings of each "
                 "test set and the reference set",
                 format_table(["model"] + [k[6:] for k in drift],
                              [[m] + [cell(summary[m][k]) for k in drift] for m in models])]
    return "\n".join(text)


def describe(cfg: ClassifierConfig) -> str:
    """What the tables are of: the miniature, or the user's own data and model."""
    if cfg.train_set or cfg.test_sets:
        return f"model {cfg.init or cfg.model}"
    return "CPU miniature (synthetic speech, tiny detector)"


def finish(cfg: ClassifierConfig, out: Path, report: dict, text: str) -> None:
    """results.json, tables.md, the figures, and one summary line (rank 0 under torchrun)."""
    if not distributed.setup().is_main:
        return
    out.mkdir(parents=True, exist_ok=True)
    train.save_config(cfg, out)
    (out / "results.json").write_text(json.dumps(dict(route="classifier", **report), indent=1)
                                      + "\n")
    train.write_report(out, text)
    drawn = plots.redraw(out) if plots.pyplot() is not None else print(
        plots.MISSING.format(run_dir=out))
    print(f"results: {out / 'results.json'}; tables: {out / 'tables.md'}"
          + (f"; figures: {', '.join(str(p) for p in drawn)}" if drawn else ""))


def check_resume(cfg: ClassifierConfig, stages: list) -> None:
    """--resume must name the last/ checkpoint of one of the run's stages: never ignored."""
    if cfg.resume and Path(cfg.resume).absolute().parent not in [s.absolute() for s in stages]:
        raise ValueError(f"--resume {cfg.resume} is not the last/ checkpoint of a stage of this "
                         f"run (e.g. {stages[0] / 'last'})")


def run_experiment(cfg: ClassifierConfig) -> dict:
    if cfg.quick:  # its own out_dir: a quick run never replaces a full run's results
        cfg = dataclasses.replace(cfg, out_dir=cfg.out_dir + "_quick")
    out = Path(cfg.out_dir)
    stages = ["post_train"] + [f"{m}{part}" for m in cfg.methods for part in ("", "/sft", "/grpo")]
    check_resume(cfg, [out / f"seed{cfg.seed + k}" / st for k in range(cfg.seeds) for st in stages])
    roles = corpus_sets(cfg)
    sets = {role: AudioSet(spec, cfg.sample_rate) for role, spec in roles.items()
            if role != "tests" and spec}
    sets.setdefault("reference", None)
    sets["tests"] = load_tests(cfg, roles["tests"])
    per_seed = run_seeds(cfg, roles, sets)
    summary = summarize(per_seed)
    best = "; ".join(f"{m}: dev EER {b['dev_eer']:.2f} % at step {b['step']}"
                     for m, b in per_seed[0]["best"].items())
    finish(cfg, Path(cfg.out_dir), dict(per_seed=per_seed, summary=summary),
           tables(summary, cfg.seeds, describe(cfg),
                  in_domain_sets(next(iter(per_seed[0]["models"].values()))))
           + f"\n\nseed {cfg.seed}, best: {best}")
    return summary


def run_score(cfg: ClassifierConfig) -> dict:
    """Score one checkpoint (`--init`) on the test sets: score files, EER and drift tables."""
    if not cfg.init:
        raise ValueError("mode=score needs --init: the SSLClassifier folder to score")
    if not cfg.test_sets:
        raise ValueError("mode=score needs --test_sets: a list of {name, kind, path, ...}")
    tests = load_tests(cfg, cfg.test_sets)
    reference = AudioSet(cfg.reference_set, cfg.sample_rate) if cfg.reference_set else None
    out = Path(cfg.out_dir)
    model = build_model(cfg, cfg.init).to(train.pick_device(cfg.device))
    result = score_model(cfg, model, tests, reference, out / "scores")
    summary = summarize([dict(models={"checkpoint": result})])
    finish(cfg, out, dict(per_seed=[dict(models={"checkpoint": result})], summary=summary),
           tables(summary, 1, describe(cfg), in_domain_sets(result)))
    return summary


def run_finetune(cfg: ClassifierConfig) -> Path:
    """One method on train_set, the checkpoint chosen on dev_set; ends with a summary line."""
    out = Path(cfg.out_dir)
    check_resume(cfg, [out, out / "sft", out / "grpo"])
    sets = {k: AudioSet(getattr(cfg, k), cfg.sample_rate) for k in ("train_set", "dev_set")}
    best = run_method(cfg, cfg.method, out, sets["train_set"], sets["dev_set"],
                      cfg.init or cfg.model)
    b = json.loads((best.parent / "best.json").read_text())
    print(f"{cfg.method}: best dev EER {b['dev_eer']:.2f} % at step {b['step']}; checkpoint "
          f"{best}; log {best.parent / 'metrics.jsonl'}")
    return best


def run(cfg: ClassifierConfig):
    """CLI entry of the route (see `train.py`)."""
    modes = {"experiment": run_experiment, "finetune": run_finetune, "score": run_score}
    if cfg.mode not in modes:
        raise ValueError(f"unknown mode {cfg.mode!r}; expected one of {sorted(modes)}")
    return modes[cfg.mode](cfg)
