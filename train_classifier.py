"""Classifier route: an SSL speech detector fine-tuned by SFT, by GRPO, and by SFT then GRPO.

Wang, Ge, Yamagishi 2026, "Does fine-tuning by reinforcement learning improve generalization in
binary speech deepfake detection?". The policy is the detector itself: its softmax over
[fake, real] is a one-token "completion", so GRPO samples N labels per utterance from ONE forward
pass (`grpo.sample_labels`), rewards a label 1 if it is the truth and 0 if not, normalizes the
rewards into advantages and feeds the shared `grpo.grpo_loss` with T = 1.

Where this departs from the paper or its code (AntiDeepfake), and why:
1. Advantage scale: the paper normalizes per utterance group; its code normalizes over the whole
   batch. Both are here (`adv_scale="group"|"batch"`); the default is "batch" because with N = 64
   draws from a confident model many groups are all-correct, their group std is 0 and they would
   teach nothing, while a batch std still ranks them against the rest of the batch.
2. Reward 1/0 vs +1/-1: after normalization they give the same advantage (it is affine
   invariant), so "the negative reward" of the paper is the negative *advantage* of a wrong draw.
   The ablation "without negative reward" uses the raw 1/0 rewards as advantages
   (`adv_scale="raw"`): wrong draws then get 0 and are never pushed down.
3. The CPU miniature replaces XLS-R/MMS with a tiny randomly initialised Wav2Vec2 and the real
   corpora with synthetic ones (synth_speech.py); its learning rates are larger than the paper's
   1e-6 because a tiny model with few steps needs them. Its numbers are not the paper's.
"""
from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

import grpo
import train
from train import option
from data import collate_audio, label_to_index, load_audio, read_protocol, train_clip
from eval import compute_eer
from models import SSLClassifier
from rawboost import rawboost


@dataclass
class ClassifierConfig:
    """Fine-tune an SSL spoof detector by SFT, GRPO or SFT->GRPO (the speech paper's set-up)."""
    mode: str = option("experiment", "experiment (the whole miniature) | finetune (one run) | score")
    method: str = option("grpo", "finetune method: sft | grpo | sft_grpo")
    out_dir: str = option("runs/classifier", "where checkpoints, logs and results go")
    seed: int = option(0, "run seed: data order, crops, augmentation and label draws derive from it")
    quick: bool = option(False, "toy sizes: the whole experiment in under a minute (used by a test)")
    device: str = option("auto", "auto | cpu | cuda")
    bf16: bool = option(True, "bf16 autocast on CUDA (log-probs and loss stay fp32)")
    # model
    model: str = option("tiny", "'tiny', a Wav2Vec2 hub id / folder, or a saved SSLClassifier folder")
    head: str = option("linear", "linear | aasist")
    freeze_feature_encoder: bool = option(False, "freeze the convolutional feature encoder")
    gradient_checkpointing: bool = option(False, "recompute encoder activations in backward")
    # data: each set is {"kind": reader, "path": protocol, "audio_dir": folder or null}
    train_set: dict = option({}, "training set (empty: the synthetic target domain)")
    dev_set: dict = option({}, "dev set for model selection by EER (never a test set)")
    test_sets: list = option([], "test sets: list of {name, kind, path, audio_dir, domain: in|out}")
    reference_set: dict = option({}, "reference set for the drift analysis")
    corpus_root: str = option("runs/corpus", "synthetic corpora are built (or reused) here")
    sample_rate: int = option(16000, "audio sample rate")
    train_min_sec: float = option(10.0, "training clips longer than train_max_sec are cropped to ...")
    train_max_sec: float = option(13.0, "... a random length in [train_min_sec, train_max_sec]")
    rawboost_algo: int = option(5, "RawBoost algorithm applied to training clips (0 = off)")
    # optimisation
    batch_size: int = option(8, "utterances per step")
    steps: int = option(1000, "optimizer steps per fine-tuning stage")
    lr: float = option(1e-6, "AdamW learning rate")
    weight_decay: float = option(0.01, "AdamW weight decay")
    warmup_steps: int = option(0, "linear warm-up steps")
    grad_clip: float = option(1.0, "gradient-norm clip")
    class_weights: list = option([], "SFT cross-entropy weights [fake, real] (empty: none)")
    eval_every: int = option(200, "dev EER every this many steps; the best step is kept")
    eval_batch_size: int = option(16, "utterances per scoring batch")
    # GRPO
    num_generations: int = option(64, "N: labels drawn per utterance")
    clip_eps: float = option(0.2, "epsilon of the clipped surrogate")
    beta: float = option(0.04, "weight of the k3 KL to the frozen starting model (0: no reference)")
    adv_scale: str = option("batch", "advantage scale: group | batch | none | raw (no negative reward)")
    old_refresh: int = option(1000, "old policy refreshed every K steps (1: old = detached current)")
    loss_type: str = option("grpo", "grpo | bnpo | dr_grpo | dapo (identical for T = 1 completions)")
    sft_steps: int = option(0, "sft_grpo: SFT steps before GRPO (0: half of `steps`)")
    init: str = option("", "start from this SSLClassifier folder (the post-trained model)")
    resume: str = option("", "resume from this checkpoint folder (exact resume)")
    # experiment (the miniature)
    post_steps: int = option(300, "experiment: SFT steps of post-training on the post-training pool")
    post_lr: float = option(1e-3, "experiment: post-training learning rate")
    methods: list = option(["sft", "grpo", "sft_grpo", "grpo_noneg"], "experiment: methods compared")
    seeds: int = option(1, "experiment: repeat over this many seeds and report mean ± std")


