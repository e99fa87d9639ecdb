"""The face route's experiment: the face paper's Tables 1-3 and Figs. 4-6, miniature or full size.

Face paper: Jiang, Li et al. (AAAI 2026), "Exploring task-solving paradigm for generalized
cross-domain face anti-spoofing via reinforcement fine-tuning".

    base model (the hub model; miniature: the stand-in of fas_standin.py)
      -> zero-shot                                                         (Table 2, row 1)
      -> SFT on source train: completion-only cross-entropy on answer targets   (Table 2, row 2)
      -> GRPO on source train, R_all = R_format + R_cls + R_res (Eqs. 2-6)  (Tables 1-2, "Ours")
      -> GRPO without R_cls / R_res / R_format                             (Table 3)
    every trained model: the checkpoint with the lowest HTER on the *source* dev set is kept;
    then FRR, FAR, HTER and per-attack error rates on the *target* test set  (Tables 1-3, Fig. 6),
    the HTER split into attack types the source has and lacks, and the source test HTER

A protocol is (source domain, target domain). Models are trained once per source and tested on
each of its targets, so the four protocols cost two trainings per method. `num_generations`
(N, Fig. 5) and `data_fraction` (Fig. 4) are options. With `manifest` set, the same code runs on
real data (a CSV with path,label,attack,domain,split); otherwise synth_faces.py builds a corpus.
Seeds: `seeds` runs seed, seed + 1, ... (`workers` of them side by side); a run folder's
results.json, tables.md and figures/ summarize every seed of its set-up (fas_report.py,
plots.py), and the run ends on one line.

Departures from the paper (it publishes no code), numbered:
1. Task prompt: the text of its Fig. 2 is not in our copy; PROMPT is the R1-style wording.
2. Miniature: tiny model, synthetic faces, the stand-in for pre-training (fas_standin.py), lr,
   steps, L and max_new_tokens scaled to a 2-core CPU; full fine-tuning of the language model
   (vision tower frozen). The real recipe (configs/fas_qwen25vl7b.json) uses LoRA + bf16 +
   checkpointing on the hub model.
3. len(o_i) in Eq. 5 counts characters by default (rewards.py, departure 2); `len_unit` switches.
4. Unstated by the paper, chosen here: beta = 0.04 (k3 KL), clip_eps = 0.2, one update per
   rollout (mu = 1), greedy decoding at test time, number of steps, dev-set checkpoint choice.
5. SFT targets: a class-free description in <thinking> plus the true label in <answer>, so the
   SFT model answers in the same format (the paper does not show its SFT answers).
6. The reward ablations (Table 3) run on `ablation_protocols` only, as in the paper (CeFA ->
   HQ-WMCA); the miniature's recipe leaves them out of its default methods for time (docs/face.md
   gives the command).
7. Dev-set selection looks at checkpoints every `eval_every` steps, never at the start point
   (logged as step 0 for the curves).
8. "Batch size 6" is read as images (prompts) per step for both methods: an SFT step takes 6
   examples, a GRPO step 6 images and N = 6 samples of each (36 completions). TRL and ms-swift
   count a GRPO batch in completions (6 / 6 = one image a step); the paper does not say which
   it meant. Read that way, GRPO sees a sixth of SFT's labelled images per step; counting
   images gives both methods the same (docs/face.md, "Batch size 6", measures both).
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

import distributed
import plots
from data import check_files, load_image
from eval import frr_far_hter, per_attack_error_rates
from fas_data import PROMPT, manifest_splits, pick, sft_targets, subsample
from fas_report import group_hter, summarize, summary_line, tables
from fas_standin import build_standin, pool_splits
from rewards import fas_reward, parse_answer
from synth_faces import DEFAULT_N, PROTOCOLS, make_face_corpora
from train import option, write_report
from train_chat import ChatConfig, generate_answers, grpo_stage, load_policy, sft_stage

# Method -> reward switches (Table 3 rows); "grpo" uses the config's own use_* switches.
GRPO_METHODS = {"grpo": {}, "grpo_wo_cls": dict(use_cls=False),
                "grpo_wo_res": dict(use_res=False), "grpo_wo_format": dict(use_format=False)}
METHODS = ("zero_shot", "sft", *GRPO_METHODS)
# --quick: the same pipeline at toy size, under a minute on 2 CPU cores (a test runs it).
QUICK = dict(n_per_domain={"source": 48, "target": 48}, image_size=56, tower_steps=30,
             tower_batch=16, standin_steps=30, standin_lr=3e-3, sft_steps=2, grpo_steps=2,
             eval_every=1, batch_size=4, num_generations=2, max_new_tokens=32,
             eval_batch_size=48)


@dataclass
class FasConfig(ChatConfig):
    """Face anti-spoofing by GRPO on Qwen2.5-VL (Jiang, Li et al. 2026). Where the paper gives a
    value (N = 6, L = 1200, batch 6, lr 5e-6) it is the default; the recipes set the rest."""
    out_dir: str = option("runs/fas", "where checkpoints, logs and results go")
    manifest: str = option("", "real data: CSV path,label,attack,domain,split ('' = synthetic)")
    protocols: dict = option({k: list(v) for k, v in PROTOCOLS.items()},
                             "protocol name -> [source domain, target domain] (Table 1)")
    ablation_protocols: list = option(["cefa_to_hqwmca"], "reward-ablation protocols (Table 3)")
    methods: list = option(list(METHODS), f"any of {', '.join(METHODS)}")
    seeds: int = option(1, "run this many seeds, seed, seed+1, ..., and report mean ± std")
    workers: int = option(1, "processes running the seeds side by side (one thread each)")
    batch_size: int = option(6, "images per optimizer step, both methods: SFT examples, GRPO "
                                "prompts of N completions each (departure 8)")
    corpus_root: str = option("runs/face_corpus", "synthetic corpus and pool folder (built once)")
    corpus_seed: int = option(0, "seed of the synthetic corpus and pool (the same for every seed)")
    image_size: int = option(112, "synthetic image side, pixels")
    n_per_domain: dict = option(dict(DEFAULT_N), "synthetic images per domain, by role")
    min_pixels: int = option(56 * 56, "image area floor for the processor (one token per 28x28 px)")
    max_pixels: int = option(448 * 448, "image area cap for the processor")
    prompt: str = option(PROMPT, "task prompt (departure 1: the paper's Fig. 2 text is not given)")
    L: int = option(1200, "expected maximum length of Eq. 5 (paper: 1200)")
    len_unit: str = option("chars", "len(o_i) of Eq. 5: chars | tokens")
    use_format: bool = option(True, "R_format in the 'grpo' method (Table 3 switch)")
    use_cls: bool = option(True, "R_cls in the 'grpo' method (Table 3 switch)")
    use_res: bool = option(True, "R_res in the 'grpo' method (Table 3 switch)")
    data_fraction: float = option(1.0, "share of the source train set used (Fig. 4)")
    sft_steps: int = option(500, "SFT steps")
    grpo_steps: int = option(500, "GRPO steps")
    grpo_lr: float = option(0.0, "GRPO learning rate (0: lr, the paper's one rate for both)")
    eval_every: int = option(100, "steps between source-dev evaluations (checkpoint choice)")
    curve_every: int = option(100, "every this many steps (and at 0) also score the source and "
                                   "target test sets: the curve figure, never used to choose "
                                   "(0: never)")
    # the stand-in for a pre-trained VLM (tiny model only; fas_standin.py)
    standin_root: str = option("runs/face_standin", "stand-in cache: one folder per seed+set-up")
    pool_n: int = option(8000, "images in the stand-in's broad pre-training pool")
    tower_steps: int = option(3000, "vision-tower pre-training steps on the pool")
    tower_lr: float = option(3e-3, "vision-tower pre-training peak learning rate (cosine)")
    tower_batch: int = option(32, "pool images per tower step")
    tower_max_hter: float = option(0.20, "refuse a tower above this pool-dev HTER")
    standin_steps: int = option(400, "labelled SFT steps of the stand-in's LM on the pool")
    standin_lr: float = option(1e-3, "learning rate of that SFT")


# ----------------------------------------------------------------------------- data

def load_splits(cfg: FasConfig) -> dict:
    """(domain, split) -> [ChatExample] from the manifest (or the synthetic corpus it builds).
    A manifest of yours is checked before any training: every protocol's source has train and
    dev images and its target test images, and every image of them reads."""
    manifest = cfg.manifest
    if manifest:
        splits = manifest_splits(manifest, cfg.prompt)
        need = {(d, sp) for src, tgt in cfg.protocols.values()
                for d, sp in ((src, "train"), (src, "dev"), (tgt, "test"))}
        missing = sorted(f"{d}/{sp}" for d, sp in need if (d, sp) not in splits)
        if missing:
            raise ValueError(f"{manifest}: the protocols need images of {missing} (domain/split); "
                             f"it has {sorted(f'{d}/{sp}' for d, sp in splits)}")
        used = [ex.media for key in sorted(need | {(s, "test") for s, _ in cfg.protocols.values()})
                for ex in splits.get(key, [])]
        check_files(used, load_image, what="image")
        return splits
    root = Path(cfg.corpus_root) / ("quick" if cfg.quick else "full")
    with distributed.setup().main_first():  # dist: rank 0 builds, the others read
        index = make_face_corpora(root, cfg.corpus_seed, cfg.image_size, cfg.n_per_domain,
                                  quick=cfg.quick)
    return manifest_splits(root / index["manifest"], cfg.prompt)


# ----------------------------------------------------------------------------- rewards & metrics

def reward_function(cfg: FasConfig, use_format=True, use_cls=True, use_res=True):
    """reward_fn(texts, examples, lengths) for grpo_stage: Eq. 6 with Table 3's switches."""
    def reward_fn(texts, examples, lengths):
        rows = [fas_reward(t, ex.label, use_format, use_cls, use_res, cfg.L, cfg.len_unit,
                           int(n)) for t, ex, n in zip(texts, examples, lengths)]
        parts = {k: torch.tensor([p[k] for _, p in rows]) for k in ("format", "cls", "res")}
        return torch.tensor([r for r, _ in rows]), parts       # (B*N,), each part (B*N,)
    return reward_fn


