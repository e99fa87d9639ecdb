"""HIR-SDD route (Dvirniak et al. 2026): an audio LLM that explains its spoof verdict.

    base LALM --SFT "Final Answer: Real|Fake"--> Train-HL
              --SFT <think>..</think><reasons>[..]</reasons><answer>..</answer>--> Train-R
              --the same, some clips perturbed + a <think> sentence naming it--> + grounding
    a CoT model --GRPO: correctness + format + reasons + judge (skeptic filter optional)
    each model -> test accuracy, balanced accuracy, F1 (bona fide positive); CoT models also
    Jaccard of tags (Eq. 1), judge score, malformed share; plus a Wav2Vec2-AASIST row.

Stages are options of one loop (`stages`), each an sft_stage or grpo_stage of train_chat.py;
CoT stages start from the base model or (the paper's option ii) from the hard-label one.
`python train.py --recipe configs/hir_mini.json` runs the CPU miniature; --quick a toy size.

Departures from the paper, numbered:
1. Qwen2-Audio (Qwen2AudioForConditionalGeneration) instead of SALMONN-7B, which is not in
   transformers; Qwen2-Audio is the LALM the paper's related work (ALLM4ADD) fine-tunes.
2. The miniature's LALM is a tiny randomly initialised Qwen2-Audio (tiny.py). Its "pre-training"
   is a format stage on class-free text: each clip is paired with the targets of another random
   clip, so it learns both output formats and the comments' language but answers independently
   of the audio. It stands in for a pre-trained LALM with weak zero-shot ability; no more.
   Its random audio encoder is trained too (`train_audio_encoder`); the real one stays frozen.
3. Data: synthetic speech with templated comments (synth_speech.py) instead of 41k human
   annotations, pooled and split at random (`resplit`), as the paper splits its reasoning set.
4. Judge: a deterministic rubric (judge.RubricJudge) in the miniature; an LLM judge otherwise
   (the recipe: Qwen2.5-7B-Instruct, the paper: Qwen2.5-32B). Test traces are scored by the same
   judge (the paper: GPT-5.1). See judge.py.
5. Grounding details the paper leaves open are listed in hir_data.py (the data side: manifest,
   targets, grounding); there a share `grounding_p` of training clips is perturbed.
6. The skeptic filter runs once before GRPO, with the starting policy, on `skeptic_prompts`
   random training prompts (0: all of them).
7. With LoRA the GRPO reference is the base model (adapters off), not the SFT checkpoint (as
   TRL with peft). The miniature fine-tunes fully, so its reference is the SFT checkpoint.
8. Evaluation decodes greedily; the hard-label answer must be exactly "Final Answer: Real|Fake".
"""
from __future__ import annotations

import csv
import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

import train
from train import option
from eval import accuracy, balanced_accuracy, f1_score, format_table, malformed_share, mean_jaccard
from hir_data import (GROUNDING_CLAIM, SAMPLE_RATE, class_free_examples, ground, make_examples,
                      parse_hard_label, read_hir_manifest, split_records)
from judge import make_judge
from rewards import HIR_WEIGHTS, JUDGE_FIELDS, correctness_reward, hir_format_reward, hir_reward, \
    parse_hir
from train_chat import ChatConfig, generate_answers, grpo_stage, load_policy, sft_stage

STAGES = {  # name -> (task, starts from, trains on grounded audio, table row)
    "hl_sft": ("hl", "base", False, "Train-HL"),
    "cot_sft": ("cot", "base", False, "Train-R"),
    "hl_cot_sft": ("cot", "hl_sft", False, "Train-HL -> Train-R"),
    "cot_ground_sft": ("cot", "base", True, "Train-R + grounding"),
    "hl_cot_ground_sft": ("cot", "hl_sft", True, "Train-HL -> Train-R + grounding"),
    "grpo": ("cot", None, None, None),  # starts from grpo_init, on its data; row: init's + GRPO
}
PAPER = {"SALMONN-7B Train-2-HL": dict(acc=94.5, bacc=88.6, f1=85.7),
         "Jaccard": dict(sft=0.6264, grpo=0.6468)}