# ----------------------------------------------------------------------------- data

class AudioSet:
    """Samples of one protocol plus audio loading (cached in memory: the miniature is small)."""

    def __init__(self, spec: dict, sample_rate: int, cache: bool = True):
        self.name = spec.get("name", Path(spec["path"]).stem)
        self.domain = spec.get("domain", "in")  # test sets: in-domain or out-of-domain
        self.samples = read_protocol(spec["kind"], spec["path"], spec.get("audio_dir"))
        if spec.get("split"):  # one split of a protocol that lists several (e.g. DFE24)
            self.samples = [s for s in self.samples if s.split == spec["split"]]
            if not self.samples:
                raise ValueError(f"{spec['path']}: no sample of split {spec['split']!r}")
        self.sample_rate, self._cache = sample_rate, ({} if cache else None)
        self.labels = torch.tensor([label_to_index(s.label) for s in self.samples])

    def audio(self, i: int) -> np.ndarray:
        if self._cache is not None and i in self._cache:
            return self._cache[i]
        x = load_audio(self.samples[i].path, self.sample_rate)
        if self._cache is not None:
            self._cache[i] = x
        return x

    def train_batch(self, cfg: ClassifierConfig, step: int):
        """The batch of a step: order, crop and augmentation all derive from (seed, step)."""
        idx = train.batch_indices(len(self.samples), cfg.batch_size, cfg.seed, step)
        rng = np.random.default_rng([cfg.seed, step, 1])
        lo, hi = (int(s * cfg.sample_rate) for s in (cfg.train_min_sec, cfg.train_max_sec))
        waves = []
        for i in idx:
            x = train_clip(self.audio(int(i)), rng, lo, hi)
            if cfg.rawboost_algo:
                x = rawboost(x, cfg.rawboost_algo, rng, cfg.sample_rate)
            waves.append(x)
        wav, lengths = collate_audio(waves)
        return wav, lengths, self.labels[idx]


@torch.no_grad()
def score_set(model: SSLClassifier, audio_set: AudioSet, device, batch_size: int = 16, bf16=False):
    """Score every utterance at full length (no augmentation); return scores and pooled embeddings.

    The score is the logit difference log P(real) - log P(fake): it ranks trials exactly as
    P(real) does, but a confident model's probabilities saturate to 1.0 in float and the ties
    would inflate the EER (the ASVspoof convention puts bona fide first on a tie).
    """
    model.eval()
    order = np.argsort([len(audio_set.audio(i)) for i in range(len(audio_set.samples))])
    scores, embs = np.zeros(len(order)), None
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]  # similar lengths together: little padding
        wav, lengths = collate_audio([audio_set.audio(int(i)) for i in idx])
        with train.autocast(device, bf16):
            logits, pooled = model(wav.to(device), lengths.to(device))
        scores[idx] = (logits[:, 1] - logits[:, 0]).float().cpu().numpy()
        pooled = pooled.float().cpu().numpy()
        if embs is None:
            embs = np.zeros((len(order), pooled.shape[1]), dtype=np.float32)
        embs[idx] = pooled
    return scores, embs


