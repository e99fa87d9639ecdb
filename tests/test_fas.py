"""The face route's experiment (fas_experiment.py) on the tiny Qwen2.5-VL, CPU only.

Checked against independent numbers: error rates recounted by hand from the saved predictions,
the GRPO objective re-evaluated on the same rollout after a step, rewards worked out by hand.
"""
import dataclasses
import json

import numpy as np
import pytest
import torch
from PIL import Image

import fas_experiment as fx
import grpo
import train
from chat import ChatPolicy
from train_chat import ChatExample, grpo_stage


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("fas")
    cfg = fx.FasConfig(out_dir=str(root / "out"), corpus_root=str(root / "corpus"),
                       standin_root=str(root / "standin"), quick=True, device="cpu", **fx.QUICK)
    fx.run_experiment(cfg)
    return root / "out_quick" / "seed0"                    # quick runs get their own out_dir


def test_quick_experiment_writes_every_protocol_and_method(quick_run):
    report = json.loads((quick_run / "results.json").read_text())
    results = report["results"]
    assert set(results) == set(fx.PROTOCOLS)
    for proto, by_method in results.items():
        expected = {"zero_shot", "sft", "grpo"}
        if proto in report["config"]["ablation_protocols"]:
            expected |= {"grpo_wo_cls", "grpo_wo_res", "grpo_wo_format"}
        assert set(by_method) == expected, proto
        for r in by_method.values():
            for k in ("frr", "far", "hter"):
                assert 0.0 <= r[k] <= 1.0
    assert report["route"] == "fas"
    summary = json.loads((quick_run.parent / "results.json").read_text())
    assert summary["route"] == "fas" and summary["runs"] == ["seed0"]
    assert (quick_run / "tables.md").exists() and (quick_run.parent / "tables.md").exists()
    assert (quick_run.parent / "figures" / "fas_curves.png").exists()


def test_error_rates_match_a_recount_of_the_saved_predictions(quick_run):
    report = json.loads((quick_run / "results.json").read_text())
    results = report["results"]
    splits = fx.load_splits(fx.FasConfig(**report["config"]))
    for proto, by_method in results.items():
        source = report["config"]["protocols"][proto][0]
        shared = {ex.meta["attack"] for ex in fx.pick(splits, source, "train")} - {"real"}
        for method, r in by_method.items():
            path = quick_run / "predictions" / proto / f"{method}.jsonl"
            rows = [json.loads(line) for line in path.read_text().splitlines()]
            real = [row for row in rows if row["label"] == "real"]
            fake = [row for row in rows if row["label"] == "fake"]
            frr = sum(row["pred"] != "real" for row in real) / len(real)
            far = sum(row["pred"] != "fake" for row in fake) / len(fake)
            assert r["frr"] == pytest.approx(frr, abs=1e-12)
            assert r["far"] == pytest.approx(far, abs=1e-12)
            assert r["hter"] == pytest.approx((frr + far) / 2, abs=1e-12)
            for attack, rate in r["per_attack"].items():
                group = real if attack == "real" else [x for x in fake if x["attack"] == attack]
                assert rate == pytest.approx(
                    sum(x["pred"] != x["label"] for x in group) / len(group), abs=1e-12)
            # the prediction is the strict parse of the saved text, never something else
            assert all(row["pred"] == fx.parse_answer(row["text"]) for row in rows)
            # HTER on the shared / unseen attack types: FRR with the FAR of that group's fakes
            for group, fakes in (("shared", [x for x in fake if x["attack"] in shared]),
                                 ("unseen", [x for x in fake if x["attack"] not in shared])):
                if fakes:
                    far_g = sum(x["pred"] != "fake" for x in fakes) / len(fakes)
                    assert r[f"hter_{group}"] == pytest.approx((frr + far_g) / 2, abs=1e-12)
                else:
                    assert r[f"hter_{group}"] is None


def test_checkpoint_choice_is_the_first_minimum_of_the_source_dev_hter(quick_run):
    results = json.loads((quick_run / "results.json").read_text())["results"]
    r = results["surf_to_siwmv2"]["grpo"]
    dev = [json.loads(line) for line in
           (quick_run / "grpo" / "surf_like" / "dev.jsonl").read_text().splitlines()]
    assert dev[0]["step"] == 0                       # the start point: logged, never chosen
    best = min(dev[1:], key=lambda d: d["dev_hter"])  # min returns the first of equal keys
    assert (r["best_step"], r["dev_hter"]) == (best["step"], best["dev_hter"])


