"""HIR-SDD route (hir_data.py, hir_experiment.py, judge.py) against hand-worked numbers and
independent checks: grounding spans and sentences, the exact targets and their tokens, the
rubric judge by hand, the LLM judge on a tiny random LM, the skeptic filter, manifest errors,
a GRPO step, the KL to the GRPO start point (0 at the first step; the naive reference's KL
recomputed apart), the LoRA / LLM-judge path on saved tiny folders, and the quick miniature."""
import dataclasses
import json
import re

import numpy as np
import pytest
import soundfile as sf
import torch

from chat import ChatPolicy
import train
from hir_data import (
    COT_QUESTION, HL_QUESTION, class_free_examples, cot_target, ground, grounding_sentence,
    hard_label_target, make_examples, parse_hard_label, perturb_span, read_hir_manifest,
    split_records, synthetic_manifest,
)
from hir_experiment import QUICK, HirConfig, make_reward_fn, run_experiment, skeptic_keep
from judge import JudgeScore, LLMJudge, RubricJudge, make_judge, score_from_reply
from lora import lora_modules, stack_adapter
from rewards import HIR_WEIGHTS, hir_format_reward, hir_reward, parse_hir
from train_chat import ChatExample, grpo_stage

SR = 16000
SPAN = re.compile(r"^From (\d+\.\d\d) s to (\d+\.\d\d) s ")


def noise(seconds, seed=0):
    return (0.1 * np.random.default_rng(seed).standard_normal(int(seconds * SR))).astype(np.float32)


# ------------------------------------------------------------------ grounding
def test_grounding_changes_exactly_the_named_span_by_the_named_amount():
    x = noise(1.5)
    seen = set()
    for seed in range(30):
        y, info = perturb_span(x, SR, np.random.default_rng(seed))
        y2, info2 = perturb_span(x, SR, np.random.default_rng(seed))
        assert np.array_equal(y, y2) and info == info2  # deterministic per seed
        sentence = grounding_sentence(info)
        start, end = map(float, SPAN.match(sentence).groups())  # what the sentence names
        a, b = round(start * SR), round(end * SR)
        assert 0.2 - 1e-9 <= end - start <= 1.2 + 1e-9 and b <= len(x)
        changed = np.flatnonzero(y != x)
        assert changed.min() == a and changed.max() == b - 1 and len(changed) == b - a
        if info["kind"] == "gain":
            g = float(re.search(r"(rises|drops) by (\d+\.\d) dB \(a gain change\)", sentence)[2])
            g = g if "rises" in sentence else -g
            assert 2 <= abs(g) <= 8
            np.testing.assert_allclose(y[a:b], x[a:b] * 10 ** (g / 20), rtol=1e-6)
        elif info["kind"] == "noise":
            snr = float(re.search(r"Gaussian noise at (\d+\.\d) dB SNR", sentence)[1])
            measured = 10 * np.log10(np.mean(x.astype(float) ** 2)
                                     / np.mean((y[a:b] - x[a:b]).astype(float) ** 2))
            assert 8 <= snr <= 25 and abs(measured - snr) < 0.6
        else:
            assert "time mask" in sentence and not y[a:b].any()
        seen.add(info["kind"])
    assert seen == {"gain", "noise", "mask"}


def test_grounding_span_is_cut_to_a_short_clip():
    x = noise(0.15)
    y, info = perturb_span(x, SR, np.random.default_rng(0))
    assert info["start"] == 0.0 and info["end"] == 0.15 and len(y) == len(x)


def wav_records(tmp_path, n, seconds=1.0, **fields):
    recs = []
    for i in range(n):
        path = tmp_path / f"clip{i}.wav"
        sf.write(path, noise(seconds, seed=i), SR, subtype="FLOAT")
        recs.append(dict(dict(path=str(path), label="fake", tags=["OTHER"], comment="Muffled.",
                              where=f"m:{i + 1}"), **fields))
    return recs


