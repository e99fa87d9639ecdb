"""The classifier route's loops: GRPO wiring, exact resume, bf16 autocast, NaN guard, CLI, quick run."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import grpo
import train
from models import SSLClassifier
from synth_speech import make_speech_corpora
from train_classifier import AudioSet, ClassifierConfig, finetune, grpo_step_loss

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    index = make_speech_corpora(root, seed=0, size="quick")
    return {name: AudioSet(dict(spec, name=name), 16000) for name, spec in index.items()
            if name in ("target_train", "target_dev")}


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
    gen = torch.Generator().manual_seed(0)
    loss, stats = grpo_step_loss(model, None, None, labels, cfg, gen)
    loss.backward()
    # Redo the draws with the same seed and compute the gradient by hand.
    N = cfg.num_generations
    drawn = grpo.sample_labels(logits, N, torch.Generator().manual_seed(0))
    rewards = (drawn == labels.repeat_interleave(N)).float()
    A = grpo.group_advantages(rewards, N, scale="group")
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
    loss, _ = grpo_step_loss(model, None, None, torch.tensor([1]), cfg, torch.Generator().manual_seed(1))
    loss.backward()
    g = model.logits.grad[0]
    assert g[1] < 0 < g[0]  # gradient descent raises the true class (index 1 = real)


def test_bf16_autocast_step_on_cpu(corpus):
    cfg = small_cfg(Path("."), beta=0.04)
    model = SSLClassifier.tiny()
    ref = SSLClassifier.tiny()
    wav, lengths, labels = corpus["target_train"].train_batch(cfg, 0)
    with train.autocast(torch.device("cpu"), True):
        loss, stats = grpo_step_loss(model, wav, lengths, labels, cfg, torch.Generator().manual_seed(0), ref)
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
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    summary = results["summary"]
    assert set(summary) == {"post-trained", "sft", "grpo", "sft_grpo", "grpo_noneg"}
    for row in summary.values():
        assert 0 <= row["in-domain"][0] <= 100 and 0 <= row["OOD avg"][0] <= 100
    scores = (tmp_path / "run" / "seed0" / "scores" / "grpo" / "target_test.tsv").read_text()
    assert scores.startswith("filename\tcm-score\n")
