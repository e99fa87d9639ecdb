"""HIR-SDD evaluation (hir_eval.py) against independent computations: AUC and log loss from
scikit-learn, the prior's entropy by hand, the verdict score against a plain transformers
forward pass, per-family accuracy by hand, the validator's selection rule, the judge runs."""
import math

import numpy as np
import pytest
import torch
from sklearn.metrics import log_loss, roc_auc_score

import hir_eval
import train
from chat import ChatPolicy
from hir_data import COT_QUESTION, HL_QUESTION, cot_target, hard_label_target
from hir_eval import (Validator, answer_llr, answer_nll, answer_pairs, judge_runs, prior_entropy,
                      roc_auc, verdict_metrics)
from hir_experiment import HirConfig
from judge import LLMJudge, RubricJudge
from train_chat import ChatExample

SR = 16000


def test_auc_nll_and_entropy_against_sklearn_and_by_hand():
    rng = np.random.default_rng(0)
    true = ["real" if t else "fake" for t in rng.random(40) < 0.3]
    s = rng.standard_normal(40).round(1)  # rounding makes ties, counted as 1/2
    y = [t == "real" for t in true]
    assert roc_auc(s, true) == pytest.approx(roc_auc_score(y, s))
    p_real = 1 / (1 + np.exp(-s))  # sigmoid of the log-likelihood ratio
    assert answer_nll(s, true) == pytest.approx(log_loss(y, p_real))
    # H = -(1/4 ln 1/4 + 3/4 ln 3/4)
    assert prior_entropy(["real", "fake", "fake", "fake"]) == pytest.approx(
        -(0.25 * math.log(0.25) + 0.75 * math.log(0.75)))
    # a model answering the prior p(real) = 1/4 everywhere has answer NLL = H exactly
    prior = ["real"] * 10 + ["fake"] * 30
    assert answer_nll([math.log(1 / 3)] * 40, prior) == pytest.approx(prior_entropy(prior))
    with pytest.raises(ValueError, match="one real and one fake"):
        roc_auc([0.1, 0.2], ["fake", "fake"])


def test_verdict_metrics_per_family_by_hand():
    preds = ["real", "fake", "fake", None, "real", "fake"]
    true = ["real", "real", "fake", "fake", "fake", "fake"]
    fams = ["bonafide", "bonafide", "buzz", "buzz", "buzz", "metronome"]
    m = verdict_metrics(preds, true, [2.0, -1.0, -3.0, 0.0, 1.0, -2.0], fams)
    assert m["family_bonafide"] == 50.0 and m["family_buzz"] == pytest.approx(100 / 3)
    assert m["family_metronome"] == 100.0
    assert m["acc"] == pytest.approx(50.0) and m["bacc"] == pytest.approx(50 * (0.5 + 0.5))
    # AUC: real scores {2, -1} vs fake {-3, 0, 1, -2}: 4 + 2 of 8 pairs
    assert m["auc"] == pytest.approx(6 / 8)


def test_answer_pairs_swap_only_the_answer_word():
    t = cot_target("Buzzy.", ["STRANGE_VOICE"], "fake")
    real, fake = answer_pairs([t, "no answer"], "cot")[0]
    assert fake == t and real == t.replace("<answer>Fake</answer>", "<answer>Real</answer>")
    assert answer_pairs([t, "no answer"], "cot")[1] is None
    assert answer_pairs(["whatever"], "hl") == [(hard_label_target("real"),
                                                 hard_label_target("fake"))]


def log_p_by_hand(policy, clip, question, target):
    """log p(target + <|im_end|> | prompt) from the model's own forward on one unpadded row."""
    batch = policy.encode_prompts([clip], [question])
    ids = policy.tokenizer(target, add_special_tokens=False)["input_ids"] + [policy.im_end_id]
    full = torch.cat([batch["input_ids"], torch.tensor([ids])], 1)
    with torch.no_grad():
        logits = policy.model(input_ids=full, attention_mask=torch.ones_like(full),
                              input_features=batch["input_features"],
                              feature_attention_mask=batch["feature_attention_mask"]).logits
    logits = logits[0, batch["input_ids"].shape[1] - 1:-1].float()
    logits[:, policy.suppressed_ids] = float("-inf")  # the distribution generate samples from
    return float(logits.log_softmax(-1)[torch.arange(len(ids)), torch.tensor(ids)].sum())


