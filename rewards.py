"""Reward functions of the three papers: pure functions on completion strings.

Labels are "real" (bona fide) and "fake" (spoof). Every function here is deterministic, takes
plain Python values and imports nothing but the standard library, so a reward can be checked
by hand on a string. Sources:

- face paper: Jiang, Li et al. 2026 (AAAI), Eqs. 3-6 (format, class, reasoning, sum).
- speech paper: Wang, Ge, Yamagishi 2026, classifier GRPO (reward 1/0 on a sampled label).
- HIR-SDD: Dvirniak et al. 2026; the paper names the rewards (correctness, format, human
  preference via an LLM judge) but gives no formulas; weights and the reasons reward follow
  its public code.

Where this file departs from the papers or their code, and why:

1. Strict answer parsing. Exactly one well-formed <answer>...</answer> pair whose content,
   stripped and lower-cased, is exactly "real" or "fake". Common GRPO code uses
   `re.search(r"<answer>(.*?)</answer>")` or a substring test; loose matching is a known
   reward hack (a public GRPO repo rewarded an empty <answer></answer>).
2. len(o_i) in Eq. 5 counts characters of the whole completion by default; the paper does not
   say whether it counts characters or tokens (and its set-up calls L the "expected maximum
   reasoning length", so the <thinking> text alone is another reading). unit="tokens" takes
   the token count instead.
3. A completion with no parsable answer counts as wrong in Eq. 5 (P_class != G_class), so it
   is pushed towards short outputs rather than rewarded for length.
4. Format rewards need non-empty (non-whitespace) content in every block, and only a block's
   own tags count as nesting (other text with "<" is fine). HIR-SDD's format also needs a
   valid reasons list and a Real/Fake answer, because its target format fixes both; its code
   only checks that the three tag pairs occur somewhere.
5. HIR reasons: tags are matched case-insensitively, bare or quoted, and an unknown tag makes
   the whole list invalid (-> reasons reward 0) instead of silently lowering precision.
6. HIR parts are independent: the reasons reward does not require the format reward (the
   paper's code zeroes it when its loose format check fails). For an empty truth, the code
   pays 1.0 to a correct "real" whatever tags it predicts; here the prediction must be empty.
"""
import re
from dataclasses import dataclass

LABELS = ("real", "fake")

# The 9-tag taxonomy of HIR-SDD's code (its annotators' questionnaire, Listing 1 of the paper).
HIR_TAGS = (
    "OTHER", "UNNATURAL_PAUSES", "MONOTONY_OF_STYLE", "STRANGE_VOICE", "STRANGE_INTONATION",
    "INCORRECT_WORD_STRESS", "STRANGE_ACCENT", "INCORRECT_ABBREVIATIONS", "TOO_LONG_WITH_NO_PAUSE",
)

# HIR-SDD code, pipeline without the judge. Its other pipeline uses correctness 0.6 and
# judge 0.3 (pass weights=dict(correctness=0.6, judge=0.3, ...) to hir_reward).
HIR_WEIGHTS = dict(correctness=0.5, format=0.3, reasons=0.2, judge=0.0)

JUDGE_FIELDS = ("detail", "relevance", "logic", "helpfulness")


def _check_label(label):
    # A typo'd label ("Real", "spoof") would silently give reward 0 forever; fail loudly.
    if label not in LABELS:
        raise ValueError(f"label must be 'real' or 'fake', got {label!r}")


def _block(text, tag):
    """Content of the single <tag>...</tag> pair in text, or None.

    None when either tag occurs more or less than once (two answers, unclosed, stray closing
    tag) or the closing tag comes first.
    """
    open_, close = f"<{tag}>", f"</{tag}>"
    # Counting over the whole text (not a regex search) is what catches a hedge such as
    # "<answer>real</answer> or <answer>fake</answer>", which a search reads as "real".
    if text.count(open_) != 1 or text.count(close) != 1:
        return None
    start, end = text.index(open_) + len(open_), text.index(close)
    return text[start:end] if start <= end else None


