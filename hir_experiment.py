"""HIR-SDD route (Dvirniak et al. 2026): an audio LLM that explains its spoof verdict.

    [miniature: audio pre-training stand-in, then a class-free format stage = the "base LALM"]
    base LALM --SFT "Final Answer: Real|Fake" on Train-1-HL, Train-2-HL or both--> Train-HL
              --SFT <think>..</think><reasons>[..]</reasons><answer>..</answer>--> Train-2-R
              --the same, some clips perturbed + a <think> sentence naming it--> + grounding
    a CoT model --GRPO: correctness + format + reasons + judge (skeptic filter optional)
    each model -> Test-1-HL: acc, balanced acc, F1 (bona fide positive), AUC; CoT models also
    Test-2-R: Jaccard of tags (Eq. 1), judge score (mean of `judge_runs` runs), malformed share;
    every model -> the hard / out-of-distribution test set; plus Wav2Vec2-AASIST rows.

Stages are options of one loop (`stages`), each an sft_stage or grpo_stage of train_chat.py,
validated every so often on the validation split; the best validation step is the stage's
model (hir_eval.Validator). `python train.py --recipe configs/hir_mini.json` runs the CPU
miniature (docs/hir.md); --quick a toy size in its own folder.

Departures from the paper and its public code (github.com/dkorzh10/HIR-SDD), numbered:
1. Qwen2-Audio (Qwen2AudioForConditionalGeneration) instead of SALMONN-7B, which is not in
   transformers; Qwen2-Audio is the LALM the paper's related work (ALLM4ADD) fine-tunes.
2. The miniature's LALM is a tiny randomly initialised Qwen2-Audio (tiny.py). It stands in for
   a pre-trained LALM in two steps: its audio encoder + projector are pre-trained on the spoof
   family of clips of their own (audio_pretrain.py: what that makes it and what not) and then
   stay frozen, as the paper's Whisper; a format stage on class-free text (each clip paired
   with the targets of another random clip) teaches the LLM the output formats and the
   comments' language, not the audio. Full fine-tuning of projector + LLM, not LoRA.
3. Data: synthetic speech with templated comments (synth_speech.py, hir_data.HIR_SETS) instead
   of 41k human annotations; the two sets differ by speakers only (hir_data).
4. Judge: a deterministic rubric (judge.RubricJudge) in the miniature; an LLM judge otherwise
   (the recipe: Qwen2.5-7B-Instruct, the paper: Qwen2.5-32B). Test traces are scored by the same
   judge (the paper: GPT-5.1), sampled and averaged over `judge_runs` runs. See judge.py.
5. Grounding details the paper leaves open are listed in hir_data.py.
6. The skeptic filter (the code's filter_controversial) runs once before GRPO, with the starting
   policy, on `skeptic_prompts` random training prompts; the code checks each batch as it comes
   and reuses its 3 check rollouts in the group.
7. GRPO's objective is the code's REINFORCE on the summed token log-probs
   (grpo.grpo_loss loss_type "reinforce"), with the KL to the GRPO start point as the code has
   it; the KL here is the k3 estimator summed over tokens, the code's the k1 difference of the
   summed log-probs (salmon_grpo) -- both 0 at the first step. Log-probs use the sampling
   temperature (chat.py pitfall 2); the code scores at temperature 1. Advantages: (r - mean) /
   (std + 1e-4), all-equal groups exactly 0 (the code: std + 1e-8; salmon_grpo: std >= 0.01).
8. With LoRA, GRPO trains a fresh adapter on the frozen SFT adapter (lora.stack_adapter), so
   that adapters-off is the SFT model; the code keeps training the SFT adapter and swaps in a
   snapshot for the reference. The miniature fine-tunes fully: its reference is a frozen copy.
9. GRPO prompts come from Train-2-R; the paper's row says Val-1 and its unified config trains
   GRPO on the reasoning validation split, which here selects checkpoints instead.
10. Evaluation decodes greedily; the hard-label answer must be exactly "Final Answer: Real|Fake".
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

import distributed
import train
from train import option
from audio_pretrain import pretrained_audio
from hir_data import (SAMPLE_RATE, CachedFeatures, class_free_examples, ground, make_examples,
                      pretraining_clips, read_hir_manifest, split_records, synthetic_manifest)
from hir_eval import Validator, evaluate
from hir_report import PRETRAIN_ROW, TESTS, report
from judge import make_judge
from lora import stack_adapter
from rewards import HIR_WEIGHTS, correctness_reward, hir_reward
from train_chat import ChatConfig, grpo_stage, load_policy, sft_stage

STAGES = {  # name -> (task, starts from, grounded audio, training datasets, table row)
    "hl_sft": ("hl", "base", False, ("hl",), "Train-1-HL"),
    "hl2_sft": ("hl", "base", False, ("r",), "Train-2-HL"),
    "hl12_sft": ("hl", "base", False, ("hl", "r"), "Train-1-HL + Train-2-HL"),
    "cot_sft": ("cot", "base", False, ("r",), "Train-2-R"),
    "hl_cot_sft": ("cot", "hl_sft", False, ("r",), "Train-1-HL -> Train-2-R"),
    "cot_ground_sft": ("cot", "base", True, ("r",), "Train-2-R + grounding"),
    "hl_cot_ground_sft": ("cot", "hl_sft", True, ("r",), "Train-1-HL -> Train-2-R + grounding"),
    "grpo": ("cot", None, None, ("r",), None),  # from grpo_init; row: init's row + " + GRPO"
}
CORPUS_ROOT = "runs/corpus_hir"
# --quick: every stage at toy size, under a minute on 2 CPU cores (a test runs it).
QUICK = dict(corpus_size="quick", audio_pretrain_steps=4, format_steps=4, hl_steps=4, cot_steps=4,
             grpo_steps=2, sft_batch_size=4, batch_size=2, num_generations=3, max_new_tokens=40,
             skeptic_rollouts=2, skeptic_prompts=4, eval_batch_size=16, val_points=1, seeds=1,
             workers=1, baselines=["hl"],
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
    cache_features: bool = option(False, "keep each clip's log-mel in memory (small corpora)")
    audio_pretrain_steps: int = option(0, "steps of the audio pre-training stand-in (miniature)")
    audio_pretrain_lr: float = option(3e-3, "its learning rate")
    audio_pretrain_batch_size: int = option(16, "its clips per step")
    stages: list = option(["hl_sft", "cot_sft", "cot_ground_sft", "grpo"],
                          "in order, of: " + " | ".join(STAGES))
    format_steps: int = option(0, "steps of the class-free format stage first (miniature; 0 = none)")
    hl_steps: int = option(1000, "hard-label SFT steps")
    cot_steps: int = option(1000, "CoT SFT steps (each CoT stage)")
    grpo_steps: int = option(300, "GRPO steps")
    val_points: int = option(4, "validations per stage, evenly spaced; the best is kept (0: last)")
    sft_batch_size: int = option(8, "SFT examples per step (batch_size is GRPO's prompts per step)")
    sft_lr: float = option(1e-4, "SFT peak learning rate (lr is GRPO's)")
    sft_lr_floor: float = option(0.01, "SFT lr decays (cosine) to sft_lr * this")
    sft_warmup_steps: int = option(0, "SFT warm-up steps (warmup_steps is GRPO's)")
    grounding_p: float = option(0.5, "share of training clips perturbed in grounded stages")
    grpo_init: str = option("cot_ground_sft", "GRPO starts from this stage (or checkpoint folder)")
    grpo_grounding: bool = option(True, "GRPO prompts use the grounded training audio")
    grpo_lora_r: int = option(0, "rank of GRPO's fresh adapter on the frozen SFT one (0: lora_r)")
    grpo_lora_alpha: int = option(0, "its alpha (0: lora_alpha)")
    reward_weights: dict = option(dict(HIR_WEIGHTS), "weights of correctness, format, reasons, judge")
    skeptic: bool = option(False, "GRPO only on prompts whose check rollouts are mixed")
    skeptic_rollouts: int = option(3, "check rollouts per prompt for the skeptic filter")
    skeptic_prompts: int = option(0, "prompts the skeptic filter checks, drawn at random (0: all)")
    judge: str = option("rubric", "rubric (deterministic stand-in) | llm")
    judge_model: str = option("", "causal LM hub id / folder for judge='llm'")
    judge_batch_size: int = option(8, "traces per judge generate call")
    judge_runs: int = option(5, "evaluation: judge runs averaged (the paper: five; rubric: one)")
    judge_temperature: float = option(0.7, "evaluation: the LLM judge's sampling temperature")
    train_audio_encoder: bool = option(False, "also train the audio encoder (full fine-tuning only)")
    baseline: dict = option({}, "ClassifierConfig fields of the Wav2Vec2-AASIST rows ({}: none)")
    baselines: list = option(["hl", "r", "hl+r"], "training sets of the Wav2Vec2-AASIST rows")
    seeds: int = option(1, "repeat over seeds seed, seed+1, ... and report mean ± std")
    workers: int = option(1, "processes running the seeds side by side (one thread each)")


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


# ----------------------------------------------------------------------------- the stages

def _load(cfg: HirConfig, source: str, cache: dict | None):
    policy = load_policy(cfg, source, "audio", lora=True)
    if cfg.train_audio_encoder:  # the tiny encoder: trained on (departure 2)
        for name, p in policy.model.named_parameters():
            if "audio_tower" in name.split("."):
                p.requires_grad_(True)
    if cache is not None:
        policy.processor = CachedFeatures(policy.processor, cache)
    return policy


def stage_spec(name: str, cfg: HirConfig) -> tuple:
    """(task, init, grounded, datasets, row) of a stage; GRPO's from grpo_init."""
    task, init, grounding, datasets, row = STAGES[name]
    if name == "grpo":
        init, grounding = cfg.grpo_init, cfg.grpo_grounding
        row = (STAGES[init][4] if init in STAGES else init) + " + GRPO"
    return task, init, grounding, datasets, row


