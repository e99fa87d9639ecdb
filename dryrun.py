"""Real-size dry run: every real architecture of the recipes, built from its published
configuration with random weights and no download (real_models.py); the memory each recipe
keeps, counted on the meta device; the LoRA targets on the real module trees; one real GRPO step
on the CPU.

    python dryrun.py                      # counts and checks: seconds, nothing allocated
    python dryrun.py --step classifier    # one GRPO step of XLS-R 300M, 4 s clip (~8 GB RAM)
    python dryrun.py --step chat          # one GRPO step of Qwen2.5-VL-7B, bf16 + LoRA (~19 GB)
    python dryrun.py --step chat --chat_recipe configs/hir_qwen2audio7b.json   # Qwen2-Audio-7B

Not run by the tests (tests/test_dryrun.py checks the machinery on tiny models of the same
classes). Notes, numbered:
1. Bytes = numel x element size of meta tensors; storages on the meta device have no address,
   so tensors are told apart by identity (a tied weight counts once).
2. Counted, not assumed: gradients are meta tensors like their parameters (autograd keeps them
   in the parameter's dtype); the AdamW state is what `torch.optim.AdamW`, built as the loops
   build it, holds after one real `step()` on those gradients (its per-tensor `step` counters are
   CPU scalars, not device memory, and are left out); reference / old-policy copies are
   `copy.deepcopy` of the policy, made by the loops' rules; the LoRA adapters are the project's
   own `lora.apply_lora` on the meta model; the HIR recipe's LLM judge is built and counted too.
3. Activations are not counted: the scoring-pass rows of the chat recipes are docs/face.md's
   arithmetic with the sizes read from the built config and the recipe (R = B*N rows, P prompt
   tokens, T = max_new_tokens, c = logp_chunk). P = media tokens (chat.image_token_count at
   max_pixels, chat.audio_token_count at max_audio_seconds) + an estimate of the text tokens
   (the real tokenizer is not available offline: 16 template tokens + 4 characters per token).
   The KV-cache row assumes the prompt repeated in each of the R rows, as HF generate does.
4. The chat step builds the 7B weights directly in the recipe's dtype (real_models.materialize:
   meta, `to_empty`, transformers' own init in place; never a float32 copy) and runs it with the
   stand-in tokenizer (real_models.stand_in_tokenizer). XLS-R 300M is built by
   `SSLClassifier.from_config` in float32, as the classifier route builds a random encoder.
5. Stand-in reward in the chat step: a random model's text earns the same reward everywhere,
   and equal rewards give zero advantages and, at step 0 (policy = reference), a zero gradient.
   The first completion of each group gets 1, the others 0, so the update is exercised.
   LoRA starts with B = 0, so "the adapters moved" means some B entries are no longer 0.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import os
import resource
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import nn
from transformers import Qwen2VLImageProcessorPil, Wav2Vec2Model, WhisperFeatureExtractor

import train
import train_chat
from chat import DEFAULT_SYSTEM, MEDIA_TOWERS, ChatPolicy, audio_token_count, image_token_count
from eval import format_table
from lora import EXCLUDE, TARGET_MODULES, apply_lora, lora_modules
from models import SSLClassifier
from real_models import (PUBLISHED, materialize, meta_model, published_config,
                         stand_in_tokenizer)
from train_classifier import grpo_step_loss, label_generators

RECIPES = ("configs/classifier_xlsr2b_dfe24.json", "configs/fas_qwen25vl7b.json",
           "configs/hir_qwen2audio7b.json")
GB, GIB = 1e9, 2**30  # memory tables in GB (as docs/face.md), resident memory in GiB (as free -g)

# ----------------------------------------------------------------------------- counting

def nbytes(tensors) -> int:
    """Bytes of distinct tensors, numel x element size (note 1)."""
    return sum(t.numel() * t.element_size() for t in {id(t): t for t in tensors}.values())


def adamw_state(params: list, lr: float, weight_decay: float) -> list:
    """AdamW's state tensors after one step on (meta) gradients, as the loops build it (note 2)."""
    for p in params:
        p.grad = torch.empty_like(p)  # the parameter's dtype, as autograd accumulates it
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    opt.step()
    return [v for s in opt.state.values() for v in s.values() if v.device == params[0].device]


