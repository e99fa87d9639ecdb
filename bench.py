"""What a GRPO step costs: classifier GRPO against SFT, the chat GRPO step split by phase, and the
same chat step against TRL's GRPOTrainer.

    python bench.py                          # full run, about two minutes on a 2-core CPU
    python bench.py --quick --json b.json    # toy sizes, under a minute (tests/test_bench.py)
    PYTHONPATH=. /path/to/venv-with-trl/bin/python bench.py   # adds the TRL comparison

Absolute seconds on a shared CPU are noise; the ratios are what carry from machine to machine.
How the numbers are taken, numbered:
1. Interleaved repeats: repeat r runs one step of every variant in turn (SFT, GRPO β=0, ...), so
   a slow moment of the machine hits all of them; a ratio is taken per repeat (GRPO_r / SFT_r).
   Every figure is the median of the timed repeats after `--warmup` untimed ones, with min and
   max. On CUDA the clock waits for the device.
2. Every step is a full step as the loops run it: forward, loss, backward, grad-norm clip,
   AdamW and scheduler step (`train_chat._update`). The JSON log line (~0.1 ms) is left out.
3. Classifier variants, one model and one AdamW each, same initial weights and batch (B = 8
   random 1 s clips at 16 kHz, N = 64 draws): "sft"; "grpo_beta0" (β = 0, old = detached
   current: no second model); "grpo_beta" (β = 0.04: + one no-grad forward of a frozen
   reference); "grpo_old" (β = 0.04 and an old policy refreshed every K = 4 steps by a copy, as
   `train_classifier.finetune` does: + one more no-grad forward; the copy's cost falls in the
   refresh steps and is also reported alone).
4. Memory is *counted*, not sampled (no CPU allocator exposes a peak that torch tensors obey):
   bytes of the parameters of every model a run keeps (policy, reference, old), the policy's
   gradients, the AdamW state, and the tensors autograd saves for backward during the step
   (saved_tensors_hooks, each storage once, parameters excluded): what persists into backward.
   Buffers freed inside the forward, no-grad forwards and the KV cache of generate are not in it.
5. Chat step = `train_chat.grpo_stage`'s body with a clock between its phases, on the face
   route's prompt, config and reward (`fas_experiment`): generate (prompt encoding + one batched
   `generate`), rewards (Eq. 6 on the texts, then the advantages), ref/old log-probs (no grad:
   the reference when β > 0, the old policy only when μ > 1), learn (log-probs with grad,
   grpo_loss, backward, optimizer). Images: random 112 x 112 px, 16 tokens each. Tokens/s:
   generate = sampled completion tokens (up to and including EOS) per second; learn = prompt +
   completion tokens through forward and backward per second.
6. TRL runs in the same process as ours (a callback runs one of our steps after each TRL step)
   on the same saved tiny model, prompts, reward, N, max new tokens, temperature, β, ε, lr and
   clip; TRL's time per step is everything its loop does between two of our steps.
7. One torch thread on the CPU by default (`--threads`): on a 2-core machine shared with other
   work, a 2-thread op stalls whenever one of its threads is descheduled; the spread of a step's
   time grew from about 1.5x to 4x in our runs. Ratios are what this benchmark is for.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import gc
import json
import os
import platform
import statistics
import tempfile
import time
import warnings
from contextlib import contextmanager, nullcontext
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import torch

import grpo
import train
import train_chat
from chat import ChatPolicy
from fas_experiment import PROMPT, FasConfig, reward_function
from lora import lora_modules
from models import SSLClassifier, small_wav2vec2_config
from train_classifier import ClassifierConfig, grpo_step_loss, sft_loss

PHASES = ("generate", "rewards", "ref_old_logps", "learn")
TARGETS = {"grpo_beta0": 1.05, "grpo_beta": 1.4, "grpo_old": 1.75}  # x the SFT step (issue 3)


# ----------------------------------------------------------------------------- measuring

def stats(xs) -> dict:
    xs = list(xs)
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "n": len(xs)}


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()  # the clock must not stop before the device does


def interleaved(steps: dict, repeats: int, warmup: int, device) -> dict:
    """{name: fn(r)} -> {name: [seconds]}: repeat r runs every step once, in turn (note 1)."""
    times = {name: [] for name in steps}
    for r in range(warmup + repeats):
        for name, fn in steps.items():
            sync(device)
            t = time.perf_counter()
            fn(r)
            sync(device)
            if r >= warmup:
                times[name].append(time.perf_counter() - t)
    return times


def storage_bytes(tensors) -> int:
    """Bytes of the distinct storages behind `tensors` (a view or a tied weight counts once)."""
    seen = {(t.device, t.untyped_storage().data_ptr()): t.untyped_storage().nbytes()
            for t in tensors}
    return sum(seen.values())


@contextmanager
def saved_activations(model, enabled=True):
    """Count what autograd saves for backward inside the block (note 4): yields a dict whose
    "bytes" is set at exit (None when not `enabled`: the hooks would slow a timed step).
    Parameters are saved too, but they are counted as parameters."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    kept, out = {}, {"bytes": None}

    def pack(t):
        s = t.untyped_storage()
        if s.data_ptr() not in params:
            kept[(t.device, s.data_ptr())] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t) if enabled else nullcontext():
        yield out
    out["bytes"] = sum(kept.values()) if enabled else None