def test_ground_is_per_sample_and_puts_the_sentence_first_in_think(tmp_path):
    exs = make_examples(wav_records(tmp_path, 6), "cot", limit=SR)
    g1, g2 = ground(exs, seed=3, p=1.0), ground(exs, seed=3, p=1.0)
    assert [e.target for e in g1] == [e.target for e in g2]
    assert ground(exs, seed=4, p=1.0)[0].target != g1[0].target
    # example i depends on (seed, i) only, not on the other examples
    assert ground(exs[:3], 3, 1.0)[2].target == g1[2].target != ground(exs[2:3], 3, 1.0)[0].target
    for ex in g1:
        p = parse_hir(ex.target)
        info = ex.meta["grounding"]
        assert p.think == f"{grounding_sentence(info)} Muffled."
        assert p.reasons == ("OTHER",) and p.answer == "fake"
        # The clip is rebuilt from its seed each time it is read, and it is the named change.
        x, y = np.asarray(exs[g1.index(ex)].media), np.asarray(ex.media)
        assert np.array_equal(y, np.asarray(ex.media)) and y.dtype == np.float32
        a, b = round(info["start"] * SR), round(info["end"] * SR)
        assert np.array_equal(x[:a], y[:a]) and np.array_equal(x[b:], y[b:])
        assert not np.array_equal(x[a:b], y[a:b])
    assert all(a is b for a, b in zip(ground(exs, 3, 0.0), exs))  # p = 0: none perturbed
    half = ground(exs * 20, 3, 0.5)
    assert 0.25 < np.mean([h is not e for h, e in zip(half, exs * 20)]) < 0.75


# ------------------------------------------------------------------ targets
def test_hir_targets_are_the_papers_formats_and_encode_as_single_tag_tokens():
    assert hard_label_target("real") == "Final Answer: Real"
    assert parse_hard_label("Final Answer: Fake") == "fake"
    assert parse_hard_label("Final Answer: Fake.") is None
    assert parse_hard_label("I think Final Answer: Real") is None
    t = cot_target("Flat pitch.", ["MONOTONY_OF_STYLE", "STRANGE_INTONATION"], "fake")
    assert t == ("<think>Flat pitch.</think><reasons>[MONOTONY_OF_STYLE, STRANGE_INTONATION]"
                 "</reasons><answer>Fake</answer>")
    real = cot_target("Natural pauses.", [], "real")
    assert real.endswith("<reasons>[]</reasons><answer>Real</answer>")
    assert hir_format_reward(t) == hir_format_reward(real) == 1.0
    assert hir_reward(t, "fake", ["MONOTONY_OF_STYLE", "STRANGE_INTONATION"])[0] == 1.0
    # Teacher forcing: the completion is exactly the target's tokens + <|im_end|>, the tags and
    # format tags are single tokens, and the prompt is the question with the audio before it.
    pol = ChatPolicy.tiny("audio")
    batch = pol.encode_prompts([noise(1.0), noise(0.5)], [COT_QUESTION, HL_QUESTION])
    r = pol.encode_targets(batch, [t, hard_label_target("fake")])
    ids = r.completion_ids[0][r.completion_mask[0].bool()].tolist()
    tok = pol.tokenizer
    assert ids[-1] == tok.convert_tokens_to_ids("<|im_end|>")
    assert tok.decode(ids[:-1]) == t
    for special in ("<think>", "</reasons>", "MONOTONY_OF_STYLE", "STRANGE_INTONATION"):
        assert tok.convert_tokens_to_ids(special) in ids
    assert int(r.completion_mask[1].sum()) == len(tok(hard_label_target("fake"))["input_ids"]) + 1
    prompt = tok.decode(batch["input_ids"][1][batch["attention_mask"][1].bool()])
    assert prompt.endswith(f"{HL_QUESTION}<|im_end|>\n<|im_start|>assistant\n")