def dtype_name(tensors) -> str:
    return "/".join(sorted({str(t.dtype).removeprefix("torch.") for t in tensors}))


def load_recipe(path: str):
    """(route, resolved config dataclass) of a JSON recipe, as `train.py --recipe` resolves it."""
    try:
        recipe = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise SystemExit(f"{path}: cannot read the recipe ({e})")
    route = recipe.get("route", "classifier")
    module_name, cls_name, _ = train.ROUTES[route]
    return route, train.config_from_args(getattr(__import__(module_name), cls_name), [], recipe)


def chat_dtype(cfg):
    return getattr(torch, cfg.dtype) if cfg.dtype else None


def policy_model(route: str, cfg, config=None) -> nn.Module:
    """The recipe's policy on the meta device, set up for training as its loop sets it up;
    `config` replaces the published configuration of cfg.model (the tests' tiny models)."""
    config = config or published_config(cfg.model)
    if route == "classifier":
        with torch.device("meta"):
            return SSLClassifier(Wav2Vec2Model(config), head=cfg.head,
                                 freeze_feature_encoder=cfg.freeze_feature_encoder)
    model = meta_model(config, chat_dtype(cfg))
    if cfg.lora_r > 0:
        apply_lora(model, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, seed=cfg.seed)
    else:  # full fine-tuning: the media encoder stays frozen (chat.py, freeze_vision)
        for name, p in model.named_parameters():
            p.requires_grad_(not any(part in MEDIA_TOWERS for part in name.split(".")))
    return model


def kept_copies(route: str, cfg) -> dict:
    """{row label: kept?} for the policy copies a run holds, by the loops' rules."""
    if route == "classifier":  # train_classifier.finetune
        return {"reference policy (a copy, when beta > 0)": cfg.beta > 0,
                "old policy (a copy, when old_refresh > 1)": cfg.old_refresh > 1}
    # train_chat.grpo_stage: with LoRA the adapters-off model is the reference, old = current
    return {"reference policy (a copy, full fine-tuning with beta > 0)":
            cfg.beta > 0 and cfg.lora_r == 0}


def training_state(route: str, cfg, config=None) -> list:
    """[(key, label, bytes)] of everything the recipe's run keeps between steps (note 2)."""
    model = policy_model(route, cfg, config)
    adapters = [p for m in lora_modules(model).values() for p in (m.lora_A.weight, m.lora_B.weight)]
    adapter_ids = {id(p) for p in adapters}
    base = [p for p in model.parameters() if id(p) not in adapter_ids]
    trainable = [p for p in model.parameters() if p.requires_grad]
    state = adamw_state(trainable, cfg.lr, cfg.weight_decay)
    rows = [("weights", f"policy weights ({dtype_name(base)}, {sum(p.requires_grad for p in base)}"
             f" of {len(base)} tensors trainable)", nbytes(base))]
    if adapters:
        rows.append(("adapters", f"LoRA adapters A, B ({dtype_name(adapters)})", nbytes(adapters)))
    rows += [("grads", f"gradients ({dtype_name(trainable)})", nbytes(p.grad for p in trainable)),
             ("adamw", f"AdamW state ({dtype_name(state)})", nbytes(state))]
    if adapters:
        rows.append(("lora", "  LoRA: adapters + gradients + AdamW", sum(r[2] for r in rows[1:])))
    for label, kept in kept_copies(route, cfg).items():
        rows.append(("copy", label, nbytes(copy.deepcopy(model).parameters()) if kept else 0))
    if route == "hir" and cfg.judge == "llm":  # hir_experiment loads it beside the policy
        judge = meta_model(published_config(cfg.judge_model), chat_dtype(cfg))
        rows.append(("judge", f"LLM judge {cfg.judge_model} ({dtype_name(judge.parameters())}, "
                     "frozen)", nbytes(judge.parameters())))
    total = sum(b for key, _, b in rows if key != "lora")
    return rows + [("state", "training state (counted)", total)]