def test_reward_ablation_switches_reach_the_logged_rewards(quick_run):
    """Each ablated part is 0 at every GRPO step; the full reward logs all three parts."""
    def log(method):
        path = quick_run / method / "cefa_like" / "metrics.jsonl"
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        return [r for r in rows if "dev_hter" not in r]  # the step rows, not the dev scores
    for method, part in (("grpo_wo_cls", "cls"), ("grpo_wo_res", "res"),
                         ("grpo_wo_format", "format")):
        rows = log(method)
        assert rows and all(row[f"reward_{part}"] == 0.0 for row in rows)
        for row in rows:  # the total is the sum of the parts that remain
            assert row["reward"] == pytest.approx(
                sum(row[f"reward_{k}"] for k in ("format", "cls", "res")), abs=1e-5)
    assert {"reward_format", "reward_cls", "reward_res", "equal_share",
            "completion_length"} <= set(log("grpo")[0])


def test_reward_function_by_hand():
    cfg = fx.FasConfig(L=100)
    text = "<thinking>I look at the face.</thinking><answer>real</answer>"   # 61 characters
    ex = [ChatExample(None, "", "real"), ChatExample(None, "", "fake")]
    expected = {  # (correct "real", wrong for "fake"): format + cls + res, res = +-61/100
        "grpo": ([1.0 + 1.0 + 0.61], [1.0 + 0.0 - 0.61]),
        "grpo_wo_cls": ([1.0 + 0.61], [1.0 - 0.61]),
        "grpo_wo_res": ([2.0], [1.0]),
        "grpo_wo_format": ([1.0 + 0.61], [-0.61]),
    }
    assert len(text) == 61
    for method, (right, wrong) in expected.items():
        fn = fx.reward_function(cfg, **fx.method_switches(cfg, method))
        total, parts = fn([text, text], ex, torch.tensor([20, 20]))
        assert torch.allclose(total, torch.tensor(right + wrong, dtype=total.dtype)), method
        assert torch.allclose(total, parts["format"] + parts["cls"] + parts["res"])
    # the config's own switches drive the "grpo" method
    off = fx.FasConfig(use_res=False)
    assert fx.method_switches(off, "grpo") == dict(use_format=True, use_cls=True, use_res=False)


def test_batch_size_counts_images_for_both_methods(tmp_path, monkeypatch):
    """batch_size 4 with N = 3 (departure 8): an SFT step takes 4 examples; a GRPO step, run
    for real, rewards 4 distinct images x 3 samples = 12 completions, at grpo_lr."""
    sft_seen, rewarded = [], []
    def sft_stage(policy, ex, cfg, out, steps, validate):
        sft_seen.append(cfg.batch_size)
        validate(steps)
    monkeypatch.setattr(fx, "sft_stage", sft_stage)
    monkeypatch.setattr(fx, "evaluate", lambda *a: (dict(hter=0.5, malformed=0.0), []))
    real_reward = fx.reward_function

    def counting(cfg, **switches):
        fn = real_reward(cfg, **switches)

        def reward_fn(texts, examples, lengths):
            rewarded.append((len(texts), len({id(ex) for ex in examples})))
            return fn(texts, examples, lengths)
        return reward_fn
    monkeypatch.setattr(fx, "reward_function", counting)
    rng = np.random.default_rng(0)
    examples = [ChatExample(Image.fromarray(rng.integers(0, 256, (56, 56, 3), dtype=np.uint8)),
                            fx.PROMPT, ("real", "fake")[i % 2]) for i in range(8)]
    ChatPolicy.tiny("image", seed=0).save(tmp_path / "base")
    cfg = fx.FasConfig(device="cpu", batch_size=4, num_generations=3, sft_steps=1, grpo_steps=1,
                       eval_every=1, max_new_tokens=6, beta=0.0, lr=1e-3, grpo_lr=3e-4)
    for method in ("sft", "grpo"):
        fx.train_method(cfg, method, str(tmp_path / "base"), examples, examples, tmp_path / method)
    assert sft_seen == [4] and rewarded == [(12, 4)]
    log = [json.loads(line) for line in open(tmp_path / "grpo" / "metrics.jsonl")]
    assert [r["lr"] for r in log if "lr" in r] == [pytest.approx(3e-4)]  # GRPO at its own rate
    assert log[-1] == dict(step=1, time=log[-1]["time"], dev_hter=0.5)  # the dev score, logged


def test_data_fraction_subsamples_deterministically():
    items = list(range(100))
    quarter = fx.subsample(items, 0.25, seed=7)
    assert quarter == fx.subsample(items, 0.25, seed=7) and len(quarter) == 25
    assert set(quarter) <= set(fx.subsample(items, 0.5, seed=7))   # nested fractions
    assert quarter != fx.subsample(items, 0.25, seed=8)
    assert fx.subsample(items, 1.0, seed=7) == items
    with pytest.raises(ValueError, match="data_fraction"):
        fx.subsample(items, 0.0, seed=7)