CORPUS_ROOT = "runs/corpus"  # shared with the classifier route
# --quick: every stage at toy size, under a minute on 2 CPU cores (a test runs it).
QUICK = dict(corpus_size="quick", format_steps=6, hl_steps=4, cot_steps=4, grpo_steps=2,
             sft_batch_size=4, batch_size=2, num_generations=3, max_new_tokens=40,
             skeptic_rollouts=2, eval_batch_size=16,
             baseline=dict(steps=4, batch_size=4, eval_every=4, lr=1e-3, rawboost_algo=0,
                           train_min_sec=0.5, train_max_sec=1.0))


@dataclass
class HirConfig(ChatConfig):
    """HIR-SDD: hard-label / CoT SFT, grounding and GRPO of an audio LLM (Qwen2-Audio)."""
    out_dir: str = option("runs/hir", "where checkpoints, logs, completions and results go")
    manifest: str = option("", "JSONL manifest of the data (read_hir_manifest); '' = synthetic")
    corpus_root: str = option(CORPUS_ROOT, "synthetic corpus: built (or reused) here")
    corpus_size: str = option("default", "synthetic corpus size: default | quick")
    resplit: list = option([], "[train, val, test] fractions of a random re-split; [] = as given")
    max_audio_seconds: float = option(30.0, "audio cut to this and to the encoder's (tiny: 2 s)")
    stages: list = option(["hl_sft", "cot_sft", "cot_ground_sft", "grpo"],
                      "in order, of: " + " | ".join(STAGES))
    format_steps: int = option(0, "steps of the class-free format stage first (miniature; 0 = none)")
    hl_steps: int = option(1000, "hard-label SFT steps")
    cot_steps: int = option(1000, "CoT SFT steps (each CoT stage)")
    grpo_steps: int = option(300, "GRPO steps")
    sft_batch_size: int = option(8, "SFT examples per step (batch_size is GRPO's prompts per step)")
    sft_lr: float = option(3e-5, "SFT learning rate (lr is GRPO's)")
    grounding_p: float = option(0.5, "share of training clips perturbed in grounded stages")
    grpo_init: str = option("cot_ground_sft", "GRPO starts from this stage (or checkpoint folder)")
    grpo_grounding: bool = option(True, "GRPO prompts use the grounded training audio")
    reward_weights: dict = option(dict(HIR_WEIGHTS), "weights of correctness, format, reasons, judge")
    skeptic: bool = option(False, "GRPO only on prompts whose check rollouts are mixed")
    skeptic_rollouts: int = option(4, "check rollouts per prompt for the skeptic filter")
    skeptic_prompts: int = option(0, "prompts the skeptic filter checks, drawn at random (0: all)")
    judge: str = option("rubric", "rubric (deterministic stand-in) | llm")
    judge_model: str = option("", "causal LM hub id / folder for judge='llm'")
    judge_batch_size: int = option(8, "traces per judge generate call")
    train_audio_encoder: bool = option(False, "also train the audio encoder (full fine-tuning only)")
    baseline: dict = option({}, "ClassifierConfig fields of the Wav2Vec2-AASIST row ({}: none)")
    seeds: int = option(1, "repeat over seeds seed, seed+1, ... and report mean ± std")


# ----------------------------------------------------------------------------- GRPO pieces

def make_reward_fn(weights: dict, judge=None):
    """reward_fn(texts, examples, lengths) for grpo_stage: rewards.hir_reward of each completion,
    with the judge's score when a judge is given (else 0)."""
    def reward_fn(texts, examples, lengths):
        scores = ([s.score for s in judge.score_batch(texts, examples)] if judge is not None
                  else [0.0] * len(texts))
        out = [hir_reward(t, ex.label, ex.meta["tags"], s, weights)
               for t, ex, s in zip(texts, examples, scores)]
        parts = {k: torch.tensor([p[k] for _, p in out]) for k in out[0][1]}
        return torch.tensor([r for r, _ in out]), parts                      # (B*N,), {(B*N,)}
    return reward_fn


def skeptic_keep(correct) -> list:
    """Indices of the prompts whose K check rollouts are neither all right nor all wrong.

    correct: (P, K) of 0/1. An all-equal group has GRPO advantage 0 and teaches nothing.
    """
    c = np.asarray(correct, dtype=bool)
    hits = c.sum(1)
    return np.flatnonzero((hits > 0) & (hits < c.shape[1])).tolist()