def prompt_tokens(route: str, cfg, config) -> int:
    """P: media tokens at the recipe's cap + estimated text tokens (note 3)."""
    if route == "fas":
        v = config.vision_config
        unit = v.patch_size * v.spatial_merge_size  # one image token per unit x unit pixels
        side = unit * math.isqrt(cfg.max_pixels // unit**2) // v.patch_size  # patches per side
        media = int(image_token_count(torch.tensor([[1, side, side]]), v.spatial_merge_size)[0])
        question = cfg.prompt
    else:
        from hir_data import COT_QUESTION
        media = int(audio_token_count(torch.tensor(int(cfg.max_audio_seconds * 100))))  # 100 mel/s
        question = COT_QUESTION
    return media + 16 + math.ceil(len(DEFAULT_SYSTEM + question) / 4)


def scoring_rows(route: str, cfg, state_bytes: int) -> list:
    """docs/face.md's arithmetic for sampling and scoring, sizes from the config (note 3)."""
    config = published_config(cfg.model)
    tc = config.text_config
    L, H, V = tc.num_hidden_layers, tc.hidden_size, tc.vocab_size
    head_dim = getattr(tc, "head_dim", None) or H // tc.num_attention_heads
    R, T, c, P = cfg.batch_size * cfg.num_generations, cfg.max_new_tokens, cfg.logp_chunk, \
        prompt_tokens(route, cfg, config)
    w = torch.empty(0, dtype=chat_dtype(cfg)).element_size()  # weights / activations dtype
    kv = R * (P + T) * L * 2 * tc.num_key_value_heads * head_dim * w
    inputs, logsm, chunk = R * (P + T) * H * w * L, R * T * V * 4, c * T * V * (w + 3 * 4)
    return [("kv", f"sampling: KV cache, R = {R} rows x (P = {P} + T = {T}) tokens", kv),
            ("inputs", "scoring: checkpointed layer inputs, kept until backward", inputs),
            ("logsm", "scoring: log-softmax outputs kept for backward (float32)", logsm),
            ("chunk", f"scoring, transient: one logits chunk of c = {c} rows", chunk),
            ("scoring", "peak while scoring: state + inputs + log-softmax + chunk",
             state_bytes + inputs + logsm + chunk),
            ("sampling", "peak while sampling: state + KV cache", state_bytes + kv)]


# docs/face.md's estimates before this dry run ("What fits in 80 GB"), in GB.
ESTIMATE_GB = {"fas_qwen25vl7b.json": {
    "weights": "16.6", "lora": "2.6", "kv": "2.8", "inputs": "9.8", "logsm": "22.4",
    "chunk": "~10 (+ a layer)", "scoring": "≈ 61", "sampling": "≈ 22"}}


def memory_table(path: str) -> tuple[str, dict]:
    route, cfg = load_recipe(path)
    rows = training_state(route, cfg)
    if route != "classifier":
        rows += scoring_rows(route, cfg, rows[-1][2])
    estimate = ESTIMATE_GB.get(Path(path).name, {})
    how = dict(kv="formula", inputs="formula", logsm="formula", chunk="formula",
               scoring="sum", sampling="sum")
    head = (f"{path}: {cfg.model}, N = {cfg.num_generations}, beta = {cfg.beta}"
            + (f", old policy every {cfg.old_refresh} steps" if route == "classifier" else
               f", LoRA r = {cfg.lora_r}, mu = {cfg.mu}"))
    table = format_table(["item", "how", "GB", "estimate GB"],
                         [[label, how.get(key, "counted"), f"{b / GB:.2f}",
                           estimate.get(key, "")] for key, label, b in rows])
    return f"{head}\n{table}", {label: b for _, label, b in rows}


# ----------------------------------------------------------------------------- LoRA targets

def lora_target_check(model: nn.Module, targets=TARGET_MODULES, exclude=EXCLUDE) -> dict:
    """Where the adapters sit on an adapted model's real module tree; `problems` lists a target
    that matches nothing, a layer that misses one, an adapter or a trainable tensor in an
    excluded part (media towers, projector, lm_head)."""
    def parts(name):
        return name.split(".")
    adapted = list(lora_modules(model))
    problems = [f"target {t!r} matches no module" for t in targets
                if not any(parts(n)[-1] == t for n in adapted)]
    problems += [f"adapter inside an excluded part: {n}" for n in adapted
                 if any(p in exclude for p in parts(n))]
    problems += [f"trainable tensor inside an excluded part: {n}"
                 for n, p in model.named_parameters()
                 if p.requires_grad and any(q in exclude for q in parts(n))]
    layers = {}
    for n in adapted:
        layers.setdefault(n.rsplit(".", 2)[0], set()).add(parts(n)[-1])
    problems += [f"{layer} lacks {sorted(set(targets) - got)}" for layer, got in layers.items()
                 if set(targets) - got]
    left_out = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)
                and parts(n)[-1] in targets and n not in adapted]
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return dict(adapted=len(adapted), layers=len(layers), left_out=left_out, trainable=trainable,
                problems=problems)