def test_class_free_targets_are_a_permutation_independent_of_the_audio(tmp_path):
    recs = [dict(r, label="real", tags=[]) if i % 2 else r
            for i, r in enumerate(wav_records(tmp_path, 8, seconds=0.2))]
    hl, cot = make_examples(recs, "hl", SR), make_examples(recs, "cot", SR)
    free = class_free_examples(hl, cot, np.random.default_rng(0))
    assert len(free) == 16
    assert sorted(e.target for e in free[:8]) == sorted(e.target for e in hl)
    assert sorted(e.target for e in free[8:]) == sorted(e.target for e in cot)
    assert all(f.media is e.media and f.label == e.label for f, e in zip(free, hl + cot))
    assert [e.target for e in free] != [e.target for e in hl + cot]


# ------------------------------------------------------------------ judges
REF = ChatExample(None, COT_QUESTION, "fake", meta=dict(
    comment="The voice is monotone and the pauses are dead silent.",
    tags=["MONOTONY_OF_STYLE", "UNNATURAL_PAUSES"]))


def test_rubric_judge_hand_worked():
    j = RubricJudge()
    # Reference cues {monot, pause, dead, silen} ("voice" is a stop word); trace cues
    # {monot, deliv, pause}: 2 hits. detail 10*2/4, relevance 10*2/3, logic 10 (Fake with a
    # tag), helpfulness 10 * J = 1/2 * min(1, 5 words / 10 words) = 2.5.
    good = j.score("<think>Monotone delivery and odd pauses.</think>"
                   "<reasons>[MONOTONY_OF_STYLE]</reasons><answer>Fake</answer>", REF)
    assert good == JudgeScore(pytest.approx(24.1666667 / 40), 5.0, pytest.approx(20 / 3), 10.0, 2.5)
    # Wrong but coherent: cues {natur, pause, audib, breat}, 1 hit; Real with no tag is
    # consistent (logic 10); no right tag (helpfulness 0).
    wrong = j.score("<think>Natural pauses and audible breaths.</think><reasons>[]</reasons>"
                    "<answer>Real</answer>", REF)
    assert wrong == JudgeScore(0.375, 2.5, 2.5, 10.0, 0.0)
    # No blocks at all: nothing is readable, so everything is 0.
    assert j.score("monotone pauses", REF) == JudgeScore(0.0, 0.0, 0.0, 0.0, 0.0)
    # Readable answer and reasons but inconsistent (Fake with no tag): logic 2/3 of 10.
    assert j.score("<think>x</think><reasons>[]</reasons><answer>Fake</answer>",
                   REF).logic == pytest.approx(20 / 3)
    assert good.score > wrong.score


def test_judge_reply_parser_path():
    s = score_from_reply("Detail: 8/10\nRelevance: 6\n**Logic:** 9\nHelpfulness - 5")
    assert s == JudgeScore(pytest.approx(0.7), 8.0, 6.0, 9.0, 5.0, True)
    assert score_from_reply("Detail: 8\nLogic: 9") == JudgeScore(0.0, valid=False)
    assert score_from_reply("Detail: 11 Relevance: 6 Logic: 9 Helpfulness: 5").valid is False


def test_llm_judge_on_a_tiny_random_lm_scores_garbage_zero(tmp_path):
    lm = ChatPolicy.tiny("text")
    judge = LLMJudge(lm.model, lm.tokenizer, max_new_tokens=8, batch_size=2)
    prompt = judge.prompt("<think>t</think>", REF)
    assert "dead silent" in prompt and "MONOTONY_OF_STYLE, UNNATURAL_PAUSES" in prompt
    traces = ["<think>Monotone.</think><reasons>[]</reasons><answer>Fake</answer>", "", "x" * 5000]
    scores = judge.score_batch(traces, [REF] * 3)
    assert scores == [JudgeScore(0.0, valid=False)] * 3  # garbage reply -> 0, never a crash
    lm.save(tmp_path / "lm")  # the from_pretrained path, on a local folder
    again = make_judge("llm", str(tmp_path / "lm"), max_new_tokens=8)
    assert again.replies(traces[:1], [REF]) == judge.replies(traces[:1], [REF])
    with pytest.raises(ValueError, match="judge_model"):
        make_judge("llm")


