"""Rewards on hand-written completions: every expected value below was worked out by hand."""
import pytest

import rewards as R
from rewards import (HIR_TAGS, HIR_WEIGHTS, HirParse, class_reward, classifier_reward,
                     correctness_reward, fas_reward, format_reward, hir_format_reward, hir_reward,
                     judge_reward, parse_answer, parse_hir, parse_judge_scores, reasoning_reward,
                     reasons_reward, score_batch)

GOOD = "<thinking>The skin texture is natural.</thinking><answer>real</answer>"

# ---------------------------------------------------------------- parse_answer

@pytest.mark.parametrize("completion, expected", [
    ("<answer>real</answer>", "real"),
    ("<answer>fake</answer>", "fake"),
    ("<answer>Real</answer>", "real"),                         # HIR-SDD writes "Real"
    ("<answer>  FAKE \n</answer>", "fake"),                    # whitespace + upper case
    ("text before <answer>real</answer> text after", "real"),  # the format reward judges that
    ("<answer>real</answer><answer>fake</answer>", None),      # two answers
    ("<answer>real</answer><answer>real</answer>", None),      # two answers, even if equal
    ("<answer>real", None),                                    # unclosed
    ("real</answer>", None),                                   # no opening tag
    ("</answer><answer>real</answer>", None),                  # stray closing tag
    ("<answer>real</answer></answer>", None),
    ("</answer>real<answer>", None),                           # closing before opening
    ("<answer></answer>", None),                               # empty (the known hack)
    ("<answer>   </answer>", None),
    ("<answer>real.</answer>", None),
    ("<answer>not fake</answer>", None),
    ("<answer>real or fake</answer>", None),
    ("<answer>bona fide</answer>", None),
    ("<ANSWER>real</ANSWER>", None),                           # tags are case-sensitive
    ("< answer >real</ answer >", None),
    ("the answer is real", None),
    ("", None),
])
def test_parse_answer(completion, expected):
    assert parse_answer(completion) == expected


# ---------------------------------------------------------------- face paper Eq. 3

@pytest.mark.parametrize("completion, expected", [
    (GOOD, 1.0),
    ("  <thinking>a</thinking>\n\n<answer>fake</answer>\n", 1.0),  # whitespace around/between
    ("<thinking>a</thinking><answer>maybe</answer>", 1.0),   # words are R_cls's business
    ("<thinking>a < b, c > d</thinking><answer>real</answer>", 1.0),  # "<" is not a tag
    ("<answer>real</answer><thinking>a</thinking>", 0.0),    # wrong order
    ("<thinking>a</thinking>", 0.0),                         # no answer
    ("<answer>real</answer>", 0.0),                          # no thinking
    ("Sure! <thinking>a</thinking><answer>real</answer>", 0.0),   # text outside
    ("<thinking>a</thinking> so <answer>real</answer>", 0.0),     # text between
    ("<thinking>a</thinking><answer>real</answer> done", 0.0),
    ("<thinking>a</thinking><answer>real</answer><answer>real</answer>", 0.0),  # two answers
    ("<thinking>a</thinking><thinking>b</thinking><answer>real</answer>", 0.0),
    ("<thinking>a<answer>real</answer></thinking>", 0.0),    # nested answer
    ("<thinking>a<thinking>b</thinking></thinking><answer>real</answer>", 0.0),
    ("<thinking>a</thinking><answer><thinking>b</thinking>real</answer>", 0.0),
    ("<thinking>a</thinking><answer>real", 0.0),             # unclosed
    ("<thinking></thinking><answer>real</answer>", 0.0),     # empty thinking
    ("<thinking>a</thinking><answer> </answer>", 0.0),       # empty answer
    ("<think>a</think><answer>real</answer>", 0.0),          # HIR's tag, not the face one
    ("<THINKING>a</THINKING><ANSWER>real</ANSWER>", 0.0),
    ("", 0.0),
])
def test_format_reward(completion, expected):
    assert format_reward(completion) == expected


# ---------------------------------------------------------------- face paper Eq. 4

@pytest.mark.parametrize("completion, label, expected", [
    (GOOD, "real", 1.0),
    (GOOD, "fake", 0.0),
    ("<thinking>a</thinking><answer>FAKE</answer>", "fake", 1.0),
    ("<answer>real</answer>", "real", 1.0),                     # format not required
    ("<answer>real</answer><answer>fake</answer>", "real", 0.0),  # hedging gets nothing
    ("<answer></answer>", "real", 0.0),
    ("real", "real", 0.0),
])
def test_class_reward(completion, label, expected):
    assert class_reward(completion, label) == expected


