"""The HIR section of plots.py, headless: the PNGs exist and what each figure drew equals the
numbers the run saved (results.json, metrics.jsonl)."""
import json

import pytest

import plots


def fake_run(tmp_path):
    summary = {"Qwen2-Audio: Train-1-HL": {"Test-1-HL": {"acc": [80.0, 1.0], "bacc": [78.0, 2.0]}},
               "Qwen2-Audio: Train-2-R": {"Test-1-HL": {"acc": [70.0, 3.0], "bacc": [69.0, 4.0]},
                                          "Test-2-R": {"jaccard": [0.6, 0.05]}}}
    config = dict(stages=["hl_sft", "cot_sft", "grpo"], num_generations=6)
    (tmp_path / "results.json").write_text(json.dumps(dict(route="hir", seeds=[0, 1],
                                                           summary=summary, config=config)))
    for s in (0, 1):
        grpo = [dict(step=k, reward=0.5 + 0.1 * k + s, reward_correctness=0.4 + s,
                     reward_judge=0.2 * k, kl=0.01 * k, clip_frac=0.0, completion_length=90,
                     equal_share=0.3) for k in (1, 2, 3)]
        hl = [dict(step=k, loss=0.1) for k in (1, 2)] + [
            dict(step=2, val_answer_nll=0.5 - 0.1 * s, prior_entropy=0.64, val_bacc=70.0 + s,
                 val_auc=0.8)]
        for stage, rows in (("grpo", grpo), ("hl_sft", hl)):
            (tmp_path / f"seed{s}" / stage).mkdir(parents=True)
            (tmp_path / f"seed{s}" / stage / "metrics.jsonl").write_text(
                "".join(json.dumps(r) + "\n" for r in rows))
    return json.loads((tmp_path / "results.json").read_text())


def test_hir_figures_draw_what_the_run_saved(tmp_path):
    results = fake_run(tmp_path)
    bars = plots.hir_stage_bars(results, tmp_path / "bars.png")
    assert bars["Test-1-HL bacc"] == {"Qwen2-Audio: Train-1-HL": (78.0, 2.0),
                                      "Qwen2-Audio: Train-2-R": (69.0, 4.0)}
    assert bars["Test-2-R jaccard"] == {"Qwen2-Audio: Train-2-R": (0.6, 0.05)}
    rewards = plots.hir_grpo_rewards(tmp_path, [0, 1], tmp_path / "rewards.png")
    assert set(rewards) == {"reward", "reward_correctness", "reward_judge"}
    assert rewards["reward"]["seed 1"] == ([1, 2, 3], [1.6, 1.7, 1.8])
    assert rewards["reward"]["mean"][1] == pytest.approx([1.1, 1.2, 1.3])
    learning = plots.hir_learning(tmp_path, [0, 1], ["format", "hl_sft", "grpo"],
                                  tmp_path / "learning.png")
    assert list(learning) == ["hl_sft"]  # only stages that logged validation rows
    assert learning["hl_sft"]["seed 1 val_answer_nll"] == ([2], [0.4])
    assert learning["hl_sft"]["seed 0 prior_entropy"] == ([2], [0.64])
    pngs = plots.redraw(tmp_path)  # via the route's registered drawer
    assert [p.name for p in pngs] == ["hir_stages.png", "hir_learning.png",
                                      "hir_grpo_rewards.png", "hir_grpo_seed0.png",
                                      "hir_grpo_seed1.png"]
    assert all(p.stat().st_size > 1000 for p in pngs)
    assert all((tmp_path / n).is_file() for n in ("bars.png", "rewards.png", "learning.png"))