# ------------------------------------------------------------------ GRPO pieces
def test_skeptic_filter_keeps_exactly_the_mixed_groups():
    correct = [[1, 1, 1, 1], [0, 0, 0, 0], [1, 0, 1, 1], [0, 0, 1, 0], [1, 1, 1, 1]]
    assert skeptic_keep(correct) == [2, 3]
    assert skeptic_keep([[1, 1], [0, 0]]) == []


def test_reward_fn_equals_hir_reward_with_the_judge_score():
    weights = dict(correctness=0.6, format=0.1, reasons=0.0, judge=0.3)
    texts = ["<think>Monotone delivery and odd pauses.</think><reasons>[MONOTONY_OF_STYLE]"
             "</reasons><answer>Fake</answer>", "Final Answer: Fake"]
    rewards, parts = make_reward_fn(weights, RubricJudge())(texts, [REF, REF], None)
    # first: 0.6 * 1 + 0.1 * 1 + 0.3 * judge 0.6041667; second: nothing parses -> 0
    torch.testing.assert_close(rewards, torch.tensor([0.7 + 0.3 * 24.1666667 / 40, 0.0]))
    torch.testing.assert_close(parts["judge"], torch.tensor([24.1666667 / 40, 0.0]))
    assert set(parts) == set(HIR_WEIGHTS)


def test_grpo_step_with_the_hir_reward_runs_and_moves_the_weights(tmp_path):
    pol = ChatPolicy.tiny("audio", seed=1)
    exs = [ChatExample(noise(0.5, seed=i), COT_QUESTION, lab,
                       cot_target(c, tags, lab), dict(tags=tags, comment=c, path=f"p{i}"))
           for i, (lab, tags, c) in enumerate([("fake", ["OTHER"], "Muffled."),
                                               ("real", [], "Natural pauses.")])]
    # A few SFT steps first, so that sampled completions differ in reward (a random model's
    # garbage all scores 0, and equal rewards give zero advantages and no update).
    opt = torch.optim.AdamW(pol.model.parameters(), lr=3e-3)
    batch = pol.encode_prompts([e.media for e in exs], [e.question for e in exs])
    for _ in range(40):
        opt.zero_grad()
        pol.sft_loss(batch, [e.target for e in exs]).backward()
        opt.step()
    cfg = HirConfig(num_generations=4, batch_size=2, max_new_tokens=24, lr=1e-3, beta=0.04,
                    out_dir=str(tmp_path))
    before = {n: p.detach().clone() for n, p in pol.model.named_parameters()}
    reward_fn = make_reward_fn(dict(correctness=0.6, format=0.1, judge=0.3), RubricJudge())
    grpo_stage(pol, exs, reward_fn, cfg, tmp_path / "grpo", steps=1)
    log = json.loads((tmp_path / "grpo" / "metrics.jsonl").read_text().splitlines()[-1])
    assert log["equal_share"] < 1.0  # at least one group had different rewards
    assert {"reward_correctness", "reward_format", "reward_reasons", "reward_judge"} <= set(log)
    moved = [n for n, p in pol.model.named_parameters() if not torch.equal(p, before[n])]
    assert moved and all("audio_tower" not in n for n in moved)  # frozen encoder stays
    assert (tmp_path / "grpo" / "last" / "model").is_dir()


# ------------------------------------------------------------------ manifest
def write_manifest(tmp_path, rows):
    (tmp_path / "a.wav").write_bytes(b"")
    path = tmp_path / "manifest.jsonl"
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


GOOD = dict(path="a.wav", label="spoof", comment="Buzzy.", tags=["STRANGE_VOICE"], split="test",
            speaker="s1")