@pytest.mark.parametrize("fn", [class_reward, correctness_reward])
@pytest.mark.parametrize("label", ["Real", "spoof", "bonafide", 1, None])
def test_bad_label_raises(fn, label):
    with pytest.raises(ValueError, match="label"):
        fn(GOOD, label)


# ---------------------------------------------------------------- face paper Eq. 5

def _completion(n_chars, answer="real"):
    """A well-formed completion of exactly n_chars characters (pads the thinking)."""
    shell = f"<thinking></thinking><answer>{answer}</answer>"
    return shell.replace("</thinking>", "x" * (n_chars - len(shell)) + "</thinking>")


@pytest.mark.parametrize("n, label, L, expected", [
    (300, "real", 1200, 0.25),     # correct, len < L: +len/L
    (600, "real", 1200, 0.5),
    (1200, "real", 1200, 1.0),     # len = L
    (5000, "real", 1200, 1.0),     # len > L: capped
    (300, "fake", 1200, -0.25),    # wrong: the same size, negative
    (1200, "fake", 1200, -1.0),
    (5000, "fake", 1200, -1.0),
    (100, "real", 50, 1.0),
    (100, "real", 400, 0.25),
])
def test_reasoning_reward_chars(n, label, L, expected):
    c = _completion(n)
    assert len(c) == n
    assert reasoning_reward(c, label, L=L) == pytest.approx(expected)


def test_reasoning_reward_counts_the_whole_completion():
    # Tags and the text outside them all count (departure 2): 53 characters, L = 106.
    c = "note <thinking>abc</thinking> <answer>real</answer> !"
    assert len(c) == 53
    assert reasoning_reward(c, "real", L=106) == pytest.approx(0.5)


@pytest.mark.parametrize("completion, expected", [
    ("<answer>real.</answer>" + "x" * 578, -0.5),   # no prediction -> treated as wrong
    ("x" * 600, -0.5),
    ("", 0.0),                                       # -min(1, 0/L) = -0.0
])
def test_reasoning_reward_without_prediction_is_negative(completion, expected):
    assert reasoning_reward(completion, "real") == pytest.approx(expected)


@pytest.mark.parametrize("num_tokens, label, expected", [
    (0, "real", 0.0), (30, "real", 0.25), (120, "real", 1.0), (500, "real", 1.0),
    (30, "fake", -0.25), (500, "fake", -1.0),
])
def test_reasoning_reward_tokens(num_tokens, label, expected):
    # The text has 70 characters; with unit="tokens" only num_tokens matters.
    got = reasoning_reward(GOOD, label, L=120, unit="tokens", num_tokens=num_tokens)
    assert got == pytest.approx(expected)


@pytest.mark.parametrize("kwargs, match", [
    (dict(unit="tokens"), "num_tokens"),
    (dict(unit="tokens", num_tokens=-1), "num_tokens"),
    (dict(unit="words"), "unit"),
    (dict(L=0), "L must be positive"),
])
def test_reasoning_reward_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        reasoning_reward(GOOD, "real", **kwargs)


# ---------------------------------------------------------------- face paper Eq. 6, Table 3

C600 = _completion(600)  # well-formed, says "real", 600 characters -> |R_res| = 0.5


@pytest.mark.parametrize("label, switches, total, parts", [
    ("real", {}, 2.5, dict(format=1.0, cls=1.0, res=0.5)),
    ("fake", {}, 0.5, dict(format=1.0, cls=0.0, res=-0.5)),
    ("real", dict(use_format=False), 1.5, dict(format=0.0, cls=1.0, res=0.5)),
    ("real", dict(use_cls=False), 1.5, dict(format=1.0, cls=0.0, res=0.5)),
    ("real", dict(use_res=False), 2.0, dict(format=1.0, cls=1.0, res=0.0)),
    ("fake", dict(use_res=False), 1.0, dict(format=1.0, cls=0.0, res=0.0)),
    ("real", dict(use_format=False, use_cls=False, use_res=False), 0.0,
     dict(format=0.0, cls=0.0, res=0.0)),
])
def test_fas_reward_ablation(label, switches, total, parts):
    got_total, got_parts = fas_reward(C600, label, **switches)
    assert got_total == pytest.approx(total)
    assert got_parts == pytest.approx(parts)


