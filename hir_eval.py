"""HIR-SDD evaluation (Dvirniak et al. 2026, Sec. 4.3): test metrics, the verdict score, and the
validation that selects each stage's checkpoint.

    greedy answers -> acc, balanced acc, F1 (bona fide positive), malformed share
    the verdict score s = log p(completion with "Real") - log p(the same with "Fake")
                     -> AUC, and the answer NLL beside the class prior's entropy
    CoT answers    -> Jaccard of the tags (Eq. 1), the judge's rubric scores averaged over
                      `judge_runs` runs (the paper: five), diversity, false grounding claims
    per family     -> share of right verdicts per spoof family ("real" for bona fide)

The verdict score is what shows whether a stage learned anything from the audio: a model that
writes the format perfectly but answers from the class prior has AUC 0.5 and an answer NLL equal
to the prior's entropy, however low its SFT loss (the loss averages over every target token, and
only the answer depends on the audio). For a hard-label model the two completions are the two
targets; for a CoT model they are its own greedy completion with the answer word swapped, so s
is the verdict's confidence given the model's own reasoning. An unreadable answer scores 0.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import torch

import distributed
import train
from eval import accuracy, balanced_accuracy, f1_score, malformed_share, mean_jaccard
from hir_data import GROUNDING_CLAIM, hard_label_target, parse_hard_label
from rewards import JUDGE_FIELDS, hir_format_reward, parse_hir
from train_chat import generate_answers

ANSWER = re.compile(r"(<answer>)(.*?)(</answer>)", flags=re.DOTALL)


# ----------------------------------------------------------------------------- math

def roc_auc(scores, true) -> float:
    """Area under the ROC curve of scores (higher = more bona fide) = P(s_real > s_fake) +
    P(tie) / 2 over all (real, fake) pairs (the Mann-Whitney U statistic / (n_real n_fake))."""
    s, t = np.asarray(scores, dtype=np.float64), np.asarray(true)
    real, fake = s[t == "real"], s[t == "fake"]
    if not (len(real) and len(fake)):
        raise ValueError("AUC needs at least one real and one fake sample")
    greater = (real[:, None] > fake[None, :]).mean()
    ties = (real[:, None] == fake[None, :]).mean()
    return float(greater + 0.5 * ties)


def prior_entropy(labels) -> float:
    """H(pi) = -sum_c pi_c log pi_c (nats) of the class shares: the answer NLL of a model that
    knows the prior and nothing about the audio."""
    _, counts = np.unique(np.asarray(labels), return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log(p)).sum())


def answer_nll(llr, true) -> float:
    """Mean -log p(true answer) with p(Real) = sigmoid(s), p(Fake) = 1 - p(Real): the NLL of the
    verdict restricted to the two answers. -log sigmoid(x) = softplus(-x)."""
    s = torch.as_tensor(np.asarray(llr, dtype=np.float64))
    sign = torch.as_tensor([1.0 if y == "real" else -1.0 for y in true], dtype=torch.float64)
    return float(torch.nn.functional.softplus(-sign * s).mean())


# ----------------------------------------------------------------------------- verdict score

def answer_pairs(texts: list, task: str) -> list:
    """(completion answering Real, the same answering Fake) per text, or None (no answer)."""
    if task == "hl":
        return [(hard_label_target("real"), hard_label_target("fake"))] * len(texts)
    out = []
    for t in texts:
        if parse_hir(t).answer is None:
            out.append(None)
        else:
            out.append(tuple(ANSWER.sub(lambda m, w=w: m[1] + w + m[3], t) for w in ("Real", "Fake")))
    return out


@torch.no_grad()
def answer_llr(policy, examples: list, pairs: list, batch_size: int, bf16: bool) -> np.ndarray:
    """s_i = log p(pairs[i][0] | prompt_i) - log p(pairs[i][1] | prompt_i), teacher-forced
    (completion + <|im_end|>); 0 where pairs[i] is None. -> (n,)
    Under torchrun each rank scores its share and every rank gets all the scores back."""
    dist = distributed.setup()  # dist: shared out, gathered back
    scores = np.zeros(len(examples))
    rows = dist.shard([i for i, p in enumerate(pairs) if p is not None])
    with train.autocast(policy.device, bf16):
        for start in range(0, len(rows), batch_size):
            chunk = rows[start:start + batch_size]
            batch = policy.encode_prompts([examples[i].media for i in chunk],
                                          [examples[i].question for i in chunk])
            lp = []
            for side in (0, 1):
                r = policy.encode_targets(batch, [pairs[i][side] for i in chunk])
                logps = policy.completion_logps(r, 1.0, len(chunk), with_grad=False)  # (c, T)
                lp.append((logps * r.completion_mask).sum(1))                          # (c,)
            scores[chunk] = (lp[0] - lp[1]).double().cpu().numpy()
    scores[dist.gather_list(rows)] = dist.gather_list(scores[rows].tolist())
    return scores


# ----------------------------------------------------------------------------- metrics

def judge_runs(judge, texts: list, examples: list, runs: int, temperature: float, seed: int):
    """The judge's scores of `texts`, `runs` times (sampled at `temperature`; a deterministic
    judge is asked once) -> [[JudgeScore] per run]."""
    runs = runs if getattr(judge, "stochastic", False) and temperature > 0 else 1
    return [judge.score_batch(texts, examples, temperature=temperature,
                              seed=train.seed_for(seed, 13, k)) for k in range(runs)]


def reasoning_metrics(texts: list, judged: list) -> dict:
    """The judge's score (0-10: mean over runs, and the std of the run means), its four rubric
    scores, the diversity of the <think> texts and false grounding claims."""
    parsed = [parse_hir(t) for t in texts]
    run_means = [10 * float(np.mean([s.score for s in run])) for run in judged]
    m = dict(judge=float(np.mean(run_means)), judge_run_std=float(np.std(run_means)),
             judge_runs=len(judged))
    m.update({f: float(np.mean([getattr(s, f) for run in judged for s in run]))
              for f in JUDGE_FIELDS})
    thinks = [p.think for p in parsed if p.think]
    m["distinct"] = len(set(thinks)) / len(texts)  # diversity of the <think> texts
    m["think_words"] = float(np.mean([len(t.split()) for t in thinks])) if thinks else 0.0
    m["false_grounding"] = 100 * float(np.mean([bool(GROUNDING_CLAIM.search(t)) for t in texts]))
    return m


def predictions(texts: list, task: str) -> tuple[list, list]:
    """(predicted class or None, the same but None where the format is broken) per text."""
    if task == "hl":
        preds = [parse_hard_label(t) for t in texts]
        return preds, preds
    preds = [parse_hir(t).answer for t in texts]
    return preds, [p if hir_format_reward(t) else None for t, p in zip(texts, preds)]


def verdict_metrics(preds: list, true: list, llr, families: list) -> dict:
    """Percent acc / bacc / F1 (bona fide positive), AUC and answer NLL of the verdict score,
    and the share of right verdicts per family (`family_<name>`)."""
    m = dict(acc=100 * accuracy(preds, true), bacc=100 * balanced_accuracy(preds, true),
             f1=100 * f1_score(preds, true), answer_nll=answer_nll(llr, true))
    m["auc"] = roc_auc(llr, true) if len(set(true)) == 2 else float("nan")
    right = np.array([p == t for p, t in zip(preds, true)])
    fam = np.array(families)
    m.update({f"family_{f}": 100 * float(right[fam == f].mean()) for f in sorted(set(families))})
    return m


def evaluate(policy, examples: list, task: str, cfg, judge, out_file: Path | None = None,
             reasoning: bool | None = None) -> dict:
    """Greedy answers on `examples` -> every metric above; the completions and their verdict
    scores go to out_file (JSON lines, overwritten) when given. reasoning (default: task is
    "cot"): also the Jaccard of the tags, and with a judge its scores."""
    texts = generate_answers(policy, examples, cfg)
    preds, formatted = predictions(texts, task)
    true = [ex.label for ex in examples]
    bf16 = cfg.bf16 and policy.device.type == "cuda"
    llr = answer_llr(policy, examples, answer_pairs(texts, task), cfg.eval_batch_size, bf16)
    m = verdict_metrics(preds, true, llr, [ex.meta.get("family", ex.label) for ex in examples])
    m["malformed"] = 100 * malformed_share(formatted)
    reasoning = task == "cot" if reasoning is None else reasoning
    if reasoning:
        m["jaccard"] = mean_jaccard([parse_hir(t).reasons for t in texts],
                                    [ex.meta["tags"] for ex in examples])
    if reasoning and judge is not None:
        m.update(reasoning_metrics(texts, judge_runs(judge, texts, examples, cfg.judge_runs,
                                                     cfg.judge_temperature, cfg.seed)))
    if out_file is not None and distributed.setup().is_main:
        out_file.parent.mkdir(parents=True, exist_ok=True)
        with open(out_file, "w") as f:
            f.writelines(json.dumps(dict(path=ex.meta["path"], label=ex.label, completion=t,
                                         verdict_score=round(float(s), 4))) + "\n"
                         for ex, t, s in zip(examples, texts, llr))
    return m


class Validator:
    """`validate(step)` for the chat loops: metrics on the validation examples, logged as
    val_<metric>, and the checkpoint with the best (balanced accuracy, -answer NLL) so far saved
    to out/best (HIR-SDD's code keeps its best validation checkpoint too). Only steps that
    trained count: a stage's selected model is never its starting point."""

    def __init__(self, policy, examples: list, task: str, cfg, out: Path, prior: list):
        self.policy, self.examples, self.task, self.cfg, self.out = policy, examples, task, cfg, out
        self.prior_entropy = prior_entropy(prior)
        self.best, self.best_step = None, None

    def __call__(self, step: int) -> dict:
        m = evaluate(self.policy, self.examples, self.task, self.cfg, judge=None)
        key = (m["bacc"], -m["answer_nll"])
        if self.best is None or key > self.best:
            self.best, self.best_step = key, step
            dist = distributed.setup()  # dist: every rank holds the scores; rank 0 saves, then all
            if dist.is_main:            # go on (a later stage loads best/ on every rank)
                train.save_checkpoint(self.out / "best", self.policy.save, {"step": step, **m})
            dist.barrier()
        keep = ("acc", "bacc", "auc", "answer_nll", "malformed", "jaccard")
        return {f"val_{k}": m[k] for k in keep if k in m} | {"prior_entropy": self.prior_entropy}
