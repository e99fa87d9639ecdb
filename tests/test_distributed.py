"""torch.distributed (DDP) on the CPU with gloo: K = 2 processes compute what one process with
the whole global batch computes, and rank 0 alone writes files."""
import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

import distributed
import train
from models import SSLClassifier
from synth_speech import make_speech_corpora
from classifier_data import AudioSet
from train_classifier import ClassifierConfig, finetune

WRITERS = ("save_checkpoint", "save_config", "write_report")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sets(root):
    index = make_speech_corpora(root, seed=0, size="quick", annotate=False)
    spec = lambda n: dict(kind=index[n]["kind"], path=index[n]["path"],  # noqa: E731
                          audio_dir=index[n]["audio_dir"], name=n)
    return AudioSet(spec("target_train"), 16000), AudioSet(spec("target_dev"), 16000)


def _rank(rank, world, port, root, cfg, method, start):
    """One torchrun-like process: the env torchrun sets, then the loop as it runs."""
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    writes = []
    for name in WRITERS:  # record every file-writing call this rank makes
        original = getattr(train, name)
        setattr(train, name, lambda *a, _f=original, _n=name, **k: (writes.append(_n),
                                                                     _f(*a, **k))[1])
    train_set, dev_set = _sets(root / "corpus")
    finetune(cfg, method, Path(cfg.out_dir), train_set, dev_set, start)
    (root / f"writes{rank}.txt").write_text("\n".join(writes))
    torch.distributed.destroy_process_group()