def test_fas_reward_malformed_and_tokens():
    # Unparsable answer: format 0, cls 0, res -min(1, 60/1200) = -0.05.
    total, parts = fas_reward("x" * 60, "real")
    assert (total, parts) == (pytest.approx(-0.05), dict(format=0.0, cls=0.0, res=-0.05))
    total, parts = fas_reward(GOOD, "real", L=100, unit="tokens", num_tokens=25)
    assert total == pytest.approx(2.25)


# ---------------------------------------------------------------- speech paper

@pytest.mark.parametrize("predicted, label, expected", [
    (1, 1, 1.0), (0, 1, 0.0), (0, 0, 1.0), ("real", "real", 1.0), ("fake", "real", 0.0),
])
def test_classifier_reward(predicted, label, expected):
    assert classifier_reward(predicted, label) == expected


# ---------------------------------------------------------------- HIR-SDD parsing

def hir(think="Robotic voice.", reasons="[STRANGE_VOICE]", answer="Fake"):
    return f"<think>{think}</think>\n<reasons>{reasons}</reasons>\n<answer>{answer}</answer>"


def test_hir_tags():
    assert len(HIR_TAGS) == 9 and len(set(HIR_TAGS)) == 9
    assert "TOO_LONG_WITH_NO_PAUSE" in HIR_TAGS and "OTHER" in HIR_TAGS


@pytest.mark.parametrize("reasons, expected", [
    ("[]", ()),
    ("[ ]", ()),
    ("[STRANGE_VOICE]", ("STRANGE_VOICE",)),
    ("[UNNATURAL_PAUSES, MONOTONY_OF_STYLE]", ("UNNATURAL_PAUSES", "MONOTONY_OF_STYLE")),
    ('["UNNATURAL_PAUSES", "OTHER"]', ("UNNATURAL_PAUSES", "OTHER")),   # JSON-ish
    ("['OTHER','STRANGE_ACCENT']", ("OTHER", "STRANGE_ACCENT")),         # Python-ish
    ("[strange_voice]", ("STRANGE_VOICE",)),                             # case-insensitive
    (" [OTHER] ", ("OTHER",)),
    ("[OTHER, OTHER]", ("OTHER", "OTHER")),                # duplicates kept; sets collapse them
    ("[TOO_FAST]", None),                                  # unknown tag invalidates the list
    ("[OTHER, ROBOTIC]", None),
    ("[OTHER,]", None),                                    # empty item
    ("[OTHER,,STRANGE_VOICE]", None),
    ('["OTHER\']', None),                                  # mismatched quotes
    ("[[OTHER]]", None),                                   # nested list
    ("OTHER", None),                                       # no brackets
    ("[OTHER", None),
    ("", None),
])
def test_parse_hir_reasons(reasons, expected):
    assert parse_hir(hir(reasons=reasons)).reasons == expected


@pytest.mark.parametrize("completion, expected", [
    (hir(), HirParse("Robotic voice.", ("STRANGE_VOICE",), "fake")),
    (hir(think="  x \n", answer="real"), HirParse("x", ("STRANGE_VOICE",), "real")),
    ("<reasons>[]</reasons>", HirParse(None, (), None)),      # fields parse independently
    ("<think>a</think><think>b</think><answer>Real</answer>", HirParse(None, None, "real")),
    (hir(answer="Unsure"), HirParse("Robotic voice.", ("STRANGE_VOICE",), None)),
    ("</think>a<think><answer>Fake</answer>", HirParse(None, None, "fake")),  # reversed tags
    ("", HirParse(None, None, None)),
])
def test_parse_hir(completion, expected):
    assert parse_hir(completion) == expected


@pytest.mark.parametrize("completion, expected", [
    (hir(), 1.0),
    (hir(reasons="[]", answer="Real"), 1.0),
    (hir(reasons='["OTHER", "STRANGE_VOICE"]'), 1.0),
    ("<think>a</think><reasons>[]</reasons><answer>real</answer>", 1.0),  # no whitespace
    ("  " + hir() + "\n", 1.0),
    (hir(think=""), 0.0),                                      # empty think
    (hir(think="   "), 0.0),
    (hir(reasons="[TOO_FAST]"), 0.0),                          # invalid reasons
    (hir(reasons=""), 0.0),
    (hir(answer="Unsure"), 0.0),                               # not a class word
    (hir(answer=""), 0.0),
    ("<think>a</think><answer>Fake</answer>", 0.0),            # no reasons block
    ("<reasons>[]</reasons><think>a</think><answer>Fake</answer>", 0.0),  # order
    ("Answer: " + hir(), 0.0),                                 # text outside
    (hir() + "<answer>Fake</answer>", 0.0),                    # two answers
    (hir(think="a <answer>Real</answer>"), 0.0),               # nested
    (hir(think="a <reasons>[]</reasons>"), 0.0),
    ("<thinking>a</thinking><reasons>[]</reasons><answer>Real</answer>", 0.0),
])
def test_hir_format_reward(completion, expected):
    assert hir_format_reward(completion) == expected


