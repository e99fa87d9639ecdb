"""What a GRPO step costs: classifier GRPO against SFT, the chat GRPO step split by phase, our
decode loop against HF generate, shared-prefix scoring against unshared, and the chat step
against TRL's GRPOTrainer at two prompt lengths (the chat parts live in bench_chat.py).

    python bench.py                          # full run, about five minutes on a 2-core CPU
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
   Buffers freed inside the forward, no-grad forwards and the KV cache of sampling are not in it.
5. Chat step = `train_chat.grpo_step` (what `grpo_stage` runs) with a clock between its phases,
   on the face route's prompt, config and reward (`fas_experiment`): generate (prompt encoding +
   our decode loop, `sampling.sample`), rewards (Eq. 6 on the texts, then the advantages),
   ref/old log-probs (no grad: the reference when β > 0, the old policy only when μ > 1), learn
   (log-probs with grad, grpo_loss, backward, optimizer); scoring shares each prompt's prefix.
   Images: random 112 x 112 px, 16 tokens each. Tokens/s: generate = sampled completion tokens
   (up to and including EOS) per second; learn = prompt + completion tokens through forward and
   backward per second (a shared prompt counted N times, as an unshared pass would run it).
6. TRL runs in the same process as ours (a callback runs one of our steps after each TRL step)
   on the same saved tiny model, prompts, reward, N, max new tokens, temperature, β, ε, lr and
   clip; TRL's time per step is everything its loop does between two of our steps. Twice: with
   the short prompt (74 tokens) and with 256-token prompts (text only: TRL's image path needs a
   torchvision build that does not run here).
7. One torch thread on the CPU by default (`--threads`): on a 2-core machine shared with other
   work, a 2-thread op stalls whenever one of its threads is descheduled; the spread of a step's
   time grew from about 1.5x to 4x in our runs. Ratios are what this benchmark is for.
8. Sampling: `ChatPolicy.generate` with sampler "loop" (one prefill per distinct prompt, the
   cache repeated N times, `sampling.sample`) and "hf" (HF `generate`, num_return_sequences=N),
   interleaved, same prompts, N, new tokens and temperature, on the tiny text model with short
   and 256-token prompts, the image model (112 x 112 px images) and the audio model (1 s clips).
   Each side draws its own tokens (different RNGs), so completion lengths can differ a little.
9. Scoring: on one fixed rollout per workload, the reference pass (no grad, a frozen copy) and
   the update pass (log-probs with grad, grpo_loss, backward), `shared_prefix` True vs False.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import json
import os
import platform
import time
from importlib.util import find_spec
from pathlib import Path

import torch
import transformers

import train
import train_chat
from bench_chat import chat_bench, chat_config, print_chat_report, sampling_bench, scoring_bench, \
    trl_bench
from measure import fmt, interleaved, saved_activations, state_bytes, stats
from models import SSLClassifier, small_wav2vec2_config
from train_classifier import ClassifierConfig, grpo_step_loss, label_generators, sft_loss

PARTS = ("classifier", "step", "sampling", "scoring", "trl")  # what --parts can select
TARGETS = {"grpo_beta0": 1.05, "grpo_beta": 1.4, "grpo_old": 1.75}  # x the SFT step (issue 3)


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
        quiet = train.dropout_off(model) if name != "sft" else contextlib.nullcontext()
        with saved_activations(model, count) as act, train.autocast(device, bf16), quiet:
            if name == "sft":
                loss, _ = sft_loss(model, wav, lengths, labels, cfg)
            else:
                gens = label_generators(cfg, r, range(len(labels)), device)
                loss, _ = grpo_step_loss(model, wav, lengths, labels, cfg, gens, run["ref"],
                                         run["old"])
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


# ----------------------------------------------------------------------------- report

def print_report(res: dict) -> None:
    m = res["machine"]
    print(f"{m['device']}, {m['threads']} torch thread(s), load average {m['load_average']}, "
          f"torch {m['torch']}, transformers {m['transformers']}; median [min, max] of "
          f"{res['settings']['repeats']} interleaved repeats after {res['settings']['warmup']} "
          "warm-up")
    if "classifier" in res:
        print_classifier_report(res["classifier"])
    if "chat" in res:
        print_chat_report(res["chat"])


def print_classifier_report(c: dict) -> None:
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


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="toy sizes, under a minute")
    p.add_argument("--json", help="also write the numbers to this JSON file")
    p.add_argument("--repeats", type=int, help="timed repeats (default 20, quick 3)")
    p.add_argument("--warmup", type=int, help="untimed repeats first (default 3, quick 1)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (note 7; 0: torch's choice)")
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, some of {PARTS}")
    args = p.parse_args(argv)
    args.repeats = args.repeats or (3 if args.quick else 20)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.quick else 3)
    device = train.pick_device(args.device)
    if args.threads and device.type == "cpu":
        torch.set_num_threads(args.threads)
    cpu = f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"
    res = {"machine": {"device": torch.cuda.get_device_name() if device.type == "cuda" else cpu,
                       "threads": torch.get_num_threads(), "torch": torch.__version__,
                       "transformers": transformers.__version__,
                       "load_average": round(os.getloadavg()[0], 1)},
           "settings": {"repeats": args.repeats, "warmup": args.warmup, "quick": args.quick}}
    parts = set(args.parts.split(","))
    if parts - set(PARTS):
        raise SystemExit(f"--parts: unknown {sorted(parts - set(PARTS))}; expected some of {PARTS}")
    if "classifier" in parts:
        sizes = ("tiny",) if args.quick else ("tiny", "small")
        models = {s: classifier_bench(s, device, args.repeats, args.warmup) for s in sizes}
        res["classifier"] = {"models": models, "targets": TARGETS} | {
            f"grpo_over_sft_{v}": {s: models[s]["over_sft"][f"grpo_{v}"] for s in sizes}
            for v in ("beta0", "beta", "old")}
    chat = {"max_new_tokens": chat_config(args.quick).max_new_tokens}
    if "step" in parts:
        runs = chat_bench(device, args.quick, args.repeats, args.warmup)
        chat |= {"runs": runs, "phase_seconds": {n: r["seconds"] for n, r in runs.items()},
                 "generate_share": {n: r["generate_share"] for n, r in runs.items()}}
    if "sampling" in parts:
        chat["sampling"] = sampling_bench(device, args.quick, args.repeats, args.warmup)
    if "scoring" in parts:
        chat["scoring"] = scoring_bench(device, args.quick, args.repeats, args.warmup)
    if "trl" in parts:
        chat["trl"] = {length: (trl_bench(args.repeats, args.warmup, args.quick, tokens)
                                if find_spec("trl") else
                                {"ours_over_trl": None, "skipped": "trl is not installed here (run "
                                 "bench.py with a Python that has it, the repo on PYTHONPATH)"})
                       for length, tokens in (("short", None), ("256", 256))}
        chat["ours_over_trl"] = {k: t["ours_over_trl"] for k, t in chat["trl"].items()}
    if len(chat) > 1:
        res["chat"] = chat
    print_report(res)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