def method_switches(cfg: FasConfig, method: str) -> dict:
    """The reward switches of a GRPO method: the config's, with the ablated part turned off."""
    switches = dict(use_format=cfg.use_format, use_cls=cfg.use_cls, use_res=cfg.use_res)
    return {**switches, **GRPO_METHODS[method]}


def evaluate(policy, examples: list, cfg: FasConfig) -> tuple[dict, list]:
    """Greedy answers -> FRR, FAR, HTER (fractions), per-attack error rates, malformed share;
    and one prediction row per example (for the saved predictions)."""
    texts = generate_answers(policy, examples, cfg)
    preds = [parse_answer(t) for t in texts]
    labels = [ex.label for ex in examples]
    attacks = [ex.meta["attack"] for ex in examples]
    rates = frr_far_hter(preds, labels)
    metrics = dict(frr=rates.frr, far=rates.far, hter=rates.hter,
                   malformed=sum(p is None for p in preds) / len(preds),
                   per_attack=per_attack_error_rates(preds, labels, attacks))
    rows = [dict(path=ex.media, label=y, attack=a, pred=p, text=t)
            for ex, y, a, p, t in zip(examples, labels, attacks, preds, texts)]
    return metrics, rows


# ----------------------------------------------------------------------------- training

def load(cfg: FasConfig, source: str, lora: bool = False):
    pixels = {} if source == "tiny" else dict(min_pixels=cfg.min_pixels,
                                              max_pixels=cfg.max_pixels)
    return load_policy(cfg, source, "image", lora=lora, **pixels)


