"""The face route's experiment: the face paper's Tables 1-3 and Figs. 4-6, miniature or full size.

Face paper: Jiang, Li et al. (AAAI 2026), "Exploring task-solving paradigm for generalized
cross-domain face anti-spoofing via reinforcement fine-tuning".

    base model (miniature: tiny Qwen2.5-VL + class-free format warm-up = the "instruct" stand-in)
      -> zero-shot                                                         (Table 2, row 1)
      -> SFT on source train: completion-only cross-entropy on answer targets   (Table 2, row 2)
      -> GRPO on source train, R_all = R_format + R_cls + R_res (Eqs. 2-6)  (Tables 1-2, "Ours")
      -> GRPO without R_cls / R_res / R_format                             (Table 3)
    every trained model: the checkpoint with the lowest HTER on the *source* dev set is kept;
    then FRR, FAR, HTER and per-attack error rates on the *target* test set  (Tables 1-3, Fig. 6)

A protocol is (source domain, target domain). Models are trained once per source and tested on
each of its targets, so the four protocols cost two trainings per method. `num_generations`
(N, Fig. 5) and `data_fraction` (Fig. 4) are options. With `manifest` set, the same code runs on
real data (a CSV with path,label,attack,domain,split); otherwise synth_faces.py builds a corpus.

The miniature's base. A tiny randomly initialised Qwen2.5-VL cannot arrive instruct-tuned, and
GRPO needs a policy that already writes `<thinking>..</thinking><answer>..</answer>`. So the
miniature first teaches the format alone: SFT on targets whose thinking text is drawn from
DESCRIPTIONS and whose answer word is drawn at random, both from a generator that never sees the
image or its label (`format_targets`), so the warm-up carries no information about any class.
Its result is saved as the "instruct" base that every method starts from. This is a stand-in
for an instruct model's format-following, not a reproduction of it.

Departures from the paper (it publishes no code), numbered:
1. Task prompt: the text of its Fig. 2 is not in our copy; PROMPT is the R1-style wording.
2. Miniature: tiny model, synthetic faces, class-free format warm-up (above), lr, steps, L and
   max_new_tokens scaled to a 2-core CPU; full fine-tuning of the language model (vision tower
   frozen). The real recipe (configs/fas_qwen25vl7b.json) uses LoRA + bf16 + checkpointing.
3. len(o_i) in Eq. 5 counts characters by default (rewards.py, departure 2); `len_unit` switches.
4. Unstated by the paper, chosen here: beta = 0.04 (k3 KL), clip_eps = 0.2, one update per
   rollout (mu = 1), greedy decoding at test time, number of steps, dev-set checkpoint choice.
5. SFT targets: a class-free description in <thinking> plus the true label in <answer>, so the
   SFT model answers in the same format (the paper does not show its SFT answers).
6. The reward ablations (Table 3) run on `ablation_protocols` only, as in the paper (one
   protocol). The miniature runs them on the surf-like source: the tiny model does not learn
   the cefa-like source at all in the CPU budget, so an ablation there would compare nothing.
7. Dev-set selection looks at checkpoints every `eval_every` steps, never at the start point.
"""
from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from data import read_manifest
from eval import format_table, frr_far_hter, per_attack_error_rates
from rewards import fas_reward, parse_answer
from synth_faces import PROTOCOLS, make_face_corpora
from train import option
from train_chat import (ChatConfig, ChatExample, generate_answers, grpo_stage, load_policy,
                        sft_stage)

PROMPT = ("Is the face in this image real or fake? Output the thinking process in <thinking> "
          "</thinking> and the final answer in <answer> </answer> tags.")
# Class-free descriptions: they name what to look at, never what is seen, so they fit any face.
DESCRIPTIONS = (
    "I look at the face.",
    "I check the color and the texture of the face.",
    "I look at the skin texture, the lighting and the edges.",
    "I check the color, the texture and the depth of the face in this image.",
    "I look at the eyes, the skin, the light, the edges and the background of this image.",
)
# Method -> reward switches (Table 3 rows); "grpo" uses the config's own use_* switches.
GRPO_METHODS = {"grpo": {}, "grpo_wo_cls": dict(use_cls=False),
                "grpo_wo_res": dict(use_res=False), "grpo_wo_format": dict(use_format=False)}