def test_manifest_reader_reads_and_resolves(tmp_path, monkeypatch):
    path = write_manifest(tmp_path, [GOOD, "", dict(path="a.wav", label="bonafide", split="train")])
    monkeypatch.chdir(tmp_path)  # a relative manifest path still gives absolute audio paths
    assert read_hir_manifest("manifest.jsonl")[0]["path"] == str(tmp_path / "a.wav")
    recs = read_hir_manifest(path)
    assert [r["label"] for r in recs] == ["fake", "real"]
    assert recs[0]["path"] == str(tmp_path / "a.wav") and recs[0]["speaker"] == "s1"
    assert recs[1]["comment"] == "" and recs[1]["where"] == f"{path}:3"
    assert {k: len(v) for k, v in split_records(recs, []).items() if v} == {
        ("r", "train"): 1, ("r", "test"): 1}
    assert sum(map(len, split_records(recs * 10, [0.5, 0.2, 0.3]).values())) == 20
    with pytest.raises(ValueError, match=f"{path}:3: empty comment"):
        make_examples(recs, "cot", SR)


@pytest.mark.parametrize("bad, error, message", [
    ('{"path": "a.wav", "label": ', ValueError, "not valid JSON"),
    (dict(GOOD, label="maybe"), ValueError, "unknown label 'maybe'"),
    (dict(GOOD, tags=["ROBOTIC"]), ValueError, "tags must be a list"),
    (dict(GOOD, label="real"), ValueError, "bona fide sample carries artifact tags"),
    (dict(GOOD, split="dev"), ValueError, "split must be train, val or test"),
    (dict(GOOD, path="missing.wav"), FileNotFoundError, "audio file not found"),
    ('["a.wav", "fake"]', ValueError, "expected an object"),
])
def test_manifest_errors_name_file_and_line(tmp_path, bad, error, message):
    path = write_manifest(tmp_path, [GOOD, GOOD, bad])
    with pytest.raises(error, match=re.escape(f"{path}:3: ") + ".*" + re.escape(message)):
        read_hir_manifest(path)