def run_seed(cfg: HirConfig, splits: dict, judge) -> dict:
    """Every stage of `cfg.stages` for one seed -> {table row: {test set: metrics}}."""
    out = Path(cfg.out_dir) / f"seed{cfg.seed}"
    cache = {} if cfg.cache_features else None  # log-mels, shared by every model of this seed
    policy = _load(cfg, cfg.model, cache)
    if policy.processor.sampling_rate != SAMPLE_RATE:
        raise ValueError(f"{cfg.model}: feature extractor at {policy.processor.sampling_rate} Hz")
    # HIR-SDD cuts audio to 30 s; the tiny model's encoder takes 2 s.
    limit = int(min(cfg.max_audio_seconds, policy.processor.chunk_length) * SAMPLE_RATE)

    def examples(datasets, split, task, targets=True):
        return make_examples([r for d in datasets for r in splits[d, split]], task, limit, targets)

    sft_cfg = dataclasses.replace(cfg, lr=cfg.sft_lr, batch_size=cfg.sft_batch_size,
                                  warmup_steps=cfg.sft_warmup_steps, lr_floor=cfg.sft_lr_floor)
    results, folders = {}, {"base": cfg.model}
    dist = distributed.setup()
    if cfg.audio_pretrain_steps:
        with dist.main_first(), distributed.alone():  # dist: rank 0 trains, the others load
            acc = pretrained_audio(policy, pretraining_clips(cfg.corpus_root),
                                   cfg.audio_pretrain_steps, cfg.audio_pretrain_lr,
                                   cfg.audio_pretrain_batch_size, cfg.seed, limit,
                                   out / "audio_pretrain")
            if dist.is_main:
                policy.save(out / "audio_pretrain" / "model")
        results[PRETRAIN_ROW] = {"train": dict(acc=100 * acc)}
        folders["base"] = str(out / "audio_pretrain" / "model")
    if cfg.format_steps:
        rng = np.random.default_rng([cfg.seed, 1])
        free = class_free_examples(examples(("r",), "train", "hl"),
                                   examples(("r",), "train", "cot"), rng)
        sft_stage(policy, free, dataclasses.replace(sft_cfg, lr_floor=1.0), out / "format",
                  cfg.format_steps)
        folders["base"] = str(out / "format" / "last" / "model")
    base_in_memory = True  # `policy` holds the base model until a stage trains it
    for name in cfg.stages:
        task, init, grounding, datasets, row = stage_spec(name, cfg)
        if not (init == "base" and base_in_memory):
            policy = None  # free the last model before loading the next (7B: twice the memory)
            policy = _load(cfg, folders.get(init, init), cache)
        base_in_memory = False
        train_set = examples(datasets, "train", task)
        if grounding:
            train_set = ground(train_set, cfg.seed, cfg.grounding_p)
        steps = dict(hl=cfg.hl_steps, cot=cfg.cot_steps)[task] if name != "grpo" else cfg.grpo_steps
        every = -(-steps // cfg.val_points) if cfg.val_points else 0  # ceil(steps / points)
        stage_cfg = dataclasses.replace(sft_cfg if name != "grpo" else cfg, eval_every=every)
        val_set = examples(datasets, "val", task)
        validator = None
        if val_set and cfg.val_points:
            validator = Validator(policy, val_set, task, stage_cfg, out / name,
                                  [ex.label for ex in train_set])
        kept = None
        if name == "grpo":
            if cfg.lora_r > 0:  # adapters-off must be the SFT model, the reference (departure 8)
                stack_adapter(policy.model, cfg.grpo_lora_r or cfg.lora_r,
                              cfg.grpo_lora_alpha or cfg.lora_alpha, cfg.lora_dropout, cfg.seed)
            if cfg.skeptic:
                train_set, kept = skeptic_filter(policy, train_set, cfg)
            # The LLM judge costs a generate call per completion: skip it when it weighs 0.
            weighs = cfg.reward_weights.get("judge", 0) > 0 or cfg.judge == "rubric"
            reward_fn = make_reward_fn(cfg.reward_weights, judge if weighs else None)
            grpo_stage(policy, train_set, reward_fn, stage_cfg, out / name, steps,
                       validate=validator)
        else:
            sft_stage(policy, train_set, stage_cfg, out / name, steps, validate=validator)
        folders[name] = str(out / name / ("best" if validator else "last") / "model")
        if validator:  # evaluate the selected checkpoint, and chain from it
            policy = None
            policy = _load(cfg, folders[name], cache)
        row = "Qwen2-Audio: " + row
        results[row] = {test: evaluate(policy, examples((d,), "test", task, targets=False), task,
                                       cfg, judge if d == "r" else None,
                                       out / name / f"{test}_completions.jsonl",
                                       reasoning=task == "cot" and d == "r")
                        for d, test in TESTS.items()
                        if splits[d, "test"] and (task, d) != ("hl", "r")}  # HL: not Test-2-R
        results[row]["val"] = dict(step=validator.best_step, bacc=validator.best[0],
                                   answer_nll=-validator.best[1],
                                   prior_entropy=validator.prior_entropy) if validator else {}
        if kept is not None:
            results[row]["val"]["skeptic_kept"] = kept
    for sets in cfg.baselines if cfg.baseline else []:
        results[f"Wav2Vec2-AASIST: {BASELINE_ROWS[sets]}"] = aasist_baseline(
            cfg, splits, sets.split("+"), out / f"aasist_{sets.replace('+', '_')}")
    return results


BASELINE_ROWS = {"hl": "Train-1-HL", "r": "Train-2-HL", "hl+r": "Train-1-HL + Train-2-HL"}


def aasist_baseline(cfg: HirConfig, splits: dict, datasets: list, out: Path) -> dict:
    """A Wav2Vec2-AASIST row: the classifier route's SFT on the hard labels of `datasets`,
    model chosen on their validation clips by EER; test clips "real" when logit(real) -
    logit(fake) >= 0, the score itself for the AUC."""
    import csv
    from classifier_data import AudioSet, score_set
    from train_classifier import ClassifierConfig, build_model, finetune
    from hir_eval import verdict_metrics
    sets = {}
    for name, records in [("train", [r for d in datasets for r in splits[d, "train"]]),
                          ("val", [r for d in datasets for r in splits[d, "val"]])] + [
            (d, splits[d, "test"]) for d in TESTS if d != "r" and splits[d, "test"]]:
        path = out / "manifests" / f"{name}.csv"  # the records as protocols.read_manifest CSVs
        with distributed.setup().main_first():  # dist: rank 0 writes, the others read
            if distributed.setup().is_main:
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
    results = {}
    for d, test in TESTS.items():
        if d in sets:
            scores, _ = score_set(model, sets[d], device, ccfg.eval_batch_size,
                                  cfg.bf16 and device.type == "cuda")
            true = [s.label for s in sets[d].samples]
            fams = [r.get("family", r["label"]) for r in splits[d, "test"]]
            m = verdict_metrics(["real" if s >= 0 else "fake" for s in scores], true, scores, fams)
            results[test] = dict(m, malformed=0.0)
    return results


def _check(cfg: HirConfig) -> None:
    if cfg.resume:
        raise ValueError("hir runs several stages; start GRPO from a checkpoint with grpo_init")
    if cfg.train_audio_encoder and cfg.lora_r > 0:
        raise ValueError("train_audio_encoder needs lora_r 0: LoRA checkpoints hold adapters only")
    for sets in cfg.baselines:
        if sets not in BASELINE_ROWS:
            raise ValueError(f"baselines: unknown training set {sets!r}; "
                             f"expected {list(BASELINE_ROWS)}")
    for i, name in enumerate(cfg.stages):
        if name not in STAGES:
            raise ValueError(f"unknown stage {name!r}; expected one of {list(STAGES)}")
        init = cfg.grpo_init if name == "grpo" else STAGES[name][1]
        if init in STAGES and init not in cfg.stages[:i]:
            raise ValueError(f"stage {name} starts from {init}, which must run before it")
        if init != "base" and init not in STAGES and not Path(init).is_dir():
            raise FileNotFoundError(f"grpo_init is neither a stage nor a folder: {init}")


def _seed_worker(cfg: HirConfig, splits: dict) -> dict:
    """One seed in a worker process (its own judge; no progress bars interleaving)."""
    os.environ["TQDM_DISABLE"] = "1"
    torch.set_num_threads(1)
    judge = make_judge(cfg.judge, cfg.judge_model, train.pick_device(cfg.device),
                       cfg.dtype or None, batch_size=cfg.judge_batch_size)
    return run_seed(cfg, splits, judge)


def run_experiment(cfg: HirConfig) -> dict:
    if cfg.quick:  # toy sizes, in folders of their own: a quick run never replaces a full one
        cfg = dataclasses.replace(cfg, out_dir=cfg.out_dir + "_quick",  # sizes: train.main
                                  corpus_root=cfg.corpus_root + "_quick")
    _check(cfg)
    dist = distributed.setup()
    if cfg.workers > 1 and cfg.seeds > 1 and dist.world > 1:
        raise ValueError("workers > 1 under torchrun: pass --workers 1 (torchrun splits every "
                         "step's batch over its processes; each process runs every seed)")
    if cfg.manifest:
        records = read_hir_manifest(cfg.manifest)
    else:
        with dist.main_first():  # dist: rank 0 builds the corpus, the others read it
            records = read_hir_manifest(synthetic_manifest(cfg.corpus_root, cfg.corpus_size))
    splits = split_records(records, cfg.resplit)
    seeds = [dataclasses.replace(cfg, seed=cfg.seed + k) for k in range(cfg.seeds)]
    if cfg.workers > 1 and cfg.seeds > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor
        with ProcessPoolExecutor(min(cfg.workers, cfg.seeds),
                                 mp_context=multiprocessing.get_context("spawn")) as pool:
            per_seed = list(pool.map(_seed_worker, seeds, [splits] * len(seeds)))
    else:
        judge = make_judge(cfg.judge, cfg.judge_model, train.pick_device(cfg.device),
                           cfg.dtype or None, batch_size=cfg.judge_batch_size)
        per_seed = [run_seed(c, splits, judge) for c in seeds]
    return report(cfg, per_seed, splits) if dist.is_main else {}  # dist: rank 0 reports