METHODS = ("zero_shot", "sft", *GRPO_METHODS)
# --quick: the same pipeline at toy size, under a minute on 2 CPU cores (a test runs it).
QUICK = dict(n_per_domain=48, image_size=56, format_steps=40, format_lr=3e-3, sft_steps=2,
             grpo_steps=2, eval_every=1, batch_size=2, num_generations=2, max_new_tokens=32,
             eval_batch_size=48)


@dataclass
class FasConfig(ChatConfig):
    """Face anti-spoofing by GRPO on Qwen2.5-VL (Jiang, Li et al. 2026). Where the paper gives a
    value (N = 6, L = 1200, batch 6, lr 5e-6) it is the default; the recipes set the rest."""
    out_dir: str = option("runs/fas", "where checkpoints, logs and results go")
    manifest: str = option("", "real data: CSV path,label,attack,domain,split ('' = synthetic)")
    protocols: dict = option({k: list(v) for k, v in PROTOCOLS.items()},
                         "protocol name -> [source domain, target domain] (Table 1)")
    ablation_protocols: list = option(["cefa_to_hqwmca"], "reward-ablation protocols (Table 3)")
    methods: list = option(list(METHODS), f"any of {', '.join(METHODS)}")
    seeds: list = option([], "run these seeds one after another ([] = just --seed)")
    corpus_root: str = option("runs/face_corpus", "synthetic corpus folder (built once, reused)")
    corpus_seed: int = option(0, "seed of the synthetic corpus (the same data for every run seed)")
    image_size: int = option(112, "synthetic image side, pixels")
    n_per_domain: int = option(300, "synthetic images per domain")
    min_pixels: int = option(56 * 56, "image area floor for the processor (one token per 28x28 px)")
    max_pixels: int = option(448 * 448, "image area cap for the processor")
    prompt: str = option(PROMPT, "task prompt (departure 1: the paper's Fig. 2 text is not given)")
    L: int = option(1200, "expected maximum length of Eq. 5 (paper: 1200)")
    len_unit: str = option("chars", "len(o_i) of Eq. 5: chars | tokens")
    use_format: bool = option(True, "R_format in the 'grpo' method (Table 3 switch)")
    use_cls: bool = option(True, "R_cls in the 'grpo' method (Table 3 switch)")
    use_res: bool = option(True, "R_res in the 'grpo' method (Table 3 switch)")
    data_fraction: float = option(1.0, "share of the source train set used (Fig. 4)")
    format_steps: int = option(120, "class-free format warm-up steps (tiny model only)")
    format_lr: float = option(3e-3, "learning rate of the format warm-up")
    sft_steps: int = option(500, "SFT steps")
    grpo_steps: int = option(500, "GRPO steps")
    eval_every: int = option(100, "steps between source-dev evaluations (checkpoint choice)")


# ----------------------------------------------------------------------------- data

def load_splits(cfg: FasConfig) -> dict:
    """(domain, split) -> [ChatExample] from the manifest (or the synthetic corpus it builds)."""
    manifest = cfg.manifest
    if not manifest:
        root = Path(cfg.corpus_root) / ("quick" if cfg.quick else "full")
        index = make_face_corpora(root, cfg.corpus_seed, cfg.image_size, cfg.n_per_domain,
                                  quick=cfg.quick)
        manifest = root / index["manifest"]
    splits = {}
    for s in read_manifest(manifest):
        if "domain" not in s.meta:
            raise ValueError(f"{manifest}: a face manifest needs a 'domain' column")
        # The image path is the media: the processor opens it when a batch is built (lazy).
        ex = ChatExample(s.path, cfg.prompt, s.label, meta=dict(attack=s.attack))
        splits.setdefault((s.meta["domain"], s.split), []).append(ex)
    return splits


def pick(splits: dict, domain: str, split: str) -> list:
    if (domain, split) not in splits:
        raise ValueError(f"no '{split}' samples of domain '{domain}' in the manifest")
    return splits[(domain, split)]