def base_model(cfg: FasConfig) -> str:
    """The model every method starts from: the hub model itself, or (tiny) the stand-in."""
    if cfg.model != "tiny":
        return cfg.model
    with distributed.setup().main_first(), distributed.alone():  # dist: rank 0 builds it alone
        return str(build_standin(cfg))


def train_method(cfg: FasConfig, method: str, base: str, train_ex: list, dev_ex: list,
                 out: Path, tracked: dict | None = None):
    """SFT or GRPO from `base`, scoring the source dev set every `eval_every` steps.

    Returns the policy holding the weights of the lowest dev HTER (the earliest on a tie, also
    saved to out/best) and {best_step, dev_hter}; every dev score goes to out/dev.jsonl (and to
    metrics.jsonl as dev_hter), every `curve_every` steps with the HTER of each `tracked` test
    set beside it (the curve figure), and a row for the start point (step 0, never chosen:
    departure 7).
    """
    policy = load(cfg, base, lora=True)
    steps = cfg.sft_steps if method == "sft" else cfg.grpo_steps
    params = {n: p for n, p in policy.model.named_parameters() if p.requires_grad}
    best, best_state, history = None, None, []
    is_main = distributed.setup().is_main

    def score(step):
        nonlocal best, best_state
        dev, _ = evaluate(policy, dev_ex, cfg)
        row = dict(step=step, dev_hter=dev["hter"], dev_malformed=dev["malformed"])
        if tracked and cfg.curve_every and step % cfg.curve_every == 0:
            row["test_hter"] = {k: evaluate(policy, ex, cfg)[0]["hter"] for k, ex in tracked.items()}
        history.append(row)
        if step > 0 and (best is None or row["dev_hter"] < best["dev_hter"]):
            best = row
            best_state = {n: p.detach().clone() for n, p in params.items()}
            if is_main:  # dist: every rank holds the same dev scores; rank 0 writes
                policy.save(out / "best")
        return dict(dev_hter=row["dev_hter"])
    score(0)
    if method == "sft":
        sft_stage(policy, sft_targets(train_ex, np.random.default_rng([cfg.seed, 2])), cfg, out,
                  steps, validate=score)
    else:
        reward_fn = reward_function(cfg, **method_switches(cfg, method))
        stage_cfg = dataclasses.replace(cfg, lr=cfg.grpo_lr or cfg.lr)  # batch: departure 8
        # pi_ref is the start point, a frozen copy (full fine-tuning; LoRA: adapters off)
        reference = (policy.frozen_copy() if cfg.beta > 0 and cfg.lora_r == 0 else None)
        grpo_stage(policy, train_ex, reward_fn, stage_cfg, out, steps, reference=reference,
                   validate=score)
    if is_main:
        (out / "dev.jsonl").write_text("".join(json.dumps(h) + "\n" for h in history))
    with torch.no_grad():
        for n, p in params.items():
            p.copy_(best_state[n])
    return policy, dict(best_step=best["step"], dev_hter=best["dev_hter"])