def skeptic_filter(policy, examples: list, cfg: HirConfig):
    """Sample K check rollouts for `skeptic_prompts` random prompts (0: all); keep the mixed
    ones, or all of them if none is mixed. -> (kept examples, kept share)."""
    K, correct = cfg.skeptic_rollouts, []
    if 0 < cfg.skeptic_prompts < len(examples):  # checking every prompt can cost more than GRPO
        order = np.random.default_rng([cfg.seed, 2]).permutation(len(examples))
        examples = [examples[i] for i in order[:cfg.skeptic_prompts]]
    with train.autocast(policy.device, cfg.bf16 and policy.device.type == "cuda"):
        for start in range(0, len(examples), cfg.eval_batch_size):
            chunk = examples[start:start + cfg.eval_batch_size]
            batch = policy.encode_prompts([ex.media for ex in chunk], [ex.question for ex in chunk])
            r = policy.generate(batch, K, cfg.max_new_tokens, cfg.temperature, cfg.top_p,
                                seed=train.seed_for(cfg.seed, 7, start))
            correct += [[correctness_reward(t, ex.label) for t in r.texts[i * K:(i + 1) * K]]
                        for i, ex in enumerate(chunk)]
    keep = skeptic_keep(correct)
    if not keep:
        print("skeptic filter: every group is all right or all wrong; keeping all prompts")
        return examples, 0.0
    return [examples[i] for i in keep], len(keep) / len(examples)


# ----------------------------------------------------------------------------- evaluation

def evaluate(policy, examples: list, task: str, cfg: HirConfig, judge, out: Path) -> dict:
    """Greedy answers on `examples` -> metrics (percent, Jaccard 0-1, judge 0-10); the
    completions go to out/test_completions.jsonl (overwritten)."""
    texts = generate_answers(policy, examples, cfg)
    true = [ex.label for ex in examples]
    if task == "hl":
        preds = [parse_hard_label(t) for t in texts]
        malformed = preds
    else:
        parsed = [parse_hir(t) for t in texts]
        preds = [p.answer for p in parsed]
        malformed = [p if hir_format_reward(t) else None for t, p in zip(texts, preds)]
    m = dict(acc=100 * accuracy(preds, true), bacc=100 * balanced_accuracy(preds, true),
             f1=100 * f1_score(preds, true), malformed=100 * malformed_share(malformed))
    if task == "cot":
        scores = judge.score_batch(texts, examples)
        m["jaccard"] = mean_jaccard([p.reasons for p in parsed],
                                    [ex.meta["tags"] for ex in examples])
        m["judge"] = 10 * float(np.mean([s.score for s in scores]))  # the rubric's 0-10 scale
        m.update({f: float(np.mean([getattr(s, f) for s in scores])) for f in JUDGE_FIELDS})
        thinks = [p.think for p in parsed if p.think]
        m["distinct"] = len(set(thinks)) / len(texts)  # diversity of the <think> texts
        m["think_words"] = float(np.mean([len(t.split()) for t in thinks])) if thinks else 0.0
        m["false_grounding"] = 100 * float(np.mean([bool(GROUNDING_CLAIM.search(t))
                                                    for t in texts]))
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "test_completions.jsonl", "w") as f:
        f.writelines(json.dumps(dict(path=ex.meta["path"], label=ex.label, completion=t)) + "\n"
                     for ex, t in zip(examples, texts))
    return m


def aasist_baseline(cfg: HirConfig, splits: dict, out: Path) -> dict:
    """The Wav2Vec2-AASIST row: the classifier route's SFT on the same hard-label train set,
    model chosen on val by EER, test predictions "real" when logit(real) - logit(fake) >= 0."""
    from train_classifier import AudioSet, ClassifierConfig, build_model, finetune, score_set
    sets = {}
    for name, records in splits.items():  # the records as data.read_manifest CSVs
        path = out / "manifests" / f"{name}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", newline="") as f:
            csv.writer(f).writerows([("path", "label")]
                                    + [(r["path"], r["label"]) for r in records])
        sets[name] = AudioSet(dict(kind="manifest", path=str(path), name=name), SAMPLE_RATE,
                              cache=False)
    ccfg = ClassifierConfig(**{**dict(head="aasist", seed=cfg.seed, device=cfg.device,
                                      bf16=cfg.bf16, out_dir=str(out)), **cfg.baseline})
    best = finetune(ccfg, "sft", out / "sft", sets["train"], sets["val"], ccfg.model)
    device = train.pick_device(cfg.device)
    model = build_model(ccfg, str(best)).to(device)
    scores, _ = score_set(model, sets["test"], device, ccfg.eval_batch_size,
                          cfg.bf16 and device.type == "cuda")
    preds = ["real" if s >= 0 else "fake" for s in scores]
    true = [s.label for s in sets["test"].samples]
    return dict(acc=100 * accuracy(preds, true), bacc=100 * balanced_accuracy(preds, true),
                f1=100 * f1_score(preds, true), malformed=0.0)