def subsample(examples: list, fraction: float, seed: int) -> list:
    """The first round(fraction * n) examples of a seeded permutation (Fig. 4's data volume).

    Deterministic in (examples, seed); smaller fractions are subsets of larger ones.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"data_fraction must be in (0, 1], got {fraction}")
    order = np.random.default_rng([seed, 4]).permutation(len(examples))
    keep = max(1, round(fraction * len(examples)))
    return [examples[i] for i in sorted(order[:keep])]


def format_targets(n: int, rng: np.random.Generator) -> list:
    """n class-free warm-up targets: a random description and a random answer word.

    Takes no examples and no labels, so the targets are independent of the images by
    construction: the warm-up teaches the format and nothing about which face is real.
    """
    texts = rng.choice(len(DESCRIPTIONS), n)
    answers = rng.choice(["real", "fake"], n)
    return [f"<thinking>{DESCRIPTIONS[t]}</thinking><answer>{a}</answer>"
            for t, a in zip(texts, answers)]


def format_examples(images: list, seed: int) -> list:
    """The warm-up set: each image paired with the next of `format_targets` (labels unused)."""
    targets = format_targets(len(images), np.random.default_rng([seed, 1]))
    return [dataclasses.replace(ex, target=t) for ex, t in zip(images, targets)]


def sft_targets(examples: list, rng: np.random.Generator) -> list:
    """SFT answer targets (departure 5): a class-free description, then the true label."""
    texts = rng.choice(len(DESCRIPTIONS), len(examples))
    return [dataclasses.replace(ex, target=f"<thinking>{DESCRIPTIONS[t]}</thinking>"
                                           f"<answer>{ex.label}</answer>")
            for ex, t in zip(examples, texts)]


# ----------------------------------------------------------------------------- rewards & metrics

def reward_function(cfg: FasConfig, use_format=True, use_cls=True, use_res=True):
    """reward_fn(texts, examples, lengths) for grpo_stage: Eq. 6 with Table 3's switches."""
    def reward_fn(texts, examples, lengths):
        rows = [fas_reward(t, ex.label, use_format, use_cls, use_res, cfg.L, cfg.len_unit,
                           int(n)) for t, ex, n in zip(texts, examples, lengths)]
        parts = {k: torch.tensor([p[k] for _, p in rows]) for k in ("format", "cls", "res")}
        return torch.tensor([r for r, _ in rows]), parts       # (B*N,), each part (B*N,)
    return reward_fn


def method_switches(cfg: FasConfig, method: str) -> dict:
    """The reward switches of a GRPO method: the config's, with the ablated part turned off."""
    switches = dict(use_format=cfg.use_format, use_cls=cfg.use_cls, use_res=cfg.use_res)
    return {**switches, **GRPO_METHODS[method]}


def evaluate(policy, examples: list, cfg: FasConfig) -> tuple[dict, list]:
    """Greedy answers -> FRR, FAR, HTER (fractions), per-attack error rates, malformed share;
    and one prediction row per example (for the saved predictions)."""
    texts = generate_answers(policy, examples, cfg)
    preds = [parse_answer(t) for t in texts]
    labels = [ex.label for ex in examples]
    attacks = [ex.meta["attack"] for ex in examples]
    rates = frr_far_hter(preds, labels)
    metrics = dict(frr=rates.frr, far=rates.far, hter=rates.hter,
                   malformed=sum(p is None for p in preds) / len(preds),
                   per_attack=per_attack_error_rates(preds, labels, attacks))
    rows = [dict(path=ex.media, label=y, attack=a, pred=p, text=t)
            for ex, y, a, p, t in zip(examples, labels, attacks, preds, texts)]
    return metrics, rows


# ----------------------------------------------------------------------------- training

def load(cfg: FasConfig, source: str, lora: bool = False):
    pixels = {} if source == "tiny" else dict(min_pixels=cfg.min_pixels,
                                              max_pixels=cfg.max_pixels)
    return load_policy(cfg, source, "image", lora=lora, **pixels)


def instruct_base(cfg: FasConfig, images: list, out: Path) -> str:
    """The model every method starts from: the hub model itself, or (tiny) the format warm-up."""
    if cfg.model != "tiny":
        return cfg.model
    policy = load(cfg, "tiny")
    warm = dataclasses.replace(cfg, lr=cfg.format_lr, resume="")
    sft_stage(policy, format_examples(images, cfg.seed), warm, out / "format_warmup",
              cfg.format_steps)
    policy.save(out / "instruct")
    return str(out / "instruct")


