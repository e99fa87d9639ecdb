"""Judges of reasoning traces: HIR-SDD's "human preference" reward and its reasoning evaluation.

HIR-SDD (Dvirniak et al. 2026, Sec. 4.2) asks an LLM judge (Qwen2.5-32B) to score each GRPO
generation 0-10 on coverage (detail), relevance, logic (coherence with the binary prediction)
and helpfulness; Sec. 4.3 evaluates test traces on the same rubric with GPT-5.1. Every judge
here answers the same call:

    judge.score_batch(traces, examples) -> [JudgeScore(score, detail, relevance, logic,
                                                       helpfulness, valid)]
    score = (detail + relevance + logic + helpfulness) / 40  in [0, 1]   (rewards.judge_reward)

`examples` carry the reference annotation: `.label` ("real" | "fake"), `.meta["tags"]` (HIR
tags) and `.meta["comment"]` (the reference <think> text), as hir_experiment's ChatExamples do.

Two judges:
- LLMJudge: any local causal LM (hub id or folder), prompted with the rubric and the reference,
  decoded greedily, its reply parsed by rewards.parse_judge_scores; a malformed reply scores 0.
- RubricJudge: deterministic arithmetic on the trace and the reference, for the CPU miniature
  and the tests. It is a STAND-IN for the LLM judge, not a model of human preference.

Departures, numbered:
1. JUDGE_PROMPT is written from the paper's rubric names; the paper's code (unified_training,
   judges/llm_as_a_judge.py) asks for scores 1-10 and defaults a missing score to 1, where a
   malformed reply scores 0 here (rewards.parse_judge_scores, scores 0-10).
2. The judge sees the reference annotation (label, comment, tags); the code's judge prompt holds
   only the model's output. Without the reference a judge cannot tell a relevant cue from an
   invented one, and the rubric stand-in needs it.
3. The same judge kind scores GRPO rewards and test traces (the paper: Qwen2.5-32B for rewards,
   GPT-5.1 for evaluation), so a judge-score gain after GRPO is partly reward fitting.
4. Evaluation averages the judge over several runs, as the paper does (five runs); an LLM judge
   then samples its replies at a temperature (seeded per run), while GRPO rewards decode
   greedily. The rubric stand-in is deterministic: one run is all its five would be.
"""
from __future__ import annotations

import copy
import re
from dataclasses import dataclass

import torch

from eval import jaccard
from rewards import JUDGE_FIELDS, judge_reward, parse_hir, parse_judge_scores

JUDGE_PROMPT = """You are a strict judge of explanations written by a speech deepfake detector.
Reference annotation by a human listener:
- label: {label}
- comment: {comment}
- artifact tags: {tags}

The detector's output:
{trace}

Score the detector's reasoning from 0 to 10 on each criterion:
Detail: how much of the relevant acoustic evidence it covers.
Relevance: whether what it says is about this audio and matters for the decision.
Logic: whether the reasoning is coherent and consistent with its final answer.
Helpfulness: how useful the explanation is to a person checking the audio.
Reply with exactly four lines and nothing else:
Detail: <0-10>
Relevance: <0-10>
Logic: <0-10>
Helpfulness: <0-10>"""


@dataclass(frozen=True)
class JudgeScore:
    """One judged trace: `score` in [0, 1] and the four rubric scores in [0, 10]."""
    score: float
    detail: float = 0.0
    relevance: float = 0.0
    logic: float = 0.0
    helpfulness: float = 0.0
    valid: bool = True  # False: the LLM judge's reply was malformed (everything is 0)


def score_from_reply(reply: str) -> JudgeScore:
    """An LLM judge's reply -> JudgeScore; malformed (rewards.parse_judge_scores is None) -> 0."""
    scores = parse_judge_scores(reply)
    if scores is None:
        return JudgeScore(0.0, valid=False)
    return JudgeScore(judge_reward(reply), **scores)


class LLMJudge:
    """Prompt a local causal LM with the rubric; parse its four 0-10 scores (Sec. 4.2)."""
    stochastic = True  # can sample its replies (temperature > 0): evaluation repeats it

    def __init__(self, model, tokenizer, max_new_tokens: int = 48, batch_size: int = 8,
                 max_trace_chars: int = 2000):
        self.model, self.tokenizer = model.eval(), tokenizer
        self.max_new_tokens, self.batch_size = max_new_tokens, batch_size
        self.max_trace_chars = max_trace_chars  # a runaway trace must not blow up the prompt
        pad = tokenizer.pad_token_id
        pad = tokenizer.eos_token_id if pad is None else pad
        # Greedy: a judge whose scores change from call to call would add noise to the reward.
        # The model's own generation config is kept for its EOS ids (Qwen: two of them).
        self.generation_config = copy.deepcopy(model.generation_config)
        self.generation_config.update(do_sample=False, temperature=None, top_p=None, top_k=None,
                                      max_new_tokens=max_new_tokens, pad_token_id=pad)

    @classmethod
    def from_pretrained(cls, name_or_path: str, device=None, dtype=None, **kw) -> "LLMJudge":
        """Any AutoModelForCausalLM checkpoint, e.g. "Qwen/Qwen2.5-7B-Instruct" or a folder."""
        from transformers import AutoModelForCausalLM, AutoTokenizer
        dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
        model = AutoModelForCausalLM.from_pretrained(name_or_path,
                                                     **({"dtype": dtype} if dtype else {}))
        return cls(model.to(device or "cpu"), AutoTokenizer.from_pretrained(name_or_path), **kw)

    def prompt(self, trace: str, example) -> str:
        """The rubric prompt, in the model's chat template when it has one."""
        text = JUDGE_PROMPT.format(
            label=example.label, comment=example.meta.get("comment", "") or "(none)",
            tags=", ".join(example.meta.get("tags", [])) or "(none)",
            trace=trace[:self.max_trace_chars])
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template([{"role": "user", "content": text}],
                                                      tokenize=False, add_generation_prompt=True)
        return text + "\n"

    @torch.no_grad()
    def replies(self, traces: list, examples: list, temperature: float = 0.0, seed: int = 0) -> list:
        """The judge's raw replies, batched, left-padded so new tokens start in one column;
        greedy, or sampled at `temperature` from a torch RNG seeded with `seed` (forked)."""
        out = []
        device = next(self.model.parameters()).device
        config = copy.deepcopy(self.generation_config)
        if temperature > 0:
            config.update(do_sample=True, temperature=temperature, top_k=0)
        cuda = [device] if device.type == "cuda" else []
        for start in range(0, len(traces), self.batch_size):
            prompts = [self.prompt(t, ex) for t, ex in
                       zip(traces[start:start + self.batch_size],
                           examples[start:start + self.batch_size])]
            enc = self.tokenizer(prompts, return_tensors="pt", padding=True, padding_side="left",
                                 add_special_tokens=False).to(device)
            with torch.random.fork_rng(devices=cuda):
                torch.manual_seed(seed + start)
                ids = self.model.generate(**enc, generation_config=config)
            out += self.tokenizer.batch_decode(ids[:, enc["input_ids"].shape[1]:],
                                               skip_special_tokens=True)
        return out

    def score_batch(self, traces: list, examples: list, temperature: float = 0.0,
                    seed: int = 0) -> list:
        if len(traces) != len(examples):
            raise ValueError(f"{len(traces)} traces but {len(examples)} examples")
        return [score_from_reply(r) for r in self.replies(traces, examples, temperature, seed)]