def test_verdict_score_is_the_log_likelihood_ratio_of_a_plain_forward():
    policy = ChatPolicy.tiny("audio", seed=3)
    rng = np.random.default_rng(1)
    clips = [(0.1 * rng.standard_normal(n)).astype(np.float32) for n in (SR, SR // 2)]
    t = cot_target("Buzzy.", ["STRANGE_VOICE"], "fake")
    exs = [ChatExample(clips[0], HL_QUESTION, "fake"), ChatExample(clips[1], COT_QUESTION, "real")]
    pairs = [answer_pairs(["x"], "hl")[0], answer_pairs([t], "cot")[0]]
    s = answer_llr(policy, exs, pairs, batch_size=2, bf16=False)
    for i, ex in enumerate(exs):
        expected = (log_p_by_hand(policy, ex.media, ex.question, pairs[i][0])
                    - log_p_by_hand(policy, ex.media, ex.question, pairs[i][1]))
        assert s[i] == pytest.approx(expected, abs=1e-4)
    assert answer_llr(policy, exs, [None, None], 2, False).tolist() == [0.0, 0.0]


def test_validator_keeps_the_best_trained_step(tmp_path, monkeypatch):
    seq = iter([dict(bacc=50.0, answer_nll=0.6, acc=60.0, auc=0.6, malformed=0.0),
                dict(bacc=70.0, answer_nll=0.5, acc=70.0, auc=0.7, malformed=0.0),
                dict(bacc=70.0, answer_nll=0.4, acc=71.0, auc=0.8, malformed=0.0),
                dict(bacc=70.0, answer_nll=0.45, acc=72.0, auc=0.9, malformed=0.0)])
    monkeypatch.setattr(hir_eval, "evaluate", lambda *a, **k: next(seq))
    policy = ChatPolicy.tiny("text")
    v = Validator(policy, [], "hl", HirConfig(), tmp_path, ["real", "fake", "fake", "fake"])
    logged = [v(step) for step in (10, 20, 30, 40)]
    # (bacc, -NLL) strictly better: 70 ties at 20, 30, 40; 30 has the lowest NLL
    assert v.best_step == 30 and train.load_trainer_state(tmp_path / "best")["step"] == 30
    assert (tmp_path / "best" / "model" / "config.json").is_file()
    assert logged[0] == dict(val_acc=60.0, val_bacc=50.0, val_auc=0.6, val_answer_nll=0.6,
                             val_malformed=0.0, prior_entropy=pytest.approx(0.5623351))


def test_judge_runs_repeat_a_sampling_judge_and_ask_a_rubric_once():
    ex = ChatExample(None, COT_QUESTION, "fake", meta=dict(comment="Buzzy voice.", tags=["OTHER"]))
    t = cot_target("Buzzy voice.", ["OTHER"], "fake")
    assert len(judge_runs(RubricJudge(), [t], [ex], runs=5, temperature=0.7, seed=0)) == 1
    lm = ChatPolicy.tiny("text", seed=2)
    judge = LLMJudge(lm.model, lm.tokenizer, max_new_tokens=6)
    runs = judge_runs(judge, [t], [ex], runs=3, temperature=1.0, seed=0)
    assert len(runs) == 3 and len(judge_runs(judge, [t], [ex], 3, 0.0, 0)) == 1  # greedy: once
    replies = [judge.replies([t], [ex], 1.0, seed=k) for k in (5, 5, 6)]
    assert replies[0] == replies[1]  # a sampled reply is fixed by its seed
    assert judge.replies([t], [ex]) == judge.replies([t], [ex])  # greedy