# ----------------------------------------------------------------------------- the stages

def _load(cfg: HirConfig, source: str):
    policy = load_policy(cfg, source, "audio", lora=True)
    if cfg.train_audio_encoder:  # the tiny encoder is random, not pre-trained (departure 2)
        for name, p in policy.model.named_parameters():
            if "audio_tower" in name.split("."):
                p.requires_grad_(True)
    return policy


def run_seed(cfg: HirConfig, splits: dict, judge) -> dict:
    """Every stage of `cfg.stages` for one seed -> {table row: test metrics}."""
    out = Path(cfg.out_dir) / f"seed{cfg.seed}"
    sft_cfg = dataclasses.replace(cfg, lr=cfg.sft_lr, batch_size=cfg.sft_batch_size)
    policy = _load(cfg, cfg.model)
    if policy.processor.sampling_rate != SAMPLE_RATE:
        raise ValueError(f"{cfg.model}: feature extractor at {policy.processor.sampling_rate} Hz")
    # HIR-SDD cuts audio to 30 s; the tiny model's encoder takes 2 s.
    limit = int(min(cfg.max_audio_seconds, policy.processor.chunk_length) * SAMPLE_RATE)
    data = {(s, t): make_examples(splits[s], t, limit) for s in ("train", "test")
            for t in ("hl", "cot")}
    grounded = ground(data["train", "cot"], cfg.seed, cfg.grounding_p)
    results, folders = {}, {"base": cfg.model}
    if cfg.format_steps:
        rng = np.random.default_rng([cfg.seed, 1])
        sft_stage(policy, class_free_examples(data["train", "hl"], data["train", "cot"], rng),
                  sft_cfg, out / "format", cfg.format_steps)
        folders["base"] = str(out / "format" / "last" / "model")
        results["Qwen2-Audio: format stage only"] = evaluate(
            policy, data["test", "cot"], "cot", cfg, judge, out / "format")
    base_in_memory = True  # `policy` holds the base model until a stage trains it
    for name in cfg.stages:
        task, init, grounding, row = STAGES[name]
        if name == "grpo":
            init, grounding = cfg.grpo_init, cfg.grpo_grounding
            row = (STAGES[init][3] if init in STAGES else init) + " + GRPO"
        if not (init == "base" and base_in_memory):
            policy = None  # free the last model before loading the next (7B: twice the memory)
            policy = _load(cfg, folders.get(init, init))
        base_in_memory = False
        train_set = grounded if grounding else data["train", task]
        if name == "grpo":
            kept = 1.0
            if cfg.skeptic:
                train_set, kept = skeptic_filter(policy, train_set, cfg)
            weights = cfg.reward_weights
            # The LLM judge costs a generate call per completion: skip it when it weighs 0.
            reward_judge = judge if weights.get("judge", 0) > 0 or cfg.judge == "rubric" else None
            grpo_stage(policy, train_set, make_reward_fn(weights, reward_judge), cfg, out / name,
                       cfg.grpo_steps)
        else:
            steps = cfg.hl_steps if task == "hl" else cfg.cot_steps
            sft_stage(policy, train_set, sft_cfg, out / name, steps)
        folders[name] = str(out / name / "last" / "model")
        row = "Qwen2-Audio: " + row
        results[row] = evaluate(policy, data["test", task], task, cfg, judge, out / name)
        if name == "grpo":
            results[row]["skeptic_kept"] = kept
    if cfg.baseline:
        results["Wav2Vec2-AASIST: Train-HL"] = aasist_baseline(cfg, splits, out / "aasist")
    return results


def summarize(per_seed: list) -> dict:
    """{row: {metric: (mean, std)}} over seeds."""
    return {row: {k: (float(np.mean([r[row][k] for r in per_seed])),
                      float(np.std([r[row][k] for r in per_seed]))) for k in per_seed[0][row]}
            for row in per_seed[0]}