def set_eer(scores: np.ndarray, audio_set: AudioSet) -> float:
    real = audio_set.labels.numpy() == 1
    return compute_eer(scores[real], scores[~real])[0]


# ----------------------------------------------------------------------------- the two losses

def sft_loss(model, wav, lengths, labels, cfg: ClassifierConfig):
    """Cross-entropy on the true label (optionally class-weighted)."""
    logits, _ = model(wav, lengths)
    weight = torch.tensor(cfg.class_weights, device=wav.device) if cfg.class_weights else None
    loss = F.cross_entropy(logits.float(), labels, weight=weight)
    return loss, {}


def grpo_step_loss(model, wav, lengths, labels, cfg, generator, ref_model=None, old_model=None):
    """GRPO with one-token completions: N label draws from one forward pass.

    r_i = 1[o_i = y]  (speech paper)  ->  A_i = group_advantages(r)  ->  grpo_loss with T = 1.
    The reference (beta > 0) and the old policy (old_refresh > 1) each cost one no-grad forward
    of their own weights; nothing else is recomputed.
    """
    N = cfg.num_generations
    logits, _ = model(wav, lengths)                                   # (B, 2)
    logits = logits.float()
    drawn = grpo.sample_labels(logits.detach(), N, generator)         # (B*N,)
    rewards = (drawn == labels.repeat_interleave(N)).float()          # (B*N,)
    advantages = grpo.group_advantages(rewards, N, scale=cfg.adv_scale)
    logps = grpo.label_logps(logits, drawn, N)                        # (B*N, 1)
    extra = {}
    for name, other in (("ref_logps", ref_model), ("old_logps", old_model)):
        if other is not None:
            with torch.no_grad():
                extra[name] = grpo.label_logps(other(wav, lengths)[0].float(), drawn, N)
    mask = torch.ones_like(logps)
    loss, stats = grpo.grpo_loss(logps, advantages, mask, clip_eps=cfg.clip_eps, beta=cfg.beta,
                                 loss_type=cfg.loss_type, **extra)
    stats["reward"] = rewards.mean()
    stats["equal_share"] = grpo.equal_reward_share(rewards, N)
    return loss, stats


# ----------------------------------------------------------------------------- one fine-tuning run

def build_model(cfg: ClassifierConfig, source: str) -> SSLClassifier:
    opts = dict(freeze_feature_encoder=cfg.freeze_feature_encoder,
                gradient_checkpointing=cfg.gradient_checkpointing)
    if source == "tiny":
        model = SSLClassifier.tiny(head=cfg.head, seed=cfg.seed)
    elif (Path(source) / "classifier.json").exists():
        model = SSLClassifier.load(source)
    else:
        model = SSLClassifier.from_pretrained(source, head=cfg.head, **opts)
    if source == "tiny" or (Path(source) / "classifier.json").exists():
        model.configure(**opts)
    return model