# ----------------------------------------------------------------------------- one seed

def check(cfg: FasConfig) -> None:
    """Fail before any training on a method or protocol typo, not hours into the run."""
    unknown = [m for m in cfg.methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; expected any of {METHODS}")
    bad = [k for k, v in cfg.protocols.items() if not (isinstance(v, list) and len(v) == 2)]
    if bad:
        raise ValueError(f"protocols {bad}: each must be [source domain, target domain]")
    if cfg.eval_every < 1:
        raise ValueError(f"eval_every {cfg.eval_every}: must be >= 1, each trained model is the "
                         "checkpoint chosen on the source dev set")
    if cfg.resume:
        raise ValueError("--resume: the face route runs several stages from its base model and "
                         "does not resume; run it again (the corpus and stand-in are reused)")
    missing = [p for p in cfg.ablation_protocols if p not in cfg.protocols]
    if missing:
        raise ValueError(f"ablation_protocols {missing} are not in protocols {list(cfg.protocols)}")


def run_seed(cfg: FasConfig) -> dict:
    """Every method on every protocol for cfg.seed; writes out_dir/seed<S>/results.json."""
    t0 = time.time()
    check(cfg)
    out = Path(cfg.out_dir) / f"seed{cfg.seed}"
    splits = load_splits(cfg)
    sources = list(dict.fromkeys(src for src, _ in cfg.protocols.values()))
    train_sets = {src: subsample(pick(splits, src, "train"), cfg.data_fraction, cfg.seed)
                  for src in sources}
    # the attack types each source shows: the target HTER is split by them
    shared = {src: {ex.meta["attack"] for ex in train_sets[src] if ex.label == "fake"}
              for src in sources}
    base = base_model(cfg)
    results = {name: {} for name in cfg.protocols}
    is_main = distributed.setup().is_main  # dist: every rank holds every score; rank 0 writes
    for method in cfg.methods:
        # zero-shot is one model for all protocols; a trained method is one model per source
        for src in [None] if method == "zero_shot" else sources:
            protos = [p for p, (s, _) in cfg.protocols.items() if src in (None, s)
                      and (method in ("zero_shot", "sft", "grpo") or p in cfg.ablation_protocols)]
            if not protos:
                continue
            tests = {d: pick(splits, d, "test") for p in protos for d in cfg.protocols[p]
                     if (d, "test") in splits}     # the source's test split is optional
            if src is None:
                policy, chosen = load(cfg, base), {}
            else:
                policy, chosen = train_method(cfg, method, base, train_sets[src],
                                              pick(splits, src, "dev"), out / method / src,
                                              tests if method in ("sft", "grpo") else None)
            tested = {}  # domain -> (metrics, rows): each test set is scored once per model
            for proto in protos:
                source, target = cfg.protocols[proto]
                for domain in (target, source):
                    if domain not in tested and domain in tests:
                        tested[domain] = evaluate(policy, tests[domain], cfg)
                metrics, rows = tested[target]
                # the split by attack group depends on the protocol's source (zero-shot: both)
                metrics = {**metrics, **group_hter(*zip(*[(r["pred"], r["label"], r["attack"])
                                                          for r in rows]), shared[source])}
                # In-domain HTER (source test set): did it learn, or did it not transfer?
                extra = {"source_hter": tested[source][0]["hter"]} if source in tested else {}
                results[proto][method] = {**metrics, **chosen, **extra}
                if not is_main:
                    continue
                path = out / "predictions" / proto / f"{method}.jsonl"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = dict(route="fas", seed=cfg.seed, seconds=round(time.time() - t0, 1),
                  config=dataclasses.asdict(cfg), results=results)
    if is_main:
        (out / "results.json").write_text(json.dumps(report, indent=1) + "\n")
    return report


# ----------------------------------------------------------------------------- all seeds

def same_setup(a: dict, b: dict) -> bool:
    """Two runs' configs agree on everything but the seed (and where/how they ran)."""
    skip = ("seed", "seeds", "workers", "resume", "device")
    return {k: v for k, v in a.items() if k not in skip} == {k: v for k, v in b.items()
                                                             if k not in skip}


def one_seed(cfg: FasConfig) -> None:
    report = run_seed(cfg)
    if distributed.setup().is_main:
        write_report(Path(cfg.out_dir) / f"seed{cfg.seed}",
                     f"\nseed {cfg.seed}: {report['seconds']} s\n" + tables(report["results"]))


def _seed_worker(cfg: FasConfig) -> None:
    """One seed in a worker process (no progress bars interleaving)."""
    os.environ["TQDM_DISABLE"] = "1"
    torch.set_num_threads(1)
    one_seed(cfg)


def run_experiment(cfg: FasConfig) -> dict:
    """Run seeds seed .. seed + seeds - 1, print and keep each one's tables, summarize all
    seeds of this set-up in out_dir (results.json, tables.md, figures/) and end on one line."""
    if cfg.quick:  # its own out_dir: a quick run never replaces a full run's results
        cfg = dataclasses.replace(cfg, out_dir=cfg.out_dir + "_quick")  # sizes: train.main
    seeds = [dataclasses.replace(cfg, seed=s) for s in range(cfg.seed, cfg.seed + cfg.seeds)]
    dist = distributed.setup()
    if cfg.workers > 1 and dist.world > 1:
        raise ValueError("workers > 1 under torchrun: pass --workers 1 (torchrun splits every "
                         "step's batch over its processes; each process runs every seed)")
    if cfg.workers > 1 and len(seeds) > 1:
        load_splits(cfg)          # the corpus and the stand-in's pool are shared: built first,
        if cfg.model == "tiny":   # once, then read by every worker
            pool_splits(cfg)
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor
        with ProcessPoolExecutor(min(cfg.workers, len(seeds)),
                                 mp_context=multiprocessing.get_context("spawn")) as pool:
            list(pool.map(_seed_worker, seeds))
    else:
        for seed_cfg in seeds:
            one_seed(seed_cfg)
    if not dist.is_main:  # dist: rank 0 alone summarizes
        return {}
    # Separate runs (--seed 0, --seed 1, ...) of one set-up land in one summary.
    paths = sorted(Path(cfg.out_dir).glob("seed*/results.json"))
    reports = [json.loads(p.read_text()) for p in paths]
    reports = [r for r in reports if same_setup(r["config"], dataclasses.asdict(cfg))]
    summary, text = summarize(reports)
    out = Path(cfg.out_dir)
    write_report(out, "\n" + text)
    (out / "results.json").write_text(json.dumps(
        dict(route="fas", seeds=[r["seed"] for r in reports], summary=summary,
             runs=[f"seed{r['seed']}" for r in reports]), indent=1) + "\n")
    if plots.pyplot() is None:
        print(plots.MISSING.format(run_dir=out))
    else:
        plots.ROUTE_FIGURES["fas"](out)
    print(summary_line(reports, out))
    return dict(reports=reports, summary=summary)