def lora_report(path: str) -> tuple[str, dict]:
    route, cfg = load_recipe(path)
    check = lora_target_check(policy_model(route, cfg))
    towers = sorted({n.split(".")[1] for n in check["left_out"]})
    text = (f"{path}: {check['adapted']} adapted linears in {check['layers']} blocks "
            f"({', '.join(TARGET_MODULES)}), {check['trainable']:,} trainable parameters; "
            f"{len(check['left_out'])} same-named linears left out, in {', '.join(towers)}; "
            + ("OK" if not check["problems"] else "PROBLEMS: " + "; ".join(check["problems"])))
    return text, check


# ----------------------------------------------------------------------------- one real step

def peak_rss_gib() -> float:
    """Peak resident memory of this process so far (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB


def available_bytes() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            line = next(line for line in f if line.startswith("MemAvailable"))
        return int(line.split()[1]) * 1024  # kB
    except (OSError, StopIteration):
        return None


def classifier_step(cfg, config, out: Path, seconds: float = 4.0, seed: int = 0) -> dict:
    """One GRPO step of a Wav2Vec2 classifier built from `config` on one random clip with the
    recipe's settings, as train_classifier.finetune runs it (its rules for the copies)."""
    model = SSLClassifier.from_config(config, head=cfg.head, seed=seed,
                                      gradient_checkpointing=cfg.gradient_checkpointing,
                                      freeze_feature_encoder=cfg.freeze_feature_encoder)
    ref = copy.deepcopy(model).eval().requires_grad_(False) if cfg.beta > 0 else None
    old = copy.deepcopy(model).eval().requires_grad_(False) if cfg.old_refresh > 1 else None
    S = int(seconds * cfg.sample_rate)
    wav = torch.randn(1, S, generator=torch.Generator().manual_seed(seed))          # (1, S)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    watched = model.encoder.encoder.layers[-1].feed_forward.output_dense.weight
    before = watched.detach().clone()
    t0, c0 = time.perf_counter(), time.process_time()
    model.train()
    gen = label_generators(cfg, 0, range(1), torch.device("cpu"))
    label = torch.tensor([1])                                                        # real
    with train.dropout_off(model):  # as the loop: GRPO's policy without dropout
        loss, stats = grpo_step_loss(model, wav, torch.tensor([S]), label, cfg, gen, ref, old)
    value = train.check_finite(loss, 0, out)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = float(torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip))
    opt.step()
    moved = float((watched.detach() - before).abs().max())
    assert math.isfinite(value) and moved > 0, (value, moved)
    return dict(seconds=time.perf_counter() - t0, cpu_seconds=time.process_time() - c0,
                loss=value, reward=float(stats["reward"]), grad_norm=grad_norm,
                last_layer_max_change=moved, copies=int(ref is not None) + int(old is not None))