def finetune(cfg: ClassifierConfig, method: str, out: Path, train_set: AudioSet,
             dev_set: AudioSet, init: str) -> Path:
    """One fine-tuning stage (method "sft" or "grpo"); returns the folder of the best dev step."""
    device = train.pick_device(cfg.device)
    bf16 = cfg.bf16 and device.type == "cuda"
    model = build_model(cfg, init).to(device)
    ref_model = old_model = None
    if method == "grpo" and cfg.beta > 0:  # frozen starting model; no copy when beta = 0
        ref_model = copy.deepcopy(model).eval().requires_grad_(False)
    start, best, state = 0, {"eer": float("inf"), "step": -1}, None
    if cfg.resume:  # the weights of the checkpoint; the reference above stays the start model
        state = train.load_trainer_state(cfg.resume)
        model.load_state_dict(SSLClassifier.load(Path(cfg.resume) / "model").state_dict())
        start, best = state["step"], state["best"]
        if state["old_policy"] is not None:  # the old policy of an unfinished refresh period
            old_model = copy.deepcopy(model).eval().requires_grad_(False)
            old_model.load_state_dict(state["old_policy"])
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr,
                            weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, train.warmup_lambda(cfg.warmup_steps))
    if state is not None:
        opt.load_state_dict(state["optimizer"]), sched.load_state_dict(state["scheduler"])
    out.mkdir(parents=True, exist_ok=True)
    train.save_config(cfg, out)
    log = train.JsonlLog(out / "metrics.jsonl", resume=bool(cfg.resume))
    for step in tqdm(range(start, cfg.steps), desc=f"{out.name}", leave=False):
        if method == "grpo" and cfg.old_refresh > 1 and step % cfg.old_refresh == 0:
            old_model = copy.deepcopy(model).eval().requires_grad_(False)  # pi_old <- pi_theta
        model.train()
        wav, lengths, labels = (t.to(device) for t in train_set.train_batch(cfg, step))
        with train.autocast(device, bf16):
            if method == "sft":
                loss, stats = sft_loss(model, wav, lengths, labels, cfg)
            else:
                gen = torch.Generator(device=device).manual_seed(train.seed_for(cfg.seed, step, 2))
                loss, stats = grpo_step_loss(model, wav, lengths, labels, cfg, gen, ref_model,
                                             old_model)
        loss_value = train.check_finite(loss, step, out)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step(), sched.step()
        log.log(step + 1, loss=loss_value, lr=sched.get_last_lr()[0], grad_norm=grad_norm, **stats)
        if (step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps:
            eer = set_eer(score_set(model, dev_set, device, cfg.eval_batch_size, bf16)[0], dev_set)
            log.log(step + 1, dev_eer=eer)
            if eer < best["eer"]:
                best = {"eer": eer, "step": step + 1}
                model.save_pretrained(out / "best")
            state = {"optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                     "step": step + 1, "best": best, "method": method,
                     "old_policy": old_model.state_dict() if old_model is not None else None}
            train.save_checkpoint(out / "last", model.save_pretrained, state)
    log.close()
    (out / "best.json").write_text(json.dumps(best) + "\n")
    return out / "best"


def run_method(cfg: ClassifierConfig, method: str, out: Path, train_set, dev_set, init: str) -> Path:
    """sft | grpo | sft_grpo | grpo_noneg | grpo_beta0 | grpo_beta1 | grpo_noclip (ablations)."""
    ablation = {"grpo_noneg": dict(adv_scale="raw"), "grpo_beta0": dict(beta=0.0),
                "grpo_beta1": dict(beta=1.0), "grpo_noclip": dict(old_refresh=1)}
    if method in ablation:
        return finetune(dataclasses.replace(cfg, **ablation[method]), "grpo", out, train_set,
                        dev_set, init)
    if method == "sft_grpo":
        sft_steps = cfg.sft_steps or cfg.steps // 2
        mid = finetune(dataclasses.replace(cfg, steps=sft_steps), "sft", out / "sft", train_set,
                       dev_set, init)
        return finetune(dataclasses.replace(cfg, steps=cfg.steps - sft_steps), "grpo", out / "grpo",
                        train_set, dev_set, str(mid))
    if method not in ("sft", "grpo"):
        raise ValueError(f"unknown method {method!r}")
    return finetune(cfg, method, out, train_set, dev_set, init)


def run(cfg: ClassifierConfig):
    """CLI entry of the route (see `train.py`)."""
    if cfg.mode in ("experiment", "score"):
        import classifier_experiment
        return getattr(classifier_experiment, f"run_{cfg.mode}")(cfg)
    if cfg.mode != "finetune":
        raise ValueError(f"unknown mode {cfg.mode!r}")
    sets = {k: AudioSet(getattr(cfg, k), cfg.sample_rate) for k in ("train_set", "dev_set")}
    return run_method(cfg, cfg.method, Path(cfg.out_dir), sets["train_set"], sets["dev_set"],
                      cfg.init or cfg.model)