@pytest.mark.parametrize("completion, label, expected", [
    (hir(), "fake", 1.0), (hir(), "real", 0.0), (hir(answer="REAL"), "real", 1.0),
    (hir(answer="Real."), "real", 0.0), ("<answer>Fake</answer>", "fake", 1.0),
])
def test_correctness_reward(completion, label, expected):
    assert correctness_reward(completion, label) == expected


# ---------------------------------------------------------------- HIR-SDD reasons reward

A, B, C, D = "UNNATURAL_PAUSES", "MONOTONY_OF_STYLE", "STRANGE_VOICE", "OTHER"


@pytest.mark.parametrize("pred, answer, label, truth, expected", [
    ([A, B], "Fake", "fake", [A, B], 1.0),              # exact
    ([A, B, C], "Fake", "fake", [A, B], 2 / 3 * 1),     # precision 2/3, recall 1
    ([A], "Fake", "fake", [A, B], 1 * 1 / 2),           # precision 1, recall 1/2
    ([A, C], "Fake", "fake", [A, B], 1 / 2 * 1 / 2),
    ([A, C, D], "Fake", "fake", [A, B], 1 / 3 * 1 / 2),
    ([C], "Fake", "fake", [A, B], 0.0),                 # disjoint
    ([], "Fake", "fake", [A, B], 0.0),                  # P empty -> precision 0
    ([A, A, B], "Fake", "fake", [A, B], 1.0),           # duplicates collapse
    ([A, B], "Real", "fake", [A, B], 1.0),              # tags scored on their own
    ([], "Real", "real", [], 1.0),                      # correct real, nothing to report
    ([A], "Real", "real", [], 0.0),                     # a real with invented cues
    ([], "Fake", "real", [], 0.0),                      # wrong answer on a real
    ([], "Fake", "fake", [], 0.0),                      # fake without annotated tags
    ([], "Unsure", "real", [], 0.0),                    # no answer
])
def test_reasons_reward(pred, answer, label, truth, expected):
    completion = hir(reasons="[" + ", ".join(pred) + "]", answer=answer)
    assert reasons_reward(completion, label, truth) == pytest.approx(expected)


def test_reasons_reward_unparsable_and_bad_truth():
    assert reasons_reward(hir(reasons="[TOO_FAST]"), "fake", [A]) == 0.0
    assert reasons_reward("<answer>Real</answer>", "real", []) == 0.0  # no reasons block
    with pytest.raises(ValueError, match="unknown HIR tags"):
        reasons_reward(hir(), "fake", ["TOO_FAST"])


# ---------------------------------------------------------------- judge

@pytest.mark.parametrize("reply, expected", [
    ("Detail: 7\nRelevance: 8\nLogic: 6\nHelpfulness: 9", (7, 8, 6, 9)),
    ("detail - 7/10, RELEVANCE - 8 / 10, logic: 6.5/10, helpfulness=10", (7, 8, 6.5, 10)),
    ("**Detail:** 3\n**Relevance**: 4\n- **Logic** - 5/10\n* Helpfulness: **2**", (3, 4, 5, 2)),
    ("Coverage: 1 Relevance: 0 Logic: 0 Helpfulness: 0", (1, 0, 0, 0)),  # paper's word
    ("Details: 6. The trace covers the pauses.\nRelevance: 6\nLogic: 6\nHelpfulness: 6",
     (6, 6, 6, 6)),
    ("The detail is thin. Detail: 2; Relevance: 4; Logic: 4; Helpfulness: 2", (2, 4, 4, 2)),
    ("Detail: 5 Detail: 5 Relevance: 5 Logic: 5 Helpfulness: 5", (5, 5, 5, 5)),  # agreeing
    ("Detail: 7\nRelevance: 8\nLogic: 6", None),                     # missing a field
    ("Detail: 11 Relevance: 8 Logic: 6 Helpfulness: 9", None),       # out of range
    ("Detail: -1 Relevance: 8 Logic: 6 Helpfulness: 9", None),
    ("Detail: 4/5 Relevance: 8 Logic: 6 Helpfulness: 9", None),      # other scale
    ("Detail: seven Relevance: 8 Logic: 6 Helpfulness: 9", None),    # not a number
    ("Detail: 5 Detail: 6 Relevance: 5 Logic: 5 Helpfulness: 5", None),  # ambiguous
    ("I cannot evaluate this trace.", None),
    ("", None),
    (None, None),
])
def test_parse_judge_scores(reply, expected):
    got = parse_judge_scores(reply)
    if expected is None:
        assert got is None
    else:
        assert got == dict(zip(R.JUDGE_FIELDS, map(float, expected)))