def test_manifest_missing_or_empty(tmp_path):
    with pytest.raises(FileNotFoundError, match="manifest not found"):
        read_hir_manifest(tmp_path / "none.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(ValueError, match="no entries"):
        read_hir_manifest(tmp_path / "empty.jsonl")


# ------------------------------------------------------------------ the GRPO reference
def test_grpo_from_an_sft_adapter_starts_at_kl_zero(tmp_path):
    """HIR-SDD's code takes the GRPO start point as the KL reference. Loading an SFT adapter and
    switching adapters off would make the reference the base model instead; lora.stack_adapter
    (the route's way) makes the KL exactly 0 at the first step."""
    ChatPolicy.tiny("audio", seed=0).save(tmp_path / "base")
    sft = ChatPolicy.from_pretrained(str(tmp_path / "base"), "audio", lora=dict(r=4, alpha=8, seed=1))
    with torch.no_grad():  # an SFT adapter that moved the model
        for m in lora_modules(sft.model).values():
            m.lora_B.weight.normal_(0, 0.2, generator=torch.Generator().manual_seed(2))
    sft.save(tmp_path / "sft")
    exs = [ChatExample(noise(0.5, seed=i), COT_QUESTION, "fake", "", dict(tags=["OTHER"],
                       comment="Muffled.")) for i in range(2)]
    cfg = HirConfig(num_generations=3, batch_size=2, max_new_tokens=12, lr=1e-3, beta=0.1,
                    lora_r=4, lora_alpha=8, loss_type="reinforce", out_dir=str(tmp_path))
    reward_fn = make_reward_fn(dict(correctness=0.6, format=0.1, judge=0.3), RubricJudge())

    def first_kl(policy, name):
        grpo_stage(policy, exs, reward_fn, cfg, tmp_path / name, steps=1)
        return json.loads((tmp_path / name / "metrics.jsonl").read_text().splitlines()[0])["kl"]

    stacked = ChatPolicy.from_pretrained(str(tmp_path / "sft"), "audio")
    stack_adapter(stacked.model, 4, 8, 0.0, seed=3)
    assert first_kl(stacked, "stacked") == 0.0
    naive = first_kl(ChatPolicy.from_pretrained(str(tmp_path / "sft"), "audio"), "naive")
    # the naive KL, computed apart: k3 between the SFT model and the base model on the rollout
    # grpo_stage drew at step 0 (same batch, same sampling seed)
    policy, base = (ChatPolicy.from_pretrained(str(tmp_path / f), "audio") for f in ("sft", "base"))
    batch_ex = [exs[i] for i in train.batch_indices(2, 2, cfg.seed, 0)]
    batch = policy.encode_prompts([e.media for e in batch_ex], [e.question for e in batch_ex])
    seeds = [train.seed_for(cfg.seed, 0, p) for p in range(2)]  # one per prompt, as grpo_step
    r = policy.generate(batch, 3, 12, cfg.temperature, cfg.top_p, seed=seeds)
    d = base.completion_logps(r, cfg.temperature, 8, False) - policy.completion_logps(
        r, cfg.temperature, 8, False)
    mask = r.completion_mask.double()
    expected = float(((torch.exp(d) - d - 1).double() * mask).sum() / mask.sum())
    assert naive == pytest.approx(expected, abs=2e-6) and naive > 1e-3


# ------------------------------------------------------------------ end to end
@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A quick HIR corpus at <root>_quick: where a --quick run with corpus_root=<root> looks."""
    root = tmp_path_factory.mktemp("corpus")
    synthetic_manifest(f"{root}_quick", "quick")
    return str(root)


def test_quick_experiment_end_to_end(tmp_path, corpus, capsys):
    cfg = HirConfig(quick=True, out_dir=str(tmp_path / "run"), corpus_root=corpus,
                    stages=["hl_sft", "hl2_sft", "cot_sft", "cot_ground_sft", "grpo"],
                    skeptic=True, loss_type="reinforce", baseline=dict(steps=2),
                    reward_weights=dict(correctness=0.6, format=0.1, judge=0.3))
    summary = run_experiment(dataclasses.replace(cfg, **QUICK))  # what train.main does
    printed = capsys.readouterr().out
    assert not (tmp_path / "run").exists()  # --quick writes to its own folder
    run = tmp_path / "run_quick"
    for title in ("Table 1: Test-1-HL", "Reasoning: Test-2-R", "Hard / out-of-distribution",
                  "Learning:", "hir, 1 seed(s):"):
        assert title in printed
    rows = ["Wav2Vec2-AASIST: Train-1-HL", "Qwen2-Audio: Train-1-HL", "Qwen2-Audio: Train-2-HL",
            "Qwen2-Audio: Train-2-R", "Qwen2-Audio: Train-2-R + grounding",
            "Qwen2-Audio: Train-2-R + grounding + GRPO"]
    assert sorted(summary) == sorted(rows + ["audio pre-training stand-in"])
    results = json.loads((run / "results.json").read_text())
    assert results["route"] == "hir" and results["paper"]["jaccard"]["grpo"] == 0.6468
    assert (run / "tables.md").read_text().strip() in printed
    for row in rows:
        tests = results["per_seed"][0][row]
        assert set(tests) - {"val"} == ({"Test-1-HL", "hard"} if "HL" in row and "R" not in row
                                        or "AASIST" in row else {"Test-1-HL", "Test-2-R", "hard"})
        for test, m in tests.items():
            if test != "val":
                assert all(0.0 <= m[k] <= 100.0 for k in ("acc", "bacc", "f1", "malformed"))
    grpo = results["per_seed"][0]["Qwen2-Audio: Train-2-R + grounding + GRPO"]
    assert 0.0 <= grpo["Test-2-R"]["jaccard"] <= 1.0 and 0.0 <= grpo["Test-2-R"]["judge"] <= 10
    assert grpo["val"]["step"] == 2 and grpo["Test-2-R"]["judge_runs"] == 1  # rubric: one run
    completions = (run / "seed0" / "grpo" / "Test-2-R_completions.jsonl").read_text()
    assert len(completions.splitlines()) == results["sizes"]["Test-2-R"]["n"]
    assert (run / "figures" / "hir_grpo_rewards.png").is_file()


def test_real_model_path_lora_and_llm_judge_on_saved_tiny_folders(tmp_path, corpus):
    # The 7B recipe's code path: a from_pretrained folder, LoRA adapters chained from stage to
    # stage, GRPO on a fresh adapter over the frozen SFT one, an LLM judge in the GRPO reward.
    ChatPolicy.tiny("audio").save(tmp_path / "audio_llm")
    ChatPolicy.tiny("text").save(tmp_path / "judge_llm")
    toy = dict(corpus_size="quick", hl_steps=3, cot_steps=3, grpo_steps=2, sft_batch_size=4,
               batch_size=2, num_generations=2, max_new_tokens=16, eval_batch_size=16,
               val_points=1, judge_runs=2, judge_temperature=1.0, loss_type="reinforce", beta=0.1)
    cfg = HirConfig(**toy, out_dir=str(tmp_path / "run"), corpus_root=f"{corpus}_quick",
                    model=str(tmp_path / "audio_llm"), lora_r=4, lora_alpha=8, grpo_lora_r=2,
                    grpo_lora_alpha=4, judge="llm", judge_model=str(tmp_path / "judge_llm"),
                    stages=["hl_sft", "hl_cot_sft", "grpo"], grpo_init="hl_cot_sft",
                    grpo_grounding=False, reward_weights=dict(correctness=0.6, format=0.1, judge=0.3))
    summary = run_experiment(cfg)
    assert sorted(summary) == ["Qwen2-Audio: Train-1-HL", "Qwen2-Audio: Train-1-HL -> Train-2-R",
                               "Qwen2-Audio: Train-1-HL -> Train-2-R + GRPO"]
    for stage, rank in (("hl_sft", 4), ("hl_cot_sft", 4), ("grpo", 4 + 2)):
        for kept in ("best", "last"):  # only adapters are saved, each a peft folder
            folder = tmp_path / "run" / "seed0" / stage / kept / "model"
            assert sorted(p.name for p in folder.iterdir()) == ["adapter_config.json",
                                                                "adapter_model.safetensors"]
            assert json.loads((folder / "adapter_config.json").read_text())["r"] == rank
    log = [json.loads(line) for line in
           (tmp_path / "run" / "seed0" / "grpo" / "metrics.jsonl").read_text().splitlines()]
    assert log[0]["kl"] == 0.0  # the reference is the SFT model (departure 8)
    assert all(row["reward_judge"] == 0.0 for row in log if "reward_judge" in row)
    cot = summary["Qwen2-Audio: Train-1-HL -> Train-2-R"]["Test-2-R"]
    assert cot["judge"] == (0.0, 0.0) and cot["judge_runs"] == (2.0, 0.0)  # garbage judge -> 0


def test_hir_recipes_load_and_use_the_papers_code_settings():
    """Both recipes are valid configs; the 7B one has the code's LoRA shapes, SFT schedule and
    GRPO objective (docs/hir.md, departures)."""
    from train import config_from_args
    mini, real = (config_from_args(HirConfig, [], json.loads(open(f"configs/{n}.json").read()))
                  for n in ("hir_mini", "hir_qwen2audio7b"))
    assert mini.loss_type == real.loss_type == "reinforce"
    assert (real.lora_r, real.lora_alpha, real.lora_dropout) == (256, 32, 0.1)  # unified_training
    assert (real.grpo_lora_r, real.grpo_lora_alpha) == (128, 256)  # salmon_grpo
    assert (real.sft_lr, real.sft_lr * real.sft_lr_floor) == (1e-4, pytest.approx(1e-6))
    assert (real.beta, real.temperature, real.top_p) == (0.1, 0.7, 0.8)
    assert mini.out_dir == "runs/hir_mini" and mini.seeds == 3