def train_method(cfg: FasConfig, method: str, base: str, train_ex: list, dev_ex: list,
                 out: Path):
    """SFT or GRPO from `base`, stopping every `eval_every` steps to score the source dev set.

    Returns the policy holding the weights of the lowest dev HTER (the earliest on a tie, also
    saved to out/best) and {best_step, dev_hter}; every dev score goes to out/dev.jsonl.
    """
    policy = load(cfg, base, lora=True)
    steps = cfg.sft_steps if method == "sft" else cfg.grpo_steps
    if method == "sft":
        train_ex = sft_targets(train_ex, np.random.default_rng([cfg.seed, 2]))
    else:
        reward_fn = reward_function(cfg, **method_switches(cfg, method))
        # pi_ref is the start point: one frozen copy for all segments (full fine-tuning only).
        reference = (policy.frozen_copy() if cfg.beta > 0 and cfg.lora_r == 0 else None)
    params = {n: p for n, p in policy.model.named_parameters() if p.requires_grad}
    best, best_state, history = None, None, []
    ends = sorted({*range(cfg.eval_every, steps, cfg.eval_every), steps})
    for start, end in zip([0, *ends], ends):
        seg = dataclasses.replace(cfg, resume=str(out / "last") if start else "")
        if method == "sft":
            sft_stage(policy, train_ex, seg, out, end)
        else:
            grpo_stage(policy, train_ex, reward_fn, seg, out, end, reference=reference)
        dev, _ = evaluate(policy, dev_ex, cfg)
        history.append(dict(step=end, dev_hter=dev["hter"], dev_malformed=dev["malformed"]))
        if best is None or dev["hter"] < best["dev_hter"]:
            best = history[-1]
            best_state = {n: p.detach().clone() for n, p in params.items()}
            policy.save(out / "best")
    (out / "dev.jsonl").write_text("".join(json.dumps(h) + "\n" for h in history))
    with torch.no_grad():
        for n, p in params.items():
            p.copy_(best_state[n])
    return policy, dict(best_step=best["step"], dev_hter=best["dev_hter"])


# ----------------------------------------------------------------------------- one seed