@pytest.mark.parametrize("reply, expected", [
    ("Detail: 7\nRelevance: 8\nLogic: 6\nHelpfulness: 9", 0.75),   # 30 / 40
    ("Detail: 10 Relevance: 10 Logic: 10 Helpfulness: 10", 1.0),
    ("Detail: 0 Relevance: 0 Logic: 0 Helpfulness: 0", 0.0),
    ("Detail: 12 Relevance: 8 Logic: 6 Helpfulness: 9", 0.0),     # malformed -> 0, no crash
    ("garbage", 0.0), ("", 0.0), (None, 0.0),
])
def test_judge_reward(reply, expected):
    assert judge_reward(reply) == pytest.approx(expected)


# ---------------------------------------------------------------- HIR-SDD weighted sum

def test_hir_weights():
    assert HIR_WEIGHTS == dict(correctness=0.5, format=0.3, reasons=0.2, judge=0.0)


@pytest.mark.parametrize("completion, label, truth, judge, weights, total, parts", [
    # Perfect fake: 0.5*1 + 0.3*1 + 0.2*1 = 1.0.
    (hir(reasons=f"[{A}, {B}]"), "fake", [A, B], 0.0, None, 1.0,
     dict(correctness=1.0, format=1.0, reasons=1.0, judge=0.0)),
    # Extra tag: reasons 2/3 -> 0.5 + 0.3 + 0.2*2/3 = 0.9333...
    (hir(reasons=f"[{A}, {B}, {C}]"), "fake", [A, B], 0.0, None, 0.8 + 0.2 * 2 / 3,
     dict(correctness=1.0, format=1.0, reasons=2 / 3, judge=0.0)),
    # Wrong answer, right format, reasons 1/2*1/2: 0.3 + 0.2*0.25 = 0.35.
    (hir(reasons=f"[{A}, {C}]", answer="Real"), "fake", [A, B], 0.0, None, 0.35,
     dict(correctness=0.0, format=1.0, reasons=0.25, judge=0.0)),
    # Judge pipeline: 0.6*1 + 0.3*0.75 = 0.825 (format and reasons weigh 0 when absent).
    (hir(reasons="[]", answer="Real"), "real", [], 0.75, dict(correctness=0.6, judge=0.3),
     0.825, dict(correctness=1.0, format=1.0, reasons=1.0, judge=0.75)),
    # Malformed (unclosed answer): only the reasons can still be parsed... but the answer
    # is needed for an empty truth, so everything is 0.
    ("<think>a</think><reasons>[]</reasons><answer>Real", "real", [], 0.0, None, 0.0,
     dict(correctness=0.0, format=0.0, reasons=0.0, judge=0.0)),
])
def test_hir_reward(completion, label, truth, judge, weights, total, parts):
    got_total, got_parts = hir_reward(completion, label, truth, judge_score=judge, weights=weights)
    assert got_total == pytest.approx(total)
    assert got_parts == pytest.approx(parts)


def test_hir_reward_bad_arguments():
    with pytest.raises(ValueError, match="unknown reward weights"):
        hir_reward(hir(), "fake", [C], weights=dict(correctness=1.0, style=0.5))
    with pytest.raises(ValueError, match="judge_score"):
        hir_reward(hir(), "fake", [C], judge_score=7.0)  # a raw 0-10 score, not judge_reward


# ---------------------------------------------------------------- batch helper

def test_score_batch():
    texts = [GOOD, GOOD, "<answer>fake</answer>"]
    got = score_batch(fas_reward, texts, ["real", "fake", "fake"], use_res=False)
    assert [t for t, _ in got] == [2.0, 1.0, 1.0]
    assert score_batch(class_reward, texts, ["real", "fake", "fake"]) == [1.0, 0.0, 1.0]
    with pytest.raises(ValueError, match="3 completions but a column of 2"):
        score_batch(class_reward, texts, ["real", "fake"])