def state_bytes(models, opt, activations: int) -> dict:
    """Parameters of all `models` (policy first), the policy's gradients, the AdamW state."""
    grads = [p.grad for p in models[0].parameters() if p.grad is not None]
    opt_state = [v for s in opt.state.values() for v in s.values() if torch.is_tensor(v)]
    out = {"parameters": storage_bytes([p for m in models for p in m.parameters()]),
           "gradients": storage_bytes(grads), "optimizer": storage_bytes(opt_state),
           "activations": activations}
    return out | {"total": sum(v or 0 for v in out.values())}


def live_parameter_bytes() -> int:
    """Bytes of every parameter held by any nn.Module alive in this process."""
    gc.collect()
    with warnings.catch_warnings():  # isinstance on torch's deprecated module proxies warns
        warnings.simplefilter("ignore", FutureWarning)
        mods = [o for o in gc.get_objects() if isinstance(o, torch.nn.Module)]
    return storage_bytes([p for m in mods for p in m.parameters(recurse=False)])


# ----------------------------------------------------------------------------- classifier route

def classifier_bench(size: str, device, repeats: int, warmup: int, B=8, seconds=1.0, N=64, K=4):
    """SFT vs three GRPO variants on one batch (note 3) -> times, ratios, memory."""
    build = {"tiny": SSLClassifier.tiny,
             "small": lambda: SSLClassifier.from_config(small_wav2vec2_config())}[size]
    g = torch.Generator().manual_seed(0)
    S = int(16000 * seconds)
    wav = torch.randn(B, S, generator=g).to(device)                   # (B, S)
    lengths = torch.full((B,), S, device=device)
    labels = torch.randint(0, 2, (B,), generator=g).to(device)
    base = ClassifierConfig(num_generations=N, beta=0.04, old_refresh=K, lr=1e-5)
    cfgs = dict(sft=base, grpo_beta0=dataclasses.replace(base, beta=0.0, old_refresh=1),
                grpo_beta=dataclasses.replace(base, old_refresh=1), grpo_old=base)
    runs = {}
    for name, cfg in cfgs.items():
        model = build().to(device)
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, train.warmup_lambda(0))
        frozen = name != "sft" and cfg.beta > 0  # the loop's rule: no copy when beta = 0
        runs[name] = dict(model=model, opt=opt, sched=sched, old=None, cfg=cfg,
                          ref=copy.deepcopy(model).eval().requires_grad_(False) if frozen else None)
    bf16 = base.bf16 and device.type == "cuda"

    def step(name, r, count=False):
        run, cfg = runs[name], runs[name]["cfg"]
        model = run["model"]
        if name == "grpo_old" and r % K == 0:  # pi_old <- pi_theta, as the loop does it
            run["old"] = copy.deepcopy(model).eval().requires_grad_(False)
        model.train()
        with saved_activations(model, count) as act, train.autocast(device, bf16):
            if name == "sft":
                loss, _ = sft_loss(model, wav, lengths, labels, cfg)
            else:
                gen = torch.Generator(device=device).manual_seed(train.seed_for(0, r, 2))
                loss, _ = grpo_step_loss(model, wav, lengths, labels, cfg, gen, run["ref"], run["old"])
        train_chat._update(loss, r, Path("bench"), list(model.parameters()), run["opt"],
                           run["sched"], cfg)
        models = [m for m in (model, run["ref"], run["old"]) if m is not None]
        run["memory"] = state_bytes(models, run["opt"], act["bytes"])

    times = interleaved({n: (lambda r, n=n: step(n, r)) for n in runs}, repeats, warmup, device)
    for name in runs:  # one more step each, counted (the hooks would slow the timed ones)
        step(name, warmup + repeats, count=True)
    t = time.perf_counter()
    copy.deepcopy(runs["grpo_old"]["model"])
    return {"params": sum(p.numel() for p in runs["sft"]["model"].parameters()),
            "seconds": {n: stats(v) for n, v in times.items()},
            "over_sft": {n: stats(a / b for a, b in zip(times[n], times["sft"]))
                         for n in runs if n != "sft"},
            "old_refresh_seconds": time.perf_counter() - t,
            "memory_bytes": {n: run["memory"] for n, run in runs.items()}}


