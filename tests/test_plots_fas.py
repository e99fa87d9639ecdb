"""plots.py, face section: headless, on a hand-made two-seed run folder; every figure exists and
what it drew equals the saved numbers, averaged here with numpy."""
import json

import numpy as np
import pytest

import plots

pytestmark = pytest.mark.skipif(plots.pyplot() is None, reason="matplotlib is the plots extra")

PROTOS = {"cefa_to_hqwmca": ["cefa_like", "hqwmca_like"],
          "surf_to_hqwmca": ["surf_like", "hqwmca_like"]}


def _rate(seed, *salt):
    """A reproducible number in [0, 0.5) for each (seed, what)."""
    return float(np.random.default_rng([seed, *salt]).uniform(0, 0.5))


@pytest.fixture
def run(tmp_path):
    """out/seed0, out/seed1: results.json, sft and grpo dev.jsonl curves, a GRPO metrics log;
    out/results.json naming both seeds, as fas_experiment writes them."""
    for seed in (0, 1):
        d = tmp_path / f"seed{seed}"
        results = {}
        for k, proto in enumerate(PROTOS):
            results[proto] = {m: dict(hter=_rate(seed, k, j), per_attack={
                "real": _rate(seed, k, j, 1), "print": _rate(seed, k, j, 2)})
                for j, m in enumerate(("zero_shot", "sft", "grpo"))}
        (d / "x").mkdir(parents=True)
        (d / "results.json").write_text(json.dumps(dict(route="fas", seed=seed, results=results,
                                                        config=dict(num_generations=6))))
        for j, (method, source) in enumerate([(m, s) for m in ("sft", "grpo")
                                              for s in ("cefa_like", "surf_like")]):
            rows = [dict(step=step, dev_hter=_rate(seed, j, step), test_hter={
                source: _rate(seed, j, step, 1), "hqwmca_like": _rate(seed, j, step, 2)})
                for step in (0, 50, 100)]
            rows.insert(2, dict(step=75, dev_hter=0.3))       # a dev-only row: not in the curve
            (d / method / source).mkdir(parents=True)
            (d / method / source / "dev.jsonl").write_text(
                "".join(json.dumps(r) + "\n" for r in rows))
        (d / "grpo" / "cefa_like" / "metrics.jsonl").write_text("".join(json.dumps(dict(
            step=s, reward=1.5, reward_cls=0.6, kl=0.01, clip_frac=0.0, completion_length=20,
            equal_share=0.2)) + "\n" for s in (1, 2, 3)))
    (tmp_path / "results.json").write_text(json.dumps(dict(route="fas", seeds=[0, 1],
                                                           runs=["seed0", "seed1"])))
    return tmp_path


def test_every_figure_is_drawn(run):
    paths = plots.redraw(run)
    for name in plots.FAS_FIGURES:
        assert run / "figures" / name in paths and (run / "figures" / name).stat().st_size > 0
    for seed in ("seed0", "seed1"):
        assert (run / seed / "figures" / "grpo_cefa_like_diagnostics.png").exists()


def test_curves_are_the_seed_means_of_the_dev_logs(run, tmp_path):
    drawn = plots.fas_curves(run, tmp_path / "c.png")
    assert set(drawn) == {"sft, source cefa_like", "sft, source surf_like",
                          "grpo, source cefa_like", "grpo, source surf_like"}
    for title, lines in drawn.items():
        method, source = title.split(", source ")
        logs = [[r for r in map(json.loads, (run / s / method / source / "dev.jsonl")
                                   .read_text().splitlines()) if "test_hter" in r]
                for s in ("seed0", "seed1")]
        steps, dev = lines["source dev"]
        assert steps == [0, 50, 100]
        assert np.allclose(dev, 100 * np.mean([[r["dev_hter"] for r in log] for log in logs], 0))
        target = lines["hqwmca_like test"][1]
        assert np.allclose(target, 100 * np.mean([[r["test_hter"]["hqwmca_like"] for r in log]
                                                  for log in logs], 0))


def test_bars_are_mean_and_std_over_seeds(run, tmp_path):
    drawn = plots.fas_hter_bars(run, tmp_path / "b.png")
    seeds = [json.loads((run / s / "results.json").read_text())["results"]
             for s in ("seed0", "seed1")]
    for proto in PROTOS:
        for method in ("zero_shot", "sft", "grpo"):
            v = 100 * np.array([r[proto][method]["hter"] for r in seeds])
            assert drawn[proto][method] == pytest.approx((v.mean(), v.std(ddof=1)))


def test_attack_errors_are_seed_means(run, tmp_path):
    drawn = plots.fas_attack_errors(run, tmp_path / "a.png")
    seeds = [json.loads((run / s / "results.json").read_text())["results"]
             for s in ("seed0", "seed1")]
    for proto in PROTOS:
        for method in ("zero_shot", "sft", "grpo"):
            for attack in ("real", "print"):
                assert drawn[proto][method][attack] == pytest.approx(
                    100 * np.mean([r[proto][method]["per_attack"][attack] for r in seeds]))


def test_a_seed_folder_alone_is_drawn_from_itself(run, tmp_path):
    drawn = plots.fas_hter_bars(run / "seed1", tmp_path / "b.png")
    one = json.loads((run / "seed1" / "results.json").read_text())["results"]
    assert drawn["surf_to_hqwmca"]["grpo"] == pytest.approx(
        (100 * one["surf_to_hqwmca"]["grpo"]["hter"], 0.0))