# Words that carry no acoustic cue: function words, the generic nouns of every comment
# ("speech", "voice"), and verdict words ("real", "synthesized"): a verdict is not evidence.
STOP_WORDS = frozenset("""
about above after again also because been before being below between both could does doing
down during each even every from further have having here into just like more most much only
other over same should some such than that their them then there these they this those
through under very well were what when where which while with would your seems sounds sound
speech audio voice speaker recording person think likely real fake genuine human synthesized
synthetic artificial deepfake spoof bona fide answer reasons""".split())


def cues(text: str) -> set:
    """Cue stems of a text: 5-letter prefixes of its alphabetic words of >= 4 letters, stop
    words dropped. The prefix is a crude stemmer ("pauses"/"pause", "breath"/"breathing")."""
    words = re.findall(r"[a-z]+", text.lower())
    return {w[:5] for w in words if len(w) >= 4 and w not in STOP_WORDS}


def _word_count(text: str) -> int:
    return len(re.findall(r"[A-Za-z]+", text))


class RubricJudge:
    """A deterministic stand-in for the LLM judge: the rubric as arithmetic on the reference.

    With C(.) = cues(.), t = the trace's <think> text, r = the reference comment, P / T the
    predicted / true tag sets and J their Jaccard index (eval.jaccard; 0 if <reasons> is
    unreadable):
        detail      = 10 |C(t) & C(r)| / |C(r)|         coverage of the reference's cues
        relevance   = 10 |C(t) & C(r)| / |C(t)|         share of the trace's cues that are right
        logic       = 10/3 (answer readable + reasons readable + consistent), consistent =
                      both readable and (answer == Fake) == (P non-empty): a real verdict names
                      no artifact, a fake one names at least one
        helpfulness = 10 J(P, T) min(1, words(t) / words(r))   right tags, said at full length
    Empty C(r) gives detail 10, empty C(t) relevance 0. Logic ignores the true label on
    purpose: a wrong but coherent trace keeps it (correctness has its own reward).
    """
    stochastic = False  # the same scores every time: repeating it adds nothing

    def score(self, trace: str, example) -> JudgeScore:
        p = parse_hir(trace)
        think = p.think or ""
        ref = example.meta.get("comment", "")
        c_t, c_r = cues(think), cues(ref)
        hits = len(c_t & c_r)
        detail = 10.0 * hits / len(c_r) if c_r else 10.0
        relevance = 10.0 * hits / len(c_t) if c_t else 0.0
        readable = (p.answer is not None) + (p.reasons is not None)
        consistent = readable == 2 and (p.answer == "fake") == (len(p.reasons) > 0)
        logic = 10.0 * (readable + consistent) / 3
        J = 0.0 if p.reasons is None else jaccard(p.reasons, example.meta.get("tags", []))
        length = min(1.0, _word_count(think) / max(1, _word_count(ref)))
        helpfulness = 10.0 * J * length
        parts = dict(detail=detail, relevance=relevance, logic=logic, helpfulness=helpfulness)
        return JudgeScore(sum(parts.values()) / (10.0 * len(JUDGE_FIELDS)), **parts)

    def score_batch(self, traces: list, examples: list, temperature: float = 0.0,
                    seed: int = 0) -> list:
        """Scores of each trace; temperature and seed are ignored (nothing is sampled)."""
        if len(traces) != len(examples):
            raise ValueError(f"{len(traces)} traces but {len(examples)} examples")
        return [self.score(t, ex) for t, ex in zip(traces, examples)]


def make_judge(kind: str, model: str = "", device=None, dtype=None, **kw):
    """"rubric" -> RubricJudge(); "llm" -> LLMJudge.from_pretrained(model, ...)."""
    if kind == "rubric":
        return RubricJudge()
    if kind == "llm":
        if not model:
            raise ValueError("judge 'llm' needs judge_model (a hub id or folder of a causal LM)")
        return LLMJudge.from_pretrained(model, device=device, dtype=dtype, **kw)
    raise ValueError(f"unknown judge {kind!r}; expected 'rubric' or 'llm'")
