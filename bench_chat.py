"""The chat route's part of bench.py (its notes 5, 6, 8 and 9 say how these are measured).

    chat_bench      the GRPO step of `train_chat.grpo_step`, phase by phase (text, image; full
                    fine-tuning and LoRA)
    sampling_bench  our decode loop (sampling.sample) against HF `generate`, per family
    scoring_bench   the reference + update passes with the shared prefix against unshared rows
    trl_bench       the whole step against TRL's GRPOTrainer, at one prompt length

Workloads: B = 2 prompts x N = 6 completions x 32 new tokens (8 with --quick). "short" is the
face route's prompt (74 tokens of text; 92 with a 112 x 112 px image, 16 image tokens; 108 with
a 1 s clip, 25 audio tokens); "256" is the same prompt lengthened with filler words to exactly
256 tokens. The B prompts of a workload have one length (no padding).
"""
from __future__ import annotations

import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

import grpo
import train
import train_chat
from chat import ChatPolicy
from fas_experiment import PROMPT, FasConfig, reward_function
from lora import lora_modules
from measure import fmt, interleaved, live_parameter_bytes, saved_activations, state_bytes, \
    stats, storage_bytes, sync

PHASES = ("generate", "rewards", "ref_old_logps", "learn")
WORKLOADS = {"text": ("text", None), "text_256": ("text", 256), "image": ("image", None),
             "audio": ("audio", None)}  # name: (modality, prompt tokens; None = short)


def chat_config(quick: bool, **over) -> FasConfig:
    """The face route's config (its reward: Eq. 6 with L = 1200 characters) at bench sizes."""
    return FasConfig(batch_size=2, num_generations=6, max_new_tokens=8 if quick else 32,
                     beta=0.04, lr=5e-6, **over)


def text_tokens(policy: ChatPolicy, question: str) -> int:
    """Tokens of the chat prompt around `question`, media placeholders left out."""
    text = policy.prompt_text(question)
    return len(policy.tokenizer(text, add_special_tokens=False)["input_ids"])


def question(policy: ChatPolicy, prompt_tokens: int | None) -> str:
    """PROMPT, or PROMPT + filler words so that the text prompt has exactly `prompt_tokens`."""
    if prompt_tokens is None:
        return PROMPT
    head = PROMPT + " Context:"
    text = head + " real" * (prompt_tokens - text_tokens(policy, head))
    if text_tokens(policy, text) != prompt_tokens:  # " real" is one token in Qwen's and tiny's
        raise ValueError(f"could not build a {prompt_tokens}-token prompt "
                         f"({text_tokens(policy, text)} tokens)")
    return text


def chat_examples(policy: ChatPolicy, B: int, prompt_tokens: int | None = None) -> list:
    """B examples of the policy's modality: random images / noise clips, labels alternating."""
    rng = np.random.default_rng(0)
    media = [None] * B
    if policy.modality == "image":
        from PIL import Image
        media = [Image.fromarray(rng.integers(0, 256, (112, 112, 3), dtype=np.uint8))
                 for _ in range(B)]
    elif policy.modality == "audio":
        media = [0.1 * rng.standard_normal(16000).astype(np.float32) for _ in range(B)]
    q = question(policy, prompt_tokens)
    return [train_chat.ChatExample(m, q, ("real", "fake")[i % 2]) for i, m in enumerate(media)]


# ----------------------------------------------------------------------------- the step by phase

