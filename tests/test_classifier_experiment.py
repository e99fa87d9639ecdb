"""The classifier route's experiment: Deepfake-Eval-2024 scored by segments, score mode on any
checkpoint, own data end to end, and the figures against the numbers in results.json."""

import numpy as np
import pytest
import soundfile as sf
import torch

import classifier_experiment as cx
import plots
import synth_speech as S
from eval import compute_eer
from models import SSLClassifier
from train_classifier import ClassifierConfig

SR = 16000


@pytest.fixture(scope="module")
def long_clips(tmp_path_factory):
    """A Deepfake-Eval-2024-style folder of 8 synthetic clips of 5-12 s, half of them fake."""
    root = tmp_path_factory.mktemp("dfe")
    (root / "audio-data").mkdir()
    lines = ["Filename,Ground Truth,Finetuning Set"]
    for i in range(8):
        x, rec = S.synth_sample(0, "target_test", i, duration=(5.0, 12.0))
        sf.write(root / "audio-data" / f"c{i}.wav", x, SR)
        lines.append(f"c{i}.wav,{'Real' if rec['label'] == 'real' else 'Fake'},test")
    (root / "meta.csv").write_text("\n".join(lines) + "\n")
    return root


def test_segmented_test_set_is_the_mean_over_segment_lengths(long_clips):
    spec = dict(name="DFE24", domain="in", kind="dfe2024", path=str(long_clips / "meta.csv"),
                audio_dir=str(long_clips / "audio-data"), segments=[4, 10])
    cfg = ClassifierConfig(device="cpu", eval_batch_size=4)
    tests = cx.load_tests(cfg, [spec])
    assert [t.name for t in tests] == ["DFE24@4s", "DFE24@10s"]
    model = SSLClassifier.tiny_logmel(seed=1).eval()
    result = cx.score_model(cfg, model, tests, None)
    # independently: cut each clip with numpy, score each piece alone, EER per length
    eers = []
    for L in (4, 10):
        bona, spoof = [], []
        for i in range(8):
            x, sr = sf.read(long_clips / "audio-data" / f"c{i}.wav", dtype="float32")
            real = i % 2 == 0  # target_test: every second sample is bona fide
            for k in range(int(np.ceil(len(x) / (L * SR)))):
                piece = torch.tensor(x[k * L * SR:(k + 1) * L * SR])[None]
                with torch.no_grad():
                    logits, _ = model(piece)
                (bona if real else spoof).append(float(logits[0, 1] - logits[0, 0]))
        eers.append(100 * compute_eer(bona, spoof)[0])
        assert len(bona) + len(spoof) == len(tests[len(eers) - 1].samples)
    assert [result[f"DFE24@{L}s"]["eer"] for L in (4, 10)] == pytest.approx(eers, abs=1e-6)
    means = cx.domain_means(result)
    assert means == {"in-domain": pytest.approx(np.mean(eers))}  # no OOD set: no "OOD avg"
    for r in result.values():
        r["domain"] = "out"
    assert cx.domain_means(result) == {"DFE24": pytest.approx(np.mean(eers)),
                                       "OOD avg": pytest.approx(np.mean(eers))}  # no in-domain


def test_score_mode_needs_only_init_and_test_sets(tmp_path, long_clips):
    SSLClassifier.tiny_logmel().save_pretrained(tmp_path / "ckpt")
    spec = dict(name="mine", kind="dfe2024", path=str(long_clips / "meta.csv"),
                audio_dir=str(long_clips / "audio-data"))
    cfg = ClassifierConfig(mode="score", init=str(tmp_path / "ckpt"), test_sets=[spec],
                           out_dir=str(tmp_path / "eval"), device="cpu")
    summary = cx.run(cfg)
    assert set(summary["checkpoint"]) == {"in-domain"}
    text = (tmp_path / "eval" / "tables.md").read_text()
    assert "nan" not in text and "Drift" not in text and "CPU miniature" not in text
    assert "in-domain: mine" in text  # the column names the user's set
    names = (tmp_path / "eval" / "scores" / "mine.tsv").read_text().splitlines()[1:]
    assert [n.split("\t")[0] for n in names] == [f"c{i}" for i in range(8)]
    with pytest.raises(ValueError, match="--test_sets"):
        cx.run(ClassifierConfig(mode="score", init=str(tmp_path / "ckpt")))


def _results(rng):
    """A results.json of 2 seeds, 2 methods, 2 test sets, made up (what the figures read)."""
    def det():
        frr = np.sort(rng.random(5)).tolist()
        return [frr, sorted(rng.random(5).tolist(), reverse=True)]
    per_seed = []
    for seed in (0, 1):
        models = {m: {t: dict(eer=float(rng.random() * 50), group=t, domain=d, det=det(),
                              drift=float(rng.random()))
                      for t, d in (("target_test", "in"), ("ood_for", "out"))}
                  for m in ("post-trained", "sft", "grpo")}
        traj = {m: {"step": [0, 50, 100], "in-domain": rng.random(3).tolist(),
                    "OOD avg": rng.random(3).tolist()} for m in ("sft", "grpo")}
        per_seed.append(dict(seed=seed, models=models, trajectories=traj))
    return dict(route="classifier", per_seed=per_seed, summary=cx.summarize(per_seed))


def test_figures_draw_the_saved_numbers(tmp_path):
    results = _results(np.random.default_rng(0))
    drawn = plots.classifier_trajectory(results, tmp_path / "t.png")
    for method, (ins, ood, steps) in drawn.items():
        runs = [r["trajectories"][method] for r in results["per_seed"]]
        assert steps == runs[0]["step"]
        assert ins == pytest.approx(np.mean([r["in-domain"] for r in runs], 0).tolist())
        assert ood == pytest.approx(np.mean([r["OOD avg"] for r in runs], 0).tolist())
    det = plots.classifier_det(results, tmp_path / "d.png")
    models = results["per_seed"][0]["models"]
    assert det["target_test"]["sft"] == tuple(models["sft"]["target_test"]["det"])
    drift = plots.classifier_drift(results, tmp_path / "r.png")
    assert drift["grpo"]["ood_for"] == results["summary"]["grpo"]["drift ood_for"][0]
    assert drift["grpo"]["ood_for"] == pytest.approx(
        np.mean([r["models"]["grpo"]["ood_for"]["drift"] for r in results["per_seed"]]))
    assert all((tmp_path / f).stat().st_size > 1000 for f in ("t.png", "d.png", "r.png"))


def test_without_matplotlib_a_run_says_how_to_get_the_figures(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(plots, "pyplot", lambda: None)
    cx.finish(ClassifierConfig(), tmp_path, dict(per_seed=[], summary={}), "EER table")
    out = capsys.readouterr().out
    assert "matplotlib is not installed" in out and f"python plots.py {tmp_path}" in out
    assert (tmp_path / "tables.md").read_text() == "EER table\n"