def check(cfg: FasConfig) -> None:
    """Fail before any training on a method or protocol typo, not hours into the run."""
    unknown = [m for m in cfg.methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; expected any of {METHODS}")
    bad = [k for k, v in cfg.protocols.items() if not (isinstance(v, list) and len(v) == 2)]
    if bad:
        raise ValueError(f"protocols {bad}: each must be [source domain, target domain]")
    missing = [p for p in cfg.ablation_protocols if p not in cfg.protocols]
    if missing:
        raise ValueError(f"ablation_protocols {missing} are not in protocols {list(cfg.protocols)}")


def run_seed(cfg: FasConfig) -> dict:
    """Every method on every protocol for cfg.seed; writes out_dir/seed<S>/results.json."""
    t0 = time.time()
    check(cfg)
    out = Path(cfg.out_dir) / f"seed{cfg.seed}"
    splits = load_splits(cfg)
    sources = list(dict.fromkeys(src for src, _ in cfg.protocols.values()))
    train_sets = {src: subsample(pick(splits, src, "train"), cfg.data_fraction, cfg.seed)
                  for src in sources}
    base = instruct_base(cfg, [ex for src in sources for ex in train_sets[src]], out)
    results = {name: {} for name in cfg.protocols}
    for method in cfg.methods:
        # zero-shot is one model for all protocols; a trained method is one model per source
        for src in [None] if method == "zero_shot" else sources:
            protos = [p for p, (s, _) in cfg.protocols.items() if src in (None, s)
                      and (method in ("zero_shot", "sft", "grpo") or p in cfg.ablation_protocols)]
            if not protos:
                continue
            if src is None:
                policy, chosen = load(cfg, base), {}
            else:
                policy, chosen = train_method(cfg, method, base, train_sets[src],
                                              pick(splits, src, "dev"), out / method / src)
            tested = {}  # domain -> (metrics, rows): each test set is scored once per model
            for proto in protos:
                source, target = cfg.protocols[proto]
                for domain in (target, source):   # the source's test split is optional
                    if domain not in tested and (domain == target or (domain, "test") in splits):
                        tested[domain] = evaluate(policy, pick(splits, domain, "test"), cfg)
                metrics, rows = tested[target]
                # In-domain HTER (source test set): did it learn, or did it not transfer?
                extra = {"source_hter": tested[source][0]["hter"]} if source in tested else {}
                results[proto][method] = {**metrics, **chosen, **extra}
                path = out / "predictions" / proto / f"{method}.jsonl"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = dict(seed=cfg.seed, seconds=round(time.time() - t0, 1),
                  config=dataclasses.asdict(cfg), results=results)
    (out / "results.json").write_text(json.dumps(report, indent=1) + "\n")
    return report


# ----------------------------------------------------------------------------- reports

def pct(x):
    return f"{100 * x:.2f}"


def tables(results: dict) -> str:
    """Tables 1-3 as one long table (protocol, method: FRR, FAR, HTER %, with the source-dev
    choice), then Fig. 6: the error rate per face type of GRPO (or the first method run)."""
    head = ["protocol", "method", "FRR", "FAR", "HTER", "malformed", "source HTER", "dev HTER",
            "step"]
    rows = [[proto, m, pct(r["frr"]), pct(r["far"]), pct(r["hter"]), pct(r["malformed"]),
             *[pct(r[k]) if k in r else "-" for k in ("source_hter", "dev_hter")],
             r.get("best_step", "-")]
            for proto, by_method in results.items() for m, r in by_method.items()]
    text = ["Target test sets, % (Tables 1-3); source HTER: on the source's own test set; "
            "step: the source-dev choice", format_table(head, rows)]
    protos = list(results)
    methods = list(dict.fromkeys(m for p in protos for m in results[p]))
    fig6 = next((m for m in ("grpo", *methods) if all(m in results[p] for p in protos)), None)
    if fig6:
        per = {p: results[p][fig6]["per_attack"] for p in protos}
        attacks = sorted({a for p in protos for a in per[p]})
        rows = [[a] + [pct(per[p][a]) if a in per[p] else "-" for p in protos] for a in attacks]
        text += [f"\nError rate (%) per face type, {fig6} (Fig. 6)",
                 format_table(["type"] + protos, rows)]
    return "\n".join(text)


def summarize(reports: list) -> tuple[dict, str]:
    """Mean and std (ddof = 1 when there are 2+ seeds) of each rate over seed reports; the
    text shows HTER on the target test sets and on the source test sets (in-domain)."""
    summary = {}
    for proto, by_method in reports[0]["results"].items():
        for method, first in by_method.items():
            for k in ("frr", "far", "hter", "source_hter"):
                if k in first:
                    v = np.array([r["results"][proto][method][k] for r in reports])
                    std = float(v.std(ddof=1)) if len(v) > 1 else 0.0
                    summary.setdefault(proto, {}).setdefault(method, {})[k] = (float(v.mean()),
                                                                               std)
    protos = list(summary)
    methods = list(dict.fromkeys(m for p in protos for m in summary[p]))
    seeds = [r["seed"] for r in reports]
    text = []
    for key, what in (("hter", "target test"), ("source_hter", "source test (in-domain)")):
        rows = [[m] + [f"{pct(summary[p][m][key][0])} ± {pct(summary[p][m][key][1])}"
                       if key in summary[p].get(m, {}) else "-" for p in protos]
                for m in methods]
        text += [f"HTER (%) on the {what}, mean ± std over seeds {seeds}",
                 format_table(["method"] + protos, rows), ""]
    return summary, "\n".join(text)


def same_setup(a: dict, b: dict) -> bool:
    """Two runs' configs agree on everything but the seed (and where/how they ran)."""
    skip = ("seed", "seeds", "resume", "device")
    return {k: v for k, v in a.items() if k not in skip} == {k: v for k, v in b.items()
                                                             if k not in skip}


def run_experiment(cfg: FasConfig) -> dict:
    """Run every seed, print its tables, and summarize all seeds of this set-up in out_dir."""
    if cfg.quick:  # its own out_dir: a quick run never replaces a full run's results
        cfg = dataclasses.replace(cfg, **QUICK, out_dir=cfg.out_dir + "_quick")
    for seed in cfg.seeds or [cfg.seed]:
        report = run_seed(dataclasses.replace(cfg, seed=seed))
        print(f"\nseed {seed}: {report['seconds']} s\n" + tables(report["results"]))
    # Separate runs (--seed 0, --seed 1, ...) of one set-up land in one summary.
    paths = sorted(Path(cfg.out_dir).glob("seed*/results.json"))
    reports = [json.loads(p.read_text()) for p in paths]
    reports = [r for r in reports if same_setup(r["config"], dataclasses.asdict(cfg))]
    summary, text = summarize(reports)
    print("\n" + text)
    (Path(cfg.out_dir) / "summary.json").write_text(
        json.dumps(dict(seeds=[r["seed"] for r in reports], summary=summary), indent=1) + "\n")
    return dict(reports=reports, summary=summary)