# ----------------------------------------------------------------------------- chat route

def chat_examples(modality: str, B: int) -> list:
    media = [None] * B
    if modality == "image":
        from PIL import Image
        rng = np.random.default_rng(0)
        media = [Image.fromarray(rng.integers(0, 256, (112, 112, 3), dtype=np.uint8))
                 for _ in range(B)]
    return [train_chat.ChatExample(m, PROMPT, ("real", "fake")[i % 2]) for i, m in enumerate(media)]


def chat_config(quick: bool, **over) -> FasConfig:
    """The face route's config (its reward: Eq. 6 with L = 1200 characters) at bench sizes."""
    return FasConfig(batch_size=2, num_generations=6, max_new_tokens=8 if quick else 32,
                     beta=0.04, lr=5e-6, **over)


class ChatRun:
    """One policy + its GRPO state, stepping as `train_chat.grpo_stage` does (note 5)."""

    def __init__(self, policy, examples, cfg):
        self.policy, self.examples, self.cfg = policy, examples, cfg
        self.reward_fn = reward_function(cfg)
        # the loop's rule: a frozen copy only for full fine-tuning with beta > 0
        self.reference = policy.frozen_copy() if cfg.beta > 0 and cfg.lora_r == 0 else None
        self.params = [p for p in policy.model.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(self.params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, train.warmup_lambda(0))
        self.phases, self.tokens = {p: [] for p in PHASES}, {"generate": [], "learn": []}
        self.memory = None  # state_bytes of the counted step

    def step(self, r: int, count: bool = False) -> float:
        policy, cfg, device = self.policy, self.cfg, self.policy.device
        N, bf16 = cfg.num_generations, cfg.bf16 and device.type == "cuda"
        clock = [time.perf_counter()]

        def lap():
            sync(device)
            clock.append(time.perf_counter())

        rollout = policy.generate(train_chat._encode(policy, self.examples), N, cfg.max_new_tokens,
                                  cfg.temperature, cfg.top_p, seed=train.seed_for(cfg.seed, r))
        lap()
        mask = rollout.completion_mask                                        # (B*N, T)
        group_ex = [ex for ex in self.examples for _ in range(N)]
        rewards, _ = self.reward_fn(rollout.texts, group_ex, mask.sum(1))   # (B*N,)
        advantages = grpo.group_advantages(rewards.to(device), N, scale=cfg.adv_scale)
        lap()
        with torch.no_grad(), train.autocast(device, bf16):
            old = (policy.completion_logps(rollout, cfg.temperature, cfg.logp_chunk, False)
                   if cfg.mu > 1 else None)
            ref = (policy.reference_logps(rollout, cfg.temperature, cfg.logp_chunk, self.reference)
                   if cfg.beta > 0 else None)
        lap()
        for _ in range(cfg.mu):
            with saved_activations(policy.model, count) as act, train.autocast(device, bf16):
                logps = policy.completion_logps(rollout, cfg.temperature, cfg.logp_chunk)
            loss, _ = grpo.grpo_loss(logps, advantages, mask, old_logps=old, ref_logps=ref,
                                     clip_eps=cfg.clip_eps, beta=cfg.beta, loss_type=cfg.loss_type,
                                     max_completion_length=cfg.max_new_tokens)
            train_chat._update(loss, r, Path("bench"), self.params, self.opt, self.sched, cfg)
        lap()
        if count:  # the counted step is not a timed one
            models = [policy.model] + ([self.reference.model] if self.reference else [])
            self.memory = state_bytes(models, self.opt, act["bytes"])
            return clock[-1] - clock[0]
        for phase, a, b in zip(PHASES, clock, clock[1:]):
            self.phases[phase].append(b - a)
        self.tokens["generate"].append(int(mask.sum()))
        self.tokens["learn"].append(cfg.mu * (mask.numel() + rollout.batch["input_ids"].numel()))
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
        runs[name] = ChatRun(train_chat.load_policy(cfg, "tiny", modality, lora=r > 0),
                             chat_examples(modality, cfg.batch_size), cfg)
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


# ----------------------------------------------------------------------------- against TRL

def trl_bench(repeats: int, warmup: int, quick: bool) -> dict:
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
    ours = ChatRun(ChatPolicy.from_pretrained(folder, "text"), chat_examples("text", 2), cfg)
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
            "hyper_parameters": same | {"prompts": cfg.batch_size, "model": "tiny Qwen2 text LM"},
            "ours_phase_seconds": ours.report(warmup)["seconds"],
            "mean_completion_tokens": {"ours": ours_len, "trl": trl_len[-1] if trl_len else None}}