def chat_example(route: str, cfg, seed: int = 0, question: str | None = None):
    """(modality, processor, example): a 56 x 56 px image or 1 s of audio, and `question` (None:
    the route's own). Processors take the published preprocessor_config.json values (+ caps)."""
    rng = np.random.default_rng(seed)
    if route == "fas":
        from PIL import Image
        image = Image.fromarray(rng.integers(0, 256, (56, 56, 3), dtype=np.uint8))
        processor = Qwen2VLImageProcessorPil(min_pixels=cfg.min_pixels, max_pixels=cfg.max_pixels)
        return "image", processor, train_chat.ChatExample(image, question or cfg.prompt, "real")
    from hir_data import COT_QUESTION
    processor = WhisperFeatureExtractor(feature_size=128, sampling_rate=16000, hop_length=160,
                                        n_fft=400, chunk_length=30)
    audio = (0.1 * rng.standard_normal(16000)).astype(np.float32)
    return "audio", processor, train_chat.ChatExample(audio, question or COT_QUESTION, "real")


@contextmanager
def timed_calls(obj, names, seconds: dict, report=None):
    """Add to seconds[name] the time of each top-level call of obj.<name> inside the block
    (instance attributes shadow the methods; a call made inside a timed one is not counted);
    report(name, seconds) after each, if given."""
    depth = [0]

    def wrap(name, method):
        def timed(*args, **kwargs):
            depth[0] += 1
            t = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                depth[0] -= 1
                if depth[0] == 0:
                    seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - t
                    if report is not None:
                        report(name, time.perf_counter() - t)
        return timed

    for name in names:
        setattr(obj, name, wrap(name, getattr(obj, name)))
    try:
        yield seconds
    finally:
        for name in names:
            delattr(obj, name)


def progress(what: str, seconds: float) -> None:
    """One line per finished phase of a long step, so a run cut short still tells how far it got."""
    print(f"{what}: {seconds:.0f} s, peak RSS {peak_rss_gib():.2f} GiB", flush=True)


def chat_step(route: str, cfg, config, out: Path, N: int = 2, max_new_tokens: int = 8,
              seed: int = 0, question: str | None = None, system: str = DEFAULT_SYSTEM) -> dict:
    """One `train_chat.grpo_stage` step of a model built from `config` in the recipe's dtype,
    with the recipe's LoRA and gradient checkpointing, on one prompt (notes 4, 5)."""
    t0 = time.perf_counter()
    model = materialize(meta_model(config, chat_dtype(cfg)), seed)
    apply_lora(model, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, seed=cfg.seed)
    model.activation_checkpointing_enable({"use_reentrant": False})  # as ChatPolicy sets it up
    built_rss = peak_rss_gib()
    progress("built, initialised, LoRA applied", time.perf_counter() - t0)
    modality, processor, example = chat_example(route, cfg, seed, question)
    policy = ChatPolicy(model, stand_in_tokenizer(), processor, modality, name_or_path=cfg.model,
                        system=system)
    cfg = dataclasses.replace(cfg, batch_size=1, num_generations=N, max_new_tokens=max_new_tokens,
                              device="cpu", out_dir=str(out), seed=seed, resume="")

    def reward_fn(texts, examples, lengths):  # note 5: the first sample of each group wins
        r = torch.tensor([float(i % N == 0) for i in range(len(texts))])
        return r, {"stand_in": r}

    phases = {}
    t0, c0 = time.perf_counter(), time.process_time()
    timed = ("generate", "reference_logps", "completion_logps", "save")
    with timed_calls(policy, timed, phases, progress):
        train_chat.grpo_stage(policy, [example], reward_fn, cfg, out, steps=1)
    total, cpu = time.perf_counter() - t0, time.process_time() - c0
    log = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    B = [m.lora_B.weight for m in lora_modules(model).values()]
    moved = sum(int((b != 0).sum()) for b in B) / sum(b.numel() for b in B)
    assert math.isfinite(log["loss"]) and moved > 0, (log["loss"], moved)
    phases["rest: rewards, backward (with recomputation), AdamW"] = total - sum(phases.values())
    return dict(model=cfg.model, dtype=cfg.dtype, lora_r=cfg.lora_r, N=N, new_tokens=max_new_tokens,
                prompt_tokens=int(policy.encode_prompts([example.media], [example.question])
                                  ["input_ids"].shape[1]), seconds=total, cpu_seconds=cpu,
                phases=phases, loss=log["loss"], kl=log.get("kl"), grad_norm=log["grad_norm"],
                adapters_B_moved_share=moved, rss_after_build_gib=built_rss)