def test_grpo_step_moves_log_probs_the_way_the_loss_says(tmp_path):
    """One grpo_stage step with fas_reward on the tiny VL model, beta = 0: the objective
    sum_i A_i * mean_t log pi(o_it), re-evaluated on the very rollout the step used, rises;
    completions with A > 0 gain log-probability relative to those with A < 0."""
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (56, 56, 3), dtype=np.uint8))
              for _ in range(3)]
    examples = [ChatExample(im, fx.PROMPT, y) for im, y in zip(images, ("real", "fake", "real"))]
    cfg = fx.FasConfig(device="cpu", batch_size=3, num_generations=4, max_new_tokens=10,
                       beta=0.0, lr=1e-3, L=40)
    policy = ChatPolicy.tiny("image", seed=0)
    # The rollout grpo_stage will draw at step 0: same batch order, same sampling seed.
    batch_ex = [examples[i] for i in train.batch_indices(3, 3, cfg.seed, 0)]
    batch = policy.encode_prompts([ex.media for ex in batch_ex], [ex.question for ex in batch_ex])
    rollout = policy.generate(batch, 4, cfg.max_new_tokens, cfg.temperature, cfg.top_p,
                              seed=train.seed_for(cfg.seed, 0))
    reward_fn = fx.reward_function(cfg)
    mask = rollout.completion_mask.float()
    rewards, _ = reward_fn(rollout.texts, [ex for ex in batch_ex for _ in range(4)], mask.sum(1))
    A = grpo.group_advantages(rewards, 4)
    assert (A != 0).any()

    def mean_logp():
        lp = policy.completion_logps(rollout, cfg.temperature, 8, with_grad=False)
        return (lp * mask).sum(1) / mask.sum(1)            # (B*N,) the 1/|o_i| of Eq. 1

    before = mean_logp()
    grpo_stage(policy, examples, reward_fn, cfg, tmp_path / "grpo", steps=1)
    delta = mean_logp() - before
    assert (A * delta).sum() > 0
    assert delta[A > 0].mean() > delta[A < 0].mean()


def test_config_typos_fail_before_any_training():
    with pytest.raises(ValueError, match="unknown method"):
        fx.check(fx.FasConfig(methods=["grpo", "gpro_wo_cls"]))
    with pytest.raises(ValueError, match="ablation_protocols"):
        fx.check(fx.FasConfig(ablation_protocols=["cefa_to_hqwmc"]))
    with pytest.raises(ValueError, match="source domain, target domain"):
        fx.check(fx.FasConfig(protocols={"p": ["cefa_like"]}))
    with pytest.raises(ValueError, match="eval_every 0: must be >= 1"):
        fx.check(fx.FasConfig(eval_every=0))
    with pytest.raises(ValueError, match="does not resume"):  # never silently ignored
        fx.check(fx.FasConfig(resume="runs/fas/seed0/grpo/cefa_like/last"))


def test_lora_run_saves_the_chosen_adapter_that_reproduces_the_predictions(tmp_path):
    """The real recipe's path on the tiny model: LoRA on the saved stand-in base, the dev set
    scored inside the stage, the reference = adapters off. Loading out/best afresh (peft layout,
    base named inside) must give exactly the saved test predictions of the chosen checkpoint."""
    cfg = fx.FasConfig(**{**fx.QUICK, "lr": 1e-2}, out_dir=str(tmp_path / "out"),
                       corpus_root=str(tmp_path / "corpus"), quick=True, device="cpu",
                       standin_root=str(tmp_path / "standin"), lora_r=4, methods=["grpo"],
                       protocols={"surf_to_siwmv2": ["surf_like", "siwmv2_like"]},
                       ablation_protocols=[])
    fx.run_experiment(cfg)
    out = tmp_path / "out_quick" / "seed0"
    best = out / "grpo" / "surf_like" / "best"
    standin = fx.build_standin(dataclasses.replace(cfg, **fx.QUICK))   # cached: no rebuild
    assert json.loads((best / "adapter_config.json").read_text())[
        "base_model_name_or_path"] == str(standin)
    policy = ChatPolicy.from_pretrained(str(best), "image")
    rows = [json.loads(line) for line in
            (out / "predictions" / "surf_to_siwmv2" / "grpo.jsonl").read_text().splitlines()]
    examples = [ChatExample(r["path"], fx.PROMPT, r["label"]) for r in rows]
    quick = dataclasses.replace(cfg, **fx.QUICK)
    assert fx.generate_answers(policy, examples, quick) == [r["text"] for r in rows]