@pytest.mark.parametrize("method, batch_size, extra", [
    ("sft", 4, {}),
    ("grpo", 5, dict(beta=0.04, adv_scale="batch", old_refresh=2)),  # shares of 3 and 2
])
def test_two_processes_equal_one_process(tmp_path, method, batch_size, extra):
    make_speech_corpora(tmp_path / "corpus", seed=0, size="quick", annotate=False)
    start = tmp_path / "start"
    SSLClassifier.tiny_logmel(seed=2).save_pretrained(start)
    # lr 1e-4: Adam's first steps move every weight by about lr whatever its gradient, so
    # float rounding (the batch is cut and padded differently) must stay far below 1e-5
    base = dict(batch_size=batch_size, steps=3, eval_every=3, lr=1e-4, num_generations=8,
                train_min_sec=0.5, train_max_sec=0.7, device="cpu", model="tiny-logmel", **extra)
    one = ClassifierConfig(out_dir=str(tmp_path / "one"), **base)
    finetune(one, method, tmp_path / "one", *_sets(tmp_path / "corpus"), str(start))
    two = ClassifierConfig(out_dir=str(tmp_path / "two"), **base)
    mp.spawn(_rank, args=(2, _free_port(), tmp_path, two, method, str(start)), nprocs=2)
    a = SSLClassifier.load(tmp_path / "one" / "last" / "model").state_dict()
    b = SSLClassifier.load(tmp_path / "two" / "last" / "model").state_dict()
    s = SSLClassifier.load(start).state_dict()
    assert a.keys() == b.keys()
    assert max((a[k] - s[k]).abs().max() for k in a) > 2e-4  # the 3 steps did move the weights
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-5, atol=1e-5)
    # rank 0 wrote the config, the checkpoint; rank 1 wrote nothing
    assert set((tmp_path / "writes0.txt").read_text().split()) == {"save_config",
                                                                   "save_checkpoint"}
    assert (tmp_path / "writes1.txt").read_text() == ""
    rows = (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()
    assert len([r for r in rows if '"loss"' in r]) == 3  # one row a step, not one a rank


def test_resume_under_two_processes_continues_exactly(tmp_path):
    """Two processes cut after step 2 and resumed with --resume RUN/last end with the weights
    of two processes that ran the 4 steps at once (the old policy of the open refresh period,
    the optimizer state and the data order all carry over)."""
    make_speech_corpora(tmp_path / "corpus", seed=0, size="quick", annotate=False)
    start = tmp_path / "start"
    SSLClassifier.tiny_logmel(seed=2).save_pretrained(start)
    base = dict(batch_size=4, eval_every=2, lr=1e-4, num_generations=8, beta=0.04,
                adv_scale="batch", old_refresh=3, train_min_sec=0.5, train_max_sec=0.7,
                device="cpu", model="tiny-logmel")
    runs = {"whole": dict(steps=4), "cut": dict(steps=2),
            "resumed": dict(steps=4, resume=str(tmp_path / "cut" / "last"))}
    for name, extra in runs.items():
        out = "cut" if name == "resumed" else name  # the resumed run continues in its folder
        cfg = ClassifierConfig(out_dir=str(tmp_path / out), **base, **extra)
        if name == "resumed":  # the rows of steps 1-2, as the cut run wrote them (with times)
            before = (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()
        mp.spawn(_rank, args=(2, _free_port(), tmp_path, cfg, "grpo", str(start)), nprocs=2)
    # resumed, not restarted: the rows logged before the cut are kept, not written anew
    after = (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()
    assert after[:len(before)] == before and len(after) > len(before)
    a = SSLClassifier.load(tmp_path / "whole" / "last" / "model").state_dict()
    b = SSLClassifier.load(tmp_path / "cut" / "last" / "model").state_dict()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-5, atol=1e-5)
    steps = [json.loads(r)["step"] for r in
             (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [json.loads(r)["step"] for r in
                     (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()]


def test_shares_of_uneven_batches():
    # 5 items over 2 ranks: [0, 3) and [3, 5), as numpy.array_split cuts them
    d0, d1 = distributed.Dist(0, 2), distributed.Dist(1, 2)
    assert (d0.bounds(5), d1.bounds(5)) == ((0, 3), (3, 5))
    x = torch.arange(5)
    assert torch.equal(torch.cat([d0.shard(x), d1.shard(x)]), x)
    assert torch.equal(distributed.Dist().shard(x), x) and distributed.Dist().weight_of(3) == 1


def test_a_step_with_fewer_examples_than_processes_is_refused():
    from train_chat import ChatConfig, _share
    cfg = ChatConfig(batch_size=1)
    with pytest.raises(ValueError, match="step 3: 1 example.*shared by 2 processes"):
        _share(list(range(10)), cfg, 3, distributed.Dist(0, 2))
    assert _share(list(range(10)), ChatConfig(batch_size=2), 3, distributed.Dist(1, 2))[1] == [1]


def _length_reward(texts, examples, lengths):
    """A reward any tiny model's completions spread over: 1 when the length is even."""
    return torch.tensor([float(len(t) % 2 == 0) for t in texts]), {}


def _chat_rank(rank, world, port, cfg, base, examples):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    from train_chat import grpo_stage, load_policy
    policy = load_policy(cfg, base, "text", lora=True)
    grpo_stage(policy, examples, _length_reward, cfg, Path(cfg.out_dir), 3)
    torch.distributed.destroy_process_group()


def test_chat_grpo_with_lora_two_processes_equal_one(tmp_path):
    from safetensors.torch import load_file
    from chat import ChatPolicy
    from train_chat import ChatConfig, ChatExample, grpo_stage, load_policy
    base = str(tmp_path / "base")
    ChatPolicy.tiny("text", seed=1).save(base)
    examples = [ChatExample(None, f"Question number {i}: real or fake?", "real")
                for i in range(8)]
    kw = dict(lora_r=4, lora_alpha=8, lora_dropout=0.1, batch_size=4, num_generations=3,
              max_new_tokens=8, lr=1e-4, beta=0.04, adv_scale="batch", device="cpu", seed=5)
    one = ChatConfig(out_dir=str(tmp_path / "one"), **kw)
    grpo_stage(load_policy(one, base, "text", lora=True), examples, _length_reward, one,
               tmp_path / "one", 3)
    two = ChatConfig(out_dir=str(tmp_path / "two"), **kw)
    mp.spawn(_chat_rank, args=(2, _free_port(), two, base, examples), nprocs=2)
    a = load_file(tmp_path / "one" / "last" / "model" / "adapter_model.safetensors")
    b = load_file(tmp_path / "two" / "last" / "model" / "adapter_model.safetensors")
    assert a.keys() == b.keys() and len(a) > 0
    assert max(float(v.abs().max()) for k, v in a.items() if "lora_B" in k) > 1e-4  # it learned
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-5, atol=1e-5)
    one_rows = (tmp_path / "one" / "metrics.jsonl").read_text().splitlines()
    two_rows = (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()
    assert len(one_rows) == len(two_rows) == 3
    for r1, r2 in zip(one_rows, two_rows):  # the logged rewards are the global batch's mean
        assert json.loads(r2)["reward"] == pytest.approx(json.loads(r1)["reward"])


def test_torchrun_runs_the_classifier_route(tmp_path):
    """`torchrun --nproc_per_node=2 train.py --quick`: the whole route, rank 0 writing."""
    import subprocess
    import sys
    root = Path(__file__).resolve().parent.parent
    torchrun = Path(sys.executable).with_name("torchrun")
    out = subprocess.run([str(torchrun), "--nproc_per_node=2", "--master_port", str(_free_port()),
                          "train.py", "--quick", "--workers", "1", "--batch_size", "4",
                          "--out_dir", str(tmp_path / "run"),
                          "--corpus_root", str(tmp_path / "corpus")],
                         cwd=root, capture_output=True, text=True, timeout=600,
                         env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    assert out.stdout.count("EER (%)") == 1  # one table: rank 0's
    results = (tmp_path / "run_quick" / "results.json").read_text()
    assert '"route": "classifier"' in results


def one_and_two_processes(tmp_path, args: list, table: str) -> dict:
    """`python train.py ARGS` and `torchrun --nproc_per_node=2 train.py ARGS`, each into its
    own out_dir (the --quick folder); each printed one table; -> {one, two: path of the run}."""
    import subprocess
    import sys
    root = Path(__file__).resolve().parent.parent
    torchrun = Path(sys.executable).with_name("torchrun")
    runs = {}
    for name, launcher in [("one", [sys.executable]),
                           ("two", [str(torchrun), "--nproc_per_node=2",
                                    "--master_port", str(_free_port())])]:
        out = subprocess.run(launcher + ["train.py", "--quick", "--workers", "1", *args,
                                         "--out_dir", str(tmp_path / name)],
                             cwd=root, capture_output=True, text=True, timeout=600,
                             env=dict(os.environ, OMP_NUM_THREADS="1"))
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
        assert out.stdout.count(table) == 1  # one table: rank 0's
        runs[name] = tmp_path / f"{name}_quick"
    return runs


def test_torchrun_runs_the_face_route_as_one_process_does(tmp_path):
    """The face route under torchrun: rank 0 builds the corpus and the stand-in alone, the two
    processes split each step's batch, rank 0 alone writes; the error rates equal those of one
    process running the same global batches."""
    runs = one_and_two_processes(tmp_path, ["--route", "fas",
                                            "--corpus_root", str(tmp_path / "corpus"),
                                            "--standin_root", str(tmp_path / "standin")],
                                 "Target test sets")
    one, two = (json.loads((runs[k] / "seed0" / "results.json").read_text())["results"]
                for k in ("one", "two"))
    for proto, by_method in one.items():
        for method, r in by_method.items():
            got = two[proto][method]
            assert {k: got[k] for k in ("frr", "far", "hter")} == pytest.approx(
                {k: r[k] for k in ("frr", "far", "hter")}), (proto, method)


def test_torchrun_runs_the_hir_route_as_one_process_does(tmp_path):
    """The HIR route under torchrun: rank 0 builds the corpus and pre-trains the audio encoder
    alone, every stage (and the AASIST baseline, by DDP) splits its batches, rank 0 alone saves
    and writes; every table row equals one process's."""
    runs = one_and_two_processes(tmp_path, ["--route", "hir",
                                            "--corpus_root", str(tmp_path / "corpus")],
                                 "HIR-SDD (CPU miniature")
    one, two = (json.loads((runs[k] / "results.json").read_text())["per_seed"]
                for k in ("one", "two"))
    for row, by_test in one[0].items():
        for test, m in by_test.items():
            for k in ("acc", "bacc", "jaccard"):
                if k in m:
                    assert two[0][row][test][k] == pytest.approx(m[k]), (row, test, k)


def _answer_rank(rank, world, port, tmp_path, cfg, base, examples, pairs):
    """Greedy answers and answer log-likelihoods under `world` processes; each rank records
    how many prompts its own generate and scoring passes received."""
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    from hir_eval import answer_llr
    from train_chat import generate_answers, load_policy
    policy = load_policy(cfg, base, "text")
    seen = []
    for name in ("generate", "encode_targets"):  # count the prompts each pass is given
        original = getattr(policy, name)
        setattr(policy, name, lambda batch, *a, _f=original, _n=name, **k: (
            seen.append((_n, batch["input_ids"].shape[0])), _f(batch, *a, **k))[1])
    texts = generate_answers(policy, examples, cfg)
    llr = answer_llr(policy, examples, pairs, cfg.eval_batch_size, bf16=False).tolist()
    (tmp_path / f"answers{rank}.json").write_text(json.dumps(dict(texts=texts, llr=llr,
                                                                  seen=seen)))
    torch.distributed.destroy_process_group()


def test_chat_evaluation_is_split_over_processes_and_gathered(tmp_path):
    """Under torchrun each rank answers (and scores) only its share of an evaluation set, and
    every rank gets back all the answers, in order, equal to one process's."""
    from chat import ChatPolicy
    from hir_eval import answer_llr
    from train_chat import ChatConfig, ChatExample, generate_answers, load_policy
    base = str(tmp_path / "base")
    ChatPolicy.tiny("text", seed=2).save(base)  # a seed whose answers differ between these
    examples = [ChatExample(None, q, "real") for q in ("real", "fake?", "Is this real or fake",
                                                       "<answer>", "1 2 3 4 5 6 7 8 9")]
    pairs = [("real", "fake"), None, ("fake", "real"), ("real", "fake"), ("real", "fake")]
    cfg = ChatConfig(max_new_tokens=6, eval_batch_size=2, device="cpu", seed=0)
    policy = load_policy(cfg, base, "text")
    texts = generate_answers(policy, examples, cfg)
    llr = answer_llr(policy, examples, pairs, cfg.eval_batch_size, bf16=False)
    assert len(set(texts)) > 1 and np.count_nonzero(llr) == 4  # answers differ; None scores 0
    mp.spawn(_answer_rank, args=(2, _free_port(), tmp_path, cfg, base, examples, pairs),
             nprocs=2)
    ranks = [json.loads((tmp_path / f"answers{r}.json").read_text()) for r in (0, 1)]
    for got in ranks:
        assert got["texts"] == texts
        np.testing.assert_allclose(got["llr"], llr, rtol=1e-5, atol=1e-5)
    # examples 0-2 on rank 0 (batches of 2 and 1), 3-4 on rank 1; scored pairs 0, 2 | 3, 4
    prompts = lambda seen, name: [n for what, n in seen if what == name]  # noqa: E731
    assert prompts(ranks[0]["seen"], "generate") == [2, 1]
    assert prompts(ranks[1]["seen"], "generate") == [2]
    assert prompts(ranks[0]["seen"], "encode_targets") == [2, 2]   # two sides of one batch
    assert prompts(ranks[1]["seen"], "encode_targets") == [2, 2]


def test_step_bars_are_off_on_other_ranks_and_in_seed_workers(tmp_path, capsys, monkeypatch):
    """A chat stage's step bar shows in a plain run, not with TQDM_DISABLE set (what a seed
    worker sets: an explicit disable= argument would override tqdm's own reading of it) and
    not on a rank other than 0."""
    from chat import ChatPolicy
    from train_chat import ChatConfig, ChatExample, sft_stage
    policy = ChatPolicy.tiny("text", seed=0)
    examples = [ChatExample(None, "real or fake?", "real", target="real")] * 2
    cfg = ChatConfig(batch_size=2, device="cpu")
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    sft_stage(policy, examples, cfg, tmp_path / "plain", 2)
    assert "plain:   0%" in capsys.readouterr().err
    monkeypatch.setenv("TQDM_DISABLE", "1")
    sft_stage(policy, examples, cfg, tmp_path / "worker", 2)
    assert "worker" not in capsys.readouterr().err
    monkeypatch.delenv("TQDM_DISABLE")
    list(train.steps_bar(range(2), "rank1", show=False))
    assert "rank1" not in capsys.readouterr().err