class ChatRun:
    """One policy + its GRPO state, stepping with `train_chat.grpo_step`, phases timed."""

    def __init__(self, policy, examples, cfg):
        self.policy, self.examples, self.cfg = policy, examples, cfg
        self.reward_fn = reward_function(cfg)
        # the loop's rule: a frozen copy only for full fine-tuning with beta > 0
        self.reference = policy.frozen_copy() if cfg.beta > 0 and cfg.lora_r == 0 else None
        params = [p for p in policy.model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.optim = (params, opt, torch.optim.lr_scheduler.LambdaLR(opt, train.warmup_lambda(0)))
        self.phases, self.tokens = {p: [] for p in PHASES}, {"generate": [], "learn": []}
        self.memory = None  # state_bytes of the counted step

    def step(self, r: int, count: bool = False) -> float:
        device = self.policy.device
        clock = [time.perf_counter()]

        def lap(phase):
            sync(device)
            clock.append(time.perf_counter())

        with saved_activations(self.policy.model, count) as act:
            out = train_chat.grpo_step(self.policy, self.examples, self.reward_fn, self.cfg, r,
                                       self.optim, Path("bench"), self.reference, lap)
        if count:  # the counted step is not a timed one
            models = [self.policy.model] + ([self.reference.model] if self.reference else [])
            self.memory = state_bytes(models, self.optim[1], act["bytes"])
            return clock[-1] - clock[0]
        for phase, a, b in zip(PHASES, clock, clock[1:]):
            self.phases[phase].append(b - a)
        rollout = out["rollout"]
        self.tokens["generate"].append(int(rollout.completion_mask.sum()))
        self.tokens["learn"].append(self.cfg.mu * (rollout.completion_mask.numel()
                                                   + rollout.batch["input_ids"].numel()))
        return clock[-1] - clock[0]

    def report(self, warmup: int) -> dict:
        phases = {p: v[warmup:] for p, v in self.phases.items()}
        totals = [sum(x) for x in zip(*phases.values())]
        per_s = {k: stats(n / t for n, t in zip(self.tokens[k][warmup:], phases[k]))
                 for k in self.tokens}
        return {"seconds": {p: stats(v) for p, v in phases.items()} | {"total": stats(totals)},
                "generate_share": statistics.median(g / t for g, t in zip(phases["generate"], totals)),
                "tokens_per_second": per_s, "memory_bytes": self.memory}


def chat_bench(device, quick: bool, repeats: int, warmup: int) -> dict:
    """Text and image policies, full fine-tuning and LoRA (r = 8), interleaved."""
    variants = {"text": ("text", 0), "text_lora": ("text", 8), "image": ("image", 0),
                "image_lora": ("image", 8)}
    runs, held = {}, {}
    for name, (modality, r) in variants.items():
        before = live_parameter_bytes()
        cfg = chat_config(quick, lora_r=r, device=device.type)
        policy = train_chat.load_policy(cfg, "tiny", modality, lora=r > 0)
        runs[name] = ChatRun(policy, chat_examples(policy, cfg.batch_size), cfg)
        held[name] = live_parameter_bytes() - before  # everything this run added: policy + ref
    interleaved({n: run.step for n, run in runs.items()}, repeats, warmup, device)
    out = {}
    for name, run in runs.items():
        run.step(warmup + repeats, count=True)  # one more step, counted (after the timed ones)
        model = run.policy.model
        base = storage_bytes([p for n, p in model.named_parameters() if "lora_" not in n])
        adapters = storage_bytes([p for m in lora_modules(model).values()
                                  for p in (m.lora_A.weight, m.lora_B.weight)])
        out[name] = run.report(warmup) | {"parameter_memory": {
            "held_by_run": held[name], "base": base, "adapters": adapters,
            "held_minus_base_minus_adapters": held[name] - base - adapters}}
    return out


# ----------------------------------------------------------------------------- sampling, scoring

def workloads(device, quick: bool) -> dict:
    """{name: (policy, prompt batch, cfg)} for WORKLOADS; full fine-tuning, tiny models."""
    out = {}
    for name, (modality, prompt_tokens) in WORKLOADS.items():
        cfg = chat_config(quick, device=device.type)
        policy = train_chat.load_policy(cfg, "tiny", modality)
        examples = chat_examples(policy, cfg.batch_size, prompt_tokens)
        out[name] = (policy, train_chat._encode(policy, examples), cfg)
    return out


def speedups(times: dict, fast: str, slow: str) -> dict:
    """Per workload: seconds of both variants and slow / fast, taken per repeat (note 1)."""
    names = sorted({k.split("/")[0] for k in times}, key=list(WORKLOADS).index)
    return {w: {fast: stats(times[f"{w}/{fast}"]), slow: stats(times[f"{w}/{slow}"]),
                "speedup": stats(b / a for a, b in zip(times[f"{w}/{fast}"], times[f"{w}/{slow}"]))}
            for w in names}


def sampling_bench(device, quick: bool, repeats: int, warmup: int) -> dict:
    """Our decode loop vs HF generate on the same prompts and settings (note 8)."""
    steps = {}
    for name, (policy, batch, cfg) in workloads(device, quick).items():
        for sampler in ("loop", "hf"):
            steps[f"{name}/{sampler}"] = (
                lambda r, p=policy, b=batch, c=cfg, s=sampler: p.generate(
                    b, c.num_generations, c.max_new_tokens, c.temperature, c.top_p,
                    seed=train.seed_for(c.seed, r), sampler=s))
    return speedups(interleaved(steps, repeats, warmup, device), "loop", "hf")


def scoring_bench(device, quick: bool, repeats: int, warmup: int) -> dict:
    """Reference (no grad) + update (grad, backward) passes, shared prefix vs unshared (note 9)."""
    steps = {}
    for name, (policy, batch, cfg) in workloads(device, quick).items():
        rollout = policy.generate(batch, cfg.num_generations, cfg.max_new_tokens, seed=0)
        reference = policy.frozen_copy()
        A = torch.linspace(-1.0, 1.0, rollout.completion_ids.shape[0], device=device)

        def passes(r, p=policy, ro=rollout, ref_policy=reference, A=A, c=cfg, shared=True):
            kw = dict(temperature=c.temperature, chunk_size=c.logp_chunk, shared_prefix=shared)
            ref = p.reference_logps(ro, reference=ref_policy, **kw)
            logps = p.completion_logps(ro, with_grad=True, **kw)
            loss, _ = grpo.grpo_loss(logps, A, ro.completion_mask, ref_logps=ref, beta=0.04)
            loss.backward()
            p.model.zero_grad(set_to_none=True)

        steps[f"{name}/shared"] = passes
        steps[f"{name}/unshared"] = lambda r, f=passes: f(r, shared=False)
    return speedups(interleaved(steps, repeats, warmup, device), "shared", "unshared")


# ----------------------------------------------------------------------------- against TRL

def trl_bench(repeats: int, warmup: int, quick: bool, prompt_tokens: int | None = None) -> dict:
    """Ours and TRL's GRPOTrainer on one saved tiny text model, identical settings (note 6)."""
    import transformers
    import trl
    from datasets import Dataset

    transformers.logging.set_verbosity_error()  # TRL's own log lines and bars would cut the table
    transformers.logging.disable_progress_bar()
    cfg = chat_config(quick, device="cpu")
    tmp = tempfile.TemporaryDirectory(prefix="bench_trl_")  # the saved model both sides load
    folder = tmp.name
    seed_policy = ChatPolicy.tiny("text")
    seed_policy.model.save_pretrained(folder)
    seed_policy.tokenizer.save_pretrained(folder)
    policy = ChatPolicy.from_pretrained(folder, "text")
    ours = ChatRun(policy, chat_examples(policy, cfg.batch_size, prompt_tokens), cfg)
    same = dict(num_generations=cfg.num_generations, max_completion_length=cfg.max_new_tokens,
                temperature=cfg.temperature, top_p=cfg.top_p, top_k=0, beta=cfg.beta,
                epsilon=cfg.clip_eps, learning_rate=cfg.lr, weight_decay=cfg.weight_decay,
                max_grad_norm=cfg.grad_clip, num_iterations=cfg.mu, scale_rewards=cfg.adv_scale,
                loss_type=cfg.loss_type)
    # TRL defaults that differ from our loop: checkpointing and bf16 on, KL times the ratio
    switches = dict(gradient_checkpointing=False, bf16=False, use_bias_correction_kl=False,
                    lr_scheduler_type="constant",
                    per_device_train_batch_size=cfg.batch_size * cfg.num_generations)
    prompts = [ours.policy.prompt_text(ex.question) for ex in ours.examples]
    data = Dataset.from_dict({"prompt": prompts, "label": [ex.label for ex in ours.examples]})

    def reward(completions, label, completion_ids, **_):  # TRL's reward signature, our function
        examples = [train_chat.ChatExample(None, "", y) for y in label]
        return ours.reward_fn(completions, examples, [len(c) for c in completion_ids])[0].tolist()

    class Interleave(transformers.TrainerCallback):
        """After each TRL step, one of ours; TRL's time is the gap between two of ours."""

        def __init__(self):
            self.last, self.trl, self.ours = None, [], []

        def on_step_end(self, args, state, control, **kw):
            now = time.perf_counter()
            if self.last is not None:
                self.trl.append(now - self.last)
                self.ours.append(ours.step(state.global_step))
            self.last = time.perf_counter()

    cb = Interleave()
    with warnings.catch_warnings():  # transformers' deprecation notices about TRL's arguments
        warnings.simplefilter("ignore", FutureWarning)
        args = trl.GRPOConfig(output_dir=folder, max_steps=warmup + repeats + 1, use_cpu=True,
                              logging_steps=10**6, report_to="none", save_strategy="no",
                              disable_tqdm=True, seed=0, **same, **switches)
        trainer = trl.GRPOTrainer(folder, reward_funcs=reward, args=args, train_dataset=data,
                                  callbacks=[cb])
        trainer.remove_callback(transformers.PrinterCallback)
        trainer.train()
    trl_len = [h["completions/mean_length"] for h in trainer.state.log_history
               if "completions/mean_length" in h]
    ours_len = statistics.mean(ours.tokens["generate"]) / (cfg.batch_size * cfg.num_generations)
    tmp.cleanup()
    return {"ours_over_trl": stats(a / b for a, b in zip(cb.ours[warmup:], cb.trl[warmup:])),
            "ours_seconds": stats(cb.ours[warmup:]), "trl_seconds": stats(cb.trl[warmup:]),
            "trl_version": trl.__version__, "trl_switches": switches,
            "prompt_tokens": text_tokens(policy, ours.examples[0].question),
            "hyper_parameters": same | {"prompts": cfg.batch_size, "model": "tiny Qwen2 text LM"},
            "ours_phase_seconds": ours.report(warmup)["seconds"],
            "mean_completion_tokens": {"ours": ours_len, "trl": trl_len[-1] if trl_len else None}}


# ----------------------------------------------------------------------------- report

def print_chat_report(h: dict) -> None:
    """The chat parts present in `h` (bench.py --parts)."""
    if "runs" in h:
        print_step_report(h)
    for part, (fast, slow), what in (("sampling", ("loop", "hf"), "our loop vs HF generate"),
                                     ("scoring", ("shared", "unshared"),
                                      "reference + update, shared prefix vs unshared")):
        if part not in h:
            continue
        print(f"\n{part.capitalize()}: {what}; ms, and {slow} / {fast} per repeat")
        for w, r in h[part].items():
            print(f"{w:10} {fast} {fmt(r[fast], 1e3, 6, 1)}  {slow} {fmt(r[slow], 1e3, 6, 1)}  "
                  f"x {fmt(r['speedup'], 1, 5, 2)}")
    for length, t in h.get("trl", {}).items():
        if t["ours_over_trl"] is None:
            print(f"\nAgainst TRL ({length} prompts): skipped: {t['skipped']}")
            continue
        print(f"\nAgainst TRL {t['trl_version']}, {length} prompts ({t['prompt_tokens']} tokens), "
              f"same settings: {t['hyper_parameters']}\nTRL switches set to match our loop: "
              f"{t['trl_switches']}\nours {fmt(t['ours_seconds'])} s/step, TRL "
              f"{fmt(t['trl_seconds'])} s/step, ours/TRL {fmt(t['ours_over_trl'])}; mean "
              f"completion tokens {t['mean_completion_tokens']}")


def print_step_report(h: dict) -> None:
    print(f"\nChat route: B = 2 prompts x N = 6 x {h['max_new_tokens']} new tokens, beta = 0.04, "
          "mu = 1; ms per phase")
    print(f"{'run':10} " + " ".join(f"{p:>19}" for p in PHASES + ("total",))
          + f" {'gen share':>9} {'gen tok/s':>9} {'learn tok/s':>11} {'mem MB':>7}")
    for name, r in h["runs"].items():
        tps = r["tokens_per_second"]
        print(f"{name:10} " + " ".join(f"{fmt(r['seconds'][p], 1e3, 5, 1):>19}"
                                       for p in PHASES + ("total",))
              + f" {r['generate_share']:9.2f} {tps['generate']['median']:9.0f}"
              f" {tps['learn']['median']:11.0f} {r['memory_bytes']['total'] / 2**20:7.2f}")
    print("\nParameter bytes held by each chat run (full fine-tuning + a frozen reference; LoRA: "
          "the adapters-off model is the reference)")
    for name, r in h["runs"].items():
        p = r["parameter_memory"]
        print(f"{name:10} {p['held_by_run']:>10,} = base {p['base']:>9,} + adapters "
              f"{p['adapters']:>7,} + other {p['held_minus_base_minus_adapters']:>9,}")
