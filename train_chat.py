"""Chat routes: the SFT loop and the GRPO loop of a ChatPolicy (face VLM and HIR-SDD audio LLM).

One GRPO step (DESIGN.md, "the data path of one GRPO step"; `grpo_step`):

    B prompts -> policy.generate: N completions each, one prefill per prompt (sampling.py)
              -> reward_fn on each completion text               (rewards.py, per route)
              -> A_i = group_advantages(r)                         (grpo.py, face paper Eq. 2)
              -> old log-probs only if mu > 1; reference log-probs only if beta > 0
                 (LoRA: the same weights with adapters off, no second copy); each prompt
                 runs once, its N completions on top of its KV cache (shared_prefix)
              -> mu updates of grpo_loss, then the optimizer step
              -> one JSON line: loss, reward and each reward part, KL, clip fractions,
                 completion length, share of groups whose rewards are all equal

The route experiments (fas_experiment.py, hir_experiment.py) build the examples, the reward
function and the stages; this file holds only what both share. Departures:
1. mu = 1 by default (one update per rollout, as TRL's default): the ratio is then 1 in value,
   old log-probs are never computed, and clipping never fires; mu > 1 is selectable.
2. Evaluation decodes greedily (the face paper does not say how it decodes at test time).
3. Dropout is off during GRPO, in every pass: sampling, old, reference and update (TRL's
   `disable_dropout` option; LoRA dropout is 0.05 in the face recipe and 0.1 in the HIR one).
   Sampling and the no-grad passes run in eval mode, the update in train mode; with dropout on,
   the update would score another, randomly thinned policy, and the ratio pi / pi_old at the
   first update would be exp(noise) instead of 1 (0.83-1.38 measured on the 7B set-up), so
   clipping would fire before any weight moved. SFT keeps its dropout.
4. Sampling runs under the same bf16 autocast as scoring (on CUDA), so the sampled tokens'
   log-probs are those of the policy the loss sees (fp32 sampling scored in bf16 differed by up
   to 0.009 nats/token on the 7B set-up).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import torch

import distributed
import grpo
import train
from train import option
from chat import ChatPolicy


@dataclass
class ChatConfig:
    """Options shared by the two chat routes (each route's dataclass adds its own)."""
    out_dir: str = option("runs/chat", "where checkpoints, logs and results go")
    seed: int = option(0, "run seed: data order and sampling seeds derive from (seed, step, ...)")
    quick: bool = option(False, "toy sizes: the whole experiment in under a minute (used by a test)")
    device: str = option("auto", "auto | cpu | cuda")
    bf16: bool = option(True, "bf16 autocast on CUDA (log-probs and loss stay fp32)")
    model: str = option("tiny", "'tiny' or a hub id / folder of the chat model")
    dtype: str = option("", "weights dtype when loading a real model (e.g. bfloat16); '' = default")
    lora_r: int = option(0, "LoRA rank (0: full fine-tuning)")
    lora_alpha: int = option(16, "LoRA alpha (scale alpha / r)")
    lora_dropout: float = option(0.05, "LoRA dropout")
    gradient_checkpointing: bool = option(False, "recompute activations in backward (never in generate)")
    # sampling
    num_generations: int = option(6, "N: completions per prompt")
    max_new_tokens: int = option(256, "longest completion")
    temperature: float = option(1.0, "sampling temperature (the log-probs use the same)")
    top_p: float = option(1.0, "nucleus sampling")
    top_k: int = option(0, "top-k sampling (0: off)")
    sampler: str = option("loop", "loop: our decode loop, one prefill per prompt | hf: HF generate")
    shared_prefix: bool = option(True, "score each prompt once, its N completions on its KV cache "
                                       "(False: every row runs prompt + completion)")
    # GRPO
    beta: float = option(0.04, "weight of the k3 KL to the reference")
    clip_eps: float = option(0.2, "epsilon of the clipped surrogate")
    mu: int = option(1, "updates per rollout (1: old = detached current)")
    adv_scale: str = option("group", "advantage scale: group | batch | none | raw")
    loss_type: str = option("grpo", "grpo | bnpo | dr_grpo | dapo")
    # optimisation
    batch_size: int = option(6, "prompts per step (B); a step samples B*N completions")
    lr: float = option(5e-6, "AdamW learning rate")
    weight_decay: float = option(0.0, "AdamW weight decay")
    warmup_steps: int = option(0, "linear warm-up steps")
    lr_floor: float = option(1.0, "cosine decay of the lr to lr * lr_floor over a stage (1: none)")
    eval_every: int = option(0, "call a stage's `validate` every this many steps (0: never)")
    grad_clip: float = option(1.0, "gradient-norm clip")
    logp_chunk: int = option(8, "completions per log-prob forward (bounds logits memory)")
    eval_batch_size: int = option(16, "prompts per evaluation generate call")
    resume: str = option("", "resume a stage from this checkpoint folder")


@dataclass
class ChatExample:
    """One prompt: media (PIL image / waveform / None), question, label, SFT target, extras."""
    media: object
    question: str
    label: str
    target: str = ""
    meta: dict = field(default_factory=dict)


def load_policy(cfg: ChatConfig, source: str, modality: str, lora: bool = False,
                **processor_kw) -> ChatPolicy:
    """'tiny' or a hub id / folder; `lora` adds fresh adapters when cfg.lora_r > 0.

    `processor_kw` (e.g. min_pixels, max_pixels) go to from_pretrained; the tiny model's
    processor is fixed by tiny.py."""
    device = train.pick_device(cfg.device)
    adapters = (dict(r=cfg.lora_r, alpha=cfg.lora_alpha, dropout=cfg.lora_dropout, seed=cfg.seed)
                if lora and cfg.lora_r > 0 else None)
    if source == "tiny":
        policy = ChatPolicy.tiny(modality, seed=cfg.seed, lora=adapters,
                                 gradient_checkpointing=cfg.gradient_checkpointing)
        return _to(policy, device)
    return ChatPolicy.from_pretrained(source, modality, dtype=cfg.dtype or None, lora=adapters,
                                      gradient_checkpointing=cfg.gradient_checkpointing,
                                      device=device, **processor_kw)


def _to(policy: ChatPolicy, device: torch.device) -> ChatPolicy:
    policy.model.to(device)
    return policy


def _encode(policy: ChatPolicy, examples: list[ChatExample]) -> dict:
    return policy.encode_prompts([ex.media for ex in examples], [ex.question for ex in examples])


def _setup(policy, cfg: ChatConfig, out: Path, steps: int, kind: str, dist: distributed.Dist):
    """Optimizer, scheduler, log, and the start step (restored from `cfg.resume` if given: a
    checkpoint of another kind of stage or another seed is refused, the lr asked for now is
    applied, the log's rows after the checkpoint are dropped). Rank 0 alone writes."""
    params = [p for p in policy.model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, train.warmup_lambda(cfg.warmup_steps, steps, cfg.lr_floor))
    start = 0
    if cfg.resume:
        state = train.load_trainer_state(train.resolve_checkpoint(cfg.resume))
        seed = state.get("config", {}).get("seed", cfg.seed)
        if state.get("kind", kind) != kind or seed != cfg.seed:
            raise ValueError(f"{cfg.resume} was written by a {state.get('kind')} stage of seed "
                             f"{seed}; this is a {kind} stage of seed {cfg.seed}: refused")
        opt.load_state_dict(state["optimizer"]), sched.load_state_dict(state["scheduler"])
        train.apply_lr(cfg.lr, opt, sched)
        start = state["step"]
    if dist.is_main:
        out.mkdir(parents=True, exist_ok=True)
        train.save_config(cfg, out)
    log = train.JsonlLog(out / "metrics.jsonl" if dist.is_main else None,
                         resume=bool(cfg.resume), resume_step=start)
    return params, opt, sched, start, log


def _update(loss, step, out, params, opt, sched, cfg, dist=distributed.Dist(), weight=1.0):
    """NaN guard, backward (scaled by this rank's share), the ranks' gradients averaged, clip,
    a gradient-norm guard, optimizer and scheduler step."""
    value = train.check_finite(loss, step, out)
    opt.zero_grad(set_to_none=True)
    (loss * weight).backward()
    dist.average_gradients(params)  # dist: what DDP does, after backward
    grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
    train.check_finite(grad_norm, step, out, what="gradient norm")  # before the weights move
    opt.step(), sched.step()
    return value, grad_norm


def _checkpoint(policy, out, opt, sched, step, kind, cfg, dist):
    """last/ of a stage (rank 0; never with non-finite weights), the others wait for it."""
    if dist.is_main:
        train.check_weights(policy.model, step, out)
        state = {"optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "step": step,
                 "kind": kind, "config": dataclasses.asdict(cfg)}
        train.save_checkpoint(out / "last", policy.save, state)
    dist.barrier()


def _share(examples, cfg: ChatConfig, step: int, dist: distributed.Dist):
    """This rank's examples of the step's global batch, and their positions in it."""
    everyone = train.batch_indices(len(examples), cfg.batch_size, cfg.seed, step)
    if len(everyone) < dist.world:
        raise ValueError(f"step {step}: {len(everyone)} example(s) per step cannot be shared by "
                         f"{dist.world} processes; raise batch_size")
    positions = dist.shard(list(range(len(everyone))))
    return [examples[everyone[i]] for i in positions], positions


def _validate(validate, step, steps, cfg, log) -> None:
    """Every `cfg.eval_every` steps (and after the last): log what `validate(step)` returns."""
    if validate is not None and cfg.eval_every > 0 and (step % cfg.eval_every == 0
                                                        or step == steps):
        log.log(step, **validate(step))


def sft_stage(policy: ChatPolicy, examples: list[ChatExample], cfg: ChatConfig, out: Path,
              steps: int, validate=None) -> None:
    """Completion-only cross-entropy on each example's `target` (prompt tokens carry no loss).
    `validate(step) -> dict` (optional) is logged every `cfg.eval_every` steps."""
    device, dist = policy.device, distributed.setup()
    params, opt, sched, start, log = _setup(policy, cfg, out, steps, "sft", dist)
    for step in train.steps_bar(range(start, steps), out.name, dist.is_main):
        batch_ex, _ = _share(examples, cfg, step, dist)  # dist: this rank's share
        with train.autocast(device, cfg.bf16 and device.type == "cuda"):
            loss, tokens = policy.sft_loss(_encode(policy, batch_ex),
                                           [ex.target for ex in batch_ex], cfg.logp_chunk,
                                           return_tokens=True)
        value, grad_norm = _update(loss, step, out, params, opt, sched, cfg, dist,
                                   dist.weight_of(tokens))  # dist: a mean over tokens
        log.log(step + 1, lr=sched.get_last_lr()[0], grad_norm=grad_norm,
                **dist.mean({"loss": value}, cfg.batch_size))
        _validate(validate, step + 1, steps, cfg, log)
    _checkpoint(policy, out, opt, sched, steps, "sft", cfg, dist)
    log.close()


def _no_lap(phase: str) -> None:
    return None


def grpo_step(policy: ChatPolicy, batch_ex: list[ChatExample], reward_fn, cfg: ChatConfig,
              step: int, optim: tuple, out: Path, reference: ChatPolicy | None = None,
              lap=_no_lap, positions=None, dist=distributed.Dist()) -> dict:
    """One GRPO step on the B prompts of `batch_ex` (module docstring), mu optimizer steps.

    optim = (params, optimizer, scheduler); `lap(phase)` is called at the end of each phase
    (bench.py times them). `positions`: the prompts' places in the step's global batch (their
    sampling seeds derive from them, so a prompt draws the same completions whichever process
    holds it). Returns the rollout, rewards, reward parts, the last update's loss statistics,
    loss value and gradient norm.
    """
    device, N = policy.device, cfg.num_generations
    bf16 = cfg.bf16 and device.type == "cuda"
    positions = range(len(batch_ex)) if positions is None else positions
    seeds = ([train.seed_for(cfg.seed, step, p) for p in positions] if cfg.sampler == "loop"
             else train.seed_for(cfg.seed, step))
    score = dict(temperature=cfg.temperature, chunk_size=cfg.logp_chunk,
                 shared_prefix=cfg.shared_prefix)
    with train.dropout_off(policy.model):  # departure 3: every pass scores one policy
        with torch.no_grad(), train.autocast(device, bf16):  # departure 4: one precision
            rollout = policy.generate(_encode(policy, batch_ex), N, cfg.max_new_tokens,
                                      cfg.temperature, cfg.top_p, top_k=cfg.top_k, seed=seeds,
                                      sampler=cfg.sampler)
        lap("generate")
        mask = rollout.completion_mask                                         # (B*N, T)
        if rollout.sample_logps is not None:  # NaN logits sample garbage: stop here, not later
            train.check_finite((rollout.sample_logps * mask).sum(), step, out,
                               what="a sampled token's log-prob")
        group_ex = [ex for ex in batch_ex for _ in range(N)]
        rewards, parts = reward_fn(rollout.texts, group_ex, mask.sum(1))       # (B*N,)
        rewards = rewards.to(device)
        # dist: "batch" advantages need every reward of the global batch; then ours
        everyone = dist.gather(rewards)
        start, end = dist.bounds(len(everyone) // N)
        advantages = grpo.group_advantages(everyone, N, scale=cfg.adv_scale)[start * N:end * N]
        # dist: a mean over sequences or over tokens, whichever the loss type averages
        weight = dist.weight_of(mask.sum() if cfg.loss_type in ("bnpo", "dapo") else len(mask))
        lap("rewards")
        with torch.no_grad(), train.autocast(device, bf16):
            old = (policy.completion_logps(rollout, with_grad=False, **score)
                   if cfg.mu > 1 else None)
            ref = (policy.reference_logps(rollout, reference=reference, **score)
                   if cfg.beta > 0 else None)
        lap("ref_old_logps")
        for _ in range(cfg.mu):
            with train.autocast(device, bf16):
                logps = policy.completion_logps(rollout, with_grad=True, **score)
            loss, stats = grpo.grpo_loss(logps, advantages, mask, old_logps=old, ref_logps=ref,
                                         clip_eps=cfg.clip_eps, beta=cfg.beta,
                                         loss_type=cfg.loss_type,
                                         max_completion_length=cfg.max_new_tokens)
            value, grad_norm = _update(loss, step, out, *optim, cfg, dist, weight)
        lap("learn")
    return dict(rollout=rollout, rewards=rewards, parts=parts, stats=stats, loss=value,
                grad_norm=grad_norm)


def grpo_stage(policy: ChatPolicy, examples: list[ChatExample], reward_fn, cfg: ChatConfig,
               out: Path, steps: int, reference: ChatPolicy | None = None,
               validate=None) -> None:
    """GRPO on `examples`. reward_fn(texts, examples, lengths) -> (rewards (B*N,), parts dict).

    `lengths` are the completions' token counts (for a reasoning reward measured in tokens);
    `examples` has each prompt's example repeated N times, aligned with `texts`.
    `reference`: pi_ref for full fine-tuning when resuming (a frozen copy of the start point);
    without it a frozen copy of the *current* weights is made, which is right only at step 0.
    `validate(step) -> dict` (optional) is logged every `cfg.eval_every` steps.
    """
    N, dist = cfg.num_generations, distributed.setup()
    # Full fine-tuning keeps a frozen copy as pi_ref; with LoRA the adapters-off model serves.
    if reference is None and cfg.beta > 0 and cfg.lora_r == 0:
        reference = policy.frozen_copy()
    params, opt, sched, start, log = _setup(policy, cfg, out, steps, "grpo", dist)
    for step in train.steps_bar(range(start, steps), out.name, dist.is_main):
        batch_ex, positions = _share(examples, cfg, step, dist)  # dist: this rank's prompts
        r = grpo_step(policy, batch_ex, reward_fn, cfg, step, (params, opt, sched), out,
                      reference, positions=positions, dist=dist)
        rewards = r["rewards"]
        stats = dict(r["stats"], loss=r["loss"], reward=rewards.mean(),
                     equal_share=grpo.equal_reward_share(rewards, N),
                     **{f"reward_{k}": v.mean() for k, v in r["parts"].items()})
        log.log(step + 1, lr=sched.get_last_lr()[0], grad_norm=r["grad_norm"],
                **dist.mean(stats, cfg.batch_size))  # dist: the global batch's means
        _validate(validate, step + 1, steps, cfg, log)
    _checkpoint(policy, out, opt, sched, steps, "grpo", cfg, dist)
    log.close()


@torch.no_grad()
def generate_answers(policy: ChatPolicy, examples: list[ChatExample], cfg: ChatConfig) -> list:
    """Greedy completions for evaluation, in batches (never augmented, never sampled).
    Under torchrun each rank answers its share and every rank gets all the answers back."""
    dist = distributed.setup()  # dist: shared out, gathered back in order
    mine, texts = dist.shard(examples), []
    with train.autocast(policy.device, cfg.bf16 and policy.device.type == "cuda"):
        for start in range(0, len(mine), cfg.eval_batch_size):
            chunk = mine[start:start + cfg.eval_batch_size]
            rollout = policy.generate(_encode(policy, chunk), 1, cfg.max_new_tokens, greedy=True,
                                      sampler=cfg.sampler)
            texts += rollout.texts
    return dist.gather_list(texts)