def test_the_returned_model_is_the_dev_choice_not_the_last_step(tmp_path, monkeypatch):
    """Dev HTER 0.1 at the start, 0.3 after step 1, 0.5 after step 2: train_method must hand
    back (and save as best/) the step-1 weights, never the start point, and they differ from
    the step-2 weights saved in last/."""
    ChatPolicy.tiny("image", seed=0).save(tmp_path / "base")
    scores = iter([0.1, 0.3, 0.5])
    monkeypatch.setattr(fx, "evaluate", lambda *a: (dict(hter=next(scores), malformed=0.0), []))
    rng = np.random.default_rng(0)
    examples = [ChatExample(Image.fromarray(rng.integers(0, 256, (56, 56, 3), dtype=np.uint8)),
                            fx.PROMPT, y) for y in ("real", "fake")]
    cfg = fx.FasConfig(device="cpu", batch_size=2, num_generations=2, max_new_tokens=8,
                       grpo_steps=2, eval_every=1, lr=1e-2)
    policy, chosen = fx.train_method(cfg, "grpo", str(tmp_path / "base"), examples, examples,
                                     tmp_path / "grpo")
    assert chosen == dict(best_step=1, dev_hter=0.3)
    trained = {n: p for n, p in policy.model.named_parameters() if p.requires_grad}
    best = dict(ChatPolicy.from_pretrained(str(tmp_path / "grpo" / "best"),
                                           "image").model.named_parameters())
    last = dict(ChatPolicy.from_pretrained(str(tmp_path / "grpo" / "last" / "model"),
                                           "image").model.named_parameters())
    assert all(torch.equal(p, best[n]) for n, p in trained.items())
    assert not all(torch.equal(p, last[n]) for n, p in trained.items())


def test_seeds_counts_from_seed_and_the_run_ends_on_a_summary_line(tmp_path, monkeypatch,
                                                                    capsys):
    """--seeds 2 --seed 3 runs seeds 3 and 4; the run folder's results.json lists them, the
    mean over them is the mean of the two reports, and the last line says where things are."""
    def fake_run_seed(cfg):
        hter = 0.1 * (cfg.seed - 2)                         # 0.1 and 0.2
        r = dict(frr=hter, far=hter, hter=hter, malformed=0.0, per_attack={}, best_step=cfg.seed,
                 dev_hter=hter)
        report = dict(route="fas", seed=cfg.seed, seconds=0.0, config=dataclasses.asdict(cfg),
                      results={"surf_to_siwmv2": {"sft": r}})
        out = tmp_path / "out" / f"seed{cfg.seed}"
        out.mkdir(parents=True)
        (out / "results.json").write_text(json.dumps(report))
        return report
    drawn = []
    monkeypatch.setattr(fx, "run_seed", fake_run_seed)
    monkeypatch.setitem(fx.plots.ROUTE_FIGURES, "fas", drawn.append)
    cfg = fx.FasConfig(out_dir=str(tmp_path / "out"), seed=3, seeds=2,
                       protocols={"surf_to_siwmv2": ["surf_like", "siwmv2_like"]})
    result = fx.run_experiment(cfg)
    summary = json.loads((tmp_path / "out" / "results.json").read_text())
    assert summary["seeds"] == [3, 4] and summary["route"] == "fas"
    mean, std = result["summary"]["surf_to_siwmv2"]["sft"]["hter"]
    assert mean == pytest.approx(0.15) and std == pytest.approx(np.std([0.1, 0.2], ddof=1))
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert "sft/surf_like 15.0 % @ step 3/4" in last and str(tmp_path / "out") in last
    assert drawn == [tmp_path / "out"] or fx.plots.pyplot() is None


def test_seeds_in_worker_processes_give_the_results_of_one_process(quick_run):
    """--workers 2: each seed runs in its own process on the shared corpus and pool; seed 0's
    numbers equal those of the fixture's single-process run, and both seeds are summarized."""
    root = quick_run.parent.parent
    cfg = fx.FasConfig(out_dir=str(root / "parallel"), corpus_root=str(root / "corpus"),
                       standin_root=str(root / "standin"), quick=True, device="cpu",
                       seeds=2, workers=2, **fx.QUICK)
    fx.run_experiment(cfg)
    out = root / "parallel_quick"
    one = json.loads((quick_run / "results.json").read_text())["results"]
    two = json.loads((out / "seed0" / "results.json").read_text())["results"]
    assert two == one
    assert json.loads((out / "results.json").read_text())["seeds"] == [0, 1]
