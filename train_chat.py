"""Chat routes: the SFT loop and the GRPO loop of a ChatPolicy (face VLM and HIR-SDD audio LLM).

One GRPO step (DESIGN.md, "the data path of one GRPO step"):

    B prompts -> policy.generate: N completions each, one batched call, KV cache, no grad
              -> reward_fn on each completion text               (rewards.py, per route)
              -> A_i = group_advantages(r)                         (grpo.py, face paper Eq. 2)
              -> old log-probs only if mu > 1; reference log-probs only if beta > 0
                 (LoRA: the same weights with adapters off, no second copy)
              -> mu updates of grpo_loss, then the optimizer step
              -> one JSON line: loss, reward and each reward part, KL, clip fractions,
                 completion length, share of groups whose rewards are all equal

The route experiments (fas_experiment.py, hir_experiment.py) build the examples, the reward
function and the stages; this file holds only what both share. Departures:
1. mu = 1 by default (one update per rollout, as TRL's default): the ratio is then 1 in value,
   old log-probs are never computed, and clipping never fires; mu > 1 is selectable.
2. Evaluation decodes greedily (the face paper does not say how it decodes at test time).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

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


def _setup(policy, cfg: ChatConfig, out: Path, steps: int):
    """Optimizer, scheduler, log, and the start step (restored from `cfg.resume` if given)."""
    params = [p for p in policy.model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, train.warmup_lambda(cfg.warmup_steps, steps, cfg.lr_floor))
    start = 0
    if cfg.resume:
        state = train.load_trainer_state(cfg.resume)
        opt.load_state_dict(state["optimizer"]), sched.load_state_dict(state["scheduler"])
        start = state["step"]
    out.mkdir(parents=True, exist_ok=True)
    train.save_config(cfg, out)
    return params, opt, sched, start, train.JsonlLog(out / "metrics.jsonl", resume=bool(cfg.resume))


def _update(loss, step, out, params, opt, sched, cfg) -> tuple[float, torch.Tensor]:
    """NaN guard, backward, clip, optimizer and scheduler step."""
    value = train.check_finite(loss, step, out)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
    opt.step(), sched.step()
    return value, grad_norm


def _checkpoint(policy, out, opt, sched, step):
    state = {"optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "step": step}
    train.save_checkpoint(out / "last", policy.save, state)


def _validate(validate, step, steps, cfg, log) -> None:
    """Every `cfg.eval_every` steps (and after the last): log what `validate(step)` returns."""
    if validate is not None and cfg.eval_every > 0 and (step % cfg.eval_every == 0
                                                        or step == steps):
        log.log(step, **validate(step))


def sft_stage(policy: ChatPolicy, examples: list[ChatExample], cfg: ChatConfig, out: Path,
              steps: int, validate=None) -> None:
    """Completion-only cross-entropy on each example's `target` (prompt tokens carry no loss).
    `validate(step) -> dict` (optional) is logged every `cfg.eval_every` steps."""
    device = policy.device
    params, opt, sched, start, log = _setup(policy, cfg, out, steps)
    for step in tqdm(range(start, steps), desc=out.name, leave=False):
        batch_ex = [examples[i] for i in train.batch_indices(len(examples), cfg.batch_size,
                                                             cfg.seed, step)]
        with train.autocast(device, cfg.bf16 and device.type == "cuda"):
            loss = policy.sft_loss(_encode(policy, batch_ex), [ex.target for ex in batch_ex],
                                   cfg.logp_chunk)
        value, grad_norm = _update(loss, step, out, params, opt, sched, cfg)
        log.log(step + 1, loss=value, lr=sched.get_last_lr()[0], grad_norm=grad_norm)
        _validate(validate, step + 1, steps, cfg, log)
    _checkpoint(policy, out, opt, sched, steps)
    log.close()


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
    device, N = policy.device, cfg.num_generations
    bf16 = cfg.bf16 and device.type == "cuda"
    # Full fine-tuning keeps a frozen copy as pi_ref; with LoRA the adapters-off model serves.
    if reference is None and cfg.beta > 0 and cfg.lora_r == 0:
        reference = policy.frozen_copy()
    params, opt, sched, start, log = _setup(policy, cfg, out, steps)
    for step in tqdm(range(start, steps), desc=out.name, leave=False):
        batch_ex = [examples[i] for i in train.batch_indices(len(examples), cfg.batch_size,
                                                             cfg.seed, step)]
        rollout = policy.generate(_encode(policy, batch_ex), N, cfg.max_new_tokens,
                                  cfg.temperature, cfg.top_p, seed=train.seed_for(cfg.seed, step))
        mask = rollout.completion_mask                                         # (B*N, T)
        group_ex = [ex for ex in batch_ex for _ in range(N)]
        rewards, parts = reward_fn(rollout.texts, group_ex, mask.sum(1))       # (B*N,)
        rewards = rewards.to(device)
        advantages = grpo.group_advantages(rewards, N, scale=cfg.adv_scale)   # (B*N,)
        with torch.no_grad(), train.autocast(device, bf16):
            old = (policy.completion_logps(rollout, cfg.temperature, cfg.logp_chunk, False)
                   if cfg.mu > 1 else None)
            ref = (policy.reference_logps(rollout, cfg.temperature, cfg.logp_chunk, reference)
                   if cfg.beta > 0 else None)
        for _ in range(cfg.mu):
            with train.autocast(device, bf16):
                logps = policy.completion_logps(rollout, cfg.temperature, cfg.logp_chunk)
            loss, stats = grpo.grpo_loss(logps, advantages, mask, old_logps=old, ref_logps=ref,
                                         clip_eps=cfg.clip_eps, beta=cfg.beta,
                                         loss_type=cfg.loss_type,
                                         max_completion_length=cfg.max_new_tokens)
            value, grad_norm = _update(loss, step, out, params, opt, sched, cfg)
        log.log(step + 1, loss=value, reward=rewards.mean(), lr=sched.get_last_lr()[0],
                grad_norm=grad_norm, equal_share=grpo.equal_reward_share(rewards, N),
                **stats, **{f"reward_{k}": v.mean() for k, v in parts.items()})
        _validate(validate, step + 1, steps, cfg, log)
    _checkpoint(policy, out, opt, sched, steps)
    log.close()


@torch.no_grad()
def generate_answers(policy: ChatPolicy, examples: list[ChatExample], cfg: ChatConfig) -> list:
    """Greedy completions for evaluation, in batches (never augmented, never sampled)."""
    texts = []
    with train.autocast(policy.device, cfg.bf16 and policy.device.type == "cuda"):
        for start in range(0, len(examples), cfg.eval_batch_size):
            chunk = examples[start:start + cfg.eval_batch_size]
            rollout = policy.generate(_encode(policy, chunk), 1, cfg.max_new_tokens, greedy=True)
            texts += rollout.texts
    return texts
