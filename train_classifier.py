"""Classifier route: an SSL speech detector fine-tuned by SFT, by GRPO, and by SFT then GRPO.

Wang, Ge, Yamagishi 2026, "Does fine-tuning by reinforcement learning improve generalization in
binary speech deepfake detection?". The policy is the detector itself: its softmax over
[fake, real] is a one-token "completion", so GRPO samples N labels per utterance from ONE forward
pass (`grpo.sample_labels`), rewards a label 1 if it is the truth and 0 if not, normalizes the
rewards into advantages and feeds the shared `grpo.grpo_loss` with T = 1. The paper's public code
(AntiDeepfake: algo/rl.py, main.py, hparams/ft_grpo) settles what the text leaves open; this
file follows it, except where the list below says otherwise.

    GRPO        grpo3_loss: A = (r - mean r) / (std r + 1e-5) over the whole flattened batch
                (adv_scale="batch"), clipped ratio to an old policy refreshed every 1000 steps,
                beta * k3 KL to the frozen post-trained model            (method "grpo")
    GRPO, no negative reward
                grpo3_degraded: loss = -mean(log pi * r - beta * kl) with raw 1/0 rewards, no
                ratio, no old policy, no clip       (adv_scale="raw", loss_type="reinforce")
    SFT -> GRPO the SFT model's GRPO stage keeps the post-trained model as its KL reference

Departures, numbered:
1. Reward 1/0 vs +1/-1: after normalization they give the same advantage (it is affine
   invariant), so "the negative reward" of the paper is the negative *advantage* of a wrong draw.
2. Dropout: the paper's code scores the policy in train mode (dropout, layerdrop on) and the
   reference and old policy in eval mode, so ratio and KL are not exactly 1 and 0 even before a
   step. Here GRPO's policy runs with dropout and layerdrop at 0 (train.dropout_off, as TRL's
   disable_dropout; train mode itself stays, so gradient checkpointing stays on) and the
   reference and old policy in eval mode: the ratio and the KL compare one function. SFT keeps
   its dropout, as the paper's code.
3. The global torch RNG (dropout, layerdrop) is re-seeded from (run seed, step) at every step,
   so the same seed gives the same numbers and a resumed run continues exactly, with dropout on
   and nothing to save in a checkpoint.
4. Precision: bf16 autocast on CUDA (the paper's code: fp16); log-probs and loss in fp32.
5. Dynamic batches pack shuffled clips (train.DynamicBatches), where SpeechBrain buckets them
   by length first; long clips are scored in windows of `eval_max_sec` (score_set) to bound
   memory, where the paper's code scores a whole test clip at once.
6. The CPU miniature replaces XLS-R/MMS with a tiny Wav2Vec2 on a fixed log-mel front end
   (models.py, decision 6) and the real corpora with synthetic ones (synth_speech.py); its step
   counts, learning rates and old-policy refresh are scaled to a 2-core CPU.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import json
import re
import typing
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import distributed
import grpo
import train
from train import option
from classifier_data import AudioSet, batch_plan, score_set, set_eer
from models import SSLClassifier


@dataclass
class ClassifierConfig:
    """Fine-tune an SSL spoof detector by SFT, GRPO or SFT->GRPO (the speech paper's set-up)."""
    mode: str = option("experiment", "experiment (post-train, fine-tune, score) | finetune | score")
    method: str = option("grpo", "finetune method: sft | grpo | sft_grpo | grpo_noneg | ...")
    out_dir: str = option("runs/classifier", "where checkpoints, logs and results go")
    seed: int = option(0, "run seed: data order, crops, augmentation and label draws derive from it")
    quick: bool = option(False, "toy sizes: the whole experiment in under a minute (own out_dir)")
    device: str = option("auto", "auto | cpu | cuda")
    bf16: bool = option(True, "bf16 autocast on CUDA (log-probs and loss stay fp32)")
    # model
    model: str = option("tiny-logmel", "tiny | tiny-logmel | a Wav2Vec2 hub id / folder | an "
                                       "SSLClassifier folder")
    head: str = option("linear", "linear | aasist")
    freeze_feature_encoder: bool = option(False, "freeze the convolutional feature encoder")
    gradient_checkpointing: bool = option(False, "recompute encoder activations in backward")
    # data: each set is {"kind": reader, "path": protocol, "audio_dir": folder or null, ...}
    train_set: dict = option({}, "training set (empty: the synthetic target domain)")
    dev_set: dict = option({}, "dev set for model selection by EER (never a test set)")
    test_sets: list = option([], "test sets: list of {name, kind, path, audio_dir, domain: in|out}")
    reference_set: dict = option({}, "reference set for the drift analysis")
    corpus_root: str = option("runs/corpus_speech", "synthetic corpora are built (or reused) here")
    sample_rate: int = option(16000, "audio sample rate")
    train_min_sec: float = option(10.0, "training clips longer than train_max_sec are cropped to ...")
    train_max_sec: float = option(13.0, "... a random length in [train_min_sec, train_max_sec]")
    rawboost_algo: int = option(5, "RawBoost algorithm applied to training clips (0 = off)")
    eval_max_sec: float = option(60.0, "clips longer than this are scored in windows of it")
    # optimisation
    batch_size: int = option(8, "utterances per step (when max_batch_seconds is 0)")
    max_batch_seconds: float = option(0.0, "dynamic batches of at most this much audio (0: off)")
    steps: int = option(1000, "optimizer steps per fine-tuning stage")
    max_epochs: int = option(0, "stop a stage after this many epochs if sooner (0: no limit)")
    lr: float = option(1e-6, "AdamW learning rate")
    adam_eps: float = option(1e-8, "AdamW epsilon")
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
    adv_scale: str = option("batch", "advantage scale: batch (paper code) | group | none | raw")
    adv_eps: float = option(1e-5, "added to the reward std (AntiDeepfake's std_floor)")
    old_refresh: int = option(1000, "old policy refreshed every K steps (1: old = detached current)")
    loss_type: str = option("grpo", "grpo | reinforce (no ratio) | bnpo | dr_grpo | dapo")
    sft_steps: int = option(0, "sft_grpo: steps of its SFT stage (0: `steps`, a full budget)")
    init: str = option("", "start from this SSLClassifier folder (the post-trained model)")
    resume: str = option("", "resume from this checkpoint folder (exact resume)")
    # experiment (the miniature)
    post_steps: int = option(300, "experiment: SFT steps of post-training on the post-training pool")
    post_lr: float = option(1e-3, "experiment: post-training learning rate")
    methods: list = option(["sft", "grpo", "sft_grpo", "grpo_noneg"], "experiment: methods compared")
    seeds: int = option(1, "experiment: repeat over this many seeds and report mean ± std")
    workers: int = option(1, "experiment: processes training seeds and methods side by side")

    MINIMUMS: typing.ClassVar[dict] = dict(
        steps=1, batch_size=1, eval_every=1, eval_batch_size=1, num_generations=1, seeds=1,
        workers=1, post_steps=1, sample_rate=1, max_epochs=0, warmup_steps=0, old_refresh=1,
        lr=0.0, beta=0.0, clip_eps=0.0, adv_eps=0.0, grad_clip=0.0, train_min_sec=0.0,
        eval_max_sec=1.0, max_batch_seconds=0.0, sft_steps=0)

    def check(self):
        """Rules across fields, checked before any work (train.check_config)."""
        sampling = [m for m in [self.method, *self.methods] if m != "sft"]
        if sampling and self.num_generations < 2:
            raise ValueError(f"num_generations must be >= 2 for GRPO ({sampling[0]}): with N = 1 "
                             "every advantage is 0 and the run learns nothing")
        unknown = [m for m in [self.method, *self.methods] if m not in METHODS]
        if unknown:
            raise ValueError(f"unknown method(s) {unknown}; expected any of {METHODS}")
        if self.train_min_sec > self.train_max_sec:
            raise ValueError(f"train_min_sec {self.train_min_sec} > train_max_sec "
                             f"{self.train_max_sec}")
        for name in ("adv_scale", "loss_type"):
            allowed = grpo.SCALES if name == "adv_scale" else grpo.LOSS_TYPES
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")


# ----------------------------------------------------------------------------- the two losses

def sft_loss(model, wav, lengths, labels, cfg: ClassifierConfig):
    """Cross-entropy on the true label (optionally class-weighted)."""
    logits, _ = model(wav, lengths)
    weight = torch.tensor(cfg.class_weights, device=wav.device) if cfg.class_weights else None
    loss = F.cross_entropy(logits.float(), labels, weight=weight)
    return loss, {}


def grpo_step_loss(model, wav, lengths, labels, cfg, generators, ref_model=None, old_model=None,
                   check=None, dist=distributed.Dist()):
    """GRPO with one-token completions: N label draws from one forward pass.

    r_i = 1[o_i = y]  (speech paper)  ->  A_i = group_advantages(r)  ->  grpo_loss with T = 1.
    The reference (beta > 0) and the old policy (old_refresh > 1) each cost one no-grad forward
    of their own weights; nothing else is recomputed. `generators`: one per utterance, its N
    draws. `check(tensor, what=...)` stops the run on NaN / inf logits before the sampler.
    """
    N = cfg.num_generations
    logits, _ = model(wav, lengths)                                   # (B, 2)
    logits = logits.float()
    if check is not None:
        check(logits, what="a logit")
    drawn = torch.cat([grpo.sample_labels(logits[b:b + 1].detach(), N, g)
                       for b, g in enumerate(generators)])            # (B*N,)
    rewards = (drawn == labels.repeat_interleave(N)).float()          # (B*N,)
    # dist: "batch" advantages need every reward of the global batch; then our utterances'
    everyone = dist.gather(rewards)
    start, end = dist.bounds(len(everyone) // N)
    advantages = grpo.group_advantages(everyone, N, scale=cfg.adv_scale,
                                       eps=cfg.adv_eps)[start * N:end * N]
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


def label_generators(cfg: ClassifierConfig, step: int, positions, device) -> list:
    """One generator per utterance, seeded by (seed, step, position in the global batch)."""
    return [torch.Generator(device=device).manual_seed(train.seed_for(cfg.seed, step, 2, int(p)))
            for p in positions]


# ----------------------------------------------------------------------------- one fine-tuning run

TINY = {"tiny": SSLClassifier.tiny, "tiny-logmel": SSLClassifier.tiny_logmel}


def build_model(cfg: ClassifierConfig, source: str) -> SSLClassifier:
    """A tiny model, a saved SSLClassifier folder, or a hub encoder with a new head (its
    random head seeded by the run seed)."""
    opts = dict(freeze_feature_encoder=cfg.freeze_feature_encoder,
                gradient_checkpointing=cfg.gradient_checkpointing)
    if source in TINY:
        model = TINY[source](head=cfg.head, seed=cfg.seed)
    elif (Path(source) / "classifier.json").exists():
        model = SSLClassifier.load(source)
    elif not Path(source).is_dir() and not re.fullmatch(r"[\w.-]+/[\w.-]+", source):
        raise FileNotFoundError(f"model folder not found: {source} (nor is it a hub id "
                                f"'owner/name')")
    else:
        try:
            return SSLClassifier.from_pretrained(source, head=cfg.head, seed=cfg.seed, **opts)
        except OSError as e:  # "owner/name" that is neither a folder here nor on the hub
            raise FileNotFoundError(f"{source}: no such model folder here, and no hub model "
                                    f"of that id could be loaded ({e})") from None
    model.configure(**opts)
    return model


def frozen(model: SSLClassifier) -> SSLClassifier:
    """A no-grad copy in eval mode: the reference or the old policy."""
    return copy.deepcopy(model).eval().requires_grad_(False)


# the fields that make a run what it is: a checkpoint of another run is refused on resume
RUN_IDENTITY = ("seed", "head", "num_generations", "beta", "adv_scale", "adv_eps", "loss_type",
                "clip_eps", "old_refresh", "batch_size", "max_batch_seconds", "train_min_sec",
                "train_max_sec", "rawboost_algo", "class_weights")


def resume_state(cfg: ClassifierConfig, out: Path, method: str):
    """The trainer state to resume this stage from, or None. `--resume` names one stage's
    `last/` checkpoint: other stages (post-training, the other methods) start afresh. A
    checkpoint written by another method, seed or set-up is refused."""
    if not cfg.resume or Path(cfg.resume).absolute().parent != out.absolute():
        return None
    state = train.load_trainer_state(train.resolve_checkpoint(cfg.resume))
    saved = state.get("config", {})
    differ = [k for k in RUN_IDENTITY if k in saved and saved[k] != getattr(cfg, k)]
    if state.get("method") != method or differ:
        raise ValueError(f"{cfg.resume} was written by a {state.get('method')} run with "
                         + ", ".join(f"{k}={saved[k]!r}" for k in differ)
                         + f"; this is a {method} run with "
                         + ", ".join(f"{k}={getattr(cfg, k)!r}" for k in differ) + ": refused")
    return state


def finetune(cfg: ClassifierConfig, method: str, out: Path, train_set: AudioSet,
             dev_set: AudioSet, init: str, reference: str = "", monitor=None) -> Path:
    """One fine-tuning stage (method "sft" or "grpo") from `init`; returns the folder of the
    best dev step. GRPO's KL reference is `reference` (default: `init` itself). `monitor(model)`
    -> {name: number} is logged beside the dev EER at every evaluation (never used to choose)."""
    dist = distributed.setup()  # dist: one process, or this rank of torchrun's K
    device = train.pick_device(cfg.device)
    bf16 = cfg.bf16 and device.type == "cuda"
    model = build_model(cfg, init).to(device)
    train_set.check(model, scored=False), dev_set.check(model, scored=True)
    net = dist.wrap(model, device)  # dist: backward averages the ranks' gradients
    ref_model = old_model = None
    if method == "grpo" and cfg.beta > 0:  # frozen reference; no copy when beta = 0
        ref_model = frozen(build_model(cfg, reference).to(device) if reference else model)
    plan, steps = batch_plan(cfg, train_set)
    start, best = 0, {"dev_eer": float("inf"), "step": -1}
    state = resume_state(cfg, out, method)
    if state is not None:  # the weights of the checkpoint; the reference above stays the start
        model.load_state_dict(SSLClassifier.load(Path(cfg.resume) / "model").state_dict())
        start, best = state["step"], state["best"]
        if state["old_policy"] is not None:  # the old policy of an unfinished refresh period
            old_model = frozen(model)
            old_model.load_state_dict(state["old_policy"])
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr,
                            eps=cfg.adam_eps, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, train.warmup_lambda(cfg.warmup_steps))
    if state is not None:
        opt.load_state_dict(state["optimizer"]), sched.load_state_dict(state["scheduler"])
        train.apply_lr(cfg.lr, opt, sched)  # the lr asked for now, not the checkpoint's
    if dist.is_main:  # dist: rank 0 alone writes
        out.mkdir(parents=True, exist_ok=True)
        train.save_config(cfg, out)
        log = train.JsonlLog(out / "metrics.jsonl", resume=state is not None, resume_step=start)
    check = functools.partial(train.check_finite, checkpoint_dir=out)
    for step in train.steps_bar(range(start, steps), str(out), dist.is_main):
        # departure 3: dropout's stream (one per rank: each holds other utterances)
        torch.manual_seed(train.seed_for(cfg.seed, step, 3, dist.rank))
        if method == "grpo" and cfg.old_refresh > 1 and step % cfg.old_refresh == 0:
            old_model = frozen(model)  # pi_old <- pi_theta
        model.train()
        everyone = plan(step)  # the global batch, the same on every rank
        positions = dist.shard(np.arange(len(everyone)))  # dist: this rank's share
        wav, lengths, labels = (t.to(device) for t in
                                train_set.batch(everyone[positions], positions, cfg, step))
        # departure 2: GRPO's policy without dropout, its reference and old policy in eval mode
        quiet = train.dropout_off(model) if method == "grpo" else contextlib.nullcontext()
        with train.autocast(device, bf16), quiet:
            if method == "sft":
                loss, stats = sft_loss(net, wav, lengths, labels, cfg)
            else:
                gens = label_generators(cfg, step, positions, device)
                loss, stats = grpo_step_loss(net, wav, lengths, labels, cfg, gens, ref_model,
                                             old_model, functools.partial(check, step=step), dist)
        loss_value = check(loss, step)
        opt.zero_grad(set_to_none=True)
        (loss * dist.weight_of(len(positions))).backward()  # dist: shares may differ by one
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        check(grad_norm, step, what="gradient norm")  # before the step: weights stay good
        opt.step(), sched.step()
        stats = dist.mean(dict(stats, loss=loss_value), len(everyone))  # dist: global mean
        if dist.is_main:
            log.log(step + 1, lr=sched.get_last_lr()[0], grad_norm=grad_norm, **stats)
        if ((step + 1) % cfg.eval_every == 0 or step + 1 == steps) and dist.is_main:
            train.check_weights(model, step + 1, out)
            eer = 100 * set_eer(score_set(model, dev_set, device, cfg.eval_batch_size, bf16,
                                          cfg.eval_max_sec)[0], dev_set)
            log.log(step + 1, dev_eer=eer, **(monitor(model) if monitor else {}))
            if eer < best["dev_eer"]:
                best = {"dev_eer": eer, "step": step + 1}
                model.save_pretrained(out / "best")
            state = {"optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                     "step": step + 1, "best": best, "method": method,
                     "config": dataclasses.asdict(cfg),
                     "old_policy": old_model.state_dict() if old_model is not None else None}
            train.save_checkpoint(out / "last", model.save_pretrained, state)
    if dist.is_main:
        log.close()
        (out / "best.json").write_text(json.dumps(best) + "\n")
    dist.barrier()  # dist: the others wait until rank 0 has written best/
    return out / "best"


ABLATIONS = {  # method -> config changes of a GRPO run
    "grpo_noneg": dict(adv_scale="raw", loss_type="reinforce", old_refresh=1),  # grpo3_degraded
    "grpo_beta0": dict(beta=0.0), "grpo_beta1": dict(beta=1.0),
    "grpo_noclip": dict(old_refresh=1),  # the paper's GRPO_s (grpo2): no old policy, no clip
}
METHODS = ("sft", "grpo", "sft_grpo", *ABLATIONS)


def run_method(cfg: ClassifierConfig, method: str, out: Path, train_set, dev_set, init: str,
               monitor=None) -> Path:
    """sft | grpo | sft_grpo | grpo_noneg | grpo_beta0 | grpo_beta1 | grpo_noclip (ablations)."""
    if method in ABLATIONS:
        return finetune(dataclasses.replace(cfg, **ABLATIONS[method]), "grpo", out, train_set,
                        dev_set, init, monitor=monitor)
    if method == "sft_grpo":  # each stage a full budget; GRPO's reference: the start model
        mid = finetune(dataclasses.replace(cfg, steps=cfg.sft_steps or cfg.steps), "sft",
                       out / "sft", train_set, dev_set, init, monitor=monitor)
        return finetune(cfg, "grpo", out / "grpo", train_set, dev_set, str(mid), reference=init,
                        monitor=monitor)
    if method not in ("sft", "grpo"):
        raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")
    return finetune(cfg, method, out, train_set, dev_set, init, monitor=monitor)