def _layout(text, tags):
    """Contents of the blocks `tags`, in this order, with only whitespace around them.

    Counting each tag first (exactly once) rules out nesting and repeats, so the non-greedy
    full match below has only one way to succeed.
    """
    if any(_block(text, t) is None for t in tags):
        return None
    pattern = r"\s*" + r"\s*".join(f"<{t}>(.*?)</{t}>" for t in tags) + r"\s*"
    m = re.fullmatch(pattern, text, flags=re.DOTALL)
    if m is None or any(not g.strip() for g in m.groups()):
        return None  # wrong order, text outside the blocks, or an empty block (departure 4)
    return m.groups()


def parse_answer(completion):
    """The predicted class: "real", "fake" or None (no prediction).

    Strict (departure 1): exactly one <answer>...</answer> pair, and its content stripped and
    lower-cased is exactly a class word ("Real" in HIR-SDD's format is fine; "real.", "not
    fake", "" are not). Loose substring matching is a known reward hack: an empty
    <answer></answer> was rewarded in a public GRPO repo.
    """
    content = _block(completion, "answer")
    if content is None:
        return None
    word = content.strip().lower()
    return word if word in LABELS else None


# ---------------------------------------------------------------- face paper, Eqs. 3-6

def format_reward(completion):
    """Face paper Eq. 3: R_format = 1 if the response matches the format, else 0.

    The format: exactly one <thinking>...</thinking> followed by exactly one
    <answer>...</answer>, only whitespace around and between, no nesting, both non-empty.
    The answer's words are R_cls's business, not this one's.
    """
    return 1.0 if _layout(completion, ("thinking", "answer")) is not None else 0.0


def class_reward(completion, label):
    """Face paper Eq. 4: R_cls = 1 if P_class = G_class, 0 otherwise (also when unparsable)."""
    _check_label(label)
    return 1.0 if parse_answer(completion) == label else 0.0


def reasoning_reward(completion, label, L=1200, unit="chars", num_tokens=None):
    """Face paper Eq. 5, the reasoning consistent reward:

        R_res = +min(1, len(o_i) / L)   if P_class = G_class
                -min(1, len(o_i) / L)   if P_class != G_class

    L is the "expected maximum length" (1200 in the paper). len(o_i) is the number of
    characters of the whole completion (unit="chars", departure 2) or `num_tokens`
    (unit="tokens": the completion's token count up to and including EOS, which the caller
    knows and this stdlib module cannot). No prediction counts as wrong (departure 3).
    """
    if L <= 0:
        raise ValueError(f"L must be positive, got {L}")
    if unit == "chars":
        length = len(completion)
    elif unit == "tokens":
        if num_tokens is None or num_tokens < 0:
            raise ValueError(f"unit='tokens' needs num_tokens >= 0, got {num_tokens!r}")
        length = num_tokens
    else:
        raise ValueError(f"unit must be 'chars' or 'tokens', got {unit!r}")
    # Eq. 5 only asks whether P_class = G_class: None != label lands in the "wrong" branch.
    sign = 1.0 if class_reward(completion, label) == 1.0 else -1.0
    return sign * min(1.0, length / L)


def fas_reward(completion, label, use_format=True, use_cls=True, use_res=True, L=1200,
               unit="chars", num_tokens=None):
    """Face paper Eq. 6: R_all = R_format + R_cls + R_res -> (total, parts).

    The three switches are the component ablation of the paper's Table 3 ("w/o R_cls" etc.);
    a switched-off part is reported as 0.0 so logs keep the same keys.
    """
    parts = dict(
        format=format_reward(completion) if use_format else 0.0,
        cls=class_reward(completion, label) if use_cls else 0.0,
        res=reasoning_reward(completion, label, L, unit, num_tokens) if use_res else 0.0,
    )
    return sum(parts.values()), parts


# ---------------------------------------------------------------- speech paper