def run_step(args) -> str:
    """Build, check the machine has the memory, run one step; report time and peak RSS."""
    out = Path(args.out_dir) / f"step_{args.step}"
    load = os.getloadavg()
    if args.step == "classifier":
        _, cfg = load_recipe(args.classifier_recipe)
        res = dict(model=args.classifier_model) | classifier_step(
            cfg, published_config(args.classifier_model), out, args.seconds)
    else:
        route, cfg = load_recipe(args.chat_recipe)
        need = sum(b for key, _, b in training_state(route, cfg)
                   if key in ("weights", "adapters", "grads", "adamw"))
        free = available_bytes()
        if free is not None and need + GIB > free:
            raise SystemExit(f"{args.chat_recipe}: the step needs {need / GIB:.1f} GiB for weights "
                             f"and LoRA state (+1 GiB), {free / GIB:.1f} GiB are available")
        res = chat_step(route, cfg, published_config(cfg.model), out, question=args.question,
                        system=args.system)
    res |= dict(peak_rss_gib=peak_rss_gib(), load_before=load, load_after=os.getloadavg())
    return json.dumps(res, indent=1)


# ----------------------------------------------------------------------------- report

def parameter_table() -> tuple[str, bool]:
    rows, ok = [], True
    for name, pub in PUBLISHED.items():
        model = meta_model(published_config(name))
        n = sum(p.numel() for p in model.parameters())
        agrees = round(n / 1e9, pub.digits) == pub.billions
        ok &= agrees
        rows.append([name, type(model).__name__, f"{n:,}", f"{pub.billions} B", pub.source,
                     "yes" if agrees else "NO"])
    return format_table(["model", "class", "parameters", "published", "source", "agrees"],
                        rows), ok


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--step", choices=("classifier", "chat"), help="run one real step on the CPU")
    p.add_argument("--recipes", nargs="+", default=list(RECIPES), help="recipes to count")
    p.add_argument("--classifier_recipe", default=RECIPES[0], help="GRPO settings of the step")
    p.add_argument("--classifier_model", default="facebook/wav2vec2-xls-r-300m")
    p.add_argument("--seconds", type=float, default=4.0, help="clip length of the classifier step")
    p.add_argument("--chat_recipe", default=RECIPES[1], help="the 7B recipe of the chat step")
    p.add_argument("--question", help="the chat step's question (default: the route's own)")
    p.add_argument("--system", default=DEFAULT_SYSTEM, help="the chat step's system turn")
    p.add_argument("--out_dir", default="runs/dryrun")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's choice)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.step:
        return train.write_report(args.out_dir, run_step(args), f"step_{args.step}.json")
    params, ok = parameter_table()
    parts = ["Published architectures, built on the meta device (nothing allocated)\n" + params,
             "Memory each recipe keeps (GB = 1e9 bytes)"]
    parts += [memory_table(path)[0] for path in args.recipes]
    parts.append("LoRA targets on the real module trees")
    for path in args.recipes:
        if load_recipe(path)[0] != "classifier":
            text, check = lora_report(path)
            ok &= not check["problems"]
            parts.append(text)
    train.write_report(args.out_dir, "\n\n".join(parts))
    if not ok:
        raise SystemExit("dry run: a parameter count or a LoRA check disagrees (see above)")


if __name__ == "__main__":
    main()
