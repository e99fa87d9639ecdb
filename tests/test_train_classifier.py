"""The classifier route's loops: GRPO wiring against the paper's code written out, the SFT->GRPO
reference, dropout, exact resume, bf16 autocast, NaN guard, CLI, batching, windowed scoring."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import grpo
import train
from models import SSLClassifier, tiny_logmel_config, tiny_wav2vec2_config
from synth_speech import make_speech_corpora
from classifier_data import AudioSet, batch_plan, score_set
from train_classifier import (ABLATIONS, ClassifierConfig, build_model, finetune, grpo_step_loss,
                              run_method)

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    index = make_speech_corpora(root, seed=0, size="quick", annotate=False)
    return {name: AudioSet(dict(kind=e["kind"], path=e["path"], audio_dir=e["audio_dir"],
                                name=name), 16000)
            for name, e in index.items() if name in ("target_train", "target_dev")}


def small_cfg(tmp_path, **kw):
    base = dict(out_dir=str(tmp_path), batch_size=4, steps=4, lr=1e-3, num_generations=8,
                eval_every=2, train_min_sec=0.5, train_max_sec=0.7, old_refresh=3, device="cpu")
    base.update(kw)
    return ClassifierConfig(**base)


class FixedLogits(torch.nn.Module):
    """A stand-in policy: its logits are a parameter, so the gradient can be worked by hand."""

    def __init__(self, logits):
        super().__init__()
        self.logits = torch.nn.Parameter(logits.clone())

    def forward(self, wav, lengths):
        return self.logits, None


def test_grpo_step_gradient_matches_closed_form():
    # With old = detached current and beta = 0 the loss gradient is -1/(B*N) sum_i A_i grad log p(o_i).
    logits = torch.tensor([[0.3, -0.2], [1.5, 0.1], [-0.4, 0.9]])
    labels = torch.tensor([1, 0, 1])
    cfg = ClassifierConfig(num_generations=16, beta=0.0, adv_scale="group")
    model = FixedLogits(logits)
    gens = lambda: [torch.Generator().manual_seed(b) for b in range(3)]  # noqa: E731
    loss, stats = grpo_step_loss(model, None, None, labels, cfg, gens())
    loss.backward()
    # Redo the draws with the same seeds and compute the gradient by hand.
    N = cfg.num_generations
    drawn = torch.cat([grpo.sample_labels(logits[b:b + 1], N, g) for b, g in enumerate(gens())])
    rewards = (drawn == labels.repeat_interleave(N)).float()
    A = grpo.group_advantages(rewards, N, scale="group", eps=cfg.adv_eps)
    p = logits.softmax(-1).repeat_interleave(N, 0)
    onehot = torch.nn.functional.one_hot(drawn, 2).float()
    per_draw = -(A[:, None] * (onehot - p)) / (3 * N)  # d(-A log p_o)/d logits = -A (1[o] - p)
    expected = per_draw.view(3, N, 2).sum(1)
    assert torch.allclose(model.logits.grad, expected, atol=1e-6)
    assert float(stats["reward"]) == pytest.approx(float(rewards.mean()))


def test_negative_reward_ablation_never_pushes_wrong_draws_down():
    # Raw 1/0 advantages: a wrong draw contributes no gradient at all.
    logits = torch.tensor([[0.0, 0.0]])
    cfg = ClassifierConfig(num_generations=32, beta=0.0, adv_scale="raw")
    model = FixedLogits(logits)
    loss, _ = grpo_step_loss(model, None, None, torch.tensor([1]), cfg,
                             [torch.Generator().manual_seed(1)])
    loss.backward()
    g = model.logits.grad[0]
    assert g[1] < 0 < g[0]  # gradient descent raises the true class (index 1 = real)


def test_bf16_autocast_step_on_cpu(corpus):
    cfg = small_cfg(Path("."), beta=0.04)
    model = SSLClassifier.tiny()
    ref = SSLClassifier.tiny()
    idx = batch_plan(cfg, corpus["target_train"])[0](0)
    wav, lengths, labels = corpus["target_train"].batch(idx, range(len(idx)), cfg, 0)
    with train.autocast(torch.device("cpu"), True):
        loss, stats = grpo_step_loss(model, wav, lengths, labels, cfg,
                                     [torch.Generator().manual_seed(b) for b in range(4)], ref)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())
    assert float(stats["kl"]) >= 0


def _weights(folder):
    return SSLClassifier.load(folder).state_dict()


def test_exact_resume(tmp_path, corpus):
    # A run stopped after step 2 and resumed ends with the same weights as an uninterrupted one,
    # through a refresh period of the old policy (old_refresh = 3) and with beta > 0.
    tr, dev = corpus["target_train"], corpus["target_dev"]
    full = small_cfg(tmp_path / "full")
    finetune(full, "grpo", tmp_path / "full", tr, dev, "tiny")
    part = small_cfg(tmp_path / "part", steps=2)
    finetune(part, "grpo", tmp_path / "part", tr, dev, "tiny")
    resumed = small_cfg(tmp_path / "part", resume=str(tmp_path / "part" / "last"))
    finetune(resumed, "grpo", tmp_path / "part", tr, dev, "tiny")
    a, b = _weights(tmp_path / "full" / "last" / "model"), _weights(tmp_path / "part" / "last" / "model")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    rows = [json.loads(l) for l in open(tmp_path / "part" / "metrics.jsonl")]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3, 4]  # the log continues, not restarts


def test_nan_stops_and_keeps_last_good_checkpoint(tmp_path, corpus, monkeypatch):
    tr, dev = corpus["target_train"], corpus["target_dev"]
    cfg = small_cfg(tmp_path, steps=6, eval_every=2)
    original = SSLClassifier.forward
    calls = {"n": 0}

    def poisoned(self, wav, lengths=None):
        logits, pooled = original(self, wav, lengths)
        if self.training:
            calls["n"] += 1
            if calls["n"] == 4:  # the 4th training forward (step 4) goes NaN
                logits = logits * float("nan")
        return logits, pooled

    monkeypatch.setattr(SSLClassifier, "forward", poisoned)
    with pytest.raises(train.NonFiniteLoss, match="step 3"):
        finetune(cfg, "sft", tmp_path, tr, dev, "tiny")
    state = train.load_trainer_state(tmp_path / "last")
    assert state["step"] == 2  # the checkpoint written at step 2 is intact and loadable
    SSLClassifier.load(tmp_path / "last" / "model")


def test_config_recipe_and_cli(tmp_path):
    cfg = train.config_from_args(ClassifierConfig, ["--lr", "0.5", "--methods", '["sft"]'],
                                 {"route": "classifier", "steps": 7})
    assert (cfg.lr, cfg.steps, cfg.methods) == (0.5, 7, ["sft"])
    with pytest.raises(ValueError, match="stepz"):
        train.config_from_args(ClassifierConfig, [], {"stepz": 1})


def test_quick_main_job(tmp_path):
    """`python train.py --quick`: the whole miniature at toy size, end to end."""
    out = subprocess.run(
        [sys.executable, "train.py", "--quick", "--out_dir", str(tmp_path / "run"),
         "--corpus_root", str(tmp_path / "corpus")],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "EER (%)" in out.stdout and "OOD avg" in out.stdout
    run = tmp_path / "run_quick"  # a quick run never writes over a full run's folder
    assert not (tmp_path / "run").exists()
    results = json.loads((run / "results.json").read_text())
    assert results["route"] == "classifier" and (run / "tables.md").read_text().startswith("EER")
    summary = results["summary"]
    assert set(summary) == {"post-trained", "sft", "grpo", "sft_grpo", "grpo_noneg"}
    for row in summary.values():
        assert 0 <= row["in-domain"][0] <= 100 and 0 <= row["OOD avg"][0] <= 100
    scores = (run / "seed0" / "scores" / "grpo" / "target_test.tsv").read_text()
    assert scores.startswith("filename\tcm-score\n")
    # the trajectory starts at the post-trained model and has a point per evaluation step
    traj = results["per_seed"][0]["trajectories"]["sft_grpo"]
    post = results["per_seed"][0]["models"]["post-trained"]
    assert traj["step"] == [0, 3, 6, 9, 12]  # SFT stage (6 steps) then GRPO stage (6 steps)
    ins = [v["eer"] for v in post.values() if v["domain"] == "in"]
    assert traj["in-domain"][0] == pytest.approx(sum(ins) / len(ins))


# ---------------------------------------------------------------- the paper's code, written out

def _antideepfake_grpo3(logits, logits_ref, logits_old, sa_labels, gt_labels, beta, eps, std_floor):
    """AntiDeepfake algo/rl.py grpo3_loss, retyped step by step (T = 1, flattened B x M)."""
    M = sa_labels.shape[-1]
    lg, lr, lo = (x.repeat_interleave(M, 0) for x in (logits, logits_ref, logits_old))
    gt, sa = gt_labels.repeat_interleave(M), sa_labels.flatten()
    reward = (gt == sa).float()
    reward_norm = (reward - reward.mean()) / (reward.std() + std_floor)
    logp = -torch.nn.functional.cross_entropy(lg, sa, reduction="none")
    logp_old = -torch.nn.functional.cross_entropy(lo, sa, reduction="none")
    r_ = torch.exp(logp - logp_old)
    r_clipped = torch.clamp(r_, 1 - eps, 1 + eps)
    lp = torch.log_softmax(lg, -1).gather(1, sa[:, None])[:, 0]
    lp_ref = torch.log_softmax(lr, -1).gather(1, sa[:, None])[:, 0]
    kl = torch.exp(lp_ref - lp) - (lp_ref - lp) - 1
    return -(torch.min(r_ * reward_norm, r_clipped * reward_norm) - beta * kl).mean()


def _antideepfake_degraded(logits, logits_ref, sa_labels, gt_labels, beta):
    """AntiDeepfake algo/rl.py grpo3_degraded_ref (the paper's 'without negative reward')."""
    M = sa_labels.shape[-1]
    lg, lr = logits.repeat_interleave(M, 0), logits_ref.repeat_interleave(M, 0)
    gt, sa = gt_labels.repeat_interleave(M), sa_labels.flatten()
    reward = (gt == sa).float()
    logp = -torch.nn.functional.cross_entropy(lg, sa, reduction="none")
    lp_ref = torch.log_softmax(lr, -1).gather(1, sa[:, None])[:, 0]
    kl = torch.exp(lp_ref - logp) - (lp_ref - logp) - 1
    return -(logp * reward - beta * kl).mean()


@pytest.mark.parametrize("method", ["grpo", "grpo_noneg"])
def test_grpo_losses_equal_the_papers_code(method):
    torch.manual_seed(0)
    logits, ref, old = (torch.randn(5, 2) for _ in range(3))
    labels = torch.tensor([1, 0, 0, 1, 1])
    cfg = ClassifierConfig(num_generations=64, beta=0.04, clip_eps=0.2)
    cfg = ClassifierConfig(**{**cfg.__dict__, **ABLATIONS.get(method, {})})
    model = FixedLogits(logits)
    gens = lambda: [torch.Generator().manual_seed(3 + b) for b in range(5)]  # noqa: E731
    old_model = FixedLogits(old) if method == "grpo" else None
    loss, _ = grpo_step_loss(model, None, None, labels, cfg, gens(), FixedLogits(ref), old_model)
    drawn = torch.stack([grpo.sample_labels(logits[b:b + 1], 64, g)
                         for b, g in enumerate(gens())])  # (5, 64): the paper's sa_labels
    if method == "grpo":
        expected = _antideepfake_grpo3(logits, ref, old, drawn, labels, 0.04, 0.2, 1e-5)
    else:
        expected = _antideepfake_degraded(logits, ref, drawn, labels, 0.04)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    g_ours = torch.autograd.grad(loss, model.logits)[0]
    lg = logits.clone().requires_grad_()
    e = (_antideepfake_grpo3(lg, ref, old, drawn, labels, 0.04, 0.2, 1e-5) if method == "grpo"
         else _antideepfake_degraded(lg, ref, drawn, labels, 0.04))
    torch.testing.assert_close(g_ours, torch.autograd.grad(e, lg)[0], rtol=1e-4, atol=1e-7)


def _dropout_tiny(seed=0):
    return SSLClassifier.from_config(tiny_logmel_config(hidden_dropout=0.1, attention_dropout=0.1,
                                                        activation_dropout=0.1, layerdrop=0.1),
                                     seed=seed, front_end="logmel")


def test_grpo_scores_policy_reference_and_old_in_one_mode(tmp_path, corpus):
    # with dropout and layerdrop configured, the first GRPO step has ratio exactly 1 and KL 0:
    # policy, reference and old policy are the same function (departure 2)
    _dropout_tiny().save_pretrained(tmp_path / "start")
    cfg = small_cfg(tmp_path / "run", steps=1, beta=0.04, old_refresh=3, model="tiny-logmel")
    finetune(cfg, "grpo", tmp_path / "run", corpus["target_train"], corpus["target_dev"],
             str(tmp_path / "start"))
    row = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert row["ratio"] == 1.0 and row["kl"] == 0.0 and row["clip_frac"] == 0.0


def test_exact_resume_with_dropout_on(tmp_path, corpus):
    # SFT trains in train mode (dropout on): the per-step seed makes a resumed run exact
    _dropout_tiny().save_pretrained(tmp_path / "start")
    tr, dev, start = corpus["target_train"], corpus["target_dev"], str(tmp_path / "start")
    finetune(small_cfg(tmp_path / "full"), "sft", tmp_path / "full", tr, dev, start)
    finetune(small_cfg(tmp_path / "part", steps=2), "sft", tmp_path / "part", tr, dev, start)
    finetune(small_cfg(tmp_path / "part", resume=str(tmp_path / "part" / "last")), "sft",
             tmp_path / "part", tr, dev, start)
    a, b = _weights(tmp_path / "full" / "last" / "model"), _weights(tmp_path / "part" / "last" / "model")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_sft_then_grpo_keeps_the_start_model_as_reference(tmp_path, corpus):
    # the GRPO stage of sft_grpo starts from the SFT model but its KL is to the start model:
    # at its first step the KL is already > 0, while plain GRPO starts at KL 0
    tr, dev = corpus["target_train"], corpus["target_dev"]
    SSLClassifier.tiny_logmel().save_pretrained(tmp_path / "start")
    cfg = small_cfg(tmp_path, steps=3, eval_every=3, lr=3e-3)
    run_method(cfg, "sft_grpo", tmp_path / "sg", tr, dev, str(tmp_path / "start"))
    first = json.loads((tmp_path / "sg" / "grpo" / "metrics.jsonl").read_text().splitlines()[0])
    assert first["kl"] > 1e-6
    assert json.loads((tmp_path / "sg" / "sft" / "config.json").read_text())["steps"] == 3
    assert json.loads((tmp_path / "sg" / "grpo" / "config.json").read_text())["steps"] == 3


def test_hub_encoder_head_uses_the_run_seed(tmp_path):
    from transformers import Wav2Vec2Model
    Wav2Vec2Model(tiny_wav2vec2_config()).save_pretrained(tmp_path / "enc")
    heads = [build_model(ClassifierConfig(seed=s), str(tmp_path / "enc")).head.weight
             for s in (1, 1, 2)]
    assert torch.equal(heads[0], heads[1]) and not torch.equal(heads[0], heads[2])


# ---------------------------------------------------------------- batching and scoring

def test_dynamic_batches_cover_each_epoch_and_respect_the_budget():
    seconds = [3.0, 7.5, 12.0, 1.0, 4.0, 9.0, 13.0, 2.5, 6.0, 30.0]
    plan = train.DynamicBatches(seconds, 20.0, seed=5)
    per_epoch = plan.steps_in(1)
    batches = [plan(k).tolist() for k in range(per_epoch)]
    assert sorted(i for b in batches for i in b) == list(range(len(seconds)))
    assert all(sum(seconds[i] for i in b) <= 20.0 or len(b) == 1 for b in batches)
    # derived from (seed, step) alone: a fresh plan asked for step k gives the same batch
    fresh = train.DynamicBatches(seconds, 20.0, seed=5)
    assert fresh(per_epoch + 1).tolist() == plan(per_epoch + 1).tolist()
    assert plan.steps_in(2) == per_epoch + len(plan.epoch(1))


def test_max_epochs_caps_the_steps(corpus):
    cfg = small_cfg(Path("."), steps=1000, max_epochs=2, batch_size=4)
    n = len(corpus["target_train"].samples)
    assert batch_plan(cfg, corpus["target_train"])[1] == 2 * (n // 4)


def test_long_clips_are_scored_in_windows(tmp_path, corpus):
    # a 2.2 s clip with 1 s windows: its score is the length-weighted mean of the scores of its
    # windows [0, 1), [1, 2.2) s (the 0.2 s tail, under a quarter window, joins the last one),
    # each scored alone
    model = SSLClassifier.tiny_logmel(seed=4).eval()
    x = torch.randn(int(2.2 * 16000)).numpy()
    import soundfile as sf
    sf.write(tmp_path / "a.wav", x, 16000, subtype="FLOAT")
    sf.write(tmp_path / "b.wav", x[:16000], 16000, subtype="FLOAT")
    (tmp_path / "m.csv").write_text("path,label\na.wav,real\nb.wav,fake\n")
    s = AudioSet(dict(kind="manifest", path=str(tmp_path / "m.csv")), 16000)
    scores, emb = score_set(model, s, torch.device("cpu"), max_seconds=1.0)
    parts = [x[:16000], x[16000:]]
    with torch.no_grad():
        outs = [model(torch.tensor(p)[None]) for p in parts]
    w = torch.tensor([len(p) for p in parts], dtype=torch.float64)
    diff = torch.tensor([float(o[0][0, 1] - o[0][0, 0]) for o in outs], dtype=torch.float64)
    assert scores[0] == pytest.approx(float((w * diff).sum() / w.sum()), rel=1e-5)
    pooled = torch.stack([o[1][0].double() for o in outs])
    torch.testing.assert_close(torch.tensor(emb[0], dtype=torch.float64),
                               (w[:, None] * pooled).sum(0) / w.sum(), rtol=1e-5, atol=1e-6)


def test_real_recipe_follows_the_papers_code():
    recipe = json.loads((ROOT / "configs" / "classifier_xlsr2b_dfe24.json").read_text())
    # AntiDeepfake hparams/ft_grpo/xlsr_2b_pre-post-grpo_v1.yaml, value by value
    paper = dict(lr=1e-6, adam_eps=1e-6, weight_decay=0.01, grad_clip=100.0, warmup_steps=80000,
                 steps=50000, max_epochs=10, eval_every=20000, max_batch_seconds=100,
                 rawboost_algo=5, train_min_sec=10.0, train_max_sec=13.0, num_generations=64,
                 beta=0.04, clip_eps=0.2, adv_scale="batch", adv_eps=1e-5, old_refresh=1000)
    assert {k: recipe[k] for k in paper} == paper
    cfg = train.config_from_args(ClassifierConfig, [], recipe)
    # validation on ASVspoof 2019 LA dev, also the drift reference; never a test set
    assert cfg.dev_set == cfg.reference_set and "LA_dev" in cfg.dev_set["audio_dir"]
    assert all(t["path"] != cfg.dev_set["path"] for t in cfg.test_sets)
    dfe = [t for t in cfg.test_sets if t["domain"] == "in"]
    assert [t["segments"] for t in dfe] == [[4, 10, 13, 30, 50]]
    # the warm-up never completes within the step limit: the peak lr is 1e-6 * 50000 / 80000
    lam = train.warmup_lambda(cfg.warmup_steps)
    assert cfg.lr * lam(cfg.steps - 1) == pytest.approx(6.25e-7)


def test_route_modules_import_one_way():
    # the loop never imports the experiment (the experiment imports the loop)
    import ast
    tree = ast.parse((ROOT / "train_classifier.py").read_text())
    names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert "classifier_experiment" not in names