def classifier_reward(predicted, label):
    """Speech paper (Wang, Ge, Yamagishi 2026): r = 1 if the sampled label equals the truth, else 0.

    Works on ints (class indices) or strings. The paper's "negative reward" is not a -1 here:
    it is the negative advantage that group normalization gives a wrong sample; its ablation
    uses the raw 1/0 rewards as advantages (grpo.group_advantages(..., scale="raw")).
    """
    return 1.0 if predicted == label else 0.0


# ---------------------------------------------------------------- HIR-SDD

@dataclass(frozen=True)
class HirParse:
    """The three fields of `<think>..</think><reasons>[..]</reasons><answer>Real|Fake</answer>`.

    Each is parsed on its own (None when its block is missing, repeated or invalid), so a
    trace with a good answer and broken reasons still reports the answer.
    """
    think: str | None
    reasons: tuple | None  # upper-case tags in written order; () for "[]"
    answer: str | None     # "real" | "fake" | None


def _parse_tag_list(content):
    """`[A, B]`, `["A", "B"]` or `['A','B']` -> ("A", "B"); () for `[]`; None if invalid.

    Case-insensitive, upper-cased on return (as the paper's code does); an unknown tag, an
    empty item ("[A,,B]"), a nested list or a missing bracket invalidates the list.
    """
    s = content.strip()
    if not (s.startswith("[") and s.endswith("]")):
        return None
    inner = s[1:-1].strip()
    if not inner:
        return ()
    tags = []
    for item in inner.split(","):
        # The backreference \1 makes the closing quote match the opening one (or none).
        m = re.fullmatch(r"""(["']?)([A-Za-z_]+)\1""", item.strip())
        if m is None or m.group(2).upper() not in HIR_TAGS:
            return None
        tags.append(m.group(2).upper())
    return tuple(tags)


def parse_hir(completion):
    """Parse an HIR-SDD completion into HirParse(think, reasons, answer)."""
    think = _block(completion, "think")
    reasons = _block(completion, "reasons")
    return HirParse(
        think=None if think is None else think.strip(),
        reasons=None if reasons is None else _parse_tag_list(reasons),
        answer=parse_answer(completion),
    )


def hir_format_reward(completion):
    """HIR-SDD format reward: 1 if the completion is exactly

        <think>...</think> <reasons>[TAG, ...]</reasons> <answer>Real|Fake</answer>

    (whitespace allowed around and between, non-empty think, a valid tag list, possibly
    empty, and a class word), else 0. Stricter than the paper's code (departure 4).
    """
    if _layout(completion, ("think", "reasons", "answer")) is None:
        return 0.0
    p = parse_hir(completion)
    return 1.0 if p.reasons is not None and p.answer is not None else 0.0


def correctness_reward(completion, label):
    """HIR-SDD correctness reward: 1 if the <answer> equals the label, else 0."""
    _check_label(label)
    return 1.0 if parse_hir(completion).answer == label else 0.0


def reasons_reward(completion, label, true_tags):
    """HIR-SDD reasons reward (its code's `correct_reasons_overlap`): precision x recall.

    With P the predicted and T the true tag sets (duplicates collapse):
        precision = |P & T| / |P|   (0 when P is empty)
        recall    = |P & T| / |T|   (0 when T is empty)
    Empty T (bona fide speech carries no tags): the product would always be 0, so the code
    pays 1.0 for a correct "real" answer instead; here the predicted list must also be empty
    (departure 6). A fake sample with no annotated tags gives 0: nothing to compare against.
    Unparsable reasons give 0.
    """
    _check_label(label)
    T = set(true_tags)
    unknown = T - set(HIR_TAGS)
    if unknown:
        raise ValueError(f"unknown HIR tags in true_tags: {sorted(unknown)}")
    p = parse_hir(completion)
    if p.reasons is None:
        return 0.0
    P = set(p.reasons)
    if not T:
        return 1.0 if label == "real" and p.answer == "real" and not P else 0.0
    # Precision punishes listing every tag "to be safe"; recall punishes listing none.
    hits = len(P & T)
    precision = hits / len(P) if P else 0.0
    return precision * hits / len(T)