def print_tables(summary: dict, n_seeds: int, n_test: int, miniature: bool) -> None:
    def cells(row, keys):
        return [row] + ["-" if k not in summary[row] else f"{summary[row][k][0]:.{d}f}" + (
            f" ± {summary[row][k][1]:.{d}f}" if n_seeds > 1 else "") for k, d in keys]
    what = "CPU miniature: tiny Qwen2-Audio, synthetic speech" if miniature else "Qwen2-Audio"
    print(f"\nTable 1 shape ({what}); test n = {n_test}, {n_seeds} seed(s)")
    keys = [("acc", 1), ("bacc", 1), ("f1", 1), ("jaccard", 3), ("judge", 2), ("malformed", 1)]
    rows = sorted(summary, key=lambda r: not r.startswith("Wav2Vec2"))
    print(format_table(["model: training", "acc %", "bacc %", "F1 real %", "Jaccard",
                        "judge 0-10", "malformed %"], [cells(r, keys) for r in rows]))
    p, j = PAPER["SALMONN-7B Train-2-HL"], PAPER["Jaccard"]
    print(f"paper, SALMONN-7B Train-2-HL: acc {p['acc']}, bacc {p['bacc']}, F1 {p['f1']}")
    print("\nReasoning quality, SFT vs GRPO (judge scores 0-10; distinct: share of unique "
          "<think>; false grounding: % of traces naming a perturbation the clean test audio lacks)")
    keys = [("jaccard", 3), ("judge", 2)] + [(f, 2) for f in JUDGE_FIELDS] + [
        ("distinct", 2), ("think_words", 1), ("false_grounding", 1)]
    print(format_table(["model: training"] + [k for k, _ in keys],
                       [cells(r, keys) for r in rows if "jaccard" in summary[r]]))
    print(f"paper, SALMONN-7B Jaccard: GRPO {j['grpo']} vs SFT {j['sft']}")


def _check(cfg: HirConfig) -> None:
    if cfg.resume:
        raise ValueError("hir runs several stages; start GRPO from a checkpoint with grpo_init")
    if cfg.train_audio_encoder and cfg.lora_r > 0:
        raise ValueError("train_audio_encoder needs lora_r 0: LoRA checkpoints hold adapters only")
    for i, name in enumerate(cfg.stages):
        if name not in STAGES:
            raise ValueError(f"unknown stage {name!r}; expected one of {list(STAGES)}")
        init = cfg.grpo_init if name == "grpo" else STAGES[name][1]
        if init in STAGES and init not in cfg.stages[:i]:
            raise ValueError(f"stage {name} starts from {init}, which must run before it")
        if init != "base" and init not in STAGES and not Path(init).is_dir():
            raise FileNotFoundError(f"grpo_init is neither a stage nor a folder: {init}")


def run_experiment(cfg: HirConfig) -> dict:
    if cfg.quick:
        cfg = dataclasses.replace(cfg, **QUICK)
        if cfg.corpus_root == CORPUS_ROOT:  # a quick corpus would replace the full one there
            cfg = dataclasses.replace(cfg, corpus_root=CORPUS_ROOT + "_quick")
    _check(cfg)
    if cfg.manifest:
        records = read_hir_manifest(cfg.manifest)
    else:
        from synth_speech import make_speech_corpora
        make_speech_corpora(cfg.corpus_root, seed=0, size=cfg.corpus_size)
        records = read_hir_manifest(Path(cfg.corpus_root) / "annotations.jsonl")
    splits = split_records(records, cfg.resplit)
    device = train.pick_device(cfg.device)
    judge = make_judge(cfg.judge, cfg.judge_model, device, cfg.dtype or None,
                       batch_size=cfg.judge_batch_size)
    per_seed = [run_seed(dataclasses.replace(cfg, seed=cfg.seed + k), splits, judge)
                for k in range(cfg.seeds)]
    summary = summarize(per_seed)
    print_tables(summary, cfg.seeds, len(splits["test"]), cfg.model == "tiny")
    out = Path(cfg.out_dir)
    train.save_config(cfg, out)
    (out / "results.json").write_text(json.dumps(
        dict(per_seed=per_seed, summary=summary, paper=PAPER,
             sizes={s: len(r) for s, r in splits.items()}), indent=2) + "\n")
    return summary