# ----------------------------------------------------------------------------- report

def fmt(s: dict, scale=1.0, w=7, d=3) -> str:
    return f"{s['median'] * scale:{w}.{d}f} [{s['min'] * scale:.{d}f}, {s['max'] * scale:.{d}f}]"


def print_report(res: dict) -> None:
    m, c, h = res["machine"], res["classifier"], res["chat"]
    print(f"{m['device']}, {m['threads']} torch thread(s), load average {m['load_average']}, "
          f"torch {m['torch']}; median [min, max] of {res['settings']['repeats']} interleaved "
          f"repeats after {res['settings']['warmup']} warm-up")
    print(f"\nClassifier route: B = 8 random 1 s clips, N = 64, old refreshed every K = 4; "
          f"targets x SFT: {TARGETS}")
    print(f"{'model':6} {'variant':11} {'step ms':>22} {'x SFT':>24} {'memory MB':>10}")
    for size, r in c["models"].items():
        for v, s in r["seconds"].items():
            ratio = fmt(r["over_sft"][v]) if v in r["over_sft"] else ""
            print(f"{size:6} {v:11} {fmt(s, 1e3, d=1):>22} {ratio:>24} "
                  f"{r['memory_bytes'][v]['total'] / 2**20:10.2f}")
        print(f"{size:6} {r['params'] / 1e6:.2f} M parameters; refreshing the old policy (a copy) "
              f"takes {r['old_refresh_seconds'] * 1e3:.1f} ms every K steps")
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
    t = h["trl"]
    if t["ours_over_trl"] is None:
        print(f"\nAgainst TRL: skipped: {t['skipped']}")
        return
    print(f"\nAgainst TRL {t['trl_version']}, same settings: {t['hyper_parameters']}\n"
          f"TRL switches set to match our loop: {t['trl_switches']}\n"
          f"ours {fmt(t['ours_seconds'])} s/step, TRL {fmt(t['trl_seconds'])} s/step, "
          f"ours/TRL {fmt(t['ours_over_trl'])} (target <= 0.5); mean completion tokens "
          f"{t['mean_completion_tokens']}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="toy sizes, under a minute")
    p.add_argument("--json", help="also write the numbers to this JSON file")
    p.add_argument("--repeats", type=int, help="timed repeats (default 20, quick 3)")
    p.add_argument("--warmup", type=int, help="untimed repeats first (default 3, quick 1)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (note 7; 0: torch's choice)")
    args = p.parse_args(argv)
    args.repeats = args.repeats or (3 if args.quick else 20)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.quick else 3)
    device = train.pick_device(args.device)
    if args.threads and device.type == "cpu":
        torch.set_num_threads(args.threads)
    cpu = f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"
    res = {"machine": {"device": torch.cuda.get_device_name() if device.type == "cuda" else cpu,
                       "threads": torch.get_num_threads(), "torch": torch.__version__,
                       "load_average": round(os.getloadavg()[0], 1)},
           "settings": {"repeats": args.repeats, "warmup": args.warmup, "quick": args.quick}}
    sizes = ("tiny",) if args.quick else ("tiny", "small")
    models = {s: classifier_bench(s, device, args.repeats, args.warmup) for s in sizes}
    res["classifier"] = {"models": models, "targets": TARGETS} | {
        f"grpo_over_sft_{v}": {s: models[s]["over_sft"][f"grpo_{v}"] for s in sizes}
        for v in ("beta0", "beta", "old")}
    runs = chat_bench(device, args.quick, args.repeats, args.warmup)
    trl_part = (trl_bench(args.repeats, args.warmup, args.quick) if find_spec("trl") else
                {"ours_over_trl": None, "skipped": "trl is not installed here (pip install '.[bench]', "
                 "or run bench.py with a Python that has it, the repo on PYTHONPATH)"})
    res["chat"] = {"max_new_tokens": chat_config(args.quick).max_new_tokens, "runs": runs,
                   "phase_seconds": {n: r["seconds"] for n, r in runs.items()},
                   "generate_share": {n: r["generate_share"] for n, r in runs.items()},
                   "ours_over_trl": trl_part["ours_over_trl"], "trl": trl_part}
    print_report(res)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