# One field: its name (with the paper's synonyms "coverage" and plural "details"), then any
# run of markdown/punctuation separators, then a number and an optional "/ denominator".
# The separators are matched lazily so "Logic: -3" reads -3 (out of range), not 3.
_JUDGE_NAMES = dict(detail=r"details?|coverage", relevance="relevance", logic="logic",
                    helpfulness="helpfulness")
_JUDGE_PATTERN = (r"\b(?:{names})\b[\s*_:=\-\u2013\u2014]*?"   # name, separators
                  r"(-?\d+(?:\.\d+)?)(?:\s*/\s*(\d+(?:\.\d+)?))?")  # number, "/ denominator"


def parse_judge_scores(reply):
    """An LLM judge's reply -> dict(detail, relevance, logic, helpfulness) of floats in [0, 10].

    HIR-SDD asks its judge (Qwen2.5-32B) for four 0-10 scores: coverage/detail, relevance,
    logic (coherence with the binary answer) and helpfulness. Tolerant of case and layout:
    "Detail: 7", "detail - 7/10", "**Logic:** 8.5". None (malformed) when a field is missing,
    outside 0-10, over a denominator other than 10, or given twice with different values.
    """
    if not isinstance(reply, str):
        return None
    scores = {}
    for field in JUDGE_FIELDS:
        pattern = _JUDGE_PATTERN.format(names=_JUDGE_NAMES[field])
        found = re.findall(pattern, reply, flags=re.IGNORECASE)  # [(number, denominator)]
        if any(denom and float(denom) != 10.0 for _, denom in found):
            return None  # "7/5" is not a 0-10 score; rescaling would be a guess
        values = {float(num) for num, _ in found}
        if len(values) != 1:
            return None  # missing, or scored twice with different values (ambiguous)
        value = values.pop()
        if not 0.0 <= value <= 10.0:
            return None
        scores[field] = value
    return scores


def judge_reward(reply):
    """Mean of the four judge scores / 10, in [0, 1]; 0.0 for a malformed reply (never raises)."""
    scores = parse_judge_scores(reply)
    return 0.0 if scores is None else sum(scores.values()) / (10.0 * len(scores))


def hir_reward(completion, label, true_tags, judge_score=0.0, weights=None):
    """HIR-SDD total reward: R = sum_k w_k * R_k over correctness, format, reasons, judge.

    `judge_score` is judge_reward(...) of the judge's reply, in [0, 1] (computed by the
    caller, since calling an LLM is not a pure function). Returns (total, parts) with the
    unweighted parts. `weights` defaults to HIR_WEIGHTS; missing keys weigh 0.
    """
    weights = HIR_WEIGHTS if weights is None else weights
    unknown = set(weights) - set(HIR_WEIGHTS)
    if unknown:
        raise ValueError(f"unknown reward weights {sorted(unknown)}; known: {list(HIR_WEIGHTS)}")
    if not 0.0 <= judge_score <= 1.0:
        raise ValueError(f"judge_score must be in [0, 1] (use judge_reward), got {judge_score}")
    # Parts stay unweighted so a log shows each reward on its own 0-1 scale; the weights
    # only enter the total that becomes r_i for the group advantage.
    parts = dict(
        correctness=correctness_reward(completion, label),
        format=hir_format_reward(completion),
        reasons=reasons_reward(completion, label, true_tags),
        judge=float(judge_score),
    )
    return sum(weights.get(k, 0.0) * v for k, v in parts.items()), parts


def score_batch(reward_fn, completions, *columns, **fixed):
    """[reward_fn(c, *row, **fixed) for each completion], with per-completion `columns`.

    E.g. score_batch(fas_reward, texts, labels) for the B*N completions of a GRPO step
    (labels repeated N times). Lengths must agree: zip would silently drop the tail.
    """
    for col in columns:
        if len(col) != len(completions):
            raise ValueError(f"{len(completions)} completions but a column of {len(col)}")
    return [reward_fn(c, *row, **fixed) for c, *row in zip(completions, *columns)]
